"""TensorRT path. The parts before TensorRT (calibration batches, the rebuild decision, engine choice and names, the
build plan per TensorRT major, the builder's cache handling against a fake ``tensorrt`` module, the errors on a
machine without TensorRT) run everywhere; engine build and parity with ONNX Runtime run only where TensorRT 10/11,
cuda-python and a CUDA GPU exist, and are skipped with the reason otherwise.

Collects without the trainer stack: ``onnx`` and ``torch`` (not test dependencies of the ROS package) are imported
only inside the tests that need them, which skip without them. The shipped models stand in for a real export.
"""

from __future__ import annotations

import ast
import importlib.abc
import json
import logging
import shutil
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from monodepth_ros.backends import (
    OnnxRuntimeBackend,
    TensorRTBackend,
    create_backend,
    tensorrt_unavailable_reason,
)
from monodepth_ros.backends.base import preprocess
from monodepth_ros.backends.calibration import CalibrationBatches
from monodepth_ros.backends.model_meta import (
    ModelLoadError,
    ModelMeta,
    read_onnx_model_meta,
    read_sidecar,
    write_sidecar,
)
from monodepth_ros.backends.tensorrt_backend import (
    NO_ENGINE,
    cached_engine_path,
    engine_precision,
    engine_rebuild_reason,
    ensure_writable_dir,
    resolve_engine,
)
from monodepth_ros.backends.tensorrt_build import (
    apply_timing_cache,
    build_engine,
    build_plan,
    calib_cache_path,
    engine_path_for,
    fp16_onnx_bytes,
    make_progress_monitor,
    tensorrt_qdq_problem,
    timing_cache_path,
)
from monodepth_ros.backends.tensorrt_env import ThreadDevice, tensorrt_version_problem
from monodepth_ros.bundle import file_sha256
from monodepth_ros.node_params import PARAM_BY_NAME, defaults, validate_parameter

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "monodepth_ros" / "models"
H, W = 32, 64
ENV = {"version": "10.3.0", "device_name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7"}
TRT_REASON = tensorrt_unavailable_reason()
needs_trt = pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT path not testable here: {TRT_REASON}")


def _meta(**kw) -> ModelMeta:
    base = dict(height=H, width=W, min_depth=0.1, max_depth=100.0, scale_policy="relative", scale=1.0,
                mean=[0.45] * 3, std=[0.225] * 3, intrinsics_norm=None, source_sha256="ab" * 32, opset=18)
    return ModelMeta(**{**base, **kw})


def shipped(tmp_path: Path, name: str = "default.onnx", as_name: str | None = None) -> Path:
    """A copy of a shipped model (fp32 or INT8 Q/DQ) in ``tmp_path``: a real export, no onnx package needed."""
    dst = tmp_path / (as_name or name)
    shutil.copy(MODELS / name, dst)
    return dst


def changed_onnx(src: Path, dst: Path) -> Path:
    """``src`` with a doc_string appended (ModelProto field 6): the same graph, another file and sha256."""
    note = b"retrained"
    dst.write_bytes(src.read_bytes() + bytes([6 << 3 | 2, len(note)]) + note)
    return dst


# -----------------------------------------------------------------------------------------------------------------
# A fake ``tensorrt`` module: what build_engine asks of TensorRT 10 or 11, recorded


