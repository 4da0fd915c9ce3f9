"""Pictures of depth: a fixed colour map for depth images (the one of the node's ``depth/colored`` topic, the
training previews, the synthetic preview and every panel grid), colour keys with units, and the evaluation panel
grid (image | predicted depth | GT | abs-rel error, keys underneath).

OpenCV only (``cv2.applyColorMap``), no matplotlib, so it runs on a robot.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from monodepth_ros.bundle import atomic_write_bytes

__all__ = ["colorize_depth", "colorize_scalar", "abs_rel_error_map", "colour_key", "PanelRow", "panel_grid",
           "KEY_HEIGHT"]

DEPTH_COLORMAP = cv2.COLORMAP_MAGMA
ERROR_COLORMAP = cv2.COLORMAP_TURBO
KEY_HEIGHT = 48  # px: the colour-key strip under a panel grid (title, bar, tick labels)
_FONT, _FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.4


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


def _ticks(lo: float, hi: float, log: bool, n_linear: int) -> list[float]:
    """Round tick values inside [lo, hi]: 1-2-5 steps on a log axis (plus ``hi``, the cap), ``n_linear`` even
    steps on a linear one."""
    if not log:
        return [float(v) for v in np.linspace(lo, hi, n_linear)]
    ticks = [m * 10.0**e for e in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo <= t <= hi]
    if not ticks or np.log(hi / ticks[-1]) > 0.08 * np.log(hi / lo):  # room for the cap's own label
        ticks.append(hi)
    return ticks


def colour_key(width: int, lo: float, hi: float, title: str, *, log: bool = False,
               colorize=None) -> np.ndarray:
    """A colour key (KEY_HEIGHT, width, 3) uint8 RGB: ``title`` (name and unit), a bar from ``lo`` (left) to ``hi``
    (right) coloured by ``colorize`` (values (1, N) -> (1, N, 3) RGB; default: the error map on [lo, hi]), and
    tick labels. ``log``: positions on a log axis (depth)."""
    colorize = colorize or (lambda v: colorize_scalar(v, lo, hi))
    pad = 12  # px each side, so that the end labels fit
    n = width - 2 * pad
    if n < 16:
        raise ValueError(f"colour key width must be at least {2 * pad + 16} px, got {width}")
    values = np.geomspace(lo, hi, n) if log else np.linspace(lo, hi, n)
    key = np.zeros((KEY_HEIGHT, width, 3), np.uint8)
    key[16:28, pad : pad + n] = colorize(values[None, :].astype(np.float32))[0]
    cv2.putText(key, title, (pad, 12), _FONT, _FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    span = np.log(hi / lo) if log else hi - lo
    for t in _ticks(lo, hi, log, n_linear=6 if n >= 240 else 3):
        x = pad + int(round((np.log(t / lo) if log else t - lo) / span * (n - 1)))
        text = f"{t:g}"
        (tw, _), _ = cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)
        key[28:32, x : x + 1] = 255
        cv2.putText(key, text, (int(np.clip(x - tw // 2, 0, width - tw)), 44), _FONT, _FONT_SCALE,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return key


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
    """Write a PNG grid, one row per frame: image | predicted depth | GT depth | abs-rel error, with the colour
    keys (depth in m on a log axis, under the two depth columns; abs-rel error under the last) below; returns it.

    Args:
        rows: :class:`PanelRow` or ``(rgb, pred_m, gt_m[, label])`` tuples. Pred and GT share a shape;
            the RGB is resized to it.
        out_path: PNG path, written atomically.
        tile_width: each tile is resized to this width (aspect kept; nearest-neighbour for depth tiles).
        min_m, max_m: fixed depth colour range; max_err: abs-rel error at the top of the error colour map.
    Returns:
        The grid (rows * tile height + KEY_HEIGHT, 4 * tile_width, 3) uint8 RGB.
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
    keys = np.concatenate([
        np.zeros((KEY_HEIGHT, tile_width, 3), np.uint8),
        colour_key(2 * tile_width, min_m, max_m, "depth (m, log scale)", log=True,
                   colorize=lambda v: colorize_depth(v, min_m, max_m)),
        colour_key(tile_width, 0.0, max_err, "abs rel error"),
    ], axis=1)
    grid = np.concatenate(out_rows + [keys], axis=0)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {out_path}")
    atomic_write_bytes(out_path, buf.tobytes())
    return grid
