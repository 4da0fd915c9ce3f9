"""rosbag2 source (MCAP or sqlite3, read with ``rosbags``' AnyReader; no ROS install needed).

How a bag becomes samples:

1. Index (once per bag and option set, cached). A first pass reads only the image header stamps (from the raw
   CDR bytes, no decoding) and chooses the frames to keep with :func:`subsample_by_time`. A second pass decodes
   just those frames with the runtime's own converters (:mod:`monodepth_ros.msgs.image`, so training
   and the node read a bag's pixels identically), resizes them to the training size and writes them to a raw
   uint8 file that is then memory-mapped. A frame that cannot be decoded (a bad JPEG, an Image shorter than
   ``step * height``, a truncated message) is left out and counted: one bad frame must not stop a long run.
   The index (stamps, speeds, intrinsics, drop counts) goes into a JSON file beside the frames.
2. Samples. Neighbours (offset +-1, ...) are consecutive kept frames, but only within one segment: a stamp gap
   (a dropped chunk of the recording, or the hole a skipped frame leaves) ends a segment, because warping
   across 2 s of driving is wrong (:func:`segment_ids`). ``split: train | val`` holds out short chunks
   interleaved through the whole drive (:func:`interleaved_val_chunks`), so one bag gives a validation set
   that looks like the training set rather than like the drive's last minute.

The cache key covers the bag files' sizes and mtimes and every option that changes the cached content, so a
changed bag or option re-indexes and an unchanged one loads instantly; workers only map the file (no per-sample
bag access, which MCAP/sqlite readers do not do well from many processes). Intrinsics come from the camera_info
topic (``k``, at camera_info's width x height), never from a default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from monodepth_training.datasets.base import MonoDataset

from monodepth_ros.backends.base import resize_rgb
from monodepth_ros.bag.msgtypes import CAMERA_INFO_TYPE, COMPRESSED_TYPE, IMAGE_TYPE
from monodepth_ros.bag.reader import BagError, topic_summaries
from monodepth_ros.geometry import R_BODY_FROM_OPTICAL, interpolate_poses, rpy_to_matrix, scale_intrinsics
from monodepth_ros.msgs.camera_info import camera_info_K
from monodepth_ros.msgs.image import compressed_to_rgb, depth_msg_to_array, image_msg_to_rgb
from monodepth_ros.msgs.stamps import cdr_header_stamp_ns, stamp_to_ns

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # 3: odometry poses at the image stamps (known ego-motion)
ODOM_TYPES = ("nav_msgs/msg/Odometry", "geometry_msgs/msg/TwistStamped")
SPLITS = ("all", "train", "val")

# Fraction of a frame period by which a gap may fall short of min_dt_s and still count as min_dt_s. It only
# decides how min_dt_s rounds to whole frame periods (0.1 s at 10 Hz = 1 period; 0.12 s = 1; 0.13 s = 2).
SUBSAMPLE_TOLERANCE = 0.2
# A gap between kept frames longer than this many times their median spacing ends a segment.
GAP_FACTOR = 1.5

# Frame fates returned by subsample_by_time.
KEPT, TOO_CLOSE, NOT_AFTER_PREVIOUS = 0, 1, 2


# ------------------------------------------------------------------------------------------- frame rules
def frame_period_s(stamps_s: np.ndarray) -> float:
    """Nominal frame period: the median of the positive differences of the sorted stamps (N,) in seconds.

    The median ignores jitter, the odd dropped frame and recording gaps. NaN with fewer than two distinct stamps.
    """
    d = np.diff(np.sort(np.asarray(stamps_s, dtype=np.float64)))
    d = d[d > 0]
    return float(np.median(d)) if d.size else float("nan")


def subsample_step(min_dt_s: float, period_s: float, tolerance: float = SUBSAMPLE_TOLERANCE) -> int:
    """``min_dt_s`` as a whole number n >= 0 of frame periods: the fewest periods that fall short of
    ``min_dt_s`` by less than ``tolerance * period_s`` (0 = keep every frame)."""
    if min_dt_s <= 0 or not math.isfinite(period_s) or period_s <= 0:
        return 0
    return max(0, math.ceil(min_dt_s / period_s - tolerance))


def subsample_by_time(
    stamps_s: np.ndarray,
    min_dt_s: float,
    period_s: float | None = None,
    tolerance: float = SUBSAMPLE_TOLERANCE,
) -> np.ndarray:
    """Which frames of a camera stream to keep so that kept frames are ``min_dt_s`` apart.

    Args:
        stamps_s: (N,) header stamps in seconds, in increasing order (ties allowed).
        min_dt_s: wanted spacing; 0 keeps every frame.
        period_s: the camera's frame period; ``None`` = :func:`frame_period_s` of ``stamps_s``.
        tolerance: see :func:`subsample_step`.

    Returns:
        (N,) int8 fate per frame: ``KEPT``, ``TOO_CLOSE`` or ``NOT_AFTER_PREVIOUS`` (a repeated stamp).

    Rule: ``min_dt_s`` becomes n whole periods p (:func:`subsample_step`); walking forward, a frame is kept when
    it is at least (n - 1/2) p after the last kept one. The threshold sits midway between two frames, so stamp
    jitter up to +-p/4 never changes a decision; a plain ``t - last < min_dt_s`` test puts it exactly on a frame,
    where float rounding and jitter drop every other frame at random. After a recording gap the first frame is
    kept at once.
    """
    t = np.asarray(stamps_s, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"stamps_s must be (N,), got shape {t.shape}")
    p = frame_period_s(t) if period_s is None else float(period_s)
    n = subsample_step(min_dt_s, p, tolerance)
    threshold = (n - 0.5) * p if n > 0 else 0.0
    fate = np.full(t.shape, TOO_CLOSE, dtype=np.int8)
    last = -math.inf
    for i, ti in enumerate(t):
        if ti <= last:
            fate[i] = NOT_AFTER_PREVIOUS
        elif ti - last >= threshold:
            fate[i] = KEPT
            last = ti
    return fate


def segment_ids(stamps_s: np.ndarray, max_gap_s: float, blocks: np.ndarray | None = None) -> np.ndarray:
    """(N,) int64 segment id of each frame: consecutive frames share an id unless their stamps (N,) are more
    than ``max_gap_s`` apart or ``blocks`` (N,) bool changes between them. A sample may only use frames of its
    target's segment. NaN or inf ``max_gap_s`` breaks at no gap."""
    t = np.asarray(stamps_s, dtype=np.float64)
    breaks = np.zeros(t.shape, dtype=bool)
    if t.size > 1:
        breaks[1:] = np.diff(t) > max_gap_s  # False for NaN
        if blocks is not None:
            b = np.asarray(blocks, dtype=bool)
            breaks[1:] |= b[1:] != b[:-1]
    return np.cumsum(breaks, dtype=np.int64)