def fake_trt(version: str = "10.3.0", accept_timing: bool = True) -> types.SimpleNamespace:
    """A stand-in for the ``tensorrt`` module of ``version``. TensorRT 11's lacks BuilderFlag.FP16/INT8,
    IInt8EntropyCalibrator2 and IBuilderConfig.int8_calibrator, as the real one does. ``record`` says what the
    build did; ``accept_timing`` False makes set_timing_cache refuse any non-empty cache."""
    major = int(version.split(".")[0])
    record = types.SimpleNamespace(network_flags=None, parsed=None, flags=[], timing=[], calib_table="unread")

    class Config:
        def __init__(self):
            self._timing = None
            self.progress_monitor = None

        def __setattr__(self, name, value):
            if name == "int8_calibrator" and major >= 11:
                raise AttributeError("'tensorrt.IBuilderConfig' object has no attribute 'int8_calibrator'")
            object.__setattr__(self, name, value)

        def set_memory_pool_limit(self, pool, size):
            pass

        def set_flag(self, flag):
            record.flags.append(flag)

        def create_timing_cache(self, data):
            return types.SimpleNamespace(data=bytes(data), serialize=lambda: b"timings")

        def set_timing_cache(self, cache, ignore_mismatch):
            ok = accept_timing or not cache.data
            record.timing.append((cache.data, ok))
            if ok:
                self._timing = cache
            return ok

        def get_timing_cache(self):
            return self._timing

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            record.network_flags = flags
            return object()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            calibrator = getattr(config, "int8_calibrator", None)
            if calibrator is not None:
                record.calib_table = calibrator.read_calibration_cache()
            return b"plan"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            record.parsed = bytes(data)
            return True

    class _Interface:
        def __init__(self):
            pass

    trt = types.SimpleNamespace(
        __version__=version, record=record, Builder=Builder, OnnxParser=OnnxParser, IProgressMonitor=_Interface,
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None}),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE=0),
        BuilderFlag=types.SimpleNamespace(**({"FP16": "FP16", "INT8": "INT8"} if major < 11 else {})),
    )
    if major < 11:
        trt.IInt8EntropyCalibrator2 = _Interface
    return trt


# -----------------------------------------------------------------------------------------------------------------
# Everywhere


def test_calibration_batches_feed_preprocessed_float32_inputs_then_stop():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (2 * H, 2 * W, 3), dtype=np.uint8) for _ in range(3)]
    batches = CalibrationBatches(frames, H, W)
    assert batches.shape == (1, 3, H, W) and batches.nbytes == 3 * H * W * 4
    got = [batches.next_batch() for _ in range(4)]
    assert got[3] is None and batches.count == 3
    for frame, x in zip(frames, got[:3]):
        assert x.dtype == np.float32 and x.shape == (1, 3, H, W) and x.flags.c_contiguous
        np.testing.assert_array_equal(x, preprocess(frame, H, W))  # the one shared pre-processing
    limited = CalibrationBatches(iter(frames), H, W, limit=2)
    assert limited.next_batch() is not None and limited.next_batch() is not None and limited.next_batch() is None
    ready = np.zeros((1, 3, H, W), np.float32)
    assert CalibrationBatches([ready], H, W).next_batch() is not None
    with pytest.raises(ValueError, match="calibration frame must be"):
        CalibrationBatches([np.zeros((1, 3, H, W + 1), np.float32)], H, W).next_batch()


