"""KITTI raw readers/writers on small fixtures laid out exactly like real KITTI raw files."""

import cv2
import numpy as np
import pytest

from monodepth_ros.datasets import kitti

# Values in the shape of a real 2011_09_26 calib_cam_to_cam.txt (calib_time line, 3x4 P_rect, S_rect w h).
REAL_CAM_TO_CAM = """calib_time: 09-Jan-2012 13:57:47
corner_dist: 9.950000e-02
S_00: 1.392000e+03 5.120000e+02
K_00: 9.842439e+02 0.000000e+00 6.900000e+02 0.000000e+00 9.808141e+02 2.331966e+02 0.000000e+00 0.000000e+00 1.000000e+00
D_00: -3.728755e-01 2.037299e-01 2.219027e-03 1.383707e-03 -7.233722e-02
S_rect_00: 1.242000e+03 3.750000e+02
R_rect_00: 9.999239e-01 9.837760e-03 -7.445048e-03 -9.869795e-03 9.999421e-01 -4.278459e-03 7.402527e-03 4.351614e-03 9.999631e-01
P_rect_00: 7.215377e+02 0.000000e+00 6.095593e+02 0.000000e+00 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
S_rect_02: 1.242000e+03 3.750000e+02
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
S_rect_03: 1.242000e+03 3.750000e+02
P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03
"""  # noqa: E501

REAL_VELO_TO_CAM = """calib_time: 15-Mar-2012 11:37:16
R: 7.533745e-03 -9.999714e-01 -6.166020e-04 1.480249e-02 7.280733e-04 -9.998902e-01 9.998621e-01 7.523790e-03 1.480755e-02
T: -4.069766e-03 -7.631618e-02 -2.717806e-01
delta_f: 0.000000e+00 0.000000e+00
delta_c: 0.000000e+00 0.000000e+00
"""  # noqa: E501

REAL_OXTS = (
    "49.015003823272 8.4342971002335 116.43032836914 0.035752 0.00903 -1.2330102693 -6.9823838895 -3.3765497711 "
    "7.7563844934 -0.0099178722 0.16025081845 -0.042069137022 0.086017005186 9.8001689419 0.13023082138 "
    "-0.32037306212 9.7858574453 -0.0064237002025 0.0015432498063 0.011468040608 -0.0041440398614 "
    "0.0021497484734 0.011595931316 0.51852755653 0.021 4 10 4 4 0\n"
)


@pytest.fixture
def drive(tmp_path):
    date = "2011_09_26"
    (tmp_path / date).mkdir()
    (tmp_path / date / "calib_cam_to_cam.txt").write_text(REAL_CAM_TO_CAM)
    (tmp_path / date / "calib_velo_to_cam.txt").write_text(REAL_VELO_TO_CAM)
    return tmp_path, date


def test_read_calib_file_skips_calib_time_and_keeps_numeric_rows(drive):
    root, date = drive
    calib = kitti.read_calib_file(root / date / "calib_cam_to_cam.txt")
    assert "calib_time" not in calib
    assert calib["P_rect_02"].shape == (12,)
    assert calib["corner_dist"][0] == pytest.approx(0.0995)
    assert calib["S_rect_02"].tolist() == [1242.0, 375.0]


def test_cam_intrinsics_takes_left_3x3_of_p_rect_and_ignores_baseline_column(drive):
    root, date = drive
    K2 = kitti.cam_intrinsics(root / date, cam=2)
    K3 = kitti.cam_intrinsics(root / date / "calib_cam_to_cam.txt", cam=3)
    expected = np.array([[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1]])
    np.testing.assert_allclose(K2, expected)
    np.testing.assert_allclose(K3, expected)
    assert kitti.image_size(root / date) == (1242, 375)


def test_cam_intrinsics_names_missing_key(drive):
    root, date = drive
    with pytest.raises(KeyError, match="P_rect_05"):
        kitti.cam_intrinsics(root / date, cam=5)


def test_velo_to_cam_is_rigid_transform_from_r_and_t(drive):
    root, date = drive
    T = kitti.read_velo_to_cam(root / date)
    assert T.shape == (4, 4)
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(T[:3, 3], [-4.069766e-03, -7.631618e-02, -2.717806e-01])


def test_write_then_read_calib_file_round_trips_values(tmp_path):
    P = np.arange(12, dtype=float).reshape(3, 4) / 7.0
    kitti.write_calib_file(tmp_path / "c.txt", {"P_rect_02": P, "S_rect_02": [640, 192]}, calib_time="x y")
    calib = kitti.read_calib_file(tmp_path / "c.txt")
    np.testing.assert_allclose(calib["P_rect_02"].reshape(3, 4), P, rtol=1e-12)
    assert (tmp_path / "c.txt").read_text().startswith("calib_time: x y\n")


