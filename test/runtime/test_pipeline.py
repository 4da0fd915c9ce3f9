"""The per-frame pipeline (monodepth_ros.pipeline): disparity -> depth, the scale-policy objects, the output
resolution, and the frames it refuses. The node and both replay modes run exactly this (see test_replay's
in-process vs through-node agreement)."""

from __future__ import annotations

import numpy as np
import pytest

from monodepth_ros.geometry import denormalize_intrinsics, scale_intrinsics
from monodepth_ros.node_params import defaults, parse_overrides
from monodepth_ros.pipeline import (
    CameraFrame,
    FrameParams,
    FrameRejected,
    depth_from_disp,
    frame_cloud,
    frame_colored,
    frame_confidence,
    frame_invalid_share,
    process_frame,
    scale_policy_from_params,
)
from monodepth_ros.scale_policy import FixedScale, GroundPlanePolicy, GroundPlaneScale, RelativeScale

H, W = 96, 320  # camera
h, w = 48, 160  # model
K = denormalize_intrinsics(np.array([[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1.0]]), W, H)


def road_disp(cam_h: float, scale: float) -> np.ndarray:
    """Disparity (h, w) of a level road seen from ``cam_h`` metres by a model whose units are off by ``scale``:
    metric depth = scale / disp. The rows above the horizon get a far 200 m."""
    Km = scale_intrinsics(K, w / W, h / H)
    v = np.arange(h, dtype=np.float64)[:, None]
    ray_y = (v - Km[1, 2]) / Km[1, 1]
    depth_m = np.where(ray_y > 1e-3, cam_h / np.maximum(ray_y, 1e-3), 200.0)
    return np.broadcast_to(scale / depth_m, (h, w)).astype(np.float32).copy()


def test_depth_from_disp_inverts_and_marks_invalid_as_nan():
    disp = np.array([[0.5, 0.0, -1.0, np.nan, np.inf]], np.float32)
    depth = depth_from_disp(disp, scale=3.0)
    assert depth[0, 0] == pytest.approx(6.0)
    assert np.isnan(depth[0, 1:]).all()  # zero, negative and non-finite disparity have no depth


def test_depth_from_disp_masks_outside_the_depth_range():
    disp = np.array([[1.0, 0.1, 0.01, 0.001]], np.float32)
    depth = depth_from_disp(disp, scale=2.0, min_depth=5.0, max_depth=1000.0)
    assert np.isnan(depth[0, 0]) and np.isnan(depth[0, 3])  # 2 m < min, 2000 m > max (sky)
    np.testing.assert_allclose(depth[0, 1:3], [20.0, 200.0])


def test_depth_from_disp_resizes_the_disparity_not_the_depth():
    disp = np.array([[1.0, 0.25]], np.float32)  # depth 1 m beside 4 m
    depth = depth_from_disp(disp, (1, 3))
    # The middle pixel: bilinear disparity 0.625 -> 1.6 m; a resized depth would have said 2.5 m.
    assert depth.shape == (1, 3)
    assert depth[0, 1] == pytest.approx(1.0 / 0.625, rel=1e-5)


def test_process_frame_applies_the_fixed_scale_at_the_camera_resolution():
    disp = np.full((h, w), 0.5, np.float32)
    out = process_frame(CameraFrame(np.zeros((H, W, 3), np.uint8), K, (W, H)), disp, FrameParams(),
                        FixedScale(3.0))
    assert out.depth.shape == (H, W) and out.scale == 3.0 and out.problems == ()
    np.testing.assert_allclose(out.depth, 6.0)
    np.testing.assert_allclose(out.K, K)


def test_process_frame_at_model_resolution_scales_K_and_shrinks_the_image():
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    out = process_frame(CameraFrame(rgb, K), np.full((h, w), 0.5, np.float32),
                        FrameParams(output_resolution="model"), RelativeScale())
    assert out.depth.shape == (h, w) and out.rgb.shape == (h, w, 3)
    np.testing.assert_allclose(out.K, scale_intrinsics(K, 0.5, 0.5))
    np.testing.assert_allclose(out.depth, 2.0)  # relative: model units, scale 1