def test_rebuild_decision_names_the_reason():
    built = _meta(precision="fp16", tensorrt={**ENV, "onnx_sha256": "x" * 64})
    assert engine_rebuild_reason(built, ENV, "x" * 64) is None
    assert engine_rebuild_reason(built, ENV, None) is None  # no ONNX to compare with: trust the sidecar
    assert "no metadata sidecar" in engine_rebuild_reason(None, ENV, "x" * 64)
    newer = {**ENV, "version": "10.7.0"}
    assert engine_rebuild_reason(built, newer, "x" * 64) == "engine built with TensorRT 10.3.0, installed is 10.7.0"
    other_gpu = {**ENV, "device_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}
    assert "this GPU is NVIDIA GeForce RTX 4090 (sm 8.9)" in engine_rebuild_reason(built, other_gpu, "x" * 64)
    assert "ONNX model changed" in engine_rebuild_reason(built, ENV, "y" * 64)


def _fake_engine(engine: Path, onnx_path: Path, precision: str, env=ENV, **extra) -> Path:
    engine.parent.mkdir(parents=True, exist_ok=True)
    engine.write_bytes(b"plan")
    write_sidecar(engine, _meta(precision=precision, tensorrt={
        **env, "onnx_file": onnx_path.name, "onnx_path": str(onnx_path), "onnx_sha256": file_sha256(onnx_path),
        **extra}))
    return engine


def test_engines_built_at_load_go_to_the_cache_folder_and_an_engine_built_ahead_is_used_while_current(tmp_path):
    models, cache = tmp_path / "share", tmp_path / "cache"
    models.mkdir()
    onnx_path = shipped(models)
    sha = file_sha256(onnx_path)
    choice = resolve_engine(onnx_path, env=ENV, cache_dir=cache)
    # Nothing built yet: build into the cache folder (never the model's folder), named by the ONNX's sha256.
    assert choice.engine == cache / f"default-{sha[:12]}.fp16.engine" == cached_engine_path(cache, onnx_path, sha,
                                                                                               "fp16")
    assert choice.onnx == onnx_path and choice.reason == NO_ENGINE and choice.precision == "fp16"
    # An engine built ahead beside the model (monodepth-export --format tensorrt) is used while current ...
    ahead = _fake_engine(engine_path_for(onnx_path, "fp16"), onnx_path, "fp16")
    assert resolve_engine(onnx_path, env=ENV, cache_dir=cache).engine == ahead
    # ... and passed over, with its reason, once TensorRT changed; the rebuild goes to the cache.
    newer = {**ENV, "version": "10.8.0"}
    stale = resolve_engine(onnx_path, env=newer, cache_dir=cache)
    assert stale.engine.parent == cache and stale.reason == NO_ENGINE
    assert len(stale.passed_over) == 1 and "installed is 10.8.0" in stale.passed_over[0]
    _fake_engine(stale.engine, onnx_path, "fp16", env=newer)
    assert resolve_engine(onnx_path, env=newer, cache_dir=cache).engine == stale.engine
    # Opening the engine itself finds its ONNX through the sidecar; a stale one is rebuilt into the cache.
    opened = resolve_engine(ahead, env=ENV, cache_dir=cache)
    assert (opened.engine, opened.onnx, opened.reason) == (ahead, onnx_path, None)
    moved = resolve_engine(ahead, env={**ENV, "version": "10.9.0"}, cache_dir=cache)
    assert moved.engine == cache / ahead.name and "installed is 10.9.0" in moved.passed_over[0]
    # ``~`` in the folder is the user's home.
    assert resolve_engine(onnx_path, env={**ENV, "version": "10.10.0"}, cache_dir="~/x").engine.parent == \
        Path.home() / "x"


def test_stale_int8_engine_is_rebuilt_as_int8_not_fp16(tmp_path):
    onnx_path = shipped(tmp_path)
    cache = tmp_path / "cache"
    engine = _fake_engine(tmp_path / "default.int8.engine", onnx_path, "int8", int8_mode="entropy_calibrator2")
    choice = resolve_engine(engine, env={**ENV, "version": "10.8.0"}, cache_dir=cache)
    assert choice.reason and choice.precision == "int8"
    # The precision comes from the sidecar, else from the name, else fp16.
    assert engine_precision(engine, read_sidecar(engine)) == "int8"
    assert engine_precision(tmp_path / "m.int8.engine", None) == "int8"
    assert engine_precision(tmp_path / "m.FP32.plan", None) == "fp32"
    assert engine_precision(tmp_path / "m.engine", None) == "fp16"
    # An INT8 Q/DQ ONNX always maps to an int8 engine.
    qdq = shipped(tmp_path, "default.int8.onnx")
    assert resolve_engine(qdq, "fp16", env=ENV, cache_dir=cache).precision == "int8"


def test_create_backend_lets_the_engine_keep_its_precision_and_passes_the_cache_folder(tmp_path, monkeypatch):
    import monodepth_ros.backends as backends

    seen = {}

    class Recorder:
        precision = "int8"

        def __init__(self, path, **kw):
            seen.update(kw, path=path)
            self.path = Path(path)

    monkeypatch.setattr(backends, "tensorrt_unavailable_reason", lambda: None)
    monkeypatch.setattr(backends, "TensorRTBackend", Recorder)
    engine = _fake_engine(tmp_path / "m.int8.engine", shipped(tmp_path), "int8")
    create_backend(engine, kind="tensorrt", engine_cache_dir=tmp_path / "c")
    assert seen["path"] == engine and seen.get("precision") is None  # None: the engine's own precision
    assert seen["engine_cache_dir"] == tmp_path / "c"


def test_calibration_cache_is_named_by_onnx_tensorrt_and_gpu():
    engine = Path("/m/default.int8.engine")
    base = calib_cache_path(engine, "a" * 64, ENV)
    assert base.parent == engine.parent and base.name.startswith("default.int8.engine.calib.aaaaaaaaaaaa.trt10.3.0.")
    assert calib_cache_path(engine, "b" * 64, ENV) != base  # another ONNX
    assert calib_cache_path(engine, "a" * 64, {**ENV, "version": "10.8.0"}) != base  # another TensorRT
    assert calib_cache_path(engine, "a" * 64, {**ENV, "device_name": "NVIDIA GeForce RTX 4090"}) != base


def test_int8_rebuild_after_the_onnx_changed_does_not_reuse_the_old_calibration_table(tmp_path):
    onnx_path = shipped(tmp_path, as_name="m.onnx")
    engine = tmp_path / "m.int8.engine"
    old = calib_cache_path(engine, file_sha256(onnx_path), ENV)
    old.write_bytes(b"table of the old ONNX")
    trt = fake_trt("10.3.0")
    build_engine(onnx_path, engine, int8=True, trt_module=trt, env=ENV)  # rebuild of the same ONNX: reused
    assert trt.record.calib_table == b"table of the old ONNX" and "INT8" in trt.record.flags
    assert read_sidecar(engine).tensorrt["calib_cache"] == old.name
    changed_onnx(onnx_path, onnx_path)
    with pytest.raises(ValueError, match="needs calibration frames .* no calibration cache for this ONNX"):
        build_engine(onnx_path, engine, int8=True, trt_module=fake_trt("10.3.0"), env=ENV)
    with pytest.raises(ValueError, match="needs calibration frames"):  # nor for another TensorRT or GPU
        build_engine(shipped(tmp_path, as_name="n.onnx"), tmp_path / "n.int8.engine", int8=True,
                     trt_module=fake_trt("10.8.0"), env={**ENV, "version": "10.8.0"})


def test_build_plan_per_tensorrt_major():
    p = build_plan(10, "fp16")
    assert (p.strongly_typed, p.builder_flags, p.calibrator, p.convert_fp16) == (False, ("FP16",), False, False)
    p = build_plan(10, "int8")
    assert p.builder_flags == ("FP16", "INT8") and p.calibrator and p.int8_mode == "entropy_calibrator2"
    assert build_plan(10, "int8", allow_fp16=False).builder_flags == ("INT8",)
    p = build_plan(10, "fp16", "int8")  # an INT8 Q/DQ ONNX is INT8 whatever was asked
    assert p.precision == "int8" and not p.calibrator and p.int8_mode == "explicit_qdq"
    assert build_plan(10, "fp32").builder_flags == ()
    # TensorRT 11: strongly typed, no precision flags; FP16 from an FP16 copy of the ONNX; INT8 only from Q/DQ.
    p = build_plan(11, "fp16")
    assert (p.strongly_typed, p.builder_flags, p.calibrator, p.convert_fp16) == (True, (), False, True)
    assert not build_plan(11, "fp32").convert_fp16
    p = build_plan(11, "int8", "int8")
    assert p.strongly_typed and p.int8_mode == "explicit_qdq" and not p.convert_fp16 and p.builder_flags == ()
    with pytest.raises(ValueError, match="TensorRT 11 has no INT8 calibration"):
        build_plan(11, "int8")
    with pytest.raises(RuntimeError, match="TensorRT 12 is not supported: .*tested with TensorRT 10.x to 11.x"):
        build_plan(12, "fp16")
    with pytest.raises(RuntimeError, match="older than the required 10.x"):
        build_plan(8, "fp16")


def test_tensorrt_majors_outside_10_to_11_are_reported_with_the_reason():
    assert tensorrt_version_problem("10.0.1") is None and tensorrt_version_problem("11.4.0") is None
    assert "not supported" in tensorrt_version_problem("12.0.0")
    assert "older than the required" in tensorrt_version_problem("8.6.1")
    assert "cannot parse" in tensorrt_version_problem("dev")
    trt12 = types.SimpleNamespace(__version__="12.0.0")
    reason = tensorrt_unavailable_reason(import_module=lambda name: trt12)
    assert reason.startswith("TensorRT 12.0.0 is not supported")


def test_tensorrt_11_build_is_strongly_typed_from_an_fp16_onnx_without_precision_flags(tmp_path):
    onnx = pytest.importorskip("onnx", reason="the FP16 conversion for TensorRT 11 needs the onnx package")
    onnx_path = shipped(tmp_path)
    trt = fake_trt("11.1.0")
    engine = build_engine(onnx_path, fp16=True, trt_module=trt, env={**ENV, "version": "11.1.0"})
    assert engine.name == "default.fp16.engine" and trt.record.flags == []  # BuilderFlag.FP16 is gone in 11
    assert trt.record.network_flags == 1 << 0  # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    parsed = onnx.load_from_string(trt.record.parsed)
    assert onnx.TensorProto.FLOAT16 in {t.data_type for t in parsed.graph.initializer}
    assert [i.type.tensor_type.elem_type for i in (*parsed.graph.input, *parsed.graph.output)] == \
        [onnx.TensorProto.FLOAT] * 3  # rgb in, disp and valid out stay float32: the backend feeds and reads those
    side = read_sidecar(engine).tensorrt
    assert side["build_mode"] == "strongly_typed" and side["onnx_converted_to_fp16"] and side["int8_mode"] is None
    # INT8 on TensorRT 11 only from Q/DQ: an fp32 ONNX with int8=True is refused with the way out.
    with pytest.raises(ValueError, match="INT8 Q/DQ ONNX"):
        build_engine(onnx_path, int8=True, trt_module=fake_trt("11.1.0"), env=ENV)


def test_fp16_onnx_for_tensorrt_11_keeps_the_outputs_of_the_fp32_model(tmp_path):
    pytest.importorskip("onnx", reason="the FP16 conversion needs the onnx package")
    import onnxruntime as ort

    src = MODELS / "default.onnx"
    ref = OnnxRuntimeBackend(src)

    sess = ort.InferenceSession(fp16_onnx_bytes(src), providers=["CPUExecutionProvider"])
    meta = read_onnx_model_meta(src)
    rgb = np.random.default_rng(3).integers(0, 256, (meta.height, meta.width, 3), dtype=np.uint8)
    disp16, valid16 = sess.run(None, {"rgb": preprocess(rgb, meta.height, meta.width)})
    disp, valid = ref.infer_outputs(rgb)
    assert disp16.dtype == np.float32 and valid16.dtype == np.float32
    np.testing.assert_allclose(disp16.reshape(disp.shape), disp, rtol=2e-2, atol=1e-3)
    assert float(np.abs(valid16.reshape(valid.shape) - valid).max()) < 2e-2


def test_fp16_conversion_without_onnx_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError, as on a robot without it
    with pytest.raises(RuntimeError, match="needs the 'onnx' package: pip install onnx"):
        fp16_onnx_bytes(MODELS / "default.onnx")


def test_int8_model_tensorrt_cannot_build_is_refused_before_parsing(tmp_path):
    # From the exporter's record of TensorRT's Q/DQ rules when present, else from the recipe.
    broken = _meta(precision="int8", quantization={"recipe": {"activation_type": "QInt8"},
                                                   "tensorrt_qdq_violations": ["zero point of x is not 0"]})
    assert "zero point of x is not 0" in tensorrt_qdq_problem(broken, "m.int8.onnx")
    assert tensorrt_qdq_problem(_meta(precision="int8", quantization={"tensorrt_qdq_violations": []})) is None
    asym = _meta(precision="int8", quantization={"recipe": {"activation_type": "QUInt8", "weight_type": "QInt8"}})
    assert "activation_type=QUInt8" in tensorrt_qdq_problem(asym) and "symmetric signed INT8" in \
        tensorrt_qdq_problem(asym)
    assert "asymmetric" in tensorrt_qdq_problem(_meta(precision="int8", quantization={"recipe": {"symmetric": False}}))
    assert tensorrt_qdq_problem(_meta(precision="int8", quantization={"recipe": {"activation_type": "QInt8",
                                                                                 "symmetric": True}})) is None
    assert tensorrt_qdq_problem(_meta(precision="int8")) is None  # nothing recorded: let TensorRT decide
    # Through the builder: refused before TensorRT parses anything.
    qdq = shipped(tmp_path, "default.int8.onnx")
    problem = tensorrt_qdq_problem(read_onnx_model_meta(qdq), qdq.name)
    trt = fake_trt("10.3.0")
    if problem is None:
        engine = build_engine(qdq, trt_module=trt, env=ENV)  # the shipped INT8 model is TensorRT-buildable
        assert trt.record.parsed is not None and read_sidecar(engine).precision == "int8"
        assert engine.name == "default.int8.int8.engine"  # <stem>.<precision>.engine, the stem keeping ".int8"
    else:
        with pytest.raises(ModelLoadError, match="TensorRT cannot build"):
            build_engine(qdq, trt_module=trt, env=ENV)
        assert trt.record.parsed is None


def test_engine_build_logs_what_it_builds_its_phases_and_how_long_it_took(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    lg = logging.getLogger("monodepth_ros.test_build")
    build_engine(shipped(tmp_path), trt_module=fake_trt("10.3.0"), env=ENV, logger=lg)
    assert "building TensorRT fp16 engine" in caplog.text and "built TensorRT engine default.fp16.engine" in caplog.text
    monitor = make_progress_monitor(fake_trt("10.3.0"), lg, "m.engine")
    monitor.phase_start("Building engine", None, 5)
    monitor.phase_start("a sub-phase", "Building engine", 2)  # only top-level phases are logged
    assert "TensorRT m.engine: Building engine (5 steps" in caplog.text and "a sub-phase" not in caplog.text
    assert monitor.step_complete("Building engine", 1) is True
    assert make_progress_monitor(types.SimpleNamespace(), lg) is None  # a TensorRT without IProgressMonitor


def test_timing_cache_is_named_by_tensorrt_version_and_gpu():
    path = timing_cache_path("/c", ENV)
    assert path == Path("/c/timing.trt10.3.0.NVIDIA_Jetson_AGX_Orin.sm8.7.cache")
    assert timing_cache_path("/c", {**ENV, "version": "10.8.0"}) != path
    assert timing_cache_path("/c", {**ENV, "device_name": "NVIDIA H200", "compute_capability": "9.0"}) != path
    weird = timing_cache_path("/c", {**ENV, "device_name": "GPU/0 (x)"})
    assert weird.parent == Path("/c") and "/" not in weird.name and " " not in weird.name


def test_refused_timing_cache_is_dropped_and_the_build_goes_on(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    refusing = fake_trt("10.3.0", accept_timing=False).Builder(None).create_builder_config()
    assert apply_timing_cache(refusing, b"foreign", logging.getLogger("t"), "t.cache") is False
    assert "timing cache t.cache was refused" in caplog.text
    assert refusing.get_timing_cache().data == b""  # built with an empty cache instead
    accepting = fake_trt("10.3.0").Builder(None).create_builder_config()
    assert apply_timing_cache(accepting, b"ours") is True and accepting.get_timing_cache().data == b"ours"
    # Through a whole build: a cache TensorRT refuses does not stop it, and is replaced afterwards.
    onnx_path = shipped(tmp_path)
    timing = timing_cache_path(tmp_path, ENV)
    timing.write_bytes(b"from another driver")
    trt = fake_trt("10.3.0", accept_timing=False)
    engine = build_engine(onnx_path, trt_module=trt, env=ENV)
    assert trt.record.timing == [(b"from another driver", False), (b"", True)]
    assert read_sidecar(engine).tensorrt["timing_cache"] == timing.name
    assert read_sidecar(engine).tensorrt["timing_cache_reused"] is False and timing.read_bytes() == b"timings"


class _Blocker(importlib.abc.MetaPathFinder):
    """Makes ``import <name>`` raise ``error``, as a broken install does."""

    def __init__(self, name, error):
        self.name, self.error = name, error

    def find_spec(self, fullname, path, target=None):
        if fullname == self.name:
            raise self.error
        return None


def test_broken_tensorrt_install_is_a_reason_and_auto_falls_back(tmp_path, monkeypatch, caplog):
    def raising(error):
        def import_module(name):
            raise error
        return import_module

    broken = OSError("libnvinfer.so.10: cannot open shared object file: No such file or directory")
    assert "cannot be loaded (OSError: libnvinfer.so.10" in tensorrt_unavailable_reason(raising(broken))
    assert "RuntimeError" in tensorrt_unavailable_reason(raising(RuntimeError("CUDA driver version is too old")))

    def no_driver(name):
        if name == "tensorrt":
            return types.SimpleNamespace(__version__="10.3.0")

        def count():
            raise RuntimeError("cudaErrorInsufficientDriver")
        return types.SimpleNamespace(cudaGetDeviceCount=count)

    assert "CUDA cannot be queried (RuntimeError: cudaErrorInsufficientDriver)" in tensorrt_unavailable_reason(
        no_driver)
    # End to end: a node with backend auto starts on another backend and logs why TensorRT was not used.
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Blocker("tensorrt", broken), *sys.meta_path])
    caplog.set_level(logging.INFO, logger="monodepth_ros.backends")
    backend = create_backend(shipped(tmp_path), kind="auto")
    assert backend.name != "tensorrt" and "TensorRT not used: the 'tensorrt' Python package cannot be loaded" \
        in caplog.text


def test_engine_cache_dir_parameter_is_declared_validated_and_must_be_writable(tmp_path):
    assert defaults()["engine_cache_dir"] == "~/.cache/monodepth_ros" and PARAM_BY_NAME["engine_cache_dir"].read_only
    assert validate_parameter("engine_cache_dir", "/var/cache/depth", defaults()) is None
    assert "engine_cache_dir must name a folder" in validate_parameter("engine_cache_dir", " ", defaults())
    assert ensure_writable_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RuntimeError, match=r"engine cache folder .*file/sub cannot be created .* engine_cache_dir"):
        ensure_writable_dir(tmp_path / "file" / "sub")


