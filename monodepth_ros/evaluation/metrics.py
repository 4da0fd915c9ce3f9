"""Depth metrics of the KITTI protocol (Eigen et al. 2014), computed the way Monodepth2's evaluation does.

Per image: keep pixels with ``min_depth < gt < cap_m`` (optionally inside the Garg/Eigen crop), multiply the
prediction by a fixed scale, optionally by the per-image median ratio ``median(gt) / median(pred)``, clamp it to
``[min_depth, max_depth]``, then compute the seven errors. The table reports the mean over IMAGES (every image
weighs the same, however many valid pixels it has), as the papers do.

Pure NumPy; no torch, so the runtime and the trainer's validation share it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "METRIC_NAMES",
    "MIN_DEPTH_M",
    "MAX_DEPTH_M",
    "CROPS",
    "EvalResult",
    "crop_mask",
    "valid_mask",
    "median_scale",
    "compute_depth_metrics",
    "evaluate_image",
    "evaluate_depth",
    "summarize",
    "format_table",
]

METRIC_NAMES = ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"]
MIN_DEPTH_M = 1e-3
MAX_DEPTH_M = 80.0

# Crop boxes as fractions of (H, H, W, W): top, bottom, left, right. "garg" is the crop every Eigen-split
# result since Garg et al. 2016 uses; "eigen" is the one of Eigen et al. 2014.
CROPS = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
}


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate_depth`.

    ``metrics``: mean over images of each of :data:`METRIC_NAMES`. ``per_image``: one dict per image with the
    seven metrics plus ``ratio`` (the median-scaling factor, 1.0 when median scaling is off) and ``n_valid``.
    ``ratio_mean`` / ``ratio_std`` / ``ratio_median``: statistics of the per-image median ratios (NaN when
    median scaling is off); ``ratio_std_rel`` = std(ratios / median(ratios)), the figure Monodepth2 prints.
    """

    metrics: dict[str, float]
    per_image: list[dict[str, float]] = field(default_factory=list)
    ratio_mean: float = float("nan")
    ratio_std: float = float("nan")
    ratio_median: float = float("nan")
    ratio_std_rel: float = float("nan")

    def to_dict(self) -> dict:
        return {
            "metrics": dict(self.metrics),
            "n_images": len(self.per_image),
            "ratio_mean": self.ratio_mean,
            "ratio_std": self.ratio_std,
            "ratio_median": self.ratio_median,
            "ratio_std_rel": self.ratio_std_rel,
            "per_image": [dict(p) for p in self.per_image],
        }


def crop_mask(shape: tuple[int, int], crop: str | None) -> np.ndarray | None:
    """Boolean (H, W) mask of the named crop ("garg" | "eigen"), or None for no crop.

    Box corners are truncated to int exactly as the reference evaluation does (``astype(int32)``).
    """
    if crop is None or crop == "none":
        return None
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; expected one of {sorted(CROPS)} or None")
    H, W = int(shape[0]), int(shape[1])
    top, bottom, left, right = CROPS[crop]
    box = np.array([top * H, bottom * H, left * W, right * W]).astype(np.int32)
    mask = np.zeros((H, W), dtype=bool)
    mask[box[0] : box[1], box[2] : box[3]] = True
    return mask


def valid_mask(gt_m: np.ndarray, min_depth: float = MIN_DEPTH_M, cap_m: float = MAX_DEPTH_M,
               crop: str | None = None) -> np.ndarray:
    """Pixels (H, W) bool that count: finite GT with ``min_depth < gt < cap_m``, inside ``crop``.

    The upper bound is strict, as in the reference (``gt < MAX_DEPTH``); zeros (no LiDAR return) drop out.
    """
    gt_m = np.asarray(gt_m)
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(gt_m) & (gt_m > min_depth) & (gt_m < cap_m)
    box = crop_mask(gt_m.shape, crop)
    return mask if box is None else mask & box


