"""Ground-truth depth for the KITTI evaluation: LiDAR projection, the depth-benchmark PNGs, and a one-file
export of a split's GT (the equivalent of the reference ``gt_depths.npz``, but loadable without pickle).

Velodyne GT follows the procedure every Eigen-split paper evaluates against (Monodepth2's
``generate_depth_map``), so numbers are comparable:
- keep scan points with x_velo >= 0 (in front of the LiDAR), homogeneous reflectance 1;
- project with ``P_rect_0X @ R_rect_00 @ T_cam0_from_velo`` (split here into intrinsics K and a rigid
  ``T_cam_from_velo`` so that the projection is :func:`monodepth_ros.evaluation.lidar_gt.lidar_depth_map`, the same one
  replay's lidar GT uses);
- depth = the LiDAR forward distance x_velo (``depth_convention="lidar_forward"``, what the reference GT export
  uses and our default), or the camera's z, the projective depth w (``"camera_z"``);
- pixel = round(u) - 1, round(v) - 1 (the devkit's 1-based MATLAB convention, kept on purpose);
- keep pixels inside the image (size from ``S_rect_02``); the nearest point wins where several land on one pixel.

The "improved" GT (Uhrig et al. 2017, KITTI depth benchmark) is read from its 16-bit PNGs
(``proj_depth/groundtruth/image_0X/<frame>.png``, value / 256, 0 = invalid).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.cli_common import EXIT_OK, CliParser, run_guarded
from monodepth_ros.datasets import kitti
from monodepth_ros.evaluation.lidar_gt import DEPTH_CONVENTIONS, lidar_depth_map

__all__ = [
    "load_velodyne_points",
    "velo_to_image_projection",
    "kitti_camera_model",
    "ros_intrinsics",
    "generate_depth_map",
    "velodyne_path",
    "improved_gt_path",
    "load_gt_depth",
    "export_gt_npz",
    "load_gt_npz",
    "gt_npz_info",
    "GT_KINDS",
]

GT_KINDS = ("velodyne", "improved")


def load_velodyne_points(path: str | os.PathLike) -> np.ndarray:
    """KITTI ``.bin`` scan -> homogeneous points (N, 4) float64 (x, y, z, 1), LiDAR frame, metres.

    The file holds float32 (x, y, z, reflectance) records; reflectance is replaced by 1 for projection.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"velodyne scan not found: {path}")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 4:
        raise ValueError(f"velodyne scan {path} has {raw.size} floats, not a multiple of 4 (x, y, z, r)")
    pts = raw.reshape(-1, 4).astype(np.float64)
    pts[:, 3] = 1.0
    return pts


def velo_to_image_projection(calib_dir: str | os.PathLike, cam: int = 2) -> tuple[np.ndarray, tuple[int, int]]:
    """``P_velo_to_img`` (3, 4) = P_rect_0X @ R_rect_00 @ T_cam0_from_velo, and the image size (H, W).

    ``calib_dir`` = ``<data>/<date>`` holding ``calib_cam_to_cam.txt`` and ``calib_velo_to_cam.txt``.
    """
    calib_dir = Path(calib_dir)
    cam2cam_path = calib_dir / "calib_cam_to_cam.txt"
    cam2cam = kitti.read_calib_file(cam2cam_path)
    for key in (f"P_rect_{cam:02d}", "R_rect_00"):
        if key not in cam2cam:
            raise KeyError(f"{key} missing from {cam2cam_path}")
    T_cam0_from_velo = kitti.read_velo_to_cam(calib_dir)
    R_rect = np.eye(4)
    R_rect[:3, :3] = cam2cam["R_rect_00"].reshape(3, 3)
    P_rect = cam2cam[f"P_rect_{cam:02d}"].reshape(3, 4)
    # The reference takes the size from S_rect_02 for both cameras; the rectified sizes are equal in KITTI.
    size_key = f"S_rect_{cam:02d}" if f"S_rect_{cam:02d}" in cam2cam else "S_rect_02"
    if size_key not in cam2cam or cam2cam[size_key].size != 2:
        raise KeyError(f"{size_key} (width height) missing from {cam2cam_path}")
    width, height = (int(round(v)) for v in cam2cam[size_key])
    return P_rect @ R_rect @ T_cam0_from_velo, (height, width)


