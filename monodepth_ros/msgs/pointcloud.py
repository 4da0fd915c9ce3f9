"""Depth image -> organised PointCloud2, built with vectorised NumPy into one buffer.

The math (:func:`depth_to_cloud_buffer`) is a pure function of arrays; :func:`make_pointcloud2` only wraps the
buffer in a sensor_msgs message (imported lazily). Conventions follow depth_image_proc: organised cloud
(height x width = decimated image), NaN x/y/z for invalid pixels, ``is_dense`` false, optical frame.
Colour is PCL's packed ``rgb``: a float32 whose bits are ``0x00RRGGBB``.
"""

from __future__ import annotations

import array

import cv2
import numpy as np

from monodepth_ros.geometry import backproject

__all__ = [
    "FLOAT32",
    "cloud_dtype",
    "decimate_intrinsics",
    "pack_rgb",
    "unpack_rgb",
    "depth_to_cloud_buffer",
    "make_pointcloud2",
    "as_byte_array",
    "pointcloud2_to_array",
]

FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
_NP_FROM_POINTFIELD = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def cloud_dtype(with_rgb: bool) -> np.dtype:
    """Point layout: x, y, z float32 (+ rgb packed float32), no padding (12 or 16 bytes)."""
    names = ["x", "y", "z"] + (["rgb"] if with_rgb else [])
    return np.dtype({"names": names, "formats": ["<f4"] * len(names)})


def decimate_intrinsics(K: np.ndarray, decimation: int) -> np.ndarray:
    """Intrinsics (3, 3) for the subsampled grid ``image[::d, ::d]``.

    Sample ``j`` of the subsampled row is pixel ``u = d * j``, so ``(u - cx) / fx = (j - cx/d) / (fx/d)``:
    dividing rows 0 and 1 by ``d`` is exact here (unlike a resize, whose pixel centres shift; see
    ``geometry.scale_intrinsics``).
    """
    K_dec = np.array(K, dtype=np.float64, copy=True)
    K_dec[:2] /= float(decimation)
    return K_dec


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """RGB (..., 3) uint8 -> PCL packed colour (...) float32 with bits 0x00RRGGBB.

    OpenCV's RGB -> BGRA swizzle lays out exactly the little-endian bytes of 0xAARRGGBB; alpha is then zeroed
    (0xFF would make many colours NaN floats, which some consumers canonicalise). 3-4x faster than shifting
    and or-ing uint32 planes in NumPy (profiled: the colour was 11 % of the node at 1280x720).
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    flat = rgb.reshape(-1, 1, 3)
    bgra = cv2.cvtColor(flat, cv2.COLOR_RGB2BGRA)
    bgra[..., 3] = 0
    return bgra.view("<f4").reshape(rgb.shape[:-1])


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """PCL packed colour (...) float32 -> RGB (..., 3) uint8."""
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1).astype(np.uint8)


def depth_to_cloud_buffer(
    depth_m: np.ndarray, K: np.ndarray, rgb: np.ndarray | None = None, decimation: int = 1
) -> tuple[np.ndarray, list[tuple[str, int, int, int]]]:
    """Depth (H, W) metres -> organised cloud as a structured array (ceil(H/d), ceil(W/d)) and its fields.

    Args:
        depth_m: (H, W) depth in metres; NaN/inf/<= 0 pixels become NaN points.
        K: (3, 3) pixel intrinsics of ``depth_m``.
        rgb: optional (H, W, 3) uint8 colours registered to ``depth_m``.
        decimation: keep every d-th row and column (d >= 1), pixel (0, 0) first.
    Returns:
        ``(points, fields)``: points is a C-contiguous structured array (dtype :func:`cloud_dtype`), so
        ``points.tobytes()`` is the PointCloud2 ``data``; fields are ``(name, offset, datatype, count)``.
    """
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth_m.shape}")
    d = int(decimation)
    if d < 1:
        raise ValueError(f"decimation must be >= 1, got {decimation}")
    if rgb is not None and np.asarray(rgb).shape != depth_m.shape + (3,):
        raise ValueError(f"rgb shape {np.asarray(rgb).shape} does not match depth shape {depth_m.shape} + (3,)")
    depth_dec = np.asarray(depth_m[::d, ::d], dtype=np.float32)
    h, w = depth_dec.shape
    K_dec = decimate_intrinsics(K, d)
    # Written straight into the message buffer (h, w, fields) float32: no (h, w, 3) temporary and no copy into a
    # structured array (profiled: the cloud was 30 % of the node at 1280x720).
    dtype = cloud_dtype(rgb is not None)
    buf = np.empty((h, w, len(dtype.names)), dtype=np.float32)
    z = buf[..., 2]
    np.copyto(z, depth_dec)
    z[~(depth_dec > 0) | ~np.isfinite(depth_dec)] = np.nan  # NaN/inf/<= 0 -> NaN point
    backproject(z, K_dec, out=buf[..., :3])
    if rgb is not None:
        buf[..., 3] = pack_rgb(np.asarray(rgb)[::d, ::d])
    points = buf.view(dtype).reshape(h, w)
    fields = [(name, dtype.fields[name][1], FLOAT32, 1) for name in dtype.names]
    return points, fields


def make_pointcloud2(header, points: np.ndarray, fields: list[tuple[str, int, int, int]]):
    """Structured array (h, w) + fields (from :func:`depth_to_cloud_buffer`) -> sensor_msgs/PointCloud2."""
    from sensor_msgs.msg import PointCloud2, PointField

    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = points.shape
    msg.fields = [PointField(name=n, offset=o, datatype=t, count=c) for n, o, t, c in fields]
    msg.is_bigendian = False
    msg.point_step = points.dtype.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = False
    msg.data = as_byte_array(points)
    return msg


def as_byte_array(arr: np.ndarray) -> array.array:
    """The bytes of ``arr`` (C order) as ``array.array('B')``, the type rclpy stores ``uint8[]`` fields in.

    Why not ``arr.tobytes()``: assigning ``bytes`` makes rclpy copy them a second time into an array.array;
    this is one copy (about 0.2 ms instead of 0.5 ms for a 2 MB cloud).
    """
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return out


def pointcloud2_to_array(msg) -> np.ndarray:
    """PointCloud2 (any field layout, honours ``point_step``/``row_step``) -> structured array (height, width)."""
    endian = ">" if msg.is_bigendian else "<"
    dtype = np.dtype(
        {
            "names": [f.name for f in msg.fields],
            "formats": [endian + _NP_FROM_POINTFIELD[f.datatype] for f in msg.fields],
            "offsets": [f.offset for f in msg.fields],
            "itemsize": msg.point_step,
        }
    )
    raw = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.row_step)
    rows = np.ascontiguousarray(raw[:, : msg.width * msg.point_step])
    return rows.view(dtype).reshape(msg.height, msg.width)
