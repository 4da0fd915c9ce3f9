"""Scores of a validity (sky) output against ground truth: how much sky it removes, and how many surfaces with it.

Pure numpy (no torch), shared by ``monodepth-fit-validity``'s report, ``benchmarks/sky.py`` and the tests.
"""

from __future__ import annotations

import numpy as np

from monodepth_ros.pipeline import invalid_pixels


def sky_scores(valid_prob: np.ndarray, sky: np.ndarray, threshold: float) -> dict:
    """Pixels marked invalid (:func:`monodepth_ros.pipeline.invalid_pixels`, as the node masks them) against the
    true sky.

    valid_prob (..., H, W) float in [0, 1] (1 = surface); sky (..., H, W) bool, same shape, True = sky. Returns
    ``recall`` (share of the sky marked invalid), ``precision`` (share of the invalid pixels that are sky),
    ``surface_invalid`` (share of the surfaces marked invalid: the depth a robot loses), ``sky_share`` and
    ``pixels``; recall is NaN without sky, precision NaN when nothing is marked.
    """
    valid_prob = np.asarray(valid_prob, np.float32)
    sky = np.asarray(sky, bool)
    if valid_prob.shape != sky.shape:
        raise ValueError(f"valid_prob {valid_prob.shape} and sky {sky.shape} differ in shape")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    marked = invalid_pixels(valid_prob, threshold)
    n_sky, n_marked, n_surface = int(sky.sum()), int(marked.sum()), int((~sky).sum())
    hit = int((marked & sky).sum())
    return {
        "threshold": float(threshold),
        "recall": hit / n_sky if n_sky else float("nan"),
        "precision": hit / n_marked if n_marked else float("nan"),
        "surface_invalid": (n_marked - hit) / n_surface if n_surface else float("nan"),
        "sky_share": n_sky / sky.size if sky.size else float("nan"),
        "pixels": int(sky.size),
    }