def test_cuda_device_is_made_current_in_each_inferring_thread():
    calls = []
    cudart = types.SimpleNamespace(
        cudaError_t=types.SimpleNamespace(cudaSuccess=0),
        cudaSetDevice=lambda d: calls.append((threading.get_ident(), d)) or (0,),
    )
    dev = ThreadDevice(cudart, 1)
    dev.ensure()
    dev.ensure()  # once per thread
    worker = threading.Thread(target=dev.ensure)
    worker.start()
    worker.join()
    assert [d for _, d in calls] == [1, 1] and len({t for t, _ in calls}) == 2


def test_runtime_backends_import_on_python_3_10():
    # datetime.UTC is Python 3.11+; ROS 2 Humble robots run 3.10.
    for path in (REPO / "monodepth_ros" / "backends").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.Attribute) and node.attr == "UTC"), f"{path.name}: datetime.UTC"
            assert not (isinstance(node, ast.ImportFrom) and node.module == "datetime"
                        and any(a.name == "UTC" for a in node.names)), f"{path.name}: from datetime import UTC"


def test_this_file_collects_without_onnx_or_torch():
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['torch'] = None; import pytest; "
            f"sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', {__file__!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "test_cuda_device_is_made_current_in_each_inferring_thread" in run.stdout


def test_without_tensorrt_backend_and_builder_say_why(tmp_path):
    if TRT_REASON is None:
        pytest.skip("TensorRT is available: this pins the behaviour of machines without it")
    onnx_path = shipped(tmp_path)
    with pytest.raises(RuntimeError, match="TensorRT backend unavailable: .*tensorrt"):
        TensorRTBackend(onnx_path)
    with pytest.raises(RuntimeError, match="cannot build a TensorRT engine"):
        build_engine(onnx_path)


