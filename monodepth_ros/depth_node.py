"""The ROS 2 depth node: camera image + camera_info in, metric/relative depth and an organised point cloud out.

A thin shell: it declares parameters, pairs messages by stamp (:mod:`monodepth_ros.sync`), hands the newest
pair to one inference worker thread, and publishes what the pure functions compute
(:mod:`monodepth_ros.msgs.image`, :mod:`monodepth_ros.scale_policy`, :mod:`monodepth_ros.msgs.pointcloud`).

Topics (relative, so ``__ns`` and remaps work): subscribes ``image`` (or ``image/compressed`` with
``use_compressed``) and ``camera_info``; publishes ``depth`` (32FC1 metres, REP 118), ``depth/camera_info``,
``points`` (PointCloud2), ``depth/colored`` (rgb8, when ``publish_colored``), ``depth/confidence`` (mono8:
0 where the depth is NaN, else the model's validity, 255 for a model without one), ``scan`` (LaserScan,
:mod:`monodepth_ros.scan`) and ``/diagnostics``. A camera_info with distortion is rectified first (``rectify``,
:mod:`monodepth_ros.rectify`).

The node's work lives in :class:`DepthNodeCore`, written once and used by two nodes: :class:`DepthNode` here (a
plain node that loads its model and starts at construction) and the managed (lifecycle) node of
:mod:`monodepth_ros.managed_node`, which runs the same steps on configure/activate/deactivate/cleanup.

Run: ``python -m monodepth_ros.depth_node --ros-args --params-file config/depth_node.yaml -p model_path:=m.onnx``
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, LaserScan

from monodepth_ros.cli_common import EXIT_BAD_INPUT, EXIT_FAILURE
from monodepth_ros.diagnostics import LatencyWindow, RateMeter, Throttle, stamp_latency_s
from monodepth_ros.geometry import validate_intrinsics
from monodepth_ros.msgs.camera_info import rescaled_camera_info
from monodepth_ros.msgs.image import (
    compressed_to_rgb,
    depth_to_image_msg,
    image_msg_to_rgb,
    mono8_to_image_msg,
    rgb_to_image_msg,
)
from monodepth_ros.msgs.laserscan import make_laserscan
from monodepth_ros.msgs.pointcloud import make_pointcloud2
from monodepth_ros.msgs.stamps import stamp_to_ns
from monodepth_ros.node_params import PARAM_BY_NAME, PARAMETERS, ParamSpec, coerce_value, validate_parameter
from monodepth_ros.pipeline import (
    FrameParams,
    FrameRejected,
    frame_cloud,
    frame_colored,
    frame_confidence,
    frame_invalid_share,
    frame_scan,
    prepare_camera,
    process_frame,
    scale_policy_from_params,
)
from monodepth_ros.rectify import Calibration, Rectifier, published_camera_info
from monodepth_ros.scale_policy import GroundPlaneScale, choose_scale_policy, publishes_metres
from monodepth_ros.sync import LatestSlot, StampSynchronizer

__all__ = ["DepthNode", "DepthNodeCore", "ModelStartupError", "main", "run_node"]


# Parameters that change the scale-policy object (the others are read per frame).
_POLICY_PARAMS = {"scale_policy", "fixed_scale", "camera_height_m", "ground_region_top", "ground_smoothing",
                  "ground_method", "camera_pitch_deg", "camera_roll_deg", "ground_max_tilt_deg"}


class ModelStartupError(RuntimeError):
    """The model named by ``model_path`` (or a parameter) cannot be used; the node cannot start."""


def _descriptor(spec: ParamSpec, read_only: bool) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.description, read_only=read_only)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.lo is not None:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            d.integer_range = [IntegerRange(from_value=int(spec.lo), to_value=int(spec.hi), step=1)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(spec.lo), to_value=float(spec.hi))]
    return d


class DepthNodeCore:
    """The depth node's work, shared by the plain and the managed node: a mixin for an rclpy ``Node``.

    Its steps, in the order a node runs them (the plain node all at construction; the managed node on its
    lifecycle transitions, see :mod:`monodepth_ros.managed_node`):

    - :meth:`_init_core`: declare the parameters, the ``/diagnostics`` publisher and timer (construction);
    - :meth:`_load_model`: read and validate the parameters, load the backend and the scale policy, reset the
      counters; raises :class:`ModelStartupError` (configure);
    - :meth:`_create_outputs`: the output publishers (configure);
    - :meth:`_start_input` / :meth:`_stop_input`: the inference worker and the subscriptions (activate /
      deactivate); after ``_stop_input`` returns, the worker is gone and nothing more is published;
    - :meth:`_release`: stop the input and close the backend (cleanup, shutdown, destroy_node).

    "restart" parameters (``ParamSpec.read_only``) are declared read-only by the plain node; a subclass that
    overrides :meth:`_restart_param_reason` decides when they may change instead (the managed node: unconfigured).
    """

    def _init_core(self, restart_params_read_only: bool = True) -> None:
        # Set first: destroy_node() runs even when construction fails half way (rclpy context clean-up).
        self._slot: LatestSlot | None = None  # newest (image_msg, info_msg, t_received) not yet processed
        self._worker: threading.Thread | None = None
        self._busy_worker: threading.Thread | None = None  # a worker that outlived _stop_input's wait
        self._retired_slot_counts = (0, 0)  # (dropped, stale) of the mailboxes of earlier activations
        self._subs: list = []
        self._output_pubs: list = []
        self._diag_timer = None
        self.backend = None
        self.info = None
        self.policy = None
        self.backend_name = ""
        self.configure_error = ""  # why the last model load failed (managed node: shown in /diagnostics)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec, spec.read_only and
                                                                        restart_params_read_only))
        self.p = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._start_diagnostics_timer()

    @staticmethod
    def _pc2_type():
        from sensor_msgs.msg import PointCloud2

        return PointCloud2

    # ---- hooks a lifecycle node overrides ---------------------------------------------------------------------
    def _lifecycle_state(self) -> str | None:
        """The lifecycle state label for /diagnostics, or None for a plain node."""
        return None

    def _restart_param_reason(self, name: str) -> str | None:
        """Why the "restart" parameter ``name`` cannot change now, or None if it can."""
        return f"{name} is read-only: restart to change"

    # ---- start-up: model, outputs, input ----------------------------------------------------------------------
    def _load_model(self) -> None:
        """Read and check every parameter, load the model and build the scale policy; reset the run's counters.
        Raises :class:`ModelStartupError` with the reason (a bad parameter, an unusable model or scale)."""
        self.p = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        bad = [r for n, v in self.p.items() if (r := validate_parameter(n, v, self.p))]
        if bad:
            raise ModelStartupError("invalid parameters: " + "; ".join(bad))
        self.backend = self._load_backend()
        self.info = self.backend.info
        if not self.info.has_validity:
            self.get_logger().warning(
                "sky is not masked: the model has no validity output, so sky gets a depth (a phantom wall in "
                "depth and points); validity_threshold has no effect")
        self.ground = GroundPlaneScale()  # ground-plane state, kept across frames and parameter changes
        try:
            self._configure_policy()
        except ValueError as e:  # an unknown scale would be published as metres: refuse to start
            raise ModelStartupError(f"model '{self.p['model_path']}': {e}") from None
        if not publishes_metres(self.policy.name):
            self.get_logger().warning(
                "scale_policy relative: publishing depth in model units, NOT metres, on a topic that REP 118 "
                "defines as metres; do not let a planner consume it as metres")
        self._start_diagnostics_timer()  # diagnostics_period_s may have changed while unconfigured

        self.sync = StampSynchronizer(self.p["sync_tolerance_s"], self.p["sync_queue_size"])
        self.in_rate, self.out_rate = RateMeter(), RateMeter()
        self.latency = LatencyWindow()  # header stamp -> cloud published
        self.proc_time = LatencyWindow()  # pair handed to the worker -> cloud published
        self.throttle = Throttle(self.p["log_throttle_s"])
        self.problems: dict[str, int] = {}
        self.last_problem = ""
        self.last_problem_time = -1e9
        self.last_info_time = time.monotonic()
        self.last_image_time: float | None = None  # no camera_info warning before the first image
        self.got_info = False
        self.stamp_offset_s: float | None = None  # last stamp found off this node's clock (latency not measured)
        self.last_scale: float | None = None  # depth = last_scale / disp, for /diagnostics
        self.last_invalid_share: float | None = None  # share of the last frame masked by the validity output
        self.rectifier = Rectifier()  # rectification maps per calibration; used by the worker thread only
        self.frames_rectified = 0
        self.scans_out = 0
        self._scan_notes: set[str] = set()  # one-time scan warnings already logged
        self._retired_slot_counts = (0, 0)

    def _load_backend(self):
        path = self.p["model_path"]
        if not path:
            raise ModelStartupError("parameter model_path is empty: pass -p model_path:=/path/to/model.onnx")
        try:
            from monodepth_ros.backends import create_backend

            backend = create_backend(path, kind=self.p["backend"], threads=self.p["threads"] or None,
                                     logger=self.get_logger(), engine_cache_dir=self.p["engine_cache_dir"])
        except Exception as e:  # noqa: BLE001 - any load failure is fatal, reported with its reason
            raise ModelStartupError(f"cannot load model '{path}': {e}") from e
        self.backend_name = f"{getattr(backend, 'name', type(backend).__name__)}:{backend.info.name or path}"
        return backend

    def _create_outputs(self, create_publisher: Callable) -> None:
        """The output publishers, made by ``create_publisher`` (``create_publisher`` or a lifecycle node's
        ``create_lifecycle_publisher``)."""
        # Reliable publishers serve both reliable (RViz default) and best-effort subscribers; keep-last 2 never blocks.
        pub_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_depth = create_publisher(Image, "depth", pub_qos)
        self.pub_info = create_publisher(CameraInfo, "depth/camera_info", pub_qos)
        self.pub_points = create_publisher(self._pc2_type(), "points", pub_qos)
        self.pub_colored = create_publisher(Image, "depth/colored", pub_qos)
        self.pub_confidence = create_publisher(Image, "depth/confidence", pub_qos)
        self.pub_scan = create_publisher(LaserScan, "scan", pub_qos)
        self._output_pubs = [self.pub_depth, self.pub_info, self.pub_points, self.pub_colored, self.pub_confidence,
                             self.pub_scan]

    def _destroy_outputs(self, destroy_publisher: Callable) -> None:
        for pub in self._output_pubs:
            destroy_publisher(pub)
        self._output_pubs = []

    def _start_input(self) -> None:
        """Start the inference worker, then subscribe (a frame never waits for a worker that is not there)."""
        self._slot = LatestSlot()
        self._worker = threading.Thread(target=self._work, args=(self._slot,), name="depth_inference", daemon=True)
        self._worker.start()
        sub_qos = qos_profile_sensor_data if self.p["qos"] == "sensor_data" else QoSProfile(
            depth=5, reliability=ReliabilityPolicy.RELIABLE
        )
        if self.p["use_compressed"]:
            # image_transport naming: the compressed stream of (possibly remapped) `image` is `<image>/compressed`.
            topic = self.resolve_topic_name("image") + "/compressed"
            self._subs.append(self.create_subscription(CompressedImage, topic, self._on_image, sub_qos))
        else:
            self._subs.append(self.create_subscription(Image, "image", self._on_image, sub_qos))
        self._subs.append(self.create_subscription(CameraInfo, "camera_info", self._on_info, sub_qos))

    def _stop_input(self) -> None:
        """Unsubscribe, drop the frame not yet taken, and wait for the frame in progress to be published."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._slot is not None:
            self._retired_slot_counts = self._slot_counts()
            self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            if self._worker.is_alive():  # a hung backend must not hang the executor (and a lifecycle manager)
                self.get_logger().warning("inference worker still busy after 10 s; it exits after this frame")
                self._busy_worker = self._worker
        self._slot, self._worker = None, None

    def _release(self) -> None:
        """Stop the input and close the backend (idempotent)."""
        self._stop_input()
        if self.backend is not None:
            if self._busy_worker is not None and self._busy_worker.is_alive():
                self.get_logger().warning("backend left open: the inference worker still uses it")
            else:
                self.backend.close()
        self.backend, self.info, self.policy = None, None, None

    def _input_line(self) -> str:
        compressed = "/compressed" if self.p["use_compressed"] else ""
        return f"{self.resolve_topic_name('image')}{compressed} + {self.resolve_topic_name('camera_info')}"

    def _model_line(self) -> str:
        return (f"backend {self.backend_name}, model {self.info.width}x{self.info.height}, scale_policy "
                f"{self.p['scale_policy']} -> {self.policy.name} (model: {self.info.scale_policy}, scale "
                f"{self.info.scale:g})")

    def _configure_policy(self) -> None:
        """(Re)build the scale-policy object from the parameters; the ground-plane state carries over. Raises
        ValueError for a policy that would publish an unknown scale as metres."""
        self.policy = scale_policy_from_params(self.p, self.info.scale, self.info.scale_policy, self.ground)

    def _on_set_parameters(self, params) -> SetParametersResult:
        new: dict = {}
        for prm in params:
            spec = PARAM_BY_NAME.get(prm.name)
            if spec is None:
                continue
            if spec.read_only:  # the plain node's descriptor makes rclpy refuse too; say why in our words
                reason = self._restart_param_reason(prm.name)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
            try:
                value = coerce_value(prm.name, prm.value)
            except ValueError as e:
                return SetParametersResult(successful=False, reason=str(e))
            reason = validate_parameter(prm.name, value, dict(self.p, **new))
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            new[prm.name] = value
        merged = dict(self.p, **new)
        loaded = self.info is not None  # a managed node without a model takes the values at its next configure
        if loaded:
            try:
                choose_scale_policy(merged["scale_policy"], merged["fixed_scale"], self.info.scale_policy)
            except ValueError as e:
                return SetParametersResult(successful=False, reason=str(e))
        for name, value in new.items():
            old = self.p[name]
            self.p[name] = value
            if not loaded:
                continue
            if name == "sync_tolerance_s":
                self.sync.tolerance_s = value
            elif name == "log_throttle_s":
                self.throttle.period_s = value
            elif name == "scale_policy" and old != value:
                self.ground.reset()
        if loaded and any(n in _POLICY_PARAMS for n in new):
            self._configure_policy()
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
        self.last_image_time = time.monotonic()
        self.in_rate.tick(self.last_image_time)
        self._offer(self.sync.push_image(stamp_to_ns(msg.header.stamp), msg))

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            validate_intrinsics(np.asarray(msg.k, dtype=np.float64))
        except ValueError as e:
            self.report_problem("camera_info", f"camera_info rejected ({e}); K = {np.asarray(msg.k).tolist()}")
            return
        self.last_info_time = time.monotonic()
        self.got_info = True
        self._offer(self.sync.push_info(stamp_to_ns(msg.header.stamp), msg))

    def _offer(self, pair) -> None:
        slot = self._slot
        if pair is not None and slot is not None:  # latest only: an older pair waiting is dropped, a late one refused
            slot.put(stamp_to_ns(pair[0].header.stamp), (pair[0], pair[1], time.monotonic()))

    def _slot_counts(self) -> tuple[int, int]:
        """(dropped, stale) of the inference mailboxes since the model was loaded (one per activation)."""
        dropped, stale = self._retired_slot_counts
        if self._slot is not None:
            dropped, stale = dropped + self._slot.dropped, stale + self._slot.stale
        return dropped, stale

    # ---- inference worker -----------------------------------------------------------------------------------
    def _work(self, slot: LatestSlot) -> None:
        while True:
            item = slot.take()
            if item is None:  # closed
                return
            img_msg, info_msg, t_recv = item
            try:
                self._process(img_msg, info_msg, t_recv)
            except Exception as e:  # noqa: BLE001 - one bad frame must never stop the node
                self.report_problem("processing", f"frame skipped: {type(e).__name__}: {e}")

    def _process(self, img_msg, info_msg: CameraInfo, t_recv: float) -> None:
        params = FrameParams.from_params(self.p)  # one consistent parameter snapshot per frame
        publish_colored, policy = self.p["publish_colored"], self.policy
        rectify, scan_frame_id = self.p["rectify"], self.p["scan_frame_id"]
        try:
            rgb = compressed_to_rgb(img_msg) if isinstance(img_msg, CompressedImage) else image_msg_to_rgb(img_msg)
        except ValueError as e:
            topic = self.resolve_topic_name("image") + ("/compressed" if self.p["use_compressed"] else "")
            self.report_problem("image", f"image on {topic} skipped: {e}")
            return
        calib = Calibration.from_camera_info(info_msg, image_size=(rgb.shape[1], rgb.shape[0]))
        try:
            camera, rectified = prepare_camera(rgb, calib, rectify, self.rectifier)  # remapped when D != 0
        except FrameRejected as e:
            self.report_problem(e.kind, str(e))
            return
        if rectified.note:
            self.get_logger().warning(rectified.note)
        try:
            # (h, w) scaled disparity and validity (None without that output) at model resolution, one run
            disp, valid = self.backend.infer_outputs(camera.rgb)
        except Exception as e:  # noqa: BLE001 - a runtime failure inside the backend
            self.report_problem("inference", f"backend {self.backend_name} failed: {e}")
            return
        try:
            out = process_frame(camera, disp, params, policy, valid)
        except FrameRejected as e:
            self.report_problem(e.kind, str(e))
            return
        for kind, message in out.problems:
            self.report_problem(kind, message)
        self.last_scale = out.scale
        self.last_invalid_share = frame_invalid_share(out, params)

        header = img_msg.header
        self.pub_depth.publish(depth_to_image_msg(out.depth, header))
        # A distorted camera's frame is published in its rectified geometry: D = 0, K = P's 3x3, R = identity.
        self.pub_info.publish(rescaled_camera_info(published_camera_info(info_msg, calib), out.K, out.depth.shape))
        self.frames_rectified += rectified.rectified
        # Lazy like depth_image_proc: the cloud and the colour picture cost milliseconds, build them for listeners.
        if self.pub_points.get_subscription_count() > 0:
            self.pub_points.publish(make_pointcloud2(header, *frame_cloud(out, params)))
        now = time.monotonic()
        if publish_colored and self.pub_colored.get_subscription_count() > 0:
            self.pub_colored.publish(rgb_to_image_msg(frame_colored(out, params), header))
        if self.pub_confidence.get_subscription_count() > 0:
            self.pub_confidence.publish(mono8_to_image_msg(frame_confidence(out), header))
        if self.pub_scan.get_subscription_count() > 0:
            self._publish_scan(out, params, policy, header, scan_frame_id, now)
        self.out_rate.tick(now)
        self.proc_time.add(now - t_recv)
        # The node's clock follows /clock with use_sim_time; stamps from another clock (a bag) give no latency.
        now_ns, stamp_ns = self.get_clock().now().nanoseconds, stamp_to_ns(header.stamp)
        latency = stamp_latency_s(now_ns, stamp_ns)
        if latency is None:
            self.stamp_offset_s = (now_ns - stamp_ns) * 1e-9
        else:
            self.latency.add(latency)
            self.stamp_offset_s = None

    def _publish_scan(self, out, params: FrameParams, policy, header, scan_frame_id: str, now: float) -> None:
        """The LaserScan of a published frame, for its listeners. A scan is metres by definition (Nav2 marks
        obstacles at its ranges), so a policy that does not publish metres gives no scan."""
        if not publishes_metres(policy.name):
            self._scan_note_once("relative", f"no scan published: scale_policy {policy.name} gives depth in model "
                                 "units, not metres, and a LaserScan is metres; use a metric, fixed or ground_plane "
                                 "scale for a scan")
            return
        try:
            scan = frame_scan(out, params)
        except ValueError as e:
            self.report_problem("scan", f"scan skipped: {e}")
            return
        frame_id = scan_frame_id or header.frame_id
        if frame_id.endswith("optical_frame"):
            self._scan_note_once("frame", f"scan published in '{frame_id}': LaserScan angles turn about that "
                                 "frame's z axis from its x axis, and an optical frame has z forward, x right; "
                                 "set scan_frame_id to a frame with x forward and z up at the camera (TF), as "
                                 "depthimage_to_laserscan's output_frame")
        rate_hz = self.out_rate.rate_hz(now)
        self.pub_scan.publish(make_laserscan(header, scan, params.scan_range_min, params.scan_range_max,
                                             scan_time=1.0 / rate_hz if rate_hz > 0 else 0.0, frame_id=frame_id))
        self.scans_out += 1

    def _scan_note_once(self, key: str, message: str) -> None:
        if key not in self._scan_notes:
            self._scan_notes.add(key)
            self.get_logger().warning(message)

    # ---- diagnostics ----------------------------------------------------------------------------------------
    def _check_info_timeout(self, now: float) -> bool:
        """Warn when an image arrived after the last valid camera_info and none came for the timeout: images are
        arriving unpaired. A node still waiting for its camera says nothing."""
        if self.last_image_time is None or self.last_image_time < self.last_info_time:
            return False
        silent_s = now - self.last_info_time
        if silent_s > self.p["camera_info_timeout_s"]:
            self.report_problem(
                "camera_info_timeout",
                f"no valid camera_info on {self.resolve_topic_name('camera_info')} for {silent_s:.1f} s; "
                "images cannot be paired",
            )
            return True
        return False

    def _start_diagnostics_timer(self) -> None:
        """The /diagnostics timer at ``diagnostics_period_s`` (re-made only when the period changed)."""
        period_s = self.p["diagnostics_period_s"]
        if self._diag_timer is not None:
            if abs(self._diag_timer.timer_period_ns - period_s * 1e9) < 1e3:
                return
            self.destroy_timer(self._diag_timer)
        self._diag_timer = self.create_timer(period_s, self._publish_diagnostics)

    def _publish_diagnostics(self) -> None:
        st = DiagnosticStatus()
        st.name = f"{self.get_fully_qualified_name()}: depth"
        state = self._lifecycle_state()
        if self.backend is None:  # a managed node without its model (unconfigured, finalized): its state only
            values = {"lifecycle_state": state or "unconfigured"}
            if self.configure_error:
                st.level, st.message = DiagnosticStatus.ERROR, f"{state}: configure failed: {self.configure_error}"
                values["configure_error"] = self.configure_error
            elif state == "finalized":
                st.level, st.message = DiagnosticStatus.OK, "finalized: shut down"
            else:
                st.level, st.message = DiagnosticStatus.OK, f"{state}: no model loaded (configure to load it)"
        else:
            values = self._run_status(st, state)
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self.pub_diag.publish(arr)

    def _run_status(self, st: DiagnosticStatus, state: str | None) -> dict[str, str]:
        """Level, message and values of a node with its model loaded (``state``: lifecycle label or None)."""
        now = time.monotonic()
        processing = state in (None, "active")
        info_timeout = processing and self._check_info_timeout(now)  # no input expected while inactive
        recent = now - self.last_problem_time < max(5.0, 2 * self.p["diagnostics_period_s"])
        st.hardware_id = self.backend_name
        if info_timeout or recent:
            st.level = DiagnosticStatus.WARN
            st.message = self.last_problem if recent else "no camera_info"
        else:
            st.level, st.message = DiagnosticStatus.OK, "ok" if processing else f"{state}: not processing"
        sync = self.sync.stats
        dropped, stale = self._slot_counts()
        values = {} if state is None else {"lifecycle_state": state}
        values |= {
            "backend": self.backend_name,
            "scale_policy": self.p["scale_policy"],
            "scale_policy_applied": self.policy.name,
            "depth_units": "metres" if publishes_metres(self.policy.name) else "model units (relative, NOT metres)",
            "input_rate_hz": f"{self.in_rate.rate_hz(now):.2f}",
            "output_rate_hz": f"{self.out_rate.rate_hz(now):.2f}",
            "frames_out": str(self.out_rate.total),
            "frames_rectified": str(self.frames_rectified),
            "scans_out": str(self.scans_out),
            "dropped_frames": str(dropped + stale + sync.dropped_images),
            "dropped_latest_only": str(dropped),
            "dropped_unpaired_images": str(sync.dropped_images),
            "latency_p50_ms": f"{self.latency.percentile_ms(50):.1f}" if len(self.latency) else "n/a",
            "latency_p99_ms": f"{self.latency.percentile_ms(99):.1f}" if len(self.latency) else "n/a",
            "latency_clock": "ok" if self.stamp_offset_s is None else (
                f"stamps {self.stamp_offset_s:.1f} s off this node's clock: latency not measured "
                "(recorded stamps? set use_sim_time with a /clock)"),
            "processing_p50_ms": f"{self.proc_time.percentile_ms(50):.1f}",
            "processing_p99_ms": f"{self.proc_time.percentile_ms(99):.1f}",
            "scale": f"{self.last_scale:.4f}" if self.last_scale is not None else "n/a",
            "ground_plane_fresh": str(self.ground.fresh),
            # share of the last frame's pixels masked as sky by the validity output; n/a for a model without one
            "validity_masked_share": f"{self.last_invalid_share:.3f}" if self.last_invalid_share is not None
            else "n/a",
            "last_problem": self.last_problem,
        }
        values.update({f"problems.{k}": str(v) for k, v in sorted(self.problems.items())})
        return values

    def destroy_node(self):
        self._release()
        return super().destroy_node()


