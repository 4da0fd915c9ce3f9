"""KITTI depth metrics against hand-computed values, the masking rules, median scaling and image averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monodepth_ros.evaluation.metrics import (
    METRIC_NAMES,
    compute_depth_metrics,
    crop_mask,
    evaluate_depth,
    evaluate_image,
    format_table,
    median_scale,
    valid_mask,
)

# gt / pred pairs whose metrics are easy to work out on paper:
#   errors 1, 2, 1; relative errors 0.5, 0.5, 0.1; ratios max(gt/pred, pred/gt) = 2, 1.5, 1.1
GT = np.array([2.0, 4.0, 10.0])
PRED = np.array([1.0, 6.0, 11.0])
HAND = {
    "abs_rel": (0.5 + 0.5 + 0.1) / 3,
    "sq_rel": (1 / 2 + 4 / 4 + 1 / 10) / 3,
    "rmse": math.sqrt((1 + 4 + 1) / 3),
    "rmse_log": math.sqrt((math.log(2) ** 2 + math.log(1.5) ** 2 + math.log(1.1) ** 2) / 3),
    "a1": 1 / 3,  # only 1.1 < 1.25
    "a2": 2 / 3,  # 1.5 < 1.5625, 2 is not
    "a3": 2 / 3,  # 2 > 1.953125
}


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_each_metric_matches_hand_computed_value(name):
    got = compute_depth_metrics(GT, PRED)
    assert got[name] == pytest.approx(HAND[name], rel=1e-12)


def test_zero_beyond_cap_and_nonfinite_gt_are_excluded():
    gt = np.concatenate([GT, [0.0, 80.0, 95.0, np.nan, np.inf, -3.0, 1e-4]])
    pred = np.concatenate([PRED, [7.0, 1.0, 3.0, 5.0, 5.0, 5.0, 5.0]])
    got = compute_depth_metrics(gt, pred)
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(HAND[name], rel=1e-12)


def test_cap_is_configurable_and_strict_like_the_reference():
    gt = np.array([10.0, 50.0, 80.0])
    mask80 = valid_mask(gt)
    assert mask80.tolist() == [True, True, False]  # gt < 80, as Monodepth2's mask
    assert valid_mask(gt, cap_m=50.0).tolist() == [True, False, False]


def test_predictions_are_clamped_to_min_and_max_depth():
    got = compute_depth_metrics(np.array([50.0, 2.0]), np.array([500.0, 0.0]))
    # 500 -> 80 (rel. error 0.6), 0 -> 1e-3 (rel. error (2 - 1e-3) / 2)
    assert got["abs_rel"] == pytest.approx((0.6 + (2 - 1e-3) / 2) / 2)


def test_infinite_prediction_clamps_to_max_depth():
    got = compute_depth_metrics(np.array([40.0]), np.array([np.inf]))
    assert got["abs_rel"] == pytest.approx(1.0)


def test_nan_prediction_on_valid_pixel_is_a_clear_error():
    with pytest.raises(ValueError, match="NaN"):
        compute_depth_metrics(np.array([4.0, 5.0]), np.array([np.nan, 5.0]))


def test_empty_valid_mask_raises_naming_the_image():
    good = np.full((4, 4), 10.0)
    empty = np.zeros((4, 4))  # no LiDAR return anywhere
    with pytest.raises(ValueError, match=r"image 2: empty valid mask"):
        evaluate_depth([good, good, empty], [good, good, good], crop=None)
    with pytest.raises(ValueError, match="no valid GT"):
        compute_depth_metrics(np.array([0.0, 90.0]), np.array([1.0, 1.0]))


def test_mean_is_over_images_not_pixels():
    # Image A: one valid pixel, abs_rel 0.5. Image B: three valid pixels, all exact.
    gt_a, pred_a = np.array([[4.0, 0.0, 0.0]]), np.array([[2.0, 9.0, 9.0]])
    gt_b, pred_b = np.array([[5.0, 6.0, 7.0]]), np.array([[5.0, 6.0, 7.0]])
    res = evaluate_depth([gt_a, gt_b], [pred_a, pred_b], median_scaling=False, crop=None)
    assert res.metrics["abs_rel"] == pytest.approx(0.25)  # (0.5 + 0) / 2; pixel mean would be 0.125
    assert [p["n_valid"] for p in res.per_image] == [1, 3]


def test_median_scale_is_ratio_of_medians_on_masked_pixels():
    gt = np.array([1.0, 2.0, 3.0, 100.0])
    pred = np.array([10.0, 20.0, 30.0, 0.5])
    mask = np.array([True, True, True, False])
    assert median_scale(gt, pred, mask) == pytest.approx(0.1)


def test_median_scaling_removes_a_global_scale_and_reports_ratio_stats():
    rng = np.random.default_rng(0)
    gts = [rng.uniform(2, 70, size=(6, 8)) for _ in range(2)]
    preds = [gts[0] / 2.0, gts[1] / 4.0]
    res = evaluate_depth(gts, preds, median_scaling=True, crop=None)
    assert res.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert res.metrics["a1"] == 1.0
    assert [p["ratio"] for p in res.per_image] == pytest.approx([2.0, 4.0])
    assert res.ratio_mean == pytest.approx(3.0)
    assert res.ratio_std == pytest.approx(1.0)
    assert res.ratio_median == pytest.approx(3.0)
    unscaled = evaluate_depth(gts, preds, median_scaling=False, crop=None)
    assert unscaled.metrics["abs_rel"] == pytest.approx((0.5 + 0.75) / 2)
    assert math.isnan(unscaled.ratio_mean)


def test_fixed_scale_is_applied_before_metrics_without_median_scaling():
    gt = np.array([[5.4, 10.8, 27.0]])
    res = evaluate_image(gt, gt / 5.4, median_scaling=False, fixed_scale=5.4, crop=None)
    assert res["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert res["ratio"] == 1.0


def test_garg_and_eigen_crop_boxes_on_kitti_resolution():
    garg = crop_mask((375, 1242), "garg")
    rows, cols = np.nonzero(garg)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (153, 371, 44, 1197)
    eigen = crop_mask((375, 1242), "eigen")
    rows, cols = np.nonzero(eigen)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (124, 342, 44, 1197)
    assert crop_mask((375, 1242), None) is None
    with pytest.raises(ValueError, match="unknown crop"):
        crop_mask((10, 10), "kitti")


def test_crop_excludes_pixels_outside_the_box():
    H, W = 40, 60
    gt = np.full((H, W), 10.0)
    pred = np.full((H, W), 10.0)
    pred[:10] = 1.0  # rows above the Garg crop (top = int(0.408 * 40) = 16) are wrong
    assert evaluate_image(gt, pred, median_scaling=False, crop="garg")["abs_rel"] == 0.0
    assert evaluate_image(gt, pred, median_scaling=False, crop=None)["abs_rel"] > 0.2


def test_shape_mismatch_names_the_image():
    with pytest.raises(ValueError, match="image 5: .*differ in shape"):
        evaluate_image(np.ones((4, 4)), np.ones((2, 2)), index=5)


def test_format_table_prints_seven_columns_like_the_papers():
    text = format_table(dict(zip(METRIC_NAMES, [0.1151, 0.903, 4.863, 0.193, 0.877, 0.959, 0.981])))
    header, row = text.splitlines()
    assert [h.strip() for h in header.split("|")] == METRIC_NAMES
    assert row.count("&") == 7 and row.endswith("\\\\")
    assert [c.strip() for c in row.rstrip("\\").split("&")[1:]] == [
        "0.115", "0.903", "4.863", "0.193", "0.877", "0.959", "0.981"
    ]  # fmt: skip


# ------------------------------------------------------------------------------------ on the synthetic world


@pytest.fixture(scope="module")
def synthetic_depths():
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

    world = SyntheticWorld(SynthConfig(width=320, height=96, seed=2))
    depths = [world.render(i).depth_m for i in (0, 7, 15)]
    assert all(np.isinf(d).any() and np.isfinite(d).mean() > 0.5 for d in depths)  # sky + scene, as on KITTI
    return depths


def test_synthetic_exact_gt_as_prediction_scores_perfectly(synthetic_depths):
    for median_scaling in (True, False):
        res = evaluate_depth(synthetic_depths, [d.copy() for d in synthetic_depths], median_scaling=median_scaling)
        assert res.metrics["abs_rel"] == 0.0 and res.metrics["rmse"] == 0.0
        assert res.metrics["a1"] == 1.0
    assert res.per_image[0]["n_valid"] > 1000


def test_synthetic_gt_times_1_1_needs_median_scaling(synthetic_depths):
    preds = [d * 1.1 for d in synthetic_depths]
    scaled = evaluate_depth(synthetic_depths, preds, median_scaling=True)
    assert scaled.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert scaled.ratio_mean == pytest.approx(1 / 1.1, rel=1e-6)
    raw = evaluate_depth(synthetic_depths, preds, median_scaling=False)
    # 0.1 everywhere except GT in (72.7, 80) m, where the 80 m clamp trims the over-estimate
    assert raw.metrics["abs_rel"] == pytest.approx(0.1, abs=0.005)
    assert raw.metrics["a1"] == 1.0  # 1.1 < 1.25
