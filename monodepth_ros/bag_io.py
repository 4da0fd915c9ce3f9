"""Rosbag2 input and output for the replay evaluation: read camera frames, camera_info and ground truth (a depth
image topic or a lidar PointCloud2) from an MCAP or sqlite3 bag, and write the replay's output bag (MCAP).

Reading uses ``rosbags``' AnyReader (pure Python, no ROS install needed). Every way a bag can be unusable --
missing, corrupted, truncated, empty, or lacking a topic -- becomes one :class:`BagError` whose message names the
problem and lists the topics that ARE in the bag (type and message count), so a user can fix the command line.

Frames are streamed (one pass over the bag, bounded buffers), so a long bag never has to fit in memory.
Messages are kept as their raw CDR bytes next to the decoded arrays: the output bag copies the input image and
camera_info byte for byte, and ``--through-node`` publishes those same bytes over DDS.
"""

from __future__ import annotations

import bisect
import os
import shutil
import struct
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2_TYPE = "sensor_msgs/msg/PointCloud2"

__all__ = [
    "BagError",
    "TopicSummary",
    "BagFrame",
    "GtSource",
    "BagReader",
    "OutputBagWriter",
    "resolve_bag_path",
    "format_topics",
    "stamp_to_ns",
    "cdr_header_stamp_ns",
    "depth_msg_to_array",
    "camera_info_K",
    "iter_frames",
    "IMAGE_TYPE",
    "COMPRESSED_TYPE",
    "CAMERA_INFO_TYPE",
    "POINTCLOUD2_TYPE",
]


class BagError(ValueError):
    """A bag cannot be used for replay: missing, corrupted, truncated, empty, or lacking a required topic.

    ``topics`` holds what could be read of the bag's topic list (possibly empty).
    """

    def __init__(self, message: str, topics: list[TopicSummary] | None = None):
        self.topics = list(topics or [])
        if topics is not None:
            message = f"{message}; {format_topics(self.topics)}"
        super().__init__(message)


@dataclass(frozen=True)
class TopicSummary:
    """One topic of a bag: name, ROS 2 message type, number of messages."""

    name: str
    msgtype: str
    count: int