def test_process_frame_masks_depth_beyond_the_range():
    disp = np.full((h, w), 0.5, np.float32)
    disp[:, : w // 2] = 0.001  # 1000 m
    out = process_frame(CameraFrame(np.zeros((H, W, 3), np.uint8), K), disp, FrameParams(max_depth=80.0),
                        FixedScale(1.0))
    assert np.isnan(out.depth[:, : W // 2 - 2]).all() and np.isfinite(out.depth[:, W // 2 + 2:]).all()
    conf = frame_confidence(out)  # a model without a validity output: 255 wherever a depth is published
    assert out.confidence is None and conf.dtype == np.uint8 and set(np.unique(conf)) == {0, 255}
    np.testing.assert_array_equal(conf == 255, np.isfinite(out.depth))


@pytest.mark.parametrize("bad,kind", [
    ("info_size", "camera_info"),
    ("K", "camera_info"),
    ("all_nan", "model_output"),
])
def test_process_frame_refuses_a_frame_it_cannot_stand_behind(bad, kind):
    rgb = np.zeros((H, W, 3), np.uint8)
    disp = np.full((h, w), 0.5, np.float32)
    camera = CameraFrame(rgb, K, (W, H))
    if bad == "info_size":
        camera = CameraFrame(rgb, K, (640, 192))
    elif bad == "K":
        camera = CameraFrame(rgb, np.zeros((3, 3)))
    else:
        disp[:] = np.nan
    with pytest.raises(FrameRejected) as e:
        process_frame(camera, disp, FrameParams(), FixedScale(1.0))
    assert e.value.kind == kind
    if bad == "info_size":
        assert "640x192" in str(e.value) and f"{W}x{H}" in str(e.value)


def test_process_frame_reports_partly_bad_model_output_and_keeps_the_frame():
    disp = np.full((h, w), 0.5, np.float32)
    disp[0, :3] = np.nan
    out = process_frame(CameraFrame(np.zeros((H, W, 3), np.uint8), K), disp, FrameParams(), FixedScale(1.0))
    assert out.problems == (("model_output", "model output has 3 NaN/inf pixels (set to NaN)"),)
    assert np.isfinite(out.depth[H // 2:]).all()


def test_policies_from_node_parameters():
    p = defaults()
    auto = scale_policy_from_params(p, 4.0, "metric")
    assert isinstance(auto, FixedScale) and auto.name == "metric" and auto.value == 4.0  # auto: the model's own
    fixed = scale_policy_from_params(parse_overrides(["scale_policy:=fixed", "fixed_scale:=2.5"]), 4.0, "metric")
    assert fixed.name == "fixed" and fixed.value == 2.5
    assert isinstance(scale_policy_from_params(parse_overrides(["scale_policy:=relative"]), 4.0, "relative"),
                      RelativeScale)
    g = scale_policy_from_params(parse_overrides(["scale_policy:=ground_plane", "camera_height_m:=2.0"]), 4.0,
                                 "metric")
    assert isinstance(g, GroundPlanePolicy) and g.ground.camera_height_m == 2.0 and g.fallback == 4.0
    g = scale_policy_from_params(parse_overrides(["scale_policy:=ground_plane"]), 1.0, "relative")
    assert g.fallback is None  # a relative model's scale is never a fallback


@pytest.mark.parametrize("overrides,model_policy,match", [
    ([], "relative", "this model is relative"),  # the default (auto) refuses to call model units metres
    (["scale_policy:=metric"], "relative", "this model is relative"),
    (["scale_policy:=fixed"], "metric", "fixed_scale > 0"),
])
def test_a_scale_nobody_can_stand_behind_is_refused_with_what_to_set(overrides, model_policy, match):
    with pytest.raises(ValueError, match=match) as e:
        scale_policy_from_params(parse_overrides(overrides), 1.0, model_policy)
    if model_policy == "relative":
        assert "ground_plane" in str(e.value) and "relative" in str(e.value)


def test_ground_plane_with_a_relative_model_publishes_nothing_until_the_road_is_found():
    policy = scale_policy_from_params(parse_overrides(["scale_policy:=ground_plane"]), 1.0, "relative")
    rgb = np.zeros((H, W, 3), np.uint8)
    wall = np.full((h, w), 0.1, np.float32)
    with pytest.raises(FrameRejected, match="nothing is published until the road is found") as e:
        process_frame(CameraFrame(rgb, K), wall, FrameParams(), policy)
    assert e.value.kind == "ground_plane"
    out = process_frame(CameraFrame(rgb, K), road_disp(1.65, 0.2), FrameParams(max_depth=1e4), policy)
    assert out.scale == pytest.approx(0.2, rel=0.05)


def test_parse_overrides_refuses_unknown_names_and_bad_values():
    with pytest.raises(ValueError, match="unknown depth node parameter 'scale_polcy'"):
        parse_overrides(["scale_polcy:=fixed"])
    with pytest.raises(ValueError, match="scale_policy must be one of"):
        parse_overrides(["scale_policy:=median_free"])  # the old name: one vocabulary now
    with pytest.raises(ValueError, match="min_depth .* must be below max_depth"):
        parse_overrides(["min_depth:=90"])
    with pytest.raises(ValueError, match="not NAME:=VALUE"):
        parse_overrides(["min_depth=1"])
    assert parse_overrides(["min_depth:=1"])["min_depth"] == 1.0  # an int given for a double


def test_ground_plane_policy_makes_a_relative_road_metric_and_says_when_it_falls_back():
    true_scale = 0.2  # the model's depth is 5x too large; the road's known height says by how much
    ground = GroundPlaneScale(alpha=1.0)
    policy = GroundPlanePolicy(ground, fallback=1.0, fallback_source="the model's scale")
    rgb = np.zeros((H, W, 3), np.uint8)
    out = process_frame(CameraFrame(rgb, K), road_disp(1.65, true_scale), FrameParams(max_depth=1e4), policy)
    assert out.problems == ()
    assert out.scale == pytest.approx(true_scale, rel=0.03)
    # A wall in front: no road, the previous scale is kept and the frame says so.
    wall = np.full((h, w), 0.1, np.float32)
    out2 = process_frame(CameraFrame(rgb, K), wall, FrameParams(), policy)
    assert out2.scale == pytest.approx(out.scale)
    assert out2.problems and out2.problems[0][0] == "ground_plane" and "keeping the previous scale" in \
        out2.problems[0][1]
    # A fresh estimator that never saw a road uses the fallback and names its source.
    fresh = GroundPlanePolicy(GroundPlaneScale(), fallback=1.0, fallback_source="the model's scale")
    out3 = process_frame(CameraFrame(rgb, K), wall, FrameParams(), fresh)
    assert out3.scale == 1.0 and "using the model's scale 1" in out3.problems[0][1]


def test_cloud_and_colour_picture_follow_the_depth():
    rgb = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    out = process_frame(CameraFrame(rgb, K), np.full((h, w), 0.5, np.float32), FrameParams(), FixedScale(1.0))
    points, fields = frame_cloud(out, FrameParams(decimation=2))
    assert points.shape == (H // 2, W // 2) and {f[0] for f in fields} >= {"x", "y", "z", "rgb"}
    np.testing.assert_allclose(points["z"], 2.0)
    points, fields = frame_cloud(out, FrameParams(cloud_rgb=False))
    assert "rgb" not in {f[0] for f in fields}
    assert frame_colored(out, FrameParams()).shape == (H, W, 3)


# ---- the validity output ---------------------------------------------------------------------------------------
def column_ramp() -> np.ndarray:
    """Validity (h, w) rising linearly from 0 (left column) to 1 (right column)."""
    return np.broadcast_to(np.arange(w, dtype=np.float32) / (w - 1), (h, w)).copy()


def ramp_at_input_resolution() -> np.ndarray:
    """The bilinear (half-pixel centres) 2x upsampling of :func:`column_ramp`, written out: a linear ramp stays
    linear inside and is clamped at the borders. (H, W) float64."""
    x_in = np.clip((np.arange(W) + 0.5) * (w / W) - 0.5, 0, w - 1)
    return np.broadcast_to(x_in / (w - 1), (H, W))


@pytest.mark.parametrize("resolution", ["model", "input"])
def test_depth_is_nan_exactly_where_the_validity_is_below_the_threshold(resolution):
    valid = column_ramp()
    params = FrameParams(output_resolution=resolution, validity_threshold=0.5)
    out = process_frame(CameraFrame(np.zeros((H, W, 3), np.uint8), K), np.full((h, w), 0.5, np.float32), params,
                        FixedScale(1.0), valid)
    expected_valid = valid if resolution == "model" else ramp_at_input_resolution()
    masked = expected_valid < 0.5
    assert 0.4 < masked.mean() < 0.6
    np.testing.assert_array_equal(np.isnan(out.depth), masked)
    np.testing.assert_allclose(out.depth[~masked], 2.0)
    np.testing.assert_allclose(out.confidence, expected_valid, atol=1e-6)  # the validity at the output size
    assert frame_invalid_share(out, params) == pytest.approx(masked.mean())


def test_a_validity_threshold_of_zero_masks_nothing():
    params = FrameParams(validity_threshold=0.0)
    out = process_frame(CameraFrame(np.zeros((H, W, 3), np.uint8), K), np.full((h, w), 0.5, np.float32), params,
                        FixedScale(1.0), np.zeros((h, w), np.float32))
    assert np.isfinite(out.depth).all() and frame_invalid_share(out, params) == 0.0
    assert frame_invalid_share(process_frame(CameraFrame(np.zeros((H, W, 3), np.uint8), K),
                                             np.full((h, w), 0.5, np.float32), params, FixedScale(1.0)),
                               params) is None  # no validity output: nothing to report


def test_confidence_is_zero_where_nan_and_the_validity_where_published():
    valid = column_ramp()
    disp = np.full((h, w), 0.5, np.float32)
    disp[: h // 4] = 1e-4  # 10 km: beyond max_depth, NaN whatever the validity says
    out = process_frame(CameraFrame(np.zeros((H, W, 3), np.uint8), K), disp,
                        FrameParams(output_resolution="model", validity_threshold=0.25), FixedScale(1.0), valid)
    conf = frame_confidence(out)
    assert conf.dtype == np.uint8 and conf.shape == (h, w)
    published = np.isfinite(out.depth)
    np.testing.assert_array_equal(conf[~published], 0)
    np.testing.assert_array_equal(conf[published], np.round(255 * valid[published]))
    assert not published[: h // 4].any() and (conf[h // 4:, -1] == 255).all()
    # Published with a validity that rounds to 0 (threshold 0): 1, never 0, which means "no depth".
    out0 = process_frame(CameraFrame(np.zeros((H, W, 3), np.uint8), K), np.full((h, w), 0.5, np.float32),
                         FrameParams(output_resolution="model", validity_threshold=0.0), FixedScale(1.0), valid)
    conf0 = frame_confidence(out0)
    assert (conf0[:, 0] == 1).all() and conf0.min() == 1 and conf0.max() == 255


def test_the_ground_plane_fit_never_sees_what_the_validity_output_masks():
    """The whole road region marked as no surface: the policy finds no road (and falls back), where the same
    frame without the validity output gives the road's scale."""
    frame, disp = CameraFrame(np.zeros((H, W, 3), np.uint8), K), road_disp(1.65, 0.2)
    params = FrameParams(max_depth=1e4)
    no_road = np.zeros((h, w), np.float32)

    def policy():
        return GroundPlanePolicy(GroundPlaneScale(alpha=1.0), fallback=1.0, fallback_source="the model's scale")

    assert process_frame(frame, disp, params, policy()).scale == pytest.approx(0.2, rel=0.03)
    masked = process_frame(frame, disp, params, policy(), no_road)
    assert masked.scale == 1.0 and "using the model's scale 1" in masked.problems[0][1]
    off = FrameParams(max_depth=1e4, validity_threshold=0.0)
    assert process_frame(frame, disp, off, policy(), no_road).scale == pytest.approx(0.2, rel=0.03)


def test_a_validity_map_of_another_size_than_the_disparity_is_refused():
    with pytest.raises(ValueError, match="validity .* and disparity .* must have the same size"):
        process_frame(CameraFrame(np.zeros((H, W, 3), np.uint8), K), np.full((h, w), 0.5, np.float32),
                      FrameParams(), FixedScale(1.0), np.ones((h // 2, w), np.float32))
