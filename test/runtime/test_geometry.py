"""Geometry core: round trips, pose algebra, resize/crop commutation, and the photometric warp."""

import cv2
import numpy as np
import pytest
import torch
from monodepth_training import geometry as tg

from monodepth_ros import geometry as g


def _random_K(rng, W, H):
    fx = rng.uniform(0.4, 1.5) * W
    fy = fx * rng.uniform(0.9, 1.1)
    return np.array([[fx, 0, rng.uniform(0.3, 0.7) * W], [0, fy, rng.uniform(0.3, 0.7) * H], [0, 0, 1.0]])


@pytest.mark.parametrize("seed", range(5))
def test_backproject_then_project_is_identity_on_random_depth_and_intrinsics(seed):
    rng = np.random.default_rng(seed)
    H, W = 17, 31
    K = _random_K(rng, W, H)
    depth = rng.uniform(0.5, 80.0, (H, W))
    pts = g.backproject(depth, K)
    uv, z = g.project(pts, K)
    v, u = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(uv[..., 0], u, atol=1e-9)
    np.testing.assert_allclose(uv[..., 1], v, atol=1e-9)
    np.testing.assert_allclose(z, depth)


def test_backproject_keeps_invalid_depth_invalid():
    K = np.array([[100.0, 0, 8], [0, 100, 4], [0, 0, 1]])
    depth = np.full((8, 16), 5.0, np.float32)
    depth[2, 3] = np.nan
    pts = g.backproject(depth, K)
    assert pts.dtype == np.float32
    assert np.isnan(pts[2, 3]).all() and np.isfinite(pts[0, 0]).all()


def test_project_marks_points_behind_camera():
    uv, _ = g.project(np.array([[1.0, 2.0, -3.0], [1.0, 2.0, 4.0]]), np.eye(3))
    assert np.isnan(uv[0]).all() and np.allclose(uv[1], [0.25, 0.5])


def test_normalised_intrinsics_round_trip():
    K = np.array([[721.5, 0, 609.6], [0, 721.5, 172.9], [0, 0, 1]])
    Kn = g.normalize_intrinsics(K, 1242, 375)
    np.testing.assert_allclose(g.denormalize_intrinsics(Kn, 1242, 375), K)
    assert Kn[0, 2] == pytest.approx(609.6 / 1242)


@pytest.mark.parametrize("seed", range(3))
def test_rescaling_intrinsics_commutes_with_resizing(seed):
    # A scene point projects to (u, v) at full size; after cv2.resize the same feature sits at the
    # coordinates the rescaled intrinsics predict. Checked on a rendered dot's intensity centroid.
    rng = np.random.default_rng(seed)
    H, W, h, w = 120, 200, 48, 80
    K = _random_K(rng, W, H)
    p = np.array([rng.uniform(-2, 2), rng.uniform(-1, 1), rng.uniform(8, 12)])
    (u, v), _ = g.project(p, K)
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 6.0**2)).astype(np.float32)
    small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    ys, xs = np.mgrid[0:h, 0:w]
    cu, cv_ = (small * xs).sum() / small.sum(), (small * ys).sum() / small.sum()
    (u2, v2), _ = g.project(p, g.scale_intrinsics(K, w / W, h / H))
    assert abs(u2 - cu) < 0.05 and abs(v2 - cv_) < 0.05


def test_crop_intrinsics_shifts_principal_point():
    K = np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    p = np.array([0.3, -0.2, 5.0])
    (u, v), _ = g.project(p, K)
    (uc, vc), _ = g.project(p, g.crop_intrinsics(K, 10, 7))
    assert (uc, vc) == pytest.approx((u - 10, v - 7))


