"""The depth -> LaserScan conversion (monodepth_ros.scan, msgs.laserscan): depthimage_to_laserscan's band, ranges,
angles and bins, checked against analytic scenes (a wall, a box in front of it) and a plain loop that follows
depthimage_to_laserscan's C++ line by line; the scan parameters' validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monodepth_ros.node_params import defaults, parse_overrides, validate_parameter
from monodepth_ros.pipeline import CameraFrame, FrameParams, frame_scan, process_frame
from monodepth_ros.scale_policy import FixedScale
from monodepth_ros.scan import depth_to_scan, scan_angles, scan_band

pytestmark = pytest.mark.rosdistro  # ROS-facing: `make test-jazzy` runs this module on ROS 2 Jazzy too

H, W = 48, 160
FX, FY, CX, CY = 92.8, 92.16, 80.0, 24.0
K = np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])


def column_rays() -> np.ndarray:
    return (np.arange(W) - CX) / FX  # x / z of each column


def bin_bounds(scan) -> tuple[np.ndarray, np.ndarray]:
    lo = scan.angle_min + np.arange(W) * scan.angle_increment
    return lo, lo + scan.angle_increment


def assert_plane_ranges(scan, Z: float, bins: np.ndarray) -> None:
    """The ranges of ``bins`` are those of a plane facing the camera at depth Z: a bin holds the nearest column
    whose angle lies in [lo, hi), so its range lies between Z / cos(lo) and Z / cos(hi)."""
    lo, hi = bin_bounds(scan)
    r_lo, r_hi = Z / np.cos(lo[bins]), Z / np.cos(hi[bins])
    assert np.all(scan.ranges[bins] >= np.minimum(r_lo, r_hi) * (1 - 1e-6))
    assert np.all(scan.ranges[bins] <= np.maximum(r_lo, r_hi) * (1 + 1e-6))


def reference_scan(depth, K, scan_height, range_min, range_max):
    """depthimage_to_laserscan's convert_msg / convert<float> / use_point, one pixel at a time (float64)."""
    fx, cx, cy = K[0, 0], K[0, 2], K[1, 2]
    h, w = depth.shape
    left, right = abs(cx) / fx, abs(w - 1 - cx) / fx  # angle_between_rays(left/right edge, centre) via acos
    angle_max = math.acos(1.0 / math.sqrt(1.0 + left * left))
    angle_min = -math.acos(1.0 / math.sqrt(1.0 + right * right))
    inc = (angle_max - angle_min) / (w - 1)
    ranges = [math.nan] * w
    offset = int(cy - scan_height / 2.0)
    for v in range(offset, offset + scan_height):
        for u in range(w):
            d = float(depth[v, u])
            r = d
            th = -math.atan2((u - cx) / fx, 1.0)
            index = int((th - angle_min) / inc)
            if math.isfinite(d):
                x = (u - cx) * d / fx
                r = math.sqrt(x * x + d * d)
            old = ranges[index]
            if not math.isfinite(r):
                continue  # NaN never replaces; this depth has no inf (the node publishes NaN for invalid)
            if not (range_min <= r <= range_max):
                continue
            if not math.isfinite(old) or r < old:
                ranges[index] = r
    return np.array(ranges), angle_min, angle_max, inc


def test_angles_follow_depthimage_to_laserscan_left_edge_is_angle_max():
    angle_min, angle_max, inc = scan_angles(K, W)
    assert angle_max == pytest.approx(math.atan(CX / FX))  # u = 0, left of the image: counter-clockwise, positive
    assert angle_min == pytest.approx(-math.atan((W - 1 - CX) / FX))  # u = W-1, right: negative
    assert inc == pytest.approx((angle_max - angle_min) / (W - 1))


def test_a_wall_gives_its_distance_over_the_cosine_of_each_bin_angle():
    Z = 4.0  # a wall facing the camera, 4 m ahead: every pixel's depth is 4
    scan = depth_to_scan(np.full((H, W), Z, np.float32), K, scan_height=3, range_min=0.1, range_max=80.0)
    lo, hi = bin_bounds(scan)
    hit = np.isfinite(scan.ranges)
    assert_plane_ranges(scan, Z, hit)
    # The last bin is the left image edge (u = 0, at angle_max); the first holds the right edge (u = W-1) and its
    # neighbour (columns are denser than bins there), the nearer of the two.
    assert scan.ranges[-1] == pytest.approx(Z * math.hypot(1.0, CX / FX), rel=1e-6)
    assert scan.ranges[0] == pytest.approx(Z * math.hypot(1.0, (W - 2 - CX) / FX), rel=1e-6)
    # Bins are equal in angle, columns are not: near the centre a bin is narrower than a column, so some bins
    # see no column (NaN), as in depthimage_to_laserscan; at the edges every bin is hit.
    assert hit.sum() < W and hit[:20].all() and hit[-20:].all()
    empty_angles = (lo + 0.5 * scan.angle_increment)[~hit]
    assert np.abs(empty_angles).max() < 0.5


