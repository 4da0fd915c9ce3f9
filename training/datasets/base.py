"""The one base dataset every training source (KITTI folders, rosbag2, synthetic world) plugs into.

A source only says how to read one frame (RGB, intrinsics, time stamp, speed, optional depth GT and stereo
partner) and which frame sits at a given offset from another. The base class does everything that must be
identical across sources: skipping targets whose neighbours are missing, resizing to the training size with
the matching intrinsics, flip + colour jitter, and the sample layout the LightningModule consumes.

Sample layout (after default collation a leading batch dimension B is added to every tensor):
- ``color``     {offset: (3, H, W) float32 RGB in [0, 1]} loss targets, never jittered;
- ``color_aug`` {offset: (3, H, W)} network inputs, jittered identically for all frames of the sample;
  offsets are the integers of ``frame_offsets`` (0 = target); a stereo partner, if used, has the key ``"s"``;
- ``K``, ``inv_K`` (3, 3) float32 pixel intrinsics at the training size H x W;
- ``speed_mps`` {offset: () float32} speed at each frame (NaN if the source has none);
- ``dt_s``      {offset: () float32} time of that frame minus the target's (NaN if unknown);
- ``T_gt``      {offset: (4, 4) float32} the known ``T_src_from_tgt`` of each temporal source frame (GT poses:
  KITTI odometry, the synthetic world), all-NaN where the source does not know its poses;
- ``T_stereo``  (4, 4) float32 ``T_src_from_tgt`` of the stereo partner (only with ``use_stereo``);
- ``depth_gt``  (1, Hg, Wg) float32 metres, 0 = invalid (only with ``load_depth_gt``);
- ``index``     () int64, the sample index.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from monodepth_training.augment import (
    ColorJitter,
    apply_color_jitter,
    hflip_images,
    hflip_intrinsics,
    hflip_pose,
    sample_jitter_params,
)
from torch.utils.data import Dataset

from monodepth_ros.backends.base import preprocess
from monodepth_ros.geometry import invert_pose, normalize_intrinsics, scale_intrinsics, validate_intrinsics

STEREO_KEY = "s"
FrameKey = Hashable


def parse_frame_offsets(frame_offsets: Iterable[int]) -> tuple[int, ...]:
    """Validate frame offsets: integers, unique, starting with 0 (the target)."""
    offsets = tuple(int(o) for o in frame_offsets)
    if not offsets or offsets[0] != 0:
        raise ValueError(f"frame_offsets must start with 0 (the target frame), got {list(offsets)}")
    if len(set(offsets)) != len(offsets):
        raise ValueError(f"frame_offsets must be unique, got {list(offsets)}")
    return offsets


def _as_jitter(color_jitter: ColorJitter | dict | None) -> ColorJitter | None:
    if color_jitter is None or isinstance(color_jitter, ColorJitter):
        return color_jitter
    if isinstance(color_jitter, dict):
        return ColorJitter(**color_jitter)
    raise TypeError(f"color_jitter must be a ColorJitter, a dict or None, got {type(color_jitter).__name__}")


class MonoDataset(Dataset, abc.ABC):
    """Base dataset: subclasses implement the ``_``-prefixed frame accessors and call :meth:`_build_index`.

    Args:
        height, width: training size in pixels (multiples of 32 for the networks).
        frame_offsets: target first, then the temporal source offsets (Monodepth2: ``[0, -1, 1]``).
        augment: draw flip and colour jitter per sample (training); ``False`` gives deterministic samples.
        color_jitter: jitter strengths (``ColorJitter`` or its fields as a dict), used when ``augment``;
            ``None`` disables jitter.
        flip_prob: probability of a horizontal flip when ``augment``.
        use_stereo: add the stereo partner as source ``"s"`` (targets without one are skipped).
        load_depth_gt: add ``depth_gt`` (validation); frames without GT get an all-zero (invalid) map.
        depth_gt_size: (height, width) the GT is resized to (nearest neighbour, so sparse points stay exact);
            ``None`` keeps the GT's own size.
    """

    def __init__(
        self,
        height: int,
        width: int,
        *,
        frame_offsets: Sequence[int] = (0, -1, 1),
        augment: bool = False,
        color_jitter: ColorJitter | dict | None = ColorJitter(),  # noqa: B008 - frozen, so sharing is safe
        flip_prob: float = 0.5,
        use_stereo: bool = False,
        load_depth_gt: bool = False,
        depth_gt_size: Sequence[int] | None = None,
    ):
        if height <= 0 or width <= 0:
            raise ValueError(f"training size must be positive, got {width}x{height}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.height = int(height)
        self.width = int(width)
        self.frame_offsets = parse_frame_offsets(frame_offsets)
        self.augment = bool(augment)
        self.color_jitter = _as_jitter(color_jitter)
        self.flip_prob = float(flip_prob)
        self.use_stereo = bool(use_stereo)
        self.load_depth_gt = bool(load_depth_gt)
        self.depth_gt_size = tuple(int(s) for s in depth_gt_size) if depth_gt_size is not None else None
        self.samples: list[FrameKey] = []
        self.num_skipped = 0

    # ------------------------------------------------------------------------------------ source contract
    @abc.abstractmethod
    def _target_keys(self) -> Iterable[FrameKey]:
        """Every frame that could be a target, in order."""

    @abc.abstractmethod
    def _neighbour(self, key: FrameKey, offset: int) -> FrameKey | None:
        """The frame ``offset`` steps from ``key`` in the same sequence, or ``None`` if it does not exist."""

    @abc.abstractmethod
    def _load_rgb(self, key: FrameKey) -> np.ndarray:
        """(h, w, 3) uint8 RGB at the source's own resolution."""

    @abc.abstractmethod
    def _intrinsics(self, key: FrameKey) -> np.ndarray:
        """(3, 3) pixel intrinsics at the resolution ``_load_rgb`` returns."""

    def _image_size(self, key: FrameKey) -> tuple[int, int]:
        """(h, w) of ``_load_rgb(key)``; override when it is known without decoding the image."""
        return tuple(self._load_rgb(key).shape[:2])

    def _stamp_s(self, key: FrameKey) -> float:
        return float("nan")

    def _speed_mps(self, key: FrameKey) -> float:
        return float("nan")

    def _pose(self, key: FrameKey) -> np.ndarray | None:
        """(4, 4) ``T_world_from_cam`` of the frame (camera optical frame, metres), or ``None`` if unknown."""
        return None

    def _load_depth_gt(self, key: FrameKey) -> np.ndarray | None:
        """(h, w) float metres, 0 or non-finite = invalid; ``None`` if this frame has no GT."""
        return None

    def _stereo(self, key: FrameKey) -> tuple[FrameKey, np.ndarray] | None:
        """(partner key, ``T_partner_from_key`` (4, 4)) or ``None`` if the frame has no stereo partner."""
        return None

    def _camera_id(self, key: FrameKey) -> Hashable:
        """Frames with the same camera id share intrinsics (used to report the training camera)."""
        return 0

    # ---------------------------------------------------------------------------------------- indexing
    def _build_index(self) -> None:
        """Keep the targets whose every source frame exists; call at the end of the subclass ``__init__``."""
        samples, skipped = [], 0
        for key in self._target_keys():
            ok = all(self._neighbour(key, off) is not None for off in self.frame_offsets[1:])
            if ok and self.use_stereo:
                ok = self._stereo(key) is not None
            if ok:
                samples.append(key)
            else:
                skipped += 1
        self.samples, self.num_skipped = samples, skipped

    def __len__(self) -> int:
        return len(self.samples)

    def scaled_intrinsics(self, key: FrameKey) -> np.ndarray:
        """(3, 3) pixel intrinsics of ``key`` at the training size."""
        K = validate_intrinsics(self._intrinsics(key))
        h, w = self._image_size(key)
        return scale_intrinsics(K, self.width / w, self.height / h)

    def intrinsics_norm(self, atol: float = 1e-3) -> np.ndarray | None:
        """Normalised intrinsics (3, 3) of the training camera, or ``None`` if the cameras differ by more than
        ``atol`` (then no single camera describes the model). Checks one frame per camera id."""
        if not self.samples:
            return None
        per_camera: dict[Hashable, FrameKey] = {}
        for key in self.samples:
            per_camera.setdefault(self._camera_id(key), key)
        norms = [normalize_intrinsics(self.scaled_intrinsics(k), self.width, self.height) for k in per_camera.values()]
        if max(np.abs(n - norms[0]).max() for n in norms) > atol:
            return None
        return np.mean(norms, axis=0)

    # ----------------------------------------------------------------------------------------- samples
    def _to_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        # The runtime's own pre-processing, so training and inference resize identically.
        return torch.from_numpy(preprocess(rgb, self.height, self.width)[0])

    def _gt_tensor(self, depth: np.ndarray | None, fallback_hw: tuple[int, int]) -> torch.Tensor:
        if depth is None:
            out_hw = self.depth_gt_size or fallback_hw
            return torch.zeros(1, *out_hw, dtype=torch.float32)
        depth = np.asarray(depth, dtype=np.float32)
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
        if self.depth_gt_size is not None and depth.shape != self.depth_gt_size:
            hg, wg = self.depth_gt_size
            depth = cv2.resize(depth, (wg, hg), interpolation=cv2.INTER_NEAREST)
        return torch.from_numpy(np.ascontiguousarray(depth))[None]

    def _known_relative_poses(self, keys: dict[int | str, FrameKey]) -> dict[int, np.ndarray]:
        """{temporal offset: (4, 4) float64 ``T_src_from_tgt`` = inv(T_world_from_src) @ T_world_from_tgt}, all-NaN
        where either pose is unknown (the loss then falls back to the pose network for that sample)."""
        tgt = self._pose(keys[0])
        out = {}
        for off, k in keys.items():
            if off in (0, STEREO_KEY):
                continue
            src = self._pose(k) if tgt is not None else None
            out[off] = np.full((4, 4), np.nan) if src is None else invert_pose(src) @ tgt
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.samples):
            raise IndexError(f"sample {index} out of range (dataset has {len(self.samples)})")
        key = self.samples[index]
        keys: dict[int | str, FrameKey] = {off: self._neighbour(key, off) for off in self.frame_offsets[1:]}
        keys = {0: key, **keys}
        T_stereo = None
        if self.use_stereo:
            partner, T_stereo = self._stereo(key)
            keys[STEREO_KEY] = partner

        raw = [self._load_rgb(k) for k in keys.values()]
        h, w = raw[0].shape[:2]
        K = scale_intrinsics(validate_intrinsics(self._intrinsics(key)), self.width / w, self.height / h)
        images = torch.stack([self._to_tensor(rgb) for rgb in raw])  # (N, 3, H, W)
        depth_gt = None
        if self.load_depth_gt:
            depth_gt = self._gt_tensor(self._load_depth_gt(key), (h, w))

        # Torch's RNG: per-worker seeded by the DataLoader from the seed_everything seed, so runs repeat.
        flip, jitter = False, None
        if self.augment:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
            flip = rng.random() < self.flip_prob
            if self.color_jitter is not None:
                jitter = sample_jitter_params(self.color_jitter, rng)
        T_gt = self._known_relative_poses(keys)
        if flip:
            images = hflip_images(images)
            K = hflip_intrinsics(K, self.width)
            T_gt = {off: hflip_pose(T) for off, T in T_gt.items()}
            if T_stereo is not None:
                T_stereo = hflip_pose(T_stereo)
            if depth_gt is not None:
                depth_gt = hflip_images(depth_gt)
        images_aug = apply_color_jitter(images, jitter) if jitter is not None else images

        stamp0 = self._stamp_s(key)
        sample: dict[str, Any] = {
            "color": {k: images[i] for i, k in enumerate(keys)},
            "color_aug": {k: images_aug[i] for i, k in enumerate(keys)},
            "K": torch.from_numpy(K.astype(np.float32)),
            "inv_K": torch.from_numpy(np.linalg.inv(K).astype(np.float32)),
            "speed_mps": {
                off: torch.tensor(self._speed_mps(k), dtype=torch.float32)
                for off, k in keys.items()
                if off != STEREO_KEY
            },
            "dt_s": {
                off: torch.tensor(self._stamp_s(k) - stamp0, dtype=torch.float32)
                for off, k in keys.items()
                if off != STEREO_KEY
            },
            "T_gt": {off: torch.from_numpy(T.astype(np.float32)) for off, T in T_gt.items()},
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if T_stereo is not None:
            sample["T_stereo"] = torch.from_numpy(np.asarray(T_stereo, dtype=np.float32))
        if depth_gt is not None:
            sample["depth_gt"] = depth_gt
        return sample
