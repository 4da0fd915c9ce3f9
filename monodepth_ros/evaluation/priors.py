"""Depth maps that never look at the image: the baselines a learned model must beat on a road camera.

The flat-road prior is the depth of a level road seen by a level camera ``h`` metres above it: pixel row ``v``
below the horizon row ``cy`` sees the road at ``z = fy * h / (v - cy)``. The road's depth grows without bound
towards the horizon, and a street is not empty, so the prior is capped: no pixel is farther than
``above_horizon_m`` (20 m by default), and every row at or above the horizon is that far too. A network that
only learned "the lower image is near road" scores about as well as this; :mod:`benchmarks.real_data` reports
it beside the models.

Pure NumPy, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["KITTI_CAMERA_HEIGHT_M", "flat_road_depth", "fit_camera_height"]

# The KITTI recording car's colour cameras sit 1.65 m above the road (Geiger et al. 2013, sensor setup).
KITTI_CAMERA_HEIGHT_M = 1.65


def flat_road_depth(K: np.ndarray, height: int, width: int, camera_height_m: float = KITTI_CAMERA_HEIGHT_M,
                    above_horizon_m: float = 20.0) -> np.ndarray:
    """Depth (height, width) float32 metres of a level road under a level camera, capped at ``above_horizon_m``.

    Args:
        K: (3, 3) pixel intrinsics of the image (only ``fy = K[1, 1]`` and ``cy = K[1, 2]`` matter: the road
            depth depends on the row alone, pixel centres at integer row indices).
        height, width: image size in pixels.
        camera_height_m: camera centre above the road plane, metres (> 0).
        above_horizon_m: the cap (> 0): ``depth = min(fy * h / (v - cy), above_horizon_m)`` below the horizon,
            and ``above_horizon_m`` for rows ``v <= cy`` (sky, buildings, the far end of the road).
    Returns:
        (height, width) float32, every value finite and in ``(0, above_horizon_m]``; all columns equal.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got {K.shape}")
    if not (camera_height_m > 0 and above_horizon_m > 0):
        raise ValueError(f"need camera_height_m > 0 and above_horizon_m > 0, got {camera_height_m}, "
                         f"{above_horizon_m}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    fy, cy = K[1, 1], K[1, 2]
    if not fy > 0:
        raise ValueError(f"fy = K[1, 1] must be positive, got {fy}")
    below = np.arange(height, dtype=np.float64) - cy  # rows below the horizon: > 0
    # The road depth exceeds the cap well before the horizon (at v - cy = fy * h / cap), so clamping the row
    # offset there is exact and keeps the division finite at and above the horizon.
    road = fy * camera_height_m / np.maximum(below, fy * camera_height_m / above_horizon_m)
    column = np.minimum(road, above_horizon_m).astype(np.float32)
    return np.repeat(column[:, None], width, axis=1)


def fit_camera_height(gts_m: Iterable[np.ndarray], K: np.ndarray, *, min_rows_below_horizon: float = 10.0,
                      max_depth_m: float = 80.0, bin_m: float = 0.02, search_m: tuple[float, float] = (0.3, 4.0),
                      ) -> float:
    """Camera height above the road (metres) from sparse GT depth maps: the most common height under the camera.

    Each valid GT pixel at row ``v`` with depth ``z`` lies ``y = z * (v - cy) / fy`` below the camera centre.
    The road is the largest horizontal surface in view, so its ``y`` is the mode of a histogram over all the
    maps (bins of ``bin_m``); walls, cars and trucks spread their ``y`` over a range and do not form the mode
    the way a mean or a least-squares fit would let them pull it.

    Args:
        gts_m: GT depth maps (H, W) metres, 0 / non-finite = no measurement, all of the camera with intrinsics K.
        K: (3, 3) pixel intrinsics of those maps.
        min_rows_below_horizon: only pixels at least this many rows below ``cy`` count (near the horizon a
            pixel of row error is a large height error).
        max_depth_m: GT beyond this is ignored (the evaluation cap).
        bin_m: histogram bin width; search_m: the (low, high) heights considered.
    Returns:
        The centre of the fullest bin, metres.
    """
    K = np.asarray(K, dtype=np.float64)
    fy, cy = K[1, 1], K[1, 2]
    heights = []
    for gt in gts_m:
        gt = np.asarray(gt, dtype=np.float64)
        rows = np.arange(gt.shape[0], dtype=np.float64)[:, None] - cy
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(gt) & (gt > 0) & (gt < max_depth_m) & (rows >= min_rows_below_horizon)
        heights.append((gt * rows / fy)[valid])
    y = np.concatenate(heights) if heights else np.empty(0)
    edges = np.arange(search_m[0], search_m[1] + bin_m, bin_m)
    counts, edges = np.histogram(y, bins=edges)
    if counts.sum() == 0:
        raise ValueError(f"no GT pixel at least {min_rows_below_horizon:g} rows below the horizon with a height "
                         f"in {search_m} m: cannot fit the camera height")
    best = int(np.argmax(counts))
    return float(0.5 * (edges[best] + edges[best + 1]))
