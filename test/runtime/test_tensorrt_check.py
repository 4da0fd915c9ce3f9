"""benchmarks/tensorrt_check.py, the TensorRT device check, on a machine without TensorRT: it must say so, exit
with its own code, and still run and report the ONNX Runtime CPU part, without importing torch. Its pure helpers
(the ONNX change it forces, output comparison, exit code) are checked here too."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monodepth_ros.backends import OnnxRuntimeBackend, tensorrt_unavailable_reason
from monodepth_ros.backends.model_meta import read_onnx_model_meta
from monodepth_ros.bundle import file_sha256

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "tensorrt_check.py"
MODELS = REPO / "monodepth_ros" / "models"


@pytest.fixture(scope="module")
def check_module():
    spec = importlib.util.spec_from_file_location("tensorrt_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_tensorrt_the_check_says_so_exits_3_and_still_reports_onnxruntime(tmp_path):
    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is usable here: the check runs its TensorRT part (a device check, minutes)")
    out = tmp_path / "report.json"
    # torch is made unimportable: the check must run on a robot without the trainer stack.
    code = ("import runpy, sys; sys.modules['torch'] = None; "
            f"sys.argv = ['tensorrt_check.py', '--iters', '3', '--frames', '2', '--out', {str(out)!r}]; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 3, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"TensorRT not available: {reason}" in run.stdout
    report = json.loads(out.read_text())
    assert report["tensorrt"] == {"available": False, "reason": reason}
    assert report["exit_code"] == 3 and "TensorRT is not usable here" in report["exit_meaning"]
    assert report["torch_imported"] is False
    rows = {(r["backend"], r["model"]): r for r in report["rows"]}
    assert set(rows) == {("onnxruntime-cpu", "default.onnx"), ("onnxruntime-cpu", "default.int8.onnx")}
    for r in rows.values():
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["iters"] == 3
    assert [c["status"] for c in report["checks"]] == ["pass", "pass"]


def test_forced_onnx_change_keeps_the_model_but_changes_its_sha256(check_module, tmp_path):
    src = MODELS / "default.onnx"
    changed = tmp_path / "default.onnx"
    changed.write_bytes(check_module.onnx_with_note(src.read_bytes(), b"retrained"))
    assert file_sha256(changed) != file_sha256(src)
    assert read_onnx_model_meta(changed) == read_onnx_model_meta(src)
    rgb = check_module.synthetic_frames(1, 96, read_onnx_model_meta(src).width, seed=2)[0]
    a, b = OnnxRuntimeBackend(src).infer_outputs(rgb), OnnxRuntimeBackend(changed).infer_outputs(rgb)
    np.testing.assert_array_equal(a[0], b[0])


def test_output_comparison_and_exit_code(check_module):
    disp = np.full((4, 4), 0.1, np.float32)
    valid = np.ones((4, 4), np.float32)
    ref = [(disp, valid)]
    got = [(disp * 1.01, np.where(np.arange(16).reshape(4, 4) == 0, 0.2, 1.0).astype(np.float32))]
    diff = check_module.compare_outputs(ref, got)
    assert diff["mean_rel_disp"] == pytest.approx(0.01, rel=1e-3)
    assert diff["max_abs_valid"] == pytest.approx(0.8) and diff["valid_agreement"] == pytest.approx(15 / 16)
    assert check_module.within(diff, {"mean_rel_disp": 0.02, "valid_agreement": 0.9})
    assert not check_module.within(diff, {"mean_rel_disp": 0.02, "valid_agreement": 0.98})
    assert check_module.compare_outputs([(disp, None)], [(disp, None)])["valid_agreement"] is None
    passed, failed = {"status": "pass"}, {"status": "fail"}
    assert check_module.exit_code([passed], None) == 0
    assert check_module.exit_code([passed], "no tensorrt") == 3
    assert check_module.exit_code([passed, failed], "no tensorrt") == 1
