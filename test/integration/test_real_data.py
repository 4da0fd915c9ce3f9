"""The real-data benchmark (benchmarks/real_data.py) and the flat-road prior (monodepth_ros/evaluation/priors.py).

Fixtures the tests write: a KITTI raw drive whose LiDAR scans are road planes at known heights (the expected
metrics are computed here from the points, not by the metrics module), and a KITTI odometry sequence with known
poses (zero motion has a computable ATE, the GT poses score 0, a fake pose net pins the frame order and the
inversion). One test runs the whole benchmark on ../shared/data/real when it is there.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from monodepth_ros.datasets import kitti
from monodepth_ros.evaluation.priors import fit_camera_height, flat_road_depth
from monodepth_ros.geometry import axis_angle_to_matrix, pose_from_axis_angle

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "data" / "real"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("real_data_benchmark", REPO / "benchmarks" / "real_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


rd = _load_benchmark()


# ---------------------------------------------------------------------------------------------- the prior


def test_flat_road_depth_is_the_road_plane_below_the_cap_and_the_cap_elsewhere():
    fy, cy, h = 100.0, 20.0, 2.0
    K = np.array([[90.0, 0.0, 3.0], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    depth = flat_road_depth(K, 60, 7, camera_height_m=h, above_horizon_m=20.0)
    assert depth.shape == (60, 7) and depth.dtype == np.float32
    assert np.all(depth == depth[:, :1])  # the road depth depends on the row only
    # Row v sees the road at fy * h / (v - cy) = 200 / (v - 20) m.
    assert depth[40, 0] == pytest.approx(10.0, rel=1e-6)
    assert depth[59, 3] == pytest.approx(200.0 / 39.0, rel=1e-6)
    assert depth[31, 6] == pytest.approx(200.0 / 11.0, rel=1e-6)  # 18.2 m: just under the cap
    assert depth[30, 0] == pytest.approx(20.0, rel=1e-6)  # exactly at the cap
    # Nearer the horizon the road is farther than 20 m: capped; the horizon row and the sky are 20 m too.
    np.testing.assert_array_equal(depth[:30], np.float32(20.0))


def test_flat_road_depth_follows_camera_height_and_cap():
    K = np.array([[721.5, 0.0, 609.6], [0.0, 721.5, 172.9], [0.0, 0.0, 1.0]])
    low = flat_road_depth(K, 375, 8, camera_height_m=1.0, above_horizon_m=1e6)
    high = flat_road_depth(K, 375, 8, camera_height_m=1.65, above_horizon_m=1e6)
    below = np.arange(375) > 173
    np.testing.assert_allclose(high[below], 1.65 * low[below], rtol=1e-6)
    capped = flat_road_depth(K, 375, 8, camera_height_m=1.65, above_horizon_m=20.0)
    np.testing.assert_allclose(capped, np.minimum(high, 20.0), rtol=1e-6)
    with pytest.raises(ValueError, match="camera_height_m"):
        flat_road_depth(K, 375, 8, camera_height_m=0.0)


def test_fit_camera_height_finds_the_road_under_a_larger_truck():
    fy, cy, h = 60.0, 10.0, 1.7
    K = np.array([[60.0, 0.0, 60.0], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    rows = np.arange(40, dtype=np.float64)[:, None]
    gt = np.zeros((40, 120))
    gt[21:, :40] = np.broadcast_to(fy * h / (rows[21:] - cy), (19, 40))  # the road, left third
    gt[12:, 40:] = 3.0  # a truck's rear at 3 m, the rest: more pixels than the road, each row at its own height
    assert np.count_nonzero(gt[:, 40:]) > 2 * np.count_nonzero(gt[:, :40])
    fitted = fit_camera_height([gt, gt], K, min_rows_below_horizon=2.0)
    assert fitted == pytest.approx(h, abs=0.011)
    # What the mode avoids: a median over the same pixels lands on the truck, far from the road.
    heights = (gt * (rows - cy) / fy)[(gt > 0) & (rows - cy >= 2.0)]
    assert abs(np.median(heights) - h) > 0.3


# ------------------------------------------------------------------------------------ raw drive fixture

W, H = 96, 40
FX, FY, CX, CY = 60.0, 60.0, 47.5, 12.0
K_FIX = np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])
# velo (x forward, y left, z up) -> camera (x right, y down, z forward), no lever arm: x_velo = camera z.
R_VELO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
ROAD_COLS = (5, 20, 47, 70, 90, 94)  # 94 lies right of the Garg crop (columns 3..91)
ROAD_ROWS = range(14, 40)  # 14, 15 lie above the Garg crop (rows 16..38); 39 below it


def write_raw_drive(root: Path, road_heights: list[float]) -> list[list[tuple[int, int, float]]]:
    """A raw drive whose frame k sees a level road ``road_heights[k]`` below the camera, plus a point above the
    crop and one beyond 80 m. Returns per frame the (row, col, depth) of every point (each on its own pixel)."""
    date = root / rd.RAW_DATE
    date.mkdir(parents=True)
    kitti.write_calib_file(date / "calib_cam_to_cam.txt",
                           {"S_rect_02": np.array([W, H]), "R_rect_00": np.eye(3),
                            "P_rect_02": np.c_[K_FIX, np.zeros(3)]}, calib_time="09-Jan-2012 13:57:47")
    kitti.write_calib_file(date / "calib_velo_to_cam.txt", {"R": R_VELO, "T": np.zeros(3)})
    drive = root / rd.RAW_DRIVE
    (drive / "image_02" / "data").mkdir(parents=True)
    (drive / "velodyne_points" / "data").mkdir(parents=True)
    designs = []
    for k, h in enumerate(road_heights):
        # The devkit puts a point projecting at (u, v) on pixel (round(u) - 1, round(v) - 1): aim at centre + 1.
        pix = [(r, c, FY * h / (r + 1 - CY)) for r in ROAD_ROWS for c in ROAD_COLS]
        pix += [(2, 30, 5.0), (20, 50, 90.0)]  # above the crop; beyond the 80 m cap
        cam = np.array([[(c + 1 - CX) * z / FX, (r + 1 - CY) * z / FY, z] for r, c, z in pix])
        scan = np.c_[cam @ R_VELO, np.ones(len(cam))].astype(np.float32)  # rows: R_VELO.T @ p_cam
        scan.tofile(drive / "velodyne_points" / "data" / f"{k:010d}.bin")
        cv2.imwrite(str(drive / "image_02" / "data" / f"{k:010d}.png"), np.full((H, W, 3), 40 * k, np.uint8))
        designs.append(pix)
    return designs


def expected_metrics(points: list[tuple[int, int, float]], prior_h: float, median_scaling: bool) -> dict:
    """abs_rel, rmse, a1 and the ratio of the prior against the points in the Garg crop and under 80 m."""
    g, p = [], []
    for r, c, z in points:
        if 16 <= r <= 38 and 3 <= c <= 91 and z < 80.0:
            g.append(z)
            p.append(20.0 if r <= CY else min(FY * prior_h / (r - CY), 20.0))
    g, p = np.array(g), np.array(p)
    ratio = float(np.median(g) / np.median(p)) if median_scaling else 1.0
    p = p * ratio
    return {"abs_rel": float(np.mean(np.abs(g - p) / g)), "rmse": float(np.sqrt(np.mean((g - p) ** 2))),
            "a1": float(np.mean(np.maximum(g / p, p / g) < 1.25)), "ratio": ratio}


@pytest.fixture
def raw_drive(tmp_path):
    root = tmp_path / "kitti_raw"
    designs = write_raw_drive(root, [1.5, 1.9, 2.4])
    return root, designs


def test_raw_frames_carry_the_lidar_plane_and_the_stride(raw_drive):
    root, designs = raw_drive
    frames, K = rd.load_raw_frames(root, stride=2)
    assert [f.frame for f in frames] == [0, 2]
    np.testing.assert_allclose(K, K_FIX)
    for f, design in zip(frames, (designs[0], designs[2]), strict=True):
        assert f.rgb.shape == (H, W, 3) and f.gt_m.shape == (H, W)
        assert np.count_nonzero(f.gt_m) == len(design)
        for r, c, z in design[::7]:
            assert f.gt_m[r, c] == pytest.approx(z, rel=1e-5)


def test_prior_row_metrics_match_the_points_by_hand(raw_drive):
    root, designs = raw_drive
    frames, K = rd.load_raw_frames(root, stride=2)
    row, panels = rd.score_depth_model(frames, rd.prior_model(K, (H, W), 1.65, "given"), panel_at={1})
    per_frame = [(designs[0], 1.5), (designs[2], 2.4)]
    for key, scaled in (("median_scaled", True), ("unscaled", False)):
        want = [expected_metrics(d, 1.65, scaled) for d, _ in per_frame]
        for m in ("abs_rel", "rmse", "a1"):
            assert row[key][m] == pytest.approx(np.mean([w[m] for w in want]), rel=1e-5), (key, m)
    ratios = [expected_metrics(d, 1.65, True)["ratio"] for d, _ in per_frame]
    assert row["ratio_mean"] == pytest.approx(np.mean(ratios), rel=1e-5)
    assert row["ratio_std"] == pytest.approx(np.std(ratios), rel=1e-4)
    assert row["unscaled"]["abs_rel"] > 0.05 and row["median_scaled"]["abs_rel"] < row["unscaled"]["abs_rel"]
    assert len(panels) == 1 and "frame 2" in panels[0].label


def test_relative_model_gets_median_scaled_numbers_and_a_dash_unscaled(raw_drive):
    root, _ = raw_drive
    frames, K = rd.load_raw_frames(root, stride=1)
    prior = rd.prior_model(K, (H, W), 1.65, "given")
    prior_row, _ = rd.score_depth_model(frames, prior)
    relative = rd.DepthModel("seven times the prior", "relative", lambda rgb, size: 7.0 * prior.predict(rgb, size))
    row, _ = rd.score_depth_model(frames, relative)
    for m, v in prior_row["median_scaled"].items():
        assert row["median_scaled"][m] == pytest.approx(v, rel=1e-5, abs=1e-9), m
    assert row["ratio_mean"] == pytest.approx(prior_row["ratio_mean"] / 7.0, rel=1e-5)
    assert row["unscaled"] is None and "relative" in row["unscaled_note"]
    table = rd.format_depth_table([prior_row, row]).splitlines()
    assert table[-1].split()[:2] == ["unscaled", "–"] and "–" not in table[-3]


# ----------------------------------------------------------------------------------- odometry fixture

STEP_AXIS_ANGLE = np.array([0.02, 0.15, 0.01])
STEP_TRANSLATION = np.array([0.1, -0.05, 1.0])


def write_odometry(root: Path, poses: np.ndarray, size=(32, 96)) -> None:
    """KITTI odometry layout for sequence 03; frame i is a flat grey image of level 20 + 20 i (order is visible)."""
    seq = root / "sequences" / "03"
    (seq / "image_0").mkdir(parents=True)
    (root / "poses").mkdir()
    for i in range(len(poses)):
        cv2.imwrite(str(seq / "image_0" / f"{i:06d}.png"), np.full(size, 20 + 20 * i, np.uint8))
    P0 = np.array([[60.0, 0.0, 48.0, 0.0], [0.0, 60.0, 16.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    (seq / "calib.txt").write_text("P0: " + " ".join(f"{v:.6e}" for v in P0.ravel()) + "\n")
    (seq / "times.txt").write_text("".join(f"{0.1 * i:.6e}\n" for i in range(len(poses))))
    kitti.write_poses_file(root / "poses" / "03.txt", poses)


def constant_step_trajectory(n: int) -> np.ndarray:
    """``T_world_from_cam`` (n, 4, 4) with the same curving step every frame: ``T_i_from_{i+1}`` = STEP."""
    step = pose_from_axis_angle(STEP_AXIS_ANGLE, STEP_TRANSLATION)
    poses = [np.eye(4)]
    for _ in range(n - 1):
        poses.append(poses[-1] @ step)
    return np.stack(poses)


class FakePoseNet:
    """Stands in for a Monodepth2 pose net: ``(rgb_a, rgb_b) -> (axisangle, translation)`` of ``T_b_from_a``.

    It returns the fixture's true ``T_{i+1}_from_{i}`` = inv(STEP) when fed (frame i, frame i+1), and insists on
    that order (frames get brighter with time). ``wrong=True`` returns STEP itself: the un-inverted convention.
    """

    def __init__(self, wrong: bool = False):
        self.wrong = wrong
        self.pairs = 0

    def __call__(self, rgb_a, rgb_b):
        import torch

        assert bool((rgb_a.mean(dim=(1, 2, 3)) < rgb_b.mean(dim=(1, 2, 3))).all()), "earlier frame must come first"
        self.pairs += rgb_a.shape[0]
        R = axis_angle_to_matrix(STEP_AXIS_ANGLE)
        aa, t = (STEP_AXIS_ANGLE, STEP_TRANSLATION) if self.wrong else (-STEP_AXIS_ANGLE, -R.T @ STEP_TRANSLATION)
        B = rgb_a.shape[0]
        return (torch.tensor(aa, dtype=torch.float32).expand(B, 3),
                torch.tensor(t, dtype=torch.float32).expand(B, 3))


def test_zero_motion_ate_is_the_gt_motion_and_gt_poses_score_zero():
    n = 9
    straight = np.tile(np.eye(4), (n, 1, 1))
    straight[:, 2, 3] = np.arange(n, dtype=np.float64)  # 1 m per frame along the optical axis
    rows = {r["name"]: r for r in rd.pose_rows(straight, {})}
    # Zero motion cannot be scaled: each window's error is its GT positions 0..4 m, sqrt(0+1+4+9+16) / 5.
    assert rows["zero motion"]["ate_mean_m"] == pytest.approx(math.sqrt(30.0) / 5.0, rel=1e-12)
    assert rows["zero motion"]["ate_std_m"] == pytest.approx(0.0, abs=1e-12)
    assert rows["GT poses (check: 0)"]["ate_mean_m"] == pytest.approx(0.0, abs=1e-12)
    assert rows["straight ahead, constant speed"]["ate_mean_m"] == pytest.approx(0.0, abs=1e-12)


def test_pose_net_is_fed_in_time_order_and_inverted_into_the_ate_convention(tmp_path):
    poses = constant_step_trajectory(9)
    write_odometry(tmp_path, poses)
    images, gt = rd.load_pose_frames(tmp_path, "03", frames=(1, 8))
    assert len(images) == 8 and images[0].shape == (32, 96, 3)
    np.testing.assert_allclose(gt, poses[1:9])

    net = FakePoseNet()
    rel = rd.pose_net_relative_poses(net, images, 32, 64, batch=3)  # 7 pairs over batches of 3, 3, 1
    assert net.pairs == 7 and rel.shape == (7, 4, 4)
    np.testing.assert_allclose(rel, np.broadcast_to(pose_from_axis_angle(STEP_AXIS_ANGLE, STEP_TRANSLATION),
                                                    (7, 4, 4)), atol=1e-6)
    wrong = rd.pose_net_relative_poses(FakePoseNet(wrong=True), images, 32, 64)
    rows = {r["name"]: r for r in rd.pose_rows(gt, {"net": rel, "wrong": wrong})}
    assert rows["net"]["ate_mean_m"] < 1e-5
    assert rows["wrong"]["ate_mean_m"] > 0.01
    assert rows["zero motion"]["ate_mean_m"] > 0.5


# ------------------------------------------------------------------------------------------- command line


@pytest.mark.parametrize("missing", [rel for rel, _ in rd.REQUIRED])
def test_main_names_the_missing_piece_of_real_and_exits_2(tmp_path, capsys, missing):
    for rel, _ in rd.REQUIRED:
        if rel != missing:
            target = tmp_path / rel
            if target.suffix:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("")
            else:
                target.mkdir(parents=True, exist_ok=True)
    assert rd.main(["--real", str(tmp_path), "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert f"lacks {missing}" in err
    assert not (tmp_path / "r.json").exists()


def test_main_says_when_real_does_not_exist(tmp_path, capsys):
    assert rd.main(["--real", str(tmp_path / "nowhere"), "--json", str(tmp_path / "r.json")]) == 2
    assert "folder not found" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- the real drives


def _tiny_bundle(path: Path) -> Path:
    """A random, slim Monodepth2 bundle with a pose net: exercises the --model B.safetensors depth and pose paths."""
    torch = pytest.importorskip("torch")
    from monodepth_training.bundle_io import save_bundle
    from monodepth_training.networks import build_depth_net, build_pose_net

    from monodepth_ros.bundle import BundleMeta

    torch.manual_seed(0)
    kwargs = {"num_layers": 18, "width": 0.125}
    meta = BundleMeta(depth_net="monodepth2", height=64, width=192, depth_kwargs=kwargs,
                      pose_net="monodepth2_pose", pose_kwargs=kwargs, scale_policy="relative")
    pose_net = build_pose_net("monodepth2_pose", **kwargs)
    save_bundle(path, build_depth_net("monodepth2", **kwargs), meta, pose_net=pose_net)
    return path


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real KITTI data not found at {REAL} (a clone without ../shared)")
def test_benchmark_on_the_real_drives_prints_every_row_with_finite_numbers(tmp_path, capsys):
    bundle = _tiny_bundle(tmp_path / "tiny.safetensors")
    out, report_path = tmp_path / "panels", tmp_path / "real_data.json"
    rc = rd.main(["--real", str(REAL), "--model", str(bundle), "--panels", "1", "--out", str(out),
                  "--json", str(report_path)])
    assert rc == 0
    table = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    names = [r["name"] for r in report["depth"]]
    default_net = yaml.safe_load((REPO / "config/train/default_model.yaml").read_text())["model"]["depth_net"]
    assert names == ["flat-road prior (h=1.65 m)", f"untrained {default_net}", "default model", "default model INT8",
                     "tiny.safetensors"]
    for r in report["depth"]:
        assert r["name"] in table
        assert all(math.isfinite(v) for v in r["median_scaled"].values()), r
        assert math.isfinite(r["ratio_mean"]) and math.isfinite(r["ratio_std"])
        if r["unscaled"] is None:
            assert r["scale_policy"] == "relative" and r["unscaled_note"]
        else:
            assert all(math.isfinite(v) for v in r["unscaled"].values()), r
        assert Path(r["panels"]).is_file()
    assert report["depth_protocol"]["n_frames"] == 39
    # The flat-road prior as issue 14 measured it (every 2nd frame): checks the prior and the protocol at once.
    prior = report["depth"][0]
    assert prior["median_scaled"]["abs_rel"] == pytest.approx(0.408, abs=6e-4)
    assert prior["unscaled"]["abs_rel"] == pytest.approx(0.857, abs=6e-4)
    pose = {r["name"]: r for r in report["pose"]}
    assert set(pose) == {"GT poses (check: 0)", "zero motion", "straight ahead, constant speed",
                         "tiny.safetensors pose net"}
    assert pose["GT poses (check: 0)"]["ate_mean_m"] == pytest.approx(0.0, abs=1e-6)  # 03.txt: 6 digits
    assert all(math.isfinite(r["ate_mean_m"]) and r["ate_mean_m"] >= 0 for r in pose.values())
    assert pose["zero motion"]["ate_mean_m"] > 0.05


def test_ground_plane_check_recovers_the_scale_of_a_road_predicted_at_the_wrong_size():
    # A level road under a camera 1.65 m high, GT everywhere below the horizon (no cap: uncapped road depth).
    K = np.array([[700.0, 0.0, 620.0], [0.0, 700.0, 180.0], [0.0, 0.0, 1.0]])
    Hh, Ww = 375, 1242
    gt = flat_road_depth(K, Hh, Ww, 1.65, above_horizon_m=1e6).astype(np.float32)
    gt[:200] = 0.0  # rows near and above the horizon: no return
    gt[gt > 80] = 0.0
    frames = [rd.DepthFrame(i, np.zeros((Hh, Ww, 3), np.uint8), gt) for i in range(3)]
    assert rd.road_mask(gt, K, 1.65).sum() == np.count_nonzero(gt)  # every return is road
    # The model sees the road's shape right but 2x too far: the policy must scale it by 0.5, as the LiDAR does.
    pred = np.where(gt > 0, 2.0 * gt, 2.0 * flat_road_depth(K, Hh, Ww, 1.65, 40.0)).astype(np.float32)
    out = rd.ground_plane_check(frames, [pred] * 3, K, 1.65)
    assert out["frames_fitted"] == 3
    assert out["scale_over_lidar_road"]["median"] == pytest.approx(1.0, abs=0.02)
    assert out["scale_over_lidar_road"]["within_10pct"] == 1.0
    assert out["metrics"]["abs_rel"] < 0.02
    # A road predicted with the wrong shape (depth growing too slowly with distance) is off the LiDAR's scale.
    flat = np.where(gt > 0, np.sqrt(gt * 10.0), 10.0).astype(np.float32)
    off = rd.ground_plane_check(frames, [flat] * 3, K, 1.65)
    assert off["frames_fitted"] == 0 or abs(off["scale_over_lidar_road"]["median"] - 1.0) > 0.1


def test_surface_breakdown_separates_road_returns_from_objects():
    K = np.array([[700.0, 0.0, 620.0], [0.0, 700.0, 180.0], [0.0, 0.0, 1.0]])
    Hh, Ww = 375, 1242
    gt = flat_road_depth(K, Hh, Ww, 1.65, above_horizon_m=1e6).astype(np.float32)
    gt[:200] = 0.0
    gt[gt > 80] = 0.0
    gt[200:300, 100:300] = 6.0  # a truck's side: not at road height
    frames = [rd.DepthFrame(0, np.zeros((Hh, Ww, 3), np.uint8), gt)]
    pred = np.where(gt == 6.0, 12.0, gt).astype(np.float32)  # road right, truck twice too far
    pred[gt == 0] = 30.0
    out = rd.surface_breakdown(frames, [pred], K, 1.65, scaled=False)
    assert out["road"]["abs_rel"] == pytest.approx(0.0, abs=1e-6) and out["road"]["pred_over_gt"] == pytest.approx(1.0)
    assert out["other"]["abs_rel"] == pytest.approx(1.0) and out["other"]["pred_over_gt"] == pytest.approx(2.0)
    assert 0.0 < out["other"]["share"] < 1.0 and out["road"]["share"] + out["other"]["share"] == pytest.approx(1.0)


def test_staged_frames_keep_the_lidar_gt_exactly_and_the_network_size_pixels(raw_drive, tmp_path):
    """What the GPU machine reads instead of the raw drive: GT bit-exact, RGB pre-shrunk with the backend's own
    resize (raw) or within JPEG noise of it."""
    from monodepth_ros.backends.base import resize_rgb

    root, _ = raw_drive
    frames, _ = rd.load_raw_frames(root, stride=1)
    for quality, tol in ((None, 0), (95, 6)):
        path = tmp_path / f"staged_{quality}.npz"
        info = rd.save_staged_frames(path, frames, 16, 48, jpeg_quality=quality)
        staged = rd.load_staged_frames(path)
        assert info["frames"] == len(frames) == len(staged)
        assert info["gt_points"] == sum(int((f.gt_m > 0).sum()) for f in frames)
        for f, s in zip(frames, staged):
            assert s.frame == f.frame and np.array_equal(s.gt_m, f.gt_m)
            want = resize_rgb(f.rgb, 16, 48)
            assert s.rgb.shape == want.shape
            assert np.abs(s.rgb.astype(int) - want.astype(int)).mean() <= tol
