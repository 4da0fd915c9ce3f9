"""The distro differences (monodepth_ros.ros_compat): which Fast DDS profile variable a distro reads, segment
names, and, on whichever distro runs the suite (Kilted in `make test`, Jazzy in `make test-jazzy`), that the
shipped profile is really in effect and that rclpy.lifecycle works."""

from __future__ import annotations

import subprocess
import sys
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from monodepth_ros import ros_compat, ros_env

pytestmark = pytest.mark.rosdistro  # ROS-facing: `make test-jazzy` runs this module on ROS 2 Jazzy too


def _installed_fast_dds_major() -> int | None:
    """The Fast DDS generation of the PyPI wheels in this venv: ros-fastdds is 3.x, ros-fastrtps is 2.x."""
    for dist, major in (("ros-fastdds", 3), ("ros-fastrtps", 2)):
        try:
            version(dist)
            return major
        except PackageNotFoundError:
            pass
    return None


@pytest.mark.parametrize("folder,expected", [("fastdds", 3), ("fastrtps", 2), (None, None)])
def test_fast_dds_generation_is_read_from_the_install_share_folder(tmp_path, folder, expected):
    if folder:
        (tmp_path / "share" / folder).mkdir(parents=True)
    assert ros_compat.fast_dds_major([tmp_path], ros_distro="") == expected


@pytest.mark.parametrize("distro,expected", [("humble", 2), ("jazzy", 2), ("kilted", 3), ("rolling", 3), ("", None)])
def test_without_a_share_folder_ros_distro_decides(tmp_path, distro, expected):
    assert ros_compat.fast_dds_major([tmp_path], ros_distro=distro) == expected


def test_this_venv_is_detected_as_its_wheels_fast_dds():
    installed = _installed_fast_dds_major()
    if installed is None:
        pytest.skip("no Fast DDS PyPI wheel in this interpreter")
    assert ros_compat.fast_dds_major() == installed


def test_profile_env_sets_the_variable_each_generation_reads():
    both = {ros_compat.FASTDDS_PROFILE_VAR: "/p.xml", ros_compat.FASTRTPS_PROFILE_VAR: "/p.xml"}
    assert ros_compat.profile_env("/p.xml", major=3) == {ros_compat.FASTDDS_PROFILE_VAR: "/p.xml"}
    assert ros_compat.profile_env("/p.xml", major=2) == both
    assert ros_compat.profile_env("/p.xml", major=None) == both or ros_compat.fast_dds_major() == 3


def test_ros_env_replaces_an_inherited_profile_variable():
    base = {ros_compat.FASTRTPS_PROFILE_VAR: "/elsewhere.xml", "PATH": "/bin"}
    env = ros_env.ros_env(42, base=base)
    profile = str(ros_env.fastdds_profile_path())
    assert env[ros_compat.FASTDDS_PROFILE_VAR] == profile
    assert env.get(ros_compat.FASTRTPS_PROFILE_VAR, profile) == profile
    assert (ros_compat.FASTRTPS_PROFILE_VAR in env) == (ros_compat.fast_dds_major() != 3)


def test_cleanup_knows_the_segment_names_of_both_generations():
    stale = [Path(f"/dev/shm/{prefix}test_{uuid.uuid4().hex}") for prefix in ("fastrtps_", "fastdds_")]
    for f in stale:
        f.write_bytes(b"\0" * 4096)
    try:
        removed = ros_env.cleanup_stale_shm()
        assert {f.name for f in stale} <= set(removed)
        assert not any(f.exists() for f in stale)
    finally:
        for f in stale:
            f.unlink(missing_ok=True)


_PROBE = """
import os, sys
import rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("profile_probe")
node.create_publisher(String, "probe", 1)
sizes = []
for line in open("/proc/self/maps"):
    i = line.find("/dev/shm/fast")
    if i >= 0:
        path = line[i:].strip().split(" (deleted)")[0]
        if os.path.exists(path):
            sizes.append(os.path.getsize(path))
print(max(sizes, default=0))
node.destroy_node()
rclpy.shutdown()
"""


def test_the_shipped_profile_is_in_effect_on_this_distro(ros_subprocess_env):
    """A node started with ros_env maps the profile's 32 MiB shared-memory segment (Jazzy ran on the 512 KiB
    default when only FASTDDS_DEFAULT_PROFILES_FILE was set), and Fast DDS logs no warning about the variable."""
    res = subprocess.run([sys.executable, "-c", _PROBE], env=ros_subprocess_env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.split()[-1]) >= 32 * 1024 * 1024, res.stdout + res.stderr
    assert "deprecated" not in res.stderr, res.stderr


def test_rclpy_lifecycle_node_configures_and_activates(rclpy_context):
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
    from std_msgs.msg import String

    class Probe(LifecycleNode):
        def on_configure(self, state):
            self.pub = self.create_lifecycle_publisher(String, "lc_probe_out", 1)
            return TransitionCallbackReturn.SUCCESS

    node = Probe("lc_probe", context=rclpy_context)
    client = rclpy.create_node("lc_probe_client", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    executor.add_node(client)
    try:
        change = client.create_client(ChangeState, "/lc_probe/change_state")
        get = client.create_client(GetState, "/lc_probe/get_state")
        assert change.wait_for_service(timeout_sec=10.0)
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            future = change.call_async(ChangeState.Request(transition=Transition(id=transition)))
            executor.spin_until_future_complete(future, timeout_sec=10.0)
            assert future.result() is not None and future.result().success
        future = get.call_async(GetState.Request())
        executor.spin_until_future_complete(future, timeout_sec=10.0)
        assert future.result().current_state.label == "active"
        assert node.pub.is_activated
    finally:
        executor.shutdown()
        client.destroy_node()
        node.destroy_node()
