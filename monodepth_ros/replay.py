"""``monodepth-replay``: evaluate a depth model on a recorded rosbag2 -- accuracy against ground truth, and (with
``--through-node``) what a robot would see from the real depth node: latency, achieved rate and dropped frames.

Two modes:
- in-process (default): the inference backend runs on every frame of the bag, one after the other. Accuracy
  and bare inference time; nothing is dropped.
- ``--through-node``: the real node (``python -m monodepth_ros.depth_node``) runs as its own process on its own
  DDS domain (loopback only, :func:`monodepth_ros.ros_env.ros_env`). The bag's image + camera_info bytes are
  published into it at the recorded rate (x ``--rate``), and everything it publishes is recorded with its
  receipt time. Latency = publication of an input frame -> receipt of the node's output with that frame's stamp
  (the bag's own stamps are in the past, so publication time stands in for "stamp" on a live robot). A frame is
  dropped when no depth with its stamp came back. QoS: both sides RELIABLE (the node's ``qos:=reliable``, and its
  publishers are reliable), so a drop is the node's own latest-frame-only policy, never a lost DDS sample.

Both modes score the depth against GT (a depth image topic matched by stamp, or a lidar cloud projected with
:mod:`monodepth_ros.lidar_gt`, whose pixels hold camera z by default and the lidar's forward distance, as
``monodepth-eval``'s KITTI GT, with ``--lidar-depth lidar_forward``) with :mod:`monodepth_ros.metrics`
(per-image median scaling for relative models), write an MCAP output bag (input image + camera_info, depth,
depth/camera_info, points, depth/colored, GT; stamps = input stamps) for RViz/Foxglove, ``report.json``,
``report.png`` (per-frame plots), ``panels.png`` and ``report.html``, and print the table. Bad bags and missing
topics exit with code 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from monodepth_ros import __version__
from monodepth_ros.bag_io import (
    CAMERA_INFO_TYPE,
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    POINTCLOUD2_TYPE,
    BagError,
    BagFrame,
    BagReader,
    GtSource,
    OutputBagWriter,
    cdr_header_stamp_ns,
    depth_msg_to_array,
    iter_frames,
)
from monodepth_ros.lidar_gt import DEPTH_CONVENTIONS
from monodepth_ros.metrics import MAX_DEPTH_M, METRIC_NAMES, evaluate_image, summarize
from monodepth_ros.replay_report import percentiles_ms, plot_per_frame, summary_text, write_html, write_json

__all__ = ["ReplayConfig", "ReplayError", "NodeFailure", "run_replay", "default_model_path", "output_topics", "main"]

PROG = "monodepth-replay"
DEFAULT_MODEL_REL = Path("models") / "default.onnx"
N_PANELS = 4


class ReplayError(RuntimeError):
    """The replay cannot run (bad model, node failed to start, ...); the message says what to do."""


class NodeFailure(ReplayError):
    """The depth node process failed (start-up, crash, no output): a run-time failure, exit code 1."""


def default_model_path() -> Path:
    """The embedded default model shipped inside the package: ``monodepth_ros/models/default.onnx``."""
    return Path(__file__).resolve().parent / DEFAULT_MODEL_REL


@dataclass
class ReplayConfig:
    """Everything one replay run needs (the CLI fills it; tests and the demo may build it directly)."""

    bag: Path
    out_dir: Path
    model: Path | None = None
    image_topic: str = "/camera/image_raw"
    camera_info_topic: str = "/camera/camera_info"
    gt_topic: str | None = None
    lidar_topic: str | None = None
    extrinsics: Path | None = None
    # What a lidar GT pixel holds: camera z (REP 118, what the node publishes) or the lidar's forward distance
    # (KITTI's reference evaluation); see lidar_gt.lidar_depth_map.
    lidar_depth: str = "camera_z"
    gt_tolerance_s: float | None = None  # None: exact stamps for depth GT, 0.05 s for lidar
    through_node: bool = False
    rate: float = 1.0
    median_scaling: bool = True
    backend: str = "auto"
    max_frames: int | None = None
    crop: str | None = None
    cap_m: float = MAX_DEPTH_M
    domain_id: int | None = None
    node_params: list[str] = field(default_factory=list)
    startup_timeout_s: float = 90.0
    quiet: bool = False

    def validate(self) -> ReplayConfig:
        if self.rate <= 0:
            raise ValueError(f"--rate must be > 0, got {self.rate}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.gt_topic and self.lidar_topic:
            raise ValueError("give either --gt-topic or --lidar-topic, not both")
        if self.lidar_topic and not self.extrinsics:
            raise ValueError("--lidar-topic needs --extrinsics FILE (YAML with the 4x4 T_cam_from_lidar)")
        if self.lidar_depth not in DEPTH_CONVENTIONS:
            raise ValueError(f"--lidar-depth must be one of {DEPTH_CONVENTIONS}, got {self.lidar_depth!r}")
        if self.domain_id is not None and not 0 <= self.domain_id <= 101:
            raise ValueError(f"--domain-id must be in 0..101, got {self.domain_id}")
        if self.cap_m <= 0:
            raise ValueError(f"--cap-m must be > 0, got {self.cap_m}")
        return self


def output_topics(image_topic: str) -> dict[str, str]:
    """Where the node's outputs live for a camera whose image topic is ``image_topic``.

    The node runs in the image topic's namespace (``/camera/image_raw`` -> ``/camera``), so its relative
    outputs become ``/camera/depth``, ``/camera/points``, ...; in-process mode writes the same names.
    A compressed stream ``<image>/compressed`` counts as ``<image>`` (image_transport naming).
    """
    image_topic = _raw_image_topic(image_topic)
    ns = image_topic.rsplit("/", 1)[0] if image_topic.count("/") > 1 else ""
    return {"depth": f"{ns}/depth", "depth_info": f"{ns}/depth/camera_info", "points": f"{ns}/points",
            "colored": f"{ns}/depth/colored", "ns": ns or "/"}


def _raw_image_topic(image_topic: str) -> str:
    return image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic


# ---- model -----------------------------------------------------------------------------------------------------
def _resolve_model(model: Path | None) -> Path:
    if model is None:
        p = default_model_path()
        if not p.is_file():
            raise ReplayError(f"no --model given and the embedded default model is not installed ({p}); "
                              "pass --model PATH (an exported .onnx)")
        return p
    p = Path(model)
    if not p.is_file():
        raise ReplayError(f"model file not found: {p}")
    return p


def _model_info(path: Path):
    """ModelInfo from the model's metadata, without running it (the node loads the model itself)."""
    from monodepth_ros.backends import read_onnx_meta, read_sidecar

    if path.suffix.lower() == ".onnx":
        return read_onnx_meta(path)
    if path.suffix.lower() == ".safetensors":  # a training bundle, run with --backend torch
        from monodepth_ros.backends import ModelInfo
        from monodepth_ros.bundle import read_meta

        m = read_meta(path)
        return ModelInfo(height=m.height, width=m.width, min_depth=m.min_depth, max_depth=m.max_depth,
                         scale_policy=m.scale_policy, scale=m.scale, name=path.name)
    side = read_sidecar(path)
    if side is None:
        raise ReplayError(f"{path}: no metadata (expected an .onnx, or an engine with its .json sidecar)")
    return side.to_model_info(name=path.name)


