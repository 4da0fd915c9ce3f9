"""Velodyne -> GT depth projection (pixel, depth, nearest-wins, behind-camera, 1-based rounding), the
depth-benchmark PNG GT, and the pickle-free npz export. Fixtures are small calibration files and scans
written into tmp_path."""

from __future__ import annotations

import numpy as np
import pytest

from monodepth_ros.datasets import kitti
from monodepth_ros.evaluation import kitti_gt
from monodepth_ros.geometry import axis_angle_to_matrix

W, H = 64, 24
FX, FY, CX, CY = 50.0, 48.0, 31.5, 11.7
# A real P_rect_02 has a non-zero last column (baseline to camera 0 folded in); keep one so w != z_rect.
P_LAST = np.array([2.7, 0.2, 0.004])
R_RECT = axis_angle_to_matrix(np.array([0.01, -0.02, 0.005]))
# velo (x fwd, y left, z up) -> cam0 (x right, y down, z fwd), plus a lever arm like KITTI's.
R_VELO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]) @ axis_angle_to_matrix(
    np.array([0.0, 0.0, 0.01])
)
T_VELO = np.array([-0.004, -0.076, -0.27])
P_RECT = np.array([[FX, 0.0, CX, P_LAST[0]], [0.0, FY, CY, P_LAST[1]], [0.0, 0.0, 1.0, P_LAST[2]]])


def write_calib(calib_dir):
    calib_dir.mkdir(parents=True, exist_ok=True)
    kitti.write_calib_file(
        calib_dir / "calib_cam_to_cam.txt",
        {"S_rect_02": np.array([W, H]), "R_rect_00": R_RECT, "P_rect_02": P_RECT,
         "S_rect_03": np.array([W, H]), "P_rect_03": P_RECT},
        calib_time="09-Jan-2012 13:57:47",
    )
    kitti.write_calib_file(calib_dir / "calib_velo_to_cam.txt", {"R": R_VELO, "T": T_VELO},
                           calib_time="15-Mar-2012 11:37:16")


def velo_point_for(u_proj: float, v_proj: float, w: float) -> np.ndarray:
    """LiDAR point (3,) whose homogeneous projection P_rect R_rect [R|T] p is (u_proj*w, v_proj*w, w)."""
    z_rect = w - P_LAST[2]
    x_rect = (u_proj * w - CX * z_rect - P_LAST[0]) / FX
    y_rect = (v_proj * w - CY * z_rect - P_LAST[1]) / FY
    p_cam0 = R_RECT.T @ np.array([x_rect, y_rect, z_rect])
    return R_VELO.T @ (p_cam0 - T_VELO)


