"""sensor_msgs Image / CompressedImage <-> NumPy: colour pictures and depth images, decode and encode.

``cv_bridge`` is used for the colour conversion when it is importable (a robot with ROS 2 installed); otherwise
the vectorised converter below gives the same result. Both paths share the same validation, so a malformed
message raises the same ``ValueError`` naming the problem either way. Why our own converter at all: there is no
ROS 2 ``cv_bridge`` on PyPI, and ``rosbags-image`` ignores ``step`` (padded rows come out wrong silently).

Depth images (:func:`depth_msg_to_array`) go through the same table and the same validating reader
(:func:`image_msg_to_array`): 32FC1/64FC1 metres (REP 118) or 16UC1/mono16 millimetres (depth cameras).

Messages are duck-typed (``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``, ``data``), so this
module does not import rclpy except to build outgoing messages.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from monodepth_ros.msgs.pointcloud import as_byte_array

try:  # pragma: no cover - only on machines with a ROS 2 install
    from cv_bridge import CvBridge

    _BRIDGE = CvBridge()
except Exception:  # noqa: BLE001 - absent or broken (e.g. ROS 1 cv_bridge on NumPy 2): use our converter
    _BRIDGE = None

__all__ = [
    "ENCODINGS",
    "HAVE_CV_BRIDGE",
    "image_msg_to_rgb",
    "compressed_to_rgb",
    "image_msg_to_array",
    "depth_msg_to_array",
    "depth_to_image_msg",
    "rgb_to_image_msg",
    "mono8_to_image_msg",
]

HAVE_CV_BRIDGE = _BRIDGE is not None

# encoding -> (channels, NumPy base dtype, channel order as it is stored). 8UC3/8UC4 are OpenCV's generic names
# for 8-bit colour, which cameras publish as BGR(A) (cv_bridge reads them so too).
ENCODINGS: dict[str, tuple[int, str, str]] = {
    "rgb8": (3, "u1", "rgb"),
    "bgr8": (3, "u1", "bgr"),
    "rgba8": (4, "u1", "rgba"),
    "bgra8": (4, "u1", "bgra"),
    "8UC3": (3, "u1", "bgr"),
    "8UC4": (4, "u1", "bgra"),
    "mono8": (1, "u1", "mono"),
    "8UC1": (1, "u1", "mono"),
    "rgb16": (3, "u2", "rgb"),
    "bgr16": (3, "u2", "bgr"),
    "mono16": (1, "u2", "mono"),
    "16UC1": (1, "u2", "mono"),
    "32FC1": (1, "f4", "mono"),
    "64FC1": (1, "f8", "mono"),
}
# Encodings that can become an RGB picture for the network (the float ones are depth, not pictures).
_COLOUR_ENCODINGS = {k for k, v in ENCODINGS.items() if v[1] in ("u1", "u2")}
# Depth encodings -> metres per stored unit: REP 118 (32FC1 metres) and depth cameras (16UC1 millimetres, 0 = no
# return).
DEPTH_UNITS_M: dict[str, float] = {"32FC1": 1.0, "64FC1": 1.0, "16UC1": 1e-3, "mono16": 1e-3}


def _dtype(base: str, is_bigendian: bool) -> np.dtype:
    dt = np.dtype(base)
    return dt if dt.itemsize == 1 else dt.newbyteorder(">" if is_bigendian else "<")


def image_msg_to_array(msg) -> np.ndarray:
    """Image message -> array (H, W) or (H, W, C) in the message's own channel order and native byte order.

    Honours ``step`` (rows may be padded) and ``is_bigendian``. Raises ``ValueError`` for an unknown encoding,
    empty data, zero size, a ``step`` shorter than a row, or a data length that does not equal ``step * height``.
    """
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ValueError(f"unknown image encoding '{enc}' (supported: {', '.join(sorted(ENCODINGS))})")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = msg.data
    if len(data) == 0:
        raise ValueError(f"empty image data ({w}x{h} {enc})")
    if h <= 0 or w <= 0:
        raise ValueError(f"image has zero size ({w}x{h})")
    channels, base, _ = ENCODINGS[enc]
    dt = _dtype(base, bool(msg.is_bigendian))
    row_bytes = w * channels * dt.itemsize
    if step < row_bytes:
        raise ValueError(f"step {step} is shorter than one row of {w} px {enc} ({row_bytes} bytes)")
    if len(data) != step * h:
        raise ValueError(f"image data has {len(data)} bytes but step*height = {step}*{h} = {step * h}")
    buf = np.frombuffer(data, dtype=np.uint8).reshape(h, step)
    # Drop the row padding; multi-byte types need a contiguous copy before reinterpreting the bytes.
    rows = buf[:, :row_bytes]
    arr = (np.ascontiguousarray(rows).view(dt) if dt.itemsize > 1 else rows).reshape(h, w, channels)
    arr = arr.astype(dt.newbyteorder("="), copy=False)
    return arr[..., 0] if channels == 1 else arr


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit -> 8-bit with the same rounding as ``cv2.convertScaleAbs(alpha=255/65535)`` (x / 257, nearest)."""
    if arr.dtype == np.uint8:
        return arr
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def image_msg_to_rgb(msg) -> np.ndarray:
    """Image message (rgb8/bgr8/mono8, their alpha and 16-bit variants) -> RGB (H, W, 3) uint8, C-contiguous."""
    if msg.encoding not in _COLOUR_ENCODINGS:
        if msg.encoding in ENCODINGS:
            raise ValueError(f"image encoding '{msg.encoding}' is not a colour or grey picture")
    arr = image_msg_to_array(msg)  # validates; same errors with or without cv_bridge
    if _BRIDGE is not None:  # pragma: no cover - robot path
        return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    order = ENCODINGS[msg.encoding][2]
    arr = _to_uint8(arr)
    if order == "mono":
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if order in ("bgr", "bgra"):
        return np.ascontiguousarray(arr[..., 2::-1])
    return np.ascontiguousarray(arr[..., :3])


