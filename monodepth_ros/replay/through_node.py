"""``--through-node`` replay: the real depth node (``python -m monodepth_ros.depth_node``) runs as its own process
on its own DDS domain (loopback only, :func:`monodepth_ros.ros_env.ros_env`), with the run's node parameters
(:func:`monodepth_ros.replay.config.node_parameters`). The bag's image + camera_info bytes are published into it
at the recorded rate (x ``--rate``), everything it publishes is recorded with its receipt time (:class:`Spool`),
and a second pass over the bag writes the output bag and scores the depth it received."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from monodepth_ros.bag.frames import iter_frames
from monodepth_ros.bag.msgtypes import IMAGE_TYPE
from monodepth_ros.bag.reader import BagError
from monodepth_ros.msgs.image import depth_msg_to_array
from monodepth_ros.msgs.stamps import cdr_header_stamp_ns, patch_stamp
from monodepth_ros.node_params import defaults as node_defaults
from monodepth_ros.replay.config import (
    NodeFailure,
    ReplayConfig,
    ReplayRun,
    output_topics,
    raw_image_topic,
)
from monodepth_ros.replay.report import percentiles_ms, progress, rate_hz

__all__ = ["run_through_node", "NodeProcess", "Spool", "pick_domain"]


_TYPESTORE = None


def decode_cdr(raw: bytes, msgtype: str):
    """Decode CDR bytes received from the node (rosbags' Kilted typestore: NumPy arrays, no rclpy copies)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore

        _TYPESTORE = get_typestore(Stores.ROS2_KILTED)
    return _TYPESTORE.deserialize_cdr(raw, msgtype)


class Spool:
    """Received messages on disk (raw CDR) + an in-memory index, so a long replay does not hold every 2 MB cloud
    in RAM. Only the bytes of ``keep`` are stored; for the other keys, just the receipt time (latency of an
    output that is not recorded). Written from the executor thread, read after playback."""

    def __init__(self, directory: Path, keep: Collection[str]):
        fd, name = tempfile.mkstemp(prefix=".replay-spool-", dir=directory)
        self.path = Path(name)
        self._f = os.fdopen(fd, "w+b")
        self._lock = threading.Lock()
        self.keep = frozenset(keep)
        # (key, stamp) -> (offset, size, receipt); offset -1 when the bytes were not kept
        self.index: dict[tuple[str, int], tuple[int, int, int]] = {}
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
            if key not in self.keep:
                self.index[(key, stamp)] = (-1, 0, receipt_ns)
                return
            off = self._f.seek(0, os.SEEK_END)
            self._f.write(raw)
            self.index[(key, stamp)] = (off, len(raw), receipt_ns)

    def get(self, key: str, stamp: int) -> tuple[bytes | None, int] | None:
        """``(bytes, receipt_ns)`` of the ``key`` output with ``stamp`` (bytes None if not kept), None if none came."""
        with self._lock:
            entry = self.index.get((key, stamp))
            if entry is None:
                return None
            off, size, receipt = entry
            if off < 0:
                return None, receipt
            self._f.seek(off)
            return self._f.read(size), receipt

    def close(self) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


def _ros_arg(value) -> str:
    """A parameter value as ``--ros-args -p`` reads it (YAML): fixed-point floats, since ROS parses ``1e-05`` as
    a string, not a double; lower-case booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return f"{value:.9f}" if ("e" in text or "inf" in text or "nan" in text) else text
    return str(value)


class NodeProcess:
    """The depth node as a child process on its own DDS domain; its log goes to ``log_path``."""

    def __init__(self, run: ReplayRun, domain_id: int, log_path: Path):
        from monodepth_ros.ros_env import ros_env

        cfg = run.cfg
        t = output_topics(cfg.image_topic)
        cmd = [sys.executable, "-m", "monodepth_ros.depth_node", "--ros-args", "-r", f"__ns:={t['ns']}",
               "-r", f"image:={raw_image_topic(cfg.image_topic)}", "-r", f"camera_info:={cfg.camera_info_topic}"]
        defaults = node_defaults()
        for name, value in run.params.items():
            if value != defaults[name] or name == "model_path":
                cmd += ["-p", f"{name}:={_ros_arg(value)}"]
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, env=ros_env(domain_id), stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self, phase: str) -> None:
        """Raise NodeFailure, with the tail of the node's log, when the process has exited during ``phase``."""
        if not self.alive():
            raise NodeFailure(f"the depth node exited with code {self.proc.returncode} during {phase}: "
                              f"{self.log_tail()} (log: {self.log_path})")

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


def pick_domain(cfg: ReplayConfig) -> int:
    # An own domain by default: replaying /camera/image_raw into a live robot on this machine would be bad.
    return cfg.domain_id if cfg.domain_id is not None else 1 + os.getpid() % 101


def run_through_node(run: ReplayRun) -> tuple[list[dict], dict]:
    """Play the bag into the depth node process and record its outputs. Returns (per-frame records, timing)."""
    cfg = run.cfg
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

    from monodepth_ros.ros_env import apply_ros_env, cleanup_stale_shm

    domain = pick_domain(cfg)
    # Loopback discovery + the package's Fast DDS profile for this process (read when rclpy creates the DDS
    # participant); the domain goes to rclpy.init explicitly so that a caller's ROS_DOMAIN_ID stays untouched.
    env = apply_ros_env(domain, skip=("ROS_DOMAIN_ID",))  # what it set, for the report
    cleanup_stale_shm()
    topics = output_topics(cfg.image_topic)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    node_log = cfg.out_dir / "node.log"
    node = NodeProcess(run, domain, node_log)
    # Depth is always needed (scoring, drops) and points are the latency reference (only their receipt time is kept
    # unless recorded); depth_info and depth/colored only if recorded (the node builds colored only for a subscriber).
    listen = {"depth", "points", *cfg.record}
    spool = Spool(cfg.out_dir, keep={"depth", *cfg.record})
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
        pub_img = rnode.create_publisher(CompressedImage if run.compressed else Image, cfg.image_topic, reliable)
        pub_info = rnode.create_publisher(CameraInfo, cfg.camera_info_topic, reliable)
        record_qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        subs = {}
        for key, typ in (("depth", Image), ("depth_info", CameraInfo), ("points", PointCloud2), ("colored", Image)):
            if key not in listen:
                continue

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
            node.check_alive("start-up")
            if time.monotonic() > deadline:
                raise NodeFailure(f"the depth node did not come up on DDS domain {domain} within "
                                  f"{cfg.startup_timeout_s:.0f} s: {node.log_tail()} (log: {node_log})")
            time.sleep(0.05)

        play_topics = [cfg.image_topic, cfg.camera_info_topic]
        msgs = run.bag.raw_messages(play_topics)
        first = warm_up(_Link(cfg, run.bag, pub_img, pub_info, spool, node), msgs)

        # Playback at the recorded rate: message i goes out at t0 + (log_i - log_0) / rate.
        n_img = 0
        bar = progress(None, run.n_frames, "replay (through node)", cfg.quiet)
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
            node.check_alive("playback")
        bar.close()
        drain(spool, published, node)
    finally:
        executor.shutdown(timeout_sec=2.0)
        if spin_thread is not None:
            spin_thread.join(timeout=5.0)
        rclpy.try_shutdown(context=ctx)
        node_rc = node.stop()
        cleanup_stale_shm()

    try:
        per_frame = collect(run, spool, published, listen)
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
        "rate_hz": {"input": rate_hz(list(published.values())), "achieved": rate_hz(receipts),
                    "what": "input = publication rate into the node; achieved = rate of point clouds received"},
        "node": {"command": node.cmd, "exit_code": node_rc, "log": str(node_log), "domain_id": domain,
                 "env": {k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE")},
                 "diagnostics": dict(diagnostics)},
        "qos": "replay publishers RELIABLE depth 10 -> node subscriptions qos:=reliable; node publishers RELIABLE "
               "depth 2 -> recorder RELIABLE depth 200: drops are the node's latest-frame-only policy, not DDS loss",
        "backend": cfg.backend,
    }
    return per_frame, timing


@dataclass(frozen=True)
class _Link:
    """The live connection to the node process during playback."""

    cfg: ReplayConfig
    bag: object  # BagReader
    pub_img: object
    pub_info: object
    spool: Spool
    node: NodeProcess


def warm_up(link: _Link, msgs) -> list:
    """Send the first frame once with a stamp 1 s before the bag's (its output is not counted) and wait for the
    node's answer, so that one-time start-up costs (first inference, allocations) do not count as a drop.

    Returns the messages consumed from ``msgs`` up to and including the first image (they are played again)."""
    cfg, spool, node = link.cfg, link.spool, link.node
    first = []
    for item in msgs:
        first.append(item)
        if item[0] == cfg.image_topic:
            break
    img = next((x for x in first if x[0] == cfg.image_topic), None)
    if img is None:
        raise BagError(f"no image on {cfg.image_topic} could be read", link.bag.topic_list())
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
        raise BagError(f"no camera_info on {cfg.camera_info_topic} could be read", link.bag.topic_list())
    deadline = time.monotonic() + cfg.startup_timeout_s
    attempt = 0
    # Before playback only warm-up frames exist, so any cloud means the node answered. Each retry gets a newer
    # stamp (still before the bag's first), because the node ignores a stamp it has already seen.
    while spool.counts.get("points", 0) == 0:
        stamp_k = warm + attempt * 1_000_000
        attempt += 1
        link.pub_info.publish(patch_stamp(infos[-1][2], stamp_k))
        link.pub_img.publish(patch_stamp(img[2], stamp_k))
        t_end = time.monotonic() + 2.0
        while spool.counts.get("points", 0) == 0 and time.monotonic() < t_end:
            time.sleep(0.02)
        node.check_alive("warm-up")
        if time.monotonic() > deadline:
            raise NodeFailure(f"the depth node produced no output for the warm-up frame within "
                              f"{cfg.startup_timeout_s:.0f} s: {node.log_tail()} (log: {node.log_path})")
    time.sleep(0.2)
    return first


def drain(spool: Spool, published: dict[int, int], node, quiet_s: float = 1.0, max_s: float = 15.0) -> None:
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


def collect(run: ReplayRun, spool: Spool, published: dict[int, int], listen: Collection[str]) -> list[dict]:
    """Second pass over the bag: write input + the received outputs in ``cfg.record`` per frame to the output bag,
    and score."""
    cfg, writer, topics = run.cfg, run.writer, output_topics(run.cfg.image_topic)
    per_frame = []
    frames = iter_frames(run.bag, cfg.image_topic, cfg.camera_info_topic, run.gt, cfg.max_frames)
    for frame in progress(frames, run.n_frames, "scoring + output bag", cfg.quiet):
        s = frame.stamp_ns
        writer.write(cfg.image_topic, s, frame.image_raw)
        writer.write(cfg.camera_info_topic, s, frame.info_raw)
        if frame.gt_raw is not None:
            writer.write(run.gt.topic, s, frame.gt_raw)
        got = {k: spool.get(k, s) for k in listen}
        for key in cfg.record:
            if got[key] is not None:
                writer.write(topics[key], s, got[key][0])
        pub_ns = published.get(s)
        depth_m = None
        if got["depth"] is not None:
            depth_m = depth_msg_to_array(decode_cdr(got["depth"][0], IMAGE_TYPE))
        run.scorer.score(frame, depth_m)

        def lat(key, got=got, pub_ns=pub_ns):
            return (got[key][1] - pub_ns) / 1e6 if (got[key] is not None and pub_ns is not None) else None

        per_frame.append({"index": frame.index, "stamp_ns": s, "latency_ms": lat("points"),
                          "depth_latency_ms": lat("depth"), "dropped": got["depth"] is None,
                          "has_points": got["points"] is not None, "gt": frame.gt_depth_m is not None,
                          "published": pub_ns is not None})
    return per_frame