def write_scan(path, points_xyz: np.ndarray) -> np.ndarray:
    """Write (N, 3) points as a KITTI float32 (N, 4) scan; returns the float32-rounded points."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pts = np.concatenate([points_xyz, np.full((len(points_xyz), 1), 0.37)], axis=1).astype(np.float32)
    pts.tofile(path)
    return pts[:, :3].astype(np.float64)


# (col, row, sub-pixel offset u, offset v, w): projected 1-based coordinate = col + 1 + du, row + 1 + dv
DESIGN = [
    (0, 0, 0.3, -0.4, 7.0),
    (10, 5, -0.45, 0.2, 15.0),
    (63, 23, 0.4, 0.1, 60.0),  # last column/row: projected x = 64.4 rounds to 64, minus 1 -> 63 (kept)
    (31, 12, 0.0, 0.0, 33.3),
    (40, 20, 0.1, 0.1, 4.2),
]


@pytest.fixture
def scene(tmp_path):
    calib_dir = tmp_path / "2011_09_26"
    write_calib(calib_dir)
    pts = [velo_point_for(c + 1 + du, r + 1 + dv, w) for c, r, du, dv, w in DESIGN]
    # Two points on one pixel (col 20, row 8): the far one written first, then the near one, then a farther one.
    pts += [velo_point_for(21.1, 9.2, 30.0), velo_point_for(20.8, 8.9, 12.0), velo_point_for(21.0, 9.0, 50.0)]
    # Dropped: projected x = 0.4 rounds to 0 -> column -1 (1-based convention), and one far right of the image.
    pts += [velo_point_for(0.4, 5.0, 9.0), velo_point_for(80.0, 5.0, 9.0)]
    # Behind the camera (w < 0, x_velo < 0) yet projecting onto the designed pixel (31, 12): if it were kept, its
    # negative depth would win the per-pixel minimum and wipe out the real point there.
    behind = velo_point_for(32.1, 12.9, -20.0)
    pts.append(behind)
    velo_path = tmp_path / "2011_09_26" / "2011_09_26_drive_0001_sync" / "velodyne_points" / "data" / "0000000000.bin"
    stored = write_scan(velo_path, np.array(pts))
    return calib_dir, velo_path, stored


def projected(calib_dir, stored: np.ndarray) -> np.ndarray:
    """Projective (u, v, w) of the stored points, with the fixture's matrices (independent of kitti_gt)."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R_VELO, T_VELO
    R4 = np.eye(4)
    R4[:3, :3] = R_RECT
    uvw = np.c_[stored, np.ones(len(stored))] @ (P_RECT @ R4 @ T).T
    return np.c_[uvw[:, :2] / uvw[:, 2:], uvw[:, 2]]


def test_velodyne_points_land_on_expected_pixels_with_projective_depth(scene):
    calib_dir, velo_path, stored = scene
    depth = kitti_gt.generate_depth_map(calib_dir, velo_path, cam=2, depth_convention="camera_z")
    assert depth.shape == (H, W)
    expected = np.zeros((H, W))
    for c, r, _, _, w in DESIGN:
        expected[r, c] = w
    expected[8, 20] = 12.0  # nearest of the three colliding points
    np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=0)


def test_lidar_forward_convention_uses_lidar_forward_distance(scene):
    calib_dir, velo_path, stored = scene
    depth = kitti_gt.generate_depth_map(calib_dir, velo_path, cam=2, depth_convention="lidar_forward")
    uvw = projected(calib_dir, stored)
    for i, (c, r, _, _, _) in enumerate(DESIGN):
        assert depth[r, c] == pytest.approx(stored[i, 0], rel=1e-12)
    collide = stored[len(DESIGN) : len(DESIGN) + 3, 0]
    assert depth[8, 20] == pytest.approx(collide.min(), rel=1e-12)
    # x_velo and the projective depth differ by the lever arm (0.27 m) and the P_rect offset
    assert abs(depth[0, 0] - uvw[0, 2]) > 0.2


def test_nearest_point_wins_whatever_the_order(tmp_path):
    calib_dir = tmp_path / "c"
    write_calib(calib_dir)
    for order in ([30.0, 12.0, 50.0], [12.0, 50.0, 30.0], [50.0, 30.0, 12.0]):
        path = tmp_path / f"scan_{order[0]:g}.bin"
        write_scan(path, np.array([velo_point_for(21.0, 9.0, w) for w in order]))
        depth = kitti_gt.generate_depth_map(calib_dir, path, depth_convention="camera_z")
        assert depth[8, 20] == pytest.approx(12.0, rel=1e-5)
        assert np.count_nonzero(depth) == 1


def test_points_behind_and_outside_are_dropped(scene):
    calib_dir, velo_path, stored = scene
    behind = stored[-1]
    assert behind[0] < 0
    # Without the x_velo >= 0 filter the behind point WOULD land on a designed pixel: the filter matters.
    u, v, w = projected(calib_dir, stored[-1:])[0]
    assert (np.round(u) - 1, np.round(v) - 1) == (31, 12) and w < 0
    for convention in ("camera_z", "lidar_forward"):
        depth = kitti_gt.generate_depth_map(calib_dir, velo_path, depth_convention=convention)
        assert depth[12, 31] > 30.0
    assert np.count_nonzero(depth) == len(DESIGN) + 1  # designed pixels + one collision pixel, nothing else
    assert depth[4, :].max() == 0.0  # the two points aimed at row 4 fell outside (column -1 and column 79)