def interleaved_val_chunks(stamps_s: np.ndarray, every_s: float, chunk_s: float) -> np.ndarray:
    """(N,) bool: frames inside the validation chunk of each ``every_s`` window of the drive.

    Windows start at the first stamp; each chunk (``chunk_s`` long) sits in the middle of its window, so the first
    one is not the robot standing still at the start. Stamps (N,) in seconds.
    """
    if not 0 < chunk_s < every_s:
        raise ValueError(f"need 0 < val_chunk_s < val_every_s, got {chunk_s} and {every_s}")
    t = np.asarray(stamps_s, dtype=np.float64)
    if t.size == 0:
        return np.zeros(0, dtype=bool)
    phase = np.mod(t - t.min(), every_s)
    start = 0.5 * (every_s - chunk_s)
    return (phase >= start) & (phase < start + chunk_s)


def dilate(mask: np.ndarray, frames: int) -> np.ndarray:
    """(N,) bool ``mask`` grown by ``frames`` entries on each side."""
    m = np.asarray(mask, dtype=bool)
    out = m.copy()
    for k in range(1, frames + 1):
        out[k:] |= m[:-k]
        out[:-k] |= m[k:]
    return out


# ------------------------------------------------------------------------------------------- decoding
# rosbags raises SerdeError for a truncated message; the runtime's converters raise ValueError for a bad JPEG
# or an Image whose data does not fill step * height; OpenCV raises cv2.error on data it cannot even parse.
def _decode_errors() -> tuple[type[BaseException], ...]:
    from rosbags.serde import SerdeError

    return ValueError, SerdeError, cv2.error


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _stamp_s(header) -> float:
    return stamp_to_ns(header.stamp) * 1e-9