def test_read_split_parses_folder_frame_side_and_rejects_bad_side(tmp_path):
    p = tmp_path / "split.txt"
    p.write_text("2011_09_26/2011_09_26_drive_0022_sync 473 r\n\n2011_09_29/2011_09_29_drive_0026_sync 1 l\n")
    entries = kitti.read_split(p)
    assert entries == [
        kitti.SplitEntry("2011_09_26/2011_09_26_drive_0022_sync", 473, "r"),
        kitti.SplitEntry("2011_09_29/2011_09_29_drive_0026_sync", 1, "l"),
    ]
    assert kitti.calib_dir_for(tmp_path, entries[0]) == tmp_path / "2011_09_26"
    kitti.write_split(tmp_path / "again.txt", entries)
    assert kitti.read_split(tmp_path / "again.txt") == entries
    p.write_text("2011_09_26/x 3 q\n")
    with pytest.raises(ValueError, match="side"):
        kitti.read_split(p)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_image_path_finds_png_or_jpeg_and_load_rgb_returns_rgb_order(drive, ext):
    root, date = drive
    entry = kitti.SplitEntry(f"{date}/{date}_drive_0001_sync", 7, "r")
    img_dir = root / entry.folder / "image_03" / "data"
    img_dir.mkdir(parents=True)
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 250  # pure red survives JPEG well enough to check channel order
    cv2.imwrite(str(img_dir / f"0000000007{ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    path = kitti.image_path(root, entry)
    assert path.name == f"0000000007{ext}"
    loaded = kitti.load_rgb(path)
    assert loaded.shape == (20, 30, 3) and loaded.dtype == np.uint8
    assert loaded[..., 0].mean() > 240 and loaded[..., 2].mean() < 15


def test_image_path_missing_names_the_candidates(tmp_path):
    with pytest.raises(FileNotFoundError, match="0000000003.png"):
        kitti.image_path(tmp_path, kitti.SplitEntry("d/d_drive_0001_sync", 3, "l"))


def test_depth_png_round_trip_within_quantisation_and_invalid_becomes_zero(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 200.0, (12, 17)).astype(np.float32)
    depth[0, 0] = np.inf
    depth[0, 1] = np.nan
    depth[0, 2] = -1.0
    depth[0, 3] = 300.0  # beyond uint16 range: invalid, not clipped
    kitti.write_depth_png(tmp_path / "d.png", depth)
    raw = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_ANYDEPTH)
    assert raw.dtype == np.uint16
    back = kitti.read_depth_png(tmp_path / "d.png")
    assert back.dtype == np.float32
    assert (back[0, :4] == 0).all()
    ok = np.ones_like(depth, bool)
    ok[0, :4] = False
    assert np.abs(back[ok] - depth[ok]).max() <= 0.5 / 256 + 1e-6


def test_read_oxts_parses_real_line_and_speed_is_vf(tmp_path):
    p = tmp_path / "0000000000.txt"
    p.write_text(REAL_OXTS)
    ox = kitti.read_oxts(p)
    assert ox.shape == (30,)
    assert kitti.oxts_speed_mps(ox) == pytest.approx(7.7563844934)
    kitti.write_oxts(tmp_path / "b.txt", ox)
    np.testing.assert_array_equal(kitti.read_oxts(tmp_path / "b.txt"), ox)
    assert (tmp_path / "b.txt").read_text().split()[-5:] == ["4", "10", "4", "4", "0"]


def test_read_oxts_rejects_wrong_field_count(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="30"):
        kitti.read_oxts(p)


def _oxts(lat, lon, alt=100.0, roll=0.0, pitch=0.0, yaw=0.0):
    ox = np.zeros(30)
    ox[:6] = [lat, lon, alt, roll, pitch, yaw]
    return ox


def test_oxts_to_poses_mercator_east_and_north_displacements():
    lat0 = 49.0
    dlon = dlat = 1e-4  # ~7 m east, ~11 m north
    poses = kitti.oxts_to_poses([_oxts(lat0, 8.0), _oxts(lat0, 8.0 + dlon, 101.0), _oxts(lat0 + dlat, 8.0)])
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-12)
    east = kitti.EARTH_RADIUS_M * np.cos(np.deg2rad(lat0)) * np.deg2rad(dlon)
    np.testing.assert_allclose(poses[1, :3, 3], [east, 0.0, 1.0], atol=1e-6)
    # Mercator stretches northward distance by 1 / cos(lat); the scale cos(lat0) undoes it near lat0.
    north = kitti.EARTH_RADIUS_M * np.deg2rad(dlat)
    assert poses[2, 1, 3] == pytest.approx(north, rel=1e-3)
    assert abs(poses[2, 0, 3]) < 1e-9


def test_oxts_to_poses_rotation_is_rz_ry_rx_and_forward_is_imu_x():
    yaw, pitch, roll = 0.3, -0.05, 0.02
    poses = kitti.oxts_to_poses([_oxts(49.0, 8.0, yaw=yaw, pitch=pitch, roll=roll)], relative_to_first=False)
    R = poses[0, :3, :3]
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    np.testing.assert_allclose(R, Rz @ Ry @ Rx, atol=1e-12)
    # Heading yaw from east, counter-clockwise: forward axis x points at (cos yaw, sin yaw) on the map.
    np.testing.assert_allclose(R[:2, 0] / np.linalg.norm(R[:2, 0]), [cy, sy], atol=1e-12)


def test_poses_file_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    from monodepth_ros.geometry import pose_from_axis_angle

    poses = pose_from_axis_angle(rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) * 50)
    kitti.write_poses_file(tmp_path / "poses.txt", poses)
    back = kitti.read_poses_file(tmp_path / "poses.txt")
    np.testing.assert_array_equal(back, poses)
    assert len((tmp_path / "poses.txt").read_text().splitlines()[0].split()) == 12


def test_timestamps_keep_nanoseconds(tmp_path):
    p = tmp_path / "timestamps.txt"
    p.write_text("2011-09-26 13:02:25.964389445\n2011-09-26 13:02:26.068748735\n")
    t = kitti.read_timestamps(p)
    assert t[1] - t[0] == pytest.approx(0.10435929, abs=1e-6)
    q = tmp_path / "again.txt"
    q.write_text("".join(kitti.format_timestamp(x) + "\n" for x in t))
    assert q.read_text().splitlines()[0].startswith("2011-09-26 13:02:25.964389")
    np.testing.assert_allclose(kitti.read_timestamps(q), t, atol=1e-6, rtol=0)