# -----------------------------------------------------------------------------------------------------------------
# Only with TensorRT + CUDA


def _frames(n, h, w, start=0):
    rng = np.random.default_rng(start)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.tensorrt
@needs_trt
def test_fp32_and_fp16_engines_match_onnxruntime(tmp_path):
    onnx_path = shipped(tmp_path)
    ref = OnnxRuntimeBackend(onnx_path)
    h, w = ref.info.height, ref.info.width
    for precision, tol in (("fp32", 2e-3), ("fp16", 2e-2)):  # fp32 may run TF32 kernels on Ampere+
        backend = TensorRTBackend(onnx_path, precision=precision, engine_cache_dir=tmp_path / "cache")
        try:
            for rgb in _frames(3, h, w, start=20):
                d_ref, d_trt = ref.infer(rgb), backend.infer(rgb)
                rel = float(np.nanmean(np.abs(d_trt - d_ref) / d_ref))
                assert rel < tol, (precision, rel)
        finally:
            backend.close()
        side = read_sidecar(backend.path)
        assert backend.path.parent == tmp_path / "cache" and side.precision == precision
        assert (tmp_path / "cache" / side.tensorrt["timing_cache"]).is_file()


@pytest.mark.tensorrt
@needs_trt
def test_int8_engine_uses_entropy_calibrator_and_keeps_its_cache(tmp_path):
    import tensorrt as trt

    if int(trt.__version__.split(".")[0]) >= 11:
        pytest.skip(f"TensorRT {trt.__version__} has no INT8 calibration (Q/DQ only)")
    onnx_path = shipped(tmp_path)
    ref = OnnxRuntimeBackend(onnx_path)
    h, w = ref.info.height, ref.info.width
    engine = build_engine(onnx_path, fp16=True, int8=True, calib=CalibrationBatches(_frames(8, h, w), h, w))
    side = read_sidecar(engine).tensorrt
    cache = engine.with_name(side["calib_cache"])
    assert cache.is_file() and cache.stat().st_size > 0 and side["int8_mode"] == "entropy_calibrator2"
    backend = TensorRTBackend(engine)
    rgb = _frames(1, h, w, start=300)[0]
    assert float(np.nanmean(np.abs(backend.infer(rgb) - ref.infer(rgb)) / ref.infer(rgb))) < 0.1
    backend.close()
    build_engine(onnx_path, engine, fp16=True, int8=True, calib=None)  # same ONNX, TensorRT, GPU: cache reused


