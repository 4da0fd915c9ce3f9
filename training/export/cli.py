"""``monodepth-export``: model bundle -> ONNX (fp32), ONNX Runtime INT8 (QDQ) and TensorRT engines, each checked
against PyTorch (or against the fp32 ONNX for INT8).

The ONNX export and its parity check are :mod:`monodepth_training.export.onnx_export`; the ``--calib`` data
(``synthetic[:N]``, a KITTI-layout folder or a rosbag2 bag) is :mod:`monodepth_training.export.calibration`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from monodepth_training.export.calibration import load_frames, parse_synthetic_spec
from monodepth_training.export.onnx_export import DEFAULT_OPSET, export_onnx
from monodepth_training.export.parity import PARITY_ATOL


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="monodepth-export",
        description="Export a monodepth_ros model bundle to ONNX, ONNX Runtime INT8 or a TensorRT engine. "
        "Output convention: 'disp' (1,1,H,W) scaled disparity; depth = scale / disp.",
    )
    p.add_argument("--bundle", required=True, help="model bundle (.safetensors) written by monodepth-train")
    p.add_argument("--format", required=True, choices=("onnx", "ort-int8", "tensorrt"))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", default=None, help="model file stem (default: the bundle's)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--fp16", action="store_true", help="tensorrt: allow FP16 kernels")
    p.add_argument("--int8", action="store_true", help="tensorrt: INT8 with the entropy calibrator (needs --calib)")
    p.add_argument("--calib", default=None, help="calibration data: synthetic[:N] | KITTI folder | rosbag2 bag")
    p.add_argument("--calib-frames", type=int, default=64, help="number of calibration frames (default 64)")
    p.add_argument("--calib-split", default="train", help="KITTI split to calibrate on (default train)")
    p.add_argument("--heldout-frames", type=int, default=16, help="ort-int8: held-out frames for the accuracy report")
    p.add_argument("--int8-budget", type=float, default=0.02, help="max relative abs_rel degradation (default 0.02)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for the INT8 accuracy report")
    p.add_argument("--workspace-mib", type=int, default=1024, help="tensorrt: builder workspace (MiB)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bundle = Path(args.bundle)
    if not bundle.is_file():
        print(f"monodepth-export: bundle not found: {bundle}", file=sys.stderr)
        return 2
    if args.calib_frames < 1 or args.heldout_frames < 1:
        print("monodepth-export: --calib-frames and --heldout-frames must be >= 1", file=sys.stderr)
        return 2
    if args.format == "ort-int8" and not args.calib:
        print("monodepth-export: --format ort-int8 needs --calib DATA (frames from the training data)", file=sys.stderr)
        return 2
    if args.format == "tensorrt" and args.int8 and not args.calib:
        print("monodepth-export: --int8 needs --calib DATA for the entropy calibrator", file=sys.stderr)
        return 2
    if args.format != "tensorrt" and (args.fp16 or args.int8):
        print("monodepth-export: --fp16/--int8 apply to --format tensorrt only (use --format ort-int8 for ORT INT8)",
              file=sys.stderr)
        return 2
    if args.calib:
        try:
            if args.calib.startswith("synthetic"):
                parse_synthetic_spec(args.calib)
            elif not Path(args.calib).exists():
                raise ValueError(f"calibration data {args.calib!r}: no such file or folder")
        except ValueError as e:
            print(f"monodepth-export: {e}", file=sys.stderr)
            return 2

    out_dir = Path(args.out)
    res = export_onnx(bundle, out_dir, opset=args.opset, name=args.name)
    print(f"ONNX: {res.path}  ({res.meta.width}x{res.meta.height}, opset {res.meta.opset}, {res.seconds:.1f} s)")
    print(f"parity vs PyTorch (2 random + 2 synthetic frames): max |d disp| = {res.parity_max_abs_diff:.2e} "
          f"(tolerance {PARITY_ATOL:g})")
    if args.format == "onnx":
        return 0

    meta = res.meta
    calib = None
    if args.format == "ort-int8" or args.int8:
        calib = load_frames(args.calib, args.calib_frames, meta.height, meta.width, split=args.calib_split)
    if args.format == "ort-int8":
        from monodepth_training.quantize import quantize_int8

        held = load_frames(args.calib, args.heldout_frames, meta.height, meta.width, heldout=True)
        frames = [f for f, _ in held]
        gts = [g for _, g in held]
        gts = gts if all(g is not None for g in gts) else None
        q = quantize_int8(res.path, calib, heldout_frames=frames, heldout_gts=gts, budget=args.int8_budget,
                          threads=args.threads, progress=True)
        print(f"INT8: {q.path}  recipe={q.recipe['name']}")
        for line in q.summary_lines():
            print("  " + line)
        if not q.budget_met:
            print(f"monodepth-export: INT8 accuracy budget ({args.int8_budget:.1%}) not met by any recipe; the best "
                  f"one was kept at {q.path} (metadata budget_met=false)", file=sys.stderr)
            return 3
        return 0

    from monodepth_training.export.tensorrt_engine import build_tensorrt

    try:
        engine = build_tensorrt(res.path, out_dir, fp16=args.fp16, int8=args.int8, calib=calib,
                                workspace_mib=args.workspace_mib)
    except RuntimeError as e:
        print(f"monodepth-export: {e} (the ONNX above is complete; build the engine on the target machine)",
              file=sys.stderr)
        return 4
    print(f"TensorRT engine: {engine}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
