"""The depth node as a separate process over real DDS (loopback): outputs, live parameters, bad input, start-up.

One node process serves the whole module (namespace /cam, reliable QoS so that no test frame is lost); a
second one checks CompressedImage input, and two short-lived ones check start-up failures.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny_depth_model import make_content_depth_model, make_tiny_depth_model, road_validity

from monodepth_ros.geometry import backproject, denormalize_intrinsics, scale_intrinsics
from monodepth_ros.msgs.pointcloud import pointcloud2_to_array, unpack_rgb
from monodepth_ros.pipeline import resize_model_output
from monodepth_ros.visualize import colorize_depth

pytestmark = [pytest.mark.ros, pytest.mark.rosdistro]  # rosdistro: `make test-jazzy` runs it on Jazzy too

W_IN, H_IN = 160, 48  # camera frames
W_M, H_M = 96, 32  # model input
K_IN = denormalize_intrinsics(np.array([[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1.0]]), W_IN, H_IN)
K_MODEL = scale_intrinsics(K_IN, W_M / W_IN, H_M / H_IN)
CAMERA_HEIGHT_M = 1.65
REL_FACTOR = 0.2  # the model's relative depth = metric / 5; its metadata scale is 5
FRAME_ID = "camera_optical_frame"
REPO = Path(__file__).resolve().parents[2]


def make_rgb(i: int) -> np.ndarray:
    """A camera frame (H_IN, W_IN, 3) uint8 from the synthetic world; never pure white (the model's NaN trap)."""
    try:
        from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

        rgb = SyntheticWorld(SynthConfig(width=W_IN, height=H_IN)).render(i).rgb
    except ImportError:  # the synthetic world is another work item; any textured frame exercises the node
        rng = np.random.default_rng(i)
        rgb = rng.integers(0, 256, (H_IN, W_IN, 3), dtype=np.uint8)
    return np.minimum(rgb, 240).astype(np.uint8)


def start_node(env, model_path, log_path, namespace, *extra):
    cmd = [sys.executable, "-m", "monodepth_ros.depth_node", "--ros-args", "-r", f"__ns:={namespace}",
           "-p", f"model_path:={model_path}", *sum((["-p", e] for e in extra), [])]
    log = open(log_path, "w")  # noqa: SIM115 - closed by stop_node
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    proc.log_file = log
    proc.log_path = Path(log_path)
    return proc


def stop_node(proc):
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    finally:
        proc.log_file.close()


@contextlib.contextmanager
def connected_node(env, model_path, log_path, namespace, *params, compressed=False):
    """A node process in ``namespace`` (parameters ``params``) and a test Client connected to it; both are
    closed on exit, whatever the test did."""
    proc = start_node(env, model_path, log_path, namespace, *params)
    client = None
    try:
        client = Client(namespace, compressed=compressed)
        client.wait_connected(proc)
        yield proc, client
    finally:
        if client is not None:
            client.close()
        stop_node(proc)


class Client:
    """The test's own rclpy node: publishes camera input, collects every output by stamp."""

    def __init__(self, ns: str, compressed: bool = False):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node(f"test_client{ns.replace('/', '_')}", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = self.node.create_publisher(CompressedImage if compressed else Image,
                                                    f"{ns}/image" + ("/compressed" if compressed else ""), qos)
        self.pub_info = self.node.create_publisher(CameraInfo, f"{ns}/camera_info", qos)
        self.got: dict[str, dict[int, object]] = {k: {} for k in ("depth", "info", "points", "colored",
                                                                  "confidence")}
        self.diags: list = []
        for key, typ, topic in (("depth", Image, "depth"), ("info", CameraInfo, "depth/camera_info"),
                                ("points", PointCloud2, "points"), ("colored", Image, "depth/colored"),
                                ("confidence", Image, "depth/confidence")):
            self.node.create_subscription(typ, f"{ns}/{topic}", self._store(key), qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, 10)
        self.param_client = self.node.create_client(SetParameters, f"{ns}/depth_node/set_parameters")
        self.last_ns = 0
        self.diag_name = f"{ns}/depth_node: depth"  # /diagnostics is global: other nodes of the module publish too

    def _store(self, key):
        def cb(msg):
            self.got[key][msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = msg
        return cb

    def spin_until(self, cond, timeout_s: float, proc=None) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if cond():
                return True
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"node exited with {proc.returncode}:\n{proc.log_path.read_text()[-3000:]}")
            self.executor.spin_once(timeout_sec=0.02)
        return cond()

    def wait_connected(self, proc, timeout_s: float = 30.0) -> None:
        ok = self.spin_until(lambda: self.pub_image.get_subscription_count() > 0
                             and self.pub_info.get_subscription_count() > 0
                             and self.param_client.service_is_ready(), timeout_s, proc)
        assert ok, f"node did not connect:\n{proc.log_path.read_text()[-3000:]}"

    def next_stamp(self):
        from builtin_interfaces.msg import Time

        # Wall-clock stamps (latency is stamp -> output), strictly increasing (the node drops stale pairs).
        self.last_ns = max(time.time_ns(), self.last_ns + 1_000_000)
        return Time(sec=self.last_ns // 10**9, nanosec=self.last_ns % 10**9), self.last_ns

    def image_msg(self, rgb, stamp, encoding="rgb8"):
        from sensor_msgs.msg import Image

        msg = Image()
        msg.header.stamp, msg.header.frame_id = stamp, FRAME_ID
        msg.height, msg.width = rgb.shape[:2]
        msg.encoding, msg.is_bigendian, msg.step = encoding, False, rgb.shape[1] * 3
        msg.data = np.ascontiguousarray(rgb).tobytes()
        return msg

    def info_msg(self, stamp, K=K_IN):
        from sensor_msgs.msg import CameraInfo

        msg = CameraInfo()
        msg.header.stamp, msg.header.frame_id = stamp, FRAME_ID
        msg.height, msg.width = H_IN, W_IN
        msg.distortion_model, msg.d = "plumb_bob", [0.0] * 5
        msg.k = [float(v) for v in np.asarray(K).ravel()]
        msg.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
        P = np.zeros((3, 4))
        P[:3, :3] = K
        msg.p = [float(v) for v in P.ravel()]
        return msg

    def send(self, image_msg, info_msg):
        self.pub_info.publish(info_msg)
        self.pub_image.publish(image_msg)

    def send_good(self, i: int = 0):
        stamp, ns = self.next_stamp()
        rgb = make_rgb(i)
        self.send(self.image_msg(rgb, stamp), self.info_msg(stamp))
        return ns, rgb

    def warm_up(self, proc, tries: int = 15) -> None:
        """Send good frames until one comes back. A publisher can count a subscription before the subscriber has
        matched it (discovery is not symmetric), and a reliable volatile message sent in that window is lost; a
        fresh-clone CI run lost the first camera_info that way."""
        for i in range(tries):
            ns, _ = self.send_good(i)
            if self.spin_until(lambda ns=ns: all(ns in self.got[k] for k in ("depth", "info", "points")), 2.0, proc):
                return
        raise AssertionError(f"no output for {tries} warm-up frames; node log:\n{proc.log_path.read_text()[-3000:]}")

    def wait_outputs(self, ns: int, proc, keys=("depth", "info", "points"), timeout_s: float = 10.0):
        ok = self.spin_until(lambda: all(ns in self.got[k] for k in keys), timeout_s, proc)
        assert ok, f"no {keys} for stamp {ns}; node log:\n{proc.log_path.read_text()[-3000:]}"
        return [self.got[k][ns] for k in keys]

    def set_params(self, **values):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request()
        req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        fut = self.param_client.call_async(req)
        assert self.spin_until(fut.done, 10.0), "set_parameters timed out"
        return fut.result().results

    def own_diag_count(self) -> int:
        """How many /diagnostics arrays carried this node's status (the topic is shared by every node)."""
        return sum(any(st.name == self.diag_name for st in arr.status) for arr in self.diags)

    def latest_diag_values(self) -> dict[str, str]:
        for arr in reversed(self.diags):
            for st in arr.status:
                if st.name == self.diag_name:
                    return {kv.key: kv.value for kv in st.values} | {"_level": st.level, "_message": st.message}
        return {}

    def close(self):
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def depth_array(msg) -> np.ndarray:
    assert msg.encoding == "32FC1" and msg.step == msg.width * 4
    dt = np.dtype(">f4" if msg.is_bigendian else "<f4")
    return np.frombuffer(bytes(msg.data), dtype=dt).reshape(msg.height, msg.width).astype(np.float32)


def assert_same_with_nan(a: np.ndarray, b: np.ndarray, rtol=1e-5, atol=1e-5):
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_depth_model(tmp_path_factory.mktemp("model") / "tiny.onnx", height=H_M, width=W_M,
                                 K_model=K_MODEL, camera_height_m=CAMERA_HEIGHT_M, rel_factor=REL_FACTOR)


@pytest.fixture(scope="module")
def node(tiny_model, ros_subprocess_env, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("log") / "node.log"
    with connected_node(ros_subprocess_env, tiny_model, log_path, "/cam", "qos:=reliable",
                        "camera_info_timeout_s:=1.0", "log_throttle_s:=0.0", "diagnostics_period_s:=0.3") as pc:
        yield pc


def test_depth_and_cloud_equal_backprojection_of_published_depth(node):
    proc, c = node
    ns, rgb = c.send_good(1)
    depth_msg, info_msg, cloud_msg, colored_msg, conf_msg = c.wait_outputs(
        ns, proc, keys=("depth", "info", "points", "colored", "confidence"))
    for msg in (depth_msg, info_msg, cloud_msg):
        assert msg.header.frame_id == FRAME_ID
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == ns
    depth = depth_array(depth_msg)
    assert depth.shape == (H_IN, W_IN)
    K = np.array(info_msg.k).reshape(3, 3)
    np.testing.assert_allclose(K, K_IN)
    # Sky (beyond max_depth) is NaN, the road below the horizon is finite and metric (model scale 5).
    assert np.isnan(depth[: H_IN // 3]).all()
    assert np.isfinite(depth[-H_IN // 4:]).all() and np.nanmax(depth) <= 80.0
    # depth/confidence: mono8, 255 exactly where a depth is published, 0 where it is NaN.
    assert (conf_msg.encoding, conf_msg.height, conf_msg.width) == ("mono8", H_IN, W_IN)
    conf = np.frombuffer(bytes(conf_msg.data), np.uint8).reshape(H_IN, W_IN)
    np.testing.assert_array_equal(conf, np.where(np.isfinite(depth), 255, 0))
    v = H_IN - 1
    assert depth[v, 0] == pytest.approx(CAMERA_HEIGHT_M * K[1, 1] / (v - K[1, 2]), rel=0.05)
    cloud = pointcloud2_to_array(cloud_msg)
    assert cloud.shape == (H_IN, W_IN) and not cloud_msg.is_dense
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
    expected = backproject(depth, K)
    for i in range(3):
        assert_same_with_nan(xyz[..., i], expected[..., i])
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), rgb)  # colour of every pixel, NaN or not
    # depth/colored: the shared fixed colour map over the configured range (defaults 1..80 m).
    assert colored_msg.encoding == "rgb8" and colored_msg.header.stamp == depth_msg.header.stamp
    colored = np.frombuffer(bytes(colored_msg.data), np.uint8).reshape(H_IN, W_IN, 3)
    np.testing.assert_array_equal(colored, colorize_depth(depth, 1.0, 80.0))


def test_model_resolution_and_decimation_follow_live_parameters(node):
    proc, c = node
    results = c.set_params(output_resolution="model", decimation=3, cloud_rgb=False)
    assert all(r.successful for r in results), [r.reason for r in results]
    try:
        ns, _ = c.send_good(2)
        depth_msg, info_msg, cloud_msg = c.wait_outputs(ns, proc)
        depth = depth_array(depth_msg)
        assert depth.shape == (H_M, W_M) and (info_msg.width, info_msg.height) == (W_M, H_M)
        K = np.array(info_msg.k).reshape(3, 3)
        np.testing.assert_allclose(K, K_MODEL)
        np.testing.assert_allclose(np.array(info_msg.p).reshape(3, 4)[:, :3], K_MODEL)
        # At model resolution the road is exact: depth = h * fy / (v - cy).
        v = np.arange(H_M - 6, H_M)
        np.testing.assert_allclose(depth[v, 5], CAMERA_HEIGHT_M * K[1, 1] / (v - K[1, 2]), rtol=1e-4)
        cloud = pointcloud2_to_array(cloud_msg)
        assert [f.name for f in cloud_msg.fields] == ["x", "y", "z"]
        assert cloud.shape == (11, 32)
        expected = backproject(depth, K)[::3, ::3]
        for i, name in enumerate("xyz"):
            assert_same_with_nan(cloud[name], expected[..., i])
    finally:
        c.set_params(output_resolution="input", decimation=1, cloud_rgb=True)


def test_invalid_parameter_values_are_rejected_with_a_reason(node):
    _, c = node
    (r,) = c.set_params(decimation=0)
    assert not r.successful and "decimation" in r.reason
    (r,) = c.set_params(min_depth=500.0)
    assert not r.successful and "max_depth" in r.reason
    (r,) = c.set_params(scale_policy="magic")
    assert not r.successful and "scale_policy" in r.reason
    (r,) = c.set_params(scale_policy="median_free")  # the old name: one vocabulary (auto|metric|fixed|...) now
    assert not r.successful and "scale_policy" in r.reason
    (r,) = c.set_params(scale_policy="fixed")  # with fixed_scale 0: no factor to stand behind
    assert not r.successful and "fixed_scale > 0" in r.reason
    (r,) = c.set_params(model_path="/tmp/other.onnx")
    assert not r.successful and "read-only" in r.reason
    (r,) = c.set_params(validity_threshold=1.5)
    assert not r.successful and "validity_threshold" in r.reason


def test_ground_plane_policy_recovers_metric_scale_from_camera_height(node):
    proc, c = node
    assert all(r.successful for r in c.set_params(scale_policy="ground_plane", output_resolution="model",
                                                  fixed_scale=1.0))  # fixed_scale must not matter here
    try:
        for i in range(3):
            ns, _ = c.send_good(10 + i)
            depth_msg, info_msg = c.wait_outputs(ns, proc, keys=("depth", "info"))
        depth = depth_array(depth_msg)
        K = np.array(info_msg.k).reshape(3, 3)
        v = np.arange(H_M - 8, H_M)
        np.testing.assert_allclose(depth[v, 40], CAMERA_HEIGHT_M * K[1, 1] / (v - K[1, 2]), rtol=0.01)
        assert c.spin_until(lambda: c.latest_diag_values().get("ground_plane_fresh") == "True", 3.0)
        # The applied scale is the estimate (fixed_scale is 1, the model's stored scale 5 = 1 / REL_FACTOR).
        assert float(c.latest_diag_values()["scale"]) == pytest.approx(1.0 / REL_FACTOR, rel=0.01)
    finally:
        c.set_params(scale_policy="auto", output_resolution="input", fixed_scale=0.0)


def _bad_unknown_encoding(c):
    stamp, _ = c.next_stamp()
    msg = c.image_msg(make_rgb(3), stamp, encoding="yuv_nonsense")
    return msg, c.info_msg(stamp), "unknown image encoding 'yuv_nonsense'", "problems.image"


def _bad_step(c):
    stamp, _ = c.next_stamp()
    msg = c.image_msg(make_rgb(3), stamp)
    msg.step = W_IN * 3 + 8  # claims padded rows the data does not have
    return msg, c.info_msg(stamp), "step*height", "problems.image"


def _bad_empty(c):
    stamp, _ = c.next_stamp()
    msg = c.image_msg(make_rgb(3), stamp)
    msg.data = b""
    return msg, c.info_msg(stamp), "empty image data", "problems.image"


def _bad_k_zero(c):
    stamp, _ = c.next_stamp()
    return c.image_msg(make_rgb(3), stamp), c.info_msg(stamp, K=np.zeros((3, 3))), "camera_info rejected", \
        "problems.camera_info"


def _bad_nan_model_output(c):
    stamp, _ = c.next_stamp()
    white = np.full((H_IN, W_IN, 3), 255, np.uint8)  # the tiny model answers NaN for pure white
    return c.image_msg(white, stamp), c.info_msg(stamp), "model output is all NaN", "problems.model_output"


@pytest.mark.parametrize("make_bad", [_bad_unknown_encoding, _bad_step, _bad_empty, _bad_k_zero,
                                      _bad_nan_model_output], ids=lambda f: f.__name__[5:])
def test_bad_input_is_logged_and_diagnosed_and_next_good_frame_is_served(node, make_bad):
    proc, c = node
    log_offset = len(proc.log_path.read_text())
    image_msg, info_msg, log_text, diag_key = make_bad(c)
    c.send(image_msg, info_msg)
    # Wait for the report before the good frame: the node keeps only the newest frame, so a good frame sent
    # right behind the bad one could replace it before the worker looks at it.
    assert c.spin_until(lambda: log_text in proc.log_path.read_text()[log_offset:], 5.0, proc), \
        proc.log_path.read_text()[log_offset:]
    ns, _ = c.send_good(4)
    c.wait_outputs(ns, proc)
    assert proc.poll() is None
    assert c.spin_until(lambda: int(c.latest_diag_values().get(diag_key, "0")) > 0, 3.0), c.latest_diag_values()


def test_missing_camera_info_is_logged_and_frames_resume_when_it_returns(node):
    from diagnostic_msgs.msg import DiagnosticStatus

    proc, c = node
    ns, _ = c.send_good(5)
    c.wait_outputs(ns, proc)
    log_offset = len(proc.log_path.read_text())
    stamp, _ = c.next_stamp()
    c.pub_image.publish(c.image_msg(make_rgb(6), stamp))  # an image whose camera_info never comes
    assert c.spin_until(lambda: "no valid camera_info on /cam/camera_info" in proc.log_path.read_text()[log_offset:],
                        4.0)
    assert c.spin_until(lambda: "camera_info" in c.latest_diag_values()["_message"], 3.0)
    assert c.latest_diag_values()["_level"] == DiagnosticStatus.WARN
    ns, _ = c.send_good(7)
    c.wait_outputs(ns, proc)
    assert proc.poll() is None


def test_diagnostics_report_rates_latency_drops_and_backend(node):
    proc, c = node
    for i in range(5):
        ns, _ = c.send_good(20 + i)
        c.wait_outputs(ns, proc)
    assert c.spin_until(lambda: float(c.latest_diag_values().get("output_rate_hz", "0")) > 0, 3.0)
    values = c.latest_diag_values()
    from monodepth_ros.backends import openvino_unavailable_reason

    # auto on a machine without a GPU: OpenVINO where the optional package is installed, else ONNX Runtime CPU
    assert values["backend"].startswith("openvino" if openvino_unavailable_reason() is None else "onnxruntime")
    for key in ("input_rate_hz", "dropped_frames", "latency_p50_ms", "latency_p99_ms"):
        assert key in values
    assert 0 < float(values["latency_p50_ms"]) <= float(values["latency_p99_ms"]) < 5000
    assert values["latency_clock"] == "ok"
    # The tiny model has no validity output: nothing is masked as sky, the log said so once at start.
    assert values["validity_masked_share"] == "n/a"
    assert proc.log_path.read_text().count("sky is not masked: the model has no validity output") == 1


def test_sky_is_nan_where_the_model_validity_says_so_and_the_threshold_is_live(ros_subprocess_env, tmp_path):
    """The tiny model with its validity output: its sky rows (1000 m, inside max_depth here so that only the
    validity can mask them) are NaN in depth and 0 in depth/confidence, the road is published at full confidence,
    and validity_threshold 0, set live, publishes the sky again. /diagnostics reports the masked share."""
    model = make_tiny_depth_model(tmp_path / "valid.onnx", height=H_M, width=W_M, K_model=K_MODEL,
                                  camera_height_m=CAMERA_HEIGHT_M, rel_factor=REL_FACTOR, validity=True)
    sky = resize_model_output(road_validity(H_M, W_M, K_MODEL), (H_IN, W_IN)) < 0.5  # the pipeline's rule
    assert sky[: H_IN // 3].all() and not sky[-H_IN // 4:].any()
    keys = ("depth", "confidence")
    with connected_node(ros_subprocess_env, model, tmp_path / "node.log", "/sky", "qos:=reliable",
                        "max_depth:=2000.0", "diagnostics_period_s:=0.2") as (proc, c):
        c.warm_up(proc)
        assert "sky is not masked" not in proc.log_path.read_text()
        ns, _ = c.send_good(40)
        depth_msg, conf_msg = c.wait_outputs(ns, proc, keys=keys)
        depth = depth_array(depth_msg)
        conf = np.frombuffer(bytes(conf_msg.data), np.uint8).reshape(H_IN, W_IN)
        np.testing.assert_array_equal(np.isnan(depth), sky)
        np.testing.assert_array_equal(conf[sky], 0)
        assert (conf[-H_IN // 4:] == 255).all() and np.isfinite(depth[-H_IN // 4:]).all()
        assert c.spin_until(lambda: c.latest_diag_values().get("validity_masked_share", "n/a") != "n/a", 3.0, proc)
        assert float(c.latest_diag_values()["validity_masked_share"]) == pytest.approx(sky.mean(), abs=1e-3)

        assert all(r.successful for r in c.set_params(validity_threshold=0.0))
        ns, _ = c.send_good(41)
        depth_msg, conf_msg = c.wait_outputs(ns, proc, keys=keys)
        depth = depth_array(depth_msg)
        conf = np.frombuffer(bytes(conf_msg.data), np.uint8).reshape(H_IN, W_IN)
        assert np.isfinite(depth).all() and np.nanmax(depth[sky]) == pytest.approx(1000.0, rel=0.01)
        assert (conf[: H_IN // 3] == 1).all()  # published, validity 0: the lowest level that is not "no depth"


def test_backend_openvino_parameter_runs_openvino_with_the_threads_asked(tiny_model, ros_subprocess_env, tmp_path):
    from monodepth_ros.backends import openvino_unavailable_reason

    reason = openvino_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with connected_node(ros_subprocess_env, tiny_model, tmp_path / "node.log", "/ov", "backend:=openvino",
                        "threads:=1", "qos:=reliable", "diagnostics_period_s:=0.2") as (proc, c):
        c.warm_up(proc)
        log = proc.log_path.read_text()
        assert "depth backend: OpenVINO" in log and "threads=1" in log, log[-2000:]
        assert c.spin_until(lambda: c.latest_diag_values().get("backend", "").startswith("openvino:"), 5.0, proc)


def test_no_camera_info_warning_before_images_and_no_latency_from_another_clock(tiny_model, ros_subprocess_env,
                                                                               tmp_path):
    """A node waiting for its camera says nothing; frames stamped on another clock (a bag's 2011 stamps, no
    use_sim_time) are published but give no latency figure, and /diagnostics says why."""
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    with connected_node(ros_subprocess_env, tiny_model, tmp_path / "node.log", "/quiet", "qos:=reliable",
                        "camera_info_timeout_s:=0.3", "diagnostics_period_s:=0.2",
                        "log_throttle_s:=0.0") as (proc, c):
        assert c.spin_until(lambda: c.own_diag_count() >= 5, 10.0, proc)  # > 1 s of diagnostics, no image yet
        assert "camera_info_timeout" not in proc.log_path.read_text()
        assert c.latest_diag_values()["_level"] == DiagnosticStatus.OK, c.latest_diag_values()
        for i in range(8):  # 2011 stamps: 15 years off the node's clock
            ns = 1_317_000_000_000_000_000 + i * 100_000_000
            stamp = Time(sec=ns // 10**9, nanosec=ns % 10**9)
            c.send(c.image_msg(make_rgb(i), stamp), c.info_msg(stamp))
            if c.spin_until(lambda ns=ns: ns in c.got["depth"], 2.0, proc):
                break
        assert c.got["depth"], f"no output for old stamps:\n{proc.log_path.read_text()[-2000:]}"
        assert c.spin_until(lambda: "off this node's clock" in c.latest_diag_values().get("latency_clock", ""),
                            3.0, proc)
        assert c.latest_diag_values()["latency_p50_ms"] == "n/a"


def test_compressed_images_are_decoded_and_undecodable_ones_reported(tiny_model, ros_subprocess_env, tmp_path):
    from sensor_msgs.msg import CompressedImage

    # Default subscription QoS here (sensor_data, best effort): the first messages after discovery may be lost,
    # so each step re-sends (with a new stamp) until the node has answered.
    def compressed(c, data: bytes, fmt: str):
        stamp, ns = c.next_stamp()
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp, msg.header.frame_id = stamp, FRAME_ID
        return msg, c.info_msg(stamp), ns

    with connected_node(ros_subprocess_env, tiny_model, tmp_path / "node.log", "/camc", "use_compressed:=true",
                        compressed=True) as (proc, c):
        decode_error = "/camc/image/compressed skipped: could not decode"
        for _ in range(20):
            msg, info, _ = compressed(c, b"\xff\xd8 not really a jpeg", "jpeg")
            c.send(msg, info)
            if c.spin_until(lambda: decode_error in proc.log_path.read_text(), 0.5, proc):
                break
        assert decode_error in proc.log_path.read_text(), proc.log_path.read_text()
        rgb = make_rgb(8)
        png = cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()
        for _ in range(20):
            msg, info, ns = compressed(c, png, "png")
            c.send(msg, info)
            if c.spin_until(lambda ns=ns: ns in c.got["points"], 0.5, proc):
                break
        _, _, cloud_msg = c.wait_outputs(ns, proc)
        np.testing.assert_array_equal(unpack_rgb(pointcloud2_to_array(cloud_msg)["rgb"]), rgb)
        assert proc.poll() is None


@pytest.mark.parametrize("content, params, message", [
    (None, [], "cannot load model"),
    (b"not an onnx model", [], "cannot load model"),
    ("tiny", ["validity_threshold:=1.5"], "Parameter validity_threshold out of range"),  # refused by rclpy
    ("tiny", ["min_depth:=90.0"], "min_depth (90.0) must be below max_depth"),  # refused by the node's check
], ids=["missing", "broken", "validity_threshold", "min_above_max"])
def test_startup_with_unusable_model_or_parameter_exits_2_with_a_clear_message(content, params, message, tiny_model,
                                                                                 ros_subprocess_env, tmp_path):
    model = tiny_model if content == "tiny" else tmp_path / "model.onnx"
    if isinstance(content, bytes):
        model.write_bytes(content)
    cmd = [sys.executable, "-m", "monodepth_ros.depth_node", "--ros-args", "-p", f"model_path:={model}",
           *sum((["-p", p] for p in params), [])]
    res = subprocess.run(cmd, env=ros_subprocess_env, capture_output=True, text=True, timeout=60, cwd=REPO)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out  # bad input (cli_common exit codes)
    assert message in out and "cannot start" in out
    assert content == "tiny" or str(model) in out
    assert "Traceback" not in out


def test_a_relative_model_is_never_published_as_metres(ros_subprocess_env, tmp_path):
    """Default parameters (scale_policy auto) with a relative model: the node refuses to start and says what to
    set. Asked for relative depth explicitly, it starts and says the depth is not metres."""
    model = make_tiny_depth_model(tmp_path / "relative.onnx", height=H_M, width=W_M, K_model=K_MODEL,
                                  scale_policy="relative")
    cmd = [sys.executable, "-m", "monodepth_ros.depth_node", "--ros-args", "-p", f"model_path:={model}"]
    res = subprocess.run(cmd, env=ros_subprocess_env, capture_output=True, text=True, timeout=60, cwd=REPO)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out  # bad input (cli_common exit codes)
    assert "this model is relative" in out and "scale_policy:=ground_plane" in out and "Traceback" not in out
    with connected_node(ros_subprocess_env, model, tmp_path / "node.log", "/rel", "scale_policy:=relative",
                        "diagnostics_period_s:=0.2") as (proc, c):
        assert "NOT metres" in proc.log_path.read_text()
        assert c.spin_until(lambda: "NOT metres" in c.latest_diag_values().get("depth_units", ""), 5.0, proc)
        assert c.latest_diag_values()["scale_policy_applied"] == "relative"


def test_mono8_stream_gives_the_depth_of_the_grey_frame_replicated_to_rgb(ros_subprocess_env, tmp_path):
    """A grey camera (mono8) through the real node over DDS: depth, camera_info and an organised cloud come back
    for every frame, metric and finite below the horizon, and the depth is exactly what the node's backend (auto)
    gives for the grey frame replicated to 3 channels (the node's documented mono8 handling), with the grey as cloud
    colour.
    """
    from sensor_msgs.msg import Image

    from monodepth_ros.backends import create_backend

    model = make_content_depth_model(tmp_path / "content.onnx", H_M, W_M, K_MODEL, CAMERA_HEIGHT_M, REL_FACTOR)
    backend = create_backend(model)
    try:
        with connected_node(ros_subprocess_env, model, tmp_path / "node.log", "/mono", "qos:=reliable") as (proc, c):
            c.warm_up(proc)
            for i in range(3):
                grey = cv2.cvtColor(make_rgb(30 + i), cv2.COLOR_RGB2GRAY)  # a textured frame, different each time
                stamp, ns = c.next_stamp()
                msg = Image(height=H_IN, width=W_IN, encoding="mono8", is_bigendian=0, step=W_IN,
                            data=grey.tobytes())
                msg.header.stamp, msg.header.frame_id = stamp, FRAME_ID
                c.send(msg, c.info_msg(stamp))
                depth_msg, info_msg, cloud_msg = c.wait_outputs(ns, proc)

                depth = depth_array(depth_msg)
                assert depth.shape == (H_IN, W_IN) and depth_msg.header.frame_id == FRAME_ID
                assert (info_msg.width, info_msg.height) == (W_IN, H_IN)
                grey3 = np.repeat(grey[..., None], 3, axis=2)
                expected = backend.infer(grey3, out_size=(H_IN, W_IN))
                expected[~((expected >= 0.1) & (expected <= 80.0))] = np.nan  # the node's default depth range
                assert_same_with_nan(depth, expected, rtol=1e-6, atol=0)
                road = depth[-H_IN // 4:]  # metric: the road 1.65 m below, scaled by 1 / (0.5 + grey) in (0.67, 2]
                assert np.isfinite(road).all() and 0.5 < road.min() and road.max() < 80.0
                v = H_IN - 1
                flat = CAMERA_HEIGHT_M * K_IN[1, 1] / (v - K_IN[1, 2])
                # Undo the grey gain (at input resolution; the model saw a 96x32 version, hence the median): metres.
                assert np.median(depth[v] * (0.5 + grey[v] / 255.0)) == pytest.approx(flat, rel=0.05)

                cloud = pointcloud2_to_array(cloud_msg)
                assert cloud.shape == (H_IN, W_IN)
                xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
                expected_xyz = backproject(depth, K_IN)
                for k in range(3):
                    assert_same_with_nan(xyz[..., k], expected_xyz[..., k])
                np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), grey3)
            assert proc.poll() is None
    finally:
        backend.close()