@pytest.mark.tensorrt
@needs_trt
def test_engine_from_another_tensorrt_version_is_rebuilt_at_load(tmp_path, caplog):
    onnx_path = shipped(tmp_path)
    backend = TensorRTBackend(onnx_path, engine_cache_dir=tmp_path / "cache")
    path = backend.path
    backend.close()
    meta = read_sidecar(path)
    meta.tensorrt["version"] = "9.0.0"
    write_sidecar(path, meta)
    caplog.set_level(logging.INFO)
    rebuilt = TensorRTBackend(onnx_path, engine_cache_dir=tmp_path / "cache")
    assert "engine built with TensorRT 9.0.0" in caplog.text
    assert read_sidecar(path).tensorrt["version"] != "9.0.0"
    rebuilt.close()


@pytest.mark.tensorrt
@needs_trt
def test_engine_infers_from_another_thread_like_the_node_worker(tmp_path):
    onnx_path = shipped(tmp_path)
    backend = TensorRTBackend(onnx_path, engine_cache_dir=tmp_path / "cache")
    try:
        rgb = _frames(1, backend.info.height, backend.info.width, start=5)[0]
        here = backend.infer_outputs(rgb)
        there = {}
        worker = threading.Thread(target=lambda: there.update(out=backend.infer_outputs(rgb)))
        worker.start()
        worker.join()
        np.testing.assert_array_equal(there["out"][0], here[0])
    finally:
        backend.close()


