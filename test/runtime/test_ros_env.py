"""The DDS harness: loopback discovery, an own domain, the shipped Fast DDS profile, stale-SHM clean-up."""

import mmap
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from monodepth_ros import ros_env

pytestmark = pytest.mark.rosdistro  # ROS-facing: `make test-jazzy` runs this module on ROS 2 Jazzy too


def test_test_process_is_confined_to_loopback_with_own_domain_and_profile():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 0 <= int(os.environ["ROS_DOMAIN_ID"]) <= 101
    assert Path(os.environ["FASTDDS_DEFAULT_PROFILES_FILE"]).samefile(ros_env.fastdds_profile_path())


def test_shipped_profile_declares_large_shm_segment_and_disables_builtin_transports():
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(ros_env.fastdds_profile_path()).getroot()
    sizes = [int(e.text) for e in root.iterfind(".//d:transport_descriptor/d:segment_size", ns)]
    assert sizes and max(sizes) >= 32 * 1024 * 1024
    assert root.find(".//d:participant/d:rtps/d:useBuiltinTransports", ns).text == "false"


def test_subprocess_env_overrides_inherited_unsafe_values():
    env = ros_env.ros_env(42, base={"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "PATH": "/bin"})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and env["ROS_DOMAIN_ID"] == "42"
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"


def test_rclpy_node_starts_and_stops_cleanly_in_its_own_context(rclpy_context):
    import rclpy
    from std_msgs.msg import String

    node = rclpy.create_node("harness_probe", context=rclpy_context)
    try:
        pub = node.create_publisher(String, "probe", 1)
        pub.publish(String(data="hello"))
        assert node.get_name() == "harness_probe"
    finally:
        node.destroy_node()


def test_cleanup_removes_unmapped_segments_and_keeps_mapped_ones():
    stale = Path(f"/dev/shm/fastrtps_test_{uuid.uuid4().hex}")
    live = Path(f"/dev/shm/fastrtps_test_{uuid.uuid4().hex}")
    stale.write_bytes(b"\0" * 4096)
    live.write_bytes(b"\0" * 4096)
    # A child process keeps `live` mapped while we clean, as a running DDS participant would.
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import mmap,sys,time;f=open(sys.argv[1],'r+b');m=mmap.mmap(f.fileno(),4096);print('ok',flush=True);"
         "time.sleep(30)", str(live)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        removed = ros_env.cleanup_stale_shm(prefixes=("fastrtps_test_",))
        assert stale.name in removed and not stale.exists()
        assert live.exists() and live.name not in removed
    finally:
        holder.kill()
        holder.wait()
        stale.unlink(missing_ok=True)
        live.unlink(missing_ok=True)
    assert mmap.PAGESIZE > 0
