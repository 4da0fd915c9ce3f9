"""``monodepth-eval`` end to end on a tiny KITTI-layout folder with a tiny real ONNX model (ONNX Runtime), and
the pictures it draws (colour map, panel grid)."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from monodepth_ros.datasets import kitti
from monodepth_ros.evaluation.evaluate import main
from monodepth_ros.evaluation.metrics import METRIC_NAMES
from monodepth_ros.visualize import KEY_HEIGHT, colorize_depth, panel_grid

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

RAW_H, RAW_W = 96, 256  # "raw" image / GT resolution of the fixture
MODEL_H, MODEL_W = 32, 64
DISP_LO, DISP_HI = 1 / 60.0, 1 / 4.0  # the fixture's GT disparity range (1/m)


def write_gray_to_disp_onnx(path, scale_policy="metric", scale=1.0):
    """ONNX graph rgb (1,3,h,w) -> disp (1,1,h,w) = DISP_LO + (DISP_HI - DISP_LO) * mean over channels.

    The fixture paints each pixel's GT disparity into its grey level, so this "network" reads depth off the
    image exactly, up to 8-bit quantisation and the resizes.
    """
    g = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["rgb"], ["grey"], axes=[1], keepdims=1),
            helper.make_node("Mul", ["grey", "gain"], ["scaled"]),
            helper.make_node("Add", ["scaled", "offset"], ["disp"]),
        ],
        "grey_to_disp",
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [1, 3, MODEL_H, MODEL_W])],
        [helper.make_tensor_value_info("disp", TensorProto.FLOAT, [1, 1, MODEL_H, MODEL_W])],
        initializer=[
            helper.make_tensor("gain", TensorProto.FLOAT, [], [DISP_HI - DISP_LO]),
            helper.make_tensor("offset", TensorProto.FLOAT, [], [DISP_LO]),
        ],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    meta = {
        "height": MODEL_H, "width": MODEL_W, "min_depth": 1 / DISP_HI, "max_depth": 1 / DISP_LO,
        "scale_policy": scale_policy, "scale": scale, "mean": [0.45] * 3, "std": [0.225] * 3,
        "intrinsics_norm": None, "source_sha256": "0" * 64,
    }  # fmt: skip
    helper.set_model_props(model, {"monodepth_ros": json.dumps(meta)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def gt_depth_m() -> np.ndarray:
    """(RAW_H, RAW_W) depth, smooth in both directions, disparity spanning [DISP_LO, DISP_HI]."""
    v, u = np.mgrid[0:RAW_H, 0:RAW_W].astype(np.float64)
    t = 0.7 * v / (RAW_H - 1) + 0.3 * u / (RAW_W - 1)
    return 1.0 / (DISP_LO + (DISP_HI - DISP_LO) * t)


R_CAM_FROM_VELO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def write_lidar_scan(path, depth_m, K, rng, fraction=0.05):
    """A .bin scan whose points hit a random 5 % of the pixels at their GT depth (KITTI's 1-based pixel rule:
    a point projecting to u lands in column round(u) - 1), plus points behind the sensor that must be ignored."""
    rows, cols = np.nonzero(rng.random(depth_m.shape) < fraction)
    z = depth_m[rows, cols]
    p_cam = np.stack([(cols + 1 - K[0, 2]) / K[0, 0] * z, (rows + 1 - K[1, 2]) / K[1, 1] * z, z], axis=1)
    p_velo = p_cam @ R_CAM_FROM_VELO  # = (R^T p_cam^T)^T
    behind = p_velo[:50] * np.array([-1.0, 1.0, 1.0])
    pts = np.concatenate([p_velo, behind])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.concatenate([pts, np.ones((len(pts), 1))], axis=1).astype(np.float32).tofile(path)


def make_kitti_folder(root, n_frames=3, sparse=False):
    """Minimal KITTI raw layout: calib, image_02 PNGs, velodyne scans, improved-GT PNGs, split file.

    Returns (data, split)."""
    date = "2011_09_26"
    drive = f"{date}/{date}_drive_0001_sync"
    K = np.array([[0.58 * RAW_W, 0, RAW_W / 2, 0], [0, 1.92 * RAW_H, RAW_H / 2, 0], [0, 0, 1, 0]])
    kitti.write_calib_file(root / date / "calib_cam_to_cam.txt",
                           {"S_rect_02": np.array([RAW_W, RAW_H]), "R_rect_00": np.eye(3), "P_rect_02": K})
    # LiDAR axes (x fwd, y left, z up) at the camera centre, so x_velo equals the camera depth z.
    kitti.write_calib_file(root / date / "calib_velo_to_cam.txt", {"R": R_CAM_FROM_VELO, "T": np.zeros(3)})
    depth = gt_depth_m()
    grey = np.round(255 * (1 / depth - DISP_LO) / (DISP_HI - DISP_LO)).astype(np.uint8)
    rng = np.random.default_rng(0)
    entries = []
    for frame in range(n_frames):
        img_path = root / drive / "image_02" / "data" / f"{frame:010d}.png"
        img_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img_path), np.repeat(grey[..., None], 3, axis=2))
        gt = depth.copy()
        if sparse:
            gt[rng.random(gt.shape) > 0.3] = 0.0
        kitti.write_depth_png(root / drive / "proj_depth" / "groundtruth" / "image_02" / f"{frame:010d}.png", gt)
        write_lidar_scan(root / drive / "velodyne_points" / "data" / f"{frame:010d}.bin", depth, K[:, :3], rng)
        entries.append(kitti.SplitEntry(drive, frame, "l"))
    split = root / "splits" / "test_files.txt"
    kitti.write_split(split, entries)
    return root, split


@pytest.fixture
def tiny(tmp_path):
    data, split = make_kitti_folder(tmp_path / "kitti", sparse=True)
    model = write_gray_to_disp_onnx(tmp_path / "grey.onnx")
    return data, split, model, tmp_path / "out"


def test_cli_prints_table_and_writes_json_and_panels(tiny, capsys):
    data, split, model, out = tiny
    rc = main(["--model", str(model), "--data", str(data), "--split", str(split), "--out", str(out), "--panels", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    header_line = next(line for line in printed.splitlines() if "abs_rel" in line and "|" in line)
    assert [h.strip() for h in header_line.split("|")] == METRIC_NAMES
    row = next(line for line in printed.splitlines() if line.startswith("&"))
    values = [float(c) for c in row.rstrip("\\").split("&")[1:]]
    assert len(values) == 7

    report = json.loads((out / "metrics.json").read_text())
    assert report["n_images"] == 3 and report["gt"] == "improved" and report["crop"] == "garg"
    assert report["lidar_depth"] is None  # the depth-benchmark PNGs are not projected by us
    assert report["median_scaling"] is False  # scale_policy "metric" -> no median scaling by default
    assert report["ratio_mean"] is None  # strict JSON: no NaN for "not applicable"
    m = report["metrics"]
    assert values == pytest.approx([m[k] for k in METRIC_NAMES], abs=5e-4)
    # The grey-level "network" reads depth off the image: near-perfect scores, up to 8-bit quantisation
    assert m["abs_rel"] < 0.02 and m["a1"] > 0.99
    assert len(report["per_image"]) == 3 and report["per_image"][0]["frame"].endswith(" 0 l")

    panel = cv2.imread(str(out / "panels.png"))
    assert panel is not None and panel.shape[1] == 4 * 416
    assert panel.shape[0] == 2 * round(RAW_H * 416 / RAW_W) + KEY_HEIGHT


def test_cli_median_scaling_undoes_a_model_scale_and_reports_ratios(tiny, capsys):
    data, split, _, out = tiny
    model = write_gray_to_disp_onnx(out.parent / "relative.onnx", scale_policy="relative", scale=0.1)
    assert main(["--model", str(model), "--data", str(data), "--split", str(split), "--out", str(out),
                 "--panels", "0"]) == 0
    printed = capsys.readouterr().out
    assert "Scaling ratios | mean: 10.0" in printed
    report = json.loads((out / "metrics.json").read_text())
    assert report["median_scaling"] is True
    assert report["ratio_mean"] == pytest.approx(10.0, rel=0.01) and report["ratio_std"] < 0.01
    assert report["metrics"]["abs_rel"] < 0.02
    assert not (out / "panels.png").exists()

    # Same model without median scaling: the 10x scale error shows up in full (abs_rel ~ 0.9).
    assert main(["--model", str(model), "--data", str(data), "--split", str(split), "--out", str(out),
                 "--no-median-scaling", "--panels", "0"]) == 0
    assert json.loads((out / "metrics.json").read_text())["metrics"]["abs_rel"] == pytest.approx(0.9, abs=0.02)
    # ... and a fixed --scale 10 restores it.
    assert main(["--model", str(model), "--data", str(data), "--split", str(split), "--out", str(out),
                 "--no-median-scaling", "--scale", "10", "--panels", "0"]) == 0
    assert json.loads((out / "metrics.json").read_text())["metrics"]["abs_rel"] < 0.02


def test_cli_exports_gt_npz_once_then_reuses_it(tiny):
    data, split, model, out = tiny
    npz = out.parent / "gt_depths.npz"
    args = ["--model", str(model), "--data", str(data), "--split", str(split), "--out", str(out),
            "--gt-npz", str(npz), "--panels", "0"]
    assert main(args) == 0
    first = json.loads((out / "metrics.json").read_text())["metrics"]
    assert npz.is_file()
    with np.load(npz, allow_pickle=False) as f:
        assert f["gt_0000"].shape == (RAW_H, RAW_W)
    # Delete the PNGs: the second run must read the npz only.
    for png in data.rglob("proj_depth/**/*.png"):
        png.unlink()
    assert main(args + ["--gt", "improved"]) == 0
    assert json.loads((out / "metrics.json").read_text())["metrics"] == first


def test_cli_with_velodyne_gt_on_raw_layout(tiny):
    data, split, model, out = tiny
    assert main(["--model", str(model), "--data", str(data), "--split", str(split), "--out", str(out),
                 "--gt", "velodyne", "--panels", "1"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["gt"] == "velodyne" and report["lidar_depth"] == "lidar_forward"  # KITTI's reference GT
    n_valid = report["per_image"][0]["n_valid"]
    # ~5 % of the Garg-cropped pixels carry a LiDAR point
    assert 0.02 * RAW_H * RAW_W * 0.55 < n_valid < 0.08 * RAW_H * RAW_W * 0.55
    assert report["metrics"]["abs_rel"] < 0.02 and report["metrics"]["a1"] > 0.99


def test_cli_reports_missing_gt_clearly(tiny, capsys):
    data, split, model, out = tiny
    next(data.rglob("proj_depth/**/0000000001.png")).unlink()
    rc = main(["--model", str(model), "--data", str(data), "--split", str(split), "--out", str(out),
               "--gt", "improved"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("monodepth-eval: error: "), err
    assert "0000000001.png" in err


def test_console_script_runs_as_a_module(tiny):
    data, split, model, out = tiny
    proc = subprocess.run(
        [sys.executable, "-m", "monodepth_ros.evaluation.evaluate", "--model", str(model), "--data", str(data),
         "--split", str(split), "--out", str(out), "--crop", "eigen", "--panels", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "abs_rel" in proc.stdout and (out / "panels.png").is_file()
    assert json.loads((out / "metrics.json").read_text())["crop"] == "eigen"


def test_colorize_depth_fixed_range_near_bright_invalid_black():
    depth = np.array([[1.0, 10.0, 80.0, np.nan, 0.0, np.inf, 500.0]], dtype=np.float32)
    rgb = colorize_depth(depth, 1.0, 80.0)
    assert rgb.shape == (1, 7, 3) and rgb.dtype == np.uint8
    brightness = rgb.astype(int).sum(axis=-1)[0]
    assert brightness[0] > brightness[1] > brightness[2]  # near is brighter than far
    assert brightness[3:6].tolist() == [0, 0, 0]  # NaN, no measurement, inf
    assert rgb[0, 6].tolist() == rgb[0, 2].tolist()  # beyond the range saturates at the far colour
    # fixed range: the same depth gets the same colour whatever else is in the frame
    assert colorize_depth(np.array([[10.0, 11.0]]), 1.0, 80.0)[0, 0].tolist() == rgb[0, 1].tolist()


def test_panel_grid_layout_and_error_column(tmp_path):
    gt = gt_depth_m().astype(np.float32)
    rgb = np.zeros((RAW_H, RAW_W, 3), np.uint8)
    pred_bad = gt * 1.3
    grid = panel_grid([(rgb, gt, gt, "exact"), (rgb, pred_bad, gt, "30% far")], tmp_path / "p.png", tile_width=128)
    tile_h = round(RAW_H * 128 / RAW_W)
    assert grid.shape == (2 * tile_h + KEY_HEIGHT, 4 * 128, 3)
    on_disk = cv2.cvtColor(cv2.imread(str(tmp_path / "p.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(on_disk, grid)
    # below the labels: the error tiles differ between the exact and the wrong row; exact prediction tile == GT tile
    err_exact, err_bad = grid[24:tile_h, 3 * 128 :], grid[tile_h + 24 : 2 * tile_h, 3 * 128 :]
    assert np.abs(err_exact.astype(int) - err_bad.astype(int)).mean() > 20
    np.testing.assert_array_equal(grid[24:tile_h, 128:256], grid[24:tile_h, 256:384])
    with pytest.raises(ValueError, match="at least one row"):
        panel_grid([], tmp_path / "q.png")


def test_panel_grid_keys_show_the_depth_and_error_colours_used_in_the_tiles(tmp_path):
    """The key under the depth columns runs from the near colour (min_m, left) to the far one (max_m, right) of
    colorize_depth, the one under the error column over the error map; the image column has none."""
    gt = gt_depth_m().astype(np.float32)
    rgb = np.zeros((RAW_H, RAW_W, 3), np.uint8)
    grid = panel_grid([(rgb, gt, gt)], tmp_path / "p.png", tile_width=208, min_m=2.0, max_m=50.0, max_err=0.4)
    key = grid[-KEY_HEIGHT:]
    bar = key[22]  # a row through the bars
    assert not key[:, :208].any(), "no key under the image column"
    near, far = colorize_depth(np.array([[2.0, 50.0]], np.float32), 2.0, 50.0)[0]
    lit = np.flatnonzero(bar[208:624].any(axis=-1)) + 208
    assert bar[lit[0]].tolist() == near.tolist() and bar[lit[-1]].tolist() == far.tolist()
    err_lit = np.flatnonzero(bar[624:].any(axis=-1)) + 624
    assert len(err_lit) > 150 and bar[err_lit[0]].tolist() != bar[err_lit[-1]].tolist()


def test_cli_runs_on_the_synthetic_worlds_kitti_output(tmp_path, capsys):
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld, writers

    world = SyntheticWorld(SynthConfig(width=320, height=96, seed=4))
    data = tmp_path / "synth"
    writers.write_kitti(world, data, n_frames=4)
    split = data / "splits" / "test_files.txt"
    if not kitti.read_split(split):  # a 4-frame drive may put every frame into train/val
        split = tmp_path / "all.txt"
        kitti.write_split(split, [kitti.SplitEntry("2011_09_26/2011_09_26_drive_0001_sync", i) for i in range(4)])
    entries = kitti.read_split(split)
    # The written GT is the renderer's depth (16-bit PNG: 1/256 m steps), sky = 0 (invalid)
    gt = kitti.read_depth_png(data / entries[0].folder / "proj_depth" / "groundtruth" / "image_02"
                              / f"{entries[0].frame:010d}.png")
    exact = world.render(entries[0].frame).depth_m
    finite = np.isfinite(exact) & (exact < 200)
    np.testing.assert_allclose(gt[finite], exact[finite], atol=1 / 512 + 1e-6)
    assert np.all(gt[np.isinf(exact)] == 0)

    model = write_gray_to_disp_onnx(tmp_path / "grey.onnx", scale_policy="relative")
    out = tmp_path / "out"
    assert main(["--model", str(model), "--data", str(data), "--split", str(split), "--out", str(out),
                 "--panels", "2"]) == 0
    assert "abs_rel" in capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    assert report["gt"] == "improved" and report["n_images"] == len(entries)
    assert all(np.isfinite(report["metrics"][k]) for k in METRIC_NAMES)
    assert cv2.imread(str(out / "panels.png")) is not None


def test_cli_rejects_a_model_without_metadata(tmp_path, capsys):
    data, split = make_kitti_folder(tmp_path / "kitti", n_frames=1)
    model = write_gray_to_disp_onnx(tmp_path / "m.onnx")
    stripped = onnx.load(str(model))
    del stripped.metadata_props[:]
    onnx.save(stripped, str(model))
    assert main(["--model", str(model), "--data", str(data), "--split", str(split), "--out", str(tmp_path)]) == 2
    assert "metadata" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


def test_panel_grows_sparse_lidar_gt_for_display_only(tmp_path):
    gt = gt_depth_m().astype(np.float32)
    sparse = np.where(np.random.default_rng(2).random(gt.shape) < 0.03, gt, 0.0).astype(np.float32)
    rgb = np.zeros((RAW_H, RAW_W, 3), np.uint8)
    grid = panel_grid([(rgb, gt, sparse)], tmp_path / "p.png", tile_width=RAW_W)
    gt_tile = grid[24:-KEY_HEIGHT, 2 * RAW_W : 3 * RAW_W]
    lit = np.mean(gt_tile.sum(axis=-1) > 0)
    assert lit > 5 * 0.03  # 2-px blobs instead of isolated pixels
    assert np.mean(sparse > 0) < 0.04  # the GT array itself is untouched
