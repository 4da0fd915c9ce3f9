"""The sky benchmark (benchmarks/sky.py) and the shipped default model's sky mask.

The benchmark's real-drive counting runs on a frame the test writes, through a real ONNX Runtime session of the tiny
validity model (sky rows above its horizon); the shipped model is scored on held-out synthetic frames (exact sky)
and, when ../shared/data/real is there, on the real KITTI drive.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from monodepth_ros.backends import create_backend

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "data" / "real"
MODELS = REPO / "monodepth_ros" / "models"
sys.path.insert(0, str(REPO / "benchmarks"))  # sky.py imports real_data as its neighbour
sys.path.insert(0, str(REPO / "test"))
from tiny_depth_model import make_tiny_depth_model  # noqa: E402


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sky = _load("sky")
rd = _load("real_data")


def test_real_rows_count_lidar_points_and_pixels_above_the_lidar_that_are_marked(tmp_path):
    # Tiny model 32x96, horizon cy = 16: valid = 0 on rows 0-16, 1 from row 17. At 64x192 (bilinear x2) the
    # validity is below 0.5 on rows 0-33 (row 33 samples model row 16.25 -> 0.25, row 34 -> 0.75).
    model = make_tiny_depth_model(tmp_path / "m.onnx", validity=True)
    backend = create_backend(str(model), "onnxruntime", threads=1)
    gt = np.zeros((64, 192), np.float32)
    gt[40:, ::3] = 10.0  # LiDAR returns from row 40 down: above them, rows 0-39
    gt[30, 5] = 10.0  # one return inside the marked band
    frame = rd.DepthFrame(0, np.full((64, 192, 3), 128, np.uint8), gt)
    out = sky.real_rows(backend, [frame], [0.5], tmp_path / "p.png")
    row = out["rows"][0]
    assert out["lidar_points"] == int((gt > 0).sum())
    assert row["lidar_marked_invalid"] == pytest.approx(1 / out["lidar_points"])
    assert out["above_lidar_pixels"] == 30 * 192  # above the highest return (row 30)
    assert row["above_lidar_marked_invalid"] == pytest.approx(1.0)
    assert (tmp_path / "p.png").is_file()


def test_a_model_without_validity_output_is_reported_as_publishing_the_sky(tmp_path, capsys):
    model = make_tiny_depth_model(tmp_path / "plain.onnx")
    rc = sky.main(["--model", str(model), "--real", str(tmp_path / "none"), "--frames", "2",
                   "--json", str(tmp_path / "s.json"), "--out", str(tmp_path / "o")])
    assert rc == 0
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["models"]["plain.onnx"]["validity_output"] is None
    assert "real rows skipped" in report["real_note"]
    assert "sky is published as depth" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["default.onnx", "default.int8.onnx"])
def test_shipped_model_masks_the_held_out_synthetic_sky_and_keeps_surfaces(name):
    backend = create_backend(str(MODELS / name), "onnxruntime", threads=1)
    assert backend.info.has_validity, f"{name} has no validity output: re-run make train-default"
    syn = sky.synthetic_rows(backend, [0.5], 10)
    s = syn["scores"][0]
    # Measured on 40 frames (docs/real_cameras.md): recall 0.53, precision 0.998, surfaces 0.01 %.
    assert s["recall"] > 0.35 and s["precision"] > 0.97 and s["surface_invalid"] < 0.002, s


@pytest.mark.skipif(not (REAL / "kitti_raw").is_dir(), reason=f"real KITTI data not found at {REAL} (a user's clone)")
def test_shipped_model_on_the_real_drive_loses_almost_no_lidar_point_and_masks_above_it(tmp_path):
    rc = sky.main(["--real", str(REAL), "--stride", "13", "--frames", "4", "--threshold", "0.5",
                   "--json", str(tmp_path / "s.json"), "--out", str(tmp_path / "o")])
    assert rc == 0
    report = json.loads((tmp_path / "s.json").read_text())
    for name in ("default.onnx", "default.int8.onnx"):
        row = report["models"][name]["real"]["rows"][0]
        assert row["lidar_marked_invalid"] < 0.001, (name, row)  # real surfaces kept
        assert row["above_lidar_marked_invalid"] > 0.2, (name, row)  # the sky above the LiDAR masked


def test_sky_published_nan_counts_gt_sky_that_the_prediction_leaves_empty():
    from monodepth_ros.replay.scoring import sky_published_nan

    gt = np.full((4, 6), 10.0, np.float32)
    gt[:2] = np.inf  # two rows of sky
    pred = np.full((2, 3), 5.0, np.float32)  # half the GT size
    pred[0, :2] = np.nan  # covers GT rows 0-1, columns 0-3
    assert sky_published_nan(pred, gt) == (12, 8)
    assert sky_published_nan(pred, np.ones((4, 6))) == (0, 0)


def test_replay_of_a_synthetic_drive_reports_the_sky_the_shipped_model_masks(tmp_path, capsys):
    from monodepth_ros.replay import cli as replay_cli
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld
    from monodepth_ros.synthetic.writers import write_bag

    bag = write_bag(SyntheticWorld(SynthConfig(width=640, height=192, seed=7)), tmp_path / "drive", 6)
    rc = replay_cli.main(["--bag", str(bag), "--model", str(MODELS / "default.onnx"), "--gt-topic",
                          "/camera/depth_gt", "--out", str(tmp_path / "out")])
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    sky_report = report["sky"]
    assert sky_report["gt_sky_pixels"] > 0
    assert 0.25 < sky_report["share_masked"] <= 1.0, sky_report  # about half at the default threshold
    assert "published as NaN" in capsys.readouterr().out
