"""Reader for the KITTI odometry layout: how a sequence's images, calibration, time stamps and GT poses are read.

Layout (``<root>`` = the folder holding ``sequences/`` and, for sequences 00-10, ``poses/``)::

    <root>/sequences/NN/image_0/000000.png|jpg ...   left grey camera   (image_1 right grey,
    <root>/sequences/NN/calib.txt                     P0: .. P3: ..       image_2/3 the colour pair)
    <root>/sequences/NN/times.txt                     seconds since the sequence start, one per frame
    <root>/poses/NN.txt                               T_world_from_cam0, 12 numbers (3x4 row-major) per line

Poses follow ``geometry``'s naming (``T_<to>_from_<from>``), camera frame x right, y down, z forward, metres.
Everything here is NumPy; the trainer's dataset and the real-data benchmark both read through this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monodepth_ros.datasets.kitti import read_calib_file, read_poses_file
from monodepth_ros.geometry import invert_pose

__all__ = [
    "CAMERAS",
    "OdometrySequence",
    "load_sequence",
    "read_odometry_times",
    "speeds_from_poses",
    "relative_poses",
]

# Camera index -> image folder. 0/1 = grey stereo pair, 2/3 = colour stereo pair (KITTI odometry devkit).
CAMERAS = {0: "image_0", 1: "image_1", 2: "image_2", 3: "image_3"}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_odometry_times(path: str | os.PathLike) -> np.ndarray:
    """``times.txt`` (one float, seconds, per line) -> (N,) float64. Raises naming the file on bad content."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"times file not found: {path}")
    try:
        times = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as e:
        raise ValueError(f"{path}: not one number per line ({e})") from e
    if times.ndim != 1:
        raise ValueError(f"{path}: expected one number per line, got shape {times.shape}")
    if times.size > 1 and not np.all(np.diff(times) > 0):
        raise ValueError(f"{path}: time stamps must increase strictly")
    return times


def speeds_from_poses(poses: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Per-frame speed (N,) in m/s from camera poses ``T_world_from_cam`` (N, 4, 4) and stamps (N,).

    Central difference ``|p[i+1] - p[i-1]| / (t[i+1] - t[i-1])`` inside, one-sided at the two ends, so a
    frame's speed is the mean over the two intervals around it (what the velocity loss averages again).
    """
    poses = np.asarray(poses, dtype=np.float64)
    times_s = np.asarray(times_s, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ValueError(f"poses must be (N, 4, 4), got {poses.shape}")
    if times_s.shape != (poses.shape[0],):
        raise ValueError(f"need one time stamp per pose: {times_s.shape} vs {poses.shape[0]} poses")
    n = poses.shape[0]
    if n < 2:
        return np.full(n, np.nan)
    p = poses[:, :3, 3]
    lo = np.maximum(np.arange(n) - 1, 0)
    hi = np.minimum(np.arange(n) + 1, n - 1)
    return np.linalg.norm(p[hi] - p[lo], axis=1) / (times_s[hi] - times_s[lo])


def relative_poses(poses: np.ndarray) -> np.ndarray:
    """``T_world_from_cam`` (N, 4, 4) -> ``T_{i}_from_{i+1}`` (N - 1, 4, 4), the motion between consecutive
    frames in the convention :func:`monodepth_ros.evaluation.pose_eval.ate_snippets` takes."""
    poses = np.asarray(poses, dtype=np.float64)
    return invert_pose(poses[:-1]) @ poses[1:]


@dataclass
class OdometrySequence:
    """One odometry sequence on disk.

    ``images[cam]`` maps frame index -> image path for every camera folder present; ``P[cam]`` is the (3, 4)
    rectified projection; ``times_s`` (N,) and ``poses`` (N, 4, 4) or ``None`` (sequences 11-21 have no GT).
    """

    root: Path
    sequence: str
    images: dict[int, dict[int, Path]]
    P: dict[int, np.ndarray]
    times_s: np.ndarray
    poses: np.ndarray | None = None
    speeds_mps: np.ndarray | None = field(default=None, repr=False)

    def K(self, cam: int) -> np.ndarray:
        """(3, 3) pixel intrinsics of camera ``cam``."""
        return self.P[cam][:, :3].copy()

    def T_cam_from_cam0(self, cam: int) -> np.ndarray:
        """(4, 4) pose of rectified camera ``cam`` relative to camera 0 (a pure x translation, ``P = K[I|t]``)."""
        T = np.eye(4)
        T[0, 3] = self.P[cam][0, 3] / self.P[cam][0, 0]
        return T

    def num_frames(self) -> int:
        return int(self.times_s.shape[0])


def _list_images(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    frames: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.suffix.lower() in _IMAGE_SUFFIXES and p.stem.isdigit():
            frames.setdefault(int(p.stem), p)
    return frames


def load_sequence(root: str | os.PathLike, sequence: str | int) -> OdometrySequence:
    """Read a sequence's listing, calibration, stamps and (if present) GT poses; images stay on disk.

    Raises ``FileNotFoundError`` naming the missing folder or file, ``ValueError`` when the files disagree
    (e.g. a poses file with a different number of lines than ``times.txt``).
    """
    root = Path(root)
    seq = f"{int(sequence):02d}" if str(sequence).isdigit() else str(sequence)
    seq_dir = root / "sequences" / seq
    if not seq_dir.is_dir():
        raise FileNotFoundError(f"KITTI odometry sequence folder not found: {seq_dir}")
    calib = read_calib_file(seq_dir / "calib.txt")
    P = {}
    for cam in CAMERAS:
        if f"P{cam}" in calib:
            if calib[f"P{cam}"].size != 12:
                raise ValueError(f"{seq_dir / 'calib.txt'}: P{cam} needs 12 numbers, got {calib[f'P{cam}'].size}")
            P[cam] = calib[f"P{cam}"].reshape(3, 4)
    images = {cam: _list_images(seq_dir / folder) for cam, folder in CAMERAS.items()}
    images = {cam: frames for cam, frames in images.items() if frames}
    if not images:
        raise FileNotFoundError(f"no image_0..image_3 folder with images under {seq_dir}")
    for cam in images:
        if cam not in P:
            raise ValueError(f"{seq_dir / 'calib.txt'} has no P{cam} for the images in {CAMERAS[cam]}/")
    times = read_odometry_times(seq_dir / "times.txt")
    poses = None
    speeds = None
    poses_path = root / "poses" / f"{seq}.txt"
    if poses_path.is_file():
        poses = read_poses_file(poses_path)
        if poses.shape[0] != times.shape[0]:
            raise ValueError(f"{poses_path} has {poses.shape[0]} poses but {seq_dir / 'times.txt'} has "
                             f"{times.shape[0]} stamps")
        speeds = speeds_from_poses(poses, times)
    return OdometrySequence(root=root, sequence=seq, images=images, P=P, times_s=times, poses=poses,
                            speeds_mps=speeds)