class DepthNode(DepthNodeCore, Node):
    """The plain depth node: loads its model and starts at construction (see the module docstring). Raises
    :class:`ModelStartupError` if the model or a parameter cannot be used."""

    def __init__(self, node_name: str = "depth_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self._init_core()
        self._load_model()
        self._create_outputs(self.create_publisher)
        self._start_input()
        self.get_logger().info(f"depth node ready: {self._model_line()}, subscribing {self._input_line()}")


def run_node(make_node: Callable[[], Node], name: str, argv: list[str] | None = None) -> int:
    """Initialise rclpy, build the node with ``make_node`` and spin it until shutdown. Returns the process exit code
    (:mod:`monodepth_ros.cli_common`): 2 when the model or a parameter cannot be used (including a value outside a
    declared range or of the wrong type, refused by rclpy), 1 on another start-up failure, 0 after a normal
    shutdown."""
    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        node = make_node()
    except Exception as e:  # noqa: BLE001 - model or parameter problems: a clear fatal line, non-zero exit
        rclpy.logging.get_logger(name).fatal(f"{name} cannot start: {type(e).__name__}: {e}")
        rclpy.try_shutdown()
        # The exit-code table of every monodepth command: a bad model or parameter is bad input.
        bad_input = (ModelStartupError, InvalidParameterValueException, InvalidParameterTypeException)
        return EXIT_BAD_INPUT if isinstance(e, bad_input) else EXIT_FAILURE
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # SIGINT/SIGTERM shut the context down under a running callback (a timer publishing): a normal stop.
        if rclpy.ok():
            raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``depth_node``: the plain node (exit codes: :func:`run_node`)."""
    return run_node(DepthNode, "depth_node", argv)


if __name__ == "__main__":
    sys.exit(main())