def _bag_files(bag: Path) -> list[Path]:
    if bag.is_dir():
        return sorted(p for p in bag.iterdir() if p.is_file())
    return [bag]


def _connections(reader, topic: str, allowed_types: Sequence[str], role: str, bag: Path):
    """The rosbags connections of ``topic``, or BagError (listing the bag's topics) if it is absent or mistyped."""
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        raise BagError(f"{role} topic {topic!r} is not in bag {bag}", topic_summaries(reader))
    bad = {c.msgtype for c in conns} - set(allowed_types)
    if bad:
        raise BagError(f"{role} topic {topic!r} in {bag} has type {sorted(bad)}, expected one of "
                       f"{list(allowed_types)}", topic_summaries(reader))
    return conns


def _compact(path: Path, frame_bytes: int, good_slots: Sequence[int]) -> None:
    """Move the frames of ``good_slots`` (increasing) to the front of the file, in order, and cut the rest."""
    with open(path, "r+b") as f:
        for j, i in enumerate(good_slots):
            if i != j:  # j < i, so a slot is read before anything overwrites it
                f.seek(i * frame_bytes)
                buf = f.read(frame_bytes)
                f.seek(j * frame_bytes)
                f.write(buf)
        f.truncate(len(good_slots) * frame_bytes)


# ------------------------------------------------------------------------------------------- the index
@dataclass(frozen=True)
class BagIndexOptions:
    """What :func:`index_bag` reads from a bag and how: every option that changes the cached content (so it is
    also part of the cache key). ``height`` x ``width``: the training size the frames are resized to."""

    image_topic: str
    camera_info_topic: str
    height: int
    width: int
    min_dt_s: float = 0.0
    odom_topic: str | None = None
    depth_topic: str | None = None


