"""KITTI odometry source: the layout reader, poses -> speeds and relative poses, the training dataset, and the
mix of real frames with the synthetic world (depth GT on the synthetic part only)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from monodepth_training.datasets import build_dataset
from monodepth_training.datasets.kitti_odometry import KittiOdometryDataset
from torch.utils.data import default_collate

from monodepth_ros.datasets.kitti_odometry import load_sequence, read_odometry_times, relative_poses, speeds_from_poses
from monodepth_ros.evaluation.pose_eval import ate_snippets
from monodepth_ros.geometry import invert_pose, pose_from_axis_angle

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "kitti_odometry"
FX, CX, CY, BASELINE = 200.0, 63.5, 19.5, 0.54


def _trajectory(n: int, step_m: float = 1.0, yaw_per_frame: float = 0.02) -> np.ndarray:
    """T_world_from_cam (n, 4, 4): forward (+z) by step_m per frame while turning about the y axis."""
    poses = [np.eye(4)]
    step = pose_from_axis_angle(np.array([0.0, yaw_per_frame, 0.0]), np.array([0.0, 0.0, step_m]))
    for _ in range(n - 1):
        poses.append(poses[-1] @ step)
    return np.stack(poses)


def write_odometry(root: Path, n: int = 12, seq: str = "05", stereo: bool = True, with_poses: bool = True,
                   size: tuple[int, int] = (40, 128)) -> np.ndarray:
    """A tiny odometry layout: grey PNG frames, calib P0/P1 (0.54 m baseline), 10 Hz stamps, poses."""
    seq_dir = root / "sequences" / seq
    h, w = size
    rng = np.random.default_rng(0)
    for cam in (0, 1) if stereo else (0,):
        (seq_dir / f"image_{cam}").mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(seq_dir / f"image_{cam}" / f"{i:06d}.png"), rng.integers(0, 255, (h, w), np.uint8))
    P0 = [FX, 0, CX, 0, 0, FX, CY, 0, 0, 0, 1, 0]
    P1 = [FX, 0, CX, -FX * BASELINE, 0, FX, CY, 0, 0, 0, 1, 0]
    (seq_dir / "calib.txt").write_text(
        "P0: " + " ".join(f"{v:.6e}" for v in P0) + "\nP1: " + " ".join(f"{v:.6e}" for v in P1) + "\n")
    (seq_dir / "times.txt").write_text("".join(f"{0.1 * i:.6e}\n" for i in range(n)))
    poses = _trajectory(n)
    if with_poses:
        (root / "poses").mkdir(exist_ok=True)
        np.savetxt(root / "poses" / f"{seq}.txt", poses[:, :3, :].reshape(n, 12))
    return poses


def test_sequence_reader_reads_images_calibration_stamps_and_poses(tmp_path):
    poses = write_odometry(tmp_path)
    seq = load_sequence(tmp_path, 5)
    assert seq.sequence == "05" and seq.num_frames() == 12 and sorted(seq.images) == [0, 1]
    np.testing.assert_allclose(seq.K(0), [[FX, 0, CX], [0, FX, CY], [0, 0, 1]])
    np.testing.assert_allclose(seq.T_cam_from_cam0(1)[0, 3], -BASELINE)
    np.testing.assert_allclose(seq.poses, poses, atol=1e-12)
    np.testing.assert_allclose(seq.speeds_mps, 10.0, rtol=1e-3)  # 1 m per 0.1 s (chord of a gentle turn)


def test_speeds_are_central_differences_and_one_sided_at_the_ends():
    poses = np.tile(np.eye(4), (4, 1, 1))
    poses[:, 2, 3] = [0.0, 1.0, 3.0, 6.0]
    np.testing.assert_allclose(speeds_from_poses(poses, np.array([0.0, 0.1, 0.2, 0.3])), [10, 15, 25, 30])


def test_relative_poses_are_the_motion_between_consecutive_frames_for_ate():
    poses = _trajectory(9)
    rel = relative_poses(poses)
    np.testing.assert_allclose(rel[3], invert_pose(poses[3]) @ poses[4], atol=1e-12)
    assert ate_snippets(poses, rel)[0] < 1e-12  # GT motion gives zero ATE
    assert ate_snippets(poses, np.tile(np.eye(4), (8, 1, 1)))[0] > 0.5  # standing still does not


def test_sequence_reader_names_what_is_missing_or_inconsistent(tmp_path):
    with pytest.raises(FileNotFoundError, match="sequences/07"):
        load_sequence(tmp_path, "07")
    write_odometry(tmp_path, n=6)
    (tmp_path / "poses" / "05.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(ValueError, match="1 poses but .* 6 stamps"):
        load_sequence(tmp_path, "05")
    (tmp_path / "sequences" / "05" / "times.txt").write_text("0.0\n0.2\n0.1\n")
    with pytest.raises(ValueError, match="increase"):
        read_odometry_times(tmp_path / "sequences" / "05" / "times.txt")


def test_dataset_scales_K_gives_speed_and_dt_and_keeps_the_frame_range(tmp_path):
    write_odometry(tmp_path, n=12)
    ds = KittiOdometryDataset(tmp_path, 32, 96, sequences=["05"], frames=[0, 7])
    assert len(ds) == 6  # targets 1..6: frame 0 and 7 lack a neighbour inside [0, 7]
    s = ds[0]
    assert s["color"][0].shape == (3, 32, 96)
    # geometry.scale_intrinsics' pixel-centre convention: c' = (c + 0.5) * s - 0.5.
    np.testing.assert_allclose(s["K"].numpy()[0], [FX * 96 / 128, 0, (CX + 0.5) * 96 / 128 - 0.5], rtol=1e-6)
    np.testing.assert_allclose(s["K"].numpy()[1], [0, FX * 32 / 40, (CY + 0.5) * 32 / 40 - 0.5], rtol=1e-6)
    assert float(s["speed_mps"][0]) == pytest.approx(10.0, rel=1e-3)
    assert float(s["dt_s"][-1]) == pytest.approx(-0.1) and float(s["dt_s"][1]) == pytest.approx(0.1)
    # Grey frames load as three equal channels.
    assert torch.equal(s["color"][0][0], s["color"][0][1]) and torch.equal(s["color"][0][1], s["color"][0][2])


def test_cached_frames_equal_frames_resized_on_every_load(tmp_path):
    write_odometry(tmp_path, n=5)
    cached = KittiOdometryDataset(tmp_path, 32, 96, sequences=["05"], cache_frames=True)
    plain = KittiOdometryDataset(tmp_path, 32, 96, sequences=["05"], cache_frames=False)
    for i in range(len(cached)):
        a, b = cached[i], plain[i]
        torch.testing.assert_close(a["K"], b["K"])
        for off in (0, -1, 1):
            torch.testing.assert_close(a["color"][off], b["color"][off])


def test_stereo_partner_is_the_other_grey_camera_with_the_calibrated_baseline(tmp_path):
    write_odometry(tmp_path, n=5)
    s = KittiOdometryDataset(tmp_path, 32, 96, sequences=["05"], use_stereo=True)[0]
    np.testing.assert_allclose(s["T_stereo"].numpy()[:3, 3], [-BASELINE, 0, 0], atol=1e-6)
    write_odometry(tmp_path / "mono", n=5, stereo=False)
    with pytest.raises(ValueError, match="no usable sample"):
        KittiOdometryDataset(tmp_path / "mono", 32, 96, sequences=["05"], use_stereo=True)


def test_sequence_without_poses_has_nan_speed(tmp_path):
    write_odometry(tmp_path, n=5, with_poses=False)
    s = KittiOdometryDataset(tmp_path, 32, 96, sequences=["05"])[0]
    assert torch.isnan(s["speed_mps"][0])


def test_mix_collates_real_frames_without_gt_and_synthetic_frames_with_exact_gt(tmp_path):
    write_odometry(tmp_path, n=6)
    spec = {"source": "mix", "parts": [
        {"source": "kitti_odometry", "data_dir": str(tmp_path), "sequences": ["05"], "repeat": 2},
        {"source": "synthetic", "seed": 0, "num_frames": 5},
    ]}
    ds = build_dataset(spec, height=32, width=96, frame_offsets=[0, -1, 1], augment=False)
    assert len(ds) == 2 * 4 + 3
    real, synth = ds[5], ds[len(ds) - 1]
    assert ds.part_of(5) == (0, 1) and int(real["index"]) == 5
    assert real["depth_gt"].shape == synth["depth_gt"].shape == (1, 32, 96)
    assert float(real["depth_gt"].max()) == 0.0 and float(synth["depth_gt"].max()) > 1.0
    batch = default_collate([real, synth])
    assert batch["depth_gt"].shape == (2, 1, 32, 96)
    # The first part is the camera the model is meant for.
    np.testing.assert_allclose(ds.intrinsics_norm()[0, 0], FX / 128, rtol=1e-6)


def test_mix_rejects_bad_parts():
    with pytest.raises(ValueError, match="parts"):
        build_dataset({"source": "mix", "parts": []}, height=32, width=96)
    with pytest.raises(ValueError, match="repeat"):
        build_dataset({"source": "mix", "parts": [{"source": "synthetic", "num_frames": 5, "repeat": 0}]},
                      height=32, width=96)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real KITTI odometry frames not present at {REAL} (a user's clone)")
def test_real_sequence_03_gives_the_documented_camera_and_speed():
    seq = load_sequence(REAL, "03")
    assert seq.num_frames() == 801 and len(seq.images[0]) == 801
    assert seq.K(0)[0, 0] == pytest.approx(721.5377)
    # The README of the data: a median of 0.76 m between frames at 10 Hz.
    assert float(np.median(seq.speeds_mps)) * 0.1 == pytest.approx(0.76, abs=0.03)


def test_samples_carry_the_gt_relative_pose_of_each_source_frame_per_camera(tmp_path):
    """T_gt[off] = inv(T_world_from_src) @ T_world_from_tgt: for the forward-driving fixture the next frame's
    points sit 1 m closer (t_z = -1) and the previous frame's 1 m farther; camera 1 has the same motion seen
    from 0.54 m to the right (conjugated by the rig), and a sequence without poses gives all-NaN."""
    poses = write_odometry(tmp_path, n=6)
    ds = KittiOdometryDataset(tmp_path, 32, 96, sequences=["05"], frame_offsets=[0, -1, 1])
    s = ds[1]  # target frame 2
    np.testing.assert_allclose(s["T_gt"][1].numpy(), invert_pose(poses[3]) @ poses[2], atol=1e-6)
    np.testing.assert_allclose(s["T_gt"][-1].numpy(), invert_pose(poses[1]) @ poses[2], atol=1e-6)
    assert s["T_gt"][1][2, 3] == pytest.approx(-1.0, abs=0.01) and s["T_gt"][-1][2, 3] == pytest.approx(1.0, abs=0.01)
    right = KittiOdometryDataset(tmp_path, 32, 96, sequences=["05"], camera=1)[1]
    A = np.eye(4)
    A[0, 3] = -BASELINE  # camera-0 points -> camera-1 points
    np.testing.assert_allclose(right["T_gt"][1].numpy(), A @ (invert_pose(poses[3]) @ poses[2]) @ invert_pose(A),
                               atol=1e-6)
    assert not np.allclose(right["T_gt"][1].numpy(), s["T_gt"][1].numpy(), atol=1e-4)  # yawing: the rig matters
    write_odometry(tmp_path / "noposes", n=5, with_poses=False)
    s = KittiOdometryDataset(tmp_path / "noposes", 32, 96, sequences=["05"])[0]
    assert torch.isnan(s["T_gt"][1]).all() and torch.isnan(s["T_gt"][-1]).all()


def test_a_flipped_sample_carries_the_mirrored_gt_pose(tmp_path):
    poses = write_odometry(tmp_path, n=6)
    ds = KittiOdometryDataset(tmp_path, 32, 96, sequences=["05"], augment=True, flip_prob=1.0, color_jitter=None)
    F = np.diag([-1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(ds[1]["T_gt"][1].numpy(), F @ (invert_pose(poses[3]) @ poses[2]) @ F, atol=1e-6)