def format_topics(topics: list[TopicSummary]) -> str:
    """One-line topic list for error messages: ``topics in the bag: /a (type, N msgs), ...``."""
    if not topics:
        return "topics in the bag: none"
    return "topics in the bag: " + ", ".join(f"{t.name} ({t.msgtype}, {t.count} msgs)" for t in topics)


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (sec, nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def cdr_header_stamp_ns(raw: bytes | memoryview) -> int:
    """Header stamp (ns) of a serialised message whose first field is std_msgs/Header, without decoding it.

    CDR layout: 4-byte encapsulation header (byte 1: 0 = big, 1 = little endian), then int32 sec, uint32 nanosec.
    Used on the replay's receive path so that a 2 MB PointCloud2 is not decoded just to read its stamp.
    """
    if len(raw) < 12:
        raise ValueError(f"serialised message too short ({len(raw)} bytes) to hold a header")
    endian = "<" if raw[1] & 1 else ">"
    sec, nanosec = struct.unpack_from(endian + "iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def camera_info_K(info) -> np.ndarray:
    """K (3, 3) float64 pixel intrinsics of a sensor_msgs/CameraInfo, validated (clear error on K = 0)."""
    from monodepth_ros.geometry import validate_intrinsics

    return validate_intrinsics(np.asarray(info.k, dtype=np.float64).reshape(3, 3))


# Depth encodings of REP 118 (32FC1 metres) and of depth cameras (16UC1 millimetres, 0 = no return).
_DEPTH_DTYPES = {"32FC1": (np.float32, 1.0), "16UC1": (np.uint16, 1e-3), "mono16": (np.uint16, 1e-3),
                 "64FC1": (np.float64, 1.0)}


def depth_msg_to_array(msg) -> np.ndarray:
    """sensor_msgs/Image with a depth encoding -> depth (H, W) float32 metres; 0, NaN and inf stay invalid.

    Respects ``step`` (padded rows) and ``is_bigendian``. Own decoder because the colour converter of the node
    handles only colour encodings, and GT depth comes as 32FC1 (metres) or 16UC1 (millimetres).
    """
    enc = str(msg.encoding)
    if enc not in _DEPTH_DTYPES:
        raise ValueError(f"depth GT image has encoding {enc!r}; supported: {sorted(_DEPTH_DTYPES)}")
    base, to_m = _DEPTH_DTYPES[enc]
    dtype = np.dtype(base).newbyteorder(">" if msg.is_bigendian else "<")
    H, W, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    row_bytes = W * dtype.itemsize
    if H == 0 or W == 0:
        raise ValueError(f"depth GT image is empty ({W}x{H})")
    if step < row_bytes or buf.size < step * (H - 1) + row_bytes:
        raise ValueError(f"depth GT image {W}x{H} {enc}: step {step} / data size {buf.size} do not fit")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(H, row_bytes), strides=(step, 1))
    depth = np.ascontiguousarray(rows).view(dtype).reshape(H, W).astype(np.float32)
    return depth * np.float32(to_m) if to_m != 1.0 else depth


def resolve_bag_path(path: str | os.PathLike) -> Path:
    """A rosbag2 directory (with metadata.yaml), one of its storage files, or a lone ``.mcap`` file.

    Returns the bag directory, or the ``.mcap`` file itself when it has no metadata.yaml beside it (e.g. a
    Foxglove recording); :class:`BagReader` reads such a file through a generated metadata.yaml.
    """
    p = Path(path)
    if not p.exists():
        raise BagError(f"bag not found: {p}")
    if p.is_file():
        if (p.parent / "metadata.yaml").is_file():
            return p.parent
        if p.suffix == ".mcap":
            return p
        raise BagError(
            f"{p} is a file, but rosbag2 bags are directories holding metadata.yaml and the .mcap/.db3 storage "
            f"(record with `ros2 bag record`; `ros2 bag reindex` rebuilds a lost metadata.yaml)"
        )
    if not (p / "metadata.yaml").is_file():
        raise BagError(f"{p} is not a rosbag2 bag: metadata.yaml is missing (`ros2 bag reindex` rebuilds it)")
    return p


def _bare_mcap_as_bag(mcap_path: Path, tmp_dir: Path) -> Path:
    """A lone ROS 2 ``.mcap`` file -> a rosbag2 directory in ``tmp_dir``: a symlink + a metadata.yaml written from
    the MCAP summary (topics, types, counts, time span). rosbags reads only bag directories, and this is the
    information ``ros2 bag reindex`` would recover. An MCAP without a summary section (truncated) is an error."""
    from mcap.reader import make_reader

    try:
        with open(mcap_path, "rb") as f:
            summary = make_reader(f).get_summary()
    except Exception as e:  # noqa: BLE001 - the mcap parser's errors on a damaged file
        raise BagError(f"cannot open {mcap_path} (corrupted or truncated?): {_one_line(e)}", []) from None
    if summary is None or summary.statistics is None:
        raise BagError(f"{mcap_path} has no MCAP summary section (truncated, or still being recorded?)", [])
    stats = summary.statistics
    topics = []
    for cid, ch in sorted(summary.channels.items()):
        schema = summary.schemas.get(ch.schema_id)
        topics.append({"message_count": int(stats.channel_message_counts.get(cid, 0)), "topic_metadata": {
            "name": ch.topic, "type": schema.name if schema else "", "serialization_format": ch.message_encoding,
            "offered_qos_profiles": ch.metadata.get("offered_qos_profiles", "")}})
    n = int(stats.message_count)
    meta = {"rosbag2_bagfile_information": {
        "version": 9, "storage_identifier": "mcap", "relative_file_paths": [mcap_path.name],
        "duration": {"nanoseconds": int(stats.message_end_time - stats.message_start_time) if n else 0},
        "starting_time": {"nanoseconds_since_epoch": int(stats.message_start_time) if n else 0},
        "message_count": n, "topics_with_message_count": topics, "compression_format": "", "compression_mode": "",
        "files": [], "custom_data": None, "ros_distro": ""}}
    bag_dir = tmp_dir / mcap_path.stem
    bag_dir.mkdir()
    (bag_dir / mcap_path.name).symlink_to(mcap_path.resolve())
    (bag_dir / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return bag_dir


def _topics_from_metadata(bag_dir: Path) -> list[TopicSummary] | None:
    """Topic list from metadata.yaml alone (works even when the storage file is corrupted), or None."""
    try:
        meta = yaml.safe_load((bag_dir / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return sorted(
            (TopicSummary(t["topic_metadata"]["name"], t["topic_metadata"]["type"], int(t["message_count"]))
             for t in meta.get("topics_with_message_count") or []),
            key=lambda t: t.name,
        )
    except Exception:  # noqa: BLE001 - best effort: the metadata itself may be what is broken
        return None


# Why so broad: rosbags and its storage back ends (MCAP parser, apsw/sqlite3, zstd, YAML) raise many unrelated
# exception types on damaged files (ReaderError, apsw.CorruptError, struct.error, IndexError, ...). Only the
# bag-reading calls sit inside these guards, so anything they raise means "this bag cannot be read".
_BAG_READ_ERRORS = (Exception,)


@dataclass(frozen=True)
class GtSource:
    """Where ground truth comes from.

    ``kind``: "depth" (a depth Image topic, matched to frames by header stamp) or "lidar" (a PointCloud2 topic,
    projected into the camera with ``T_cam_from_lidar``). ``tolerance_s``: the largest |stamp difference| that
    still matches (0 = exact stamps). ``depth_convention``: what a lidar GT pixel holds, "camera_z" or
    "lidar_forward" (:func:`monodepth_ros.lidar_gt.lidar_depth_map`).
    """

    topic: str
    kind: str = "depth"
    tolerance_s: float = 0.0
    T_cam_from_lidar: np.ndarray | None = None
    depth_convention: str = "camera_z"

    def __post_init__(self):
        if self.kind not in ("depth", "lidar"):
            raise ValueError(f"GT kind must be 'depth' or 'lidar', got {self.kind!r}")
        if self.kind == "lidar" and self.T_cam_from_lidar is None:
            raise ValueError("lidar GT needs T_cam_from_lidar (the --extrinsics file)")
        if self.tolerance_s < 0:
            raise ValueError(f"tolerance_s must be >= 0, got {self.tolerance_s}")


@dataclass
class BagFrame:
    """One camera frame of the bag with its camera_info and (optionally) matched ground truth.

    ``rgb`` (H, W, 3) uint8; ``K`` (3, 3) pixel intrinsics; ``gt_depth_m`` (H_gt, W_gt) float32 metres with
    0/NaN/inf invalid, or None when no GT matched. ``image_raw``/``info_raw``: the CDR bytes as recorded.
    ``log_time_ns``: when the recorder received the image (drives playback timing).
    """

    index: int
    stamp_ns: int
    log_time_ns: int
    frame_id: str
    rgb: np.ndarray
    K: np.ndarray
    width: int
    height: int
    image_raw: bytes
    info_raw: bytes
    info_msg: object
    gt_depth_m: np.ndarray | None = None
    gt_stamp_ns: int | None = None
    gt_raw: bytes | None = None


class BagReader:
    """Context manager over a rosbag2 bag (MCAP or sqlite3) that turns every read failure into BagError."""

    def __init__(self, path: str | os.PathLike):
        self.path = resolve_bag_path(path)  # what messages name: the bag directory, or a lone .mcap file
        self._dir = self.path
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._reader = None
        self.topics: dict[str, TopicSummary] = {}
        self._conns: dict[str, list] = {}

    # -- life cycle -------------------------------------------------------------------------------------------
    def open(self) -> BagReader:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        if self.path.is_file():
            self._tmp = tempfile.TemporaryDirectory(prefix="monodepth-bag-")
            try:
                self._dir = _bare_mcap_as_bag(self.path, Path(self._tmp.name))
            except BaseException:
                self.close()
                raise
        try:
            # The default typestore only serves sqlite3 bags recorded without embedded message definitions.
            reader = AnyReader([self._dir], default_typestore=get_typestore(Stores.ROS2_KILTED))
            reader.open()
        except _BAG_READ_ERRORS as e:
            topics = _topics_from_metadata(self._dir) or []
            self.close()
            raise BagError(f"cannot open bag {self.path} (corrupted or truncated?): {_one_line(e)}", topics) from None
        self._reader = reader
        for conn in reader.connections:
            self._conns.setdefault(conn.topic, []).append(conn)
        self.topics = {
            name: TopicSummary(name, info.msgtype or "(mixed types)", int(info.msgcount))
            for name, info in sorted(reader.topics.items())
        }
        if not self.topics or sum(t.count for t in self.topics.values()) == 0:
            topics = self.topic_list()
            self.close()
            raise BagError(f"bag {self.path} is empty: it holds no messages", topics)
        return self

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # noqa: BLE001 - closing a damaged bag must not hide the original error
                pass
            self._reader = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- topics ------------------------------------------------------------------------------------------------
    def topic_list(self) -> list[TopicSummary]:
        return list(self.topics.values())

    def require_topic(self, name: str, types: tuple[str, ...], role: str) -> TopicSummary:
        """The topic ``name`` (one of ``types``, at least one message), or BagError listing the bag's topics."""
        t = self.topics.get(name)
        if t is None:
            raise BagError(f"{role} topic {name!r} is not in bag {self.path}", self.topic_list())
        if t.msgtype not in types:
            raise BagError(f"{role} topic {name!r} has type {t.msgtype}, expected {' or '.join(types)}",
                           self.topic_list())
        if t.count == 0:
            raise BagError(f"{role} topic {name!r} has no messages in bag {self.path}", self.topic_list())
        return t

    @property
    def start_time_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def duration_s(self) -> float:
        return (int(self._reader.end_time) - int(self._reader.start_time)) / 1e9

    # -- messages ----------------------------------------------------------------------------------------------
    def raw_messages(self, topics: list[str]) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log_time_ns, raw CDR bytes) of the given topics in log-time order; damage -> BagError."""
        conns = [c for t in topics for c in self._conns.get(t, [])]
        it = self._reader.messages(connections=conns)
        while True:
            try:
                conn, t_ns, raw = next(it)
            except StopIteration:
                return
            except _BAG_READ_ERRORS as e:
                raise BagError(f"bag {self.path} is damaged (corrupted or truncated?) while reading "
                               f"messages: {_one_line(e)}", self.topic_list()) from None
            yield conn.topic, int(t_ns), bytes(raw)

    def deserialize(self, raw: bytes, topic: str):
        msgtype = self.topics[topic].msgtype
        try:
            return self._reader.deserialize(raw, msgtype)
        except _BAG_READ_ERRORS as e:
            raise BagError(f"a {msgtype} message on {topic} in bag {self.path} cannot be decoded "
                           f"(corrupted?): {_one_line(e)}", self.topic_list()) from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text


def iter_frames(
    bag: BagReader,
    image_topic: str,
    camera_info_topic: str,
    gt: GtSource | None = None,
    max_frames: int | None = None,
    reorder_window: int = 64,
) -> Iterator[BagFrame]:
    """Stream the bag's camera frames, each with its camera_info and matched GT, in image log-time order.

    Pairing rules: the camera_info with the image's exact stamp, else the latest one before it (camera_info is
    usually constant), else the nearest. GT: the nearest GT message within ``gt.tolerance_s``; none -> the
    frame's ``gt_depth_m`` is None. Messages may arrive out of order within ``reorder_window`` messages.

    Raises BagError (with the topic list) for missing or mistyped topics, undecodable images and bad K.
    """
    from monodepth_ros.image_conversion import compressed_to_rgb, image_msg_to_rgb

    img_t = bag.require_topic(image_topic, (IMAGE_TYPE, COMPRESSED_TYPE), "image")
    bag.require_topic(camera_info_topic, (CAMERA_INFO_TYPE,), "camera_info")
    if gt is not None:
        want = (IMAGE_TYPE,) if gt.kind == "depth" else (POINTCLOUD2_TYPE,)
        bag.require_topic(gt.topic, want, "depth GT" if gt.kind == "depth" else "lidar")
    compressed = img_t.msgtype == COMPRESSED_TYPE

    pending: deque = deque()  # images waiting for camera_info / GT: (stamp_ns, log_ns, raw, msg)
    info_stamps: list[int] = []  # sorted stamps of the camera_info messages kept
    infos: dict[int, tuple[bytes, object]] = {}
    gt_stamps: list[int] = []
    gts: dict[int, tuple[bytes, object]] = {}
    tol_ns = int(round((gt.tolerance_s if gt else 0.0) * 1e9))
    n_out = 0

    def nearest(stamps: list[int], s: int, before_first: bool) -> int | None:
        if not stamps:
            return None
        i = bisect.bisect_right(stamps, s)
        if before_first and i > 0:
            return stamps[i - 1]  # exact match or latest before
        cands = [stamps[j] for j in (i - 1, i) if 0 <= j < len(stamps)]
        return min(cands, key=lambda c: abs(c - s))

    def ready(stamp: int, flushing: bool) -> bool:
        if flushing or len(pending) > reorder_window:
            return True
        if not info_stamps or info_stamps[-1] < stamp:
            return False  # a camera_info with this very stamp may still come
        return gt is None or (bool(gt_stamps) and gt_stamps[-1] >= stamp + tol_ns)

    def emit(stamp: int, log_ns: int, raw: bytes, msg) -> BagFrame:
        nonlocal n_out
        s_info = nearest(info_stamps, stamp, before_first=True)
        if s_info is None:
            raise BagError(f"no camera_info on {camera_info_topic} before or after the image stamped "
                           f"{stamp / 1e9:.6f} s", bag.topic_list())
        info_raw, info = infos[s_info]
        try:
            K = camera_info_K(info)
        except ValueError as e:
            raise BagError(f"camera_info on {camera_info_topic} at {s_info / 1e9:.6f} s is unusable: {e}",
                           bag.topic_list()) from None
        try:
            rgb = compressed_to_rgb(msg) if compressed else image_msg_to_rgb(msg)
        except ValueError as e:
            raise BagError(f"image on {image_topic} at {stamp / 1e9:.6f} s cannot be decoded: {e}",
                           bag.topic_list()) from None
        frame = BagFrame(index=n_out, stamp_ns=stamp, log_time_ns=log_ns, frame_id=str(msg.header.frame_id),
                         rgb=rgb, K=K, width=rgb.shape[1], height=rgb.shape[0], image_raw=raw, info_raw=info_raw,
                         info_msg=info)
        if gt is not None:
            s_gt = nearest(gt_stamps, stamp, before_first=False)
            if s_gt is not None and abs(s_gt - stamp) <= tol_ns:
                gt_raw, gt_msg = gts[s_gt]
                frame.gt_stamp_ns, frame.gt_raw = s_gt, gt_raw
                frame.gt_depth_m = _gt_depth(gt, gt_msg, K, rgb.shape[0], rgb.shape[1], bag)
        n_out += 1
        return frame

    def prune(before_ns: int) -> None:
        # Keep camera_info/GT that a still-pending (or later) image can use; drop the rest.
        for stamps, store, keep_last in ((info_stamps, infos, True), (gt_stamps, gts, False)):
            cut = bisect.bisect_left(stamps, before_ns)
            if keep_last:
                cut = max(0, cut - 1)
            for s in stamps[:cut]:
                del store[s]
            del stamps[:cut]

    topics = [image_topic, camera_info_topic] + ([gt.topic] if gt else [])
    n_read = dict.fromkeys(topics, 0)
    for topic, log_ns, raw in bag.raw_messages(topics):
        n_read[topic] += 1
        msg = bag.deserialize(raw, topic)
        stamp = stamp_to_ns(msg.header.stamp)
        if topic == image_topic:
            pending.append((stamp, log_ns, raw, msg))
        elif topic == camera_info_topic:
            if stamp not in infos:
                bisect.insort(info_stamps, stamp)
            infos[stamp] = (raw, msg)
        else:
            if stamp not in gts:
                bisect.insort(gt_stamps, stamp)
            gts[stamp] = (raw, msg)
        while pending and ready(pending[0][0], flushing=False):
            yield emit(*pending.popleft())
            if max_frames is not None and n_out >= max_frames:
                return
            prune((pending[0][0] if pending else stamp) - tol_ns - 1)
    # A damaged index or channel record can make a bag yield fewer messages than its metadata lists, silently.
    short = [f"{t}: {n_read[t]} of {bag.topics[t].count}" for t in topics if n_read[t] < bag.topics[t].count]
    if short:
        raise BagError(f"bag {bag.path} is damaged (corrupted or truncated?): fewer messages could be read than "
                       f"its metadata lists ({'; '.join(short)})", bag.topic_list())
    while pending:
        yield emit(*pending.popleft())
        if max_frames is not None and n_out >= max_frames:
            return


def _gt_depth(gt: GtSource, msg, K: np.ndarray, height: int, width: int, bag: BagReader) -> np.ndarray:
    try:
        if gt.kind == "depth":
            return depth_msg_to_array(msg)
        from monodepth_ros.lidar_gt import lidar_to_depth, pointcloud2_to_xyz

        return lidar_to_depth(pointcloud2_to_xyz(msg), gt.T_cam_from_lidar, K, height, width,
                              depth_convention=gt.depth_convention)
    except ValueError as e:
        raise BagError(f"GT message on {gt.topic} cannot be used: {e}", bag.topic_list()) from None


class OutputBagWriter:
    """Writes the replay's output bag (rosbag2, MCAP storage) from raw CDR bytes; atomic on :meth:`close`.

    The bag is built in a temporary directory next to ``path`` and renamed into place only when complete, so a
    crash never leaves a half-written bag under the final name. ``topics`` maps topic name -> message type.
    """

    def __init__(self, path: str | os.PathLike, topics: dict[str, str], compress: bool = True):
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_parent = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._writer = Writer(self._tmp_parent / self.path.name, version=9, storage_plugin=StoragePlugin.MCAP)
        if compress:
            # MCAP's own zstd chunk compression (what `ros2 bag record --storage-preset-profile zstd_fast` writes);
            # RViz/Foxglove/ros2 bag read it. Organised clouds are ~2 MB/frame at 640x192 and compress well.
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        typestore = get_typestore(Stores.ROS2_KILTED)
        self._conns = {name: self._writer.add_connection(name, msgtype, typestore=typestore)
                       for name, msgtype in topics.items()}
        self.counts = dict.fromkeys(topics, 0)

    def write(self, topic: str, stamp_ns: int, raw: bytes | memoryview) -> None:
        self._writer.write(self._conns[topic], int(stamp_ns), raw)
        self.counts[topic] += 1

    def close(self) -> Path:
        """Finish the bag and move it to ``path`` (replacing an older output bag there)."""
        self._writer.close()
        if self.path.exists():
            old = self._tmp_parent / "previous"
            os.replace(self.path, old)
        os.replace(self._tmp_parent / self.path.name, self.path)
        shutil.rmtree(self._tmp_parent, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - already failing; the temp dir goes away either way
            pass
        shutil.rmtree(self._tmp_parent, ignore_errors=True)

    def __enter__(self) -> OutputBagWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
