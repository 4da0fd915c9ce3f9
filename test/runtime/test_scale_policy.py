"""Scale policies: the ground-plane scale estimator on rendered roads
(level, pitched/rolled, with obstacles and noise, with no road at all) and its EMA smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from monodepth_ros.geometry import axis_angle_to_matrix, denormalize_intrinsics
from monodepth_ros.scale_policy import GroundPlaneScale, fit_ground_plane, mount_normal

H, W = 96, 320
K = denormalize_intrinsics(np.array([[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1.0]]), W, H)
CAM_H = 1.65


def road_depth(pitch_deg=0.0, roll_deg=0.0, cam_h=CAM_H) -> np.ndarray:
    """Metric depth (H, W) of an infinite flat road seen from ``cam_h``; sky = inf."""
    R = axis_angle_to_matrix(np.array([np.deg2rad(pitch_deg), 0.0, np.deg2rad(roll_deg)]))
    n = R @ np.array([0.0, 1.0, 0.0])  # road normal in the camera frame, pointing down
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    denom = rays @ n
    with np.errstate(divide="ignore"):
        return np.where(denom > 1e-6, cam_h / denom, np.inf).astype(np.float32)


@pytest.mark.parametrize("method", ["mount", "fit"])
@pytest.mark.parametrize("pitch_deg,roll_deg", [(0.0, 0.0), (4.0, 0.0), (-3.0, 2.0)])
def test_ground_plane_recovers_scale_of_relative_road_depth(pitch_deg, roll_deg, method):
    true_scale = 7.3
    rel = road_depth(pitch_deg, roll_deg) / true_scale
    # mount: the pitch and roll come from the mount (URDF/TF); fit: they are estimated from the depth.
    est = GroundPlaneScale(camera_height_m=CAM_H, alpha=1.0, method=method, pitch_deg=pitch_deg, roll_deg=roll_deg)
    assert est.update(rel, K) == pytest.approx(true_scale, rel=0.005)
    assert est.fresh and est.last_fit.inlier_fraction > 0.95


def test_mount_normal_points_down_and_forward_for_a_camera_looking_down():
    n = mount_normal(5.0, 0.0)
    assert n[1] == pytest.approx(np.cos(np.deg2rad(5.0))) and n[2] == pytest.approx(np.sin(np.deg2rad(5.0)))
    np.testing.assert_allclose(mount_normal(), [0.0, 1.0, 0.0])


def test_a_wrong_mount_pitch_biases_the_scale_by_about_9_percent_per_degree():
    # The price of taking the normal from the mount: the pitch must be known. Rows farther down the road sit
    # lower by z * tan(error), so a camera looking down by 1-4 deg, configured as level, overestimates the scale.
    errors = []
    for pitch in (1.0, 2.0, 4.0):
        level = GroundPlaneScale(camera_height_m=CAM_H, alpha=1.0, method="mount", pitch_deg=0.0)
        errors.append(level.update(road_depth(pitch_deg=pitch) / 3.0, K) / 3.0 - 1.0)
        right = GroundPlaneScale(camera_height_m=CAM_H, alpha=1.0, method="mount", pitch_deg=pitch)
        assert right.update(road_depth(pitch_deg=pitch) / 3.0, K) == pytest.approx(3.0, rel=0.005)
    assert 0.05 < errors[0] < 0.13 and errors[0] < errors[1] < errors[2]


def test_mount_method_ignores_a_road_whose_far_part_the_model_got_wrong():
    # A network's road is often right near the car and compressed far away (measured on real KITTI frames): the
    # fitted plane then tilts and, extrapolated back under the camera, gives a wrong height. Along the known
    # normal the near road still sets the scale.
    depth = road_depth()
    v = np.arange(H, dtype=np.float32)[:, None]
    squash = np.clip(1.0 - 0.9 * (0.8 * H - v) / H, 0.5, 1.0)  # up to ~25 % too near towards the region's top
    warped = depth * np.where(v < 0.8 * H, squash, 1.0)
    mount = GroundPlaneScale(camera_height_m=CAM_H, alpha=1.0, method="mount")
    fit = GroundPlaneScale(camera_height_m=CAM_H, alpha=1.0, method="fit")
    s_mount, s_fit = mount.update(warped / 2.0, K), fit.update(warped / 2.0, K)
    assert s_mount == pytest.approx(2.0, rel=0.05)
    assert s_fit is None or abs(s_fit / 2.0 - 1.0) > abs(s_mount / 2.0 - 1.0)


def test_ground_plane_is_robust_to_an_obstacle_and_noise():
    rng = np.random.default_rng(0)
    depth = road_depth()
    depth[int(0.6 * H):, 100:200] = 9.0  # the back of a car, 30 % of the road region
    depth *= rng.normal(1.0, 0.01, depth.shape).astype(np.float32)
    est = GroundPlaneScale(camera_height_m=CAM_H, alpha=1.0)
    assert est.update(depth / 4.0, K) == pytest.approx(4.0, rel=0.02)


def test_no_road_keeps_previous_scale_and_reports_stale():
    est = GroundPlaneScale(camera_height_m=CAM_H, alpha=1.0)
    wall = np.full((H, W), 5.0, np.float32)  # fronto-parallel: its normal is the optical axis, not "up"
    assert est.update(wall, K) is None and not est.fresh
    est.update(road_depth() / 2.0, K)
    assert est.update(wall, K) == pytest.approx(2.0, rel=0.005) and not est.fresh


def test_fit_rejects_too_few_points_and_tilted_planes():
    assert fit_ground_plane(np.zeros((5, 3))) is None
    steep = road_depth(pitch_deg=30.0)  # beyond max_tilt_deg = 15
    est = GroundPlaneScale(camera_height_m=CAM_H, max_tilt_deg=15.0, method="fit")
    assert est.update(steep, K) is None


def test_ema_smooths_frame_to_frame_noise():
    rng = np.random.default_rng(1)
    est = GroundPlaneScale(camera_height_m=CAM_H, alpha=0.2)
    raw, smooth = [], []
    for _ in range(40):
        s = 5.0 * rng.normal(1.0, 0.05)  # per-frame scale jitter of a real network
        smooth.append(est.update(road_depth() / s, K))
        raw.append(CAM_H / est.last_fit.height)
    assert smooth[0] == pytest.approx(raw[0])  # the first estimate is taken as is
    assert np.std(smooth[10:]) < 0.5 * np.std(raw[10:])
    assert np.mean(smooth[10:]) == pytest.approx(5.0, rel=0.03)


def test_ground_plane_on_synthetic_world_frame():
    synthetic = pytest.importorskip("monodepth_ros.synthetic")
    world = synthetic.SyntheticWorld(synthetic.SynthConfig(width=W, height=H))
    frame = world.render(3)
    est = GroundPlaneScale(camera_height_m=synthetic.SynthConfig().camera_height_m, alpha=1.0)
    depth_rel = np.where(np.isfinite(frame.depth_m), frame.depth_m / 3.0, np.nan).astype(np.float32)
    assert est.update(depth_rel, frame.K) == pytest.approx(3.0, rel=0.05)
