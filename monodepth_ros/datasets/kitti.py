"""Readers and writers for the KITTI raw layout and the KITTI depth-benchmark ground truth.

The same functions read real KITTI raw drives and the folders that ``monodepth-synth --format kitti`` writes,
so the trainer and the evaluation never need to know which one they got.

Layout (real KITTI raw, ``<data>/<date>/<date>_drive_<NNNN>_sync/...``):
- ``<date>/calib_cam_to_cam.txt``: ``calib_time:`` line, then ``S_rect_02`` (width height), ``P_rect_02`` (3x4),
  ``R_rect_00`` (3x3), ... one ``key: numbers`` per line.
- ``image_02/data/<10-digit frame>.png`` (or ``.jpg`` after Monodepth2's conversion), ``image_02/timestamps.txt``.
- ``oxts/data/<10-digit frame>.txt``: 30 numbers (lat, lon, alt, roll, pitch, yaw, vn, ve, vf, vl, vu, ...).
- Depth benchmark GT ``proj_depth/groundtruth/image_02/<frame>.png``: uint16, metres * 256, 0 = no measurement.
- Split files: lines ``<date>/<date>_drive_<NNNN>_sync <frame> l|r``.

Poses follow ``geometry``: 4x4 matrices named ``T_<to>_from_<from>``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.geometry import invert_pose, rpy_to_matrix

UTC = timezone.utc  # noqa: UP017 - datetime.UTC is Python 3.11+; the runtime also runs on 3.10 (Humble, JetPack 6)

__all__ = [
    "OXTS_FIELDS",
    "SplitEntry",
    "read_calib_file",
    "write_calib_file",
    "read_split",
    "write_split",
    "side_to_cam",
    "image_path",
    "load_rgb",
    "cam_intrinsics",
    "image_size",
    "read_velo_to_cam",
    "read_imu_to_velo",
    "read_depth_png",
    "write_depth_png",
    "read_oxts",
    "write_oxts",
    "oxts_speed_mps",
    "oxts_to_poses",
    "read_poses_file",
    "write_poses_file",
    "read_timestamps",
    "format_timestamp",
    "calib_dir_for",
    "DEPTH_PNG_SCALE",
]

# Depth benchmark PNGs store metres * 256 as uint16 (max representable depth ~256 m).
DEPTH_PNG_SCALE = 256.0
EARTH_RADIUS_M = 6378137.0

OXTS_FIELDS = (
    "lat", "lon", "alt", "roll", "pitch", "yaw", "vn", "ve", "vf", "vl", "vu",
    "ax", "ay", "az", "af", "al", "au", "wx", "wy", "wz", "wf", "wl", "wu",
    "pos_accuracy", "vel_accuracy", "navstat", "numsats", "posmode", "velmode", "orimode",
)  # fmt: skip


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file: drive folder (``<date>/<date>_drive_<NNNN>_sync``), frame index, side l|r."""

    folder: str
    frame: int
    side: str = "l"

    def __str__(self) -> str:
        return f"{self.folder} {self.frame} {self.side}"


# ----------------------------------------------------------------------------------------------- calibration


def read_calib_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parse a KITTI ``key: v1 v2 ...`` calibration file into float64 arrays (1-D, as written).

    Lines whose values are not all numbers (``calib_time: 09-Jan-2012 13:57:47``) are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path}")
    out: dict[str, np.ndarray] = {}
    for line in path.read_text().splitlines():
        if ":" not in line:
            continue
        key, values = line.split(":", 1)
        try:
            out[key.strip()] = np.array([float(x) for x in values.split()], dtype=np.float64)
        except ValueError:
            continue
    return out


def write_calib_file(path: str | os.PathLike, entries: dict[str, np.ndarray], calib_time: str | None = None) -> None:
    """Write a KITTI calibration file atomically (``calib_time:`` first if given, then ``key: values``)."""
    lines = []
    if calib_time is not None:
        lines.append(f"calib_time: {calib_time}")
    for key, value in entries.items():
        flat = np.asarray(value, dtype=np.float64).ravel()
        lines.append(f"{key}: " + " ".join(f"{v:.12e}" for v in flat))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def _calib_file(calib_dir: str | os.PathLike, name: str) -> Path:
    p = Path(calib_dir)
    return p if p.is_file() else p / name