def test_validate_intrinsics_names_the_problem():
    with pytest.raises(ValueError, match="focal"):
        g.validate_intrinsics(np.zeros(9))
    with pytest.raises(ValueError, match="3x3"):
        g.validate_intrinsics(np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        g.validate_intrinsics(np.full((3, 3), np.nan))


@pytest.mark.parametrize("seed", range(4))
def test_pose_inverse_and_rodrigues(seed):
    rng = np.random.default_rng(seed)
    aa = rng.normal(size=3) * rng.choice([1e-10, 1e-3, 1.0])
    T = g.pose_from_axis_angle(aa, rng.normal(size=3))
    np.testing.assert_allclose(T @ g.invert_pose(T), np.eye(4), atol=1e-12)
    R = T[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    theta = np.linalg.norm(aa)
    if theta > 1e-6:  # the axis is a fixed point and the angle matches the trace
        np.testing.assert_allclose(R @ (aa / theta), aa / theta, atol=1e-12)
        assert (np.trace(R) - 1) / 2 == pytest.approx(np.cos(theta), abs=1e-9)


def test_torch_pose_matches_numpy_pose():
    rng = np.random.default_rng(0)
    aa, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    T_t = tg.pose_from_axis_angle(torch.tensor(aa), torch.tensor(t))
    np.testing.assert_allclose(T_t.numpy(), g.pose_from_axis_angle(aa, t), atol=1e-10)
    T_inv = tg.pose_from_axis_angle(torch.tensor(aa), torch.tensor(t), invert=True)
    np.testing.assert_allclose(T_inv.numpy(), g.invert_pose(g.pose_from_axis_angle(aa, t)), atol=1e-10)


def test_warp_coords_of_fronto_parallel_plane_shift_by_analytic_disparity():
    # Camera moves by b metres along +x: a plane at depth Z shifts every pixel by fx * b / Z to the left.
    K = np.array([[200.0, 0, 32], [0, 200, 16], [0, 0, 1]])
    Z, b = 10.0, 0.5
    T_src_from_tgt = g.pose_from_axis_angle(np.zeros(3), np.array([-b, 0, 0]))
    uv = g.warp_coords(np.full((32, 64), Z), K, T_src_from_tgt)
    v, u = np.mgrid[0:32, 0:64]
    np.testing.assert_allclose(uv[..., 0], u - K[0, 0] * b / Z, atol=1e-9)
    np.testing.assert_allclose(uv[..., 1], v, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_warp_moves_textured_plane_by_analytic_amount(dtype):
    # Source = target texture shifted right by fx*b/Z pixels (integer shift, so resampling is exact).
    H, W, fx, Z = 24, 64, 160.0, 8.0
    shift_px = 4
    b = shift_px * Z / fx
    rng = np.random.default_rng(0)
    tex = rng.uniform(size=(3, H, W + 16))
    target = tex[:, :, 8 : 8 + W]
    source = tex[:, :, 8 - shift_px : 8 - shift_px + W]  # source pixel u shows target pixel u + shift
    K = torch.tensor([[[fx, 0, W / 2], [0, fx, H / 2], [0, 0, 1]]], dtype=dtype)
    T = tg.pose_from_axis_angle(torch.zeros(1, 3, dtype=dtype), torch.tensor([[b, 0, 0]], dtype=dtype))
    depth = torch.full((1, 1, H, W), Z, dtype=dtype)
    warped = tg.warp(torch.tensor(source, dtype=dtype)[None], depth, K, T)
    inner = slice(shift_px + 1, W - shift_px - 1)
    err = (warped[0, :, :, inner] - torch.tensor(target, dtype=dtype)[:, :, inner]).abs().max().item()
    assert err < 1e-4
    # A wrong depth (x2) misaligns the texture clearly.
    bad = tg.warp(torch.tensor(source, dtype=dtype)[None], depth * 2, K, T)
    assert (bad[0, :, :, inner] - torch.tensor(target, dtype=dtype)[:, :, inner]).abs().mean() > 0.1


def test_torch_warp_gradients_reach_depth_and_pose():
    H, W = 8, 12
    src = torch.rand(1, 3, H, W)
    depth = torch.full((1, 1, H, W), 5.0, requires_grad=True)
    aa = torch.full((1, 3), 0.01, requires_grad=True)
    t = torch.tensor([[0.1, 0.0, 0.2]], requires_grad=True)
    K = torch.tensor([[[10.0, 0, 6], [0, 10, 4], [0, 0, 1]]])
    tg.warp(src, depth, K, tg.pose_from_axis_angle(aa, t)).sum().backward()
    for p in (depth, aa, t):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_quaternions_and_rpy_give_the_rotation_ros_means():
    from monodepth_ros.geometry import axis_angle_to_matrix, quaternion_to_matrix, rpy_to_matrix
    from monodepth_ros.synthetic.writers import _quaternion_xyzw

    R = axis_angle_to_matrix(np.array([0.1, -0.3, 0.7]))
    np.testing.assert_allclose(quaternion_to_matrix(np.array(_quaternion_xyzw(R)) * 3.0), R, atol=1e-12)
    # 90 deg about z (x, y, z, w) = (0, 0, sin 45, cos 45): x -> y.
    np.testing.assert_allclose(quaternion_to_matrix([0, 0, np.sqrt(0.5), np.sqrt(0.5)]) @ [1, 0, 0], [0, 1, 0],
                               atol=1e-12)
    # URDF rpy = Rz(yaw) Ry(pitch) Rx(roll).
    r, p, y = 0.2, -0.4, 1.1
    Rx = axis_angle_to_matrix(np.array([r, 0, 0]))
    Ry = axis_angle_to_matrix(np.array([0, p, 0]))
    Rz = axis_angle_to_matrix(np.array([0, 0, y]))
    np.testing.assert_allclose(rpy_to_matrix([r, p, y]), Rz @ Ry @ Rx, atol=1e-12)
    many = rpy_to_matrix(np.array([[r, p, y], [0.0, 0.0, 0.0]]))  # batched, as oxts_to_poses calls it
    assert many.shape == (2, 3, 3)
    np.testing.assert_allclose(many[0], Rz @ Ry @ Rx, atol=1e-12)
    np.testing.assert_allclose(many[1], np.eye(3), atol=1e-12)
    with pytest.raises(ValueError, match="norm 0"):
        quaternion_to_matrix([0, 0, 0, 0])


def test_interpolated_poses_lie_between_the_samples_and_are_unknown_outside_them():
    from monodepth_ros.geometry import interpolate_poses, quaternion_to_matrix

    half = np.sqrt(0.5)
    t = np.array([1.0, 0.0])  # any order
    pos = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    q = np.array([[0, 0, half, half], [0, 0, 0, 1.0]])  # 90 deg about z at t = 1
    T = interpolate_poses([0.5, 1.0, -0.1, 1.2], t, pos, q)
    np.testing.assert_allclose(T[0, :3, 3], [1, 0, 0])
    np.testing.assert_allclose(T[0, :3, :3], quaternion_to_matrix([0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)]),
                               atol=1e-12)  # nlerp at the midpoint is exactly 45 deg
    np.testing.assert_allclose(T[1, :3, :3], quaternion_to_matrix(q[0]), atol=1e-12)
    assert np.isnan(T[2]).all() and np.isnan(T[3]).all()
    # q and -q are the same rotation: the shorter arc is taken.
    T2 = interpolate_poses([0.5], t, pos, np.array([[0, 0, -half, -half], [0, 0, 0, 1.0]]))
    np.testing.assert_allclose(T2[0], T[0], atol=1e-12)