def kitti_camera_model(calib_dir: str | os.PathLike, cam: int = 2) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The rectified camera ``cam`` as pinhole intrinsics K (3, 3), the rigid ``T_cam_from_velo`` (4, 4) and the
    image size (H, W), such that ``K @ T_cam_from_velo[:3] == P_velo_to_img`` of :func:`velo_to_image_projection`.

    ``P_rect_0X = K [I | t]``: its last column is camera X's offset from the rectified camera 0 (the stereo
    baseline, and a few mm along z), so ``t = K^-1 P[:, 3]`` and ``T_cam_from_velo = [I | t] R_rect_00
    T_cam0_from_velo``. K is in the devkit's pixel coordinates (see :func:`ros_intrinsics`).
    """
    P_velo_to_img, size = velo_to_image_projection(calib_dir, cam)
    cam2cam = kitti.read_calib_file(Path(calib_dir) / "calib_cam_to_cam.txt")
    P_rect = cam2cam[f"P_rect_{cam:02d}"].reshape(3, 4)
    K = P_rect[:, :3].copy()
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0.0:
        raise ValueError(f"P_rect_{cam:02d} = {P_rect.tolist()} is not a rectified pinhole projection K [I | t]")
    t = np.linalg.solve(K, P_rect[:, 3])
    T_rect_from_velo = np.eye(4)
    T_rect_from_velo[:3, :3] = cam2cam["R_rect_00"].reshape(3, 3)
    T_cam_from_velo = T_rect_from_velo @ kitti.read_velo_to_cam(calib_dir)
    T_cam_from_velo[:3, 3] += t
    return K, T_cam_from_velo, size


def ros_intrinsics(K_devkit: np.ndarray) -> np.ndarray:
    """KITTI ``P_rect`` intrinsics (3, 3) -> the ROS/OpenCV camera_info K (3, 3) that puts lidar GT on the pixels
    the KITTI evaluation uses.

    The devkit (MATLAB, 1-based pixels) puts a point projecting to u on the 0-based column round(u) - 1; a ROS
    camera_info (pixel centres at 0, 1, ...) does the same with the principal point one pixel up and left.
    """
    K = np.array(K_devkit, dtype=np.float64)
    K[0, 2] -= 1.0
    K[1, 2] -= 1.0
    return K


def generate_depth_map(calib_dir: str | os.PathLike, velo_path: str | os.PathLike, cam: int = 2,
                       depth_convention: str = "lidar_forward") -> np.ndarray:
    """Sparse GT depth (H, W) float64 metres, 0 = no point, from one LiDAR scan.

    Args:
        calib_dir: ``<data>/<date>`` folder with the two calibration files.
        velo_path: ``velodyne_points/data/<frame>.bin``.
        cam: rectified camera index (2 = left colour, 3 = right colour).
        depth_convention: ``"lidar_forward"`` (x_velo: the reference's exported eval GT, the default) or
            ``"camera_z"`` (the rectified camera's projective depth w, REP 118).
    """
    K, T_cam_from_velo, (H, W) = kitti_camera_model(calib_dir, cam)
    velo = load_velodyne_points(velo_path)[:, :3]
    velo = velo[velo[:, 0] >= 0]
    # min_depth_m 0: the reference keeps every point in front of the LiDAR; only points behind the camera plane
    # cannot be projected (the reference would mirror them through the centre; there are none on real scans).
    return lidar_depth_map(velo, T_cam_from_velo, K, H, W, depth_convention=depth_convention, pixel_origin=1,
                           min_depth_m=0.0)


def velodyne_path(data_dir: str | os.PathLike, entry: kitti.SplitEntry) -> Path:
    """``<data>/<folder>/velodyne_points/data/<frame:010d>.bin``."""
    return Path(data_dir) / entry.folder / "velodyne_points" / "data" / f"{entry.frame:010d}.bin"


def improved_gt_path(data_dir: str | os.PathLike, entry: kitti.SplitEntry) -> Path:
    """``<data>/<folder>/proj_depth/groundtruth/image_0X/<frame:010d>.png`` (X from the entry's side)."""
    cam = kitti.side_to_cam(entry.side)
    return (Path(data_dir) / entry.folder / "proj_depth" / "groundtruth" / f"image_{cam:02d}"
            / f"{entry.frame:010d}.png")


def load_gt_depth(data_dir: str | os.PathLike, entry: kitti.SplitEntry, gt: str = "velodyne",
                  depth_convention: str = "lidar_forward") -> np.ndarray:
    """GT depth (H, W) float32 metres (0 = invalid) of one split entry, from velodyne or improved GT.

    ``depth_convention`` applies to velodyne GT only (the improved GT PNGs hold what they hold).
    """
    if gt == "velodyne":
        depth = generate_depth_map(kitti.calib_dir_for(data_dir, entry), velodyne_path(data_dir, entry),
                                   cam=kitti.side_to_cam(entry.side), depth_convention=depth_convention)
        return depth.astype(np.float32)
    if gt == "improved":
        return kitti.read_depth_png(improved_gt_path(data_dir, entry))
    raise ValueError(f"gt must be one of {GT_KINDS}, got {gt!r}")


def export_gt_npz(data_dir: str | os.PathLike, split_file: str | os.PathLike, out_path: str | os.PathLike,
                  gt: str = "velodyne", depth_convention: str = "lidar_forward") -> int:
    """Write every GT map of a split into one compressed ``.npz`` (atomically); returns the image count.

    Keys ``gt_0000``, ``gt_0001``, ... (split order) hold float32 (H, W) metres; ``split`` holds the split lines
    as a fixed-width unicode array; ``kind`` the GT kind and ``lidar_depth`` the depth convention of velodyne GT
    ("" for improved GT), read back by :func:`gt_npz_info`. Maps of different sizes are fine, and no object
    arrays are involved, so ``np.load(path, allow_pickle=False)`` reads it.
    """
    entries = kitti.read_split(split_file)
    if not entries:
        raise ValueError(f"split file {split_file} has no entries")
    arrays = {f"gt_{i:04d}": load_gt_depth(data_dir, e, gt, depth_convention) for i, e in enumerate(entries)}
    arrays["split"] = np.array([str(e) for e in entries])
    arrays["kind"] = np.array(gt)
    arrays["lidar_depth"] = np.array(depth_convention if gt == "velodyne" else "")
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out_path, buf.getvalue())
    return len(entries)


def gt_npz_info(path: str | os.PathLike) -> dict[str, str | None]:
    """``{"kind": ..., "lidar_depth": ...}`` recorded by :func:`export_gt_npz` (None for what is unknown).

    Files written before the convention was recorded hold velodyne GT as the reference exports it, so their
    ``lidar_depth`` is ``"lidar_forward"`` whenever they say nothing (they never recorded the kind either).
    """
    with np.load(Path(path), allow_pickle=False) as data:
        kind = str(data["kind"]) if "kind" in data.files else None
        if "lidar_depth" in data.files:
            depth = str(data["lidar_depth"]) or None
        else:
            depth = "lidar_forward" if kind in (None, "velodyne") else None
    return {"kind": kind, "lidar_depth": depth}


def load_gt_npz(path: str | os.PathLike) -> list[np.ndarray]:
    """GT maps from :func:`export_gt_npz` (never unpickles), in split order, as float32 (H, W) arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GT npz not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        keys = sorted((k for k in data.files if k.startswith("gt_")), key=lambda k: int(k[3:]))
        if not keys:
            raise ValueError(f"{path} holds no gt_XXXX arrays (written by export_gt_npz?)")
        return [data[k].astype(np.float32, copy=False) for k in keys]


def build_parser() -> CliParser:
    """The parser of ``python -m monodepth_ros.evaluation.kitti_gt`` (:mod:`monodepth_ros.cli_common` conventions)."""
    p = CliParser("python -m monodepth_ros.evaluation.kitti_gt",
                  "Export the GT depth of a KITTI split to one compressed .npz (monodepth-eval --gt-npz reads it).")
    p.add_argument("--data", type=Path, required=True, help="KITTI raw root (<data>/<date>/<drive>_sync/...)")
    p.add_argument("--split", type=Path, required=True, help="split file, lines '<date>/<drive> <frame> <l|r>'")
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    p.add_argument("--gt", choices=GT_KINDS, default="velodyne",
                   help="GT source: LiDAR projection or the depth-benchmark PNGs")
    p.add_argument("--lidar-depth", choices=DEPTH_CONVENTIONS, default="lidar_forward",
                   help="velodyne GT: the LiDAR's forward distance (KITTI's reference) or camera z")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m monodepth_ros.evaluation.kitti_gt --data DIR --split FILE --out gt_depths.npz``; exit codes as
    in :mod:`monodepth_ros.cli_common`."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def export() -> int:
        n = export_gt_npz(args.data, args.split, args.out, gt=args.gt, depth_convention=args.lidar_depth)
        what = f"{args.gt} ({args.lidar_depth})" if args.gt == "velodyne" else args.gt
        print(f"wrote {n} {what} GT maps to {args.out}")
        return EXIT_OK

    return run_guarded(parser.prog, export, bad_input=(FileNotFoundError, ValueError, KeyError))


if __name__ == "__main__":
    raise SystemExit(main())
