"""Write a synthetic drive as a KITTI-raw-style folder or as a rosbag2 (MCAP or sqlite3).

KITTI layout (what ``monodepth_ros.datasets.kitti`` and the trainer read, the same as real KITTI raw + depth GT)::

    <out>/<date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt, calib_imu_to_velo.txt
    <out>/<date>/<date>_drive_<NNNN>_sync/image_02/data/<frame:010d>.png   (+ image_03 with stereo)
                                         /image_02/timestamps.txt
                                         /oxts/data/<frame:010d>.txt, oxts/timestamps.txt, oxts/dataformat.txt
                                         /proj_depth/groundtruth/image_02/<frame:010d>.png  (uint16, m * 256)
                                         /moving_mask/image_02/<frame:010d>.png  (uint8 0/255, synthetic only)
                                         /poses_cam02.txt  (exact T_world_from_cam02, 12 floats per line)
    <out>/splits/{train,val,test}_files.txt  (``<date>/<drive folder> <frame> l``)

Calibration: camera 2 is the rectified reference (``P_rect_02 = [K | 0]``, ``R_rect_00 = I``); camera 3 sits
``baseline`` to its right (``P_rect_03[0, 3] = -fx * baseline``). The IMU frame is the vehicle frame (x forward,
y left, z up, on the ground under the camera); oxts lat/lon are the inverse of the devkit's Mercator mapping,
so ``kitti.oxts_to_poses`` recovers the vehicle poses relative to the first frame.

Bag topics: ``/camera/image_raw`` (sensor_msgs/Image rgb8), ``/camera/camera_info``, ``/camera/depth_gt``
(32FC1 metres, +inf for sky as REP 118 allows), all with frame_id ``camera_optical_frame``; ``/odom``
(nav_msgs/Odometry, frame_id ``odom`` = the world frame, child ``base_link`` = vehicle, twist.linear.x = speed).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.datasets import kitti
from monodepth_ros.synthetic.world import R_VEHICLE_FROM_OPTICAL, SyntheticWorld

LAT0_DEG, LON0_DEG = 49.011, 8.4169  # Karlsruhe, where KITTI drove
VELO_HEIGHT_M = 1.73
CAMERA_FRAME = "camera_optical_frame"

Progress = Callable[[int], None] | None


# ------------------------------------------------------------------------------------------- rendering


_WORKER_WORLD: SyntheticWorld | None = None


def _init_worker(cfg) -> None:
    global _WORKER_WORLD
    _WORKER_WORLD = SyntheticWorld(cfg)


def _render_in_worker(index: int, cameras: tuple[str, ...]):
    return tuple(_WORKER_WORLD.render(index, c) for c in cameras)


def iter_frames(world: SyntheticWorld, n_frames: int, cameras: tuple[str, ...] = ("left",), workers: int = 1):
    """Yield, in index order, a tuple of Frames (one per camera) for frames ``0 .. n_frames-1``.

    With ``workers > 1`` frames are rendered in that many processes (each builds its own world from the
    config, so the output is byte-identical to ``workers=1``); at most ``4 * workers`` frames are in flight,
    so memory stays bounded however long the drive.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        for i in range(n_frames):
            yield tuple(world.render(i, c) for c in cameras)
        return
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(world.cfg,)) as pool:
        pending: deque = deque()
        next_index = 0
        while next_index < n_frames or pending:
            while next_index < n_frames and len(pending) < 4 * workers:
                pending.append(pool.submit(_render_in_worker, next_index, cameras))
                next_index += 1
            yield pending.popleft().result()


# -------------------------------------------------------------------------------------------------- KITTI


def drive_folder(date: str, drive: int) -> str:
    """``<date>/<date>_drive_<NNNN>_sync``: the folder name used by split files."""
    return f"{date}/{date}_drive_{drive:04d}_sync"


