"""What a user on a robot copies: every rosdep key in package.xml is one rosdistro knows (``rosdep install`` aborts
on the first unknown key), and every ``ros2 launch`` command in the docs gives the launch file's required
arguments."""

from __future__ import annotations

import ast
import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "depth.launch.py"

# Each key checked by hand in github.com/ros/rosdistro (stored copy of rosdep/python.yaml at commit 000730dc,
# 2026-11-30), with the file it came from. ROS packages are not rosdep-yaml keys: rosdep resolves them from the
# distro's release file (<distro>/distribution.yaml) as ros-<distro>-<name>.
PYTHON_YAML = "rosdep/python.yaml"
DISTRIBUTION = "<distro>/distribution.yaml (ROS 2 release package)"
VERIFIED_KEYS = {
    "python3-setuptools": PYTHON_YAML,
    "python3-numpy": PYTHON_YAML,
    "python3-opencv": PYTHON_YAML,
    "python3-yaml": PYTHON_YAML,
    "python3-onnxruntime-pip": PYTHON_YAML,  # pip rule for debian/ubuntu/fedora/arch/osx
    "python3-matplotlib": PYTHON_YAML,
    "python3-tqdm": PYTHON_YAML,
    "python3-pytest": PYTHON_YAML,
    "python3-psutil": PYTHON_YAML,
    "python3-pytest-timeout": PYTHON_YAML,
    **dict.fromkeys(
        ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "nav_msgs", "diagnostic_msgs", "lifecycle_msgs",
         "rcl_interfaces", "builtin_interfaces", "rmw_fastrtps_cpp", "launch", "launch_ros", "rviz2", "cv_bridge"),
        DISTRIBUTION,
    ),
}
# Python packages the runtime needs that have no key in rosdep/python.yaml: left out of package.xml (with a
# comment there) and installed with pip as the README says. python3-rosbags-pip was added by ros/rosdistro#37795
# (2023) but is not in the stored python.yaml (between python3-rocker and python3-rosdep there is none).
PIP_ONLY = ("rosbags", "safetensors")
DEPEND_TAGS = ("depend", "build_depend", "buildtool_depend", "build_export_depend", "exec_depend", "test_depend",
               "doc_depend")


def package_keys() -> list[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return [el.text.strip() for tag in DEPEND_TAGS for el in root.iter(tag)]


def test_every_package_xml_key_is_a_verified_rosdistro_key():
    keys = package_keys()
    assert keys and len(keys) == len(set(keys)), keys
    unknown = sorted(set(keys) - set(VERIFIED_KEYS))
    assert not unknown, f"rosdep keys not verified in ros/rosdistro (add with the file they are in): {unknown}"


def test_pip_only_runtime_packages_are_documented_not_declared():
    xml = (REPO / "package.xml").read_text()
    readme = (REPO / "README.md").read_text()
    for name in PIP_ONLY:
        assert not any(name in key for key in package_keys()), name
        assert name in xml  # the comment that says why it is not declared
        assert re.search(rf"pip install[^\n]*\b{name}\b", readme), f"README has no pip install line for {name}"
    assert "rosdep install --from-paths src" in readme


def launch_arguments() -> dict[str, bool]:
    """``{name: has_default}`` of the DeclareLaunchArgument calls with a literal name (ast, no ROS needed)."""
    out = {}
    for node in ast.walk(ast.parse(LAUNCH_FILE.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            has_default = any(k.arg == "default_value" for k in node.keywords)
            name = node.args[0]
            if isinstance(name, ast.Constant):
                out[name.value] = has_default
            else:  # a computed name (the override arguments) must have a default, or it cannot be checked here
                assert has_default, ast.unparse(node)
    # The override arguments are declared in a loop over OVERRIDE_ARGS (each with a default).
    for node in ast.parse(LAUNCH_FILE.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "OVERRIDE_ARGS" for t in node.targets):
            out.update({name: True for name in ast.literal_eval(node.value)})
    return out


def launch_commands(text: str) -> list[list[str]]:
    """Every ``ros2 launch monodepth_ros depth.launch.py ...`` command in ``text``, continuation lines joined, as
    words (a trailing ``# comment`` dropped)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        start = line.find("ros2 launch monodepth_ros depth.launch.py")
        if start >= 0:
            # An inline `...` mention ends at its closing backtick; a code block line at a trailing # comment.
            out.append(shlex.split(line[start:].split("`")[0].split(" #")[0], comments=False))
    return out


DOCS = [REPO / "README.md", LAUNCH_FILE, *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_documented_ros2_launch_commands_give_every_required_argument(doc):
    declared = launch_arguments()
    required = {name for name, has_default in declared.items() if not has_default}
    assert required == {"model_path"}  # what a user must always type
    for words in launch_commands(doc.read_text()):
        if {"--show-args", "-s", "--show-arguments"} & set(words):
            continue  # lists the arguments; launches nothing
        given = {w.split(":=", 1)[0] for w in words[3:] if ":=" in w}
        assert required <= given, f"{doc.name}: `{' '.join(words)}` misses {sorted(required - given)}"
        assert given <= set(declared) | {"__ns", "__log_level"}, f"{doc.name}: unknown {sorted(given - set(declared))}"


def test_readme_has_a_ros2_launch_command():
    assert launch_commands((REPO / "README.md").read_text())