@pytest.mark.tensorrt
@needs_trt
def test_engine_of_a_model_with_a_validity_output_returns_both_outputs_like_onnxruntime(tmp_path):
    pytest.importorskip("onnx", reason="the tiny test model is written with the onnx package")
    from tiny_depth_model import make_tiny_depth_model

    onnx_path = make_tiny_depth_model(tmp_path / "valid.onnx", validity=True)
    ref = OnnxRuntimeBackend(onnx_path)
    backend = TensorRTBackend(onnx_path, precision="fp32", engine_cache_dir=tmp_path / "cache")
    try:
        assert read_sidecar(backend.path).validity_output == "valid" and backend.info.has_validity
        rgb = np.random.default_rng(4).integers(0, 200, (32, 96, 3), dtype=np.uint8)
        (d_ref, v_ref), (d_trt, v_trt) = ref.infer_outputs(rgb), backend.infer_outputs(rgb)
        np.testing.assert_allclose(d_trt, d_ref, rtol=2e-3)
        np.testing.assert_allclose(v_trt, v_ref, atol=1e-6)
        assert v_ref.min() == 0.0 and v_ref.max() == 1.0
    finally:
        backend.close()


def test_engine_sidecar_records_tensorrt_environment(tmp_path):
    meta = _meta(precision="int8", tensorrt={**ENV, "calib_cache": "m.int8.engine.calib.x.cache"})
    write_sidecar(tmp_path / "m.int8.engine", meta)
    raw = json.loads((tmp_path / "m.int8.engine.json").read_text())
    assert raw["tensorrt"]["version"] == "10.3.0" and raw["tensorrt"]["compute_capability"] == "8.7"
    assert read_sidecar(tmp_path / "m.int8.engine") == meta