def cam_intrinsics(calib_dir: str | os.PathLike, cam: int = 2) -> np.ndarray:
    """Pixel intrinsics K (3, 3) of rectified camera ``cam`` at the raw image resolution (from ``P_rect_0X``).

    ``calib_dir`` is the ``<data>/<date>`` folder (or the ``calib_cam_to_cam.txt`` file itself).
    """
    path = _calib_file(calib_dir, "calib_cam_to_cam.txt")
    calib = read_calib_file(path)
    key = f"P_rect_{cam:02d}"
    if key not in calib:
        raise KeyError(f"{key} missing from {path}")
    if calib[key].size != 12:
        raise ValueError(f"{key} in {path} must have 12 values (3x4), got {calib[key].size}")
    return calib[key].reshape(3, 4)[:, :3].copy()


def image_size(calib_dir: str | os.PathLike, cam: int = 2) -> tuple[int, int]:
    """(width, height) in pixels of rectified camera ``cam`` (``S_rect_0X``)."""
    path = _calib_file(calib_dir, "calib_cam_to_cam.txt")
    calib = read_calib_file(path)
    key = f"S_rect_{cam:02d}"
    if key not in calib or calib[key].size != 2:
        raise KeyError(f"{key} (width height) missing from {path}")
    width, height = calib[key]
    return int(round(width)), int(round(height))


def _rigid_from_RT(calib: dict[str, np.ndarray], path: Path) -> np.ndarray:
    if "R" not in calib or "T" not in calib:
        raise KeyError(f"R and T missing from {path}")
    T = np.eye(4)
    T[:3, :3] = calib["R"].reshape(3, 3)
    T[:3, 3] = calib["T"].reshape(3)
    return T


def read_velo_to_cam(calib_dir: str | os.PathLike) -> np.ndarray:
    """``T_cam0_from_velo`` (4, 4) from ``calib_velo_to_cam.txt`` (unrectified camera 0)."""
    path = _calib_file(calib_dir, "calib_velo_to_cam.txt")
    return _rigid_from_RT(read_calib_file(path), path)


def read_imu_to_velo(calib_dir: str | os.PathLike) -> np.ndarray:
    """``T_velo_from_imu`` (4, 4) from ``calib_imu_to_velo.txt``."""
    path = _calib_file(calib_dir, "calib_imu_to_velo.txt")
    return _rigid_from_RT(read_calib_file(path), path)


# ------------------------------------------------------------------------------------------- splits, images


