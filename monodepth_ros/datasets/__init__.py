"""Readers of dataset layouts on disk, shared by the evaluation and the trainer's sources.

- :mod:`monodepth_ros.datasets.kitti`: the KITTI raw layout (drives, calibration, split files, depth PNGs).
- :mod:`monodepth_ros.datasets.kitti_odometry`: the KITTI odometry layout (sequences, calib.txt, times, GT poses).

Nothing is imported here: import from the submodules.
"""