def depth_msg_to_array(msg, *, invalid_to: float | None = None) -> np.ndarray:
    """sensor_msgs/Image with a depth encoding -> depth (H, W) float32 metres.

    0, NaN and inf stay as they are (invalid), or all become ``invalid_to`` when it is given (also any depth
    <= 0). Respects ``step`` (padded rows) and ``is_bigendian``, and raises the same ``ValueError`` as
    :func:`image_msg_to_array` for a malformed message; GT depth comes as 32FC1 (metres) or 16UC1 (millimetres).
    """
    enc = str(msg.encoding)
    if enc not in DEPTH_UNITS_M:
        raise ValueError(f"depth GT image has encoding {enc!r}; supported: {sorted(DEPTH_UNITS_M)}")
    to_m = DEPTH_UNITS_M[enc]
    depth = image_msg_to_array(msg).astype(np.float32)
    if to_m != 1.0:
        depth = depth * np.float32(to_m)
    if invalid_to is not None:
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(invalid_to))
    return depth


def compressed_to_rgb(msg) -> np.ndarray:
    """CompressedImage (jpeg/png, any ``format`` string) -> RGB (H, W, 3) uint8. ``ValueError`` if undecodable."""
    data = msg.data
    if len(data) == 0:
        raise ValueError("empty compressed image data")
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"could not decode compressed image (format '{msg.format}', {len(data)} bytes)")
    return np.ascontiguousarray(bgr[..., ::-1])


def depth_to_image_msg(depth_m: np.ndarray, header):
    """Depth (H, W) metres -> sensor_msgs/Image 32FC1 (REP 118: metres, NaN = no measurement)."""
    from sensor_msgs.msg import Image

    depth = np.ascontiguousarray(depth_m, dtype=np.float32)
    msg = Image()
    msg.header = header
    msg.height, msg.width = depth.shape
    msg.encoding = "32FC1"
    msg.is_bigendian = sys.byteorder == "big"
    msg.step = depth.shape[1] * 4
    msg.data = as_byte_array(depth)
    return msg


def rgb_to_image_msg(rgb: np.ndarray, header):
    """RGB (H, W, 3) uint8 -> sensor_msgs/Image rgb8."""
    return _uint8_image_msg(rgb, "rgb8", header)


def mono8_to_image_msg(img: np.ndarray, header):
    """Grey (H, W) uint8 -> sensor_msgs/Image mono8."""
    return _uint8_image_msg(img, "mono8", header)


def _uint8_image_msg(arr: np.ndarray, encoding: str, header):
    from sensor_msgs.msg import Image

    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    msg = Image()
    msg.header = header
    msg.height, msg.width = arr.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = False
    msg.step = arr.shape[1] * (arr.shape[2] if arr.ndim == 3 else 1)
    msg.data = as_byte_array(arr)
    return msg
