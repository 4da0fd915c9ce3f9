"""What differs between the ROS 2 distros this package runs on, in one place. Importing it does not import rclpy.

Humble and Jazzy ship Fast DDS 2.x; Kilted (and later) ship Fast DDS 3.x. Measured with the PyPI wheels (Jazzy:
rclpy 7.1.6, Fast DDS 2.14.5; Kilted: rclpy 9.1.2, Fast DDS 3.2.3):

- The XML profile variable. Fast DDS 2.x reads only ``FASTRTPS_DEFAULT_PROFILES_FILE``: with
  ``FASTDDS_DEFAULT_PROFILES_FILE`` alone, Jazzy silently ran on the default 512 KiB shared-memory segment instead
  of the package's 32 MiB one. Fast DDS 3.x reads ``FASTDDS_DEFAULT_PROFILES_FILE`` and still honours the old name,
  but then logs a deprecation warning for every participant.
- Shared-memory segment names in /dev/shm: ``fastrtps_*`` (2.x), ``fastdds_*`` (3.x).

The rclpy API this package uses is the same on both. Kilted-only API to avoid: ``with rclpy.init():`` (Jazzy's
``rclpy.init`` returns None), subscription ``content_filter_options``, callbacks taking ``MessageInfo``/``TimerInfo``,
``rclpy.executors.TimerCancelledError``, ``rclpy.qos.qos_profile_rosout_default``. ``rclpy.lifecycle`` works on both.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

FASTDDS_PROFILE_VAR = "FASTDDS_DEFAULT_PROFILES_FILE"  # Fast DDS 3.x (Kilted and later)
FASTRTPS_PROFILE_VAR = "FASTRTPS_DEFAULT_PROFILES_FILE"  # Fast DDS 2.x (Humble, Jazzy)
PROFILE_VARS = (FASTDDS_PROFILE_VAR, FASTRTPS_PROFILE_VAR)
FAST_DDS_2_DISTROS = frozenset({"humble", "iron", "jazzy"})
# Fast DDS shared-memory files: segments (2.x, 3.x) and data-sharing pools.
SHM_PREFIXES = ("fastrtps_", "fastdds_", "fast_datasharing")


def fast_dds_major(prefixes: Iterable[str | os.PathLike] | None = None, ros_distro: str | None = None) -> int | None:
    """2 or 3: the Fast DDS generation of the ROS 2 this interpreter uses, or None when it cannot tell.

    Found without importing rclpy, from the install's ``share/fastdds`` (3.x) or ``share/fastrtps`` (2.x) folder
    under ``sys.prefix`` (PyPI wheels) and then ``AMENT_PREFIX_PATH`` (a sourced ROS 2 install), else from
    ``ROS_DISTRO``.
    """
    if prefixes is None:
        ament = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
        prefixes = [sys.prefix, *ament]
    for prefix in prefixes:
        share = Path(prefix) / "share"
        if (share / "fastdds").is_dir():
            return 3
        if (share / "fastrtps").is_dir():
            return 2
    distro = (os.environ.get("ROS_DISTRO", "") if ros_distro is None else ros_distro).strip().lower()
    if distro:
        return 2 if distro in FAST_DDS_2_DISTROS else 3
    return None


def profile_env(path: str | os.PathLike, major: int | None = None) -> dict[str, str]:
    """The variables that make Fast DDS load the XML profile ``path`` (``major``: :func:`fast_dds_major` if None).

    ``FASTDDS_DEFAULT_PROFILES_FILE`` always (Fast DDS 2.x ignores it); ``FASTRTPS_DEFAULT_PROFILES_FILE`` too where
    Fast DDS is 2.x or unknown, not on 3.x (it would warn for every participant). Callers building an environment
    should drop an inherited ``FASTRTPS_DEFAULT_PROFILES_FILE`` that this leaves out.
    """
    if major is None:
        major = fast_dds_major()
    env = {FASTDDS_PROFILE_VAR: str(path)}
    if major != 3:
        env[FASTRTPS_PROFILE_VAR] = str(path)
    return env
