"""The ROS 2 depth node: camera image + camera_info in, metric/relative depth and an organised point cloud out.

A thin shell: it declares parameters, pairs messages by stamp (:mod:`monodepth_ros.sync`), hands the newest
pair to one inference worker thread, and publishes what the pure functions compute
(:mod:`monodepth_ros.image_conversion`, :mod:`monodepth_ros.scale_policy`, :mod:`monodepth_ros.pointcloud`).

Topics (relative, so ``__ns`` and remaps work): subscribes ``image`` (or ``image/compressed`` with
``use_compressed``) and ``camera_info``; publishes ``depth`` (32FC1 metres, REP 118), ``depth/camera_info``,
``points`` (PointCloud2), ``depth/colored`` (rgb8, when ``publish_colored``) and ``/diagnostics``.

Run: ``python -m monodepth_ros.depth_node --ros-args --params-file config/depth_node.yaml -p model_path:=m.onnx``
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from monodepth_ros.diagnostics import LatencyWindow, RateMeter, Throttle
from monodepth_ros.geometry import scale_intrinsics, validate_intrinsics
from monodepth_ros.image_conversion import compressed_to_rgb, depth_to_image_msg, image_msg_to_rgb, rgb_to_image_msg
from monodepth_ros.pointcloud import depth_to_cloud_buffer, make_pointcloud2
from monodepth_ros.scale_policy import GROUND_METHODS, POLICIES, GroundPlaneScale, disp_to_scaled_depth
from monodepth_ros.sync import LatestSlot, StampSynchronizer, stamp_to_ns

__all__ = ["PARAMETERS", "TOPICS", "ParamSpec", "DepthNode", "ModelStartupError", "main"]


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. ``lo``/``hi`` give a validated range (numbers), ``choices`` an allowed set."""

    name: str
    default: object
    description: str
    read_only: bool = False
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None


# The single source of truth for the node's parameters (the launch-file test checks against it too).
PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("model_path", "", "Exported depth model (.onnx, or .engine with its sidecar). Restart to change.",
              read_only=True),
    ParamSpec("backend", "auto", "Inference backend; auto = TensorRT > ORT CUDA > ORT CPU. Restart to change.",
              read_only=True, choices=("auto", "onnxruntime", "tensorrt", "torch")),
    ParamSpec("threads", 0, "Intra-op inference threads, 0 = library default. Restart to change.",
              read_only=True, lo=0, hi=64),
    ParamSpec("use_compressed", False, "Subscribe to image/compressed (CompressedImage) instead of image.",
              read_only=True),
    ParamSpec("qos", "sensor_data", "Subscription QoS: sensor_data (best effort, depth 5) or reliable.",
              read_only=True, choices=("sensor_data", "reliable")),
    ParamSpec("output_resolution", "input", "Depth/cloud size: input (camera) or model resolution.",
              choices=("input", "model")),
    ParamSpec("scale_policy", "fixed", "median_free (relative, model units), fixed, or ground_plane.",
              choices=POLICIES),
    ParamSpec("fixed_scale", 0.0, "Scale for the fixed policy; 0 = use the scale stored in the model.",
              lo=0.0, hi=10000.0),
    ParamSpec("camera_height_m", 1.65, "Camera height above the road (ground_plane policy), metres.",
              lo=0.05, hi=10.0),
    ParamSpec("ground_region_top", 0.6, "Top of the road region (ground_plane), fraction of image height.",
              lo=0.3, hi=0.95),
    ParamSpec("ground_smoothing", 0.2, "EMA weight of each new ground-plane scale estimate.", lo=0.01, hi=1.0),
    ParamSpec("ground_method", "mount", "ground_plane: road normal from the mount (camera_pitch_deg/roll) "
              "or fitted to the depth.", choices=GROUND_METHODS),
    ParamSpec("camera_pitch_deg", 0.0, "ground_plane mount: camera pitch, degrees, positive = looking down.",
              lo=-45.0, hi=45.0),
    ParamSpec("camera_roll_deg", 0.0, "ground_plane mount: camera roll about the optical axis, degrees.",
              lo=-45.0, hi=45.0),
    ParamSpec("ground_max_tilt_deg", 15.0, "ground_plane fit: largest road-normal tilt from the camera's up axis.",
              lo=1.0, hi=45.0),
    ParamSpec("min_depth", 0.1, "Depth below this becomes NaN, metres (model units for median_free).",
              lo=0.0, hi=1000.0),
    ParamSpec("max_depth", 80.0, "Depth above this (and sky) becomes NaN, metres (model units for median_free).",
              lo=0.01, hi=10000.0),
    ParamSpec("decimation", 1, "Point cloud keeps every n-th row and column.", lo=1, hi=16),
    ParamSpec("cloud_rgb", True, "Add packed rgb to the point cloud."),
    ParamSpec("publish_colored", True, "Publish depth/colored (rgb8 visualisation)."),
    ParamSpec("colored_min_m", 1.0, "Nearest depth of the depth/colored colour range, metres.", lo=0.01, hi=1000.0),
    ParamSpec("colored_max_m", 80.0, "Farthest depth of the depth/colored colour range, metres.",
              lo=0.1, hi=10000.0),
    ParamSpec("sync_tolerance_s", 0.0, "Largest image/camera_info stamp difference paired; 0 = exact.",
              lo=0.0, hi=1.0),
    ParamSpec("sync_queue_size", 10, "Unmatched messages kept per stream by the synchroniser.",
              read_only=True, lo=1, hi=100),
    ParamSpec("camera_info_timeout_s", 2.0, "Warn when no camera_info arrived for this long, seconds.",
              lo=0.1, hi=60.0),
    ParamSpec("diagnostics_period_s", 1.0, "Period of /diagnostics messages, seconds.", read_only=True,
              lo=0.1, hi=10.0),
    ParamSpec("log_throttle_s", 5.0, "At most one log line per problem kind per this many seconds.",
              lo=0.0, hi=600.0),
)
PARAM_BY_NAME = {p.name: p for p in PARAMETERS}
# Relative topic names (remap targets); image/compressed follows the resolved `image`.
TOPICS = ("image", "camera_info", "depth", "depth/camera_info", "points", "depth/colored")


