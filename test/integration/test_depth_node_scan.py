"""The depth node's robot outputs over real DDS (loopback): the LaserScan on ``scan`` (only for listeners, metres
only) and distorted camera input (rectified; the published camera_info is the rectified one).

One node process serves the module (namespace /scn, reliable QoS); the test client and helpers are
test_depth_node's.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_depth_node import (
    CAMERA_HEIGHT_M,
    FRAME_ID,
    H_IN,
    H_M,
    K_IN,
    K_MODEL,
    REL_FACTOR,
    W_IN,
    W_M,
    assert_same_with_nan,
    connected_node,
    depth_array,
    make_rgb,
)
from tiny_depth_model import make_tiny_depth_model

from monodepth_ros.geometry import backproject
from monodepth_ros.msgs.laserscan import laserscan_angles
from monodepth_ros.msgs.pointcloud import pointcloud2_to_array
from monodepth_ros.scan import depth_to_scan

pytestmark = [pytest.mark.ros, pytest.mark.rosdistro]  # rosdistro: `make test-jazzy` runs it on Jazzy too

NS = "/scn"
SCAN_HEIGHT, RANGE_MIN, RANGE_MAX = 9, 0.1, 60.0
SCAN_FRAME = "camera_laser"


@pytest.fixture(scope="module")
def node(ros_subprocess_env, tmp_path_factory):
    model = make_tiny_depth_model(tmp_path_factory.mktemp("model") / "tiny.onnx", height=H_M, width=W_M,
                                  K_model=K_MODEL, camera_height_m=CAMERA_HEIGHT_M, rel_factor=REL_FACTOR)
    log_path = tmp_path_factory.mktemp("log") / "node.log"
    with connected_node(ros_subprocess_env, model, log_path, NS, "qos:=reliable", "log_throttle_s:=0.0",
                        "diagnostics_period_s:=0.2", f"scan_height:={SCAN_HEIGHT}", f"scan_range_max:={RANGE_MAX}",
                        f"scan_frame_id:={SCAN_FRAME}") as (proc, c):
        c.warm_up(proc)
        yield proc, c


def subscribe_scan(c) -> bool:
    """Subscribe the client to the node's scan (once); True if this call created the subscription."""
    if "scan" in c.got:
        return False
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import LaserScan

    c.got["scan"] = {}
    c.node.create_subscription(LaserScan, f"{NS}/scan", c._store("scan"),
                               QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    return True


def send_until_scan(c, proc, first: int, tries: int = 15) -> int:
    """Send good frames until one's scan comes back (the node sees the new listener after discovery)."""
    for i in range(tries):
        ns, _ = c.send_good(first + i)
        if c.spin_until(lambda ns=ns: ns in c.got["scan"] and ns in c.got["depth"], 2.0, proc):
            return ns
    raise AssertionError(f"no scan for {tries} frames; node log:\n{proc.log_path.read_text()[-3000:]}")


def diag_after_frames(c, proc, n_frames: int) -> dict:
    assert c.spin_until(lambda: int(c.latest_diag_values().get("frames_out", "0")) >= n_frames, 5.0, proc)
    return c.latest_diag_values()


def test_scan_is_built_only_for_listeners_and_is_the_band_of_the_published_depth(node):
    proc, c = node
    if "scan" not in c.got:  # nobody listens yet: frames are served, no scan is computed
        for i in range(3):
            ns, _ = c.send_good(40 + i)
            c.wait_outputs(ns, proc, keys=("depth",))
        # A /diagnostics message sent after every frame the client has received: no scan was built for them.
        assert diag_after_frames(c, proc, len(c.got["depth"]))["scans_out"] == "0"
    subscribe_scan(c)
    ns = send_until_scan(c, proc, 50)
    scan_msg, depth_msg, info_msg = c.got["scan"][ns], c.got["depth"][ns], c.got["info"][ns]
    assert scan_msg.header.frame_id == SCAN_FRAME and scan_msg.header.stamp == depth_msg.header.stamp
    assert (scan_msg.range_min, scan_msg.range_max, scan_msg.time_increment) == pytest.approx(
        (RANGE_MIN, RANGE_MAX, 0.0))
    assert scan_msg.scan_time >= 0.0 and len(scan_msg.ranges) == W_IN
    depth, K = depth_array(depth_msg), np.array(info_msg.k).reshape(3, 3)
    ranges = np.asarray(scan_msg.ranges, dtype=np.float32)
    # The wiring: the scan of the published depth with the published K and the node's scan parameters.
    expected = depth_to_scan(depth, K, SCAN_HEIGHT, RANGE_MIN, RANGE_MAX)
    assert (scan_msg.angle_min, scan_msg.angle_max, scan_msg.angle_increment) == pytest.approx(
        (expected.angle_min, expected.angle_max, expected.angle_increment), rel=1e-6)
    assert_same_with_nan(ranges, expected.ranges)
    # The geometry, independently: the road's depth is constant along a row, so the band's nearest valid row
    # (the lowest finite one) gives every direction's range, z / cos(angle), where that is within range_max.
    top = int(K[1, 2] - SCAN_HEIGHT / 2)
    band = depth[top:top + SCAN_HEIGHT]
    z = band[np.isfinite(band).all(axis=1)][-1, 0]
    angles = laserscan_angles(scan_msg)
    inc = scan_msg.angle_increment
    r_lo, r_hi = z / np.cos(angles), z / np.cos(angles + inc)  # bin i spans [angle_i, angle_i + inc)
    hit = np.isfinite(ranges)
    assert hit.sum() > W_IN // 2
    assert np.all(ranges[hit] >= np.minimum(r_lo, r_hi)[hit] * (1 - 1e-5))
    assert np.all(ranges[hit] <= np.maximum(r_lo, r_hi)[hit] * (1 + 1e-5))
    beyond = z / np.cos(np.abs(angles) - inc) > RANGE_MAX  # every direction in the bin is beyond range_max
    assert beyond.any() and np.isnan(ranges[beyond]).all()
    assert c.spin_until(lambda: int(c.latest_diag_values().get("scans_out", "0")) >= 1, 3.0, proc)


def test_a_relative_scale_publishes_depth_but_no_scan(node):
    proc, c = node
    subscribe_scan(c)
    send_until_scan(c, proc, 60)
    assert all(r.successful for r in c.set_params(scale_policy="relative"))
    try:
        for i in range(3):
            ns, _ = c.send_good(70 + i)
            c.wait_outputs(ns, proc, keys=("depth", "info"))
            c.spin_until(lambda: False, 0.2, proc)  # a scan, if one were sent, would arrive by now
            assert ns not in c.got["scan"]
        assert "no scan published: scale_policy relative" in proc.log_path.read_text()  # said once per node
    finally:
        c.set_params(scale_policy="auto")
    send_until_scan(c, proc, 80)


def _distorted_info(c, stamp, model="plumb_bob", d=(-0.2, 0.05, 0.001, -0.001, 0.0)):
    msg = c.info_msg(stamp)
    msg.distortion_model, msg.d = model, [float(v) for v in d]
    P = np.zeros((3, 4))
    P[:3, :3] = K_IN
    P[0, 0] *= 0.9  # the rectified camera's focal lengths differ from the raw K (as a calibration's alpha does)
    P[1, 1] *= 0.9
    P[0, 2] += 1.5
    msg.p = [float(v) for v in P.ravel()]
    return msg, P


def test_distorted_input_is_rectified_and_published_in_the_rectified_geometry(node):
    proc, c = node
    stamp, ns = c.next_stamp()
    info, P = _distorted_info(c, stamp)
    c.send(c.image_msg(make_rgb(90), stamp), info)
    depth_msg, info_msg, cloud_msg = c.wait_outputs(ns, proc)
    assert (info_msg.width, info_msg.height) == (W_IN, H_IN) and info_msg.header.frame_id == FRAME_ID
    assert list(info_msg.d) == [0.0] * len(info_msg.d) and info_msg.distortion_model == "plumb_bob"
    np.testing.assert_allclose(np.array(info_msg.k).reshape(3, 3), P[:, :3])
    np.testing.assert_array_equal(np.array(info_msg.r).reshape(3, 3), np.eye(3))
    np.testing.assert_allclose(np.array(info_msg.p).reshape(3, 4), P)
    depth = depth_array(depth_msg)
    assert depth.shape == (H_IN, W_IN) and np.isfinite(depth).any()
    cloud = pointcloud2_to_array(cloud_msg)  # the cloud is back-projected with the rectified K
    expected = backproject(depth, P[:, :3])
    for i, name in enumerate("xyz"):
        assert_same_with_nan(cloud[name], expected[..., i])
    assert c.spin_until(lambda: int(c.latest_diag_values().get("frames_rectified", "0")) >= 1, 3.0, proc)
    # rectify off: the input is taken as already rectified (image_rect): same camera_info out, no remap.
    assert all(r.successful for r in c.set_params(rectify="off"))
    try:
        rectified_before = int(c.latest_diag_values()["frames_rectified"])
        stamp, ns = c.next_stamp()
        c.send(c.image_msg(make_rgb(93), stamp), _distorted_info(c, stamp)[0])
        _, info_msg = c.wait_outputs(ns, proc, keys=("depth", "info"))
        np.testing.assert_allclose(np.array(info_msg.k).reshape(3, 3), P[:, :3])
        assert list(info_msg.d) == [0.0] * len(info_msg.d)
        assert "rectify:=off and camera_info has plumb_bob" in proc.log_path.read_text()
        assert c.spin_until(lambda: int(c.latest_diag_values()["frames_out"]) >= len(c.got["depth"]), 3.0, proc)
        assert int(c.latest_diag_values()["frames_rectified"]) == rectified_before
    finally:
        c.set_params(rectify="auto")


def test_an_unknown_distortion_model_drops_the_frame_and_the_node_keeps_serving(node):
    proc, c = node
    log_offset = len(proc.log_path.read_text())
    stamp, ns = c.next_stamp()
    info, _ = _distorted_info(c, stamp, model="mystery_lens")
    c.send(c.image_msg(make_rgb(91), stamp), info)
    assert c.spin_until(lambda: "'mystery_lens'" in proc.log_path.read_text()[log_offset:], 5.0, proc), \
        proc.log_path.read_text()[log_offset:]
    assert ns not in c.got["depth"]
    ns, _ = c.send_good(92)
    c.wait_outputs(ns, proc)
    assert proc.poll() is None
    assert c.spin_until(lambda: int(c.latest_diag_values().get("problems.camera_info", "0")) > 0, 3.0)