# ---- GT and scoring ------------------------------------------------------------------------------------------
def _gt_source(cfg: ReplayConfig) -> GtSource | None:
    if cfg.gt_topic:
        return GtSource(cfg.gt_topic, "depth", cfg.gt_tolerance_s if cfg.gt_tolerance_s is not None else 0.0)
    if cfg.lidar_topic:
        from monodepth_ros.lidar_gt import load_extrinsics

        try:
            T = load_extrinsics(cfg.extrinsics)
        except ValueError as e:
            raise ReplayError(str(e)) from None
        return GtSource(cfg.lidar_topic, "lidar", cfg.gt_tolerance_s if cfg.gt_tolerance_s is not None else 0.05,
                        T_cam_from_lidar=T, depth_convention=cfg.lidar_depth)
    return None


def pred_at_gt_resolution(pred_m: np.ndarray, gt_shape: tuple[int, int], fill_m: float) -> tuple[np.ndarray, int]:
    """Prediction (H, W) -> (H_gt, W_gt) for scoring, and the number of non-finite pixels replaced by ``fill_m``.

    Resizes the *disparity* bilinearly and inverts, as the backend does. Non-finite depth (a node masks depth
    beyond its range, or a bad model output) counts as ``fill_m`` (the model's far limit): the metrics need a
    number at every GT pixel, and "far" is what those pixels mean.
    """
    pred = np.asarray(pred_m, dtype=np.float32)
    bad = ~(np.isfinite(pred) & (pred > 0))
    n_bad = int(bad.sum())
    if n_bad:
        pred = np.where(bad, np.float32(fill_m), pred)
    if pred.shape != tuple(gt_shape):
        disp = cv2.resize(1.0 / pred, (int(gt_shape[1]), int(gt_shape[0])), interpolation=cv2.INTER_LINEAR)
        pred = (1.0 / disp).astype(np.float32)
    return pred, n_bad


