"""Runtime backends over real exported models: auto selection and its log line, the torch backend through the
entry point, and clear errors for corrupt, truncated, metadata-less or mismatched model files."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from monodepth_training.bundle_io import save_bundle
from monodepth_training.export import export_onnx, synthetic_frames
from monodepth_training.networks.registry import build_depth_net
from tiny_depth_model import make_tiny_depth_model, road_rows

import monodepth_ros.backends as backends
from monodepth_ros.backends import (
    DepthBackend,
    ModelInfo,
    ModelLoadError,
    OnnxRuntimeBackend,
    OpenVINOBackend,
    create_backend,
    openvino_unavailable_reason,
    read_onnx_meta,
    tensorrt_unavailable_reason,
)
from monodepth_ros.backends.model_meta import (
    META_KEY,
    ModelMeta,
    check_io_against_meta,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from monodepth_ros.bundle import BundleMeta
from monodepth_ros.geometry import denormalize_intrinsics

H, W = 64, 192


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("backends")
    torch.manual_seed(1)
    net = build_depth_net("monodepth2", num_layers=18)
    bundle = d / "r18.safetensors"
    save_bundle(bundle, net, BundleMeta(depth_net="monodepth2", height=H, width=W, depth_kwargs={"num_layers": 18}))
    res = export_onnx(bundle, d, n_synthetic=0)
    return {"dir": d, "bundle": bundle, "onnx": res.path}


def _rewrite(src, dst, edit):
    m = onnx.load(str(src))
    edit(m)
    onnx.save(m, str(dst))
    return dst


def _set_meta(m, **changes):
    props = {p.key: p.value for p in m.metadata_props}
    raw = json.loads(props[META_KEY])
    raw.update(changes)
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, {META_KEY: json.dumps(raw)})


def test_auto_picks_onnxruntime_cpu_without_gpu_or_openvino_and_logs_the_choice(model, caplog, monkeypatch):
    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present: auto would pick TensorRT on this machine")
    # OpenVINO (an optional extra, ahead of ORT CPU in auto) as on a robot without it; see test_openvino_backend.py.
    monkeypatch.setattr(backends, "openvino_unavailable_reason", lambda: "not installed (simulated)")
    caplog.set_level(logging.INFO, logger="monodepth_ros.backends")
    backend = create_backend(model["onnx"], threads=2)
    assert isinstance(backend, OnnxRuntimeBackend)
    assert backend.providers == ["CPUExecutionProvider"]
    text = caplog.text
    assert "TensorRT not used" in text and "depth backend: ONNX Runtime CPU" in text and "threads=2" in text
    assert backend.infer(synthetic_frames(1, H, W)[0]).shape == (H, W)


def test_auto_accepts_a_logger_with_info_and_warn_only(model):
    class RosLikeLogger:  # rclpy's RcutilsLogger shape: info()/warn()
        def __init__(self):
            self.lines = []

        def info(self, msg):
            self.lines.append(msg)

        def warn(self, msg):
            self.lines.append(msg)

    lg = RosLikeLogger()
    create_backend(model["onnx"], logger=lg)
    assert any("depth backend:" in line for line in lg.lines)


def test_torch_backend_via_entry_point_matches_onnxruntime(model):
    torch_b = create_backend(model["bundle"], kind="torch", threads=2)
    assert type(torch_b).__module__ == "monodepth_training.inference"
    ort_b = create_backend(model["onnx"], kind="onnxruntime", threads=2)
    rng = np.random.default_rng(3)
    for rgb in [rng.integers(0, 256, (H, W, 3), dtype=np.uint8), *synthetic_frames(1, H, W, start=9)]:
        diff = np.max(np.abs(torch_b.infer_disp(rgb) - ort_b.infer_disp(rgb)))
        assert diff < 1e-4
    assert torch_b.info.source_sha256 == ort_b.info.source_sha256


def test_unknown_kind_and_unavailable_tensorrt_are_clear_errors(model):
    with pytest.raises(ValueError, match="backend kind must be one of"):
        create_backend(model["onnx"], kind="tflite")
    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is available here")
    with pytest.raises(RuntimeError, match="kind='tensorrt' requested but"):
        create_backend(model["onnx"], kind="tensorrt")


def test_engine_path_falls_back_to_its_onnx_without_tensorrt(model, tmp_path, caplog):
    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT is available here")
    shutil.copy(model["onnx"], tmp_path / "m.onnx")
    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"not a real engine")
    meta = read_sidecar(model["onnx"])
    meta.tensorrt = {"version": "10.3.0", "device_name": "Orin", "compute_capability": "8.7", "onnx_file": "m.onnx"}
    meta.precision = "fp16"
    write_sidecar(engine, meta)
    caplog.set_level(logging.INFO, logger="monodepth_ros.backends")
    backend = create_backend(engine)
    assert isinstance(backend, OnnxRuntimeBackend | OpenVINOBackend) and backend.path.name == "m.onnx"
    assert "m.onnx, the ONNX the engine m.fp16.engine was built from" in caplog.text


_OV_REASON = openvino_unavailable_reason()


@pytest.mark.parametrize("kind", ["onnxruntime", pytest.param(
    "openvino", marks=pytest.mark.skipif(_OV_REASON is not None, reason=str(_OV_REASON)))])
def test_missing_empty_corrupt_and_truncated_files_raise_model_load_error(model, tmp_path, kind):
    cls = {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVINOBackend}[kind]
    with pytest.raises(ModelLoadError, match="not found"):
        cls(tmp_path / "nope.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        cls(tmp_path / "empty.onnx")
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        cls(tmp_path / "noise.onnx")
    data = model["onnx"].read_bytes()
    (tmp_path / "half.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        create_backend(tmp_path / "half.onnx", kind=kind)
    with pytest.raises(ModelLoadError):
        read_onnx_meta(tmp_path / "half.onnx")


def test_model_without_metadata_is_rejected(model, tmp_path):
    bare = _rewrite(model["onnx"], tmp_path / "bare.onnx", lambda m: m.metadata_props.__delitem__(slice(None)))
    with pytest.raises(ModelLoadError, match="no 'monodepth_ros' metadata"):
        OnnxRuntimeBackend(bare)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"height": 2 * H, "width": 2 * W}, "metadata and graph do not match"),
        ({"output": "depth"}, "input/output must be"),
        ({"scale_policy": "absolute"}, "scale_policy must be one of"),
        ({"min_depth": 50.0, "max_depth": 10.0}, "min_depth < max_depth"),
        ({"surprise": 1}, "unknown fields"),
        ({"validity_output": "valid"}, "lack the metadata validity_output 'valid'"),  # the graph has no such output
        ({"validity_output": "sky"}, "validity_output must be null or 'valid'"),
    ],
)
def test_metadata_that_is_invalid_or_disagrees_with_the_graph_is_rejected(model, tmp_path, changes, message):
    bad = _rewrite(model["onnx"], tmp_path / "bad.onnx", lambda m: _set_meta(m, **changes))
    with pytest.raises(ModelLoadError, match=message):
        OnnxRuntimeBackend(bad)


def test_graph_output_renamed_is_a_mismatch(model, tmp_path):
    def rename(m):
        old = m.graph.output[0].name
        m.graph.output[0].name = "depth_out"
        for n in m.graph.node:
            n.output[:] = ["depth_out" if o == old else o for o in n.output]

    bad = _rewrite(model["onnx"], tmp_path / "renamed.onnx", rename)
    with pytest.raises(ModelLoadError, match="lack the metadata output 'disp'"):
        OnnxRuntimeBackend(bad)


def test_metadata_json_that_is_not_json_is_rejected(model, tmp_path):
    def garble(m):
        del m.metadata_props[:]
        onnx.helper.set_model_props(m, {META_KEY: "{height: 64"})

    bad = _rewrite(model["onnx"], tmp_path / "garbled.onnx", garble)
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        OnnxRuntimeBackend(bad)


def test_sidecar_disagreeing_with_embedded_metadata_is_rejected(model, tmp_path):
    onnx_copy = tmp_path / "m.onnx"
    shutil.copy(model["onnx"], onnx_copy)
    shutil.copy(sidecar_path(model["onnx"]), sidecar_path(onnx_copy))
    OnnxRuntimeBackend(onnx_copy)  # identical sidecar: fine
    raw = json.loads(sidecar_path(onnx_copy).read_text())
    raw["scale"] = 2.0
    sidecar_path(onnx_copy).write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match=r"disagrees .* on \['scale'\]"):
        OnnxRuntimeBackend(onnx_copy)


def test_threads_must_be_positive(model):
    with pytest.raises(ValueError, match="threads"):
        OnnxRuntimeBackend(model["onnx"], threads=0)


def test_model_meta_round_trips_through_json(model):
    meta = read_sidecar(model["onnx"])
    assert ModelMeta.from_json(meta.to_json()) == meta


def test_runtime_backends_do_not_import_torch(model):
    code = (
        "import sys; from monodepth_ros.backends import create_backend; "
        f"b = create_backend({str(model['onnx'])!r}, kind='onnxruntime'); "
        "import numpy as np; b.infer(np.zeros((64, 192, 3), np.uint8)); "
        "assert 'torch' not in sys.modules and 'monodepth_training' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- the validity output ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("validity")
    return {"valid": make_tiny_depth_model(d / "valid.onnx", validity=True),
            "plain": make_tiny_depth_model(d / "plain.onnx")}


@pytest.mark.parametrize("kind", ["onnxruntime", pytest.param(
    "openvino", marks=pytest.mark.skipif(_OV_REASON is not None, reason=str(_OV_REASON)))])
def test_infer_outputs_gives_the_validity_map_of_a_model_with_one_and_none_otherwise(tiny_models, kind):
    cls = {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVINOBackend}[kind]
    rgb = np.random.default_rng(5).integers(0, 200, (64, 192, 3), dtype=np.uint8)
    b = cls(tiny_models["valid"])
    assert b.info.has_validity and b.meta.validity_output == "valid"
    disp, valid = b.infer_outputs(rgb)
    assert disp.shape == valid.shape == (32, 96) and valid.dtype == np.float32
    road = road_rows(32, denormalize_intrinsics(np.array(b.meta.intrinsics_norm), 96, 32))
    assert road.any() and not road.all()
    np.testing.assert_array_equal(valid[road], 1.0)  # the road rows below the horizon
    np.testing.assert_array_equal(valid[~road], 0.0)  # the "sky" rows above it
    np.testing.assert_array_equal(b.infer_disp(rgb), disp)  # the disparity alone is the same run's
    plain = cls(tiny_models["plain"])
    assert not plain.info.has_validity
    disp_plain, none = plain.infer_outputs(rgb)
    assert none is None
    np.testing.assert_array_equal(disp_plain, disp)


def test_metadata_written_before_the_validity_output_loads_without_one(tiny_models):
    raw = json.loads(onnx.load(str(tiny_models["plain"])).metadata_props[0].value)
    assert "validity_output" not in raw  # as every model exported before the field existed
    assert ModelMeta.from_json(json.dumps(raw)).validity_output is None
    assert OnnxRuntimeBackend(tiny_models["plain"]).meta.validity_output is None


def test_a_validity_output_of_the_wrong_shape_is_a_mismatch():
    meta = ModelMeta(height=32, width=96, min_depth=0.1, max_depth=100.0, scale_policy="fixed", scale=5.0,
                     mean=[0.0] * 3, std=[1.0] * 3, intrinsics_norm=None, source_sha256="0" * 64,
                     validity_output="valid")
    inputs = [("rgb", [1, 3, 32, 96])]
    check_io_against_meta(meta, inputs, [("disp", [1, 1, 32, 96]), ("valid", [1, 1, 32, 96])])
    with pytest.raises(ModelLoadError, match=r"output 'valid' has shape \[1, 1, 16, 48\].*do not match"):
        check_io_against_meta(meta, inputs, [("disp", [1, 1, 32, 96]), ("valid", [1, 1, 16, 48])])
    meta.validity_output = None  # without the field, extra outputs are tolerated as before
    check_io_against_meta(meta, inputs, [("disp", [1, 1, 32, 96]), ("valid", [1, 1, 16, 48])])


def test_a_backend_implementing_only_run_disp_gives_no_validity():
    """The torch backend of older trainers implements only ``_run_disp``: ``infer_outputs`` must still work."""

    class Constant(DepthBackend):
        def _run_disp(self, x):
            return np.full((1, 1, *x.shape[2:]), 0.25, np.float32)

    info = ModelInfo(height=16, width=32, min_depth=0.1, max_depth=100.0, scale_policy="fixed")
    disp, valid = Constant(info).infer_outputs(np.zeros((8, 8, 3), np.uint8))
    assert disp.shape == (16, 32) and valid is None and np.all(disp == 0.25)
    with pytest.raises(TypeError, match="must implement _run"):
        class Nothing(DepthBackend):  # noqa: F841 - refused as it is defined
            pass