class ModelStartupError(RuntimeError):
    """The model named by ``model_path`` cannot be used; the node cannot start."""


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.lo is not None:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            d.integer_range = [IntegerRange(from_value=int(spec.lo), to_value=int(spec.hi), step=1)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(spec.lo), to_value=float(spec.hi))]
    return d


def validate_parameter(name: str, value, current: dict) -> str | None:
    """Reason why ``name = value`` is invalid given the other ``current`` values, or None if it is fine."""
    spec = PARAM_BY_NAME.get(name)
    if spec is None:
        return None  # not ours (e.g. use_sim_time)
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {list(spec.choices)}, got {value!r}"
    if spec.lo is not None and not (spec.lo <= value <= spec.hi):
        return f"{name} must be in [{spec.lo}, {spec.hi}], got {value!r}"
    merged = dict(current, **{name: value})
    if merged["min_depth"] >= merged["max_depth"]:
        return f"min_depth ({merged['min_depth']}) must be below max_depth ({merged['max_depth']})"
    if merged["colored_min_m"] >= merged["colored_max_m"]:
        return f"colored_min_m ({merged['colored_min_m']}) must be below colored_max_m ({merged['colored_max_m']})"
    return None


class DepthNode(Node):
    """See the module docstring. Raises :class:`ModelStartupError` if the model cannot be loaded."""

    def __init__(self, node_name: str = "depth_node", **kwargs):
        super().__init__(node_name, **kwargs)
        # Set first: destroy_node() runs even when construction fails half way (rclpy context clean-up).
        self._slot = LatestSlot()  # newest (image_msg, info_msg, t_received) not yet processed
        self._worker: threading.Thread | None = None
        self.backend = None
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self.p = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        bad = [r for n, v in self.p.items() if (r := validate_parameter(n, v, self.p))]
        if bad:
            raise ModelStartupError("invalid parameters: " + "; ".join(bad))
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.backend = self._load_backend()
        self.info = self.backend.info
        self.ground = GroundPlaneScale()
        self._configure_ground()

        self.sync = StampSynchronizer(self.p["sync_tolerance_s"], self.p["sync_queue_size"])
        self.in_rate, self.out_rate = RateMeter(), RateMeter()
        self.latency = LatencyWindow()  # header stamp -> cloud published
        self.proc_time = LatencyWindow()  # pair handed to the worker -> cloud published
        self.throttle = Throttle(self.p["log_throttle_s"])
        self.problems: dict[str, int] = {}
        self.last_problem = ""
        self.last_problem_time = -1e9
        self.last_info_time = time.monotonic()
        self.got_info = False
        self.last_scale: float | None = None  # depth = last_scale / disp, for /diagnostics

        sub_qos = qos_profile_sensor_data if self.p["qos"] == "sensor_data" else QoSProfile(
            depth=5, reliability=ReliabilityPolicy.RELIABLE
        )
        # Reliable publishers serve both reliable (RViz default) and best-effort subscribers; keep-last 2 never blocks.
        pub_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_depth = self.create_publisher(Image, "depth", pub_qos)
        self.pub_info = self.create_publisher(CameraInfo, "depth/camera_info", pub_qos)
        self.pub_points = self.create_publisher(self._pc2_type(), "points", pub_qos)
        self.pub_colored = self.create_publisher(Image, "depth/colored", pub_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if self.p["use_compressed"]:
            # image_transport naming: the compressed stream of (possibly remapped) `image` is `<image>/compressed`.
            topic = self.resolve_topic_name("image") + "/compressed"
            self.create_subscription(CompressedImage, topic, self._on_image, sub_qos)
        else:
            self.create_subscription(Image, "image", self._on_image, sub_qos)
        self.create_subscription(CameraInfo, "camera_info", self._on_info, sub_qos)
        self.create_timer(self.p["diagnostics_period_s"], self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work, name="depth_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"depth node ready: backend {self.backend_name}, model {self.info.width}x{self.info.height}, "
            f"scale_policy {self.p['scale_policy']}, subscribing {self.resolve_topic_name('image')}"
            f"{'/compressed' if self.p['use_compressed'] else ''} + {self.resolve_topic_name('camera_info')}"
        )

    @staticmethod
    def _pc2_type():
        from sensor_msgs.msg import PointCloud2

        return PointCloud2

    # ---- start-up -------------------------------------------------------------------------------------------
    def _load_backend(self):
        path = self.p["model_path"]
        if not path:
            raise ModelStartupError("parameter model_path is empty: pass -p model_path:=/path/to/model.onnx")
        try:
            from monodepth_ros.backends import create_backend

            backend = create_backend(path, kind=self.p["backend"], threads=self.p["threads"] or None,
                                     logger=self.get_logger())
        except Exception as e:  # noqa: BLE001 - any load failure is fatal, reported with its reason
            raise ModelStartupError(f"cannot load model '{path}': {e}") from e
        self.backend_name = f"{getattr(backend, 'name', type(backend).__name__)}:{backend.info.name or path}"
        return backend

    def _configure_ground(self) -> None:
        g = self.ground
        g.camera_height_m = self.p["camera_height_m"]
        g.region_top = self.p["ground_region_top"]
        g.alpha = self.p["ground_smoothing"]
        g.max_tilt_deg = self.p["ground_max_tilt_deg"]
        g.method = self.p["ground_method"]
        g.pitch_deg = self.p["camera_pitch_deg"]
        g.roll_deg = self.p["camera_roll_deg"]

    def _on_set_parameters(self, params) -> SetParametersResult:
        new: dict = {}
        for prm in params:
            spec = PARAM_BY_NAME.get(prm.name)
            if spec is None:
                continue
            if spec.read_only:  # rclpy enforces read_only too; say why in our words
                return SetParametersResult(successful=False, reason=f"{prm.name} is read-only: restart to change")
            value = prm.value
            if isinstance(spec.default, float) and prm.type_ == ParameterType.PARAMETER_INTEGER:
                value = float(value)
            if type(value) is not type(spec.default):
                return SetParametersResult(
                    successful=False, reason=f"{prm.name} must be {type(spec.default).__name__}, got {value!r}"
                )
            reason = validate_parameter(prm.name, value, dict(self.p, **new))
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            new[prm.name] = value
        for name, value in new.items():
            old = self.p[name]
            self.p[name] = value
            if name == "sync_tolerance_s":
                self.sync.tolerance_s = value
            elif name == "log_throttle_s":
                self.throttle.period_s = value
            elif name.startswith(("ground_", "camera_height", "camera_pitch", "camera_roll")):
                self._configure_ground()
            elif name == "scale_policy" and old != value:
                self.ground.reset()
        return SetParametersResult(successful=True)

    # ---- problems -------------------------------------------------------------------------------------------
    def report_problem(self, kind: str, message: str) -> None:
        """Count a bad-input/runtime problem, keep it for /diagnostics, and log it (throttled per kind)."""
        now = time.monotonic()
        self.problems[kind] = self.problems.get(kind, 0) + 1
        self.last_problem = f"{kind}: {message}"
        self.last_problem_time = now
        ok, suppressed = self.throttle.allow(kind, now)
        if ok:
            extra = f" ({suppressed} similar suppressed)" if suppressed else ""
            self.get_logger().warning(f"[{kind}] {message}{extra}")

    # ---- executor-thread callbacks: cheap, never block ------------------------------------------------------
    def _on_image(self, msg) -> None:
        self.in_rate.tick(time.monotonic())
        self._offer(self.sync.push_image(stamp_to_ns(msg.header.stamp), msg))

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            validate_intrinsics(np.asarray(msg.k, dtype=np.float64))
        except ValueError as e:
            self.report_problem("camera_info", f"camera_info rejected ({e}); K = {list(msg.k)}")
            return
        self.last_info_time = time.monotonic()
        self.got_info = True
        self._offer(self.sync.push_info(stamp_to_ns(msg.header.stamp), msg))

    def _offer(self, pair) -> None:
        if pair is not None:  # latest frame only: an older pair still waiting is dropped, a late one refused
            self._slot.put(stamp_to_ns(pair[0].header.stamp), (pair[0], pair[1], time.monotonic()))

    # ---- inference worker -----------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._slot.take()
            if item is None:  # closed
                return
            img_msg, info_msg, t_recv = item
            try:
                self._process(img_msg, info_msg, t_recv)
            except Exception as e:  # noqa: BLE001 - one bad frame must never stop the node
                self.report_problem("processing", f"frame skipped: {type(e).__name__}: {e}")

    def _process(self, img_msg, info_msg: CameraInfo, t_recv: float) -> None:
        p = dict(self.p)  # one consistent parameter snapshot per frame
        try:
            rgb = compressed_to_rgb(img_msg) if isinstance(img_msg, CompressedImage) else image_msg_to_rgb(img_msg)
        except ValueError as e:
            topic = self.resolve_topic_name("image") + ("/compressed" if self.p["use_compressed"] else "")
            self.report_problem("image", f"image on {topic} skipped: {e}")
            return
        H, W = rgb.shape[:2]
        if info_msg.width and info_msg.height and (info_msg.width, info_msg.height) != (W, H):
            self.report_problem(
                "camera_info", f"camera_info is {info_msg.width}x{info_msg.height} but the image is {W}x{H}"
            )
            return
        K = validate_intrinsics(np.asarray(info_msg.k, dtype=np.float64))

        try:
            disp = self.backend.infer_disp(rgb)  # (h, w) scaled disparity at model resolution
        except Exception as e:  # noqa: BLE001 - a runtime failure inside the backend
            self.report_problem("inference", f"backend {self.backend_name} failed: {e}")
            return
        bad = ~np.isfinite(disp)
        if bad.all():
            self.report_problem("model_output", "model output is all NaN/inf; frame skipped")
            return
        if bad.any():
            self.report_problem("model_output", f"model output has {int(bad.sum())} NaN/inf pixels (set to NaN)")

        h, w = disp.shape
        K_model = scale_intrinsics(K, w / W, h / H)
        scale = self._scale(p, disp, K_model)
        self.last_scale = scale
        if p["output_resolution"] == "input":
            out_disp = cv2.resize(disp, (W, H), interpolation=cv2.INTER_LINEAR) if (h, w) != (H, W) else disp
            K_out, rgb_out = K, rgb
        else:
            out_disp, K_out = disp, K_model
            rgb_out = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != (H, W) else rgb
        depth = disp_to_scaled_depth(out_disp, scale, p["min_depth"], p["max_depth"])

        header = img_msg.header
        self.pub_depth.publish(depth_to_image_msg(depth, header))
        self.pub_info.publish(self._rescaled_info(info_msg, K_out, depth.shape))
        # Lazy like depth_image_proc: the cloud and the colour picture cost milliseconds, build them for listeners.
        if self.pub_points.get_subscription_count() > 0:
            points, fields = depth_to_cloud_buffer(
                depth, K_out, rgb=rgb_out if p["cloud_rgb"] else None, decimation=p["decimation"]
            )
            self.pub_points.publish(make_pointcloud2(header, points, fields))
        now = time.monotonic()
        if p["publish_colored"] and self.pub_colored.get_subscription_count() > 0:
            from monodepth_ros.visualize import colorize_depth

            self.pub_colored.publish(
                rgb_to_image_msg(colorize_depth(depth, p["colored_min_m"], p["colored_max_m"]), header)
            )
        self.out_rate.tick(now)
        self.proc_time.add(now - t_recv)
        self.latency.add(time.time() - stamp_to_ns(header.stamp) * 1e-9)

    def _scale(self, p: dict, disp: np.ndarray, K_model: np.ndarray) -> float:
        policy = p["scale_policy"]
        if policy == "median_free":
            return 1.0
        fixed = p["fixed_scale"] if p["fixed_scale"] > 0 else float(self.info.scale)
        if policy == "fixed":
            return fixed
        s = self.ground.update(disp_to_scaled_depth(disp, 1.0), K_model)
        if not self.ground.fresh:
            kept = (f"keeping the previous scale {s:.3f}" if s is not None else
                    f"no road found yet, using the fixed scale {fixed:g} (scale_policy "
                    f"'{self.info.scale_policy}' of the model)")
            self.report_problem("ground_plane", f"no road found in the lower image region ({p['ground_method']} "
                                f"method); {kept}")
        return fixed if s is None else s

    @staticmethod
    def _rescaled_info(info: CameraInfo, K_out: np.ndarray, shape: tuple[int, int]) -> CameraInfo:
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

    # ---- diagnostics ----------------------------------------------------------------------------------------
    def _check_info_timeout(self, now: float) -> bool:
        silent_s = now - self.last_info_time
        if silent_s > self.p["camera_info_timeout_s"]:
            self.report_problem(
                "camera_info_timeout",
                f"no valid camera_info on {self.resolve_topic_name('camera_info')} for {silent_s:.1f} s; "
                "images cannot be paired",
            )
            return True
        return False

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        info_timeout = self._check_info_timeout(now)
        recent = now - self.last_problem_time < max(5.0, 2 * self.p["diagnostics_period_s"])
        st = DiagnosticStatus()
        st.name = f"{self.get_fully_qualified_name()}: depth"
        st.hardware_id = self.backend_name
        if info_timeout or recent:
            st.level = DiagnosticStatus.WARN
            st.message = self.last_problem if recent else "no camera_info"
        else:
            st.level, st.message = DiagnosticStatus.OK, "ok"
        sync = self.sync.stats
        values = {
            "backend": self.backend_name,
            "scale_policy": self.p["scale_policy"],
            "input_rate_hz": f"{self.in_rate.rate_hz(now):.2f}",
            "output_rate_hz": f"{self.out_rate.rate_hz(now):.2f}",
            "frames_out": str(self.out_rate.total),
            "dropped_frames": str(self._slot.dropped + self._slot.stale + sync.dropped_images),
            "dropped_latest_only": str(self._slot.dropped),
            "dropped_unpaired_images": str(sync.dropped_images),
            "latency_p50_ms": f"{self.latency.percentile_ms(50):.1f}",
            "latency_p99_ms": f"{self.latency.percentile_ms(99):.1f}",
            "processing_p50_ms": f"{self.proc_time.percentile_ms(50):.1f}",
            "processing_p99_ms": f"{self.proc_time.percentile_ms(99):.1f}",
            "scale": f"{self.last_scale:.4f}" if self.last_scale is not None else "n/a",
            "ground_plane_fresh": str(self.ground.fresh),
            "last_problem": self.last_problem,
        }
        values.update({f"problems.{k}": str(v) for k, v in sorted(self.problems.items())})
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self.pub_diag.publish(arr)

    def destroy_node(self):
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        if self.backend is not None:
            self.backend.close()
        return super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``depth_node``. Returns the process exit code (non-zero on a start-up failure)."""
    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        node = DepthNode()
    except Exception as e:  # noqa: BLE001 - model or parameter problems: a clear fatal line, non-zero exit
        rclpy.logging.get_logger("depth_node").fatal(f"depth_node cannot start: {type(e).__name__}: {e}")
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