class _Scorer:
    """Per-frame scoring with :func:`monodepth_ros.metrics.evaluate_image`, summarised at the end; keeps a few
    evenly spaced sample frames for the panel grid."""

    def __init__(self, cfg: ReplayConfig, median_scaling: bool, fill_m: float, n_expected: int):
        self.cfg, self.median_scaling, self.fill_m = cfg, median_scaling, fill_m
        self.per_image: list[dict] = []
        self.by_index: dict[int, dict] = {}
        self.samples: list[tuple] = []
        self.filled_px = 0
        self._owed = 0
        self.skipped: list[str] = []
        self.sample_at = set(np.linspace(0, max(n_expected - 1, 0), min(N_PANELS, max(n_expected, 1))).round()
                             .astype(int).tolist())

    def score(self, frame: BagFrame, pred_m: np.ndarray | None) -> None:
        if frame.index in self.sample_at:
            self._owed += 1  # a sample slot; a dropped or GT-less frame hands it to the next scored one
        if frame.gt_depth_m is None or pred_m is None:
            return
        gt = frame.gt_depth_m
        pred, n_bad = pred_at_gt_resolution(pred_m, gt.shape, self.fill_m)
        self.filled_px += n_bad
        try:
            m = evaluate_image(gt, pred, median_scaling=self.median_scaling, fixed_scale=1.0, cap_m=self.cfg.cap_m,
                               crop=self.cfg.crop, index=frame.index)
        except ValueError as e:  # e.g. no valid GT pixel in this frame (all sky, lidar saw nothing)
            self.skipped.append(str(e))
            return
        self.per_image.append(m)
        self.by_index[frame.index] = m
        if self._owed > 0:
            self._owed -= 1
            rgb = frame.rgb if frame.rgb.shape[:2] == gt.shape else cv2.resize(frame.rgb, gt.shape[::-1])
            self.samples.append((rgb, pred * np.float32(m["ratio"]), gt, f"frame {frame.index}"))

    def result(self):
        return summarize(self.per_image, self.median_scaling) if self.per_image else None


# ---- output messages (in-process mode builds what the node would publish) ------------------------------------
def _serialize_outputs(frame: BagFrame, depth_m: np.ndarray, colored_range: tuple[float, float]) -> dict[str, bytes]:
    """depth / points / depth/colored as the node builds them (same helper functions), CDR-serialised."""
    from builtin_interfaces.msg import Time
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from monodepth_ros.image_conversion import depth_to_image_msg, rgb_to_image_msg
    from monodepth_ros.pointcloud import depth_to_cloud_buffer, make_pointcloud2
    from monodepth_ros.visualize import colorize_depth

    header = Header(stamp=Time(sec=frame.stamp_ns // 1_000_000_000, nanosec=frame.stamp_ns % 1_000_000_000),
                    frame_id=frame.frame_id)
    points, fields = depth_to_cloud_buffer(depth_m, frame.K, rgb=frame.rgb)
    return {
        "depth": serialize_message(depth_to_image_msg(depth_m, header)),
        "points": serialize_message(make_pointcloud2(header, points, fields)),
        "colored": serialize_message(rgb_to_image_msg(colorize_depth(depth_m, *colored_range), header)),
        # Depth is published at the input resolution, so its camera_info is the input one.
        "depth_info": frame.info_raw,
    }


def _output_bag_topics(cfg: ReplayConfig, gt: GtSource | None, image_type: str) -> dict[str, str]:
    t = output_topics(cfg.image_topic)
    topics = {cfg.image_topic: image_type, cfg.camera_info_topic: CAMERA_INFO_TYPE, t["depth"]: IMAGE_TYPE,
              t["depth_info"]: CAMERA_INFO_TYPE, t["points"]: POINTCLOUD2_TYPE, t["colored"]: IMAGE_TYPE}
    if gt is not None:
        topics[gt.topic] = IMAGE_TYPE if gt.kind == "depth" else POINTCLOUD2_TYPE
    return topics


def _progress(iterable, total, desc, cfg):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="frame", disable=cfg.quiet, dynamic_ncols=True)


# ---- in-process mode -----------------------------------------------------------------------------------------
def _run_in_process(cfg, bag, gt, model_path, writer, scorer, n_frames, colored_range):
    from monodepth_ros.backends import create_backend

    backend = create_backend(model_path, kind=cfg.backend)
    topics = output_topics(cfg.image_topic)
    per_frame, infer_s = [], []
    try:
        for frame in _progress(iter_frames(bag, cfg.image_topic, cfg.camera_info_topic, gt, cfg.max_frames),
                               n_frames, "replay (in-process)", cfg):
            t0 = time.perf_counter()
            depth = backend.infer(frame.rgb, out_size=(frame.height, frame.width))
            infer_s.append(time.perf_counter() - t0)
            outs = _serialize_outputs(frame, depth, colored_range)
            writer.write(cfg.image_topic, frame.stamp_ns, frame.image_raw)
            writer.write(cfg.camera_info_topic, frame.stamp_ns, frame.info_raw)
            for key in ("depth", "depth_info", "points", "colored"):
                writer.write(topics[key], frame.stamp_ns, outs[key])
            if frame.gt_raw is not None:
                writer.write(gt.topic, frame.stamp_ns, frame.gt_raw)
            scorer.score(frame, depth)
            per_frame.append({"index": frame.index, "stamp_ns": frame.stamp_ns, "latency_ms": infer_s[-1] * 1e3,
                              "dropped": False, "has_points": True, "gt": frame.gt_depth_m is not None})
    finally:
        backend.close()
    lat = percentiles_ms(infer_s)
    lat["what"] = "backend inference per frame (in-process)"
    stamps = [f["stamp_ns"] for f in per_frame]
    timing = {
        "latency": lat,
        "rate_hz": {"input": _rate(stamps), "achieved": len(infer_s) / sum(infer_s) if infer_s else None,
                    "what": "input = recorded image rate; achieved = 1 / mean inference time"},
        "backend": getattr(backend, "name", type(backend).__name__),
    }
    return per_frame, timing


