"""``monodepth-eval``: evaluate a depth model on a KITTI-layout split with the papers' protocol.

Thin shell: reads the split, loads GT (velodyne projection, improved-GT PNGs, or an exported ``.npz``; velodyne GT
holds the LiDAR's forward distance as KITTI's reference does, or camera z with ``--lidar-depth camera_z``, and
``metrics.json`` records which under ``lidar_depth``), runs the model through a
:class:`~monodepth_ros.backends.DepthBackend` (disparity resized to GT resolution, then inverted), scores each image
with :mod:`monodepth_ros.evaluation.metrics`, and writes ``metrics.json`` and ``panels.png``.

    monodepth-eval --model model.onnx --data kitti_raw --split splits/eigen/test_files.txt --out eval_results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.cli_common import CliParser, run_guarded
from monodepth_ros.datasets import kitti
from monodepth_ros.evaluation import kitti_gt
from monodepth_ros.evaluation.lidar_gt import DEPTH_CONVENTIONS
from monodepth_ros.evaluation.metrics import MAX_DEPTH_M, MIN_DEPTH_M, evaluate_image, format_table, summarize
from monodepth_ros.visualize import PanelRow, panel_grid

__all__ = ["PROG", "MODEL_BACKENDS", "ONNX_BACKENDS", "build_parser", "main", "model_backend", "resolve_gt_kind"]

PROG = "monodepth-eval"
# --model suffix -> default backend kind: an exported model runs on ONNX Runtime (the reference the INT8 budget and
# the published numbers were measured with), a training bundle on the trainer's torch.
MODEL_BACKENDS = {".onnx": "onnxruntime", ".safetensors": "torch"}
# --backend choices for an exported .onnx (a .safetensors bundle runs on torch only).
ONNX_BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(PROG, "Evaluate a depth model on a KITTI-layout split (Eigen protocol: median scaling, "
                  "Garg crop, 80 m cap, mean over images).")
    p.add_argument("--model", type=Path, required=True,
                   help="the model to score: an exported .onnx (ONNX Runtime) or a .safetensors bundle from "
                   "monodepth-train (torch backend, needs the trainer installed)")
    p.add_argument("--data", type=Path, required=True, help="KITTI raw root (<data>/<date>/<drive>_sync/...)")
    p.add_argument("--split", type=Path, required=True, help="split file, lines '<date>/<drive> <frame> <l|r>'")
    p.add_argument("--gt", choices=("auto", "improved", "velodyne"), default="auto",
                   help="GT source: depth-benchmark PNGs, LiDAR projection, or auto (improved if present)")
    p.add_argument("--lidar-depth", choices=DEPTH_CONVENTIONS, default="lidar_forward",
                   help="what a velodyne GT pixel holds: the LiDAR's forward distance x_velo (KITTI's reference "
                   "GT and every Eigen-split paper) or camera z, the optical-axis depth (REP 118, "
                   "monodepth-replay's default)")
    p.add_argument("--gt-npz", type=Path, default=None,
                   help="GT exported with export_gt_npz; written first from --gt if the file does not exist")
    p.add_argument("--crop", choices=("garg", "eigen", "none"), default="garg",
                   help="evaluation crop: only GT pixels inside it count")
    ms = p.add_mutually_exclusive_group()
    ms.add_argument("--median-scaling", dest="median_scaling", action="store_true", default=None,
                    help="per-image median scaling (default for scale_policy 'relative' models)")
    ms.add_argument("--no-median-scaling", dest="median_scaling", action="store_false",
                    help="no median scaling (default for 'fixed'/'metric' models); see --scale")
    p.add_argument("--scale", type=float, default=1.0,
                   help="extra fixed factor on predictions, applied before median scaling (e.g. 5.4)")
    p.add_argument("--min-depth", type=float, default=MIN_DEPTH_M, help="GT lower bound and prediction clamp (m)")
    p.add_argument("--max-depth", type=float, default=MAX_DEPTH_M, help="GT cap and prediction clamp (m)")
    p.add_argument("--out", type=Path, default=Path("eval_results"), help="folder for metrics.json and panels.png")
    p.add_argument("--panels", type=int, default=4, help="frames in the panel grid (0 = none), spread over the split")
    p.add_argument("--threads", type=int, default=None, help="inference threads (backend default if unset)")
    p.add_argument("--backend", choices=(*ONNX_BACKENDS, "torch"), default=None,
                   help="inference backend; default: onnxruntime for an .onnx, torch for a .safetensors bundle. "
                   f"An .onnx also runs on {', '.join(b for b in ONNX_BACKENDS if b != 'onnxruntime')} "
                   "(auto: the runtime's choice, TensorRT > ONNX Runtime CUDA > OpenVINO > ONNX Runtime CPU)")
    return p


def model_backend(model: Path, backend: str | None = None) -> str:
    """The backend kind that runs ``model``: ``backend`` if given and able to run it, else the default for its
    suffix (:data:`MODEL_BACKENDS`); ValueError for an unknown suffix or a backend that cannot run the file."""
    kind = MODEL_BACKENDS.get(model.suffix.lower())
    if kind is None:
        raise ValueError(f"--model must be an exported .onnx (ONNX Runtime) or a .safetensors bundle (torch), "
                         f"got {model}")
    if backend is None:
        return kind
    allowed = ONNX_BACKENDS if kind == "onnxruntime" else ("torch",)
    if backend not in allowed:
        raise ValueError(f"--backend {backend} cannot run {model.name}: choose from {', '.join(allowed)}")
    return backend


def resolve_gt_kind(data_dir: Path, entries: list[kitti.SplitEntry], gt: str) -> str:
    """``auto`` -> ``improved`` when the first entry has a depth-benchmark PNG, else ``velodyne``."""
    if gt != "auto":
        return gt
    return "improved" if kitti_gt.improved_gt_path(data_dir, entries[0]).is_file() else "velodyne"


def _panel_indices(n_images: int, n_panels: int) -> set[int]:
    if n_panels <= 0:
        return set()
    return {int(i) for i in np.round(np.linspace(0, n_images - 1, min(n_panels, n_images)))}


def _finite_or_null(obj):
    """NaN/inf -> None, recursively: strict JSON (e.g. the ratio statistics without median scaling)."""
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_null(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _run(args: argparse.Namespace) -> int:
    entries = kitti.read_split(args.split)
    if not entries:
        raise ValueError(f"split file {args.split} has no entries")
    gt_kind = resolve_gt_kind(args.data, entries, args.gt)
    lidar_depth = args.lidar_depth if gt_kind == "velodyne" else None
    gt_maps = None
    if args.gt_npz is not None:
        if not args.gt_npz.is_file():
            print(f"exporting {gt_kind} GT of {len(entries)} images to {args.gt_npz}", file=sys.stderr)
            kitti_gt.export_gt_npz(args.data, args.split, args.gt_npz, gt=gt_kind, depth_convention=args.lidar_depth)
        recorded = kitti_gt.gt_npz_info(args.gt_npz)["lidar_depth"]
        if lidar_depth is not None and recorded not in (None, lidar_depth):
            # A silently different convention moves unscaled abs_rel by several percent on KITTI.
            raise ValueError(f"{args.gt_npz} holds {recorded} velodyne GT but --lidar-depth is {lidar_depth}: "
                             f"pass --lidar-depth {recorded}, or another --gt-npz path to export it anew")
        gt_maps = kitti_gt.load_gt_npz(args.gt_npz)
        if len(gt_maps) != len(entries):
            raise ValueError(f"{args.gt_npz} holds {len(gt_maps)} GT maps but {args.split} has {len(entries)} lines")

    # Imported here: the backends package pulls in ONNX Runtime (or torch through an entry point), which the
    # rest of the evaluation code does not need.
    from monodepth_ros.backends import create_backend

    model_path = args.model
    backend = create_backend(model_path, kind=model_backend(model_path, args.backend), threads=args.threads)
    info = backend.info
    median_scaling = args.median_scaling
    if median_scaling is None:
        median_scaling = info.scale_policy == "relative"
    crop = None if args.crop == "none" else args.crop

    panel_at = _panel_indices(len(entries), args.panels)
    panel_rows: list[PanelRow] = []
    per_image = []
    infer_s = []
    try:
        for i, entry in enumerate(entries):
            rgb = kitti.load_rgb(kitti.image_path(args.data, entry))
            if gt_maps is not None:
                gt = gt_maps[i]
            else:
                gt = kitti_gt.load_gt_depth(args.data, entry, gt_kind, args.lidar_depth)
            t0 = time.perf_counter()
            pred = backend.infer(rgb, out_size=gt.shape)
            infer_s.append(time.perf_counter() - t0)
            try:
                result = evaluate_image(gt, pred, median_scaling=median_scaling, fixed_scale=args.scale,
                                        min_depth=args.min_depth, max_depth=args.max_depth, cap_m=args.max_depth,
                                        crop=crop, index=i)
            except ValueError as e:
                raise ValueError(f"{e} [{entry}]") from e
            result["frame"] = str(entry)
            per_image.append(result)
            if i in panel_at:
                shown = np.clip(pred * args.scale * result["ratio"], args.min_depth, args.max_depth)
                panel_rows.append(PanelRow(rgb, shown, gt, f"{entry.folder.split('/')[-1]} {entry.frame} "
                                                          f"abs_rel {result['abs_rel']:.3f}"))
            if (i + 1) % 100 == 0:
                print(f"  {i + 1}/{len(entries)} images", file=sys.stderr)
    finally:
        backend.close()

    summary = summarize(per_image, median_scaling)
    print(f"model {model_path} ({getattr(backend, 'name', '?')}, scale_policy={info.scale_policy}, "
          f"scale={info.scale:g}) on {len(entries)} images of {args.split}")
    print(f"GT {gt_kind}{f' ({lidar_depth})' if lidar_depth else ''}"
          f"{' from ' + str(args.gt_npz) if args.gt_npz else ''}, crop {args.crop}, "
          f"depth ({args.min_depth:g}, {args.max_depth:g}) m, "
          f"{'median scaling' if median_scaling else 'no median scaling'}, fixed scale {args.scale:g}")
    if median_scaling:
        print(f" Scaling ratios | mean: {summary.ratio_mean:0.3f} | std: {summary.ratio_std:0.3f} | "
              f"med: {summary.ratio_median:0.3f} | std/med: {summary.ratio_std_rel:0.3f}")
    print()
    print(format_table(summary.metrics))

    args.out.mkdir(parents=True, exist_ok=True)
    panel_path = args.out / "panels.png"
    if panel_rows:
        panel_grid(panel_rows, panel_path, min_m=max(args.min_depth, 1.0), max_m=args.max_depth)
    report = {
        "model": str(model_path),
        "backend": getattr(backend, "name", ""),
        "scale_policy": info.scale_policy,
        "model_scale": info.scale,
        "data": str(args.data),
        "split": str(args.split),
        "gt": gt_kind,
        "lidar_depth": lidar_depth,
        "gt_npz": str(args.gt_npz) if args.gt_npz else None,
        "crop": args.crop,
        "median_scaling": median_scaling,
        "fixed_scale": args.scale,
        "min_depth": args.min_depth,
        "max_depth": args.max_depth,
        "mean_infer_ms": 1000.0 * float(np.mean(infer_s)),
        "panels": str(panel_path) if panel_rows else None,
        **summary.to_dict(),
    }
    json_path = args.out / "metrics.json"
    atomic_write_bytes(json_path, (json.dumps(_finite_or_null(report), indent=2, allow_nan=False) + "\n").encode())
    print(f"\nwrote {json_path}" + (f" and {panel_path}" if panel_rows else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``monodepth-eval``; exit codes as in :mod:`monodepth_ros.cli_common`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error(f"--scale must be positive, got {args.scale}")
    if not 0 < args.min_depth < args.max_depth:
        parser.error(f"need 0 < --min-depth < --max-depth, got {args.min_depth}, {args.max_depth}")
    try:
        model_backend(args.model, args.backend)
    except ValueError as e:
        parser.error(str(e))
    # Bad data, split, GT or model (ModelLoadError is a ValueError) is bad input; RuntimeError is a backend that
    # cannot run here (e.g. the torch backend without the trainer installed).
    return run_guarded(PROG, lambda: _run(args), bad_input=(FileNotFoundError, ValueError, KeyError),
                       failure=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
