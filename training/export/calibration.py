"""Calibration and held-out frames for INT8 export (``--calib``): ``synthetic[:N]`` (frames rendered by
monodepth_ros.synthetic at the model size), a KITTI-layout folder (``<dir>/splits/<split>_files.txt``), or a
rosbag2 bag (``.mcap`` / ``.db3`` file or bag folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def synthetic_frames(n: int, height: int, width: int, *, start: int = 0, seed: int = 0, with_depth: bool = False):
    """``n`` frames of the synthetic world at the model size: list of RGB (H, W, 3) uint8, or of (rgb, depth_m)
    with depth 0 where invalid (sky) when ``with_depth``."""
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

    world = SyntheticWorld(SynthConfig(width=width, height=height, seed=seed))
    out = []
    for i in range(start, start + n):
        f = world.render(i)
        if with_depth:
            out.append((f.rgb, np.where(np.isfinite(f.depth_m), f.depth_m, 0.0).astype(np.float32)))
        else:
            out.append(f.rgb)
    return out


def parse_synthetic_spec(spec: str) -> int | None:
    """``synthetic`` -> None (use the caller's count), ``synthetic:N`` -> N; anything else -> ValueError."""
    head, _, count = spec.partition(":")
    if head != "synthetic":
        raise ValueError(f"not a synthetic spec: {spec!r}")
    if not count:
        return None
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"bad synthetic frame count in {spec!r}: use synthetic or synthetic:N with N >= 1")
    return int(count)


def _kitti_frames(data_dir: Path, split: str, n: int, with_depth: bool) -> list:
    from monodepth_ros.datasets import kitti

    split_file = data_dir / "splits" / f"{split}_files.txt"
    if not split_file.is_file():
        raise ValueError(f"KITTI folder {data_dir} has no split file {split_file.relative_to(data_dir)}")
    entries = kitti.read_split(split_file)
    if not entries:
        raise ValueError(f"split file {split_file} is empty")
    # Spread the picks over the whole split: consecutive frames are near-duplicates.
    picks = np.unique(np.linspace(0, len(entries) - 1, num=min(n, len(entries))).round().astype(int))
    out = []
    for i in picks:
        e = entries[int(i)]
        img_path = kitti.image_path(data_dir, e)
        rgb = kitti.load_rgb(img_path)
        if with_depth:
            cam = f"image_0{kitti.side_to_cam(e.side)}"
            gt_path = data_dir / e.folder / "proj_depth" / "groundtruth" / cam / img_path.with_suffix(".png").name
            out.append((rgb, kitti.read_depth_png(gt_path) if gt_path.is_file() else None))
        else:
            out.append(rgb)
    return out


@dataclass(frozen=True)
class BagTopics:
    """The topics calibration and held-out frames are read from in a rosbag2 bag (``gt``: None = no GT)."""

    image: str = "/camera/image_raw"
    info: str = "/camera/camera_info"
    gt: str | None = "/camera/depth_gt"


def _bag_frames(bag_path: Path, n: int, skip: int, with_depth: bool, topics: BagTopics) -> list:
    from monodepth_ros.bag.frames import GtSource, iter_frames
    from monodepth_ros.bag.reader import BagReader

    out = []
    with BagReader(bag_path) as bag:
        gt = None
        if with_depth and topics.gt and topics.gt in bag.topics:
            gt = GtSource(kind="depth", topic=topics.gt)
        for k, fr in enumerate(iter_frames(bag, topics.image, topics.info, gt=gt, max_frames=skip + n)):
            if k < skip:
                continue
            out.append((fr.rgb, fr.gt_depth_m) if with_depth else fr.rgb)
    if not out:
        raise ValueError(f"bag {bag_path} has no frames on {topics.image} after skipping {skip}")
    return out


def load_frames(
    spec: str,
    n: int,
    height: int,
    width: int,
    *,
    split: str = "train",
    heldout: bool = False,
    topics: BagTopics | None = None,
) -> list:
    """Frames from ``spec`` (see module docstring). Calibration: list of RGB uint8. ``heldout``: list of
    (rgb, gt_depth_m or None) taken from data the calibration did not see (other synthetic indices, the KITTI
    ``val``/``test`` split, or bag frames after the first ``n``). ``topics``: where a bag's frames are (default
    :class:`BagTopics`)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"frame count must be a positive integer, got {n!r}")
    if spec.startswith("synthetic"):
        count = parse_synthetic_spec(spec) or n
        if heldout:  # other part of the drive, so no frame is shared with the calibration set
            return synthetic_frames(n, height, width, start=10_000, with_depth=True)
        return synthetic_frames(count, height, width)
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"calibration data {spec!r}: no such file or folder (expected synthetic[:N], a KITTI folder"
                         " with splits/, or a rosbag2 .mcap/.db3 bag)")
    is_bag = path.suffix in (".mcap", ".db3") or (path.is_dir() and (path / "metadata.yaml").is_file())
    if is_bag:
        return _bag_frames(path, n, n if heldout else 0, heldout, topics or BagTopics())
    if path.is_dir() and (path / "splits").is_dir():
        if heldout:
            for hs in ("val", "test"):
                if (path / "splits" / f"{hs}_files.txt").is_file():
                    return _kitti_frames(path, hs, n, True)
            raise ValueError(f"KITTI folder {path} has no val or test split for held-out frames")
        return _kitti_frames(path, split, n, False)
    raise ValueError(f"calibration data {spec!r} is neither a bag (.mcap/.db3/metadata.yaml) nor a KITTI folder "
                     "with a splits/ subfolder")