def read_split(path: str | os.PathLike) -> list[SplitEntry]:
    """Read a split file (``<folder> <frame> <l|r>`` per line; side defaults to ``l``) into entries."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    entries = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 3:
            raise ValueError(f"{path}:{lineno}: expected '<folder> <frame> <l|r>', got {line!r}")
        folder = parts[0]
        try:
            frame = int(parts[1]) if len(parts) > 1 else 0
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: frame index is not an integer in {line!r}") from e
        side = parts[2] if len(parts) > 2 else "l"
        if side not in ("l", "r"):
            raise ValueError(f"{path}:{lineno}: side must be 'l' or 'r', got {side!r}")
        entries.append(SplitEntry(folder, frame, side))
    return entries


def write_split(path: str | os.PathLike, entries: list[SplitEntry]) -> None:
    """Write split entries atomically, one ``<folder> <frame> <side>`` per line."""
    atomic_write_bytes(path, "".join(f"{e}\n" for e in entries).encode())


def side_to_cam(side: str) -> int:
    """KITTI side letter -> camera index (``l`` = 2, left colour; ``r`` = 3, right colour)."""
    try:
        return {"l": 2, "r": 3}[side]
    except KeyError:
        raise ValueError(f"side must be 'l' or 'r', got {side!r}") from None


def image_path(data_dir: str | os.PathLike, entry: SplitEntry, ext: str | None = None) -> Path:
    """Path of an entry's image: ``<data>/<folder>/image_0X/data/<frame:010d>.<ext>``.

    With ``ext=None`` the existing file among ``.png`` and ``.jpg`` is returned (KITTI ships PNG; Monodepth2
    users often convert to JPEG); if neither exists, ``FileNotFoundError`` names both.
    """
    base = Path(data_dir) / entry.folder / f"image_{side_to_cam(entry.side):02d}" / "data" / f"{entry.frame:010d}"
    if ext is not None:
        return base.with_suffix("." + ext.lstrip("."))
    candidates = [base.with_suffix(s) for s in (".png", ".jpg", ".jpeg")]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"no image for {entry}: tried {[str(c) for c in candidates]}")


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG/JPEG into (H, W, 3) uint8 RGB (8-bit; grey images are expanded to 3 channels)."""
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise FileNotFoundError(f"image not found: {path}")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def calib_dir_for(data_dir: str | os.PathLike, entry: SplitEntry) -> Path:
    """Calibration folder of an entry: ``<data>/<date>`` (the first component of the drive folder)."""
    return Path(data_dir) / Path(entry.folder).parts[0]


# -------------------------------------------------------------------------------------------------- depth GT


def read_depth_png(path: str | os.PathLike) -> np.ndarray:
    """KITTI depth-benchmark PNG -> depth (H, W) float32 metres; 0 stays 0 (= no measurement)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth PNG not found: {path}")
    raw = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_ANYDEPTH)
    if raw is None:
        raise ValueError(f"cannot decode depth PNG {path}")
    if raw.dtype != np.uint16:
        raise ValueError(f"depth PNG {path} must be 16-bit, got {raw.dtype}")
    return raw.astype(np.float32) / np.float32(DEPTH_PNG_SCALE)


def write_depth_png(path: str | os.PathLike, depth_m: np.ndarray) -> None:
    """Write depth (H, W) metres as a KITTI uint16 PNG (round(depth * 256)), atomically.

    NaN, inf, non-positive depths and depths beyond the format's range (> 65535 / 256 m) become 0 (invalid)
    rather than being clipped, so a reader never sees a made-up far value.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    with np.errstate(invalid="ignore"):
        scaled = np.round(depth * DEPTH_PNG_SCALE)
        valid = np.isfinite(scaled) & (scaled > 0) & (scaled <= 65535)
    raw = np.where(valid, scaled, 0).astype(np.uint16)
    ok, buf = cv2.imencode(".png", raw)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    atomic_write_bytes(path, buf.tobytes())


# ------------------------------------------------------------------------------------------------------ oxts


