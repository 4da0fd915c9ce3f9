"""TensorRT path. The parts before TensorRT (calibration batches, the rebuild decision, engine metadata, the
errors on a machine without TensorRT) run everywhere; engine build and parity with ONNX Runtime run only where
TensorRT >= 10, cuda-python and a CUDA GPU exist, and are skipped with the reason otherwise."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from monodepth_ros.backends import OnnxRuntimeBackend, TensorRTBackend, tensorrt_unavailable_reason
from monodepth_ros.backends.base import preprocess
from monodepth_ros.backends.calibration import CalibrationBatches
from monodepth_ros.backends.model_meta import META_KEY, ModelMeta, read_sidecar, write_sidecar
from monodepth_ros.backends.tensorrt_backend import engine_rebuild_reason, resolve_engine
from monodepth_ros.backends.tensorrt_build import build_engine, engine_path_for
from monodepth_ros.bundle import file_sha256

H, W = 32, 64
ENV = {"version": "10.3.0", "device_name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7"}
TRT_REASON = tensorrt_unavailable_reason()
needs_trt = pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT path not testable here: {TRT_REASON}")


def _meta(**kw) -> ModelMeta:
    base = dict(height=H, width=W, min_depth=0.1, max_depth=100.0, scale_policy="relative", scale=1.0,
                mean=[0.45] * 3, std=[0.225] * 3, intrinsics_norm=None, source_sha256="ab" * 32, opset=18)
    return ModelMeta(**{**base, **kw})


def tiny_onnx(path, meta: ModelMeta | None = None):
    """A small valid exported-style model without torch: disp = 0.01 + 9.99 * sigmoid(mean over RGB)."""
    w = numpy_helper.from_array(np.full((1, 3, 1, 1), 1 / 3, np.float32), "w")
    a = numpy_helper.from_array(np.array(9.99, np.float32), "a")
    b = numpy_helper.from_array(np.array(0.01, np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["rgb", "w"], ["c"]),
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("Mul", ["s", "a"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["disp"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("disp", TensorProto.FLOAT, [1, 1, H, W])], initializer=[w, a, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.helper.set_model_props(model, {META_KEY: (meta or _meta()).to_json()})
    onnx.save(model, str(path))
    return path


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


def test_resolve_engine_finds_or_plans_the_engine_next_to_the_onnx(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    engine, src, reason = resolve_engine(onnx_path, "fp16", env=ENV)
    assert engine == tmp_path / "m.fp16.engine" == engine_path_for(onnx_path, "fp16")
    assert src == onnx_path and reason == "no engine built yet"

    engine.write_bytes(b"plan")
    write_sidecar(engine, _meta(precision="fp16", tensorrt={**ENV, "onnx_file": "m.onnx",
                                                            "onnx_sha256": file_sha256(onnx_path)}))
    assert resolve_engine(onnx_path, "fp16", env=ENV)[2] is None
    # opening the engine itself finds its ONNX through the sidecar
    assert resolve_engine(engine, env=ENV) == (engine, onnx_path, None)
    assert "installed is 10.8.0" in resolve_engine(engine, env={**ENV, "version": "10.8.0"})[2]
    # an INT8 QDQ ONNX always maps to an int8 engine
    q = tiny_onnx(tmp_path / "q.onnx", _meta(precision="int8"))
    assert resolve_engine(q, "fp16", env=ENV)[0].name == "q.int8.engine"


def test_engine_sidecar_records_tensorrt_environment(tmp_path):
    meta = _meta(precision="int8", tensorrt={**ENV, "calib_cache": "m.int8.engine.calib.cache"})
    write_sidecar(tmp_path / "m.int8.engine", meta)
    raw = json.loads((tmp_path / "m.int8.engine.json").read_text())
    assert raw["tensorrt"]["version"] == "10.3.0" and raw["tensorrt"]["compute_capability"] == "8.7"
    assert read_sidecar(tmp_path / "m.int8.engine") == meta


def test_without_tensorrt_backend_and_builder_say_why(tmp_path):
    if TRT_REASON is None:
        pytest.skip("TensorRT is available: this pins the behaviour of machines without it")
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(RuntimeError, match="TensorRT backend unavailable: .*tensorrt"):
        TensorRTBackend(onnx_path)
    with pytest.raises(RuntimeError, match="cannot build a TensorRT engine"):
        build_engine(onnx_path)


# -----------------------------------------------------------------------------------------------------------------
# Only with TensorRT + CUDA


@pytest.fixture(scope="module")
def real_onnx(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from monodepth_training.bundle_io import save_bundle
    from monodepth_training.export import export_onnx
    from monodepth_training.networks.registry import build_depth_net

    from monodepth_ros.bundle import BundleMeta

    d = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    bundle = d / "r18.safetensors"
    save_bundle(bundle, build_depth_net("monodepth2", num_layers=18),
                BundleMeta(depth_net="monodepth2", height=96, width=320, depth_kwargs={"num_layers": 18}))
    return export_onnx(bundle, d).path


def _frames(n, h=96, w=320, start=0):
    from monodepth_training.export import synthetic_frames

    return synthetic_frames(n, h, w, start=start)


@pytest.mark.tensorrt
@needs_trt
def test_fp32_and_fp16_engines_match_onnxruntime(real_onnx):
    ref = OnnxRuntimeBackend(real_onnx)
    for precision, tol in (("fp32", 2e-3), ("fp16", 2e-2)):  # fp32 may run TF32 kernels on Ampere+
        backend = TensorRTBackend(real_onnx, precision=precision)
        try:
            for rgb in _frames(3, start=20):
                d_ref, d_trt = ref.infer(rgb), backend.infer(rgb)
                rel = float(np.nanmean(np.abs(d_trt - d_ref) / d_ref))
                assert rel < tol, (precision, rel)
        finally:
            backend.close()
        side = read_sidecar(backend.path)
        assert side.precision == precision and side.tensorrt["version"]
        assert (backend.path.parent / (backend.path.name + ".timing.cache")).is_file()


@pytest.mark.tensorrt
@needs_trt
def test_int8_engine_uses_entropy_calibrator_and_keeps_its_cache(real_onnx):
    engine = build_engine(real_onnx, fp16=True, int8=True, calib=CalibrationBatches(_frames(8), 96, 320))
    cache = engine.with_name(engine.name + ".calib.cache")
    assert cache.is_file() and cache.stat().st_size > 0
    assert read_sidecar(engine).tensorrt["int8_mode"] == "entropy_calibrator2"
    backend = TensorRTBackend(engine)
    ref = OnnxRuntimeBackend(real_onnx)
    rgb = _frames(1, start=300)[0]
    assert float(np.nanmean(np.abs(backend.infer(rgb) - ref.infer(rgb)) / ref.infer(rgb))) < 0.1
    backend.close()
    # a rebuild reads the calibration cache and needs no frames
    build_engine(real_onnx, engine, fp16=True, int8=True, calib=None)


@pytest.mark.tensorrt
@needs_trt
def test_engine_from_another_tensorrt_version_is_rebuilt_at_load(real_onnx, caplog):
    backend = TensorRTBackend(real_onnx, precision="fp16")
    path = backend.path
    backend.close()
    meta = read_sidecar(path)
    meta.tensorrt["version"] = "9.0.0"
    write_sidecar(path, meta)
    caplog.set_level(logging.WARNING)
    rebuilt = TensorRTBackend(real_onnx, precision="fp16")
    assert "engine built with TensorRT 9.0.0" in caplog.text
    assert read_sidecar(path).tensorrt["version"] != "9.0.0"
    rebuilt.close()


@pytest.mark.tensorrt
@needs_trt
def test_engine_of_a_model_with_a_validity_output_returns_both_outputs_like_onnxruntime(tmp_path):
    from tiny_depth_model import make_tiny_depth_model

    onnx_path = make_tiny_depth_model(tmp_path / "valid.onnx", validity=True)
    ref = OnnxRuntimeBackend(onnx_path)
    backend = TensorRTBackend(onnx_path, precision="fp32")
    try:
        assert read_sidecar(backend.path).validity_output == "valid" and backend.info.has_validity
        rgb = np.random.default_rng(4).integers(0, 200, (32, 96, 3), dtype=np.uint8)
        (d_ref, v_ref), (d_trt, v_trt) = ref.infer_outputs(rgb), backend.infer_outputs(rgb)
        np.testing.assert_allclose(d_trt, d_ref, rtol=2e-3)
        np.testing.assert_allclose(v_trt, v_ref, atol=1e-6)
        assert v_ref.min() == 0.0 and v_ref.max() == 1.0
    finally:
        backend.close()
