"""Synthetic world: determinism, exact geometry (checked against the geometry core by photometric warping),
motion options, and the KITTI / rosbag2 writers round-tripping through the project's readers and rclpy."""

import cv2
import numpy as np
import pytest

from monodepth_ros import geometry as g
from monodepth_ros.datasets import kitti
from monodepth_ros.synthetic import SynthConfig, SyntheticWorld, writers
from monodepth_ros.synthetic.cli import main as synth_main

pytestmark = pytest.mark.rosdistro  # ROS-facing: `make test-jazzy` runs this module on ROS 2 Jazzy too


def _world(w=160, h=64, **kw):
    return SyntheticWorld(SynthConfig(width=w, height=h, **kw))


# ------------------------------------------------------------------------------------------- determinism


def test_same_seed_renders_identical_bytes_and_other_seed_differs():
    a, b, c = _world(seed=5), _world(seed=5), _world(seed=6)
    fa, fb, fc = a.render(7), b.render(7), c.render(7)
    assert fa.rgb.tobytes() == fb.rgb.tobytes()
    assert fa.depth_m.tobytes() == fb.depth_m.tobytes()
    np.testing.assert_array_equal(fa.T_world_from_cam, fb.T_world_from_cam)
    assert fa.rgb.tobytes() != fc.rgb.tobytes()
    assert fa.depth_m.tobytes() != fc.depth_m.tobytes()


def test_random_access_matches_sequential_rendering():
    seq = _world(seed=2, static_segments=True, moving_objects=True)
    for i in range(0, 160, 7):
        seq.render(i)
    last_seq = seq.render(153)
    fresh = _world(seed=2, static_segments=True, moving_objects=True).render(153)
    assert fresh.rgb.tobytes() == last_seq.rgb.tobytes()
    np.testing.assert_array_equal(fresh.T_world_from_cam, last_seq.T_world_from_cam)
    assert fresh.stamp_s == last_seq.stamp_s


def test_frame_fields_have_documented_shapes_and_types():
    f = _world(moving_objects=True).render(3)
    assert f.rgb.shape == (64, 160, 3) and f.rgb.dtype == np.uint8
    assert f.depth_m.shape == (64, 160) and f.depth_m.dtype == np.float32
    assert f.moving_mask.shape == (64, 160) and f.moving_mask.dtype == bool
    assert f.K.shape == (3, 3) and f.T_world_from_cam.shape == (4, 4)
    np.testing.assert_allclose(f.K, [[0.58 * 160, 0, 80], [0, 1.92 * 64, 32], [0, 0, 1]])
    assert f.index == 3 and f.stamp_s == pytest.approx(_world().stamp_s(0) + 0.3)


def test_bad_config_and_index_are_rejected_with_clear_errors():
    with pytest.raises(ValueError, match="image size"):
        SyntheticWorld(SynthConfig(width=4, height=64))
    with pytest.raises(ValueError, match="non-negative"):
        _world().render(-1)
    with pytest.raises(ValueError, match="camera"):
        _world().render(0, camera="middle")


# ------------------------------------------------------------------------------------------------ geometry


def test_depth_is_optical_z_so_road_pixels_backproject_onto_the_road_plane():
    f = _world(320, 96).render(12)
    assert np.isfinite(f.depth_m[-10:]).all()
    pts_cam = g.backproject(np.where(np.isfinite(f.depth_m), f.depth_m, 1.0).astype(np.float64), f.K)
    pts_world = pts_cam @ f.T_world_from_cam[:3, :3].T + f.T_world_from_cam[:3, 3]
    # Bottom rows near the centre look at the road right in front of the car.
    road = pts_world[-10:, 140:180]
    np.testing.assert_allclose(road[..., 2], 0.0, atol=1e-3)
    # Had depth been range along the ray instead of z, points off the optical axis would miss the plane.
    rng_m = np.linalg.norm(pts_cam[-10:, 140:180], axis=-1)
    assert np.abs(rng_m - f.depth_m[-10:, 140:180]).max() > 0.01


def test_sky_has_infinite_depth_and_everything_else_is_finite_positive():
    f = _world(320, 96).render(20)
    sky = ~np.isfinite(f.depth_m)
    assert sky[0].mean() > 0.05, "the top row should see some sky between the buildings"
    assert np.isposinf(f.depth_m[sky]).all()
    assert (f.depth_m[~sky] > 0).all()
    assert not sky[-1].any(), "the bottom row sees the road"


