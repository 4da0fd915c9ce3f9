"""Sparse ground-truth depth from a lidar: read a sensor_msgs/PointCloud2, move it into the camera frame with a
fixed extrinsic calibration, project it with the camera intrinsics, and keep the nearest return per pixel.

This is how the KITTI depth ground truth is built from the Velodyne, applied to any robot's lidar so that
``monodepth-replay --lidar-topic /points --extrinsics T.yaml`` can score a bag that has no depth camera.
:func:`lidar_depth_map` is the one projection both tools use (``monodepth-eval``'s Velodyne GT goes through it
too, from :mod:`monodepth_ros.evaluation.kitti_gt`), and the one place that decides what a GT pixel holds: camera z
(``camera_z``, REP 118, replay's default) or the lidar's forward distance (``lidar_forward``, KITTI's reference
and ``monodepth-eval``'s default); see ``--lidar-depth`` on both tools.
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

__all__ = [
    "load_extrinsics",
    "validate_rigid",
    "pointcloud2_to_xyz",
    "lidar_depth_map",
    "lidar_to_depth",
    "EXTRINSICS_KEY",
    "DEPTH_CONVENTIONS",
]

EXTRINSICS_KEY = "T_cam_from_lidar"
# What a lidar GT pixel holds: camera optical-axis depth (REP 118) or the lidar's forward distance (KITTI).
DEPTH_CONVENTIONS = ("camera_z", "lidar_forward")


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
    (:func:`monodepth_ros.msgs.pointcloud.pointcloud2_to_array`); points with a non-finite coordinate are dropped
    (organised clouds mark gaps so).
    """
    from monodepth_ros.msgs.pointcloud import pointcloud2_to_array

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


def lidar_depth_map(points_lidar: np.ndarray, T_cam_from_lidar: np.ndarray, K: np.ndarray, height: int,
                    width: int, *, depth_convention: str = "camera_z", pixel_origin: int = 0,
                    min_depth_m: float = 0.1) -> np.ndarray:
    """Sparse depth image from lidar points: THE projection behind both replay's and the KITTI evaluation's GT.

    Which number a GT pixel holds is a convention, and the two tools' defaults differ on purpose:
    - ``"camera_z"``: the point's z in the camera optical frame, the depth a depth camera and this package's
      node publish (REP 118). Replay's default.
    - ``"lidar_forward"``: the point's x in the lidar frame (REP 103: x forward), i.e. the distance ahead of the
      *lidar*. KITTI's reference GT export and every Eigen-split paper score against this; on KITTI it is
      ~0.27 m more than camera z (the lidar sits behind the camera). ``monodepth-eval``'s default.

    Args:
        points_lidar: (N, 3) points in the lidar frame, metres.
        T_cam_from_lidar: (4, 4) rigid transform lidar -> camera optical frame (x right, y down, z forward).
        K: (3, 3) pixel intrinsics of an image (height, width).
        depth_convention: "camera_z" | "lidar_forward" (see above).
        pixel_origin: 0 = ROS/OpenCV pixels (centres at integers from 0: a point at u lands on floor(u + 0.5));
            1 = the KITTI devkit's MATLAB pixels (column ``round(u) - 1``), which the reference keeps and so do we
            for KITTI, so that our GT sits on exactly the pixels everybody else's does.
        min_depth_m: points with camera z <= this (behind or on the camera) cannot be projected and are ignored.
    Returns:
        (height, width) float64 metres; 0 where no point landed (the KITTI "no GT" value). Where several points
        land on one pixel the smallest depth (of the chosen convention) wins; a non-positive depth is no GT.
    """
    if depth_convention not in DEPTH_CONVENTIONS:
        raise ValueError(f"depth_convention must be one of {DEPTH_CONVENTIONS}, got {depth_convention!r}")
    if pixel_origin not in (0, 1):
        raise ValueError(f"pixel_origin must be 0 (ROS) or 1 (KITTI devkit), got {pixel_origin!r}")
    pts = np.asarray(points_lidar, dtype=np.float64).reshape(-1, 3)
    T = validate_rigid(T_cam_from_lidar, "T_cam_from_lidar")
    pts_cam = pts @ np.ascontiguousarray(T[:3, :3].T) + T[:3, 3]
    uv, z = project(pts_cam, K)
    depth = z if depth_convention == "camera_z" else pts[:, 0]
    with np.errstate(invalid="ignore"):
        if pixel_origin == 0:
            col, row = np.floor(uv[:, 0] + 0.5), np.floor(uv[:, 1] + 0.5)
        else:  # np.round (half to even), as the reference Python does
            col, row = np.round(uv[:, 0]) - 1, np.round(uv[:, 1]) - 1
        ok = (z > min_depth_m) & (depth > 0) & np.isfinite(col) & np.isfinite(row)
        ok &= (col >= 0) & (col < width) & (row >= 0) & (row < height)
    pix = row[ok].astype(np.int64) * width + col[ok].astype(np.int64)
    # Nearest point per pixel: an unbuffered minimum into an inf-filled map is order-independent, so the result
    # does not depend on the scan order (fancy-index assignment with repeated indices would).
    depth_map = np.full(height * width, np.inf)
    np.minimum.at(depth_map, pix, depth[ok])
    depth_map[np.isinf(depth_map)] = 0.0
    return depth_map.reshape(height, width)


def lidar_to_depth(points_lidar: np.ndarray, T_cam_from_lidar: np.ndarray, K: np.ndarray, height: int, width: int,
                   *, min_depth_m: float = 0.1, depth_convention: str = "camera_z") -> np.ndarray:
    """Replay's lidar GT: :func:`lidar_depth_map` on ROS pixels, as float32 (height, width) metres, 0 = no GT.

    Args:
        points_lidar: (N, 3) points in the lidar frame, metres.
        T_cam_from_lidar: (4, 4) rigid transform lidar -> camera optical frame.
        K: (3, 3) pixel intrinsics of an image (height, width), from its camera_info.
        min_depth_m: points closer than this (or behind the camera) are ignored.
        depth_convention: "camera_z" (REP 118, the default) or "lidar_forward" (KITTI's reference).
    """
    return lidar_depth_map(points_lidar, T_cam_from_lidar, K, height, width, depth_convention=depth_convention,
                           pixel_origin=0, min_depth_m=min_depth_m).astype(np.float32)
