"""Pinhole camera geometry shared by the runtime, the evaluation and (through its torch twin) the trainer.

Conventions, used everywhere in the project:
- Camera optical frame (REP 103 ``*_optical_frame``): x right, y down, z forward. Depth = z, in metres.
- Pixel coordinates: ``u`` = column, ``v`` = row, the centre of the top-left pixel is (0, 0).
- ``K`` is a 3x3 pixel intrinsic matrix. ``K_norm`` is the same matrix divided by image size
  (row 0 by width, row 1 by height), as Monodepth2 stores KITTI intrinsics, so it is resolution free.
- Poses are 4x4 homogeneous matrices named ``T_<to>_from_<from>``: ``p_to = T_to_from_from @ p_from``.
- Disparity follows Monodepth2: a sigmoid output ``sigma`` in [0, 1] maps linearly to a disparity in
  [1/max_depth, 1/min_depth]; depth = 1 / disparity.

Every function is pure NumPy (no torch), so the runtime can use it on a robot without PyTorch.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "normalize_intrinsics",
    "denormalize_intrinsics",
    "scale_intrinsics",
    "crop_intrinsics",
    "validate_intrinsics",
    "pixel_grid",
    "backproject",
    "project",
    "axis_angle_to_matrix",
    "pose_from_axis_angle",
    "invert_pose",
    "warp_coords",
    "quaternion_to_matrix",
    "rpy_to_matrix",
    "interpolate_poses",
    "R_BODY_FROM_OPTICAL",
]

# A camera's optical frame (z forward, x right, y down) seen from its body frame (REP 103: x forward, y left, z up):
# the columns are the optical axes in body coordinates.
R_BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def normalize_intrinsics(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel intrinsics (3, 3) -> normalised intrinsics (3, 3) for an image of ``width`` x ``height``."""
    K_norm = np.array(K, dtype=np.float64, copy=True)
    K_norm[0, :] /= width
    K_norm[1, :] /= height
    return K_norm


def denormalize_intrinsics(K_norm: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised intrinsics (3, 3) -> pixel intrinsics (3, 3) for an image of ``width`` x ``height``."""
    K = np.array(K_norm, dtype=np.float64, copy=True)
    K[0, :] *= width
    K[1, :] *= height
    return K


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics (3, 3) after resizing the image by (sx, sy) = (new_w / old_w, new_h / old_h).

    Uses the corner-aligned resize convention of ``cv2.resize`` / ``align_corners=False``: pixel centre ``u``
    maps to ``(u + 0.5) * sx - 0.5``, so ``cx' = (cx + 0.5) * sx - 0.5``.
    """
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 0] *= sx
    K2[0, 1] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K2


def crop_intrinsics(K: np.ndarray, left: int, top: int) -> np.ndarray:
    """Intrinsics (3, 3) after cropping ``left`` columns and ``top`` rows off the image."""
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 2] -= left
    K2[1, 2] -= top
    return K2


