"""OpenVINO backend: parity with ONNX Runtime on the shipped fp32 and INT8 QDQ models, threads, clear errors, and
``auto``'s order TensorRT > ONNX Runtime CUDA > OpenVINO > ONNX Runtime CPU (with availability mocked: no GPU or
missing package needed). Tests that run OpenVINO skip, with the reason, where the optional package is absent."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

import monodepth_ros.backends as backends
from monodepth_ros.backends import (
    AUTO_ORDER,
    ModelLoadError,
    OnnxRuntimeBackend,
    OpenVINOBackend,
    auto_candidates,
    create_backend,
    openvino_unavailable_reason,
)
from monodepth_ros.backends.openvino_backend import openvino_unavailable_reason as reason_in_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_depth_model import make_tiny_depth_model, save_disparity_graph  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "monodepth_ros" / "models"
FP32, INT8 = MODELS / "default.onnx", MODELS / "default.int8.onnx"
OV_REASON = openvino_unavailable_reason()
needs_openvino = pytest.mark.skipif(OV_REASON is not None, reason=str(OV_REASON))
# fp32: the exporter's torch-vs-ONNX-Runtime parity tolerance on disparity (training/export/parity.py PARITY_ATOL).
FP32_ATOL = 1e-4
# INT8: the INT8 accuracy budget (training/quantize.py): depth abs_rel against the reference within 2 %.
INT8_ABS_REL_BUDGET = 0.02


def _frames(h: int, w: int, n_random: int = 2) -> list[np.ndarray]:
    from monodepth_ros.synthetic.world import SynthConfig, SyntheticWorld

    rng = np.random.default_rng(7)
    world = SyntheticWorld(SynthConfig(width=w, height=h, seed=3))
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n_random)] + \
        [world.render(i).rgb for i in (0, 5)]


def _abs_rel_depth(ref_disp: np.ndarray, disp: np.ndarray) -> float:
    ref, d = 1.0 / ref_disp.astype(np.float64), 1.0 / disp.astype(np.float64)
    return float(np.mean(np.abs(d - ref) / ref))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_depth_model(tmp_path_factory.mktemp("ov") / "tiny.onnx")


# ---- parity --------------------------------------------------------------------------------------------------
@needs_openvino
def test_fp32_model_matches_onnx_runtime_tightly():
    ov_b, ort_b = OpenVINOBackend(FP32, threads=2), OnnxRuntimeBackend(FP32, threads=2)
    assert ov_b.info == ort_b.info and ov_b.precision == "fp32" and ov_b.name == "openvino"
    for rgb in _frames(ov_b.info.height, ov_b.info.width):
        a, b = ov_b.infer_disp(rgb), ort_b.infer_disp(rgb)
        assert a.shape == (ov_b.info.height, ov_b.info.width) and a.dtype == np.float32
        assert np.max(np.abs(a - b)) < FP32_ATOL
        assert _abs_rel_depth(b, a) < 1e-5
    ov_b.close()


@needs_openvino
def test_int8_qdq_model_keeps_the_export_accuracy_budget_on_openvino():
    """The export's INT8 budget (training/quantize.py): median-scaled abs_rel against GT on the held-out synthetic
    frames (world seed 0 from frame 10000, the export's own) degrades by at most 2 % relative to fp32. The shipped
    INT8 is symmetric (TensorRT's form, issue 20). OpenVINO's signed-INT8 CPU kernels move depth ~5 % from fp32 pixel
    by pixel (4.9 % measured here, AMD EPYC with AVX-512 VNNI, against 2.2 % on ONNX Runtime), yet against GT it is
    2.9 % better than fp32 on these frames; the pixel-level agreement is bounded loosely, to catch a broken graph."""
    from monodepth_ros.evaluation.metrics import evaluate_depth
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

    ov8, ov32 = OpenVINOBackend(INT8, threads=2), OpenVINOBackend(FP32, threads=2)
    assert ov8.precision == "int8"
    h, w = ov8.info.height, ov8.info.width
    world = SyntheticWorld(SynthConfig(width=w, height=h, seed=0))
    frames = [world.render(i) for i in range(10_000, 10_024)]
    gts = [np.where(np.isfinite(f.depth_m), f.depth_m, 0.0).astype(np.float32) for f in frames]
    d8 = [ov8.infer(f.rgb, out_size=(h, w)) for f in frames]
    d32 = [ov32.infer(f.rgb, out_size=(h, w)) for f in frames]
    m8 = evaluate_depth(gts, d8, median_scaling=True, crop=None).metrics["abs_rel"]
    m32 = evaluate_depth(gts, d32, median_scaling=True, crop=None).metrics["abs_rel"]
    assert (m8 - m32) / m32 <= INT8_ABS_REL_BUDGET, (m8, m32)
    vs_fp32 = [_abs_rel_depth(ov32.infer_disp(f.rgb), ov8.infer_disp(f.rgb)) for f in frames]
    assert np.mean(vs_fp32) < 0.08, np.mean(vs_fp32)


@needs_openvino
def test_nan_disparity_passes_through_like_onnx_runtime(tiny):
    ov_b, ort_b = OpenVINOBackend(tiny), OnnxRuntimeBackend(tiny)
    white = np.full((32, 96, 3), 255, np.uint8)  # the tiny model's NaN trap
    assert np.isnan(ov_b.infer_disp(white)).all() and np.isnan(ort_b.infer_disp(white)).all()
    rgb = np.random.default_rng(0).integers(0, 200, (64, 192, 3), dtype=np.uint8)  # resized like ORT's input
    np.testing.assert_allclose(ov_b.infer_disp(rgb), ort_b.infer_disp(rgb), rtol=1e-6, atol=1e-7)


@needs_openvino
def test_validity_output_matches_onnx_runtime(tmp_path):
    model = make_tiny_depth_model(tmp_path / "valid.onnx", validity=True)
    ov_b, ort_b = OpenVINOBackend(model), OnnxRuntimeBackend(model)
    rgb = np.random.default_rng(2).integers(0, 200, (64, 192, 3), dtype=np.uint8)
    (d_ov, v_ov), (d_ort, v_ort) = ov_b.infer_outputs(rgb), ort_b.infer_outputs(rgb)
    np.testing.assert_allclose(d_ov, d_ort, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(v_ov, v_ort)
    assert set(np.unique(v_ov)) == {0.0, 1.0}  # road and sky rows both present


# ---- threads and errors --------------------------------------------------------------------------------------
@needs_openvino
@pytest.mark.parametrize("threads", [1, 2])
def test_threads_reach_openvino(tiny, threads):
    b = OpenVINOBackend(tiny, threads=threads)
    assert b.threads == threads and b.compiled_threads == threads
    assert f"threads={threads}" in repr(b)


@needs_openvino
def test_threads_must_be_positive(tiny):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            OpenVINOBackend(tiny, threads=bad)


@needs_openvino
def test_a_file_that_is_not_onnx_is_refused():
    """Missing, empty, corrupt and truncated files: test_backends' load-error test, run for both backends."""
    with pytest.raises(ModelLoadError, match="expected a file ending in .onnx"):
        OpenVINOBackend(FP32.with_suffix(".onnx.json"))


@needs_openvino
def test_graph_that_disagrees_with_its_metadata_is_rejected(tmp_path):
    from onnx import helper

    nodes = [helper.make_node("ReduceMean", ["rgb"], ["disp"], axes=[1], keepdims=1)]
    meta = {"height": 64, "width": 96, "min_depth": 0.1, "max_depth": 100.0, "scale_policy": "relative",
            "scale": 1.0, "mean": [0.0] * 3, "std": [1.0] * 3, "intrinsics_norm": None, "source_sha256": "0" * 64}
    bad = save_disparity_graph(tmp_path / "bad.onnx", nodes, [], 32, 96, meta)  # graph 32 high, metadata 64
    with pytest.raises(ModelLoadError, match="metadata and graph do not match"):
        OpenVINOBackend(bad)


@needs_openvino
def test_a_closed_backend_says_so(tiny):
    b = OpenVINOBackend(tiny)
    b.close()
    with pytest.raises(RuntimeError, match="was closed"):
        b.infer_disp(np.zeros((32, 96, 3), np.uint8))


def test_missing_package_gives_a_reason_and_kind_openvino_a_clear_error(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    reason = reason_in_module()
    assert reason is not None and "'openvino' Python package is not installed" in reason
    assert "requirements/openvino.txt" in reason
    monkeypatch.setattr(backends, "openvino_unavailable_reason", reason_in_module)
    with pytest.raises(RuntimeError, match="kind='openvino' requested but the 'openvino' Python package"):
        create_backend(tiny, kind="openvino")
    with pytest.raises(RuntimeError, match="OpenVINO backend requested but"):
        OpenVINOBackend(tiny)


# ---- auto ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "trt, cuda, ov, expected",
    [
        (True, True, True, ["tensorrt", "onnxruntime-cuda", "openvino", "onnxruntime-cpu"]),
        (False, True, True, ["onnxruntime-cuda", "openvino", "onnxruntime-cpu"]),
        (False, False, True, ["openvino", "onnxruntime-cpu"]),
        (True, False, False, ["tensorrt", "onnxruntime-cpu"]),
        (False, False, False, ["onnxruntime-cpu"]),
    ],
)
def test_auto_order_is_tensorrt_cuda_openvino_cpu(trt, cuda, ov, expected):
    assert AUTO_ORDER == ("tensorrt", "onnxruntime-cuda", "openvino", "onnxruntime-cpu")
    assert auto_candidates(tensorrt=trt, ort_cuda=cuda, openvino=ov) == expected


def _availability(monkeypatch, trt: str | None, cuda: bool, ov: str | None):
    monkeypatch.setattr(backends, "tensorrt_unavailable_reason", lambda: trt)
    monkeypatch.setattr(backends, "_ort_has_cuda", lambda: cuda)
    monkeypatch.setattr(backends, "openvino_unavailable_reason", lambda: ov)


@needs_openvino
def test_auto_picks_openvino_on_a_cpu_machine_and_logs_it(tiny, monkeypatch, caplog):
    _availability(monkeypatch, "no GPU here", False, None)
    caplog.set_level(logging.INFO, logger="monodepth_ros.backends")
    b = create_backend(tiny, threads=2)
    assert isinstance(b, OpenVINOBackend) and b.compiled_threads == 2
    assert "TensorRT not used: no GPU here" in caplog.text
    assert "depth backend: OpenVINO" in caplog.text and "threads=2" in caplog.text


def test_auto_without_openvino_uses_onnx_runtime_cpu_and_says_why(tiny, monkeypatch, caplog):
    _availability(monkeypatch, "no GPU here", False, "the 'openvino' Python package is not installed")
    caplog.set_level(logging.INFO, logger="monodepth_ros.backends")
    b = create_backend(tiny, threads=2)
    assert isinstance(b, OnnxRuntimeBackend) and b.providers == ["CPUExecutionProvider"]
    assert "OpenVINO not used: the 'openvino' Python package is not installed" in caplog.text
    assert "depth backend: ONNX Runtime CPU" in caplog.text


def test_auto_falls_back_down_the_order_when_a_backend_fails_to_load(tiny, monkeypatch, caplog):
    class Broken:
        def __init__(self, *a, **k):
            raise RuntimeError("simulated load failure")

    _availability(monkeypatch, None, False, None)  # TensorRT "available", then OpenVINO
    monkeypatch.setattr(backends, "TensorRTBackend", Broken)
    monkeypatch.setattr(backends, "OpenVINOBackend", Broken)
    caplog.set_level(logging.INFO, logger="monodepth_ros.backends")
    b = create_backend(tiny)
    assert isinstance(b, OnnxRuntimeBackend)
    assert "TensorRT backend failed (simulated load failure); falling back to OpenVINO" in caplog.text
    assert "OpenVINO backend failed (simulated load failure); falling back to ONNX Runtime CPU" in caplog.text


def test_auto_does_not_hide_a_bad_model_behind_a_fallback(tmp_path, monkeypatch):
    _availability(monkeypatch, "no GPU here", False, None)
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        create_backend(tmp_path / "noise.onnx")


def test_runtime_without_openvino_imports_and_runs_on_onnx_runtime(tiny):
    """A robot without the optional package: importing the backends does not touch openvino, and auto runs."""
    import subprocess

    code = (
        "import sys; sys.modules['openvino'] = None\n"  # as if not installed: import openvino -> ImportError
        "from monodepth_ros.backends import create_backend, openvino_unavailable_reason\n"
        "assert 'not installed' in openvino_unavailable_reason()\n"
        f"b = create_backend({str(tiny)!r})\n"
        "assert b.name == 'onnxruntime', b\n"
    )
    lazy = "import sys, monodepth_ros.backends; assert 'openvino' not in sys.modules, 'openvino imported eagerly'"
    for c in (code, lazy):
        subprocess.run([sys.executable, "-c", c], check=True, timeout=60)
