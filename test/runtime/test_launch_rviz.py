"""RViz follows the launch arguments: launch/depth.launch.py's launch_setup runs against stand-ins for the
launch/launch_ros classes (which are not installable here) and the RViz node it returns is checked: its fixed
frame is ``fixed_frame:=`` when given (else depth.rviz's), and its displays' ``/camera/...`` topics are remapped to
the namespace and topic arguments of this launch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "depth.launch.py"
RVIZ = REPO / "launch" / "rviz" / "depth.rviz"
LAUNCH_PACKAGES = ("launch", "launch_ros")


class _Context:
    def __init__(self, args: dict[str, str]):
        self.launch_configurations, self.environment = args, {}


class _Perform:
    """A substitution that performs to a fixed text, or to a launch argument's value."""

    def __init__(self, text=None, arg=None):
        self.text, self.arg = text, arg

    def perform(self, context):
        return context.launch_configurations[self.arg] if self.arg else self.text


class _Action:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _path_join(parts):
    return _Perform(text="/".join(p.text if isinstance(p, _Perform) else str(p) for p in parts))


FAKES = {
    "LaunchConfiguration": lambda name: _Perform(arg=name),
    "PathJoinSubstitution": _path_join,
    "FindPackageShare": lambda pkg: _Perform(text=f"/opt/share/{pkg}"),
    "Node": _Action, "SetEnvironmentVariable": _Action, "LogInfo": _Action, "ParameterValue": _Action,
    "DeclareLaunchArgument": _Action, "OpaqueFunction": _Action, "LaunchDescription": _Action,
}


@pytest.fixture(scope="module")
def launch_module() -> dict:
    tree = ast.parse(LAUNCH.read_text())
    body = [n for n in tree.body if not (isinstance(n, ast.ImportFrom) and n.module.split(".")[0] in LAUNCH_PACKAGES)]
    namespace: dict = {"__name__": "depth_launch_under_test", **FAKES}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(LAUNCH), "exec"), namespace)  # noqa: S102
    return namespace


def _defaults(module) -> dict[str, str]:
    declared = module["generate_launch_description"]().args[0][:-1]  # the DeclareLaunchArgument stand-ins
    out = {}
    for d in declared:
        default = d.kwargs.get("default_value")
        out[d.args[0]] = default.text if isinstance(default, _Perform) else default
    return out


def _rviz(module, **given) -> _Action:
    args = {**_defaults(module), "model_path": "/m.onnx", "rviz": "true", **given}
    nodes = [a for a in module["launch_setup"](_Context(args)) if isinstance(a, _Action)
             and a.kwargs.get("package") == "rviz2"]
    assert len(nodes) == 1
    return nodes[0]


def _arguments(node) -> list[str]:
    return [a.text if isinstance(a, _Perform) else a for a in node.kwargs["arguments"]]


def test_rviz_uses_the_fixed_frame_argument_and_defaults_to_the_config_frame(launch_module):
    rviz_frame = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]["Global Options"]["Fixed Frame"]
    default = _arguments(_rviz(launch_module))
    assert default == ["-d", "/opt/share/monodepth_ros/launch/rviz/depth.rviz"]  # the file's frame
    assert rviz_frame in ast.get_docstring(ast.parse(LAUNCH.read_text()))  # and the launch file says which
    given = _arguments(_rviz(launch_module, fixed_frame="left_camera_color_optical_frame"))
    assert given[-2:] == ["-f", "left_camera_color_optical_frame"]


def test_rviz_displays_follow_the_namespace_and_topic_arguments(launch_module):
    assert _rviz(launch_module).kwargs["remappings"] == []  # the defaults are what depth.rviz shows
    node = _rviz(launch_module, namespace="left", image="/sensors/cam_left/image_raw", points="cloud")
    assert node.kwargs["namespace"].arg == "namespace"
    remaps = dict(node.kwargs["remappings"])
    assert remaps == {"/camera/points": "/left/cloud", "/camera/depth/colored": "/left/depth/colored",
                      "/camera/image_raw": "/sensors/cam_left/image_raw", "/camera/scan": "/left/scan"}
    # every topic depth.rviz displays is one of those the launch file remaps
    shown = {d["Topic"]["Value"] for d in yaml.safe_load(RVIZ.read_text())["Visualization Manager"]["Displays"]
             if "Topic" in d}
    assert shown == set(remaps)


def test_no_rviz_node_unless_asked(launch_module):
    args = {**_defaults(launch_module), "model_path": "/m.onnx"}
    actions = launch_module["launch_setup"](_Context(args))
    assert not [a for a in actions if isinstance(a, _Action) and a.kwargs.get("package") == "rviz2"]