def test_scan_with_truncated_record_is_rejected(tmp_path):
    calib_dir = tmp_path / "c"
    write_calib(calib_dir)
    bad = tmp_path / "bad.bin"
    np.arange(7, dtype=np.float32).tofile(bad)
    with pytest.raises(ValueError, match="multiple of 4"):
        kitti_gt.generate_depth_map(calib_dir, bad)


def test_missing_calibration_key_is_named(tmp_path):
    calib_dir = tmp_path / "c"
    calib_dir.mkdir()
    kitti.write_calib_file(calib_dir / "calib_cam_to_cam.txt", {"S_rect_02": np.array([W, H]), "P_rect_02": P_RECT})
    kitti.write_calib_file(calib_dir / "calib_velo_to_cam.txt", {"R": R_VELO, "T": T_VELO})
    with pytest.raises(KeyError, match="R_rect_00"):
        kitti_gt.velo_to_image_projection(calib_dir)


def _tiny_split(tmp_path, n=3):
    """KITTI-layout folder with n frames: scans and improved-GT PNGs; returns (data_dir, split_path)."""
    data = tmp_path / "kitti"
    write_calib(data / "2011_09_26")
    drive = "2011_09_26/2011_09_26_drive_0001_sync"
    rng = np.random.default_rng(3)
    entries = []
    for frame in range(n):
        pts = [velo_point_for(rng.uniform(1, W), rng.uniform(1, H), rng.uniform(3, 70)) for _ in range(40)]
        write_scan(data / drive / "velodyne_points" / "data" / f"{frame:010d}.bin", np.array(pts))
        gt = np.where(rng.random((H, W)) < 0.3, rng.uniform(1, 90, (H, W)), 0.0)
        kitti.write_depth_png(data / drive / "proj_depth" / "groundtruth" / "image_02" / f"{frame:010d}.png", gt)
        entries.append(kitti.SplitEntry(drive, frame, "l"))
    split = tmp_path / "test_files.txt"
    kitti.write_split(split, entries)
    return data, split, entries


def test_export_gt_npz_loads_without_pickle_and_matches_projection(tmp_path):
    data, split, entries = _tiny_split(tmp_path)
    out = tmp_path / "gt_depths.npz"
    assert kitti_gt.export_gt_npz(data, split, out, gt="velodyne") == 3
    with np.load(out, allow_pickle=False) as npz:
        assert sorted(k for k in npz.files if k.startswith("gt_")) == ["gt_0000", "gt_0001", "gt_0002"]
        assert npz["split"].tolist() == [str(e) for e in entries]
        for i, e in enumerate(entries):
            ref = kitti_gt.generate_depth_map(data / "2011_09_26", kitti_gt.velodyne_path(data, e),
                                              depth_convention="lidar_forward")
            np.testing.assert_array_equal(npz[f"gt_{i:04d}"], ref.astype(np.float32))
            assert np.count_nonzero(ref) > 10
    loaded = kitti_gt.load_gt_npz(out)
    assert len(loaded) == 3 and loaded[0].dtype == np.float32


def test_improved_gt_reads_benchmark_png_as_metres(tmp_path):
    data, split, entries = _tiny_split(tmp_path, n=2)
    out = tmp_path / "gt_improved.npz"
    kitti_gt.export_gt_npz(data, split, out, gt="improved")
    maps = kitti_gt.load_gt_npz(out)
    raw = kitti.read_depth_png(kitti_gt.improved_gt_path(data, entries[1]))
    np.testing.assert_array_equal(maps[1], raw)
    # uint16 / 256: every value is a multiple of 1/256 m, zeros mark pixels without GT
    assert np.all(maps[1] * 256 == np.round(maps[1] * 256))
    assert 0.5 < np.mean(maps[1] == 0) < 0.9


