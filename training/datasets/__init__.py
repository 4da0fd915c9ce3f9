"""Training datasets: one base class (:class:`MonoDataset`) and one file per source.

``build_dataset({"source": "kitti" | "kitti_odometry" | "rosbag" | "synthetic" | "mix", ...}, **shared)`` builds a
source from a config dict; ``shared`` carries what every source of a run has in common (size, offsets, augmentation).
"""

from __future__ import annotations

from typing import Any

from monodepth_training.datasets.base import STEREO_KEY, MonoDataset, parse_frame_offsets

__all__ = ["SOURCES", "STEREO_KEY", "MonoDataset", "build_dataset", "parse_frame_offsets"]


def _kitti():
    from monodepth_training.datasets.kitti import KittiDataset

    return KittiDataset


def _rosbag():
    from monodepth_training.datasets.rosbag import RosbagDataset

    return RosbagDataset


def _kitti_odometry():
    from monodepth_training.datasets.kitti_odometry import KittiOdometryDataset

    return KittiOdometryDataset


def _mix():
    from monodepth_training.datasets.mix import MixDataset

    return MixDataset


def _synthetic():
    from monodepth_training.datasets.synthetic import SyntheticDataset

    return SyntheticDataset


# Imported on demand so that e.g. a KITTI run never needs the synthetic world or rosbags.
SOURCES = {"kitti": _kitti, "kitti_odometry": _kitti_odometry, "rosbag": _rosbag, "synthetic": _synthetic,
           "mix": _mix}


def build_dataset(spec: dict[str, Any], **shared: Any) -> MonoDataset:
    """Build a dataset from ``spec`` (``source`` + that source's arguments) and the ``shared`` arguments.

    A key in ``spec`` overrides the same key in ``shared`` (e.g. ``load_depth_gt: false`` for one source).
    """
    spec = dict(spec)
    source = spec.pop("source", None)
    if source not in SOURCES:
        raise ValueError(f"dataset spec needs 'source' in {sorted(SOURCES)}, got {source!r}")
    cls = SOURCES[source]()
    try:
        return cls(**{**shared, **spec})
    except TypeError as e:
        raise TypeError(f"bad arguments for the {source!r} dataset: {e}") from e
