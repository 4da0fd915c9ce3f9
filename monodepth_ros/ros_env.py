"""DDS environment for processes that start ROS nodes: loopback-only discovery, an own domain, the
package's Fast DDS profile, and clean-up of shared-memory segments that killed processes leave behind.

Used by the tests, the benchmarks, the demo and ``monodepth-replay --through-node``. Importing this module
does not import rclpy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from monodepth_ros import ros_compat

PACKAGE = "monodepth_ros"
PROFILE_NAME = "fastdds.xml"


def fastdds_profile_path() -> Path:
    """Path of the shipped Fast DDS profile: an env override, the source tree, or the installed share dir."""
    override = os.environ.get("MONODEPTH_FASTDDS_PROFILE")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    candidates = [
        here.parent / "config" / PROFILE_NAME,  # source checkout / editable install
        Path(sys.prefix) / "share" / PACKAGE / "config" / PROFILE_NAME,  # pip / colcon install
    ]
    try:  # a sourced ROS 2 workspace
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / "config" / PROFILE_NAME)
    except Exception:  # noqa: BLE001 - ament index absent or package not registered
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"Fast DDS profile {PROFILE_NAME} not found; looked in {[str(c) for c in candidates]}")


def default_domain_id() -> int:
    """A domain for this process tree: ROS_DOMAIN_ID if set, else one derived from the pid (1..101)."""
    if "ROS_DOMAIN_ID" in os.environ:
        return int(os.environ["ROS_DOMAIN_ID"])
    return 1 + os.getpid() % 101


def ros_env(domain_id: int | None = None, base: dict | None = None) -> dict[str, str]:
    """Environment for a process that starts ROS nodes: loopback discovery, the given domain, our profile."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(default_domain_id() if domain_id is None else int(domain_id))
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    # The profile variable differs between Fast DDS 2.x (Humble, Jazzy) and 3.x (Kilted): see ros_compat.
    for k in ros_compat.PROFILE_VARS:
        env.pop(k, None)
    env.update(ros_compat.profile_env(fastdds_profile_path()))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


ROS_ENV_KEYS = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "RMW_IMPLEMENTATION", *ros_compat.PROFILE_VARS)


def apply_ros_env(domain_id: int | None = None, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Set :func:`ros_env` in this process (call before ``rclpy.init``), except the keys in ``skip``; a profile
    variable that :func:`ros_env` leaves out is removed. Returns the values set."""
    env = ros_env(domain_id)
    applied = {}
    for k in ROS_ENV_KEYS:
        if k in skip:
            continue
        if k in env:
            os.environ[k] = applied[k] = env[k]
        else:
            os.environ.pop(k, None)
    return applied


def _mapped_shm_files() -> set[str]:
    """Names of /dev/shm files mapped by any live process whose memory map we may read.

    Processes we cannot read (e.g. a container's init, other users) are not ours: the participants this
    package starts run as the current user, and their maps are always readable.
    """
    mapped: set[str] = set()
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            text = (pid_dir / "maps").read_text()
        except FileNotFoundError:
            continue  # exited while we looked
        except OSError:
            continue
        for line in text.splitlines():
            idx = line.find("/dev/shm/")
            if idx >= 0:
                mapped.add(Path(line[idx:].split(" (deleted)")[0]).name)
    return mapped


def cleanup_stale_shm(prefixes: tuple[str, ...] = ros_compat.SHM_PREFIXES) -> list[str]:
    """Remove Fast DDS shared-memory segments that no live process maps (left by killed processes).

    Same goal as ``fastdds shm clean``, which is not installed with the PyPI wheels. Port files are always
    kept (Fast DDS reuses them); a segment's ``_el``/``_sl`` lock files go with their segment.
    """
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return []
    mapped = _mapped_shm_files()
    removed = []
    for f in shm.iterdir():
        name = f.name
        if not name.startswith(prefixes) or "port" in name:
            continue
        base = name[:-3] if name.endswith("_el") or name.endswith("_sl") else name
        if base in mapped or name in mapped:
            continue
        try:
            f.unlink()
            removed.append(name)
        except OSError:
            pass
    return removed