def index_bag(bag: str | os.PathLike, out_dir: str | os.PathLike, opts: BagIndexOptions) -> dict:
    """Two passes over ``bag``: write ``frames.u8`` (N, height, width, 3) uint8 and optionally ``depth.f32``
    (N, hg, wg) float32 metres into ``out_dir``, and return the index dict (also written as ``index.json``).

    Frames are ordered by header stamp and subsampled with :func:`subsample_by_time`; kept frames that cannot be
    decoded are left out and listed (``undecodable_stamps_s``, ``undecodable_first_reason``). Speed is the norm
    of the odometry's linear velocity, linearly interpolated at the image stamps (NaN without ``odom_topic``); a
    nav_msgs/Odometry topic also gives the pose of its child frame at each image stamp
    (:func:`monodepth_ros.geometry.interpolate_poses`; None outside the odometry's time span).
    Depth GT is matched to kept images by equal header stamp (within 1 ms); an undecodable depth message leaves
    its frame without GT (counted).
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    image_topic, camera_info_topic, odom_topic, depth_topic = (
        opts.image_topic, opts.camera_info_topic, opts.odom_topic, opts.depth_topic)
    height, width, min_dt_s = opts.height, opts.width, opts.min_dt_s

    decode_errors = _decode_errors()
    bag = Path(bag)
    out_dir = Path(out_dir)
    if not bag.exists():
        raise FileNotFoundError(f"bag not found: {bag}")
    out_dir.mkdir(parents=True, exist_ok=True)
    frame_bytes = height * width * 3
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        img_conns = _connections(reader, image_topic, (IMAGE_TYPE, COMPRESSED_TYPE), "image", bag)
        info_conns = _connections(reader, camera_info_topic, (CAMERA_INFO_TYPE,), "camera_info", bag)
        odom_conns = _connections(reader, odom_topic, ODOM_TYPES, "odometry", bag) if odom_topic else []
        depth_conns = (
            _connections(reader, depth_topic, (IMAGE_TYPE,), "depth GT", bag) if depth_topic else []
        )
        img_ids = {id(c) for c in img_conns}
        info_ids = {id(c) for c in info_conns}
        odom_ids = {id(c) for c in odom_conns}
        depth_ids = {id(c) for c in depth_conns}

        # Pass 1: stamps only, so the subsampling sees the whole stream (its frame period) before decoding.
        header_ns: list[int] = []
        undecodable: list[tuple[int, str]] = []  # (stamp ns, reason); log time when the header is unreadable
        for _, log_ns, raw in reader.messages(connections=img_conns):
            try:
                header_ns.append(cdr_header_stamp_ns(raw))
            except ValueError as e:
                undecodable.append((int(log_ns), _reason(e)))
        total = len(header_ns) + len(undecodable)
        all_ns = np.sort(np.asarray(header_ns, dtype=np.int64))
        rel_s = (all_ns - (all_ns[0] if all_ns.size else 0)) * 1e-9  # seconds near 0 keep full float precision
        period_s = frame_period_s(rel_s)
        fate = subsample_by_time(rel_s, min_dt_s, period_s)
        selected = all_ns[fate == KEPT]
        slot_of = {int(s): i for i, s in enumerate(selected)}
        seen = np.zeros(len(selected), dtype=bool)
        slot_error: dict[int, str] = {}

        # Pass 2: decode the selected frames into their slots (in stamp order, whatever the bag's order).
        info_msg = None  # the first camera_info
        src_sizes: set[tuple[int, int]] = set()
        odom_t: list[float] = []
        odom_v: list[float] = []
        odom_pose_t: list[float] = []
        odom_pose: list[list[float]] = []  # x, y, z, qx, qy, qz, qw of the odometry's child frame
        depth_by_stamp: dict[int, np.ndarray] = {}
        depth_bad: list[str] = []
        with open(out_dir / "frames.u8", "wb") as frames_f:
            for conn, _, raw in reader.messages(connections=img_conns + info_conns + odom_conns + depth_conns):
                cid = id(conn)
                if cid in img_ids:
                    try:
                        slot = slot_of.get(cdr_header_stamp_ns(raw))
                    except ValueError:
                        continue  # counted in pass 1
                    if slot is None or seen[slot]:
                        continue
                    seen[slot] = True
                    try:
                        decode = compressed_to_rgb if conn.msgtype == COMPRESSED_TYPE else image_msg_to_rgb
                        rgb = decode(reader.deserialize(raw, conn.msgtype))
                    except decode_errors as e:
                        slot_error[slot] = _reason(e)
                        continue
                    src_sizes.add(rgb.shape[:2])
                    rgb = resize_rgb(rgb, height, width)  # preprocess()'s resize, done once into the cache
                    frames_f.seek(slot * frame_bytes)
                    frames_f.write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
                    continue
                if cid in depth_ids:
                    try:
                        dmsg = reader.deserialize(raw, conn.msgtype)
                        depth_by_stamp[round(_stamp_s(dmsg.header) * 1e3)] = depth_msg_to_array(dmsg, invalid_to=0.0)
                    except decode_errors as e:
                        depth_bad.append(_reason(e))
                    continue
                msg = reader.deserialize(raw, conn.msgtype)
                if cid in info_ids:
                    if info_msg is None:
                        info_msg = msg
                elif cid in odom_ids:
                    twist = msg.twist.twist if conn.msgtype.endswith("Odometry") else msg.twist
                    lin = twist.linear
                    odom_t.append(_stamp_s(msg.header))
                    odom_v.append(float(np.sqrt(lin.x**2 + lin.y**2 + lin.z**2)))
                    if conn.msgtype.endswith("Odometry"):
                        pos, q = msg.pose.pose.position, msg.pose.pose.orientation
                        if np.linalg.norm([q.x, q.y, q.z, q.w]) > 0:  # an all-zero quaternion = no pose
                            odom_pose_t.append(odom_t[-1])
                            odom_pose.append([pos.x, pos.y, pos.z, q.x, q.y, q.z, q.w])
    for slot in np.flatnonzero(~seen):
        slot_error[int(slot)] = "not found again on the second read of the bag"
    good = [i for i in range(len(selected)) if i not in slot_error]
    if len(good) < len(selected):
        _compact(out_dir / "frames.u8", frame_bytes, good)
    undecodable += [(int(selected[i]), r) for i, r in slot_error.items()]
    undecodable.sort()

    if info_msg is None:
        raise BagError(f"camera_info topic {camera_info_topic!r} in {bag} has no messages")
    if not good:
        first = f" (first failure: {undecodable[0][1]})" if undecodable else ""
        raise BagError(f"image topic {image_topic!r} in {bag} has no decodable messages{first}")
    if len(src_sizes) != 1:
        raise ValueError(f"image size changes within {image_topic!r} in {bag}: {sorted(src_sizes)}")
    (src_h, src_w), = src_sizes
    try:
        K_info = camera_info_K(info_msg)
    except ValueError as e:
        raise ValueError(f"camera_info on {camera_info_topic!r} has unusable intrinsics k: {e}") from e
    info_h, info_w = int(info_msg.height), int(info_msg.width)
    if (info_h, info_w) != (0, 0) and (info_h, info_w) != (src_h, src_w):
        # camera_info describes the calibrated resolution; bring K to the image's own size first.
        K_info = scale_intrinsics(K_info, src_w / info_w, src_h / info_h)
    K = scale_intrinsics(K_info, width / src_w, height / src_h)

    stamps_arr = selected[good] * 1e-9
    if odom_t:
        order = np.argsort(odom_t)
        speeds = np.interp(stamps_arr, np.asarray(odom_t)[order], np.asarray(odom_v)[order])
    else:
        speeds = np.full(len(stamps_arr), np.nan)
    if odom_pose:
        arr = np.asarray(odom_pose, dtype=np.float64)
        poses = interpolate_poses(stamps_arr, np.asarray(odom_pose_t), arr[:, :3], arr[:, 3:])
    else:
        poses = np.full((len(stamps_arr), 4, 4), np.nan)
    depth_hw = None
    if depth_topic:
        shapes = {d.shape for d in depth_by_stamp.values()}
        if len(shapes) > 1:
            raise ValueError(f"depth GT size changes within {depth_topic!r}: {sorted(shapes)}")
        depth_hw = shapes.pop() if shapes else (src_h, src_w)
        with open(out_dir / "depth.f32", "wb") as depth_f:
            zero = np.zeros(depth_hw, dtype=np.float32)
            for t in stamps_arr:
                key = round(t * 1e3)
                d = depth_by_stamp.get(key, depth_by_stamp.get(key - 1, depth_by_stamp.get(key + 1, zero)))
                depth_f.write(np.ascontiguousarray(d, dtype=np.float32).tobytes())
    index = {
        "version": CACHE_VERSION,
        "bag": str(bag),
        "num_frames": len(good),
        "height": height,
        "width": width,
        "source_size": [src_h, src_w],
        "K": K.tolist(),
        "stamps_s": stamps_arr.tolist(),
        "speed_mps": [None if not np.isfinite(v) else float(v) for v in speeds],
        # T_odom_from_base (the odometry's child frame) at each frame's stamp, 12 floats (rows 0-2), or None.
        "odom_pose": [None if not np.isfinite(T).all() else T[:3].reshape(-1).tolist() for T in poses],
        "depth_hw": list(depth_hw) if depth_hw else None,
        "frames_in_topic": int(total),
        "frame_period_s": period_s if math.isfinite(period_s) else None,
        "subsample_step": subsample_step(min_dt_s, period_s),
        "dropped": {
            "too_close": int(np.sum(fate == TOO_CLOSE)),
            "repeated_stamp": int(np.sum(fate == NOT_AFTER_PREVIOUS)),
            "undecodable": len(undecodable),
        },
        "undecodable_stamps_s": [s * 1e-9 for s, _ in undecodable],
        "undecodable_first_reason": undecodable[0][1] if undecodable else None,
        "depth_undecodable": len(depth_bad),
        "depth_undecodable_first_reason": depth_bad[0] if depth_bad else None,
    }
    (out_dir / "index.json").write_text(json.dumps(index))
    return index


def mount_transform(mount: dict[str, Sequence[float]]) -> np.ndarray:
    """A URDF-style camera mount ``{xyz, rpy}`` of the camera body frame on the base -> ``T_base_from_cam`` (4, 4)
    of the camera's OPTICAL frame (z forward, x right, y down), the frame the training poses are in."""
    if not isinstance(mount, dict) or set(mount) - {"xyz", "rpy"}:
        raise ValueError(f"camera_mount must be a dict with keys xyz and rpy, got {mount!r}")
    xyz = np.asarray(mount.get("xyz", (0.0, 0.0, 0.0)), dtype=np.float64)
    rpy = np.asarray(mount.get("rpy", (0.0, 0.0, 0.0)), dtype=np.float64)
    if xyz.shape != (3,) or rpy.shape != (3,) or not (np.isfinite(xyz).all() and np.isfinite(rpy).all()):
        raise ValueError(f"camera_mount xyz and rpy need 3 finite numbers each, got {mount!r}")
    T = np.eye(4)
    T[:3, :3] = rpy_to_matrix(rpy) @ R_BODY_FROM_OPTICAL
    T[:3, 3] = xyz
    return T


