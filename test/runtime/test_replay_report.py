"""report.png follows report.json: the scale-ratio panel says what the report's settings say (no "median scaling
off" for a relative model without GT), and is left out, not drawn empty, when median scaling is off."""

from __future__ import annotations

import cv2
import pytest

from monodepth_ros.replay.report import plot_per_frame, scale_panel


def _report(median_scaling: bool, ratios: list[float | None]) -> dict:
    frames = [{"index": i, "stamp_ns": i * 100_000_000, "latency_ms": 20.0 + i, "dropped": False,
               "abs_rel": None if r is None else 0.1, "a1": None if r is None else 0.9, "ratio": r}
              for i, r in enumerate(ratios)]
    return {"mode": "in-process", "bag": {"path": "/bags/drive"}, "model": {"name": "m.onnx"},
            "settings": {"median_scaling": median_scaling}, "latency": {"what": "inference"}, "per_frame": frames}


def test_relative_model_without_gt_says_median_scaling_is_on():
    title, note = scale_panel(_report(True, [None, None, None]))
    assert "median-scaling ratio" in title
    assert note.startswith("median scaling on") and "no frame was scored" in note
    assert "off" not in note


def test_relative_model_with_gt_plots_the_ratios():
    assert scale_panel(_report(True, [2.0, 2.1, None])) == (
        "median-scaling ratio per frame (a steady ratio = a consistent scale)", None)


def test_metric_model_has_no_ratio_panel():
    assert scale_panel(_report(False, [1.0, 1.0])) is None
    assert scale_panel({"per_frame": []}) is None


@pytest.mark.parametrize("median_scaling, n_panels", [(True, 3), (False, 2)])
def test_report_png_draws_the_ratio_panel_only_with_median_scaling(tmp_path, median_scaling, n_panels):
    path = plot_per_frame(_report(median_scaling, [2.0, 2.1, 1.9]), tmp_path / "report.png")
    img = cv2.imread(str(path))
    assert img is not None and img.shape[1] == 1000
    assert img.shape[0] == round(100 * (2.8 * n_panels + 0.1))  # 2.8 in per panel at 100 dpi