def test_a_box_in_front_of_the_wall_shows_at_its_angles_on_the_right():
    Z_wall, Z_box = 10.0, 2.0
    x0, x1 = 0.3, 1.1  # box face at 2 m, 0.3..1.1 m to the right of the optical axis (x right in the image)
    ray = column_rays()
    on_box = (ray * Z_box >= x0) & (ray * Z_box <= x1)
    depth = np.full((H, W), Z_wall, np.float32)
    depth[20:30, on_box] = Z_box  # rows 20..29 cover the band around cy = 24
    scan = depth_to_scan(depth, K, scan_height=5)
    lo, hi = bin_bounds(scan)
    hit = np.isfinite(scan.ranges)
    # The box seen from the camera: right of the axis, so negative angles from -atan(x1/Z) to -atan(x0/Z).
    box_lo, box_hi = -math.atan(x1 / Z_box), -math.atan(x0 / Z_box)
    inside = (lo >= box_lo) & (hi <= box_hi)
    outside = (hi < box_lo) | (lo > box_hi)
    assert_plane_ranges(scan, Z_box, inside & hit)
    assert_plane_ranges(scan, Z_wall, outside & hit)
    assert (inside & hit).sum() >= 10
    assert np.all(lo[inside] < 0)  # right of the image is the low-index, negative-angle end of the scan


def test_the_band_is_centred_on_cy_and_nothing_outside_it_counts():
    assert scan_band(24.0, 48, 1) == (23, 24)  # int(24 - 0.5) = 23, as the C++ cast
    assert scan_band(24.0, 48, 9) == (19, 28)
    assert scan_band(23.5, 48, 1) == (23, 24)
    assert scan_band(10.0, 48, 4) == (8, 12)
    depth = np.full((H, W), 10.0, np.float32)
    depth[18, 70:90] = 1.0  # one row above a 9-row band (19..27): not in the scan
    depth[28, 70:90] = 1.0  # one row below
    assert np.nanmin(depth_to_scan(depth, K, scan_height=9).ranges) > 9.9
    depth[27, 100:110] = 1.5  # the band's last row: in the scan
    scan = depth_to_scan(depth, K, scan_height=9)
    assert np.nanmin(scan.ranges) == pytest.approx(1.5 * math.hypot(1, (100 - CX) / FX), rel=0.05)
    # The band follows cy of the depth's own K, not the image centre.
    K_low = K.copy()
    K_low[1, 2] = 18.5  # band of 1 row = row 18
    assert np.nanmin(depth_to_scan(depth, K_low, scan_height=1).ranges) < 1.1


@pytest.mark.parametrize("scan_height, cy", [(60, 24.0), (20, 5.0), (20, 44.0)])
def test_a_band_that_leaves_the_image_is_refused(scan_height, cy):
    K2 = K.copy()
    K2[1, 2] = cy
    with pytest.raises(ValueError, match="scan_height"):
        depth_to_scan(np.ones((H, W), np.float32), K2, scan_height=scan_height)


