"""monodepth_ros runtime: geometry, evaluation, inference backends and the ROS 2 depth node (no torch)."""

__version__ = "0.1.0"