def calibration(world: SyntheticWorld) -> dict[str, dict[str, np.ndarray]]:
    """KITTI calibration files (name -> entries) consistent with the world's camera and vehicle frames."""
    cfg, K = world.cfg, world.K
    P2 = np.hstack([K, np.zeros((3, 1))])
    P3 = P2.copy()
    P3[0, 3] = -K[0, 0] * cfg.stereo_baseline_m
    cam = {"corner_dist": np.array([0.0995])}
    for i in range(4):
        P = P2 if i in (0, 2) else P3
        cam.update({
            f"S_{i:02d}": np.array([cfg.width, cfg.height], float),
            f"K_{i:02d}": K,
            f"D_{i:02d}": np.zeros(5),
            f"R_{i:02d}": np.eye(3),
            f"T_{i:02d}": np.array([-cfg.stereo_baseline_m if i in (1, 3) else 0.0, 0.0, 0.0]),
            f"S_rect_{i:02d}": np.array([cfg.width, cfg.height], float),
            f"R_rect_{i:02d}": np.eye(3),
            f"P_rect_{i:02d}": P,
        })  # fmt: skip
    R_cam_from_velo = R_VEHICLE_FROM_OPTICAL.T
    cam_in_velo = np.array([0.0, 0.0, cfg.camera_height_m - VELO_HEIGHT_M])
    velo = {"R": R_cam_from_velo, "T": -R_cam_from_velo @ cam_in_velo, "delta_f": np.zeros(2), "delta_c": np.zeros(2)}
    imu = {"R": np.eye(3), "T": np.array([0.0, 0.0, -VELO_HEIGHT_M])}
    return {"calib_cam_to_cam.txt": cam, "calib_velo_to_cam.txt": velo, "calib_imu_to_velo.txt": imu}


class _Mercator:
    """Inverse of the devkit's Mercator mapping, anchored so the first frame sits exactly at ``LAT0_DEG``
    (the devkit takes its scale from the first record's latitude, so the round trip is exact)."""

    def __init__(self, T_world_from_vehicle0: np.ndarray):
        self.scale_r = math.cos(math.radians(LAT0_DEG)) * kitti.EARTH_RADIUS_M
        self.x0 = self.scale_r * math.radians(LON0_DEG) - T_world_from_vehicle0[0, 3]
        self.y0 = self.scale_r * math.log(math.tan(math.radians(90.0 + LAT0_DEG) / 2)) - T_world_from_vehicle0[1, 3]

    def latlon(self, x: float, y: float) -> tuple[float, float]:
        lon = math.degrees((x + self.x0) / self.scale_r)
        lat = math.degrees(2.0 * math.atan(math.exp((y + self.y0) / self.scale_r))) - 90.0
        return lat, lon


def _yaw_pitch(T: np.ndarray) -> tuple[float, float]:
    """Heading and pitch of R = Rz(yaw) Ry(pitch) (no roll)."""
    R = T[:3, :3]
    return math.atan2(R[1, 0], R[0, 0]), -math.asin(max(-1.0, min(1.0, R[2, 0])))


def oxts_record(world: SyntheticWorld, index: int, merc: _Mercator) -> np.ndarray:
    """KITTI oxts record (30,) of the vehicle at frame ``index``."""
    T = world.trajectory.T_world_from_vehicle(index)
    yaw, pitch = _yaw_pitch(T)
    lat, lon = merc.latlon(T[0, 3], T[1, 3])
    v = world.trajectory.speed_mps(index)
    ox = np.zeros(30)
    ox[:6] = (lat, lon, 0.0, 0.0, pitch, yaw)
    ox[6], ox[7], ox[8] = v * math.sin(yaw), v * math.cos(yaw), v  # vn, ve, vf
    ox[16] = 9.81  # au: gravity seen by the accelerometer
    ox[23:30] = (0.02, 0.02, 4, 10, 4, 4, 0)
    return ox