# ------------------------------------------------------------------------------------------- the dataset
class RosbagDataset(MonoDataset):
    """Samples from one rosbag2 (a bag directory with ``metadata.yaml``, MCAP or sqlite3 storage).

    Args:
        bag: the bag directory (or a single ``.mcap`` / ``.db3`` file).
        image_topic: sensor_msgs/Image or sensor_msgs/CompressedImage topic.
        camera_info_topic: sensor_msgs/CameraInfo topic of that camera (intrinsics).
        min_dt_s: keep frames about this far apart in time (subsampling a fast camera), rounded to whole frame
            periods (:func:`subsample_by_time`: 0.1 on a 10 Hz camera keeps every frame, 0.2 every other one);
            neighbours (offset +-1) are consecutive KEPT frames.
        max_gap_s: a sample never spans a longer interval between two consecutive kept frames (a gap in the
            recording, or a skipped undecodable frame); ``None`` = ``gap_factor`` x their median spacing.
        gap_factor: see ``max_gap_s``; ``.inf`` accepts any gap.
        odom_topic: optional nav_msgs/Odometry (or TwistStamped) topic giving ``speed_mps`` (and, for Odometry,
            the poses that ``camera_mount`` turns into known camera motion).
        camera_mount: the camera's mount on the odometry's child frame (``base_link``), as in a URDF joint:
            ``{xyz: [x, y, z] metres, rpy: [roll, pitch, yaw] radians}`` of the camera BODY frame (REP 103: x
            forward, y left, z up; the optical rotation is applied here). With it, every sample carries its known
            relative camera poses ``T_gt`` (for ``model.gt_pose_warp``); needs a nav_msgs/Odometry ``odom_topic``.
        depth_topic: optional depth GT topic (32FC1 m or 16UC1 mm) for validation.
        split: ``all`` (every frame), or ``train`` / ``val`` of an interleaved hold-out: every ``val_every_s``
            seconds of the drive, a ``val_chunk_s`` chunk (mid-window) gives the ``val`` targets; ``train`` uses
            no frame of a chunk nor of the neighbours its samples need. Point ``data.train`` and ``data.val``
            at the same bag with the same options and ``split: train`` / ``split: val``.
        val_every_s, val_chunk_s: see ``split`` (defaults: 1 s of every 10 s, i.e. ~10 % of the drive).
        frame_range: (start, end) fractions of the kept frames to use, e.g. (0, 0.9) for training and
            (0.9, 1) for validation on one bag (a held-out tail; prefer ``split``).
        cache_dir: where the decoded frames are cached (default ``~/.cache/monodepth_ros/bags``).
        Other arguments: see :class:`MonoDataset`.

    Counts (also logged in one INFO line, and one warning when frames were skipped or the stamps have gaps):
    ``num_undecodable`` frames left out, ``num_gaps`` gaps longer than ``max_gap_s`` in the recording,
    ``num_skipped_at_gaps`` targets of this split not used because a neighbour lies across a gap.
    """

    def __init__(
        self,
        bag: str | os.PathLike,
        height: int,
        width: int,
        *,
        image_topic: str = "/camera/image_raw",
        camera_info_topic: str = "/camera/camera_info",
        frame_offsets: Iterable[int] = (0, -1, 1),
        min_dt_s: float = 0.0,
        max_gap_s: float | None = None,
        gap_factor: float = GAP_FACTOR,
        odom_topic: str | None = None,
        depth_topic: str | None = None,
        split: str = "all",
        val_every_s: float = 10.0,
        val_chunk_s: float = 1.0,
        frame_range: Sequence[float] = (0.0, 1.0),
        cache_dir: str | os.PathLike | None = None,
        camera_mount: dict[str, Sequence[float]] | None = None,
        **kwargs,
    ):
        super().__init__(height, width, frame_offsets=frame_offsets, **kwargs)
        self.bag = Path(bag).expanduser().resolve()
        if not self.bag.exists():
            raise FileNotFoundError(f"bag not found: {self.bag}")
        if min_dt_s < 0:
            raise ValueError(f"min_dt_s must be >= 0, got {min_dt_s}")
        if not gap_factor > 1:
            raise ValueError(f"gap_factor must be > 1 (kept frames are ~1 spacing apart), got {gap_factor}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split != "all" and not 0 < val_chunk_s < val_every_s:
            raise ValueError(f"need 0 < val_chunk_s < val_every_s, got {val_chunk_s} and {val_every_s}")
        lo, hi = (float(x) for x in frame_range)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"frame_range must satisfy 0 <= start < end <= 1, got {[lo, hi]}")
        if depth_topic is None and self.load_depth_gt:
            raise ValueError("load_depth_gt needs a depth_topic for a rosbag source")
        self.image_topic = image_topic
        self.split = split
        index_opts = BagIndexOptions(image_topic=image_topic, camera_info_topic=camera_info_topic, height=self.height,
                                     width=self.width, min_dt_s=float(min_dt_s), odom_topic=odom_topic,
                                     depth_topic=depth_topic)
        options = {
            "version": CACHE_VERSION,
            "bag": str(self.bag),
            "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in _bag_files(self.bag)],
            **asdict(index_opts),
        }
        digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
        root = Path(cache_dir).expanduser() if cache_dir else Path.home() / ".cache" / "monodepth_ros" / "bags"
        self.cache_path = root / f"{self.bag.name}-{digest}"
        if not (self.cache_path / "index.json").is_file():
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{self.bag.name}-"))
            try:
                index_bag(self.bag, tmp, index_opts)
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
        self.T_base_from_cam = None if camera_mount is None else mount_transform(camera_mount)
        rows = self.index["odom_pose"]
        known = np.array([row is not None for row in rows], dtype=bool)
        self.odom_poses = np.full((n, 4, 4), np.nan)
        if known.any():
            self.odom_poses[known, :3] = np.asarray([row for row in rows if row is not None]).reshape(-1, 3, 4)
            self.odom_poses[known, 3] = (0.0, 0.0, 0.0, 1.0)
        if self.T_base_from_cam is not None and not np.isfinite(self.odom_poses).all(axis=(1, 2)).any():
            raise ValueError(f"camera_mount needs odometry poses, but {self.bag} gives none at the image stamps "
                             f"(odom_topic={odom_topic!r}: a nav_msgs/Odometry topic covering the drive)")
        self.first, self.stop = int(round(lo * n)), int(round(hi * n))
        self._frames: np.ndarray | None = None
        self._depth: np.ndarray | None = None

        self.max_gap_s = float(max_gap_s) if max_gap_s is not None else gap_factor * frame_period_s(self.stamps_s)
        gap_segment = segment_ids(self.stamps_s, self.max_gap_s)
        blocks = None
        self.is_target = np.ones(n, dtype=bool)
        if split != "all":
            chunks = interleaved_val_chunks(self.stamps_s, val_every_s, val_chunk_s)
            # A val chunk plus the frames its samples reach is one block; train samples stay out of every block.
            reach = max((abs(o) for o in self.frame_offsets[1:]), default=0)
            blocks = dilate(chunks, reach)
            self.is_target = chunks if split == "val" else ~blocks
        self.segment = segment_ids(self.stamps_s, self.max_gap_s, blocks)
        self._build_index()
        self.num_undecodable = int(self.index["dropped"]["undecodable"])
        # Gaps in the recording: between kept frames and the undecodable ones (whose holes are not gaps of it).
        recorded = np.sort(np.concatenate([self.stamps_s, self.index["undecodable_stamps_s"]]))
        gap_after = np.flatnonzero(np.diff(recorded) > self.max_gap_s)
        self.num_gaps = len(gap_after)
        self.num_skipped_at_gaps = sum(
            1 for k in self._target_keys()
            if any(self.first <= k + o < self.stop and gap_segment[k + o] != gap_segment[k]
                   for o in self.frame_offsets[1:])
        )
        self._report(recorded, gap_after, min_dt_s)
        if not self.samples:
            hint = ""
            if split == "val" and n:
                hint = (f"; the kept frames span {self.stamps_s[-1] - self.stamps_s[0]:.1f} s and the first val "
                        f"chunk starts {0.5 * (val_every_s - val_chunk_s):g} s in: lower val_every_s")
            raise ValueError(
                f"bag {self.bag} gives no usable sample: {n} frames kept (min_dt_s={min_dt_s}), split {split!r}"
                f" ({int(self.is_target.sum())} candidate targets), range {self.first}..{self.stop}, offsets "
                f"{list(self.frame_offsets[1:])}, {self.num_gaps} stamp gaps > {self.max_gap_s:.3f} s{hint}"
            )

    def _report(self, recorded: np.ndarray, gap_after: np.ndarray, min_dt_s: float) -> None:
        """One INFO line always; one warning (same text for every split of a bag) when frames or time are missing."""
        idx, dropped = self.index, self.index["dropped"]
        period = idx["frame_period_s"]
        period_txt = f"{period:.4f} s" if period else "unknown"
        log.info(
            "%s %s: kept %d of %d frames (min_dt_s %g = %d frame period(s) of %s); dropped %d too close in time, "
            "%d with a repeated stamp, %d undecodable; split %s: %d samples, %d targets skipped (%d next to a "
            "stamp gap > %.3f s)",
            self.bag.name, self.image_topic, idx["num_frames"], idx["frames_in_topic"], min_dt_s,
            idx["subsample_step"], period_txt, dropped["too_close"], dropped["repeated_stamp"],
            dropped["undecodable"], self.split, len(self.samples), self.num_skipped, self.num_skipped_at_gaps,
            self.max_gap_s,
        )
        problems = []
        t0 = recorded[0] if recorded.size else 0.0
        if self.num_undecodable:
            first_s = idx["undecodable_stamps_s"][0]
            problems.append(
                f"{self.num_undecodable} of {idx['frames_in_topic']} frames could not be decoded and were skipped "
                f"(first at t={first_s - t0:.2f} s, stamp {first_s:.6f}: {idx['undecodable_first_reason']})"
            )
        if self.num_gaps:
            i = gap_after[0]
            problems.append(
                f"{self.num_gaps} gap(s) in the stamps longer than {self.max_gap_s:.3f} s (first after "
                f"t={recorded[i] - t0:.2f} s, stamp {recorded[i]:.6f}, {recorded[i + 1] - recorded[i]:.2f} s long)"
            )
        if idx["depth_undecodable"]:
            problems.append(f"{idx['depth_undecodable']} depth GT messages could not be decoded (their frames get "
                            f"no GT; first: {idx['depth_undecodable_first_reason']})")
        if problems:
            warnings.warn(
                f"bag {self.bag} topic {self.image_topic}: " + "; ".join(problems) + ". Samples whose frames "
                "straddle a gap or a skipped frame are not used; training goes on.",
                stacklevel=3,
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
        return (k for k in range(self.first, self.stop) if self.is_target[k])

    def _neighbour(self, key: int, offset: int) -> int | None:
        j = key + offset
        if not self.first <= j < self.stop or self.segment[j] != self.segment[key]:
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

    def _pose(self, key: int) -> np.ndarray | None:
        if self.T_base_from_cam is None or not np.isfinite(self.odom_poses[key]).all():
            return None
        return self.odom_poses[key] @ self.T_base_from_cam

    def _load_depth_gt(self, key: int) -> np.ndarray | None:
        return None if self.depth is None else np.asarray(self.depth[key])