def validate_intrinsics(K: np.ndarray) -> np.ndarray:
    """Return ``K`` as a float64 (3, 3) array, or raise ``ValueError`` naming what is wrong with it."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape == (9,):
        K = K.reshape(3, 3)
    if K.shape != (3, 3):
        raise ValueError(f"intrinsics must be 3x3, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("intrinsics contain NaN or inf")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"intrinsics need positive focal lengths, got fx={K[0, 0]:g} fy={K[1, 1]:g}")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"intrinsics last row must be [0, 0, 1], got {K[2].tolist()}")
    return K


def pixel_grid(height: int, width: int, dtype=np.float64) -> np.ndarray:
    """Homogeneous pixel coordinates (3, H*W), row-major: column ``i`` is pixel (u=i % W, v=i // W)."""
    v, u = np.meshgrid(np.arange(height, dtype=dtype), np.arange(width, dtype=dtype), indexing="ij")
    return np.stack([u.ravel(), v.ravel(), np.ones(height * width, dtype=dtype)], axis=0)


def backproject(depth_m: np.ndarray, K: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Depth image (H, W) in metres -> camera-frame points (H, W, 3), optical frame (x right, y down, z fwd).

    Non-finite depth gives non-finite points, so invalid pixels stay NaN/inf through the cloud. ``out``: an
    (H, W, 3) array (a view into a message buffer is fine) to write the points into instead of a new one.
    """
    depth_m = np.asarray(depth_m)
    H, W = depth_m.shape
    K = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if out is None:
        out = np.empty((H, W, 3), dtype=depth_m.dtype if np.issubdtype(depth_m.dtype, np.floating) else np.float64)
    # Separable rays: x = (u - cx) / fx * z. Avoids a full K^-1 matmul and stays exact for skew-free K.
    ray_x = ((np.arange(W, dtype=np.float64) - cx) / fx).astype(out.dtype)
    ray_y = ((np.arange(H, dtype=np.float64) - cy) / fy).astype(out.dtype)
    np.multiply(depth_m, ray_x[None, :], out=out[..., 0])
    np.multiply(depth_m, ray_y[:, None], out=out[..., 1])
    if not np.may_share_memory(out[..., 2], depth_m):  # z may already be in place (the cloud writes it first)
        out[..., 2] = depth_m
    return out


def project(points: np.ndarray, K: np.ndarray, eps: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points (..., 3) -> pixel coordinates (..., 2) as (u, v), and depth z (...).

    Points with z <= eps get NaN pixel coordinates (behind or on the camera plane).
    """
    points = np.asarray(points, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    z = points[..., 2]
    # A transposed view as the right operand is ~60x slower in OpenBLAS (measured); make it contiguous.
    uvw = points @ np.ascontiguousarray(K.T)
    valid = z > eps
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[..., :2] / np.where(valid, z, np.nan)[..., None]
    return uv, z


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Axis-angle vectors (..., 3) (direction = axis, norm = angle in rad) -> rotation matrices (..., 3, 3).

    Rodrigues' formula; small angles use the Taylor expansion so the result stays accurate near zero.
    """
    r = np.asarray(axis_angle, dtype=np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)[..., None]  # (..., 1, 1)
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    zero = np.zeros_like(r[..., 0])
    Kx = np.stack(
        [
            np.stack([zero, -r[..., 2], r[..., 1]], -1),
            np.stack([r[..., 2], zero, -r[..., 0]], -1),
            np.stack([-r[..., 1], r[..., 0], zero], -1),
        ],
        -2,
    )  # skew(r), (..., 3, 3)
    eye = np.broadcast_to(np.eye(3), Kx.shape)
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(safe)) / safe**2)
    return eye + a * Kx + b * (Kx @ Kx)


def pose_from_axis_angle(axis_angle: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) + translation (..., 3) -> homogeneous pose (..., 4, 4) = [R | t]."""
    R = axis_angle_to_matrix(axis_angle)
    t = np.asarray(translation, dtype=np.float64)
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid poses (..., 4, 4), using R^T rather than a general matrix inverse."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    Ti = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    Ti[..., :3, :3] = Rt
    Ti[..., :3, 3:] = -Rt @ t
    Ti[..., 3, 3] = 1.0
    return Ti


def warp_coords(depth_m: np.ndarray, K: np.ndarray, T_src_from_tgt: np.ndarray) -> np.ndarray:
    """Where each target pixel lands in the source image.

    Args:
        depth_m: target depth (H, W), metres.
        K: pixel intrinsics (3, 3), shared by target and source.
        T_src_from_tgt: pose (4, 4) mapping target-camera points into the source camera.
    Returns:
        Source pixel coordinates (H, W, 2) as (u, v); NaN where the point falls behind the source camera.
    """
    pts = backproject(depth_m, K).astype(np.float64)
    T = np.asarray(T_src_from_tgt, dtype=np.float64)
    pts_src = pts @ np.ascontiguousarray(T[:3, :3].T) + T[:3, 3]
    uv, _ = project(pts_src, K)
    return uv


def quaternion_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) in ROS order (x, y, z, w), any norm > 0 -> rotation matrices (..., 3, 3)."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"quaternions must be (..., 4) x, y, z, w; got shape {q.shape}")
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(n > 0):
        raise ValueError("a quaternion of norm 0 is not a rotation")
    x, y, z, w = np.moveaxis(q / n, -1, 0)
    R = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], axis=-1)
    return R.reshape(q.shape[:-1] + (3, 3))


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """Roll-pitch-yaw (..., 3) radians, fixed axes x then y then z -> rotations (..., 3, 3) = Rz(y) Ry(p) Rx(r).

    The convention of URDF / tf2 and of KITTI's oxts (``datasets.kitti.oxts_to_poses``).
    """
    rpy = np.asarray(rpy, dtype=np.float64)
    if rpy.shape[-1:] != (3,):
        raise ValueError(f"roll-pitch-yaw must be (..., 3), got shape {rpy.shape}")
    cr, cp, cy = np.moveaxis(np.cos(rpy), -1, 0)
    sr, sp, sy = np.moveaxis(np.sin(rpy), -1, 0)
    R = np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
                  sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
                  -sp, cp * sr, cp * cr], axis=-1)
    return R.reshape(rpy.shape[:-1] + (3, 3))


def interpolate_poses(t_query: np.ndarray, t: np.ndarray, positions: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """Poses sampled at stamps ``t`` (N,) (any order) -> poses (M, 4, 4) at ``t_query`` (M,); all-NaN outside [t0, tN].

    Positions (N, 3) are interpolated linearly; orientations (N, 4, x y z w) by normalised linear interpolation
    of the quaternions, sign-aligned to the shorter arc. Between odometry samples a few tens of ms apart the
    rotation is small, where nlerp and slerp differ by far less than odometry's own error (5e-6 rad at 5 deg).
    """
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    q = np.asarray(q_xyzw, dtype=np.float64).reshape(-1, 4)
    tq = np.asarray(t_query, dtype=np.float64).reshape(-1)
    if not len(t) == len(positions) == len(q):
        raise ValueError(f"need one position and quaternion per stamp: {len(t)}, {len(positions)}, {len(q)}")
    out = np.full((len(tq), 4, 4), np.nan)
    if len(t) == 0:
        return out
    order = np.argsort(t, kind="stable")
    t, positions, q = t[order], positions[order], q[order]
    inside = (tq >= t[0]) & (tq <= t[-1])
    if not inside.any():
        return out
    tq_in = tq[inside]
    # The bracketing samples t[lo] <= tq <= t[hi] (both 0 when there is one sample).
    hi = np.minimum(np.maximum(np.searchsorted(t, tq_in), 1), len(t) - 1)
    lo = np.maximum(hi - 1, 0)
    span = t[hi] - t[lo]
    a = np.where(span > 0, (tq_in - t[lo]) / np.where(span > 0, span, 1.0), 0.0)[:, None]
    q_lo, q_hi = q[lo], q[hi]
    q_hi = np.where((np.sum(q_lo * q_hi, axis=1) < 0)[:, None], -q_hi, q_hi)
    T = np.zeros((len(tq_in), 4, 4))
    T[:, :3, :3] = quaternion_to_matrix((1 - a) * q_lo + a * q_hi)
    T[:, :3, 3] = (1 - a) * positions[lo] + a * positions[hi]
    T[:, 3, 3] = 1.0
    out[inside] = T
    return out
