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
:mod:`monodepth_ros.evaluation.lidar_gt`, whose pixels hold camera z by default and the lidar's forward distance, as
``monodepth-eval``'s KITTI GT, with ``--lidar-depth lidar_forward``) with :mod:`monodepth_ros.evaluation.metrics`
(per-image median scaling for relative models), write an MCAP output bag (input image + camera_info, depth,
depth/camera_info, points, depth/colored, GT; stamps = input stamps) for RViz/Foxglove, ``report.json``,
``report.png`` (per-frame plots), ``panels.png`` and ``report.html``, and print the table. Bad bags and missing
topics exit with code 2 and a one-line message.
"""

from monodepth_ros.replay.config import (
    NodeFailure,
    ReplayConfig,
    ReplayError,
    default_model_path,
    output_topics,
)
from monodepth_ros.replay.run import run_replay

__all__ = ["ReplayConfig", "ReplayError", "NodeFailure", "run_replay", "default_model_path", "output_topics", "main"]


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``monodepth-replay`` (:func:`monodepth_ros.replay.cli.main`)."""
    from monodepth_ros.replay.cli import main as cli_main

    return cli_main(argv)

