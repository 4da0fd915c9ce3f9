"""Pictures of depth: a fixed colour map for depth images (used by the node's ``depth/colored`` topic too)
and the evaluation panel grid (image | predicted depth | GT | abs-rel error).

OpenCV only (``cv2.applyColorMap``), no matplotlib, so it runs on a robot.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from monodepth_ros.bundle import atomic_write_bytes

__all__ = ["colorize_depth", "colorize_scalar", "abs_rel_error_map", "PanelRow", "panel_grid"]

DEPTH_COLORMAP = cv2.COLORMAP_MAGMA
ERROR_COLORMAP = cv2.COLORMAP_TURBO


def colorize_scalar(values: np.ndarray, lo: float, hi: float, colormap: int = ERROR_COLORMAP) -> np.ndarray:
    """Scalar image (H, W) -> (H, W, 3) uint8 RGB with ``lo`` -> first and ``hi`` -> last colour of ``colormap``.

    Non-finite values are black. Values outside [lo, hi] saturate.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"expected an (H, W) image, got shape {values.shape}")
    if not hi > lo:
        raise ValueError(f"need hi > lo, got lo={lo}, hi={hi}")
    valid = np.isfinite(values)
    scaled = np.clip((np.where(valid, values, lo) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(scaled, colormap), cv2.COLOR_BGR2RGB)
    rgb[~valid] = 0
    return rgb


def colorize_depth(depth_m: np.ndarray, min_m: float = 1.0, max_m: float = 80.0) -> np.ndarray:
    """Depth (H, W) metres -> (H, W, 3) uint8 RGB, magma map on a FIXED range: near bright, far dark.

    Colours are spread over log depth between ``min_m`` and ``max_m``, so a street scene (2-80 m) uses the whole
    map instead of squeezing everything past 10 m into a few colours; a fixed range (not per-frame min/max)
    keeps colours comparable across frames and models. NaN, inf and depth <= 0 (no measurement) are black;
    depths outside the range saturate.
    """
    if not 0 < min_m < max_m:
        raise ValueError(f"need 0 < min_m < max_m, got {min_m}, {max_m}")
    depth = np.asarray(depth_m, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        nearness = np.where(np.isfinite(depth) & (depth > 0), -np.log(np.maximum(depth, 1e-12)), np.nan)
    return colorize_scalar(nearness, -np.log(max_m), -np.log(min_m), DEPTH_COLORMAP)


def abs_rel_error_map(gt_m: np.ndarray, pred_m: np.ndarray) -> np.ndarray:
    """|gt - pred| / gt (H, W) where gt > 0 and both are finite, NaN elsewhere."""
    gt = np.asarray(gt_m, dtype=np.float32)
    pred = np.asarray(pred_m, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.abs(gt - pred) / gt
    return np.where(np.isfinite(gt) & (gt > 0) & np.isfinite(pred), err, np.nan)


@dataclass
class PanelRow:
    """One row of the panel grid: RGB (H, W, 3) uint8, predicted and GT depth (H, W) metres (GT 0 = none)."""

    rgb: np.ndarray
    pred_m: np.ndarray
    gt_m: np.ndarray
    label: str = ""


def _splat_sparse(depth_m: np.ndarray, radius_px: int) -> np.ndarray:
    """Display only: grow sparse LiDAR points into small blobs, the nearest point winning (max disparity)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = np.where(np.isfinite(depth_m) & (depth_m > 0), 1.0 / depth_m, 0.0).astype(np.float32)
    kernel = np.ones((2 * radius_px + 1, 2 * radius_px + 1), np.uint8)
    grown = cv2.dilate(disp, kernel)
    with np.errstate(divide="ignore"):
        return np.where(grown > 0, 1.0 / grown, 0.0).astype(np.float32)


def _splat_error(err: np.ndarray, radius_px: int) -> np.ndarray:
    kernel = np.ones((2 * radius_px + 1, 2 * radius_px + 1), np.uint8)
    grown = cv2.dilate(np.where(np.isfinite(err), err, -1.0).astype(np.float32), kernel)
    return np.where(grown >= 0, grown, np.nan)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    if text:
        for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):  # outlined, readable on any colour
            cv2.putText(tile, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, color, thickness, cv2.LINE_AA)
    return tile


def panel_grid(rows: Sequence[PanelRow | tuple], out_path: str | os.PathLike, *, tile_width: int = 416,
               min_m: float = 1.0, max_m: float = 80.0, max_err: float = 0.5) -> np.ndarray:
    """Write a PNG grid, one row per frame: image | predicted depth | GT depth | abs-rel error; returns it.

    Args:
        rows: :class:`PanelRow` or ``(rgb, pred_m, gt_m[, label])`` tuples. Pred and GT share a shape;
            the RGB is resized to it.
        out_path: PNG path, written atomically.
        tile_width: each tile is resized to this width (aspect kept; nearest-neighbour for depth tiles).
        min_m, max_m: fixed depth colour range; max_err: abs-rel error at the top of the error colour map.
    Returns:
        The grid (H_total, 4 * tile_width, 3) uint8 RGB.
    Sparse GT (under 20 % of pixels valid, i.e. LiDAR) is drawn as 2-px blobs so it stays visible; the
    metrics never see these blobs.
    """
    if not rows:
        raise ValueError("panel_grid needs at least one row")
    out_rows = []
    for i, row in enumerate(rows):
        row = row if isinstance(row, PanelRow) else PanelRow(*row)
        pred, gt = np.asarray(row.pred_m, np.float32), np.asarray(row.gt_m, np.float32)
        if pred.shape != gt.shape or pred.ndim != 2:
            raise ValueError(f"panel row {i}: pred {pred.shape} and gt {gt.shape} must be equal (H, W) shapes")
        H, W = gt.shape
        rgb = np.asarray(row.rgb)
        if rgb.shape[:2] != (H, W):
            rgb = cv2.resize(rgb, (W, H), interpolation=cv2.INTER_AREA)
        err = abs_rel_error_map(gt, pred)
        gt_show, err_show = gt, err
        if np.mean(np.isfinite(gt) & (gt > 0)) < 0.2:
            gt_show, err_show = _splat_sparse(gt, 2), _splat_error(err, 2)
        # No mean in the label: this map covers every GT pixel (no crop, no cap), unlike the metrics.
        err_text = f"abs rel error, 0..{max_err:g}"
        tiles = [
            (np.ascontiguousarray(rgb[..., :3], dtype=np.uint8), row.label or f"image {i}"),
            (colorize_depth(pred, min_m, max_m), "prediction"),
            (colorize_depth(gt_show, min_m, max_m), "ground truth"),
            (colorize_scalar(err_show, 0.0, max_err), err_text),
        ]
        tile_h = max(1, int(round(H * tile_width / W)))
        resized = []
        for k, (tile, text) in enumerate(tiles):
            interp = cv2.INTER_AREA if k == 0 else cv2.INTER_NEAREST
            resized.append(_label(cv2.resize(tile, (tile_width, tile_h), interpolation=interp), text))
        out_rows.append(np.concatenate(resized, axis=1))
    width = max(r.shape[1] for r in out_rows)
    grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in out_rows], axis=0)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {out_path}")
    atomic_write_bytes(out_path, buf.tobytes())
    return grid
