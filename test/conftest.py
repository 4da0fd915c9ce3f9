"""Test harness. Every test process gets loopback-only DDS discovery, its own ROS_DOMAIN_ID and the
package's Fast DDS profile before anything can import rclpy; stale Fast DDS shared-memory segments are
removed at the start and end of the session."""

from __future__ import annotations

import os

import pytest

from monodepth_ros import ros_env

# Set before any test module imports rclpy: DDS traffic must never leave loopback.
ROS_ENV = ros_env.apply_ros_env(int(os.environ.get("ROS_DOMAIN_ID", 1 + os.getpid() % 101)))
assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and "ROS_DOMAIN_ID" in os.environ


def pytest_sessionstart(session):
    ros_env.cleanup_stale_shm()


def pytest_sessionfinish(session, exitstatus):
    ros_env.cleanup_stale_shm()


@pytest.fixture(scope="session")
def ros_subprocess_env() -> dict[str, str]:
    """Environment for node processes started by a test: same loopback domain and profile as the test."""
    return ros_env.ros_env(int(ROS_ENV["ROS_DOMAIN_ID"]))


@pytest.fixture
def rclpy_context():
    """An initialised rclpy context of its own, shut down after the test even when it fails."""
    import rclpy
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        if ctx.ok():
            rclpy.shutdown(context=ctx)