def median_scale(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Per-image scale ``median(gt[mask]) / median(pred[mask])`` that brings a relative prediction to metres.

    ``gt``, ``pred``: same shape (any); ``mask``: bool of that shape, or None for all elements.
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} differ in shape")
    if mask is not None:
        gt, pred = gt[mask], pred[mask]
    if gt.size == 0:
        raise ValueError("median_scale: no valid pixels")
    med_pred = np.median(pred)
    if not (np.isfinite(med_pred) and med_pred > 0):
        raise ValueError(f"median_scale: median prediction is {med_pred}, cannot scale")
    return float(np.median(gt) / med_pred)


def compute_depth_metrics(gt_m: np.ndarray, pred_m: np.ndarray, min_depth: float = MIN_DEPTH_M,
                          max_depth: float = MAX_DEPTH_M) -> dict[str, float]:
    """The seven KITTI metrics for ONE image.

    Args:
        gt_m: GT depth (H, W) or (N,) in metres. Elements outside ``(min_depth, max_depth)`` or non-finite
            are ignored (0 = no GT).
        pred_m: predicted depth, same shape, already scaled; clamped here to ``[min_depth, max_depth]``.
    Returns:
        dict with abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3 (floats).
    Raises:
        ValueError if shapes differ, no GT pixel is valid, or a valid pixel has a NaN prediction.
    """
    gt_m = np.asarray(gt_m, dtype=np.float64)
    pred_m = np.asarray(pred_m, dtype=np.float64)
    if gt_m.shape != pred_m.shape:
        raise ValueError(f"gt {gt_m.shape} and pred {pred_m.shape} differ in shape")
    mask = valid_mask(gt_m, min_depth, max_depth)
    if not mask.any():
        raise ValueError("no valid GT pixel (all GT outside (min_depth, max_depth) or non-finite)")
    return _errors(gt_m[mask], _clamp(pred_m[mask], min_depth, max_depth))


