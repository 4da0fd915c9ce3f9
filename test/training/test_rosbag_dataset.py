"""The rosbag source on imperfect bags: stamp jitter, undecodable frames, gaps in the recording, and the
interleaved validation split. The bags are real rosbag2 files written here with ``rosbags``."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from monodepth_training.datasets import build_dataset
from monodepth_training.datasets.rosbag import (
    KEPT,
    NOT_AFTER_PREVIOUS,
    RosbagDataset,
    segment_ids,
    subsample_by_time,
    subsample_step,
)

REPO = Path(__file__).resolve().parents[2]
KITTI_TIMES = REPO.parent / "shared/data/real/kitti_odometry/sequences/03/times.txt"
EPOCH_S = 1_317_384_588.0  # stamps of a real drive are seconds since 1970, where float rounding bites
H, W = 16, 24
K = np.array([[20.0, 0, 11.5], [0, 20.0, 7.5], [0, 0, 1]])


def _jittered_10hz(n=800, jitter_s=0.004, seed=0):
    """Header stamps of a 10 Hz camera stamped on the host: +-4 ms of scheduling jitter."""
    rng = np.random.default_rng(seed)
    return EPOCH_S + 0.1 * np.arange(n) + rng.uniform(-jitter_s, jitter_s, n)


def _plain_rule_kept(stamps, min_dt_s):
    """The rule this module replaced: keep a frame unless ``t - last_kept < min_dt_s``."""
    last, kept = -np.inf, 0
    for t in stamps:
        if t - last >= min_dt_s:
            kept, last = kept + 1, t
    return kept


@pytest.mark.parametrize("jitter_s", [0.0, 0.004])
def test_min_dt_keeps_every_frame_of_a_10hz_stream_at_0_1_and_every_second_at_0_2(jitter_s):
    stamps = _jittered_10hz(jitter_s=jitter_s)
    np.testing.assert_array_equal(np.flatnonzero(subsample_by_time(stamps, 0.1) == KEPT), np.arange(800))
    np.testing.assert_array_equal(np.flatnonzero(subsample_by_time(stamps, 0.2) == KEPT), np.arange(0, 800, 2))
    # The same stamps through the plain comparison lose frames (0.1 s and 0.2 s gaps mixed): what this pins.
    assert _plain_rule_kept(stamps, 0.1) < 700


@pytest.mark.skipif(not KITTI_TIMES.is_file(), reason=f"real KITTI odometry stamps not found at {KITTI_TIMES}")
def test_min_dt_0_1_keeps_all_801_frames_of_kitti_odometry_sequence_03():
    stamps = EPOCH_S + np.loadtxt(KITTI_TIMES)
    assert len(stamps) == 801
    assert int(np.sum(subsample_by_time(stamps, 0.1) == KEPT)) == 801
    assert int(np.sum(subsample_by_time(stamps, 0.2) == KEPT)) == 401


def test_min_dt_rounds_to_whole_frame_periods_within_the_tolerance():
    assert subsample_step(0.0, 0.1) == 0
    assert subsample_step(0.1, 0.1) == 1
    assert subsample_step(0.12, 0.1) == 1  # 0.02 s short = 0.2 period: still "0.12 s apart"
    assert subsample_step(0.13, 0.1) == 2
    assert subsample_step(0.1, 1 / 30) == 3  # 30 Hz camera, 0.1 s -> every 3rd frame
    assert subsample_step(0.1, float("nan")) == 0  # a lone frame has no period


def test_repeated_stamps_are_dropped_and_a_recording_gap_restarts_the_subsampling():
    fate = subsample_by_time(np.array([0.0, 0.1, 0.1, 0.2]), 0.1, period_s=0.1)
    np.testing.assert_array_equal(fate, [KEPT, KEPT, NOT_AFTER_PREVIOUS, KEPT])
    fate = subsample_by_time(np.array([0.0, 0.1, 0.2, 0.3, 2.35, 2.45, 2.55]), 0.2, period_s=0.1)
    # 0.0 and 0.2 kept; 2.35 is the first frame after the gap, then 2.55 two periods later.
    np.testing.assert_array_equal(np.flatnonzero(fate == KEPT), [0, 2, 4, 6])


def test_segments_break_at_gaps_and_at_block_edges():
    stamps = np.array([0.0, 0.1, 0.2, 2.2, 2.3, 2.4, 2.5])
    np.testing.assert_array_equal(segment_ids(stamps, 0.15), [0, 0, 0, 1, 1, 1, 1])
    blocks = np.array([0, 0, 0, 0, 1, 1, 0], bool)
    np.testing.assert_array_equal(segment_ids(stamps, 0.15, blocks), [0, 0, 0, 1, 2, 2, 3])
    np.testing.assert_array_equal(segment_ids(stamps, float("inf")), np.zeros(7))


# ----------------------------------------------------------------------------------------- bag writing
def _write_bag(path, stamps_s, *, damage=None, compressed=False, storage="mcap", log_s=None):
    """A rosbag2 with one camera (Image rgb8, or CompressedImage JPEG) + camera_info at the given header stamps,
    recorded at ``log_s`` (default: the stamps).

    ``damage`` maps a frame index to ``"bad_jpeg"`` (bytes that are no JPEG) or ``"short_image"`` (data shorter
    than step * height, as a truncated driver buffer). Returns the frames (N, H, W, 3) uint8 as written.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    damage = damage or {}
    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    Image, Compressed, CameraInfo = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CompressedImage"], T[
        "sensor_msgs/msg/CameraInfo"]
    ROI = T["sensor_msgs/msg/RegionOfInterest"]
    # Smooth frames (a gradient that moves), so JPEG keeps them recognisable.
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.stack([np.stack([(xx * 10 + 3 * i) % 256, (yy * 15 + i) % 256, np.full_like(xx, (7 * i) % 256)],
                                axis=-1) for i in range(len(stamps_s))]).astype(np.uint8)
    img_type = Compressed if compressed else Image
    with Writer(path, version=9, storage_plugin={"mcap": StoragePlugin.MCAP,
                                                  "sqlite3": StoragePlugin.SQLITE3}[storage]) as w:
        c_img = w.add_connection("/cam/image", img_type.__msgtype__, typestore=ts)
        c_info = w.add_connection("/cam/info", CameraInfo.__msgtype__, typestore=ts)
        for i, t in enumerate(stamps_s):
            t_ns = int(round(t * 1e9))
            hdr = Header(stamp=Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id="cam")
            if compressed:
                _, jpg = cv2.imencode(".jpg", cv2.cvtColor(frames[i], cv2.COLOR_RGB2BGR))
                data = np.frombuffer(b"\xff\xd8 not a picture " * 8, np.uint8) if damage.get(i) == "bad_jpeg" else jpg
                msg = Compressed(header=hdr, format="jpeg", data=np.asarray(data, np.uint8).ravel())
            else:
                data = frames[i].ravel()
                if damage.get(i) == "short_image":
                    data = data[: len(data) // 2]
                msg = Image(header=hdr, height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3, data=data)
            info = CameraInfo(header=hdr, height=H, width=W, distortion_model="plumb_bob", d=np.zeros(5),
                              k=K.ravel(), r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0, binning_y=0,
                              roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            log_ns = t_ns if log_s is None else int(round(log_s[i] * 1e9))
            w.write(c_img, log_ns, ts.serialize_cdr(msg, img_type.__msgtype__))
            w.write(c_info, log_ns, ts.serialize_cdr(info, CameraInfo.__msgtype__))
    return frames


def _dataset(bag, cache, **kw):
    return RosbagDataset(bag, height=H, width=W, image_topic="/cam/image", camera_info_topic="/cam/info",
                         cache_dir=cache, **kw)


def _sample_stamps(ds) -> list[set[float]]:
    """The stamps (rounded to 1 ms) of every frame each sample uses, read back through ``__getitem__``."""
    out = []
    for i in range(len(ds)):
        s = ds[i]
        t0 = ds.stamps_s[ds.samples[i]]
        out.append({round(float(t0) + float(s["dt_s"][o]), 3) for o in ds.frame_offsets})
    return out


# 30 frames at 10 Hz; frame 7 is damaged; 2 s of the recording are missing before frame 20.
DEFECT_STAMPS = _jittered_10hz(30, jitter_s=0.002) + np.where(np.arange(30) >= 20, 2.0, 0.0)


@pytest.mark.parametrize("compressed, damage", [(True, "bad_jpeg"), (False, "short_image")])
def test_undecodable_frame_and_stamp_gap_are_skipped_counted_and_warned_once(tmp_path, caplog, compressed, damage):
    frames = _write_bag(tmp_path / "bag", DEFECT_STAMPS, damage={7: damage}, compressed=compressed)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        ds = _dataset(tmp_path / "bag", tmp_path / "cache", min_dt_s=0.1)
    msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(msgs) == 1, msgs
    assert "1 of 30 frames could not be decoded" in msgs[0] and "1 gap(s)" in msgs[0] and "2.10 s long" in msgs[0]
    assert f"stamp {DEFECT_STAMPS[7]:.6f}" in msgs[0]  # the first bad frame, so a user can find it
    assert "kept 29 of 30 frames" in caplog.text and "1 undecodable" in caplog.text

    assert ds.num_undecodable == 1 and ds.num_gaps == 1
    assert ds.index["num_frames"] == 29 and ds.index["dropped"]["undecodable"] == 1
    # Segments 0-6 | 8-19 | 20-29 give targets 1-5, 9-18, 21-28; 6, 8, 19 and 20 lose a neighbour to a hole.
    assert len(ds) == 5 + 10 + 8 and ds.num_skipped_at_gaps == 4
    used = _sample_stamps(ds)
    assert all(max(s) - min(s) < 0.25 for s in used)  # no sample warps across the gap or the skipped frame
    assert round(DEFECT_STAMPS[7], 3) not in set().union(*used)
    # The kept frames are the decoded pixels in stamp order, with the damaged one cut out of the cache.
    for key, i in [(0, 0), (6, 6), (7, 8), (28, 29)]:
        err = np.abs(ds.frames[key].astype(int)[None] - frames).mean(axis=(1, 2, 3))
        assert int(np.argmin(err)) == i  # JPEG is lossy: the nearest written frame
        assert err[i] == 0 or compressed

    # From the cache: same counts, and the user is told again.
    with pytest.warns(UserWarning, match="could not be decoded"):
        again = _dataset(tmp_path / "bag", tmp_path / "cache", min_dt_s=0.1)
    assert len(again) == len(ds) and again.cache_path == ds.cache_path


def test_frames_recorded_out_of_stamp_order_are_indexed_in_stamp_order(tmp_path):
    stamps = _jittered_10hz(12)
    order = np.array([0, 1, 3, 2, 4, 5, 6, 8, 7, 9, 10, 11])
    frames = _write_bag(tmp_path / "bag", stamps[order], storage="sqlite3", log_s=stamps)
    ds = _dataset(tmp_path / "bag", tmp_path / "cache")
    assert np.all(np.diff(ds.stamps_s) > 0) and len(ds) == 10
    for key in range(12):
        np.testing.assert_array_equal(ds.frames[key], frames[int(np.flatnonzero(order == key)[0])])


# ------------------------------------------------------------------------------------- interleaved split
@pytest.mark.parametrize("offsets", [[0, -1, 1], [0, -2, -1, 1, 2]])
def test_interleaved_split_shares_no_frame_and_val_covers_the_whole_drive(tmp_path, offsets):
    stamps = _jittered_10hz(450, jitter_s=0.002)  # a 45 s drive
    _write_bag(tmp_path / "bag", stamps)
    common = dict(min_dt_s=0.1, val_every_s=10.0, val_chunk_s=1.0, frame_offsets=offsets)
    train = _dataset(tmp_path / "bag", tmp_path / "cache", split="train", **common)
    val = _dataset(tmp_path / "bag", tmp_path / "cache", split="val", **common)
    train_frames, val_frames = set().union(*_sample_stamps(train)), set().union(*_sample_stamps(val))
    assert not train_frames & val_frames
    val_targets = val.stamps_s[val.samples]
    # One chunk in each 10 s window, the first and the last included.
    windows = np.unique(((val_targets - stamps[0]) // 10).astype(int))
    np.testing.assert_array_equal(windows, [0, 1, 2, 3, 4])
    assert 0.07 < len(val) / len(train) < 0.13
    # Per chunk, training loses only the frames val samples reach (reach each side) and the targets that would
    # reach those (reach more each side); the drive's two ends lose reach targets each.
    reach = max(abs(o) for o in offsets)
    assert len(train) + len(val) >= 450 - 5 * 4 * reach - 2 * reach


def test_rosbag_template_trains_and_validates_on_one_bag_with_metric_scale(tmp_path):
    cfg = yaml.safe_load((REPO / "config/train/rosbag.yaml").read_text())
    assert cfg["model"]["scale_policy"] == "auto"
    train_spec, val_spec = cfg["data"]["train"], cfg["data"]["val"]
    assert train_spec["bag"] == val_spec["bag"]
    assert (train_spec["split"], val_spec["split"]) == ("train", "val")
    stamps = _jittered_10hz(250)
    _write_bag(tmp_path / "bag", stamps)
    shared = dict(height=H, width=W, frame_offsets=cfg["data"]["frame_offsets"])
    specs = []
    for spec in (train_spec, val_spec):
        spec = dict(spec, bag=str(tmp_path / "bag"), image_topic="/cam/image", camera_info_topic="/cam/info",
                    cache_dir=str(tmp_path / "cache"), depth_topic=None, odom_topic=None)
        specs.append(build_dataset(spec, **shared))
    train, val = specs
    assert len(val) > 0 and len(train) > 5 * len(val)
    assert not set().union(*_sample_stamps(train)) & set().union(*_sample_stamps(val))


def test_odometry_poses_and_the_camera_mount_give_each_sample_the_exact_camera_motion(tmp_path):
    """A synthetic drive recorded as a bag (/odom = the exact vehicle poses in base_link, the camera 1.65 m up,
    level): with the mount from the world's URDF-style numbers, every sample's T_gt equals the synthetic world's
    exact camera motion; without a mount the bag gives no known poses, and a mount without odometry poses is an
    error naming the topic."""
    from monodepth_training.datasets.synthetic import SyntheticDataset

    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld
    from monodepth_ros.synthetic.writers import write_bag

    world = SyntheticWorld(SynthConfig(width=96, height=32, seed=4))
    write_bag(world, tmp_path / "bag", 6)
    mount = {"xyz": [0.0, 0.0, world.cfg.camera_height_m], "rpy": [0.0, 0.0, 0.0]}
    common = dict(height=32, width=96, image_topic="/camera/image_raw", camera_info_topic="/camera/camera_info",
                  cache_dir=str(tmp_path / "cache"), odom_topic="/odom")
    bag = RosbagDataset(tmp_path / "bag", camera_mount=mount, **common)
    exact = SyntheticDataset(32, 96, num_frames=6, seed=4)
    assert len(bag) == len(exact) == 4
    for i in range(4):
        for off in (-1, 1):
            np.testing.assert_allclose(bag[i]["T_gt"][off].numpy(), exact[i]["T_gt"][off].numpy(), atol=1e-4)
    assert abs(float(bag[1]["T_gt"][1][2, 3])) > 0.1  # the camera moved forward
    plain = RosbagDataset(tmp_path / "bag", **common)
    assert torch.isnan(plain[0]["T_gt"][1]).all()
    with pytest.raises(ValueError, match="camera_mount needs odometry poses"):
        RosbagDataset(tmp_path / "bag", camera_mount=mount, **dict(common, odom_topic=None))
    with pytest.raises(ValueError, match="xyz and rpy"):
        RosbagDataset(tmp_path / "bag", camera_mount={"xyz": [0, 0]}, **common)
