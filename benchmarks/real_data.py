"""Real-data benchmark: depth on a real KITTI raw drive (LiDAR GT) and pose ATE on KITTI odometry.

Depth, on ``kitti_raw/2011_09_26/2011_09_26_drive_sfnd_sync`` (78 colour frames, every 2nd by default), with the KITTI
protocol of ``monodepth-eval --gt velodyne`` (LiDAR forward distance projected by
:mod:`monodepth_ros.evaluation.kitti_gt`, Garg crop, GT in (0.001, 80) m, the 7 metrics averaged over images),
median-scaled and unscaled, for: the flat-road prior (:mod:`monodepth_ros.evaluation.priors`, no network), the
untrained network of the default model's architecture, the shipped default model and its INT8 twin, and every
``--model`` (.onnx or .safetensors). Pose, on odometry sequence 03 frames 700-800 (grey camera 0): the 5-frame
snippet ATE of every bundle's pose network against zero motion (and the GT poses, which must score 0).

    .venv/bin/python benchmarks/real_data.py --real ../shared/data/real [--model X.onnx ...] \
        [--model B.safetensors ...] [--out DIR]

Prints the tables, writes benchmarks/results/real_data.json and, into ``--out``, one ``panels_<row>.png`` per
depth row (image | prediction | GT | abs-rel error). The KITTI files are read in place (non-commercial licence):
the panels hold their pixels, so ``--out`` defaults to the git-ignored ``out/real_data``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monodepth_ros.backends import create_backend, preprocess
from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.datasets import kitti
from monodepth_ros.datasets.kitti_odometry import load_sequence, relative_poses
from monodepth_ros.evaluation import kitti_gt
from monodepth_ros.evaluation.metrics import MAX_DEPTH_M, METRIC_NAMES, MIN_DEPTH_M, evaluate_image, summarize
from monodepth_ros.evaluation.pose_eval import ate_snippets
from monodepth_ros.evaluation.priors import KITTI_CAMERA_HEIGHT_M, fit_camera_height, flat_road_depth
from monodepth_ros.geometry import invert_pose
from monodepth_ros.visualize import PanelRow, panel_grid

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "real_data.json"
DEFAULT_OUT = REPO / "out" / "real_data"
MODELS_DIR = REPO / "monodepth_ros" / "models"

RAW_DATE = "2011_09_26"
RAW_DRIVE = f"{RAW_DATE}/{RAW_DATE}_drive_sfnd_sync"
ODOM_SEQUENCE = "03"
POSE_FRAMES = (700, 800)  # held out from training (../shared/data/real/README.md), both ends included
SNIPPET = 5
CROP = "garg"
PRIOR_CAP_M = 20.0

# What the benchmark reads under --real, and what each piece is: named in the error when it is missing.
REQUIRED = (
    (f"kitti_raw/{RAW_DATE}/calib_cam_to_cam.txt", "the raw drive's camera calibration"),
    (f"kitti_raw/{RAW_DATE}/calib_velo_to_cam.txt", "the raw drive's LiDAR-to-camera calibration"),
    (f"kitti_raw/{RAW_DRIVE}/image_02/data", "the raw drive's colour frames"),
    (f"kitti_raw/{RAW_DRIVE}/velodyne_points/data", "the raw drive's LiDAR scans (the depth GT)"),
    (f"kitti_odometry/sequences/{ODOM_SEQUENCE}/image_0", "odometry sequence 03's grey frames"),
    (f"kitti_odometry/sequences/{ODOM_SEQUENCE}/calib.txt", "odometry sequence 03's calibration"),
    (f"kitti_odometry/sequences/{ODOM_SEQUENCE}/times.txt", "odometry sequence 03's time stamps"),
    (f"kitti_odometry/poses/{ODOM_SEQUENCE}.txt", "odometry sequence 03's GT poses"),
)


class RealDataError(Exception):
    """The --real folder is missing or lacks a piece the benchmark reads (exit code 2)."""


def check_real_root(real: Path) -> tuple[Path, Path]:
    """``(kitti_raw root, kitti_odometry root)`` under ``real``; :class:`RealDataError` names what is missing."""
    real = Path(real)
    if not real.is_dir():
        raise RealDataError(f"--real {real}: folder not found (expected the real-data folder holding kitti_raw/ and "
                            "kitti_odometry/, e.g. ../shared/data/real; see its README.md)")
    for rel, what in REQUIRED:
        if not (real / rel).exists():
            raise RealDataError(f"--real {real} lacks {rel} ({what})")
    return real / "kitti_raw", real / "kitti_odometry"


# --------------------------------------------------------------------------------------------------- depth


@dataclass
class DepthFrame:
    """One evaluation frame: RGB (H, W, 3) uint8 and its LiDAR GT (H, W) float32 metres (0 = no point)."""

    frame: int
    rgb: np.ndarray
    gt_m: np.ndarray


def load_raw_frames(raw_root: Path, drive: str = RAW_DRIVE, stride: int = 2) -> tuple[list[DepthFrame], np.ndarray]:
    """Every ``stride``-th frame of a KITTI raw drive with its velodyne GT, and the camera's K (3, 3).

    GT = :func:`monodepth_ros.evaluation.kitti_gt.load_gt_depth`, velodyne, ``depth_convention="lidar_forward"`` (the
    LiDAR's forward distance), as the reference evaluation and ``monodepth-eval`` use.
    """
    folder = Path(raw_root) / drive / "image_02" / "data"
    indices = sorted(int(p.stem) for p in folder.iterdir()
                     if p.stem.isdigit() and p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not indices:
        raise RealDataError(f"no frames in {folder}")
    frames = []
    for index in indices[::stride]:
        entry = kitti.SplitEntry(drive, index, "l")
        rgb = kitti.load_rgb(kitti.image_path(raw_root, entry))
        gt = kitti_gt.load_gt_depth(raw_root, entry, "velodyne", depth_convention="lidar_forward")
        if rgb.shape[:2] != gt.shape:
            raise ValueError(f"{entry}: image {rgb.shape[:2]} and GT {gt.shape} differ in size")
        frames.append(DepthFrame(index, rgb, gt))
    K = kitti.cam_intrinsics(kitti.calib_dir_for(raw_root, kitti.SplitEntry(drive, indices[0])), cam=2)
    return frames, K


def save_staged_frames(path: Path, frames: list[DepthFrame], height: int, width: int,
                       jpeg_quality: int | None = 95) -> dict:
    """Write ``frames`` for a machine without the raw drive (the GPU machine's 64 MiB upload): each RGB already
    shrunk to the network input ``height`` x ``width`` with :func:`resize_rgb` (the backend's own first step, so a
    model of that size reads the same pixels), then JPEG-encoded at ``jpeg_quality`` (None: raw, 3x larger; the
    re-encode's effect on the scores is measured in docs/benchmarks.md), and the LiDAR GT kept sparse at full size
    (flat pixel index int32 + metres float32, exact). One ``.npz``; KITTI's pixels: keep it git-ignored, never
    commit it."""
    import cv2

    from monodepth_ros.backends.base import resize_rgb

    if not frames:
        raise ValueError("no frames to stage")
    shape = frames[0].gt_m.shape
    idx, dep, counts = [], [], []
    for f in frames:
        if f.gt_m.shape != shape:
            raise ValueError(f"frame {f.frame}: GT {f.gt_m.shape}, the first frame's {shape}")
        flat = f.gt_m.reshape(-1)
        nz = np.flatnonzero(flat > 0)
        idx.append(nz.astype(np.int32))
        dep.append(flat[nz].astype(np.float32))
        counts.append(nz.size)
    rgb = np.stack([resize_rgb(f.rgb, height, width) for f in frames])
    images: dict[str, np.ndarray] = {"rgb": rgb}
    if jpeg_quality is not None:
        blobs = []
        for im in rgb:
            bgr = cv2.cvtColor(im, cv2.COLOR_RGB2BGR)
            ok, enc = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
            if not ok:
                raise RuntimeError("cannot JPEG-encode a staged frame")
            blobs.append(enc.reshape(-1))
        images = {"rgb_jpeg": np.concatenate(blobs), "rgb_jpeg_sizes": np.array([b.size for b in blobs], np.int64)}
    buf = io.BytesIO()
    np.savez_compressed(buf, **images, frame=np.array([f.frame for f in frames], np.int32),
                        gt_shape=np.array(shape, np.int32), gt_counts=np.array(counts, np.int64),
                        gt_index=np.concatenate(idx), gt_m=np.concatenate(dep))
    atomic_write_bytes(path, buf.getvalue())
    return {"frames": len(frames), "rgb_hw": [height, width], "gt_hw": list(shape), "gt_points": int(sum(counts)),
            "bytes": Path(path).stat().st_size}


def load_staged_frames(path: Path) -> list[DepthFrame]:
    """The frames :func:`save_staged_frames` wrote: RGB at the network size, dense GT (0 = no point) at full size."""
    import cv2

    with np.load(path, allow_pickle=False) as z:
        frame_ids, shape = z["frame"], tuple(int(v) for v in z["gt_shape"])
        counts, gi, gm = z["gt_counts"], z["gt_index"], z["gt_m"]
        if "rgb" in z:
            rgb = list(z["rgb"])
        else:
            ends = np.cumsum(z["rgb_jpeg_sizes"])
            blob = z["rgb_jpeg"]
            rgb = [cv2.cvtColor(cv2.imdecode(blob[e - n:e], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                   for e, n in zip(ends, z["rgb_jpeg_sizes"])]
    if len(rgb) != len(frame_ids) or len(counts) != len(rgb) or int(counts.sum()) != len(gi) or len(gi) != len(gm):
        raise RealDataError(f"{path}: staged frame arrays disagree in length")
    frames, start = [], 0
    for i, n in enumerate(counts):
        gt = np.zeros(shape[0] * shape[1], np.float32)
        gt[gi[start:start + n]] = gm[start:start + n]
        start += int(n)
        frames.append(DepthFrame(int(frame_ids[i]), rgb[i], gt.reshape(shape)))
    return frames


@dataclass
class DepthModel:
    """A row of the depth table: ``predict(rgb (H, W, 3) uint8, (H, W)) -> depth (H, W)`` in model units.

    ``scale_policy`` as in the model metadata: "relative" models have no unscaled row (``unscaled_note`` says why).
    """

    name: str
    scale_policy: str
    predict: Callable[[np.ndarray, tuple[int, int]], np.ndarray]
    source: str = ""
    close: Callable[[], None] | None = None

    @property
    def has_scale(self) -> bool:
        return self.scale_policy != "relative"


def road_mask(gt_m: np.ndarray, K: np.ndarray, camera_height_m: float, tol_m: float = 0.25) -> np.ndarray:
    """(H, W) bool: GT pixels whose point lies within ``tol_m`` of the road plane under a level camera, i.e. whose
    height below the camera ``y = z (v - cy) / fy`` is ``camera_height_m +- tol_m`` (the LiDAR's road returns)."""
    v = np.arange(gt_m.shape[0], dtype=np.float64)[:, None]
    y = gt_m * (v - K[1, 2]) / K[1, 1]
    return (gt_m > 0) & (np.abs(y - camera_height_m) < tol_m)


def surface_breakdown(frames: list[DepthFrame], preds: list[np.ndarray], K: np.ndarray, camera_height_m: float,
                      scaled: bool) -> dict:
    """Where the error is: abs_rel and median(pred / GT) on the LiDAR's road returns (:func:`road_mask`) and on
    everything else (cars, trucks, walls, trees), pooled over all frames' valid GT pixels. ``scaled``: median-scale
    each prediction first (relative models); otherwise the prediction is taken as metres."""
    from monodepth_ros.evaluation.metrics import median_scale, valid_mask

    parts: dict[str, list[np.ndarray]] = {"road": [], "other": []}
    for f, pred in zip(frames, preds, strict=True):
        valid = valid_mask(f.gt_m, MIN_DEPTH_M, MAX_DEPTH_M, CROP) & np.isfinite(pred) & (pred > 0)
        p = pred * (median_scale(f.gt_m, pred, valid) if scaled else 1.0)
        p = np.clip(p, MIN_DEPTH_M, MAX_DEPTH_M)
        road = road_mask(f.gt_m, K, camera_height_m)
        for name, m in (("road", valid & road), ("other", valid & ~road)):
            parts[name].append(np.stack([f.gt_m[m], p[m]]))
    out, total = {}, sum(sum(a.shape[1] for a in v) for v in parts.values())
    for name, arrays in parts.items():
        gt, p = np.concatenate(arrays, axis=1) if arrays else np.zeros((2, 0))
        out[name] = {"share": float(gt.size / max(total, 1)),
                     "abs_rel": float(np.mean(np.abs(p - gt) / gt)) if gt.size else None,
                     "pred_over_gt": float(np.median(p / gt)) if gt.size else None}
    return out


def ground_plane_check(frames: list[DepthFrame], preds: list[np.ndarray], K: np.ndarray,
                       camera_height_m: float) -> dict:
    """The node's ``ground_plane`` scale policy on these frames, against the LiDAR.

    Runs :class:`monodepth_ros.scale_policy.GroundPlaneScale` (the node's estimator, its default settings, EMA
    over the frames in order) on each prediction (H, W) with K (3, 3), and compares its scale with two LiDAR
    scales of the same frame: over the road returns (:func:`road_mask`; what the estimator measures) and over all
    valid GT pixels (the median ratio of the metrics). The road returns are taken in the rows the estimator looks
    at (below ``region_top``), so the check compares the two on the same stretch of road: a model's far road can
    be off in a way the estimator never sees. Also scores the depth scaled by the estimator's scale.
    """
    from monodepth_ros.evaluation.metrics import median_scale, valid_mask
    from monodepth_ros.scale_policy import GroundPlaneScale

    est = GroundPlaneScale(camera_height_m=camera_height_m)
    fitted, vs_road, vs_all, per_image = 0, [], [], []
    for i, (f, pred) in enumerate(zip(frames, preds, strict=True)):
        scale = est.update(pred, K)
        fitted += int(est.fresh)
        if scale is None:
            continue
        valid = valid_mask(f.gt_m, MIN_DEPTH_M, MAX_DEPTH_M, CROP) & np.isfinite(pred) & (pred > 0)
        road = valid & road_mask(f.gt_m, K, camera_height_m)
        road[: int(round(est.region_top * road.shape[0]))] = False
        if road.sum() >= 50:
            vs_road.append(scale / median_scale(f.gt_m, pred, road))
        vs_all.append(scale / median_scale(f.gt_m, pred, valid))
        per_image.append(evaluate_image(f.gt_m, pred * np.float32(scale), median_scaling=False, min_depth=MIN_DEPTH_M,
                                        max_depth=MAX_DEPTH_M, cap_m=MAX_DEPTH_M, crop=CROP, index=i))

    def stats(r: list[float]) -> dict:
        r = np.asarray(r)
        return {"n": int(r.size), "median": float(np.median(r)) if r.size else None,
                "within_10pct": float(np.mean(np.abs(r - 1) <= 0.1)) if r.size else None}

    return {"camera_height_m": camera_height_m, "frames_fitted": fitted, "n_frames": len(frames),
            "scale_over_lidar_road": stats(vs_road), "scale_over_lidar_all": stats(vs_all),
            "metrics": summarize(per_image, median_scaling=False).metrics if per_image else None}


def score_depth_model(frames: list[DepthFrame], model: DepthModel, panel_at: set[int] = frozenset(),
                      K: np.ndarray | None = None, camera_height_m: float = KITTI_CAMERA_HEIGHT_M,
                      ) -> tuple[dict, list[PanelRow]]:
    """Median-scaled and (unless relative) unscaled KITTI metrics of one model over ``frames``.

    Returns the JSON row (metrics = mean over images; ``ratio_mean`` / ``ratio_std`` = the per-image median ratios
    GT / prediction, i.e. scale consistency) and the panel rows of the frames in ``panel_at``, shown unscaled for
    a model with a scale and median-scaled for a relative one. With ``K`` (3, 3) the row also has the node's
    ``ground_plane`` scale policy checked against the LiDAR (:func:`ground_plane_check`).
    """
    per_scaled, per_unscaled, panels, preds = [], [], [], []
    for i, f in enumerate(frames):
        pred = np.asarray(model.predict(f.rgb, f.gt_m.shape), dtype=np.float32)
        preds.append(pred)
        kw = {"min_depth": MIN_DEPTH_M, "max_depth": MAX_DEPTH_M, "cap_m": MAX_DEPTH_M, "crop": CROP, "index": i}
        scaled = evaluate_image(f.gt_m, pred, median_scaling=True, **kw)
        per_scaled.append(scaled)
        if model.has_scale:
            per_unscaled.append(evaluate_image(f.gt_m, pred, median_scaling=False, **kw))
        if i in panel_at:
            shown_ratio, how = (1.0, "unscaled") if model.has_scale else (scaled["ratio"], "median-scaled")
            err = (per_unscaled[-1] if model.has_scale else scaled)["abs_rel"]
            panels.append(PanelRow(f.rgb, np.clip(pred * shown_ratio, MIN_DEPTH_M, MAX_DEPTH_M), f.gt_m,
                                   f"frame {f.frame} abs_rel {err:.3f} ({how})"))
    s = summarize(per_scaled, median_scaling=True)
    row = {
        "name": model.name,
        "source": model.source,
        "scale_policy": model.scale_policy,
        "median_scaled": s.metrics,
        "ratio_mean": s.ratio_mean,
        "ratio_std": s.ratio_std,
        "ratio_std_rel": s.ratio_std_rel,
        "unscaled": summarize(per_unscaled, median_scaling=False).metrics if model.has_scale else None,
        "unscaled_note": None if model.has_scale else
        "scale_policy 'relative': the depth is known up to scale only, so unscaled numbers mean nothing",
        "ground_plane": ground_plane_check(frames, preds, K, camera_height_m) if K is not None else None,
        "by_surface": surface_breakdown(frames, preds, K, camera_height_m, scaled=not model.has_scale)
        if K is not None else None,
    }
    return row, panels


def prior_model(K: np.ndarray, shape: tuple[int, int], camera_height_m: float, how: str) -> DepthModel:
    """The flat-road prior as a depth row: the same map for every frame of the camera K at ``shape``."""
    depth = flat_road_depth(K, shape[0], shape[1], camera_height_m, PRIOR_CAP_M)

    def predict(_rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if tuple(size) != depth.shape:
            raise ValueError(f"flat-road prior built for {depth.shape}, asked for {tuple(size)}")
        return depth

    return DepthModel(f"flat-road prior (h={camera_height_m:.2f} m)", "metric", predict,
                      f"no network: level road, camera {camera_height_m:.2f} m high ({how}), capped at "
                      f"{PRIOR_CAP_M:g} m and {PRIOR_CAP_M:g} m above the horizon")


def backend_model(name: str, path: Path, kind: str, threads: int) -> DepthModel:
    """A depth row through the runtime backend (``infer`` resizes the disparity to GT size, then inverts)."""
    backend = create_backend(path, kind=kind, threads=threads)

    def predict(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return backend.infer(rgb, out_size=size)

    sha = backend.info.source_sha256
    source = f"{_show(path)} (source bundle sha256 {sha[:12]})" if sha else _show(path)
    return DepthModel(name, backend.info.scale_policy, predict, source, backend.close)


def default_architecture(models_dir: Path = MODELS_DIR) -> dict:
    """Architecture of the shipped default model: name, size and depth range from ``default.onnx``'s metadata,
    constructor kwargs (width, input colour, ...) from the training config that ``default_model.json`` names."""
    import yaml

    from monodepth_ros.backends import read_onnx_model_meta

    meta = read_onnx_model_meta(models_dir / "default.onnx")
    record = json.loads((models_dir / "default_model.json").read_text())
    config = REPO / record["config"]
    model_cfg = (yaml.safe_load(config.read_text()) or {}).get("model", {})
    if model_cfg.get("depth_net", meta.depth_net) != meta.depth_net:
        raise ValueError(f"{config} names depth_net {model_cfg.get('depth_net')!r} but default.onnx is "
                         f"{meta.depth_net!r}: re-export the default model")
    return {"depth_net": meta.depth_net, "depth_kwargs": dict(model_cfg.get("depth_kwargs") or {}),
            "height": meta.height, "width": meta.width, "min_depth": meta.min_depth, "max_depth": meta.max_depth,
            "config": str(config.relative_to(REPO))}


def untrained_model(tmp_dir: Path, threads: int, seed: int = 0) -> DepthModel:
    """The default model's architecture at its initialisation (``torch.manual_seed(seed)``, as
    ``train_default.heldout_scores`` builds it), saved as a relative bundle and run by the torch backend."""
    import torch
    from monodepth_training.bundle_io import save_bundle
    from monodepth_training.networks import build_depth_net

    from monodepth_ros.bundle import BundleMeta

    arch = default_architecture()
    torch.manual_seed(seed)
    net = build_depth_net(arch["depth_net"], **arch["depth_kwargs"]).eval()
    path = tmp_dir / "untrained.safetensors"
    save_bundle(path, net, BundleMeta(depth_net=arch["depth_net"], height=arch["height"], width=arch["width"],
                                      min_depth=arch["min_depth"], max_depth=arch["max_depth"],
                                      depth_kwargs=arch["depth_kwargs"], scale_policy="relative"))
    model = backend_model(f"untrained {arch['depth_net']}", path, "torch", threads)
    kwargs = ", ".join(f"{k}={v}" for k, v in arch["depth_kwargs"].items() if v is not None)
    model.source = (f"{arch['depth_net']}({kwargs}) {arch['width']}x{arch['height']} from {arch['config']}, "
                    f"seed {seed}, no training")
    return model


# ---------------------------------------------------------------------------------------------------- pose


def load_pose_frames(odom_root: Path, sequence: str = ODOM_SEQUENCE, frames: tuple[int, int] = POSE_FRAMES,
                     cam: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """RGB images (N of (H, W, 3) uint8) and GT ``T_world_from_cam`` (N, 4, 4) of frames ``first..last`` inclusive.

    Grey frames decode to three equal channels: what the node feeds a model for a mono8 camera.
    """
    seq = load_sequence(odom_root, sequence)
    if seq.poses is None:
        raise RealDataError(f"odometry sequence {sequence} under {odom_root} has no GT poses")
    first, last = frames
    images = seq.images.get(cam, {})
    missing = [i for i in range(first, last + 1) if i not in images]
    if missing or last >= seq.poses.shape[0]:
        raise RealDataError(f"odometry sequence {sequence} lacks frames {missing[:5] or [last]} of {first}-{last} "
                            f"(camera {cam})")
    rgb = [kitti.load_rgb(images[i]) for i in range(first, last + 1)]
    return rgb, seq.poses[first : last + 1]


def pose_net_relative_poses(pose_net, frames_rgb: list[np.ndarray], height: int, width: int,
                            batch: int = 16) -> np.ndarray:
    """``T_{i}_from_{i+1}`` (N - 1, 4, 4) predicted by a pose network for consecutive frames (N of (H, W, 3) uint8).

    Fed as in training: target = frame i, source = frame i + 1, giving ``T_src_from_tgt`` = ``T_{i+1}_from_{i}``, which
    is inverted into the convention :func:`monodepth_ros.evaluation.pose_eval.ate_snippets` takes. Frames are resized
    with the runtime's :func:`~monodepth_ros.backends.preprocess` to the network's ``height`` x ``width``.
    """
    import torch
    from monodepth_training.networks import predict_T_src_from_tgt

    x = torch.from_numpy(np.concatenate([preprocess(f, height, width) for f in frames_rgb]))
    n_pairs = x.shape[0] - 1
    out = []
    with torch.inference_mode():
        for start in range(0, n_pairs, batch):
            stop = min(start + batch, n_pairs)
            T = predict_T_src_from_tgt(pose_net, x[start:stop], x[start + 1 : stop + 1], src_is_before=False)
            out.append(T.double().cpu().numpy())
    return invert_pose(np.concatenate(out))


def pose_rows(gt_poses: np.ndarray, predictions: dict[str, np.ndarray], snippet: int = SNIPPET) -> list[dict]:
    """Snippet ATE (mean, std; metres, the papers' per-window error) of the GT relative poses (a check: 0), of
    zero motion, of constant straight-ahead motion and of each prediction ``name -> T_{i}_from_{i+1}`` (N - 1, 4, 4)
    against ``gt_poses`` = ``T_world_from_cam`` (N, 4, 4)."""
    n = gt_poses.shape[0]
    # Straight ahead at any constant speed: the per-window scale fit supplies the speed, so this is what a pose
    # net that outputs one forward motion for every pair scores, a stronger baseline than standing still.
    ahead = np.tile(np.eye(4), (n - 1, 1, 1))
    ahead[:, 2, 3] = 1.0
    candidates = {"GT poses (check: 0)": relative_poses(gt_poses),
                  "zero motion": np.broadcast_to(np.eye(4), (n - 1, 4, 4)),
                  "straight ahead, constant speed": ahead,
                  **predictions}
    rows = []
    for name, rel in candidates.items():
        mean, std = ate_snippets(gt_poses, rel, snippet=snippet)
        rows.append({"name": name, "ate_mean_m": mean, "ate_std_m": std})
    return rows


# --------------------------------------------------------------------------------------------------- output


def _show(path: Path) -> str:
    """A path relative to the repository when it is inside it (reports stay the same on every clone)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _ordinal_suffix(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def panel_indices(n_frames: int, n_panels: int) -> set[int]:
    """``n_panels`` frame positions spread evenly over ``n_frames`` (none for ``n_panels <= 0``)."""
    if n_panels <= 0 or n_frames == 0:
        return set()
    return {int(i) for i in np.round(np.linspace(0, n_frames - 1, min(n_panels, n_frames)))}


def format_depth_table(rows: list[dict]) -> str:
    """The depth table: two lines per model (median-scaled, unscaled), ``–`` where a model has no scale."""
    name_w = max([len("model")] + [len(r["name"]) for r in rows])
    header = f"{'model':<{name_w}}  {'scaling':<8}" + "".join(f"{m:>9}" for m in METRIC_NAMES) + "  ratio mean ± std"
    lines = [header, "-" * len(header)]
    for r in rows:
        scaled = r["median_scaled"]
        lines.append(f"{r['name']:<{name_w}}  {'median':<8}" + "".join(f"{scaled[m]:>9.3f}" for m in METRIC_NAMES)
                     + f"  {r['ratio_mean']:.3f} ± {r['ratio_std']:.3f}")
        un = r["unscaled"]
        cells = "".join(f"{un[m]:>9.3f}" if un else f"{'–':>9}" for m in METRIC_NAMES)
        lines.append(f"{'':<{name_w}}  {'unscaled':<8}" + cells + ("" if un else "  (relative model)"))
        gp = (r.get("ground_plane") or {}).get("metrics")
        if gp:
            lines.append(f"{'':<{name_w}}  {'ground':<8}" + "".join(f"{gp[m]:>9.3f}" for m in METRIC_NAMES)
                         + "  (node's ground_plane scale)")
    return "\n".join(lines)


def format_ground_plane(rows: list[dict]) -> str:
    """One line per model: how often the node's ground_plane policy fitted a road and how its scale compares
    with the LiDAR's (on the road returns, and over all GT pixels)."""
    lines = []
    for r in rows:
        gp = r.get("ground_plane")
        if not gp:
            continue
        road, every = gp["scale_over_lidar_road"], gp["scale_over_lidar_all"]

        def fmt(d: dict) -> str:
            return "n/a" if not d["n"] else f"median {d['median']:.3f}, within 10 % in {100 * d['within_10pct']:.0f} %"

        lines.append(f"  {r['name']}: road found in {gp['frames_fitted']}/{gp['n_frames']} frames; scale / LiDAR "
                     f"scale on the road: {fmt(road)}; over all GT: {fmt(every)}")
    return "\n".join(lines)


def format_pose_table(rows: list[dict]) -> str:
    name_w = max([len("pose")] + [len(r["name"]) for r in rows])
    lines = [f"{'pose':<{name_w}}  {'ATE mean (m)':>12}  {'std (m)':>8}", "-" * (name_w + 24)]
    lines += [f"{r['name']:<{name_w}}  {r['ate_mean_m']:>12.4f}  {r['ate_std_m']:>8.4f}" for r in rows]
    return "\n".join(lines)


def _prior_height(text: str) -> float | str:
    if text == "fit":
        return text
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--prior-height must be metres or 'fit', got {text!r}") from e
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--prior-height must be positive, got {value}")
    return value


def _backend_kind(model: Path) -> str:
    """A training bundle runs on the torch backend, anything else (an exported .onnx) on ONNX Runtime."""
    return "torch" if model.suffix.lower() == ".safetensors" else "onnxruntime"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real",
                   help="real-data folder holding kitti_raw/ and kitti_odometry/ (default ../shared/data/real)")
    p.add_argument("--model", type=Path, action="append", default=[],
                   help="a model to score (repeatable): an exported .onnx (ONNX Runtime), or a .safetensors bundle "
                   "(depth through the torch backend, and its pose net)")
    p.add_argument("--no-default", action="store_true",
                   help="skip the shipped default model, its INT8 twin and the untrained network")
    p.add_argument("--stride", type=int, default=2,
                   help="evaluate every n-th frame of the drive (2 = 39 of 78 frames, as issue 14 measured)")
    p.add_argument("--prior-height", type=_prior_height, default=KITTI_CAMERA_HEIGHT_M,
                   help="camera height of the flat-road prior in metres, or 'fit' (once, from the LiDAR GT)")
    p.add_argument("--panels", type=int, default=4, help="frames per panel PNG (0 = no panels)")
    p.add_argument("--threads", type=int, default=1, help="inference threads (ONNX Runtime and torch)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="folder for the panels (they hold KITTI pixels: never commit them)")
    p.add_argument("--json", type=Path, default=RESULTS, help="where the JSON report goes")
    return p


def run(args: argparse.Namespace) -> dict:
    """Everything but the argument parsing: returns the report that is printed and written."""
    raw_root, odom_root = check_real_root(args.real)
    frames, K = load_raw_frames(raw_root, RAW_DRIVE, args.stride)
    shape = frames[0].gt_m.shape
    if args.prior_height == "fit":
        height_m = fit_camera_height([f.gt_m for f in frames], K)
        how = f"fitted once: mode of the LiDAR GT's height below the camera over the {len(frames)} frames"
    else:
        height_m, how = float(args.prior_height), "given"
    print(f"flat-road prior: camera height {height_m:.3f} m ({how})", file=sys.stderr)

    depth_rows, panel_files, pose_preds, notes = [], {}, {}, []
    panel_at = panel_indices(len(frames), args.panels)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mdr-real-") as tmp:
        makers: list[Callable[[], DepthModel]] = [lambda: prior_model(K, shape, height_m, how)]
        if not args.no_default:
            makers.append(lambda: untrained_model(Path(tmp), args.threads))
            shipped = (("default model", "default.onnx"), ("default model INT8", "default.int8.onnx"))
            makers += [lambda n=name, f=file: backend_model(n, MODELS_DIR / f, "onnxruntime", args.threads)
                       for name, file in shipped]
        makers += [lambda p=p: backend_model(p.name, p, _backend_kind(p), args.threads) for p in args.model]
        for make in makers:
            model = make()
            print(f"  depth: {model.name}", file=sys.stderr)
            try:
                row, panels = score_depth_model(frames, model, panel_at, K, height_m)
            finally:
                if model.close:
                    model.close()
            if panels:
                path = args.out / f"panels_{_slug(model.name)}.png"
                panel_grid(panels, path, min_m=1.0, max_m=MAX_DEPTH_M)
                row["panels"] = panel_files[model.name] = _show(path)
            depth_rows.append(row)

    pose_images, gt_poses = load_pose_frames(odom_root)
    for path in (p for p in args.model if _backend_kind(p) == "torch"):
        from monodepth_training.bundle_io import load_bundle

        _depth_net, pose_net, meta = load_bundle(path)
        if pose_net is None:
            notes.append(f"{path.name}: no pose network in the bundle, no pose row")
            continue
        print(f"  pose: {path.name}", file=sys.stderr)
        pose_preds[f"{path.name} pose net"] = pose_net_relative_poses(pose_net, pose_images, meta.height, meta.width)
    steps = np.linalg.norm(np.diff(gt_poses[:, :3, 3], axis=0), axis=1)

    return {
        "benchmark": "real_data",
        "measured_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "what": "depth on a real KITTI raw drive against projected LiDAR, and pose ATE on KITTI odometry 03",
        "depth_protocol": {
            "data": f"kitti_raw/{RAW_DRIVE}", "frames": [f.frame for f in frames], "n_frames": len(frames),
            "stride": args.stride, "gt": "velodyne (LiDAR forward distance, kitti_gt.load_gt_depth)",
            "crop": CROP, "min_depth_m": MIN_DEPTH_M, "max_depth_m": MAX_DEPTH_M,
            "prediction_clamp_m": [MIN_DEPTH_M, MAX_DEPTH_M], "mean": "over images",
            "ratio": "per-image median(gt) / median(pred) over the valid pixels",
        },
        "prior": {"camera_height_m": height_m, "how": how, "max_depth_m": PRIOR_CAP_M},
        "depth": depth_rows,
        "pose_protocol": {
            "data": f"kitti_odometry/sequences/{ODOM_SEQUENCE}", "camera": 0, "frames": list(POSE_FRAMES),
            "snippet": SNIPPET, "error": "papers (sqrt(sum |e|^2) / n per window, scale fitted per window)",
            "mean_gt_step_m": float(steps.mean()),
        },
        "pose": pose_rows(gt_poses, pose_preds),
        "notes": notes,
        "panels": panel_files,
        "machine": {"cores": os.cpu_count(), "threads": args.threads},
    }


def print_report(report: dict) -> None:
    dp, pp = report["depth_protocol"], report["pose_protocol"]
    every = "every frame" if dp["stride"] == 1 else f"every {dp['stride']}{_ordinal_suffix(dp['stride'])} frame"
    print(f"Depth on {dp['data']}: {dp['n_frames']} frames ({every}), LiDAR GT, {dp['crop']} crop, "
          f"({dp['min_depth_m']:g}, {dp['max_depth_m']:g}) m, mean over images")
    print(format_depth_table(report["depth"]))
    print("ratio = per-image median(GT) / median(prediction), mean ± std over the frames (scale consistency)")
    print("ground = depth times the scale of the node's ground_plane policy (camera height "
          f"{report['prior']['camera_height_m']:.2f} m, EMA over the frames in order)")
    print(format_ground_plane(report["depth"]))
    print("where the error is (LiDAR returns on the road vs everything else; unscaled, or median-scaled for a "
          "relative model):")
    for r in report["depth"]:
        b = r.get("by_surface")
        if b and b["road"]["abs_rel"] is not None and b["other"]["abs_rel"] is not None:
            print(f"  {r['name']}: road ({100 * b['road']['share']:.0f} % of GT) abs_rel {b['road']['abs_rel']:.3f}, "
                  f"pred/GT {b['road']['pred_over_gt']:.2f}; other ({100 * b['other']['share']:.0f} %) abs_rel "
                  f"{b['other']['abs_rel']:.3f}, pred/GT {b['other']['pred_over_gt']:.2f}")
    for note in sorted({r["unscaled_note"] for r in report["depth"] if r["unscaled_note"]}):
        print(f"'–': {note}")
    for r in report["depth"]:
        print(f"  {r['name']}: {r['source']}")
    print()
    print(f"Pose on {pp['data']} frames {pp['frames'][0]}-{pp['frames'][1]} (camera {pp['camera']}): ATE on "
          f"{pp['snippet']}-frame snippets, mean GT step {pp['mean_gt_step_m']:.3f} m")
    print(format_pose_table(report["pose"]))
    for note in report["notes"]:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stride < 1:
        parser.error(f"--stride must be >= 1, got {args.stride}")
    try:
        report = run(args)
    except RealDataError as e:
        print(f"real_data: error: {e}", file=sys.stderr)
        return 2
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.json, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())
    print(f"\nwrote {args.json}" + (f" and panels in {args.out}" if report["panels"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
