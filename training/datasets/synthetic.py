"""Synthetic source rendered on the fly from :class:`monodepth_ros.synthetic.SyntheticWorld`.

The world is deterministic by frame index, so a dataset is fully described by its config (seed, size,
frame range): nothing is written to disk, and a different ``seed`` gives a held-out world for validation.
Intrinsics, time stamps, speed and depth GT all come from the rendered :class:`Frame`. For a synthetic drive
written to disk in the KITTI layout (``monodepth-synth``), use :class:`KittiDataset` instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np
from monodepth_training.datasets.base import MonoDataset


class SyntheticDataset(MonoDataset):
    """Frames ``start_index .. start_index + num_frames - 1`` of one synthetic world.

    The world renders directly at the training size (``height`` x ``width``), so no resize happens.

    Args:
        num_frames: length of the sequence (targets without both neighbours inside it are skipped).
        seed: world seed (a different seed is a different, held-out world).
        start_index: first frame index.
        world: extra :class:`monodepth_ros.synthetic.SynthConfig` fields (``speed_mps``, ``moving_objects``...).
        cache_frames: rendered frames kept per worker process (each frame is used by up to 3 samples).
        Other arguments: see :class:`MonoDataset`.
    """

    def __init__(
        self,
        height: int,
        width: int,
        *,
        num_frames: int = 200,
        seed: int = 0,
        start_index: int = 0,
        frame_offsets: Iterable[int] = (0, -1, 1),
        world: dict[str, Any] | None = None,
        cache_frames: int = 16,
        **kwargs,
    ):
        super().__init__(height, width, frame_offsets=frame_offsets, **kwargs)
        from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        world = dict(world or {})
        for reserved in ("width", "height", "seed"):
            if reserved in world:
                raise ValueError(f"set {reserved!r} on the dataset, not inside 'world'")
        self.cfg = SynthConfig(width=self.width, height=self.height, seed=int(seed), **world)
        self.world = SyntheticWorld(self.cfg)
        self.num_frames = int(num_frames)
        self.start_index = int(start_index)
        self.cache_frames = int(cache_frames)
        self._cache: OrderedDict[tuple[int, str], Any] = OrderedDict()
        self._build_index()
        if not self.samples:
            raise ValueError(
                f"{num_frames} frames cannot hold a target with neighbours at {list(self.frame_offsets[1:])}"
            )

    def _frame(self, index: int, camera: str = "left"):
        key = (index, camera)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        frame = self.world.render(index, camera=camera)
        self._cache[key] = frame
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)
        return frame

    # Keys are (frame index, camera).
    def _target_keys(self):
        return [(i, "left") for i in range(self.start_index, self.start_index + self.num_frames)]

    def _neighbour(self, key, offset):
        i = key[0] + offset
        return (i, key[1]) if self.start_index <= i < self.start_index + self.num_frames else None

    def _load_rgb(self, key) -> np.ndarray:
        return self._frame(*key).rgb

    def _image_size(self, key) -> tuple[int, int]:
        return self.cfg.height, self.cfg.width

    def _intrinsics(self, key) -> np.ndarray:
        return self._frame(*key).K

    def _stamp_s(self, key) -> float:
        return float(self._frame(*key).stamp_s)

    def _speed_mps(self, key) -> float:
        return float(self._frame(*key).speed_mps)

    def _pose(self, key) -> np.ndarray:
        return self._frame(*key).T_world_from_cam  # exact

    def _load_depth_gt(self, key) -> np.ndarray:
        return self._frame(*key).depth_m  # inf (sky) becomes 0 = invalid in the base class

    def _stereo(self, key):
        baseline_m = float(getattr(self.cfg, "stereo_baseline_m", 0.0) or 0.0)
        if baseline_m <= 0:
            return None
        # The right camera sits +baseline along x, so target (left) points move by -baseline into it.
        T = np.eye(4)
        T[0, 3] = -baseline_m
        other = "right" if key[1] == "left" else "left"
        if other == "left":
            T[0, 3] = baseline_m
        return (key[0], other), T