def _clamp(pred: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    if np.isnan(pred).any():
        raise ValueError(f"prediction is NaN at {int(np.isnan(pred).sum())} valid GT pixels")
    # +inf (zero disparity) clamps to max_depth, like any far prediction.
    return np.clip(pred, min_depth, max_depth)


def _errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Metrics on matched 1-D arrays of valid, clamped depths (N,)."""
    ratio = np.maximum(gt / pred, pred / gt)
    diff = gt - pred
    log_diff = np.log(gt) - np.log(pred)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff**2))),
        "a1": float(np.mean(ratio < 1.25)),
        "a2": float(np.mean(ratio < 1.25**2)),
        "a3": float(np.mean(ratio < 1.25**3)),
    }


def evaluate_image(gt_m: np.ndarray, pred_m: np.ndarray, *, median_scaling: bool = True, fixed_scale: float = 1.0,
                   min_depth: float = MIN_DEPTH_M, max_depth: float = MAX_DEPTH_M, cap_m: float = MAX_DEPTH_M,
                   crop: str | None = "garg", index: int = 0) -> dict[str, float]:
    """Protocol for one image: mask, fixed scale, median scale, clamp, metrics.

    Args:
        gt_m: GT depth (H, W) metres, 0 / non-finite = invalid.
        pred_m: predicted depth (H, W), already at GT resolution (resize the disparity, then invert).
        median_scaling: multiply by ``median(gt) / median(pred)`` over the valid pixels (after ``fixed_scale``).
        fixed_scale: multiplier applied first (Monodepth2's ``pred_depth_scale_factor``, e.g. 5.4 for stereo).
        min_depth, max_depth: prediction clamp; ``min_depth`` is also the GT lower bound.
        cap_m: GT upper bound (exclusive).
        crop: "garg" | "eigen" | None.
        index: image index, only for error messages.
    Returns:
        dict of the seven metrics plus ``ratio`` (1.0 without median scaling) and ``n_valid``.
    """
    gt_m = np.asarray(gt_m)
    pred_m = np.asarray(pred_m)
    if gt_m.shape != pred_m.shape:
        raise ValueError(f"image {index}: gt {gt_m.shape} and pred {pred_m.shape} differ in shape "
                         "(resize the prediction's disparity to GT resolution first)")
    mask = valid_mask(gt_m, min_depth, cap_m, crop)
    n_valid = int(mask.sum())
    if n_valid == 0:
        raise ValueError(f"image {index}: empty valid mask (no GT in ({min_depth}, {cap_m}) m"
                         f"{' inside the ' + crop + ' crop' if crop else ''})")
    gt = gt_m[mask].astype(np.float64)
    pred = pred_m[mask].astype(np.float64) * fixed_scale
    if np.isnan(pred).any():
        raise ValueError(f"image {index}: prediction is NaN at {int(np.isnan(pred).sum())} valid GT pixels")
    ratio = 1.0
    if median_scaling:
        try:
            ratio = median_scale(gt, pred)
        except ValueError as e:
            raise ValueError(f"image {index}: {e}") from e
        pred = pred * ratio
    out = _errors(gt, _clamp(pred, min_depth, max_depth))
    out["ratio"] = ratio
    out["n_valid"] = n_valid
    return out


def evaluate_depth(gts: Iterable[np.ndarray], preds: Iterable[np.ndarray], *, median_scaling: bool = True,
                   fixed_scale: float = 1.0, cap_m: float = MAX_DEPTH_M, crop: str | None = "garg",
                   min_depth: float = MIN_DEPTH_M, max_depth: float = MAX_DEPTH_M) -> EvalResult:
    """Evaluate a set of images: :func:`evaluate_image` on each pair, then the mean over images.

    ``gts`` and ``preds`` are iterables of (H_i, W_i) arrays (they may be generators, so a whole split never
    has to sit in memory). Raises ``ValueError`` naming the image for an empty mask or NaN prediction, and if
    the two iterables differ in length.
    """
    per_image = []
    sentinel = object()
    gt_iter, pred_iter = iter(gts), iter(preds)
    while True:
        gt, pred = next(gt_iter, sentinel), next(pred_iter, sentinel)
        if gt is sentinel and pred is sentinel:
            break
        if gt is sentinel or pred is sentinel:
            raise ValueError(f"gts and preds differ in length (one ran out after {len(per_image)} pairs)")
        per_image.append(evaluate_image(gt, pred, median_scaling=median_scaling, fixed_scale=fixed_scale,
                                        min_depth=min_depth, max_depth=max_depth, cap_m=cap_m, crop=crop,
                                        index=len(per_image)))
    return summarize(per_image, median_scaling)


def summarize(per_image: list[dict[str, float]], median_scaling: bool = True) -> EvalResult:
    """Mean over images of per-image metric dicts (from :func:`evaluate_image`) + median-ratio statistics."""
    if not per_image:
        raise ValueError("no images to evaluate")
    table = np.array([[p[k] for k in METRIC_NAMES] for p in per_image], dtype=np.float64)
    metrics = dict(zip(METRIC_NAMES, table.mean(axis=0).tolist()))
    result = EvalResult(metrics=metrics, per_image=per_image)
    if median_scaling:
        ratios = np.array([p["ratio"] for p in per_image], dtype=np.float64)
        med = float(np.median(ratios))
        result.ratio_mean = float(ratios.mean())
        result.ratio_std = float(ratios.std())
        result.ratio_median = med
        result.ratio_std_rel = float(np.std(ratios / med))
    return result


def format_table(metrics: dict[str, float]) -> str:
    """Two-line table in the papers' layout: a header of the 7 names and a LaTeX-ready ``&`` row (3 decimals)."""
    header = "  " + " | ".join(f"{name:>8}" for name in METRIC_NAMES)
    row = "".join(f"&{metrics[name]:8.3f}  " for name in METRIC_NAMES) + "\\\\"
    return header + "\n" + row
