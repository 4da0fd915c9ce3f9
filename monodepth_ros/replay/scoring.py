"""Scoring a replay against GT: each frame with :func:`monodepth_ros.evaluation.metrics.evaluate_image`, summarised
at the end, with a few sample frames kept for the panel grid."""

from __future__ import annotations

import cv2
import numpy as np

from monodepth_ros.bag.frames import BagFrame
from monodepth_ros.evaluation.metrics import evaluate_image, summarize
from monodepth_ros.pipeline import depth_from_disp

__all__ = ["N_PANELS", "pred_at_gt_resolution", "sky_published_nan", "Scorer"]

N_PANELS = 4


def pred_at_gt_resolution(pred_m: np.ndarray, gt_shape: tuple[int, int], fill_m: float) -> tuple[np.ndarray, int]:
    """Prediction (H, W) -> (H_gt, W_gt) for scoring, and the number of non-finite pixels replaced by ``fill_m``.

    Resizes the *disparity* bilinearly and inverts (:func:`monodepth_ros.pipeline.depth_from_disp`).
    Non-finite depth (a node masks depth beyond its range, or a bad model output) counts as ``fill_m`` (the
    model's far limit): the metrics need a number at every GT pixel, and "far" is what those pixels mean.
    """
    pred = np.asarray(pred_m, dtype=np.float32)
    bad = ~(np.isfinite(pred) & (pred > 0))
    n_bad = int(bad.sum())
    if n_bad:
        pred = np.where(bad, np.float32(fill_m), pred)
    if pred.shape != tuple(gt_shape):
        pred = depth_from_disp(1.0 / pred, gt_shape)
    return pred, n_bad


def sky_published_nan(pred_m: np.ndarray, gt_m: np.ndarray) -> tuple[int, int]:
    """(GT sky pixels, of those published as NaN) for one frame: pred_m (H, W) as published (NaN = no depth),
    gt_m (H_gt, W_gt) with +inf where there is nothing to measure (REP 118 "too far": the synthetic world's sky).
    The prediction's NaN mask is brought to the GT's size by nearest neighbour."""
    sky = np.isposinf(np.asarray(gt_m))
    n_sky = int(sky.sum())
    if not n_sky:
        return 0, 0
    nan = ~np.isfinite(np.asarray(pred_m, dtype=np.float32))
    if nan.shape != sky.shape:
        nan = cv2.resize(nan.astype(np.uint8), sky.shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
    return n_sky, int((nan & sky).sum())


class Scorer:
    """Per-frame scoring with :func:`monodepth_ros.evaluation.metrics.evaluate_image`, summarised at the end; keeps
    a few evenly spaced sample frames for the panel grid."""

    def __init__(self, cfg, median_scaling: bool, fill_m: float, n_expected: int):
        self.cfg, self.median_scaling, self.fill_m = cfg, median_scaling, fill_m
        self.per_image: list[dict] = []
        self.by_index: dict[int, dict] = {}
        self.samples: list[tuple] = []
        self.filled_px = 0
        self.sky_px = 0  # GT +inf pixels (sky) of the scored frames, and how many of them were published as NaN
        self.sky_nan_px = 0
        self._owed = 0
        self.skipped: list[str] = []
        self.sample_at = set(np.linspace(0, max(n_expected - 1, 0), min(N_PANELS, max(n_expected, 1))).round()
                             .astype(int).tolist())

    def score(self, frame: BagFrame, pred_m: np.ndarray | None) -> None:
        if frame.index in self.sample_at:
            self._owed += 1  # a sample slot; a dropped or GT-less frame hands it to the next scored one
        if frame.gt_depth_m is None or pred_m is None:
            return
        gt = frame.gt_depth_m
        n_sky, n_sky_nan = sky_published_nan(pred_m, gt)
        self.sky_px += n_sky
        self.sky_nan_px += n_sky_nan
        pred, n_bad = pred_at_gt_resolution(pred_m, gt.shape, self.fill_m)
        self.filled_px += n_bad
        try:
            m = evaluate_image(gt, pred, median_scaling=self.median_scaling, fixed_scale=1.0, cap_m=self.cfg.max_depth,
                               crop=self.cfg.crop, index=frame.index)
        except ValueError as e:  # e.g. no valid GT pixel in this frame (all sky, lidar saw nothing)
            self.skipped.append(str(e))
            return
        self.per_image.append(m)
        self.by_index[frame.index] = m
        if self._owed > 0:
            self._owed -= 1
            rgb = frame.rgb if frame.rgb.shape[:2] == gt.shape else cv2.resize(frame.rgb, gt.shape[::-1])
            self.samples.append((rgb, pred * np.float32(m["ratio"]), gt, f"frame {frame.index}"))

    def result(self):
        return summarize(self.per_image, self.median_scaling) if self.per_image else None
