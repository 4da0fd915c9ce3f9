"""ROS 2 message type names as bags store them (``package/msg/Type``): the one place they are spelled."""

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2_TYPE = "sensor_msgs/msg/PointCloud2"

__all__ = ["IMAGE_TYPE", "COMPRESSED_TYPE", "CAMERA_INFO_TYPE", "POINTCLOUD2_TYPE"]