def test_unknown_gt_kind_is_rejected(tmp_path):
    data, split, entries = _tiny_split(tmp_path, n=1)
    with pytest.raises(ValueError, match="gt must be one of"):
        kitti_gt.load_gt_depth(data, entries[0], gt="lidar")


def test_export_command_line_writes_the_npz(tmp_path, capsys):
    data, split, _ = _tiny_split(tmp_path, n=2)
    out = tmp_path / "gt.npz"
    assert kitti_gt.main(["--data", str(data), "--split", str(split), "--out", str(out)]) == 0
    assert "wrote 2 velodyne (lidar_forward) GT maps" in capsys.readouterr().out
    assert len(kitti_gt.load_gt_npz(out)) == 2
    assert kitti_gt.gt_npz_info(out) == {"kind": "velodyne", "lidar_depth": "lidar_forward"}
    assert kitti_gt.main(["--data", str(tmp_path / "nowhere"), "--split", str(split), "--out", str(out)]) == 2
    assert "calibration file not found" in capsys.readouterr().err


def test_export_records_the_lidar_depth_convention_and_old_files_read_as_the_reference(tmp_path):
    data, split, entries = _tiny_split(tmp_path, n=2)
    kitti_gt.export_gt_npz(data, split, tmp_path / "z.npz", depth_convention="camera_z")
    kitti_gt.export_gt_npz(data, split, tmp_path / "x.npz")
    assert kitti_gt.gt_npz_info(tmp_path / "z.npz") == {"kind": "velodyne", "lidar_depth": "camera_z"}
    z, x = kitti_gt.load_gt_npz(tmp_path / "z.npz")[0], kitti_gt.load_gt_npz(tmp_path / "x.npz")[0]
    np.testing.assert_array_equal(z, kitti_gt.load_gt_depth(data, entries[0], depth_convention="camera_z"))
    np.testing.assert_array_equal(x, kitti_gt.load_gt_depth(data, entries[0], depth_convention="lidar_forward"))
    assert np.abs(x - z).max() > 0.1  # the lever arm: the two conventions really differ on this fixture
    kitti_gt.export_gt_npz(data, split, tmp_path / "i.npz", gt="improved")
    assert kitti_gt.gt_npz_info(tmp_path / "i.npz") == {"kind": "improved", "lidar_depth": None}
    # An export from before the convention was recorded: only the maps and the split.
    with np.load(tmp_path / "x.npz") as npz:
        np.savez(tmp_path / "old.npz", **{k: npz[k] for k in npz.files if k.startswith("gt_") or k == "split"})
    assert kitti_gt.gt_npz_info(tmp_path / "old.npz") == {"kind": None, "lidar_depth": "lidar_forward"}


def test_camera_model_splits_the_projection_into_intrinsics_and_a_rigid_transform(tmp_path):
    calib_dir = tmp_path / "c"
    write_calib(calib_dir)
    K, T, shape = kitti_gt.kitti_camera_model(calib_dir)
    P, _ = kitti_gt.velo_to_image_projection(calib_dir)
    np.testing.assert_allclose(K @ T[:3], P, rtol=0, atol=1e-12)
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
    assert shape == (H, W) and np.array_equal(K, P_RECT[:, :3])
    # The ROS camera_info K that reproduces the devkit's pixels: principal point one pixel up and left.
    np.testing.assert_array_equal(kitti_gt.ros_intrinsics(K) - K, [[0, 0, -1], [0, 0, -1], [0, 0, 0]])


def test_generate_depth_map_defaults_to_the_reference_lidar_forward_depth(scene):
    calib_dir, velo_path, stored = scene
    default = kitti_gt.generate_depth_map(calib_dir, velo_path)
    np.testing.assert_array_equal(default, kitti_gt.generate_depth_map(calib_dir, velo_path,
                                                                       depth_convention="lidar_forward"))
    assert default[0, 0] == pytest.approx(stored[0, 0], rel=1e-12)
    with pytest.raises(ValueError, match="depth_convention must be one of"):
        kitti_gt.generate_depth_map(calib_dir, velo_path, depth_convention="w")


