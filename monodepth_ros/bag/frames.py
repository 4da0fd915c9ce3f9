"""Camera frames of a bag: each image with its camera_info and matched ground truth, streamed in one pass.

Frames are streamed (one pass over the bag, bounded buffers), so a long bag never has to fit in memory.
Messages are kept as their raw CDR bytes next to the decoded arrays: the output bag copies the input image and
camera_info byte for byte, and ``--through-node`` publishes those same bytes over DDS. Ground truth is a depth
image topic or a lidar PointCloud2 projected into the camera.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from monodepth_ros.bag.msgtypes import CAMERA_INFO_TYPE, COMPRESSED_TYPE, IMAGE_TYPE, POINTCLOUD2_TYPE
from monodepth_ros.bag.reader import BagError, BagReader
from monodepth_ros.msgs.camera_info import camera_info_K
from monodepth_ros.msgs.image import compressed_to_rgb, depth_msg_to_array, image_msg_to_rgb
from monodepth_ros.msgs.stamps import stamp_to_ns

__all__ = ["GtSource", "BagFrame", "iter_frames"]


@dataclass(frozen=True)
class GtSource:
    """Where ground truth comes from.

    ``kind``: "depth" (a depth Image topic, matched to frames by header stamp) or "lidar" (a PointCloud2 topic,
    projected into the camera with ``T_cam_from_lidar``). ``tolerance_s``: the largest |stamp difference| that
    still matches (0 = exact stamps). ``depth_convention``: what a lidar GT pixel holds, "camera_z" or
    "lidar_forward" (:func:`monodepth_ros.evaluation.lidar_gt.lidar_depth_map`).
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


def iter_frames(
    bag: BagReader,
    image_topic: str,
    camera_info_topic: str,
    gt: GtSource | None = None,
    max_frames: int | None = None,
    *,
    reorder_window: int = 64,
) -> Iterator[BagFrame]:
    """Stream the bag's camera frames, each with its camera_info and matched GT, in image log-time order.

    Pairing rules: the camera_info with the image's exact stamp, else the latest one before it (camera_info is
    usually constant), else the nearest. GT: the nearest GT message within ``gt.tolerance_s``; none -> the
    frame's ``gt_depth_m`` is None. Messages may arrive out of order within ``reorder_window`` messages.

    Raises BagError (with the topic list) for missing or mistyped topics, undecodable images and bad K.
    """
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
                frame.gt_depth_m = _gt_depth(gt, gt_msg, frame, bag)
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


def _gt_depth(gt: GtSource, msg, frame: BagFrame, bag: BagReader) -> np.ndarray:
    """GT depth (H_gt, W_gt) float32 metres of ``frame`` from its matched GT message (a depth Image, or a lidar
    cloud projected into the frame's (height, width) image with its K); an unusable message -> BagError."""
    try:
        if gt.kind == "depth":
            return depth_msg_to_array(msg)
        from monodepth_ros.evaluation.lidar_gt import lidar_to_depth, pointcloud2_to_xyz

        return lidar_to_depth(pointcloud2_to_xyz(msg), gt.T_cam_from_lidar, frame.K, frame.height, frame.width,
                              depth_convention=gt.depth_convention)
    except ValueError as e:
        raise BagError(f"GT message on {gt.topic} cannot be used: {e}", bag.topic_list()) from None
