"""Launch the monocular depth node (and optionally RViz) on a robot with a ROS 2 install.

    ros2 launch monodepth_ros depth.launch.py model_path:=/path/to/model.onnx \
        image:=/camera/image_raw camera_info:=/camera/camera_info rviz:=true

Parameters come from config/depth_node.yaml (override with params_file:=...); topics are remapped by the
launch arguments below; the Fast DDS profile shipped in config/fastdds.xml (32 MiB shared-memory segments for
the image + point cloud stream) is selected for every process started here.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("monodepth_ros")
    args = [
        DeclareLaunchArgument("model_path", description="Exported depth model (.onnx or .engine)"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "depth_node.yaml"]),
                              description="Parameter file of depth_node"),
        DeclareLaunchArgument("namespace", default_value="camera", description="Namespace of the node"),
        DeclareLaunchArgument("image", default_value="image_raw", description="Input image topic"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="Input camera_info topic"),
        DeclareLaunchArgument("depth", default_value="depth", description="Output depth image topic"),
        DeclareLaunchArgument("depth_camera_info", default_value="depth/camera_info",
                              description="Output camera_info of the depth image"),
        DeclareLaunchArgument("points", default_value="points", description="Output point cloud topic"),
        DeclareLaunchArgument("depth_colored", default_value="depth/colored", description="Output colour depth"),
        DeclareLaunchArgument("depth_confidence", default_value="depth/confidence",
                              description="Output validity image (mono8: 255 = depth published, 0 = NaN)"),
        DeclareLaunchArgument("scan", default_value="scan",
                              description="Output LaserScan topic (set scan_frame_id in the params file)"),
        DeclareLaunchArgument("rviz", default_value="false", description="Also start RViz with launch/rviz/depth.rviz"),
    ]
    depth_node = Node(
        package="monodepth_ros",
        executable="depth_node",
        name="depth_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), {"model_path": LaunchConfiguration("model_path")}],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("camera_info", LaunchConfiguration("camera_info")),
            ("depth", LaunchConfiguration("depth")),
            ("depth/camera_info", LaunchConfiguration("depth_camera_info")),
            ("points", LaunchConfiguration("points")),
            ("depth/colored", LaunchConfiguration("depth_colored")),
            ("depth/confidence", LaunchConfiguration("depth_confidence")),
            ("scan", LaunchConfiguration("scan")),
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "launch", "rviz", "depth.rviz"])],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    fastdds_profile = SetEnvironmentVariable(
        "FASTDDS_DEFAULT_PROFILES_FILE", PathJoinSubstitution([share, "config", "fastdds.xml"])
    )
    return LaunchDescription([fastdds_profile, *args, depth_node, rviz])