def _warp_error(tgt, src, T_src_from_tgt, depth_scale=1.0):
    """Mean absolute RGB error (0..255) of ``src`` warped into ``tgt`` with tgt depth * scale, over pixels that
    are static, visible in both views (z-buffer test with the exact depth) and away from depth edges."""
    d = tgt.depth_m.astype(np.float64)
    fin = np.isfinite(d)
    H, W = d.shape
    uv = g.warp_coords(np.where(fin, d * depth_scale, 1.0), tgt.K, T_src_from_tgt)
    m = uv.astype(np.float32)
    warped = cv2.remap(src.rgb.astype(np.float32), m[..., 0], m[..., 1], cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    err = np.abs(warped - tgt.rgb.astype(np.float32)).mean(-1)
    return err


def _static_visible_mask(tgt, src, T_src_from_tgt):
    d = np.where(np.isfinite(tgt.depth_m), tgt.depth_m, 1.0).astype(np.float64)
    H, W = d.shape
    pts = g.backproject(d, tgt.K) @ T_src_from_tgt[:3, :3].T + T_src_from_tgt[:3, 3]
    uv, z = g.project(pts, tgt.K)
    ok = np.isfinite(uv).all(-1) & (uv[..., 0] >= 1) & (uv[..., 0] <= W - 2) & (uv[..., 1] >= 1)
    ok &= uv[..., 1] <= H - 2
    ui = np.clip(np.round(np.nan_to_num(uv[..., 0])).astype(int), 0, W - 1)
    vi = np.clip(np.round(np.nan_to_num(uv[..., 1])).astype(int), 0, H - 1)
    visible = np.abs(src.depth_m[vi, ui] - z) < 0.03 * z + 0.05
    # Depth edges: bilinear sampling mixes two surfaces there, an error of the warp, not of the world.
    log_d = np.log(np.where(np.isfinite(src.depth_m), src.depth_m, 1e4))
    edge = cv2.dilate((cv2.morphologyEx(log_d, cv2.MORPH_GRADIENT, np.ones((3, 3))) > 0.05).astype(np.uint8),
                      np.ones((3, 3)))  # fmt: skip
    static = ~tgt.moving_mask & ~src.moving_mask[vi, ui]
    return np.isfinite(tgt.depth_m) & ok & visible & static & ~edge[vi, ui].astype(bool)


@pytest.mark.parametrize("pair", ["t+1->t", "t-1->t", "right->left"])
def test_exact_depth_and_pose_warp_far_better_than_double_depth_or_identity_pose(pair):
    world = _world(320, 96, seed=3, moving_objects=True)
    tgt = world.render(30)
    src = {"t+1->t": lambda: world.render(31), "t-1->t": lambda: world.render(29),
           "right->left": lambda: world.render(30, camera="right")}[pair]()  # fmt: skip
    T = g.invert_pose(src.T_world_from_cam) @ tgt.T_world_from_cam
    mask = _static_visible_mask(tgt, src, T)
    assert mask.mean() > 0.3
    exact = _warp_error(tgt, src, T)[mask].mean()
    double = _warp_error(tgt, src, T, depth_scale=2.0)[mask].mean()
    identity = _warp_error(tgt, src, np.eye(4))[mask].mean()
    assert exact < 0.4 * double and exact < 0.3 * identity, (exact, double, identity)
    assert exact < 6.0


def test_torch_warp_with_exact_geometry_matches_the_numpy_check():
    torch = pytest.importorskip("torch")
    from monodepth_training import geometry as tg

    world = _world(320, 96, seed=4)
    tgt, src = world.render(10), world.render(11)
    T = g.invert_pose(src.T_world_from_cam) @ tgt.T_world_from_cam
    mask = _static_visible_mask(tgt, src, T)

    def err(depth_scale, T_):
        depth = torch.from_numpy(np.where(np.isfinite(tgt.depth_m), tgt.depth_m, 1e3) * depth_scale)[None, None]
        img = torch.from_numpy(src.rgb.astype(np.float32)).permute(2, 0, 1)[None]
        warped = tg.warp(img, depth.float(), torch.from_numpy(tgt.K).float()[None], torch.from_numpy(T_).float()[None])
        e = (warped[0].permute(1, 2, 0).numpy() - tgt.rgb.astype(np.float32)).__abs__().mean(-1)
        return e[mask].mean()

    exact, double, identity = err(1.0, T), err(2.0, T), err(1.0, np.eye(4))
    assert exact < 0.4 * double and exact < 0.3 * identity, (exact, double, identity)


def test_right_camera_sits_one_baseline_along_optical_x():
    world = _world()
    left, right = world.render(5), world.render(5, camera="right")
    T_left_from_right = g.invert_pose(left.T_world_from_cam) @ right.T_world_from_cam
    np.testing.assert_allclose(T_left_from_right, [[1, 0, 0, 0.54], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                               atol=1e-12)  # fmt: skip


# -------------------------------------------------------------------------------------------------- motion


def test_speed_matches_pose_displacement_at_about_one_metre_per_frame():
    world = _world()
    poses = np.stack([world.T_world_from_cam(i) for i in range(40)])
    step_m = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    speeds = np.array([world.trajectory.speed_mps(i) for i in range(40)])
    np.testing.assert_allclose(step_m, 0.5 * (speeds[1:] + speeds[:-1]) * 0.1, rtol=5e-3)
    assert 0.85 < step_m.mean() < 1.15
    heading_deg = np.degrees(np.arctan2(poses[:, 1, 2], poses[:, 0, 2]))  # optical z axis on the map
    assert np.ptp(heading_deg) > 0.2, "the drive should turn"


def test_static_segments_give_identical_consecutive_frames_and_zero_speed():
    world = _world(static_segments=True)
    v = world.trajectory.speed_x(np.arange(100))
    stopped = np.flatnonzero((v[:-1] == 0) & (v[1:] == 0))
    assert stopped.size >= 3, "each 100-frame block holds a stop"
    i = int(stopped[1])
    a, b = world.render(i), world.render(i + 1)
    assert a.rgb.tobytes() == b.rgb.tobytes()
    assert a.depth_m.tobytes() == b.depth_m.tobytes()
    assert a.speed_mps == 0.0 and b.stamp_s > a.stamp_s
    moving_world = _world(static_segments=False)
    assert moving_world.render(i).rgb.tobytes() != moving_world.render(i + 1).rgb.tobytes()


def test_moving_objects_mask_covers_moving_cars_only_when_enabled():
    on, off = _world(320, 96, moving_objects=True), _world(320, 96, moving_objects=False)
    f_on, f_off = on.render(15), off.render(15)
    assert f_on.moving_mask.sum() > 50
    assert not f_off.moving_mask.any()
    # Depth on moving pixels differs from the static world's depth there: the cars are real geometry.
    assert (f_on.depth_m[f_on.moving_mask] < f_off.depth_m[f_on.moving_mask]).mean() > 0.9


def test_leader_car_moving_with_the_camera_keeps_its_depth():
    world = _world(320, 96, moving_objects=True)
    depths = []
    for i in (40, 41, 42):
        f = world.render(i)
        centre = f.moving_mask[:, 140:180] & (f.depth_m[:, 140:180] < 25)
        depths.append(np.median(f.depth_m[:, 140:180][centre]))
    # Zero relative motion: its depth stays put while the static world streams past at ~1 m per frame.
    assert np.ptp(depths) < 0.2, depths


# ------------------------------------------------------------------------------------------------- writers


def test_kitti_writer_round_trips_through_kitti_reader(tmp_path):
    world = _world(seed=1, moving_objects=True)
    n = 6
    drive_dir = writers.write_kitti(world, tmp_path, n, date="2011_09_26", drive=3, stereo=True)
    folder = "2011_09_26/2011_09_26_drive_0003_sync"
    assert drive_dir == tmp_path / folder
    calib_dir = kitti.calib_dir_for(tmp_path, kitti.SplitEntry(folder, 0, "l"))
    np.testing.assert_allclose(kitti.cam_intrinsics(calib_dir, 2), world.K, rtol=1e-12)
    np.testing.assert_allclose(kitti.cam_intrinsics(calib_dir, 3), world.K, rtol=1e-12)
    assert kitti.image_size(calib_dir) == (160, 64)
    P3 = kitti.read_calib_file(calib_dir / "calib_cam_to_cam.txt")["P_rect_03"].reshape(3, 4)
    assert -P3[0, 3] / P3[0, 0] == pytest.approx(0.54)
    poses = kitti.read_poses_file(drive_dir / "poses_cam02.txt")
    oxts = [kitti.read_oxts(drive_dir / "oxts" / "data" / f"{i:010d}.txt") for i in range(n)]
    stamps = kitti.read_timestamps(drive_dir / "image_02" / "timestamps.txt")
    for i in range(n):
        for side, cam in (("l", "left"), ("r", "right")):
            f = world.render(i, cam)
            entry = kitti.SplitEntry(folder, i, side)
            np.testing.assert_array_equal(kitti.load_rgb(kitti.image_path(tmp_path, entry)), f.rgb)
        f = world.render(i)
        gt = kitti.read_depth_png(drive_dir / "proj_depth" / "groundtruth" / "image_02" / f"{i:010d}.png")
        finite = np.isfinite(f.depth_m) & (f.depth_m < 255)
        assert np.abs(gt[finite] - f.depth_m[finite]).max() <= 1 / 256
        assert (gt[~np.isfinite(f.depth_m)] == 0).all()
        np.testing.assert_array_equal(poses[i], f.T_world_from_cam)
        assert kitti.oxts_speed_mps(oxts[i]) == pytest.approx(f.speed_mps, rel=1e-12)
        assert stamps[i] == pytest.approx(f.stamp_s, abs=1e-6)
    # oxts -> IMU poses (devkit convention), then the written calibration chain -> camera poses.
    T_imu = kitti.oxts_to_poses(oxts)
    T_velo_from_imu = kitti.read_imu_to_velo(calib_dir)
    T_cam_from_velo = kitti.read_velo_to_cam(calib_dir)
    T_imu_from_cam = g.invert_pose(T_cam_from_velo @ T_velo_from_imu)
    rel_from_oxts = T_imu @ T_imu_from_cam
    rel_true = g.invert_pose(poses[0] @ g.invert_pose(T_imu_from_cam)) @ poses
    np.testing.assert_allclose(rel_from_oxts, rel_true, atol=1e-6)
    splits = {s: kitti.read_split(tmp_path / "splits" / f"{s}_files.txt") for s in ("train", "val", "test")}
    frames = [e.frame for s in splits.values() for e in s]
    assert sorted(frames) == list(range(1, n - 1)) and all(splits.values())


def test_kitti_writer_is_byte_deterministic(tmp_path):
    for run in ("a", "b"):
        writers.write_kitti(_world(seed=9), tmp_path / run, 3)
    rel = "2011_09_26/2011_09_26_drive_0001_sync"
    for sub in ("image_02/data/0000000002.png", "proj_depth/groundtruth/image_02/0000000002.png",
                "oxts/data/0000000002.txt", "poses_cam02.txt"):  # fmt: skip
        assert (tmp_path / "a" / rel / sub).read_bytes() == (tmp_path / "b" / rel / sub).read_bytes()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trips_through_rosbags_and_rclpy_deserialisation(tmp_path, storage):
    from nav_msgs.msg import Odometry
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import CameraInfo, Image

    world = _world(seed=2, moving_objects=True)
    n = 3
    out = writers.write_bag(world, tmp_path / "drive", n, storage=storage)
    assert out == tmp_path / "drive" and not list(tmp_path.glob(".drive.*")), "temp folder must be gone"
    frames = [world.render(i) for i in range(n)]
    by_topic: dict[str, list] = {}
    with Reader(out) as reader:
        assert reader.message_count == 4 * n
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {
            "/camera/image_raw": "sensor_msgs/msg/Image",
            "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
            "/camera/depth_gt": "sensor_msgs/msg/Image",
            "/odom": "nav_msgs/msg/Odometry",
        }
        for conn, stamp, raw in reader.messages():
            by_topic.setdefault(conn.topic, []).append((stamp, bytes(raw)))
    rcl_types = {"/camera/image_raw": Image, "/camera/camera_info": CameraInfo, "/camera/depth_gt": Image,
                 "/odom": Odometry}  # fmt: skip
    for topic, msgs in by_topic.items():
        assert len(msgs) == n
        for (stamp, raw), f in zip(msgs, frames):
            msg = deserialize_message(raw, rcl_types[topic])
            assert stamp == writers.stamp_ns(f.stamp_s)
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
            if topic == "/camera/image_raw":
                assert (msg.encoding, msg.width, msg.height, msg.step) == ("rgb8", 160, 64, 480)
                assert msg.header.frame_id == "camera_optical_frame"
                np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(64, 160, 3), f.rgb)
            elif topic == "/camera/depth_gt":
                assert (msg.encoding, msg.step, msg.is_bigendian) == ("32FC1", 640, 0)
                depth = np.frombuffer(bytes(msg.data), "<f4").reshape(64, 160)
                np.testing.assert_array_equal(depth, f.depth_m)
            elif topic == "/camera/camera_info":
                np.testing.assert_array_equal(np.array(msg.k).reshape(3, 3), f.K)
                np.testing.assert_array_equal(np.array(msg.p).reshape(3, 4)[:, :3], f.K)
                assert msg.distortion_model == "plumb_bob" and list(msg.d) == [0.0] * 5
                assert (msg.width, msg.height, msg.header.frame_id) == (160, 64, "camera_optical_frame")
            else:
                assert msg.twist.twist.linear.x == pytest.approx(f.speed_mps)
                assert (msg.header.frame_id, msg.child_frame_id) == ("odom", "base_link")
                T_vehicle = f.T_world_from_cam @ g.invert_pose(world.T_vehicle_from_cam)
                p = msg.pose.pose.position
                np.testing.assert_allclose([p.x, p.y, p.z], T_vehicle[:3, 3], atol=1e-9)


def test_write_bag_refuses_to_overwrite_unless_asked(tmp_path):
    world = _world()
    writers.write_bag(world, tmp_path / "b", 1)
    with pytest.raises(FileExistsError, match="overwrite"):
        writers.write_bag(world, tmp_path / "b", 1)
    writers.write_bag(world, tmp_path / "b", 2, overwrite=True)
    from rosbags.rosbag2 import Reader

    with Reader(tmp_path / "b") as r:
        assert r.message_count == 8


def test_write_kitti_refuses_to_replace_a_drive_unless_asked(tmp_path):
    world = _world(seed=2)
    drive = writers.write_kitti(world, tmp_path, 6)
    splits = {p.name: p.read_bytes() for p in (tmp_path / "splits").iterdir()}
    with pytest.raises(FileExistsError, match="overwrite"):
        writers.write_kitti(world, tmp_path, 3)
    assert len(list((drive / "image_02" / "data").iterdir())) == 6, "the drive must be untouched"
    assert {p.name: p.read_bytes() for p in (tmp_path / "splits").iterdir()} == splits, "splits too"


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_kitti_folder_and_reports(tmp_path, capsys):
    rc = synth_main(["--out", str(tmp_path), "--format", "kitti", "--frames", "4", "--size", "96x32", "--seed", "3",
                     "--static-segments", "--moving-objects"])  # fmt: skip
    assert rc == 0
    img = kitti.load_rgb(tmp_path / "2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000003.png")
    assert img.shape == (32, 96, 3)
    assert "wrote 4 frames" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["kitti", "bag"])
