"""``monodepth-export``: model bundle -> ONNX (fp32), ONNX Runtime INT8 (QDQ) and TensorRT engines, each checked
against PyTorch (or against the fp32 ONNX for INT8).

The ONNX export and its parity check are :mod:`monodepth_training.export.onnx_export`; the ``--calib`` data
(``synthetic[:N]``, a KITTI-layout folder or a rosbag2 bag) is :mod:`monodepth_training.export.calibration`.
Exit codes as in :mod:`monodepth_ros.cli_common`: 1 when the export ran but failed (parity check, INT8 accuracy
budget missed with the best model kept and flagged, TensorRT unavailable or unable to parse/build the ONNX, which
is still written), 2 on bad input (an unreadable bundle, calibration data without frames, an unusable ``--out``),
each as one ``monodepth-export: error: ...`` line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from monodepth_training.export.calibration import load_frames, parse_synthetic_spec
from monodepth_training.export.onnx_export import DEFAULT_OPSET, MIN_OPSET, ExportError, export_onnx
from monodepth_training.export.parity import PARITY_ATOL
from monodepth_training.export.qdq_rules import qdq_summary

from monodepth_ros.backends.model_meta import ModelLoadError
from monodepth_ros.cli_common import EXIT_FAILURE, EXIT_OK, CliParser, fail, run_guarded

PROG = "monodepth-export"


def build_parser() -> CliParser:
    p = CliParser(PROG, "Export a monodepth_ros model bundle to ONNX, ONNX Runtime INT8 or a TensorRT engine. "
                  "Output convention: 'disp' (1,1,H,W) scaled disparity; depth = scale / disp.")
    p.add_argument("--model", required=True, help="the model bundle (.safetensors) written by monodepth-train")
    p.add_argument("--format", required=True, choices=("onnx", "ort-int8", "tensorrt"),
                   help="onnx: fp32 ONNX; ort-int8: ONNX Runtime INT8 (QDQ, needs --calib); tensorrt: an engine")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", default=None, help="model file stem (default: the bundle's)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    p.add_argument("--fp16", action="store_true", help="tensorrt: allow FP16 kernels")
    p.add_argument("--int8", action="store_true", help="tensorrt: INT8 with the entropy calibrator (needs --calib)")
    p.add_argument("--calib", default=None, help="calibration data: synthetic[:N] | KITTI folder | rosbag2 bag")
    p.add_argument("--calib-frames", type=int, default=64, help="number of calibration frames")
    p.add_argument("--calib-split", default="train", help="KITTI split to calibrate on")
    p.add_argument("--heldout-frames", type=int, default=16, help="ort-int8: held-out frames for the accuracy report")
    p.add_argument("--int8-budget", type=float, default=0.02,
                   help="ort-int8: largest relative abs_rel degradation vs fp32 on the held-out frames")
    p.add_argument("--int8-scheme", choices=("symmetric", "asymmetric"), default="symmetric",
                   help="ort-int8: symmetric = INT8 zero point 0, float biases: one model for ONNX Runtime, OpenVINO "
                        "and TensorRT; asymmetric = ONNX Runtime's x86 default (UINT8 activations), which TensorRT "
                        "cannot build")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for the INT8 accuracy report")
    p.add_argument("--workspace-mib", type=int, default=1024, help="tensorrt: builder workspace (MiB)")
    return p


def _input_problem(args) -> str | None:
    """What is wrong with the arguments before anything runs, or None."""
    if not Path(args.model).is_file():
        return f"model bundle not found: {args.model}"
    if args.calib_frames < 1 or args.heldout_frames < 1:
        return "--calib-frames and --heldout-frames must be >= 1"
    if args.format == "ort-int8" and not args.calib:
        return "--format ort-int8 needs --calib DATA (frames from the training data)"
    if args.format == "tensorrt" and args.int8 and not args.calib:
        return "--int8 needs --calib DATA for the entropy calibrator"
    if args.format != "tensorrt" and (args.fp16 or args.int8):
        return "--fp16/--int8 apply to --format tensorrt only (use --format ort-int8 for ORT INT8)"
    if args.calib:
        try:
            if args.calib.startswith("synthetic"):
                parse_synthetic_spec(args.calib)
            elif not Path(args.calib).exists():
                return f"calibration data {args.calib!r}: no such file or folder"
        except ValueError as e:
            return str(e)
    return None


def _export(args) -> int:
    out_dir = Path(args.out)
    res = export_onnx(Path(args.model), out_dir, opset=args.opset, name=args.name)
    print(f"ONNX: {res.path}  ({res.meta.width}x{res.meta.height}, opset {res.meta.opset}, {res.seconds:.1f} s)")
    what = "max |d disp|, |d valid|" if res.meta.validity_output else "max |d disp|"
    print(f"parity vs PyTorch (2 random + 2 synthetic frames): {what} = {res.parity_max_abs_diff:.2e} "
          f"(tolerance {PARITY_ATOL:g})")
    if args.format == "onnx":
        return EXIT_OK

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
                          threads=args.threads, symmetric=args.int8_scheme == "symmetric", progress=True)
        print(f"INT8: {q.path}  recipe={q.recipe['name']}  scheme={args.int8_scheme}")
        for line in q.summary_lines():
            print("  " + line)
        print(f"  TensorRT Q/DQ rules: {qdq_summary(q.tensorrt_violations)}")
        if not q.budget_met:
            return fail(PROG, f"INT8 accuracy budget ({args.int8_budget:.1%}) not met by any recipe; the best one "
                        f"was kept at {q.path} (metadata budget_met=false)", EXIT_FAILURE)
        return EXIT_OK

    from monodepth_training.export.tensorrt_engine import build_tensorrt

    try:
        engine = build_tensorrt(res.path, out_dir, fp16=args.fp16, int8=args.int8, calib=calib,
                                workspace_mib=args.workspace_mib)
    except (RuntimeError, ModelLoadError) as e:  # ModelLoadError (a ValueError): TensorRT cannot parse the ONNX
        return fail(PROG, f"{e} (the ONNX above is complete; build the engine on the target machine)", EXIT_FAILURE)
    print(f"TensorRT engine: {engine}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``monodepth-export``; exit codes as in :mod:`monodepth_ros.cli_common`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = _input_problem(args)
    if problem:
        return fail(PROG, problem)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # ValueError: a bad bundle (BundleError), opset or calibration data (BagError, no frames); OSError: a missing
    # frame file or an --out that is not a writable folder; ExportError: the export ran and failed.
    return run_guarded(PROG, lambda: _export(args), bad_input=(ValueError, OSError), failure=(ExportError,))


if __name__ == "__main__":
    raise SystemExit(main())