# Published KITTI raw calibration of 2011_09_26 (numbers from calib_cam_to_cam.txt / calib_velo_to_cam.txt).
KITTI_0926 = {
    "R_rect_00": [9.999239e-01, 9.837760e-03, -7.445048e-03, -9.869795e-03, 9.999421e-01, -4.278459e-03,
                  7.402527e-03, 4.351614e-03, 9.999631e-01],
    "P_rect_02": [7.215377e02, 0.0, 6.095593e02, 4.485728e01, 0.0, 7.215377e02, 1.728540e02, 2.163791e-01,
                  0.0, 0.0, 1.0, 2.745884e-03],
    "R": [7.533745e-03, -9.999714e-01, -6.166020e-04, 1.480249e-02, 7.280733e-04, -9.998902e-01,
          9.998621e-01, 7.523790e-03, 1.480755e-02],
    "T": [-4.069766e-03, -7.631618e-02, -2.717806e-01],
}  # fmt: skip


def reference_depth_map(P_velo_to_img, shape, velo_xyz, vel_depth: bool):
    """Independent, loop-based re-statement of the reference procedure (per-point dictionary, no NumPy tricks)."""
    H, W = shape
    best = {}
    for x, y, z in velo_xyz:
        if x < 0:
            continue
        u, v, w = P_velo_to_img @ np.array([x, y, z, 1.0])
        col, row = int(round(u / w)) - 1, int(round(v / w)) - 1
        if 0 <= col < W and 0 <= row < H:
            d = x if vel_depth else w
            best[(row, col)] = min(best.get((row, col), np.inf), d)
    out = np.zeros(shape)
    for (row, col), d in best.items():
        out[row, col] = max(d, 0.0)
    return out


@pytest.mark.parametrize("convention", ["lidar_forward", "camera_z"])
def test_projection_matches_a_loop_reference_on_real_kitti_calibration(tmp_path, convention):
    calib_dir = tmp_path / "2011_09_26"
    calib_dir.mkdir()
    kitti.write_calib_file(calib_dir / "calib_cam_to_cam.txt",
                           {"S_rect_02": np.array([1242.0, 375.0]), "R_rect_00": np.array(KITTI_0926["R_rect_00"]),
                            "P_rect_02": np.array(KITTI_0926["P_rect_02"])})
    kitti.write_calib_file(calib_dir / "calib_velo_to_cam.txt",
                           {"R": np.array(KITTI_0926["R"]), "T": np.array(KITTI_0926["T"])})
    rng = np.random.default_rng(11)
    # An HDL-64-like cloud: rings of points around the car, plus repeated directions at other ranges so
    # that many pixels receive several points.
    az = rng.uniform(-np.pi, np.pi, 6000)
    el = rng.uniform(-0.43, 0.03, 6000)
    rng_m = rng.uniform(0.5, 90, 6000)
    pts = np.stack([rng_m * np.cos(el) * np.cos(az), rng_m * np.cos(el) * np.sin(az), rng_m * np.sin(el)], 1)
    pts = np.concatenate([pts, pts[:2000] * rng.uniform(0.3, 0.9, (2000, 1))])
    stored = write_scan(tmp_path / "scan.bin", pts)
    P, shape = kitti_gt.velo_to_image_projection(calib_dir)
    assert shape == (375, 1242)
    expected = reference_depth_map(P, shape, stored, vel_depth=convention == "lidar_forward")
    got = kitti_gt.generate_depth_map(calib_dir, tmp_path / "scan.bin", depth_convention=convention)
    assert np.count_nonzero(expected) > 300
    np.testing.assert_array_equal(got > 0, expected > 0)  # the same pixels ...
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)  # ... and depths up to summation order
