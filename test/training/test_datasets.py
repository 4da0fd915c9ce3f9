"""Training datasets: sample layout, intrinsics at the training size, flip/jitter rules, neighbour skipping, and
the three sources (KITTI folders, rosbag2 in MCAP and sqlite3, the synthetic world) on data written here."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
from monodepth_training.augment import ColorJitter, JitterParams, apply_color_jitter, hflip_intrinsics
from monodepth_training.datasets import build_dataset
from monodepth_training.datasets.kitti import KittiDataset
from monodepth_training.datasets.rosbag import RosbagDataset
from monodepth_training.datasets.synthetic import SyntheticDataset

from monodepth_ros.bag.reader import BagError
from monodepth_ros.datasets import kitti
from monodepth_ros.geometry import scale_intrinsics
from monodepth_ros.synthetic import SynthConfig, SyntheticWorld
from monodepth_ros.synthetic.writers import write_bag, write_kitti

RAW_W, RAW_H = 160, 64  # what the fixtures render
W, H = 96, 32  # training size (different, so intrinsics must be rescaled)
NO_JITTER = ColorJitter(prob=0.0)


@pytest.fixture(scope="module")
def kitti_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("kitti")
    world = SyntheticWorld(SynthConfig(width=RAW_W, height=RAW_H, seed=3))
    write_kitti(world, out, n_frames=6, stereo=True)
    return out


def _split(kitti_dir, tmp_path, frames, side="l"):
    folder = kitti.read_split(kitti_dir / "splits" / "train_files.txt")[0].folder
    path = tmp_path / "split.txt"
    kitti.write_split(path, [kitti.SplitEntry(folder, f, side) for f in frames])
    return path, folder


def test_synthetic_sample_has_documented_keys_and_shapes():
    ds = SyntheticDataset(height=H, width=W, num_frames=5, seed=1, load_depth_gt=True, use_stereo=True)
    s = ds[0]
    assert set(s) == {"color", "color_aug", "K", "inv_K", "speed_mps", "dt_s", "index", "depth_gt", "T_stereo", "T_gt"}
    assert set(s["color"]) == set(s["color_aug"]) == {0, -1, 1, "s"}
    assert set(s["T_gt"]) == {-1, 1} and all(T.shape == (4, 4) and torch.isfinite(T).all() for T in s["T_gt"].values())
    for img in s["color"].values():
        assert img.shape == (3, H, W) and img.dtype == torch.float32
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert s["K"].shape == s["inv_K"].shape == (3, 3)
    assert torch.allclose(s["K"] @ s["inv_K"], torch.eye(3), atol=1e-5)
    assert s["depth_gt"].shape == (1, H, W) and float(s["depth_gt"].min()) >= 0.0  # sky (inf) -> 0
    assert s["T_stereo"][0, 3] == pytest.approx(-0.54)  # target is the left camera
    assert float(s["dt_s"][-1]) == pytest.approx(-0.1, abs=1e-5) and float(s["dt_s"][1]) == pytest.approx(0.1, abs=1e-5)
    assert np.isfinite(float(s["speed_mps"][0])) and float(s["speed_mps"][0]) > 0


def test_targets_without_neighbours_are_skipped():
    ds = SyntheticDataset(height=H, width=W, num_frames=10, frame_offsets=[0, -2, 1])
    assert len(ds) == 7 and ds.num_skipped == 3  # frames 0, 1 lack -2; frame 9 lacks +1
    with pytest.raises(ValueError, match="start with 0"):
        SyntheticDataset(height=H, width=W, num_frames=10, frame_offsets=[-1, 0, 1])


def test_kitti_intrinsics_come_from_calibration_scaled_to_training_size(kitti_dir, tmp_path):
    split, folder = _split(kitti_dir, tmp_path, [1, 2, 3])
    ds = KittiDataset(kitti_dir, split, height=H, width=W, load_depth_gt=True)
    K_raw = kitti.cam_intrinsics(kitti_dir / folder.split("/")[0], cam=2)
    expected = scale_intrinsics(K_raw, W / RAW_W, H / RAW_H)
    s = ds[0]
    np.testing.assert_allclose(s["K"].numpy(), expected, rtol=1e-6)
    assert not np.allclose(expected, K_raw)
    assert s["depth_gt"].shape == (1, RAW_H, RAW_W)  # GT keeps its own size unless depth_gt_size says otherwise
    np.testing.assert_allclose(ds.intrinsics_norm(), [[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1]], atol=0.02)


def test_kitti_reads_speed_time_and_stereo_baseline(kitti_dir, tmp_path):
    split, folder = _split(kitti_dir, tmp_path, [2, 3])
    ds = KittiDataset(kitti_dir, split, height=H, width=W, use_stereo=True)
    s = ds[0]
    oxts = kitti.read_oxts(kitti_dir / folder / "oxts" / "data" / "0000000002.txt")
    assert float(s["speed_mps"][0]) == pytest.approx(kitti.oxts_speed_mps(oxts), rel=1e-5)
    assert float(s["dt_s"][1]) == pytest.approx(0.1, abs=1e-4)
    assert float(s["T_stereo"][0, 3]) == pytest.approx(-0.54, abs=1e-3)  # left -> right camera
    right = KittiDataset(kitti_dir, _split(kitti_dir, tmp_path, [2], side="r")[0], height=H, width=W,
                         use_stereo=True)
    assert float(right[0]["T_stereo"][0, 3]) == pytest.approx(0.54, abs=1e-3)


def test_kitti_raw_drive_without_oxts_loads_with_unknown_speed(kitti_dir, tmp_path):
    # The real evaluation drive of ../shared/data/real has no oxts: it must load, with speed NaN (velocity off).
    import shutil

    copy = tmp_path / "no_oxts"
    shutil.copytree(kitti_dir, copy)
    split, folder = _split(copy, tmp_path, [2, 3])
    shutil.rmtree(copy / folder / "oxts")
    s = KittiDataset(copy, split, height=H, width=W)[0]
    assert torch.isnan(s["speed_mps"][0]) and s["color"][0].shape == (3, H, W)


def test_kitti_reads_jpeg_and_skips_missing_neighbours(kitti_dir, tmp_path):
    data = tmp_path / "jpg"
    shutil.copytree(kitti_dir, data)
    split, folder = _split(data, tmp_path, [0, 1, 2, 3, 4, 5])
    img_dir = data / folder / "image_02" / "data"
    for png in img_dir.glob("*.png"):
        cv2.imwrite(str(png.with_suffix(".jpg")), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 95])
        png.unlink()
    (img_dir / "0000000003.jpg").unlink()
    ds = KittiDataset(data, split, height=H, width=W)
    # 0 and 5 lack a neighbour, 3 is gone, 2 and 4 lost a neighbour: only frame 1 remains.
    assert [key[1] for key in ds.samples] == [1] and ds.num_skipped == 5
    assert ds[0]["color"][0].shape == (3, H, W)


def test_flip_mirrors_every_frame_and_the_principal_point(kitti_dir, tmp_path):
    split, _ = _split(kitti_dir, tmp_path, [2])
    plain = KittiDataset(kitti_dir, split, height=H, width=W, augment=False, use_stereo=True)[0]
    flipped = KittiDataset(kitti_dir, split, height=H, width=W, augment=True, flip_prob=1.0,
                           color_jitter=NO_JITTER, use_stereo=True)[0]
    for key in plain["color"]:
        assert torch.equal(flipped["color"][key], torch.flip(plain["color"][key], dims=[-1]))
    cx = float(plain["K"][0, 2])
    assert float(flipped["K"][0, 2]) == pytest.approx(W - 1 - cx)
    assert float(flipped["K"][0, 0]) == pytest.approx(float(plain["K"][0, 0]))
    # Mirrored, the right camera appears on the left: the baseline changes sign.
    assert float(flipped["T_stereo"][0, 3]) == pytest.approx(-float(plain["T_stereo"][0, 3]))
    np.testing.assert_allclose(hflip_intrinsics(hflip_intrinsics(plain["K"].numpy(), W), W), plain["K"].numpy())


def test_jitter_is_identical_across_frames_and_absent_from_loss_targets(kitti_dir, tmp_path):
    data = tmp_path / "same"
    shutil.copytree(kitti_dir, data)
    split, folder = _split(data, tmp_path, [2])
    img_dir = data / folder / "image_02" / "data"
    for f in (1, 3):  # neighbours become copies of the target, so identical jitter gives identical inputs
        shutil.copy(img_dir / "0000000002.png", img_dir / f"{f:010d}.png")
    strong = ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.2, prob=1.0)
    torch.manual_seed(0)
    aug = KittiDataset(data, split, height=H, width=W, augment=True, flip_prob=0.0, color_jitter=strong)
    plain = KittiDataset(data, split, height=H, width=W, augment=False)[0]
    changed = 0
    for _ in range(4):
        s = aug[0]
        assert torch.equal(s["color_aug"][-1], s["color_aug"][0]) and torch.equal(s["color_aug"][1], s["color_aug"][0])
        for key in plain["color"]:
            assert torch.equal(s["color"][key], plain["color"][key])  # targets untouched
        changed += not torch.allclose(s["color_aug"][0], s["color"][0], atol=1e-3)
    assert changed >= 3


def test_apply_color_jitter_applies_one_draw_to_a_stack_like_to_each_frame():
    rng = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 3, 8, 12, generator=rng)
    params = JitterParams(brightness=1.1, contrast=0.85, saturation=1.2, hue=0.05)
    stacked = apply_color_jitter(frames, params)
    one_by_one = torch.stack([apply_color_jitter(f, params) for f in frames])
    torch.testing.assert_close(stacked, one_by_one)
    assert not torch.allclose(stacked, frames, atol=1e-3)
    assert float(stacked.min()) >= 0.0 and float(stacked.max()) <= 1.0


def _write_padded_bag(path, storage, n=8, hz=20.0, width=40, height=24, pad=8):
    """A bag with rgb8 images whose rows carry ``pad`` junk bytes (step > 3*width), camera_info and odometry."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    Image, CameraInfo, ROI = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CameraInfo"], T[
        "sensor_msgs/msg/RegionOfInterest"]
    K = np.array([[30.0, 0, 19.5], [0, 31.0, 11.5], [0, 0, 1]])
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as w:
        c_img = w.add_connection("/cam/image", Image.__msgtype__, typestore=ts)
        c_info = w.add_connection("/cam/info", CameraInfo.__msgtype__, typestore=ts)
        for i in range(n):
            t_ns = 1_000_000_000 + int(i * 1e9 / hz)
            hdr = Header(stamp=Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id="cam")
            rows = np.concatenate([frames[i].reshape(height, -1), np.full((height, pad), 7, np.uint8)], axis=1)
            img = Image(header=hdr, height=height, width=width, encoding="rgb8", is_bigendian=0,
                        step=width * 3 + pad, data=rows.ravel())
            info = CameraInfo(header=hdr, height=height, width=width, distortion_model="plumb_bob",
                              d=np.zeros(5), k=K.ravel(), r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0,
                              binning_y=0, roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            w.write(c_img, t_ns, ts.serialize_cdr(img, Image.__msgtype__))
            w.write(c_info, t_ns, ts.serialize_cdr(info, CameraInfo.__msgtype__))
    return frames, K


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_rosbag_source_decodes_padded_rows_subsamples_by_time_and_scales_K(tmp_path, storage):
    frames, K = _write_padded_bag(tmp_path / "bag", storage)
    ds = RosbagDataset(tmp_path / "bag", height=24, width=40, image_topic="/cam/image", camera_info_topic="/cam/info",
                       min_dt_s=0.09, cache_dir=tmp_path / "cache")
    # 20 Hz with min_dt 0.09 s keeps every other frame: 0, 2, 4, 6 -> targets 2 and 4.
    assert ds.index["num_frames"] == 4 and len(ds) == 2
    s = ds[0]
    expected = torch.from_numpy(frames[2].transpose(2, 0, 1).astype(np.float32) / 255.0)
    torch.testing.assert_close(s["color"][0], expected)  # step padding dropped, rgb order kept
    torch.testing.assert_close(s["color"][-1], torch.from_numpy(frames[0].transpose(2, 0, 1) / 255.0).float())
    assert float(s["dt_s"][1]) == pytest.approx(0.1, abs=1e-6)
    np.testing.assert_allclose(s["K"].numpy(), K, rtol=1e-6)
    assert np.isnan(float(s["speed_mps"][0]))  # no odometry topic given
    half = RosbagDataset(tmp_path / "bag", height=12, width=20, image_topic="/cam/image",
                         camera_info_topic="/cam/info", cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(half[0]["K"].numpy(), scale_intrinsics(K, 0.5, 0.5), rtol=1e-6)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one cache per option set, reused on the next init


def test_rosbag_missing_topic_error_lists_the_bag_topics(tmp_path):
    _write_padded_bag(tmp_path / "bag", "mcap", n=3)
    with pytest.raises(BagError) as err:
        RosbagDataset(tmp_path / "bag", height=24, width=40, image_topic="/camera/image_raw",
                      camera_info_topic="/cam/info", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "/camera/image_raw" in msg and "/cam/image" in msg and "/cam/info" in msg


def test_rosbag_source_reads_synthetic_bag_with_speed_and_depth_gt(tmp_path):
    world = SyntheticWorld(SynthConfig(width=W, height=H, seed=2))
    write_bag(world, tmp_path / "synth_bag", n_frames=5, storage="sqlite3")
    ds = build_dataset({"source": "rosbag", "bag": str(tmp_path / "synth_bag"), "odom_topic": "/odom",
                        "depth_topic": "/camera/depth_gt", "cache_dir": str(tmp_path / "cache")},
                       height=H, width=W, frame_offsets=[0, -1, 1], load_depth_gt=True)
    s = ds[0]  # target = frame 1
    frame = world.render(1)
    np.testing.assert_allclose(s["K"].numpy(), frame.K, rtol=1e-5)
    assert float(s["speed_mps"][0]) == pytest.approx(frame.speed_mps, rel=1e-3)
    gt = s["depth_gt"][0].numpy()
    finite = np.isfinite(frame.depth_m)
    np.testing.assert_allclose(gt[finite], frame.depth_m[finite], rtol=1e-5)
    assert np.all(gt[~finite] == 0)
    expected_rgb = torch.from_numpy(frame.rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)
    torch.testing.assert_close(s["color"][0], expected_rgb)


def test_synthetic_samples_are_explained_by_ground_truth_depth_and_pose():
    """The sample's K, frame offsets and colours agree with the warp: GT depth + GT motion make each source
    look like the target far better than no motion does (pins the conventions the loss relies on)."""
    from monodepth_training.geometry import warp
    from monodepth_training.losses import photometric_error

    from monodepth_ros.geometry import invert_pose

    ds = SyntheticDataset(height=96, width=320, num_frames=8, seed=4)
    s, (index, _) = ds[3], ds.samples[3]
    depth = ds.world.render(index).depth_m.copy()
    depth[~np.isfinite(depth)] = 1e3  # sky: far away
    depth_t = torch.from_numpy(depth).float()[None, None]
    for off in (-1, 1):
        T_src_from_tgt = invert_pose(ds.world.T_world_from_cam(index + off)) @ ds.world.T_world_from_cam(index)
        warped = warp(s["color"][off][None], depth_t, s["K"][None], torch.from_numpy(T_src_from_tgt).float()[None])
        err_warped = float(photometric_error(warped, s["color"][0][None]).mean())
        err_static = float(photometric_error(s["color"][off][None], s["color"][0][None]).mean())
        assert err_warped < 0.5 * err_static, (off, err_warped, err_static)
