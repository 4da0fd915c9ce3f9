"""sensor_msgs/CameraInfo: the pixel intrinsics K it holds, and the CameraInfo of an image resized from it."""

from __future__ import annotations

import numpy as np

from monodepth_ros.geometry import scale_intrinsics, validate_intrinsics

__all__ = ["camera_info_K", "rescaled_camera_info"]


def camera_info_K(info) -> np.ndarray:
    """K (3, 3) float64 pixel intrinsics of a sensor_msgs/CameraInfo, validated (clear error on K = 0)."""
    return validate_intrinsics(np.asarray(info.k, dtype=np.float64).reshape(3, 3))


def rescaled_camera_info(info, K_out: np.ndarray, shape: tuple[int, int]):
    """The CameraInfo of an image of ``shape`` (h, w) made from the image that ``info`` describes.

    Header, distortion model, D and R are copied; K is ``K_out`` (3, 3); the projection P (3, 4) is rescaled by
    the size ratio (its translation column too), or set to ``[K_out | 0]`` when ``info`` has no P. A zero
    ``info.width``/``height`` (unknown calibration size) counts as no rescaling.
    """
    from sensor_msgs.msg import CameraInfo

    out = CameraInfo()
    out.header = info.header
    h, w = shape
    sx = w / info.width if info.width else 1.0
    sy = h / info.height if info.height else 1.0
    out.height, out.width = h, w
    out.distortion_model = info.distortion_model
    out.d = list(info.d)
    out.r = list(info.r)
    out.k = [float(v) for v in K_out.ravel()]
    P = np.asarray(info.p, dtype=np.float64).reshape(3, 4).copy()
    if np.any(P[:3, :3]):
        P[:3, :3] = scale_intrinsics(P[:3, :3], sx, sy)
        P[0, 3] *= sx
        P[1, 3] *= sy
    else:
        P[:3, :3] = K_out
    out.p = [float(v) for v in P.ravel()]
    return out
