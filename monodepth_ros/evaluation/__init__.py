"""Offline evaluation, comparable with the papers.

- :mod:`monodepth_ros.evaluation.evaluate`: ``monodepth-eval`` on a KITTI-layout split.
- :mod:`monodepth_ros.evaluation.metrics`: the KITTI protocol's 7 metrics, crops, median scaling.
- :mod:`monodepth_ros.evaluation.kitti_gt`: KITTI ground-truth depth (LiDAR projection, depth-benchmark PNGs).
- :mod:`monodepth_ros.evaluation.lidar_gt`: sparse depth GT from any lidar PointCloud2 and its extrinsics.
- :mod:`monodepth_ros.evaluation.pose_eval`: absolute trajectory error on short snippets.
- :mod:`monodepth_ros.evaluation.priors`: depth maps that never look at the image (the flat-road baseline).

Nothing is imported here: import from the submodules.
"""
