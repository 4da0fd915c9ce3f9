"""Every conversion between ROS 2 messages and NumPy, one module per message kind.

- :mod:`monodepth_ros.msgs.image`: Image / CompressedImage decode (colour pictures and depth images) and encode.
- :mod:`monodepth_ros.msgs.camera_info`: K of a CameraInfo, and the CameraInfo of a rescaled output.
- :mod:`monodepth_ros.msgs.pointcloud`: depth -> organised PointCloud2 packing, and reading a PointCloud2 back.
- :mod:`monodepth_ros.msgs.laserscan`: the LaserScan of a depth band (:mod:`monodepth_ros.scan`).
- :mod:`monodepth_ros.msgs.stamps`: header stamps, from a decoded message or straight from CDR bytes.

Messages are duck-typed (rclpy messages, rosbags' dataclasses or ``SimpleNamespace`` all work); rclpy is imported
only to build outgoing messages. Nothing is imported here, so that ``msgs.stamps`` stays free of OpenCV: import
from the submodules.
"""
