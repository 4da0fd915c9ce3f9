"""Launch the monocular depth node (and optionally RViz) on a robot with a ROS 2 install.

    ros2 launch monodepth_ros depth.launch.py model_path:=/path/to/model.onnx \
        image:=/camera/image_raw camera_info:=/camera/camera_info rviz:=true

Parameters come from config/depth_node.yaml (another file: params_file:=...). The node-option arguments
(rectify:=, scale_policy:=, camera_height_m:=, validity_threshold:= ... see OVERRIDE_ARGS) override that file only
when given: left empty (the default) they set nothing, so the params file stays the one source of the defaults.

managed:=true starts the lifecycle variant (depth_node_managed) instead. It comes up *unconfigured* and does nothing
until something drives it: a lifecycle manager (e.g. nav2_lifecycle_manager with ``/<namespace>/depth_node`` in its
``node_names``, ``autostart: true`` and ``bond_timeout: 0.0``: the node makes no Nav2 bond) or by hand::

    ros2 lifecycle set /camera/depth_node configure
    ros2 lifecycle set /camera/depth_node activate

Several cameras: one launch per camera, each with its own namespace (and its topics), e.g.
``namespace:=left image:=image_raw`` and ``namespace:=right image:=image_raw``. The node (``/<namespace>/depth_node``),
its relative topics and RViz (``/<namespace>/rviz2``) live in the namespace, so two launches do not collide.

RViz (rviz:=true) loads launch/rviz/depth.rviz, whose displays name the default namespace's topics (``/camera/...``;
an .rviz file cannot hold a substitution). They follow the namespace and the topic arguments through remappings of
the RViz node, so the panel shows the ``/camera/...`` names while it receives ``/<namespace>/...``; the fixed frame
is the file's camera_optical_frame unless fixed_frame:= names another. The LaserScan display (``scan``) is disabled
in the file: enable it once scan_frame_id names a frame with x forward that TF knows (an optical frame shows the
scan in the image plane).

Fast DDS profile: config/fastdds.xml (32 MiB shared-memory segments for the image + point cloud stream) is selected
for every process started here through the variable(s) this ROS 2's Fast DDS reads (monodepth_ros.ros_compat:
FASTDDS_DEFAULT_PROFILES_FILE on 3.x, and FASTRTPS_DEFAULT_PROFILES_FILE too on 2.x = Humble, Jazzy), unless the
user already set either variable: then their profile is kept.
"""

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from monodepth_ros import ros_compat
from monodepth_ros.node_params import PARAM_BY_NAME, coerce_value

# Node options with a launch argument of their own; empty (the default) = the params file's value.
OVERRIDE_ARGS = ("rectify", "scale_policy", "fixed_scale", "camera_height_m", "camera_pitch_deg", "camera_roll_deg",
                 "scan_frame_id", "output_resolution", "decimation", "max_depth", "validity_threshold", "backend",
                 "threads", "qos", "use_compressed")
# Topics the shipped depth.rviz displays (default namespace "camera") -> the launch argument naming each.
RVIZ_TOPICS = {"/camera/points": "points", "/camera/depth/colored": "depth_colored", "/camera/image_raw": "image",
               "/camera/scan": "scan"}


def parse_bool(name, text):
    """``text`` as launch's IfCondition reads it (true/false/1/0, any case); ValueError naming ``name`` else."""
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError(f"launch argument {name}:={text!r} must be true or false")


def executable_for(managed):
    """The console script to start: the lifecycle node when ``managed``."""
    return "depth_node_managed" if managed else "depth_node"


def given_overrides(values):
    """``{name: text}`` of the override arguments -> ``{name: value}`` of the non-empty ones, typed like the
    parameter (YAML, as ``-p`` reads it; string parameters stay text). ValueError names a value of the wrong type."""
    out = {}
    for name, text in values.items():
        if text.strip() == "":
            continue
        if isinstance(PARAM_BY_NAME[name].default, str):
            out[name] = text
        else:
            out[name] = coerce_value(name, yaml.safe_load(text))
    return out


def fast_dds_profile_env(environ, profile_path, major=None):
    """The profile variables to set for ``profile_path``: none when ``environ`` already names a profile in either
    variable (the user's choice wins), else what ros_compat.profile_env gives for this Fast DDS (``major``)."""
    if any(environ.get(var) for var in ros_compat.PROFILE_VARS):
        return {}
    return ros_compat.profile_env(profile_path, major)