_TYPESTORE = None


def _decode(raw: bytes, msgtype: str):
    """Decode CDR bytes received from the node (rosbags' Kilted typestore: NumPy arrays, no rclpy copies)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore

        _TYPESTORE = get_typestore(Stores.ROS2_KILTED)
    return _TYPESTORE.deserialize_cdr(raw, msgtype)


def _rate(times_ns: list[int]) -> float | None:
    if len(times_ns) < 2:
        return None
    span = (max(times_ns) - min(times_ns)) / 1e9
    return (len(times_ns) - 1) / span if span > 0 else None


# ---- through-node mode ---------------------------------------------------------------------------------------
class _Spool:
    """Received messages on disk (raw CDR) + an in-memory index, so a long replay does not hold every 2 MB cloud
    in RAM. Written from the executor thread, read after playback."""

    def __init__(self, directory: Path):
        fd, name = tempfile.mkstemp(prefix=".replay-spool-", dir=directory)
        self.path = Path(name)
        self._f = os.fdopen(fd, "w+b")
        self._lock = threading.Lock()
        self.index: dict[tuple[str, int], tuple[int, int, int]] = {}  # (key, stamp) -> (offset, size, receipt)
        self.counts: dict[str, int] = {}

    def add(self, key: str, raw: bytes, receipt_ns: int) -> None:
        try:
            stamp = cdr_header_stamp_ns(raw)
        except ValueError:  # never raise in a DDS callback: it would stop the executor and the recording
            with self._lock:
                self.counts["undecodable"] = self.counts.get("undecodable", 0) + 1
            return
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            if (key, stamp) in self.index:
                return  # a duplicate (should not happen); the first receipt counts
            off = self._f.seek(0, os.SEEK_END)
            self._f.write(raw)
            self.index[(key, stamp)] = (off, len(raw), receipt_ns)

    def get(self, key: str, stamp: int) -> tuple[bytes, int] | None:
        with self._lock:
            entry = self.index.get((key, stamp))
            if entry is None:
                return None
            off, size, receipt = entry
            self._f.seek(off)
            return self._f.read(size), receipt

    def close(self) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


def _patch_stamp(raw: bytes, stamp_ns: int) -> bytes:
    """Copy of a serialised stamped message with its header stamp replaced (CDR offset 4, see bag_io)."""
    buf = bytearray(raw)
    endian = "<" if buf[1] & 1 else ">"
    struct.pack_into(endian + "iI", buf, 4, stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000)
    return bytes(buf)


class _NodeProcess:
    """The depth node as a child process on its own DDS domain; its log goes to ``log_path``."""

    def __init__(self, cfg: ReplayConfig, model_path: Path, domain_id: int, info, log_path: Path,
                 compressed: bool = False):
        from monodepth_ros.ros_env import ros_env

        t = output_topics(cfg.image_topic)
        # The model's full range, so the node masks nothing a valid model output can produce (scoring needs a
        # number at every pixel); reliable QoS so drops are the node's, not DDS's.
        lo = max(0.0, float(info.min_depth * info.scale) * 0.999)
        hi = min(10000.0, float(info.max_depth * info.scale) * 1.001)
        # Fixed-point formatting: ROS parses "-p x:=1e-05" as a string, not a double.
        params = [f"model_path:={model_path}", f"backend:={cfg.backend}", "qos:=reliable",
                  "output_resolution:=input", f"min_depth:={lo:.6f}", f"max_depth:={hi:.6f}"]
        if compressed:  # the node then subscribes <image>/compressed
            params.append("use_compressed:=true")
        params += list(cfg.node_params)
        cmd = [sys.executable, "-m", "monodepth_ros.depth_node", "--ros-args", "-r", f"__ns:={t['ns']}",
               "-r", f"image:={_raw_image_topic(cfg.image_topic)}", "-r", f"camera_info:={cfg.camera_info_topic}"]
        for p in params:
            cmd += ["-p", p]
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, env=ros_env(domain_id), stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 6) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in lines[-n:])

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        self._log.close()
        return self.proc.returncode


def _pick_domain(cfg: ReplayConfig) -> int:
    # An own domain by default: replaying /camera/image_raw into a live robot on this machine would be bad.
    return cfg.domain_id if cfg.domain_id is not None else 1 + os.getpid() % 101


def _run_through_node(cfg, bag, gt, model_path, info, writer, scorer, n_frames, compressed=False):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

    from monodepth_ros.ros_env import cleanup_stale_shm, ros_env

    domain = _pick_domain(cfg)
    # Loopback discovery + the package's Fast DDS profile for this process (read when rclpy creates the DDS
    # participant); the domain goes to rclpy.init explicitly so that a caller's ROS_DOMAIN_ID stays untouched.
    env = ros_env(domain)
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION", "FASTDDS_DEFAULT_PROFILES_FILE"):
        os.environ[key] = env[key]
    cleanup_stale_shm()
    topics = output_topics(cfg.image_topic)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    node_log = cfg.out_dir / "node.log"
    node = _NodeProcess(cfg, model_path, domain, info, node_log, compressed)
    spool = _Spool(cfg.out_dir)
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=domain)
    executor = SingleThreadedExecutor(context=ctx)
    spin_thread = None
    published: dict[int, int] = {}  # stamp -> publish wall time (ns)
    diagnostics: dict[str, str] = {}
    try:
        rnode = rclpy.create_node("monodepth_replay", context=ctx)
        executor.add_node(rnode)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub_img = rnode.create_publisher(CompressedImage if compressed else Image, cfg.image_topic, reliable)
        pub_info = rnode.create_publisher(CameraInfo, cfg.camera_info_topic, reliable)
        record_qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        subs = {}
        for key, typ in (("depth", Image), ("depth_info", CameraInfo), ("points", PointCloud2), ("colored", Image)):
            def cb(raw, key=key):
                spool.add(key, raw, time.time_ns())
            subs[key] = rnode.create_subscription(typ, topics[key], cb, record_qos, raw=True)

        def on_diag(msg):
            for st in msg.status:
                if st.name.endswith(": depth"):
                    diagnostics.clear()
                    diagnostics.update({kv.key: kv.value for kv in st.values})
        rnode.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        spin_thread = threading.Thread(target=executor.spin, name="replay_executor", daemon=True)
        spin_thread.start()

        # Discovery: the node must subscribe to both inputs and have its outputs matched with our recorder.
        deadline = time.monotonic() + cfg.startup_timeout_s
        while not (pub_img.get_subscription_count() > 0 and pub_info.get_subscription_count() > 0
                   and subs["depth"].get_publisher_count() > 0 and subs["points"].get_publisher_count() > 0):
            if not node.alive():
                raise NodeFailure(f"the depth node exited with code {node.proc.returncode} during start-up: "
                                  f"{node.log_tail()} (full log: {node_log})")
            if time.monotonic() > deadline:
                raise NodeFailure(f"the depth node did not come up on DDS domain {domain} within "
                                  f"{cfg.startup_timeout_s:.0f} s: {node.log_tail()} (log: {node_log})")
            time.sleep(0.05)

        play_topics = [cfg.image_topic, cfg.camera_info_topic]
        msgs = bag.raw_messages(play_topics)
        first = _warm_up(cfg, bag, msgs, pub_img, pub_info, spool, node, node_log)

        # Playback at the recorded rate: message i goes out at t0 + (log_i - log_0) / rate.
        n_img = 0
        bar = _progress(None, n_frames, "replay (through node)", cfg)
        t0_wall, log0 = time.monotonic() + 0.05, first[0][1]  # a small lead so frame 0 is on time too

        def play(topic, log_ns, raw):
            nonlocal n_img
            delay = t0_wall + (log_ns - log0) / 1e9 / cfg.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if topic == cfg.image_topic:
                published.setdefault(cdr_header_stamp_ns(raw), time.time_ns())
                pub_img.publish(raw)
                n_img += 1
                bar.update(1)
            else:
                pub_info.publish(raw)

        for item in first:
            play(*item)
        for topic, log_ns, raw in msgs:
            if cfg.max_frames is not None and n_img >= cfg.max_frames and topic == cfg.image_topic:
                break
            play(topic, log_ns, raw)
            if not node.alive():
                raise NodeFailure(f"the depth node died during playback (exit {node.proc.returncode}): "
                                  f"{node.log_tail()} (log: {node_log})")
        bar.close()
        _drain(spool, published, node)
    finally:
        executor.shutdown(timeout_sec=2.0)
        if spin_thread is not None:
            spin_thread.join(timeout=5.0)
        rclpy.try_shutdown(context=ctx)
        node_rc = node.stop()
        cleanup_stale_shm()

    try:
        per_frame = _collect(cfg, bag, gt, writer, scorer, spool, published, topics, n_frames)
    finally:
        spool.close()
    receipts = sorted(v[2] for (k, s), v in spool.index.items() if k == "points" and s in published)
    lat_points = [f["latency_ms"] / 1e3 for f in per_frame if f["latency_ms"] is not None]
    lat_depth = [f["depth_latency_ms"] / 1e3 for f in per_frame if f["depth_latency_ms"] is not None]
    lat = percentiles_ms(lat_points)
    lat["what"] = "publication of the input frame -> receipt of the node's point cloud with its stamp"
    timing = {
        "latency": lat,
        "latency_depth": dict(percentiles_ms(lat_depth), what="publication -> receipt of the node's depth image"),
        "rate_hz": {"input": _rate(list(published.values())), "achieved": _rate(receipts),
                    "what": "input = publication rate into the node; achieved = rate of point clouds received"},
        "node": {"command": node.cmd, "exit_code": node_rc, "log": str(node_log), "domain_id": domain,
                 "env": {k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE")},
                 "diagnostics": dict(diagnostics)},
        "qos": "replay publishers RELIABLE depth 10 -> node subscriptions qos:=reliable; node publishers RELIABLE "
               "depth 2 -> recorder RELIABLE depth 200: drops are the node's latest-frame-only policy, not DDS loss",
        "backend": cfg.backend,
    }
    return per_frame, timing


def _warm_up(cfg, bag, msgs, pub_img, pub_info, spool, node, node_log) -> list:
    """Send the first frame once with a stamp 1 s before the bag's (its output is not counted) and wait for the
    node's answer, so that one-time start-up costs (first inference, allocations) do not count as a drop.

    Returns the messages consumed from ``msgs`` up to and including the first image (they are played again)."""
    first = []
    for item in msgs:
        first.append(item)
        if item[0] == cfg.image_topic:
            break
    img = next((x for x in first if x[0] == cfg.image_topic), None)
    if img is None:
        raise BagError(f"no image on {cfg.image_topic} could be read", bag.topic_list())
    stamp = cdr_header_stamp_ns(img[2])
    warm = stamp - 1_000_000_000
    infos = [x for x in first if x[0] == cfg.camera_info_topic]
    if not infos:  # camera_info came after the first image: borrow the next one
        for item in msgs:
            first.append(item)
            if item[0] == cfg.camera_info_topic:
                infos.append(item)
                break
    if not infos:
        raise BagError(f"no camera_info on {cfg.camera_info_topic} could be read", bag.topic_list())
    deadline = time.monotonic() + cfg.startup_timeout_s
    attempt = 0
    # Before playback only warm-up frames exist, so any cloud means the node answered. Each retry gets a newer
    # stamp (still before the bag's first), because the node ignores a stamp it has already seen.
    while spool.counts.get("points", 0) == 0:
        stamp_k = warm + attempt * 1_000_000
        attempt += 1
        pub_info.publish(_patch_stamp(infos[-1][2], stamp_k))
        pub_img.publish(_patch_stamp(img[2], stamp_k))
        t_end = time.monotonic() + 2.0
        while spool.counts.get("points", 0) == 0 and time.monotonic() < t_end:
            time.sleep(0.02)
        if not node.alive():
            raise NodeFailure(f"the depth node exited during warm-up (exit {node.proc.returncode}): "
                              f"{node.log_tail()} (log: {node_log})")
        if time.monotonic() > deadline:
            raise NodeFailure(f"the depth node produced no output for the warm-up frame within "
                              f"{cfg.startup_timeout_s:.0f} s: {node.log_tail()} (log: {node_log})")
    time.sleep(0.2)
    return first


def _drain(spool: _Spool, published: dict[int, int], node, quiet_s: float = 1.0, max_s: float = 15.0) -> None:
    """After the last frame: wait until outputs stop arriving (or every frame answered), at most ``max_s``."""
    t_end = time.monotonic() + max_s
    last_n, last_change = -1, time.monotonic()
    while time.monotonic() < t_end and node.alive():
        n = sum(spool.counts.values())
        if all(("points", s) in spool.index for s in published):
            break
        if n != last_n:
            last_n, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            break
        time.sleep(0.05)
    time.sleep(0.1)


def _collect(cfg, bag, gt, writer, scorer, spool, published, topics, n_frames) -> list[dict]:
    """Second pass over the bag: write input + received outputs per frame to the output bag, and score."""
    per_frame = []
    frames = iter_frames(bag, cfg.image_topic, cfg.camera_info_topic, gt, cfg.max_frames)
    for frame in _progress(frames, n_frames, "scoring + output bag", cfg):
        s = frame.stamp_ns
        writer.write(cfg.image_topic, s, frame.image_raw)
        writer.write(cfg.camera_info_topic, s, frame.info_raw)
        if frame.gt_raw is not None:
            writer.write(gt.topic, s, frame.gt_raw)
        got = {k: spool.get(k, s) for k in ("depth", "depth_info", "points", "colored")}
        for key, val in got.items():
            if val is not None:
                writer.write(topics[key], s, val[0])
        pub_ns = published.get(s)
        depth_m = None
        if got["depth"] is not None:
            depth_m = depth_msg_to_array(_decode(got["depth"][0], IMAGE_TYPE))
        scorer.score(frame, depth_m)

        def lat(key, got=got, pub_ns=pub_ns):
            return (got[key][1] - pub_ns) / 1e6 if (got[key] is not None and pub_ns is not None) else None

        per_frame.append({"index": frame.index, "stamp_ns": s, "latency_ms": lat("points"),
                          "depth_latency_ms": lat("depth"), "dropped": got["depth"] is None,
                          "has_points": got["points"] is not None, "gt": frame.gt_depth_m is not None,
                          "published": pub_ns is not None})
    return per_frame


# ---- the run ---------------------------------------------------------------------------------------------------
def run_replay(cfg: ReplayConfig) -> dict:
    """Run one replay; returns the report dict (also written to ``cfg.out_dir/report.json``).

    Raises BagError (unusable bag, missing topic), ReplayError (model, node) or ValueError (bad settings).
    """
    cfg.validate()
    cfg.out_dir = Path(cfg.out_dir)
    model_path = _resolve_model(cfg.model)
    try:
        info = _model_info(model_path)
    except ReplayError:
        raise
    except Exception as e:  # noqa: BLE001 - ModelLoadError and friends: one clear line
        raise ReplayError(f"cannot use model {model_path}: {e}") from None
    gt = _gt_source(cfg)
    median_scaling = cfg.median_scaling and info.scale_policy == "relative"
    colored_range = (1.0, 80.0)  # the node's default depth/colored range

    with BagReader(cfg.bag) as bag:
        img_t = bag.require_topic(cfg.image_topic, (IMAGE_TYPE, COMPRESSED_TYPE), "image")
        compressed = img_t.msgtype == COMPRESSED_TYPE
        bag.require_topic(cfg.camera_info_topic, (CAMERA_INFO_TYPE,), "camera_info")
        if gt is not None:
            bag.require_topic(gt.topic, (IMAGE_TYPE,) if gt.kind == "depth" else (POINTCLOUD2_TYPE,),
                              "depth GT" if gt.kind == "depth" else "lidar")
        if cfg.through_node and compressed and not cfg.image_topic.endswith("/compressed"):
            raise ReplayError(f"--through-node: the CompressedImage topic {cfg.image_topic} must be named "
                              "<image>/compressed (image_transport naming) for the node to subscribe to it")
        n_frames = min(img_t.count, cfg.max_frames or img_t.count)
        scorer = _Scorer(cfg, median_scaling, float(info.max_depth * info.scale), n_frames)
        bag_out = cfg.out_dir / "replay_bag"
        with OutputBagWriter(bag_out, _output_bag_topics(cfg, gt, img_t.msgtype)) as writer:
            if cfg.through_node:
                per_frame, timing = _run_through_node(cfg, bag, gt, model_path, info, writer, scorer, n_frames,
                                                      compressed)
            else:
                per_frame, timing = _run_in_process(cfg, bag, gt, model_path, writer, scorer, n_frames,
                                                    colored_range)
            bag_counts = dict(writer.counts)
        bag_summary = {"path": str(bag.path), "duration_s": bag.duration_s,
                       "topics": [asdict(t) for t in bag.topic_list()]}

    result = scorer.result()
    for f in per_frame:
        m = scorer.by_index.get(f["index"])
        f.update({k: (m[k] if m else None) for k in METRIC_NAMES + ["ratio"]})
    n_in = len(per_frame)
    n_depth = sum(not f["dropped"] for f in per_frame)
    report = {
        "tool": PROG,
        "version": __version__,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "mode": "through-node" if cfg.through_node else "in-process",
        "bag": bag_summary,
        "model": {"path": str(model_path), "name": info.name or model_path.name, "height": info.height,
                  "width": info.width, "min_depth": info.min_depth, "max_depth": info.max_depth,
                  "scale_policy": info.scale_policy, "scale": info.scale, "backend": timing.pop("backend")},
        "settings": {"image_topic": cfg.image_topic, "camera_info_topic": cfg.camera_info_topic,
                     "gt": None if gt is None else {"topic": gt.topic, "kind": gt.kind,
                                                     "tolerance_s": gt.tolerance_s,
                                                     "depth_convention": gt.depth_convention
                                                     if gt.kind == "lidar" else None},
                     "extrinsics": str(cfg.extrinsics) if cfg.extrinsics else None, "rate": cfg.rate,
                     "median_scaling": median_scaling, "crop": cfg.crop, "cap_m": cfg.cap_m,
                     "max_frames": cfg.max_frames},
        "metrics": None if result is None else result.metrics,
        "scale": {} if result is None else {"ratio_mean": result.ratio_mean, "ratio_std": result.ratio_std,
                                            "ratio_median": result.ratio_median,
                                            "ratio_std_rel": result.ratio_std_rel},
        "frames": {"input": n_in, "with_depth": n_depth,
                   "with_points": sum(f["has_points"] for f in per_frame),
                   "with_gt": sum(f["gt"] for f in per_frame), "scored": len(scorer.per_image),
                   "dropped": n_in - n_depth, "drop_rate": (n_in - n_depth) / n_in if n_in else None,
                   "pred_pixels_filled": scorer.filled_px, "not_scored": scorer.skipped[:20]},
        **timing,
        "output_bag_topics": bag_counts,
        "per_frame": per_frame,
    }
    outs = {"bag": str(bag_out), "report_json": str(cfg.out_dir / "report.json"),
            "report_png": str(cfg.out_dir / "report.png"), "report_html": str(cfg.out_dir / "report.html")}
    if scorer.samples:
        from monodepth_ros.visualize import panel_grid

        panel_grid(scorer.samples, cfg.out_dir / "panels.png", min_m=1.0, max_m=cfg.cap_m)
        outs["panels_png"] = str(cfg.out_dir / "panels.png")
    if cfg.through_node:
        outs["node_log"] = report["node"]["log"]
    report["outputs"] = outs
    plot_per_frame(report, outs["report_png"])
    write_html(report, outs["report_html"])
    write_json(report, outs["report_json"])
    return report


# ---- CLI -------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Replay a rosbag2 (MCAP or sqlite3) through a depth model -- in-process, or through the real "
                    "depth node over DDS -- score it against GT and write an output bag plus a report.",
    )
    p.add_argument("--bag", required=True, type=Path, help="rosbag2 directory (mcap or sqlite3), or a lone .mcap")
    p.add_argument("--out", required=True, type=Path, help="output directory (report, output bag)")
    p.add_argument("--model", type=Path, default=None,
                   help=f"exported model (.onnx); default: the embedded monodepth_ros/{DEFAULT_MODEL_REL}")
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--camera-info-topic", default="/camera/camera_info")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gt-topic", default=None, help="depth GT image topic (32FC1 metres or 16UC1 mm)")
    g.add_argument("--lidar-topic", default=None, help="lidar PointCloud2 topic projected as sparse GT")
    p.add_argument("--extrinsics", type=Path, default=None, help="YAML with the 4x4 T_cam_from_lidar")
    p.add_argument("--lidar-depth", choices=DEPTH_CONVENTIONS, default="camera_z",
                   help="what a lidar GT pixel holds: camera z, the optical-axis depth the node publishes (REP 118; "
                   "default), or lidar_forward, the lidar's x distance that KITTI's reference evaluation and "
                   "monodepth-eval use (pick it to compare with papers' numbers)")
    p.add_argument("--gt-tolerance", type=float, default=None,
                   help="largest GT/image stamp difference, s (default: exact for --gt-topic, 0.05 for lidar)")
    p.add_argument("--through-node", action="store_true", help="play the bag into the real node over DDS")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (--through-node)")
    p.add_argument("--no-median-scaling", action="store_true",
                   help="score depth as is (automatic for models whose scale policy is metric or fixed)")
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt", "torch"))
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--crop", default=None, choices=("garg", "eigen"), help="KITTI evaluation crop (default none)")
    p.add_argument("--cap-m", type=float, default=MAX_DEPTH_M, help="GT beyond this is not scored (m)")
    p.add_argument("--domain-id", type=int, default=None, help="DDS domain for --through-node (default: own)")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra depth node parameter (repeatable), e.g. scale_policy:=ground_plane")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    return ReplayConfig(
        bag=args.bag, out_dir=args.out, model=args.model, image_topic=args.image_topic,
        camera_info_topic=args.camera_info_topic, gt_topic=args.gt_topic, lidar_topic=args.lidar_topic,
        extrinsics=args.extrinsics, lidar_depth=args.lidar_depth, gt_tolerance_s=args.gt_tolerance,
        through_node=args.through_node,
        rate=args.rate, median_scaling=not args.no_median_scaling, backend=args.backend,
        max_frames=args.max_frames, crop=args.crop, cap_m=args.cap_m, domain_id=args.domain_id,
        node_params=list(args.node_param), quiet=args.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``monodepth-replay``. Exit 0 on success; 2 with a one-line message on bad input (bag,
    topics, model, options); 1 with a one-line message when the depth node fails."""
    args = build_parser().parse_args(argv)
    try:
        report = run_replay(config_from_args(args))
    except NodeFailure as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except (BagError, ReplayError, ValueError, FileNotFoundError) as e:
        msg = " ".join(str(e).split())
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(summary_text(report))
    for key, path in report["outputs"].items():
        print(f"{key:>12}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
