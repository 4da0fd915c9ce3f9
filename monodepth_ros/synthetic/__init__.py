"""Synthetic driving world with exact ground truth (depth, poses, intrinsics, motion masks), NumPy only.

``SyntheticWorld(SynthConfig(...)).render(index)`` gives a :class:`Frame`; ``writers`` turns a drive into a
KITTI-raw-style folder or a rosbag2; ``monodepth-synth`` is the command line.
"""

from monodepth_ros.synthetic.world import Frame, SynthConfig, SyntheticWorld

__all__ = ["Frame", "SynthConfig", "SyntheticWorld"]