def resolve_topic(namespace, topic):
    """``topic`` as a node in ``namespace`` resolves it (absolute names unchanged)."""
    if topic.startswith("/"):
        return topic
    ns = namespace.strip("/")
    return f"/{ns}/{topic}" if ns else f"/{topic}"


def rviz_remaps(namespace, topic_args):
    """Remappings that point depth.rviz's ``/camera/...`` displays at this launch's topics (``topic_args``: launch
    argument -> topic as given, relative to ``namespace`` unless absolute); identical pairs left out."""
    remaps = []
    for shown, arg in RVIZ_TOPICS.items():
        actual = resolve_topic(namespace, topic_args[arg])
        if actual != shown:
            remaps.append((shown, actual))
    return remaps


def launch_setup(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    actions = []
    profile = PathJoinSubstitution([FindPackageShare("monodepth_ros"), "config", "fastdds.xml"]).perform(context)
    environ = context.environment  # the launch's environment: the shell's, plus what an including launch set
    profile_env = fast_dds_profile_env(environ, profile)
    if profile_env:
        actions += [SetEnvironmentVariable(name, value) for name, value in profile_env.items()]
    else:
        kept = ", ".join(f"{v}={environ[v]}" for v in ros_compat.PROFILE_VARS if environ.get(v))
        actions.append(LogInfo(msg=f"Fast DDS profile set by the user, kept: {kept}"))

    # Later entries win: the params file, then model_path, then only the override arguments that were given.
    parameters = [LaunchConfiguration("params_file"), {"model_path": LaunchConfiguration("model_path")}]
    overrides = given_overrides({name: arg(name) for name in OVERRIDE_ARGS})
    if overrides:
        parameters.append({name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
                           for name, value in overrides.items()})
    depth_node = Node(
        package="monodepth_ros",
        executable=executable_for(parse_bool("managed", arg("managed"))),
        name="depth_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=parameters,
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
    actions.append(depth_node)
    if parse_bool("rviz", arg("rviz")):
        rviz_args = ["-d", PathJoinSubstitution([FindPackageShare("monodepth_ros"), "launch", "rviz", "depth.rviz"])]
        if arg("fixed_frame"):
            rviz_args += ["-f", arg("fixed_frame")]
        rviz = Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            namespace=LaunchConfiguration("namespace"),
            arguments=rviz_args,
            remappings=rviz_remaps(arg("namespace"), {a: arg(a) for a in set(RVIZ_TOPICS.values())}),
        )
        actions.append(rviz)
    return actions


def generate_launch_description():
    share = FindPackageShare("monodepth_ros")
    args = [
        DeclareLaunchArgument("model_path", description="Exported depth model (.onnx or .engine)"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "depth_node.yaml"]),
                              description="Parameter file of depth_node"),
        DeclareLaunchArgument("managed", default_value="false",
                              description="true: the lifecycle node depth_node_managed (configure + activate it "
                                          "with a lifecycle manager or `ros2 lifecycle set`)"),
        DeclareLaunchArgument("namespace", default_value="camera",
                              description="Namespace of the node, its relative topics and RViz: one per camera"),
        DeclareLaunchArgument("image", default_value="image_raw", description="Input image topic"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="Input camera_info topic"),
        DeclareLaunchArgument("depth", default_value="depth", description="Output depth image topic"),
        DeclareLaunchArgument("depth_camera_info", default_value="depth/camera_info",
                              description="Output camera_info of the depth image"),
        DeclareLaunchArgument("points", default_value="points", description="Output point cloud topic"),
        DeclareLaunchArgument("depth_colored", default_value="depth/colored", description="Output colour depth"),
        DeclareLaunchArgument("depth_confidence", default_value="depth/confidence",
                              description="Output confidence image (mono8: 0 = NaN, else the model's validity "
                                          "1..255, 255 without a validity output)"),
        DeclareLaunchArgument("scan", default_value="scan",
                              description="Output LaserScan topic (see scan_frame_id)"),
        *[DeclareLaunchArgument(name, default_value="",
                                description=f"Overrides the params file's {name} when given: "
                                            f"{PARAM_BY_NAME[name].description}")
          for name in OVERRIDE_ARGS],
        DeclareLaunchArgument("rviz", default_value="false", description="Also start RViz with launch/rviz/depth.rviz"),
        DeclareLaunchArgument("fixed_frame", default_value="",
                              description="RViz fixed frame; empty = depth.rviz's camera_optical_frame"),
    ]
    return LaunchDescription([*args, OpaqueFunction(function=launch_setup)])