def test_cli_refuses_an_existing_output_without_overwrite(tmp_path, capsys, fmt):
    out = tmp_path / ("kitti" if fmt == "kitti" else "bag")
    args = ["--out", str(out), "--format", fmt, "--frames", "3", "--size", "32x16"]
    assert synth_main(args) == 0
    capsys.readouterr()
    assert synth_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("monodepth-synth: error: ") and err[0].endswith(
        "exists; pass overwrite=True (CLI: --overwrite) to replace it"), err
    assert synth_main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "640by192"], "WIDTHxHEIGHT"),
        (["--frames", "0"], "positive integer"),
        (["--seed", "-1"], "non-negative"),
        (["--format", "bag", "--stereo"], "--stereo"),
        (["--format", "png"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_arguments_with_clear_message(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        synth_main(["--out", str(tmp_path / "x"), *args])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_preview_writes_frame_above_its_depth(tmp_path):
    from monodepth_ros.synthetic import preview

    assert preview.main(["--out", str(tmp_path / "p.png"), "--index", "3"]) == 0
    img = kitti.load_rgb(tmp_path / "p.png")
    assert img.shape == (384, 640, 3)
    frame = SyntheticWorld(SynthConfig(moving_objects=True)).render(3)
    np.testing.assert_array_equal(img[:192], frame.rgb)
    assert (img[192:][~np.isfinite(frame.depth_m)] == 0).all(), "sky (inf depth) is black in the depth panel"


def test_kitti_writer_replaces_a_drive_whole_and_keeps_other_drives_in_splits(tmp_path):
    world = _world(seed=1)
    writers.write_kitti(world, tmp_path, 8, drive=1)
    writers.write_kitti(world, tmp_path, 12, drive=2)
    drive1 = writers.write_kitti(world, tmp_path, 5, drive=1, overwrite=True)  # shorter: no stale frames 5..7
    assert sorted(p.name for p in (drive1 / "image_02" / "data").iterdir())[-1] == "0000000004.png"
    assert not list((tmp_path / "2011_09_26").glob(".*.tmp")), "temporary drive folders must be gone"
    entries = [e for s in ("train", "val", "test") for e in kitti.read_split(tmp_path / "splits" / f"{s}_files.txt")]
    by_drive = {f: sorted(e.frame for e in entries if e.folder == f) for f in {e.folder for e in entries}}
    assert by_drive == {writers.drive_folder("2011_09_26", 1): [1, 2, 3],
                        writers.drive_folder("2011_09_26", 2): list(range(1, 11))}  # fmt: skip
    with pytest.raises(ValueError, match="another date"):
        writers.write_kitti(_world(w=96, h=32), tmp_path, 3, drive=3)


def test_screen_rect_culling_changes_nothing_compared_to_testing_every_pixel(monkeypatch):
    from monodepth_ros.synthetic import render

    world = _world(200, 80, seed=8, moving_objects=True)
    for index in (0, 33):
        T = world.T_world_from_cam(index)
        boxes = world.boxes_near(index, T[0, 3] - 12.0, T[0, 3] + world.cfg.draw_distance_m)
        depth_culled, prim_culled, *_ = render.cast(T, world.K, 200, 80, boxes)

        def every_pixel(lo, hi, R_wc, o, K, *, width, height):
            n = lo.shape[0]
            return np.tile([0, width, 0, height], (n, 1)), np.ones(n, bool)

        with monkeypatch.context() as m:
            m.setattr(render, "box_screen_rects", every_pixel)
            depth_full, prim_full, *_ = render.cast(T, world.K, 200, 80, boxes)
        np.testing.assert_array_equal(depth_culled, depth_full)
        np.testing.assert_array_equal(prim_culled, prim_full)


def test_textures_tile_without_seams():
    from monodepth_ros.synthetic.textures import make_textures, periodic_noise

    def seam_ratio(img):
        """Wrap-around step over the largest step between neighbouring interior columns (joints included)."""
        steps = np.abs(np.diff(img, axis=1)).mean(0)
        return np.abs(img[:, 0] - img[:, -1]).mean() / steps.max()

    for name, tex in make_textures(0).items():
        img = tex.data[: tex.size * tex.size].reshape(tex.size, tex.size)
        assert seam_ratio(img) <= 1.05, name
        assert seam_ratio(img.T) <= 1.05, name
    # The check has teeth: cropping periodic noise breaks its periodicity and the seam shows.
    big = periodic_noise(np.random.default_rng(0), size=512)
    assert seam_ratio(big[:256, :256]) > 2.0


def test_rendering_in_worker_processes_gives_the_same_frames_in_order():
    world = _world(96, 32, seed=4, moving_objects=True)
    serial = list(writers.iter_frames(world, 6, ("left", "right"), workers=1))
    parallel = list(writers.iter_frames(world, 6, ("left", "right"), workers=2))
    assert [v[0].index for v in parallel] == list(range(6))
    for a, b in zip(serial, parallel):
        for fa, fb in zip(a, b):
            assert fa.camera == fb.camera
            assert fa.rgb.tobytes() == fb.rgb.tobytes() and fa.depth_m.tobytes() == fb.depth_m.tobytes()
            np.testing.assert_array_equal(fa.T_world_from_cam, fb.T_world_from_cam)
    with pytest.raises(ValueError, match="workers"):
        next(writers.iter_frames(world, 1, workers=0))
