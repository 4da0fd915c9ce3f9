"""Sparse ground-truth depth from a lidar: read a sensor_msgs/PointCloud2, move it into the camera frame with a
fixed extrinsic calibration, project it with the camera intrinsics, and keep the nearest return per pixel.

This is how the KITTI depth ground truth is built from the Velodyne, applied to any robot's lidar so that
``monodepth-replay --lidar-topic /points --extrinsics T.yaml`` can score a bag that has no depth camera.
The extrinsics file is YAML holding the 4x4 ``T_cam_from_lidar`` (lidar points -> camera optical frame,
x right, y down, z forward)::

    T_cam_from_lidar:
      - [0.0, -1.0,  0.0,  0.0]
      - [0.0,  0.0, -1.0, -0.08]
      - [1.0,  0.0,  0.0, -0.27]
      - [0.0,  0.0,  0.0,  1.0]

(a flat list of 16 numbers, row-major, is accepted too).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml

from monodepth_ros.geometry import project

__all__ = ["load_extrinsics", "validate_rigid", "pointcloud2_to_xyz", "lidar_to_depth", "EXTRINSICS_KEY"]

EXTRINSICS_KEY = "T_cam_from_lidar"

def validate_rigid(T: np.ndarray, what: str = "transform", tol: float = 1e-3) -> np.ndarray:
    """Return ``T`` as a float64 (4, 4) rigid transform, or raise ValueError saying what is wrong."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape == (16,):
        T = T.reshape(4, 4)
    if T.shape != (4, 4):
        raise ValueError(f"{what} must be 4x4 (or 16 numbers, row-major), got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{what} contains NaN or inf")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=tol):
        raise ValueError(f"{what} last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=tol) or np.linalg.det(R) < 0:
        raise ValueError(f"{what} rotation part is not a proper rotation (R R^T != I or det < 0)")
    return T


def load_extrinsics(path: str | os.PathLike) -> np.ndarray:
    """Read ``T_cam_from_lidar`` (4, 4) from a YAML file (key ``T_cam_from_lidar``, or the bare matrix)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"extrinsics file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"extrinsics file {p} is not valid YAML: {e}") from None
    if isinstance(data, dict):
        if EXTRINSICS_KEY not in data:
            raise ValueError(f"extrinsics file {p} has no '{EXTRINSICS_KEY}' key (found {sorted(data)})")
        data = data[EXTRINSICS_KEY]
    try:
        T = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"extrinsics in {p} are not a numeric matrix: {e}") from None
    return validate_rigid(T, f"{EXTRINSICS_KEY} in {p}")


def pointcloud2_to_xyz(msg) -> np.ndarray:
    """sensor_msgs/PointCloud2 (rosbags or rclpy message) -> finite points (N, 3) float64 in the cloud's frame.

    Field layout, ``point_step``, ``row_step`` and ``is_bigendian`` are honoured by the node's cloud reader
    (:func:`monodepth_ros.pointcloud.pointcloud2_to_array`); points with a non-finite coordinate are dropped
    (organised clouds mark gaps so).
    """
    from monodepth_ros.pointcloud import pointcloud2_to_array

    names = [f.name for f in msg.fields]
    missing = [n for n in ("x", "y", "z") if n not in names]
    if missing:
        raise ValueError(f"PointCloud2 lacks field(s) {missing}; has {names}")
    H, W = int(msg.height), int(msg.width)
    if H * W == 0:
        return np.zeros((0, 3))
    point_step, row_step, size = int(msg.point_step), int(msg.row_step), len(msg.data)
    if point_step <= 0 or row_step < W * point_step or size != row_step * H:
        raise ValueError(f"PointCloud2 {W}x{H}: point_step {point_step}, row_step {row_step} and data size "
                         f"{size} do not fit")
    try:
        cloud = pointcloud2_to_array(msg).reshape(-1)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"PointCloud2 field layout is unusable: {e}") from None
    xyz = np.stack([cloud[n].astype(np.float64) for n in ("x", "y", "z")], axis=1)
    return xyz[np.all(np.isfinite(xyz), axis=1)]


def lidar_to_depth(points_lidar: np.ndarray, T_cam_from_lidar: np.ndarray, K: np.ndarray, height: int, width: int,
                   min_depth_m: float = 0.1) -> np.ndarray:
    """Project lidar points into a camera and keep the nearest return per pixel.

    Args:
        points_lidar: (N, 3) points in the lidar frame, metres.
        T_cam_from_lidar: (4, 4) rigid transform lidar -> camera optical frame.
        K: (3, 3) pixel intrinsics of an image (height, width).
        min_depth_m: points closer than this (or behind the camera) are ignored.
    Returns:
        Sparse depth (height, width) float32 metres; 0 where no point landed (the KITTI "no GT" value).
    """
    pts = np.asarray(points_lidar, dtype=np.float64).reshape(-1, 3)
    T = validate_rigid(T_cam_from_lidar, "T_cam_from_lidar")
    pts_cam = pts @ T[:3, :3].T + T[:3, 3]
    uv, z = project(pts_cam, K)
    # Pixel (u, v) covers [u - 0.5, u + 0.5): round to the nearest centre (geometry.py: centres at integers).
    with np.errstate(invalid="ignore"):
        ok = (z > min_depth_m) & np.all(np.isfinite(uv), axis=1)
        u = np.floor(uv[:, 0] + 0.5)
        v = np.floor(uv[:, 1] + 0.5)
        ok &= (u >= 0) & (u < width) & (v >= 0) & (v < height)
    pix = (v[ok] * width + u[ok]).astype(np.int64)
    zs = z[ok]
    depth = np.zeros(height * width, dtype=np.float32)
    if pix.size:
        # Nearest point wins: sort by (pixel, depth) and take the first entry of each pixel. Deterministic,
        # unlike fancy-index assignment with repeated indices, whose write order NumPy does not guarantee.
        order = np.lexsort((zs, pix))
        first = np.unique(pix[order], return_index=True)[1]
        depth[pix[order][first]] = zs[order][first]
    return depth.reshape(height, width)
