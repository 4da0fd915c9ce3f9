"""KITTI odometry source: one or more sequences read through :mod:`monodepth_ros.datasets.kitti_odometry`.

Intrinsics come from ``calib.txt`` (``P0``..``P3``), time stamps from ``times.txt``, and speed (for velocity
supervision) from the GT poses when ``poses/NN.txt`` exists (sequences 00-10); without poses the speed is NaN
and the velocity term leaves those samples out. The same poses give each sample its known relative poses
(``T_gt``, for ``gt_pose_warp``). Grey cameras (0, 1) load as three equal channels.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Sequence

import numpy as np
from monodepth_training.datasets.base import MonoDataset

from monodepth_ros.backends.base import resize_rgb
from monodepth_ros.datasets import kitti
from monodepth_ros.datasets.kitti_odometry import OdometrySequence, load_sequence
from monodepth_ros.geometry import invert_pose, scale_intrinsics

# A frame key is (sequence, camera, frame index).
Key = tuple[str, int, int]
# Stereo partner of each camera in the odometry rig.
_PARTNER = {0: 1, 1: 0, 2: 3, 3: 2}


class KittiOdometryDataset(MonoDataset):
    """Frames of KITTI odometry sequences.

    Args:
        data_dir: the folder holding ``sequences/`` (and ``poses/``).
        sequences: sequence names, e.g. ``["03"]``.
        camera: 0 (left grey, the default), 1, 2 (left colour) or 3.
        frames: ``[first, last]`` frame indices (inclusive) used as targets *and* sources, e.g. ``[0, 699]``
            to hold out the rest; ``None`` = all frames. Applies to every listed sequence.
        cache_frames: keep each decoded frame, already shrunk to the training size, in memory (a 1242x375 JPEG
            decode + area resize is most of a sample's loading time; 700 frames at 320x96 take 65 MB per
            worker). The result is identical to resizing on every load.
        Other arguments: see :class:`MonoDataset`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        height: int,
        width: int,
        *,
        sequences: Sequence[str | int] = ("03",),
        camera: int = 0,
        frames: Sequence[int] | None = None,
        frame_offsets: Iterable[int] = (0, -1, 1),
        cache_frames: bool = True,
        **kwargs,
    ):
        super().__init__(height, width, frame_offsets=frame_offsets, **kwargs)
        if camera not in _PARTNER:
            raise ValueError(f"camera must be 0, 1, 2 or 3, got {camera!r}")
        if frames is not None:
            if len(frames) != 2 or int(frames[0]) < 0 or int(frames[1]) < int(frames[0]):
                raise ValueError(f"frames must be [first, last] with 0 <= first <= last, got {list(frames)}")
        if isinstance(sequences, (str, int)):
            sequences = [sequences]
        if not sequences:
            raise ValueError("sequences must name at least one sequence")
        self.camera = int(camera)
        self.cache_frames = bool(cache_frames)
        self._cache: dict[Key, np.ndarray] = {}
        self._file_sizes: dict[tuple[str, int], tuple[int, int]] = {}
        self.frame_range = None if frames is None else (int(frames[0]), int(frames[1]))
        self.seqs: dict[str, OdometrySequence] = {}
        for s in sequences:
            seq = load_sequence(data_dir, s)
            if self.camera not in seq.images:
                raise FileNotFoundError(f"sequence {seq.sequence} has no images for camera {self.camera} "
                                        f"(found cameras {sorted(seq.images)}) under {seq.root}")
            self.seqs[seq.sequence] = seq
        self._build_index()
        if not self.samples:
            raise ValueError(f"no usable sample in sequences {list(self.seqs)} (frames {frames}, offsets "
                             f"{list(self.frame_offsets[1:])})")

    def _in_range(self, seq: OdometrySequence, cam: int, i: int) -> bool:
        if self.frame_range is not None and not self.frame_range[0] <= i <= self.frame_range[1]:
            return False
        return i in seq.images.get(cam, {}) and i < seq.num_frames()

    # ------------------------------------------------------------------------------------ source contract
    def _target_keys(self) -> Iterable[Key]:
        return [(name, self.camera, i) for name, seq in self.seqs.items()
                for i in sorted(seq.images[self.camera]) if self._in_range(seq, self.camera, i)]

    def _neighbour(self, key: Key, offset: int) -> Key | None:
        name, cam, i = key
        return (name, cam, i + offset) if self._in_range(self.seqs[name], cam, i + offset) else None

    def _load_rgb(self, key: Key) -> np.ndarray:
        name, cam, i = key
        if not self.cache_frames:
            return kitti.load_rgb(self.seqs[name].images[cam][i])
        if key not in self._cache:
            # The resize the base class would apply (preprocess), done once.
            self._cache[key] = resize_rgb(kitti.load_rgb(self.seqs[name].images[cam][i]), self.height, self.width)
        return self._cache[key]

    def _intrinsics(self, key: Key) -> np.ndarray:
        K = self.seqs[key[0]].K(key[1])
        if not self.cache_frames:
            return K
        h, w = self._file_hw(key[0], key[1])
        return scale_intrinsics(K, self.width / w, self.height / h)

    def _file_hw(self, name: str, cam: int) -> tuple[int, int]:
        """(h, w) of the camera's image files (read once per camera; KITTI frames of a camera share a size)."""
        if (name, cam) not in self._file_sizes:
            first = self.seqs[name].images[cam][min(self.seqs[name].images[cam])]
            self._file_sizes[(name, cam)] = tuple(kitti.load_rgb(first).shape[:2])
        return self._file_sizes[(name, cam)]

    def _image_size(self, key: Key) -> tuple[int, int]:
        """Size of what ``_load_rgb`` returns: the training size when caching, else the file's."""
        if self.cache_frames:
            return self.height, self.width
        return self._file_hw(key[0], key[1])

    def _camera_id(self, key: Key) -> Hashable:
        return (key[0], key[1])

    def _stamp_s(self, key: Key) -> float:
        return float(self.seqs[key[0]].times_s[key[2]])

    def _speed_mps(self, key: Key) -> float:
        speeds = self.seqs[key[0]].speeds_mps
        return float("nan") if speeds is None else float(speeds[key[2]])

    def _pose(self, key: Key) -> np.ndarray | None:
        """GT ``T_world_from_cam`` of camera ``cam`` (the poses file is camera 0's; the rig is rigid, so camera k
        sits at ``T_world_from_cam0 @ inv(T_camk_from_cam0)``), or ``None`` for a sequence without GT."""
        name, cam, i = key
        seq = self.seqs[name]
        if seq.poses is None:
            return None
        return seq.poses[i] @ invert_pose(seq.T_cam_from_cam0(cam))

    def _stereo(self, key: Key) -> tuple[Key, np.ndarray] | None:
        name, cam, i = key
        other = _PARTNER[cam]
        seq = self.seqs[name]
        if other not in seq.P or not self._in_range(seq, other, i):
            return None
        # Points move from this camera into the partner by T_partner_from_cam0 @ T_cam0_from_cam.
        T = seq.T_cam_from_cam0(other) @ np.linalg.inv(seq.T_cam_from_cam0(cam))
        return (name, other, i), T