def _png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _splits(folder: str, n_frames: int) -> dict[str, list[kitti.SplitEntry]]:
    """Contiguous train/val/test (80/10/10) over frames with both neighbours (1 .. n-2), so that no test frame
    has a training neighbour inside its temporal window except at the two cut points."""
    usable = list(range(1, n_frames - 1))
    n = len(usable)
    n_val = n_test = max(1, n // 10) if n >= 3 else 0
    n_train = n - n_val - n_test
    parts = {
        "train": usable[:n_train],
        "val": usable[n_train : n_train + n_val],
        "test": usable[n_train + n_val :],
    }
    return {k: [kitti.SplitEntry(folder, i, "l") for i in v] for k, v in parts.items()}


def write_kitti(
    world: SyntheticWorld,
    out_dir: str | os.PathLike,
    n_frames: int,
    *,
    date: str = "2011_09_26",
    drive: int = 1,
    stereo: bool = False,
    overwrite: bool = False,
    progress: Progress = None,
    workers: int = 1,
) -> Path:
    """Render frames ``0 .. n_frames-1`` into a KITTI-raw-style folder (see module docstring); returns the
    drive folder.

    An existing drive folder is refused (``FileExistsError``) unless ``overwrite``; then it is replaced whole, so
    no stale frames survive. The drive is built in a temporary folder and renamed into place when complete.
    Several drives may share ``out_dir``: the split files keep other drives' entries, and a date folder's
    calibration must match (else ``ValueError``: use another ``date``). ``workers`` > 1 renders in that many
    processes (same bytes as one).
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if not (len(date) == 10 and date[4] == "_" and date[7] == "_" and date.replace("_", "").isdigit()):
        raise ValueError(f"date must look like 2011_09_26, got {date!r}")
    if not 0 <= drive <= 9999:
        raise ValueError(f"drive must be in 0..9999, got {drive}")
    out = Path(out_dir)
    folder = drive_folder(date, drive)
    drive_dir = out / folder
    if drive_dir.exists() and not overwrite:
        raise FileExistsError(f"{drive_dir} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    calib = calibration(world)
    for name, entries in calib.items():
        path = out / date / name
        if path.is_file():
            old = kitti.read_calib_file(path)
            same = all(k in old and old[k].size == np.size(v) and np.allclose(old[k], np.ravel(v), rtol=1e-9)
                       for k, v in entries.items())  # fmt: skip
            if not same:
                raise ValueError(f"{path} holds a different calibration (camera size or intrinsics); "
                                 f"write this drive under another date")  # fmt: skip
    for name, entries in calib.items():
        kitti.write_calib_file(out / date / name, entries, calib_time="01-Jan-2011 00:00:00")
    (out / date).mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{drive_dir.name}.", suffix=".tmp", dir=out / date))
    try:
        _write_drive(world, tmp_dir, n_frames, stereo=stereo, progress=progress, workers=workers)
        if drive_dir.exists():
            os.replace(drive_dir, tmp_dir / ".old")
        os.replace(tmp_dir / "drive", drive_dir)
        os.chmod(drive_dir, 0o755)  # mkdtemp made it owner-only; a dataset folder is meant to be shared
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    for split, entries in _splits(folder, n_frames).items():
        path = out / "splits" / f"{split}_files.txt"
        others = [e for e in kitti.read_split(path) if e.folder != folder] if path.is_file() else []
        kitti.write_split(path, sorted(others + entries, key=lambda e: (e.folder, e.frame, e.side)))
    return drive_dir


def _write_drive(world, tmp_dir: Path, n_frames: int, *, stereo: bool, progress: Progress, workers: int) -> None:
    drive_dir = tmp_dir / "drive"
    cams = [("left", "image_02")] + ([("right", "image_03")] if stereo else [])
    merc = _Mercator(world.trajectory.T_world_from_vehicle(0))
    poses, stamps = [], []
    for i, views in enumerate(iter_frames(world, n_frames, tuple(c for c, _ in cams), workers)):
        name = f"{i:010d}"
        for (camera, img_dir), f in zip(cams, views):
            atomic_write_bytes(drive_dir / img_dir / "data" / f"{name}.png", _png_bytes(f.rgb[..., ::-1]))
            kitti.write_depth_png(drive_dir / "proj_depth" / "groundtruth" / img_dir / f"{name}.png", f.depth_m)
            if camera == "left":
                poses.append(f.T_world_from_cam)
                stamps.append(f.stamp_s)
                mask = f.moving_mask.astype(np.uint8) * 255
                atomic_write_bytes(drive_dir / "moving_mask" / img_dir / f"{name}.png", _png_bytes(mask))
        kitti.write_oxts(drive_dir / "oxts" / "data" / f"{name}.txt", oxts_record(world, i, merc))
        if progress is not None:
            progress(1)
    ts = "".join(kitti.format_timestamp(s) + "\n" for s in stamps).encode()
    for sub in [c[1] for c in cams] + ["oxts"]:
        atomic_write_bytes(drive_dir / sub / "timestamps.txt", ts)
    atomic_write_bytes(drive_dir / "oxts" / "dataformat.txt", "".join(f"{n}\n" for n in kitti.OXTS_FIELDS).encode())
    kitti.write_poses_file(drive_dir / "poses_cam02.txt", np.stack(poses))


# ---------------------------------------------------------------------------------------------------- bag


def _quaternion_xyzw(R: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation matrix (3, 3) -> unit quaternion (x, y, z, w), numerically stable branch by largest term."""
    tr = np.trace(R)
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        return (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s
    i = int(np.argmax(np.diag(R)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = math.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k]) * 2
    q = [0.0, 0.0, 0.0]
    q[i] = 0.25 * s
    q[j] = (R[j, i] + R[i, j]) / s
    q[k] = (R[k, i] + R[i, k]) / s
    return q[0], q[1], q[2], (R[k, j] - R[j, k]) / s


def stamp_ns(stamp_s: float) -> int:
    """Seconds -> integer nanoseconds (the bag timestamp and the header stamp agree exactly)."""
    return int(round(stamp_s * 1e9))


def write_bag(
    world: SyntheticWorld,
    out_path: str | os.PathLike,
    n_frames: int,
    *,
    storage: str = "mcap",
    overwrite: bool = False,
    progress: Progress = None,
    workers: int = 1,
) -> Path:
    """Render frames ``0 .. n_frames-1`` into a rosbag2 directory ``out_path`` (MCAP or sqlite3 storage).

    The bag is written into a temporary folder beside ``out_path`` and renamed into place when complete, so a
    crash never leaves a half-written bag under the final name. ``workers`` > 1 renders in that many
    processes (same messages as one).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be one of {sorted(plugins)}, got {storage!r}")
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)

    ts = get_typestore(Stores.ROS2_KILTED)
    T_ = ts.types
    Header, Time = T_["std_msgs/msg/Header"], T_["builtin_interfaces/msg/Time"]
    Image, CameraInfo = T_["sensor_msgs/msg/Image"], T_["sensor_msgs/msg/CameraInfo"]
    RegionOfInterest = T_["sensor_msgs/msg/RegionOfInterest"]
    Odometry = T_["nav_msgs/msg/Odometry"]
    Pose, Point, Quaternion = (
        T_["geometry_msgs/msg/Pose"],
        T_["geometry_msgs/msg/Point"],
        T_["geometry_msgs/msg/Quaternion"],
    )
    PoseCov, TwistCov = T_["geometry_msgs/msg/PoseWithCovariance"], T_["geometry_msgs/msg/TwistWithCovariance"]
    Twist, Vector3 = T_["geometry_msgs/msg/Twist"], T_["geometry_msgs/msg/Vector3"]

    K = world.K
    P = np.hstack([K, np.zeros((3, 1))])
    W, H = world.cfg.width, world.cfg.height
    dt = 1.0 / world.cfg.fps

    tmp_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp_bag = tmp_root / out.name
    try:
        with Writer(tmp_bag, version=8, storage_plugin=plugins[storage]) as writer:
            conns = {
                "img": writer.add_connection("/camera/image_raw", Image.__msgtype__, typestore=ts),
                "info": writer.add_connection("/camera/camera_info", CameraInfo.__msgtype__, typestore=ts),
                "depth": writer.add_connection("/camera/depth_gt", Image.__msgtype__, typestore=ts),
                "odom": writer.add_connection("/odom", Odometry.__msgtype__, typestore=ts),
            }
            for i, (f,) in enumerate(iter_frames(world, n_frames, ("left",), workers)):
                ns = stamp_ns(f.stamp_s)
                cam_header = Header(
                    stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id=CAMERA_FRAME
                )
                img = Image(header=cam_header, height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3,
                            data=np.ascontiguousarray(f.rgb).reshape(-1))  # fmt: skip
                depth = np.ascontiguousarray(f.depth_m, dtype="<f4")
                dmsg = Image(header=cam_header, height=H, width=W, encoding="32FC1", is_bigendian=0, step=W * 4,
                             data=depth.view(np.uint8).reshape(-1))  # fmt: skip
                info = CameraInfo(
                    header=cam_header, height=H, width=W, distortion_model="plumb_bob", d=np.zeros(5),
                    k=K.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1), p=P.reshape(-1),
                    binning_x=0, binning_y=0,
                    roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
                )  # fmt: skip
                Tv = world.trajectory.T_world_from_vehicle(i)
                yaw_prev, _ = _yaw_pitch(world.trajectory.T_world_from_vehicle(max(i - 1, 0)))
                yaw_next, _ = _yaw_pitch(world.trajectory.T_world_from_vehicle(i + 1))
                yaw_rate = (yaw_next - yaw_prev) / (dt * (2 if i > 0 else 1))
                qx, qy, qz, qw = _quaternion_xyzw(Tv[:3, :3])
                odom = Odometry(
                    header=Header(stamp=cam_header.stamp, frame_id="odom"),
                    child_frame_id="base_link",
                    pose=PoseCov(pose=Pose(position=Point(x=Tv[0, 3], y=Tv[1, 3], z=Tv[2, 3]),
                                           orientation=Quaternion(x=qx, y=qy, z=qz, w=qw)),
                                 covariance=np.zeros(36)),
                    twist=TwistCov(twist=Twist(linear=Vector3(x=f.speed_mps, y=0.0, z=0.0),
                                               angular=Vector3(x=0.0, y=0.0, z=yaw_rate)),
                                   covariance=np.zeros(36)),
                )  # fmt: skip
                for key, msg in (("img", img), ("info", info), ("depth", dmsg), ("odom", odom)):
                    writer.write(conns[key], ns, ts.serialize_cdr(msg, msg.__msgtype__))
                if progress is not None:
                    progress(1)
        if out.exists():
            old = tmp_root / (out.name + ".old")
            os.replace(out, old)
        os.replace(tmp_bag, out)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return out
