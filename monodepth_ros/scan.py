"""Depth image -> 2D laser scan, with depthimage_to_laserscan's semantics, as one vectorised NumPy function.

What a Nav2 costmap or a 2D SLAM expects from a camera (ros-perception/depthimage_to_laserscan, followed here):

- a band of ``scan_height`` rows around the optical centre row ``cy``: rows ``int(cy - scan_height / 2)`` on;
- each pixel's range is its distance in the optical frame's x-z plane, ``sqrt(x^2 + z^2)`` with
  ``x = (u - cx) / fx * z`` (the height ``y`` is dropped: the band is flattened into the scan plane);
- the scan is in a laser frame with x forward and angles counter-clockwise: the left image edge (u = 0) has the
  largest angle, ``angle_max = atan(cx / fx)``; the right edge (u = W - 1) the smallest,
  ``angle_min = -atan((W - 1 - cx) / fx)``; ``angle_increment = (angle_max - angle_min) / (W - 1)``; so
  ``ranges[0]`` is the right-most direction, as depthimage_to_laserscan orders it;
- column ``u`` lands in bin ``int((-atan((u - cx) / fx) - angle_min) / angle_increment)`` and each bin keeps the
  nearest range in ``[range_min, range_max]`` of the pixels that land in it.

Invalid is NaN, as in depthimage_to_laserscan (its ranges start as NaN and out-of-range values are skipped): a
bin with no valid pixel says "no measurement". REP 117 would allow +Inf for "nothing within range_max", but a
NaN depth here also means "nearer than min_depth" or a non-finite model output, so +Inf (which costmaps use
to clear space) is a claim this depth cannot back. Non-finite depth (NaN, +-Inf) is no measurement.

Because the bins are equal in angle and the columns equal in pixels, the bins near the image centre are
narrower than a column there and some get no column at all (NaN), exactly as in depthimage_to_laserscan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from monodepth_ros.geometry import validate_intrinsics

__all__ = ["Scan", "scan_angles", "scan_band", "depth_to_scan"]


@dataclass(frozen=True)
class Scan:
    """One laser scan: ``ranges`` (W,) float32 metres (NaN = no measurement); the angle of ``ranges[i]`` is
    ``angle_min + i * angle_increment`` (radians, counter-clockwise about the laser frame's z, x forward)."""

    ranges: np.ndarray
    angle_min: float
    angle_max: float
    angle_increment: float


def scan_angles(K: np.ndarray, width: int) -> tuple[float, float, float]:
    """``(angle_min, angle_max, angle_increment)`` of the scan of an image ``width`` pixels wide with pixel
    intrinsics K (3, 3): the angles of the right and left edge columns from the optical axis (in the row of the
    principal point, as depthimage_to_laserscan measures them) and their spacing over ``width - 1`` steps."""
    if width < 2:
        raise ValueError(f"a scan needs an image at least 2 pixels wide, got {width}")
    fx, cx = float(K[0, 0]), float(K[0, 2])
    angle_max = math.atan(abs(cx) / fx)  # left edge (u = 0): the angle between its ray and the optical axis
    angle_min = -math.atan(abs(width - 1 - cx) / fx)  # right edge, negative: the scan turns the other way
    return angle_min, angle_max, (angle_max - angle_min) / (width - 1)


def scan_band(cy: float, height: int, scan_height: int) -> tuple[int, int]:
    """Rows ``[top, bottom)`` of the band of ``scan_height`` rows centred on ``cy`` in an image ``height`` rows
    high: ``top = int(cy - scan_height / 2)``, as depthimage_to_laserscan. Raises ValueError when the band does
    not fit in the image (its check: ``scan_height // 2`` must not exceed ``cy`` nor ``height - cy``)."""
    if scan_height < 1:
        raise ValueError(f"scan_height must be >= 1, got {scan_height}")
    half = scan_height // 2
    if half > cy or half > height - cy:
        raise ValueError(f"scan_height ({scan_height} rows) is too large for the image: the band around the "
                         f"optical centre row cy={cy:.1f} of a {height}-row image leaves the image")
    top = max(int(cy - scan_height / 2.0), 0)  # int() truncates toward zero, as the C++ cast
    return top, min(top + scan_height, height)


def depth_to_scan(
    depth_m: np.ndarray,
    K: np.ndarray,
    scan_height: int = 1,
    range_min: float = 0.0,
    range_max: float = math.inf,
) -> Scan:
    """Depth (H, W) float32 metres (NaN = invalid) with pixel intrinsics K (3, 3) -> :class:`Scan` of W ranges.

    See the module docstring for the band, range, angle and bin conventions. Raises ValueError when K is not a
    pinhole matrix, the image is narrower than 2 pixels, or the band does not fit in the image.
    """
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth_m.shape}")
    K = validate_intrinsics(K)
    H, W = depth_m.shape
    angle_min, angle_max, inc = scan_angles(K, W)
    top, bottom = scan_band(float(K[1, 2]), H, int(scan_height))
    fx, cx = K[0, 0], K[0, 2]

    ray_x = (np.arange(W, dtype=np.float64) - cx) / fx  # x / z of each column
    # Range in the x-z plane = z * sqrt(1 + (x/z)^2); NaN depth stays NaN and fails the range test below.
    ranges_px = np.asarray(depth_m[top:bottom], dtype=np.float32) * np.sqrt(1.0 + ray_x * ray_x).astype(np.float32)
    with np.errstate(invalid="ignore"):
        ok = (ranges_px >= range_min) & (ranges_px <= range_max)  # False for NaN and +-inf (range_max finite)
        ok &= np.isfinite(ranges_px)
    nearest = np.where(ok, ranges_px, np.float32(np.inf)).min(axis=0)  # (W,) per column, inf = none

    # Bin of each column: decreasing in u (left edge -> angle_max). Reversed, the bins never decrease, so each
    # bin's nearest range is one reduceat over the columns that share it.
    bins = np.clip(((-np.arctan(ray_x) - angle_min) / inc).astype(np.int64), 0, W - 1)[::-1]
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    ranges = np.full(W, np.inf, dtype=np.float32)
    ranges[bins[starts]] = np.minimum.reduceat(nearest[::-1], starts)
    ranges[np.isinf(ranges)] = np.nan  # no valid pixel in the bin: no measurement (depthimage_to_laserscan)
    return Scan(ranges=ranges, angle_min=angle_min, angle_max=angle_max, angle_increment=inc)
