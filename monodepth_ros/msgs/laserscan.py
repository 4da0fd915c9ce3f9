"""sensor_msgs/LaserScan: the message of a :class:`monodepth_ros.scan.Scan` (rclpy imported only to build it)."""

from __future__ import annotations

import array

import numpy as np

__all__ = ["make_laserscan", "laserscan_angles"]


def make_laserscan(header, scan, range_min: float, range_max: float, scan_time: float = 0.0,
                   frame_id: str = ""):
    """A sensor_msgs/LaserScan of ``scan`` (:class:`monodepth_ros.scan.Scan`).

    The stamp is ``header``'s; the frame is ``frame_id``, or ``header.frame_id`` when empty (as
    depthimage_to_laserscan's ``output_frame``). ``time_increment`` is 0 (every column is exposed at once),
    ``scan_time`` the time between scans (0 = unknown); no intensities.
    """
    from sensor_msgs.msg import LaserScan
    from std_msgs.msg import Header

    msg = LaserScan()
    msg.header = Header(stamp=header.stamp, frame_id=frame_id or header.frame_id)
    msg.angle_min = float(scan.angle_min)
    msg.angle_max = float(scan.angle_max)
    msg.angle_increment = float(scan.angle_increment)
    msg.time_increment = 0.0
    msg.scan_time = float(scan_time)
    msg.range_min = float(range_min)
    msg.range_max = float(range_max)
    ranges = array.array("f")  # the type rclpy keeps float32[] in: one copy, no per-element check
    ranges.frombytes(np.ascontiguousarray(scan.ranges, dtype="<f4").tobytes())
    msg.ranges = ranges
    return msg


def laserscan_angles(msg) -> np.ndarray:
    """The angle (radians) of each range of a LaserScan: ``angle_min + i * angle_increment``, (len(ranges),)."""
    return msg.angle_min + np.arange(len(msg.ranges), dtype=np.float64) * msg.angle_increment
