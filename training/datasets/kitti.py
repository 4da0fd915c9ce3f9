"""KITTI raw source: drive folders + a split file (Eigen / Zhou lists, or the ones ``monodepth-synth`` writes).

Everything is read through :mod:`monodepth_ros.datasets.kitti`, so real KITTI and synthetic KITTI-style folders load
the same way. Intrinsics come from each date's ``calib_cam_to_cam.txt`` (``P_rect_02``/``P_rect_03``), speed
from oxts ``vf``, time stamps from ``image_0X/timestamps.txt``. Images may be PNG or JPEG.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
from monodepth_training.datasets.base import MonoDataset

from monodepth_ros.datasets import kitti

# A frame key is (drive folder, frame number, side).
Key = tuple[str, int, str]


class KittiDataset(MonoDataset):
    """Samples from a KITTI raw tree listed by a split file.

    Args:
        data_dir: root holding ``<date>/<date>_drive_<NNNN>_sync`` folders and the ``<date>`` calibration.
        split_file: path of a split file (``<folder> <frame> <l|r>`` per line).
        gt_dir: optional KITTI depth-benchmark root; GT is looked up as
            ``<gt_dir>/{train,val,}/<drive>/proj_depth/groundtruth/image_0X/<frame>.png``. By default it is
            looked up inside the drive folder (the layout ``monodepth-synth`` writes).
        img_ext: ``"png"``/``"jpg"`` to skip probing, or ``None`` to find whichever exists.
        Other arguments: see :class:`MonoDataset`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split_file: str | os.PathLike,
        height: int,
        width: int,
        *,
        frame_offsets: Iterable[int] = (0, -1, 1),
        gt_dir: str | os.PathLike | None = None,
        img_ext: str | None = None,
        **kwargs,
    ):
        super().__init__(height, width, frame_offsets=frame_offsets, **kwargs)
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"KITTI data_dir not found: {self.data_dir}")
        self.gt_dir = Path(gt_dir) if gt_dir is not None else None
        self.img_ext = img_ext
        self.entries = kitti.read_split(split_file)
        if not self.entries:
            raise ValueError(f"split file {split_file} lists no frames")
        # One directory listing per (drive, camera) answers every "does this neighbour exist" question.
        self._frames_on_disk: dict[tuple[str, int], dict[int, Path]] = {}
        self._build_index()
        self.num_skipped = len(self.entries) - len(self.samples)
        if not self.samples:
            raise ValueError(
                f"no usable sample in {split_file}: all {self.num_skipped} entries lack an image or a neighbour "
                f"at offsets {list(self.frame_offsets[1:])} under {self.data_dir}"
            )

    # ------------------------------------------------------------------------------------------- helpers
    def _drive_frames(self, folder: str, cam: int) -> dict[int, Path]:
        ck = (folder, cam)
        if ck not in self._frames_on_disk:
            img_dir = self.data_dir / folder / f"image_{cam:02d}" / "data"
            frames: dict[int, Path] = {}
            if img_dir.is_dir():
                exts = {f".{self.img_ext.lstrip('.')}"} if self.img_ext else {".png", ".jpg", ".jpeg"}
                for p in img_dir.iterdir():
                    if p.suffix.lower() in exts and p.stem.isdigit():
                        frames.setdefault(int(p.stem), p)
            self._frames_on_disk[ck] = frames
        return self._frames_on_disk[ck]

    @staticmethod
    def _entry(key: Key) -> kitti.SplitEntry:
        return kitti.SplitEntry(*key)

    # ------------------------------------------------------------------------------------ source contract
    def _target_keys(self) -> Iterable[Key]:
        # Entries whose own image is missing are dropped here and counted as skipped below.
        return [
            (e.folder, e.frame, e.side)
            for e in self.entries
            if e.frame in self._drive_frames(e.folder, kitti.side_to_cam(e.side))
        ]

    def _neighbour(self, key: Key, offset: int) -> Key | None:
        folder, frame, side = key
        frames = self._drive_frames(folder, kitti.side_to_cam(side))
        return (folder, frame + offset, side) if frame + offset in frames else None

    def _load_rgb(self, key: Key) -> np.ndarray:
        folder, frame, side = key
        return kitti.load_rgb(self._drive_frames(folder, kitti.side_to_cam(side))[frame])

    def _image_size(self, key: Key) -> tuple[int, int]:
        return _image_hw(str(self._drive_frames(key[0], kitti.side_to_cam(key[2]))[key[1]]))

    def _calib(self, key: Key) -> dict[str, np.ndarray]:
        return _read_calib(str(kitti.calib_dir_for(self.data_dir, self._entry(key)) / "calib_cam_to_cam.txt"))

    def _intrinsics(self, key: Key) -> np.ndarray:
        P = self._calib(key)[f"P_rect_{kitti.side_to_cam(key[2]):02d}"].reshape(3, 4)
        return P[:, :3].copy()

    def _camera_id(self, key: Key) -> Hashable:
        return (Path(key[0]).parts[0], key[2])

    def _stamp_s(self, key: Key) -> float:
        folder, frame, side = key
        path = self.data_dir / folder / f"image_{kitti.side_to_cam(side):02d}" / "timestamps.txt"
        stamps = _read_timestamps(str(path))
        return float(stamps[frame]) if frame < len(stamps) else float("nan")

    def _speed_mps(self, key: Key) -> float:
        path = self.data_dir / key[0] / "oxts" / "data" / f"{key[1]:010d}.txt"
        return kitti.oxts_speed_mps(kitti.read_oxts(path)) if path.is_file() else float("nan")

    def _load_depth_gt(self, key: Key) -> np.ndarray | None:
        folder, frame, side = key
        rel = Path("proj_depth") / "groundtruth" / f"image_{kitti.side_to_cam(side):02d}" / f"{frame:010d}.png"
        if self.gt_dir is None:
            candidates = [self.data_dir / folder / rel]
        else:
            drive = Path(folder).name
            candidates = [self.gt_dir / sub / drive / rel for sub in ("train", "val", "")]
        for c in candidates:
            if c.is_file():
                return kitti.read_depth_png(c)
        return None

    def _stereo(self, key: Key) -> tuple[Key, np.ndarray] | None:
        folder, frame, side = key
        other = "r" if side == "l" else "l"
        if frame not in self._drive_frames(folder, kitti.side_to_cam(other)):
            return None
        calib = self._calib(key)
        P_tgt = calib[f"P_rect_{kitti.side_to_cam(side):02d}"].reshape(3, 4)
        P_src = calib[f"P_rect_{kitti.side_to_cam(other):02d}"].reshape(3, 4)
        # Rectified cameras differ by a pure x translation: P = K [I | t] with t_x = P[0, 3] / fx, and a point
        # moves from target to source camera by t_src - t_tgt.
        T = np.eye(4)
        T[0, 3] = P_src[0, 3] / P_src[0, 0] - P_tgt[0, 3] / P_tgt[0, 0]
        return (folder, frame, other), T


# Per-process caches: calibration and time stamps are per drive, not per frame.
@lru_cache(maxsize=64)
def _read_calib(path: str) -> dict[str, np.ndarray]:
    return kitti.read_calib_file(path)


@lru_cache(maxsize=256)
def _read_timestamps(path: str) -> np.ndarray:
    return kitti.read_timestamps(path) if Path(path).is_file() else np.zeros(0)


@lru_cache(maxsize=256)
def _image_hw(path: str) -> tuple[int, int]:
    return tuple(kitti.load_rgb(path).shape[:2])
