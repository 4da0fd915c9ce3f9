"""rosbag2 source (MCAP or sqlite3, read with ``rosbags``' AnyReader; no ROS install needed).

The bag is indexed once: one pass over the image, camera_info, odometry and (optional) depth-GT topics keeps
image frames at least ``min_dt_s`` apart (by header stamp), decodes them, resizes them to the training size
and appends them to a raw uint8 file that is then memory-mapped. The index (stamps, speeds, intrinsics) goes
into a JSON file beside it. The cache key covers the bag files' sizes and mtimes and every option that
changes the content, so a changed bag or option re-indexes and an unchanged one loads instantly; workers
only map the file (no per-sample bag access, which MCAP/sqlite readers do not do well from many processes).

Intrinsics come from the camera_info topic (``k``, at camera_info's width x height), never from a default.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from monodepth_training.datasets.base import MonoDataset

from monodepth_ros.geometry import scale_intrinsics, validate_intrinsics

CACHE_VERSION = 1
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
ODOM_TYPES = ("nav_msgs/msg/Odometry", "geometry_msgs/msg/TwistStamped")


class BagTopicError(ValueError):
    """A requested topic is not in the bag (or has the wrong type); the message lists what the bag has."""


# encoding -> (channels, dtype, channel order); what the small fallback decoder below understands.
_ENCODINGS = {
    "rgb8": (3, "u1", "rgb"), "bgr8": (3, "u1", "bgr"), "8UC3": (3, "u1", "bgr"),
    "rgba8": (4, "u1", "rgb"), "bgra8": (4, "u1", "bgr"),
    "mono8": (1, "u1", "mono"), "8UC1": (1, "u1", "mono"),
    "mono16": (1, "u2", "mono"), "16UC1": (1, "u2", "mono"), "32FC1": (1, "f4", "mono"),
}  # fmt: skip


def _image_to_array(msg) -> np.ndarray:
    """Image message -> (H, W) or (H, W, C) array, honouring ``step`` (padded rows) and ``is_bigendian``.

    Fallback for when the node's ``monodepth_ros.image_conversion`` is not importable.
    """
    if msg.encoding not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r} (supported: {sorted(_ENCODINGS)})")
    channels, base, _ = _ENCODINGS[msg.encoding]
    dt = np.dtype(base)
    if dt.itemsize > 1:
        dt = dt.newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = w * channels * dt.itemsize
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, dtype=np.uint8)
    if step < row_bytes or data.size != step * h:
        raise ValueError(f"{w}x{h} {msg.encoding} image: step {step} / {data.size} bytes do not fit")
    rows = data.reshape(h, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dt).reshape(h, w, channels)
    return arr[..., 0] if channels == 1 else arr


def _array_to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    order = _ENCODINGS[encoding][2]
    if arr.dtype == np.uint16 or arr.dtype.itemsize == 2:
        arr = (arr.astype(np.uint16) >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"encoding {encoding!r} is not a colour picture")
    if order == "mono":
        return np.repeat(arr[..., None], 3, axis=2)
    rgb = arr[..., :3]
    return np.ascontiguousarray(rgb[..., ::-1] if order == "bgr" else rgb)


def _decode_rgb(msg, msgtype: str) -> np.ndarray:
    """Image / CompressedImage -> (H, W, 3) uint8 RGB, honouring ``step`` and ``encoding``."""
    try:  # the node's converter, when present, is the one place that knows every encoding
        from monodepth_ros.image_conversion import compressed_to_rgb, image_msg_to_rgb
    except ImportError:
        compressed_to_rgb = image_msg_to_rgb = None
    if msgtype.endswith("CompressedImage"):
        if compressed_to_rgb is not None:
            return compressed_to_rgb(msg)
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot decode CompressedImage (format {msg.format!r})")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if image_msg_to_rgb is not None:
        return image_msg_to_rgb(msg)
    return _array_to_rgb(_image_to_array(msg), msg.encoding)


def _decode_depth_m(msg) -> np.ndarray:
    """Depth Image (32FC1 metres or 16UC1 millimetres) -> (H, W) float32 metres, invalid -> 0."""
    arr = _image_to_array(msg)
    if msg.encoding == "32FC1":
        depth = arr.astype(np.float32)
    elif msg.encoding in ("16UC1", "mono16"):
        depth = arr.astype(np.float32) * np.float32(1e-3)  # REP 118: 16-bit depth is millimetres
    else:
        raise ValueError(f"depth GT must be 32FC1 (m) or 16UC1 (mm), got {msg.encoding!r}")
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def _stamp_s(header) -> float:
    return float(header.stamp.sec) + 1e-9 * float(header.stamp.nanosec)


def _bag_files(bag: Path) -> list[Path]:
    if bag.is_dir():
        return sorted(p for p in bag.iterdir() if p.is_file())
    return [bag]


def _topics_table(reader) -> str:
    return "\n".join(f"  {t} [{info.msgtype}] ({info.msgcount} msgs)" for t, info in sorted(reader.topics.items()))


def _connections(reader, topic: str, allowed_types: Sequence[str], role: str, bag: Path):
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        raise BagTopicError(f"{role} topic {topic!r} is not in bag {bag}; the bag has:\n{_topics_table(reader)}")
    bad = {c.msgtype for c in conns} - set(allowed_types)
    if bad:
        raise BagTopicError(
            f"{role} topic {topic!r} in {bag} has type {sorted(bad)}, expected one of {list(allowed_types)}; "
            f"the bag has:\n{_topics_table(reader)}"
        )
    return conns


def index_bag(
    bag: str | os.PathLike,
    out_dir: str | os.PathLike,
    image_topic: str,
    camera_info_topic: str,
    height: int,
    width: int,
    min_dt_s: float = 0.0,
    odom_topic: str | None = None,
    depth_topic: str | None = None,
) -> dict:
    """One pass over ``bag``: write ``frames.u8`` (N, height, width, 3) and optionally ``depth.f32``
    (N, hg, wg) into ``out_dir``, and return the index dict (also written as ``index.json``).

    Images closer than ``min_dt_s`` (header stamps) to the last kept one are dropped. Speed is the norm of
    the odometry's linear velocity, linearly interpolated at the image stamps (NaN without ``odom_topic``).
    Depth GT is matched to kept images by equal header stamp (within 1 ms).
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    bag = Path(bag)
    out_dir = Path(out_dir)
    if not bag.exists():
        raise FileNotFoundError(f"bag not found: {bag}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        img_conns = _connections(reader, image_topic, IMAGE_TYPES, "image", bag)
        info_conns = _connections(reader, camera_info_topic, (CAMERA_INFO_TYPE,), "camera_info", bag)
        odom_conns = _connections(reader, odom_topic, ODOM_TYPES, "odometry", bag) if odom_topic else []
        depth_conns = (
            _connections(reader, depth_topic, ("sensor_msgs/msg/Image",), "depth GT", bag) if depth_topic else []
        )
        img_ids = {id(c) for c in img_conns}
        info_ids = {id(c) for c in info_conns}
        odom_ids = {id(c) for c in odom_conns}

        K_info, info_size = None, None
        stamps: list[float] = []
        src_sizes: set[tuple[int, int]] = set()
        odom_t: list[float] = []
        odom_v: list[float] = []
        depth_by_stamp: dict[int, np.ndarray] = {}
        last_kept = -np.inf
        with open(out_dir / "frames.u8", "wb") as frames_f:
            for conn, _, raw in reader.messages(connections=img_conns + info_conns + odom_conns + depth_conns):
                msg = reader.deserialize(raw, conn.msgtype)
                cid = id(conn)
                if cid in info_ids:
                    if K_info is None:
                        K_info = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
                        info_size = (int(msg.height), int(msg.width))
                elif cid in odom_ids:
                    twist = msg.twist.twist if conn.msgtype.endswith("Odometry") else msg.twist
                    lin = twist.linear
                    odom_t.append(_stamp_s(msg.header))
                    odom_v.append(float(np.sqrt(lin.x**2 + lin.y**2 + lin.z**2)))
                elif cid in img_ids:
                    t = _stamp_s(msg.header)
                    if t - last_kept < min_dt_s:
                        continue
                    rgb = _decode_rgb(msg, conn.msgtype)
                    src_sizes.add(rgb.shape[:2])
                    if rgb.shape[:2] != (height, width):
                        shrink = rgb.shape[0] >= height and rgb.shape[1] >= width  # same rule as preprocess()
                        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                        rgb = cv2.resize(rgb, (width, height), interpolation=interp)
                    frames_f.write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
                    stamps.append(t)
                    last_kept = t
                else:  # depth GT
                    depth_by_stamp[round(_stamp_s(msg.header) * 1e3)] = _decode_depth_m(msg)
    if K_info is None:
        raise BagTopicError(f"camera_info topic {camera_info_topic!r} in {bag} has no messages")
    if not stamps:
        raise BagTopicError(f"image topic {image_topic!r} in {bag} has no messages")
    if len(src_sizes) != 1:
        raise ValueError(f"image size changes within {image_topic!r} in {bag}: {sorted(src_sizes)}")
    (src_h, src_w), = src_sizes
    try:
        K_info = validate_intrinsics(K_info)
    except ValueError as e:
        raise ValueError(f"camera_info on {camera_info_topic!r} has unusable intrinsics k: {e}") from e
    info_h, info_w = info_size
    if (info_h, info_w) != (0, 0) and (info_h, info_w) != (src_h, src_w):
        # camera_info describes the calibrated resolution; bring K to the image's own size first.
        K_info = scale_intrinsics(K_info, src_w / info_w, src_h / info_h)
    K = scale_intrinsics(K_info, width / src_w, height / src_h)

    stamps_arr = np.asarray(stamps)
    if odom_t:
        order = np.argsort(odom_t)
        speeds = np.interp(stamps_arr, np.asarray(odom_t)[order], np.asarray(odom_v)[order])
    else:
        speeds = np.full(len(stamps), np.nan)
    depth_hw = None
    if depth_topic:
        shapes = {d.shape for d in depth_by_stamp.values()}
        if len(shapes) > 1:
            raise ValueError(f"depth GT size changes within {depth_topic!r}: {sorted(shapes)}")
        depth_hw = shapes.pop() if shapes else (src_h, src_w)
        with open(out_dir / "depth.f32", "wb") as depth_f:
            zero = np.zeros(depth_hw, dtype=np.float32)
            for t in stamps:
                key = round(t * 1e3)
                d = depth_by_stamp.get(key, depth_by_stamp.get(key - 1, depth_by_stamp.get(key + 1, zero)))
                depth_f.write(np.ascontiguousarray(d, dtype=np.float32).tobytes())
    index = {
        "version": CACHE_VERSION,
        "bag": str(bag),
        "num_frames": len(stamps),
        "height": height,
        "width": width,
        "source_size": [src_h, src_w],
        "K": K.tolist(),
        "stamps_s": stamps_arr.tolist(),
        "speed_mps": [None if not np.isfinite(v) else float(v) for v in speeds],
        "depth_hw": list(depth_hw) if depth_hw else None,
    }
    (out_dir / "index.json").write_text(json.dumps(index))
    return index


class RosbagDataset(MonoDataset):
    """Samples from one rosbag2 (a bag directory with ``metadata.yaml``, MCAP or sqlite3 storage).

    Args:
        bag: the bag directory (or a single ``.mcap`` / ``.db3`` file).
        image_topic: sensor_msgs/Image or sensor_msgs/CompressedImage topic.
        camera_info_topic: sensor_msgs/CameraInfo topic of that camera (intrinsics).
        min_dt_s: keep frames at least this far apart in time (subsampling a fast camera); neighbours
            (offset +-1) are consecutive KEPT frames.
        max_gap_s: targets whose neighbours are further apart than this are skipped (bag gaps); ``None``
            accepts any gap.
        odom_topic: optional nav_msgs/Odometry (or TwistStamped) topic giving ``speed_mps``.
        depth_topic: optional depth GT topic (32FC1 m or 16UC1 mm) for validation.
        frame_range: (start, end) fractions of the kept frames to use, e.g. (0, 0.9) for training and
            (0.9, 1) for validation on one bag.
        cache_dir: where the decoded frames are cached (default ``~/.cache/monodepth_ros/bags``).
        Other arguments: see :class:`MonoDataset`.
    """

    def __init__(
        self,
        bag: str | os.PathLike,
        height: int,
        width: int,
        image_topic: str = "/camera/image_raw",
        camera_info_topic: str = "/camera/camera_info",
        frame_offsets: Iterable[int] = (0, -1, 1),
        min_dt_s: float = 0.0,
        max_gap_s: float | None = None,
        odom_topic: str | None = None,
        depth_topic: str | None = None,
        frame_range: Sequence[float] = (0.0, 1.0),
        cache_dir: str | os.PathLike | None = None,
        **kwargs,
    ):
        super().__init__(height, width, frame_offsets, **kwargs)
        self.bag = Path(bag).expanduser().resolve()
        if not self.bag.exists():
            raise FileNotFoundError(f"bag not found: {self.bag}")
        if min_dt_s < 0:
            raise ValueError(f"min_dt_s must be >= 0, got {min_dt_s}")
        lo, hi = (float(x) for x in frame_range)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"frame_range must satisfy 0 <= start < end <= 1, got {list(frame_range)}")
        if depth_topic is None and self.load_depth_gt:
            raise ValueError("load_depth_gt needs a depth_topic for a rosbag source")
        self.max_gap_s = max_gap_s
        options = {
            "version": CACHE_VERSION,
            "bag": str(self.bag),
            "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in _bag_files(self.bag)],
            "image_topic": image_topic,
            "camera_info_topic": camera_info_topic,
            "odom_topic": odom_topic,
            "depth_topic": depth_topic,
            "height": self.height,
            "width": self.width,
            "min_dt_s": float(min_dt_s),
        }
        digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
        root = Path(cache_dir).expanduser() if cache_dir else Path.home() / ".cache" / "monodepth_ros" / "bags"
        self.cache_path = root / f"{self.bag.name}-{digest}"
        if not (self.cache_path / "index.json").is_file():
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{self.bag.name}-"))
            try:
                index_bag(self.bag, tmp, image_topic, camera_info_topic, self.height, self.width,
                          min_dt_s, odom_topic, depth_topic)
                os.replace(tmp, self.cache_path)  # atomic publish: readers never see a half-written cache
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not (self.cache_path / "index.json").is_file():  # not just a concurrent writer winning
                    raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        self.index = json.loads((self.cache_path / "index.json").read_text())
        n = self.index["num_frames"]
        self.K = np.asarray(self.index["K"], dtype=np.float64)
        self.stamps_s = np.asarray(self.index["stamps_s"], dtype=np.float64)
        self.speeds_mps = np.array([np.nan if v is None else v for v in self.index["speed_mps"]], dtype=np.float64)
        self.first, self.stop = int(round(lo * n)), int(round(hi * n))
        self._frames: np.ndarray | None = None
        self._depth: np.ndarray | None = None
        self._build_index()
        if not self.samples:
            raise ValueError(
                f"bag {self.bag} gives no usable sample: {n} frames kept (min_dt_s={min_dt_s}), "
                f"range {self.first}..{self.stop}, offsets {list(self.frame_offsets[1:])}"
            )

    # Memory maps are opened lazily so each DataLoader worker maps the file itself after the fork.
    @property
    def frames(self) -> np.ndarray:
        if self._frames is None:
            shape = (self.index["num_frames"], self.height, self.width, 3)
            self._frames = np.memmap(self.cache_path / "frames.u8", dtype=np.uint8, mode="r", shape=shape)
        return self._frames

    @property
    def depth(self) -> np.ndarray | None:
        if self._depth is None and self.index.get("depth_hw"):
            shape = (self.index["num_frames"], *self.index["depth_hw"])
            self._depth = np.memmap(self.cache_path / "depth.f32", dtype=np.float32, mode="r", shape=shape)
        return self._depth

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_frames"] = state["_depth"] = None  # never pickle a mapping into a worker
        return state

    # Keys are kept-frame indices.
    def _target_keys(self):
        return range(self.first, self.stop)

    def _neighbour(self, key: int, offset: int) -> int | None:
        j = key + offset
        if not self.first <= j < self.stop:
            return None
        if self.max_gap_s is not None and abs(self.stamps_s[j] - self.stamps_s[key]) > self.max_gap_s * abs(offset):
            return None
        return j

    def _load_rgb(self, key: int) -> np.ndarray:
        return np.asarray(self.frames[key])

    def _image_size(self, key: int) -> tuple[int, int]:
        return self.height, self.width

    def _intrinsics(self, key: int) -> np.ndarray:
        return self.K

    def _stamp_s(self, key: int) -> float:
        return float(self.stamps_s[key])

    def _speed_mps(self, key: int) -> float:
        return float(self.speeds_mps[key])

    def _load_depth_gt(self, key: int) -> np.ndarray | None:
        return None if self.depth is None else np.asarray(self.depth[key])
