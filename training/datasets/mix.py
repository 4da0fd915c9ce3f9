"""Mix source: several sources in one training set, e.g. real video plus the synthetic world with exact depth.

Each part is an ordinary source spec; the shared settings (size, offsets, augmentation) reach every part.
Depth GT is requested from every part at the training size, so a batch can hold synthetic samples (exact GT)
beside real ones (an all-zero, i.e. invalid, map) and collate. ``repeat`` oversamples a small part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from monodepth_training.datasets.base import MonoDataset
from torch.utils.data import Dataset


class MixDataset(Dataset):
    """Concatenation of sources built by :func:`monodepth_training.datasets.build_dataset`.

    Args:
        parts: source specs, each ``{"source": ..., ...}``, optionally with ``repeat: n`` (an integer >= 1:
            the part is listed n times, to balance a small real set against a large synthetic one).
        height, width: training size; also the size of every part's depth GT.
        load_depth_gt: request GT from every part (parts without GT give all-zero maps).
        shared: the remaining shared arguments (offsets, augmentation, stereo ...), passed to every part.

    ``intrinsics_norm()`` reports the *first* part's camera: list the camera the model is meant for first.
    """

    def __init__(self, parts: Sequence[dict[str, Any]], height: int, width: int, load_depth_gt: bool = True,
                 depth_gt_size: Sequence[int] | None = None, **shared: Any):
        from monodepth_training.datasets import build_dataset

        if not parts or not all(isinstance(p, dict) and "source" in p for p in parts):
            raise ValueError(f"mix needs 'parts': a non-empty list of source specs with a 'source' key, got {parts!r}")
        self.parts: list[MonoDataset] = []
        self.repeats: list[int] = []
        gt_size = list(depth_gt_size) if depth_gt_size is not None else [int(height), int(width)]
        for spec in parts:
            spec = dict(spec)
            if spec["source"] == "mix":
                raise ValueError("a mix cannot contain another mix")
            repeat = spec.pop("repeat", 1)
            if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
                raise ValueError(f"repeat must be an integer >= 1, got {repeat!r} in {spec}")
            spec.setdefault("load_depth_gt", load_depth_gt)
            spec.setdefault("depth_gt_size", gt_size)
            self.parts.append(build_dataset(spec, height=height, width=width, **shared))
            self.repeats.append(repeat)
        sizes = [len(p) * r for p, r in zip(self.parts, self.repeats, strict=True)]
        self._ends = np.cumsum(sizes)
        self.height, self.width = int(height), int(width)
        self.num_skipped = sum(getattr(p, "num_skipped", 0) for p in self.parts)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def part_of(self, index: int) -> tuple[int, int]:
        """(part number, index inside that part) of a mix index."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range (mix has {len(self)})")
        part = int(np.searchsorted(self._ends, index, side="right"))
        start = 0 if part == 0 else int(self._ends[part - 1])
        return part, (index - start) % len(self.parts[part])

    def __getitem__(self, index: int) -> dict[str, Any]:
        part, inner = self.part_of(index)
        sample = self.parts[part][inner]
        sample["index"] = sample["index"].new_tensor(index)
        return sample

    def intrinsics_norm(self, atol: float = 1e-3) -> np.ndarray | None:
        return self.parts[0].intrinsics_norm(atol)