def test_nan_and_out_of_range_depth_give_no_range_and_a_valid_value_wins():
    depth = np.full((H, W), np.nan, np.float32)
    assert np.isnan(depth_to_scan(depth, K, scan_height=3).ranges).all()  # no depth: no measurement, not inf
    depth[23, :] = 0.05  # nearer than range_min
    depth[24, :] = 100.0  # farther than range_max
    depth[22, :] = np.inf  # never published by the node; no measurement if it were
    assert np.isnan(depth_to_scan(depth, K, 3, range_min=0.1, range_max=80.0).ranges).all()
    depth[24, 60:100] = 5.0  # a valid pixel in the same columns as invalid ones: it is the range
    scan = depth_to_scan(depth, K, 3, range_min=0.1, range_max=80.0)
    ray = column_rays()
    bins_hit = np.flatnonzero(np.isfinite(scan.ranges))
    assert bins_hit.size > 0
    np.testing.assert_allclose(np.sort(scan.ranges[bins_hit]),
                               np.sort(5.0 * np.hypot(1, ray[60:100]))[: bins_hit.size], rtol=0.02)
    # range_max counts the x-z distance, not the depth: at the image edge a 79 m depth is beyond 80 m.
    edge = np.full((H, W), 79.0, np.float32)
    scan = depth_to_scan(edge, K, 1, range_min=0.1, range_max=80.0)
    assert np.isnan(scan.ranges[0]) and np.isnan(scan.ranges[-1])
    assert np.nanmin(scan.ranges) == pytest.approx(79.0, rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_a_pixel_loop_that_follows_depthimage_to_laserscan(seed):
    rng = np.random.default_rng(seed)
    w = 97
    Kr = np.array([[60.0 + 40 * rng.random(), 0, 30 + 40 * rng.random()], [0, 70.0, 20.3], [0, 0, 1.0]])
    depth = rng.uniform(0.05, 30.0, (40, w)).astype(np.float32)
    depth[rng.random((40, w)) < 0.3] = np.nan
    scan = depth_to_scan(depth, Kr, scan_height=7, range_min=0.5, range_max=20.0)
    ref, amin, amax, inc = reference_scan(depth, Kr, 7, 0.5, 20.0)
    assert (scan.angle_min, scan.angle_max, scan.angle_increment) == pytest.approx((amin, amax, inc), rel=1e-12)
    np.testing.assert_array_equal(np.isnan(scan.ranges), np.isnan(ref))
    np.testing.assert_allclose(scan.ranges[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-6)


def test_frame_scan_uses_the_published_depth_and_its_intrinsics():
    h, w = 24, 80  # model resolution: the published depth is this size under output_resolution model
    disp = np.full((h, w), 1.0 / 6.0, np.float32)  # 6 m everywhere
    camera = CameraFrame(np.zeros((H, W, 3), np.uint8), K, (W, H))
    params = FrameParams(output_resolution="model", scan_height=3, scan_range_max=50.0)
    out = process_frame(camera, disp, params, FixedScale(1.0))
    scan = frame_scan(out, params)
    assert scan.ranges.shape == (w,)
    assert scan.angle_max == pytest.approx(math.atan(out.K[0, 2] / out.K[0, 0]))
    assert np.nanmin(scan.ranges) == pytest.approx(6.0, rel=1e-3)
    params = FrameParams(scan_range_max=5.0)  # all beyond: nothing
    assert np.isnan(frame_scan(process_frame(camera, disp, params, FixedScale(1.0)), params).ranges).all()


def test_laserscan_message_carries_the_scan_in_the_chosen_frame():
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from monodepth_ros.msgs.laserscan import laserscan_angles, make_laserscan

    scan = depth_to_scan(np.full((H, W), 3.0, np.float32), K, 1, 0.2, 40.0)
    header = Header(stamp=Time(sec=5, nanosec=7), frame_id="camera_optical_frame")
    msg = make_laserscan(header, scan, 0.2, 40.0, scan_time=0.1, frame_id="camera_laser")
    assert msg.header.frame_id == "camera_laser" and msg.header.stamp.sec == 5 and header.frame_id != "camera_laser"
    assert (msg.range_min, msg.range_max, msg.time_increment) == pytest.approx((0.2, 40.0, 0.0))
    assert msg.scan_time == pytest.approx(0.1) and len(msg.intensities) == 0
    np.testing.assert_array_equal(np.isnan(np.asarray(msg.ranges)), np.isnan(scan.ranges))
    np.testing.assert_allclose(np.asarray(msg.ranges)[np.isfinite(scan.ranges)],
                               scan.ranges[np.isfinite(scan.ranges)])
    angles = laserscan_angles(msg)
    assert angles[0] == pytest.approx(scan.angle_min, abs=1e-6) and angles[-1] == pytest.approx(msg.angle_max, abs=1e-5)
    assert make_laserscan(header, scan, 0.2, 40.0).header.frame_id == "camera_optical_frame"  # empty = camera's


def test_scan_parameters_are_validated():
    p = defaults()
    assert (p["scan_height"], p["scan_range_min"], p["scan_range_max"], p["scan_frame_id"]) == (1, 0.1, 80.0, "")
    assert "scan_range_min" in validate_parameter("scan_range_min", 90.0, p)
    assert "scan_range_max" in validate_parameter("scan_range_max", 0.05, p)
    assert "scan_height" in validate_parameter("scan_height", 0, p)
    assert "scan_range_min" in validate_parameter("scan_range_min", -1.0, p)
    assert validate_parameter("scan_frame_id", "camera_laser", p) is None
    assert parse_overrides(["scan_height:=9", "scan_range_max:=20"])["scan_range_max"] == 20.0
    with pytest.raises(ValueError, match="scan_height must be int"):
        parse_overrides(["scan_height:=2.5"])
    with pytest.raises(ValueError, match="must be below"):
        parse_overrides(["scan_range_min:=30", "scan_range_max:=20"])