def read_oxts(path: str | os.PathLike) -> np.ndarray:
    """One oxts text file -> (30,) float64 in ``OXTS_FIELDS`` order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"oxts file not found: {path}")
    try:
        values = np.array([float(x) for x in path.read_text().split()], dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"oxts file {path} has a non-numeric field") from e
    if values.size != len(OXTS_FIELDS):
        raise ValueError(f"oxts file {path} must have {len(OXTS_FIELDS)} values, got {values.size}")
    return values


def write_oxts(path: str | os.PathLike, oxts: np.ndarray) -> None:
    """Write one oxts record (30,) atomically; the last five (status) fields as integers, like KITTI."""
    oxts = np.asarray(oxts, dtype=np.float64).ravel()
    if oxts.size != len(OXTS_FIELDS):
        raise ValueError(f"oxts record must have {len(OXTS_FIELDS)} values, got {oxts.size}")
    parts = [repr(float(v)) for v in oxts[:25]] + [str(int(round(v))) for v in oxts[25:]]
    atomic_write_bytes(path, (" ".join(parts) + "\n").encode())


def oxts_speed_mps(oxts: np.ndarray) -> float:
    """Forward speed ``vf`` (m/s) of one oxts record (30,)."""
    return float(np.asarray(oxts).ravel()[OXTS_FIELDS.index("vf")])


def oxts_to_poses(oxts_list: list[np.ndarray] | np.ndarray, relative_to_first: bool = True) -> np.ndarray:
    """oxts records (N, 30) -> IMU poses ``T_world_from_imu`` (N, 4, 4), KITTI devkit convention.

    Position: Mercator projection with the scale ``cos(lat_0)`` of the FIRST record's latitude
    (x east, y north, z = altitude, metres). Orientation: ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`` for the IMU
    axes x forward, y left, z up. With ``relative_to_first`` (the devkit's ``convertOxtsToPose``) the world
    frame is the first IMU pose, so ``poses[0]`` is the identity.
    """
    oxts = np.asarray(oxts_list, dtype=np.float64)
    if oxts.ndim != 2 or oxts.shape[1] != len(OXTS_FIELDS) or oxts.shape[0] == 0:
        raise ValueError(f"oxts must be (N, {len(OXTS_FIELDS)}) with N >= 1, got shape {oxts.shape}")
    lat, lon, alt, roll, pitch, yaw = (oxts[:, i] for i in range(6))
    scale = np.cos(np.deg2rad(lat[0]))
    tx = scale * EARTH_RADIUS_M * np.deg2rad(lon)
    ty = scale * EARTH_RADIUS_M * np.log(np.tan(np.deg2rad(90.0 + lat) / 2.0))
    poses = np.zeros((oxts.shape[0], 4, 4))
    poses[:, :3, :3] = rpy_to_matrix(np.stack([roll, pitch, yaw], axis=-1))
    poses[:, 0, 3], poses[:, 1, 3], poses[:, 2, 3] = tx, ty, alt
    poses[:, 3, 3] = 1.0
    if relative_to_first:
        poses = invert_pose(poses[0]) @ poses
    return poses


# ----------------------------------------------------------------------------------------- poses, timestamps


def read_poses_file(path: str | os.PathLike) -> np.ndarray:
    """KITTI odometry-style poses file (12 floats = rows of a 3x4 matrix per line) -> (N, 4, 4)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"poses file not found: {path}")
    rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if rows.shape[1] != 12:
        raise ValueError(f"poses file {path} must have 12 values per line, got {rows.shape[1]}")
    poses = np.zeros((rows.shape[0], 4, 4))
    poses[:, :3, :] = rows.reshape(-1, 3, 4)
    poses[:, 3, 3] = 1.0
    return poses


def write_poses_file(path: str | os.PathLike, poses: np.ndarray) -> None:
    """Write poses (N, 4, 4) as 12 floats per line (top 3x4 rows), atomically, at full float64 precision."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ValueError(f"poses must be (N, 4, 4), got shape {poses.shape}")
    buf = io.StringIO()
    np.savetxt(buf, poses[:, :3, :].reshape(-1, 12), fmt="%.17g")
    atomic_write_bytes(path, buf.getvalue().encode())


def read_timestamps(path: str | os.PathLike) -> np.ndarray:
    """KITTI ``timestamps.txt`` (``2011-09-26 13:02:25.964389445`` per line, UTC) -> (N,) float64 seconds
    since the Unix epoch. Nanosecond digits are kept (datetime alone keeps only microseconds)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"timestamps file not found: {path}")
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        whole, _, frac = line.partition(".")
        try:
            t = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
            out.append(t + (float("0." + frac) if frac else 0.0))
        except ValueError as e:
            raise ValueError(f"{path}: bad timestamp {line!r}") from e
    return np.array(out, dtype=np.float64)


def format_timestamp(stamp_s: float) -> str:
    """Seconds since the Unix epoch -> KITTI timestamp string with nanoseconds (UTC)."""
    ns_total = int(round(stamp_s * 1e9))
    sec, ns = divmod(ns_total, 1_000_000_000)
    return datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%d %H:%M:%S") + f".{ns:09d}"
