"""``monodepth-export``: model bundle -> ONNX (fp32), ONNX Runtime INT8 (QDQ) and TensorRT engines, each checked
against PyTorch (or against the fp32 ONNX for INT8).

The ONNX contract (see :mod:`monodepth_ros.backends.model_meta`): input ``rgb`` (1, 3, H, W) float32 RGB in
[0, 1], output ``disp`` (1, 1, H, W) scaled disparity, ``depth = scale / disp``. Static shapes, no GridSample,
only operators TensorRT's ONNX parser supports. Opset 18: the torch.export-based exporter of torch 2.13 emits
18 and cannot convert ``Pad`` down to 17 (the issue asks for >= 17; TensorRT 10 parses up to opset 20+).

Calibration / held-out data (``--calib``): ``synthetic[:N]`` (frames rendered by monodepth_ros.synthetic at
the model size), a KITTI-layout folder (``<dir>/splits/<split>_files.txt``), or a rosbag2 bag (``.mcap`` /
``.db3`` file or bag folder).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from monodepth_ros.backends.base import preprocess
from monodepth_ros.backends.model_meta import (
    INPUT_NAME,
    META_KEY,
    OUTPUT_NAME,
    ModelMeta,
    sidecar_path,
    write_sidecar,
)
from monodepth_ros.bundle import BundleMeta, atomic_write_bytes, file_sha256, read_meta

DEFAULT_OPSET = 18
MIN_OPSET = 17
PARITY_ATOL = 1e-4
log = logging.getLogger("monodepth_export")

# Operators the exported depth nets may contain: all are supported by TensorRT 10's ONNX parser (with static
# shapes) and by ONNX Runtime. Anything else fails the export with its name, rather than failing later on a robot.
TRT_SAFE_OPS = frozenset(
    """Add Sub Mul Div Pow Sqrt Exp Log Neg Abs Min Max Clip Relu LeakyRelu Elu Selu Sigmoid Tanh Softplus Erf
    HardSigmoid HardSwish PRelu Conv ConvTranspose BatchNormalization InstanceNormalization MaxPool AveragePool
    GlobalAveragePool GlobalMaxPool Pad Resize Upsample Concat Split Slice Reshape Flatten Transpose Squeeze
    Unsqueeze Identity Constant Gemm MatMul ReduceMean ReduceSum ReduceMax Softmax DepthToSpace SpaceToDepth Cast
    Tile Expand Where Equal Less Greater Not QuantizeLinear DequantizeLinear""".split()
)
FORBIDDEN_OPS = {"GridSample": "grid_sample has no place in the depth path (and is slow or unsupported in TensorRT)"}


class ExportError(RuntimeError):
    """The export produced a graph that breaks the contract (ops, shapes, parity)."""


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("torch", "onnx", "onnxruntime", "monodepth_ros"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


# ---------------------------------------------------------------------------------------------------------------
# ONNX export


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for lg, _ in saved:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def check_graph(model, expect_hw: tuple[int, int]) -> None:
    """Raise ExportError unless the graph has only TensorRT-safe ops, fully static shapes and the agreed I/O.

    ``model``: onnx.ModelProto (after shape inference, so value_info covers intermediate tensors).
    """
    H, W = expect_hw
    bad = {}
    for node in model.graph.node:
        if node.op_type in FORBIDDEN_OPS:
            raise ExportError(f"graph contains {node.op_type} ({node.name}): {FORBIDDEN_OPS[node.op_type]}")
        if node.domain not in ("", "ai.onnx") or node.op_type not in TRT_SAFE_OPS:
            bad.setdefault(f"{node.domain + '::' if node.domain else ''}{node.op_type}", node.name)
        if node.op_type == "Pad":
            mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
            if mode == "wrap":
                raise ExportError(f"Pad mode 'wrap' ({node.name}) is not supported by TensorRT")
    if bad:
        raise ExportError(f"graph contains operators outside the TensorRT-safe set: {bad}")

    def dims(vi):
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]

    ins = [(i.name, dims(i)) for i in model.graph.input]
    outs = [(o.name, dims(o)) for o in model.graph.output]
    if ins != [(INPUT_NAME, [1, 3, H, W])]:
        raise ExportError(f"graph inputs {ins}, expected [({INPUT_NAME!r}, [1, 3, {H}, {W}])]")
    if outs != [(OUTPUT_NAME, [1, 1, H, W])]:
        raise ExportError(f"graph outputs {outs}, expected [({OUTPUT_NAME!r}, [1, 1, {H}, {W}])]")
    dynamic = [vi.name for vi in model.graph.value_info if any(not isinstance(d, int) or d <= 0 for d in dims(vi))]
    if dynamic:
        raise ExportError(f"tensors with dynamic or unknown shapes in the graph: {dynamic[:10]}")


def export_module_onnx(
    head,
    bundle_meta: BundleMeta,
    out_path: str | os.PathLike,
    source_sha256: str,
    opset: int = DEFAULT_OPSET,
) -> tuple[Path, ModelMeta]:
    """Export a disparity head ``rgb01 (1, 3, H, W) -> disp (1, 1, H, W)`` to ``out_path`` with metadata.

    Runs onnx.checker (full_check) and strict shape inference, checks ops/shapes, embeds the metadata and writes
    the model and its sidecar atomically.
    """
    import onnx
    import torch

    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    H, W = bundle_meta.height, bundle_meta.width
    head = head.eval()
    example = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0))
    # The exporter prints progress lines on stdout and its graph passes log at INFO: keep the CLI readable.
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("onnx_ir", "onnxscript"):
        program = torch.onnx.export(
            head, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, dynamo=True, external_data=False, verbose=False, optimize=True,
        )
    model = program.model_proto
    real_opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if real_opset < MIN_OPSET:
        raise ExportError(f"exported opset {real_opset} < {MIN_OPSET}")

    meta = ModelMeta(
        height=H, width=W, min_depth=float(bundle_meta.min_depth), max_depth=float(bundle_meta.max_depth),
        scale_policy=bundle_meta.scale_policy, scale=float(bundle_meta.scale),
        mean=[float(v) for v in bundle_meta.mean], std=[float(v) for v in bundle_meta.std],
        intrinsics_norm=bundle_meta.intrinsics_norm, source_sha256=source_sha256,
        depth_net=bundle_meta.depth_net, opset=int(real_opset), precision="fp32", producer=_versions(),
        input_color=str(bundle_meta.depth_kwargs.get("input_color", "rgb")),
    ).validate("export metadata")
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {META_KEY: meta.to_json()})
    model.producer_name = "monodepth_ros"

    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    check_graph(inferred, (H, W))

    out_path = Path(out_path)
    atomic_write_bytes(out_path, model.SerializeToString())
    write_sidecar(out_path, meta)
    return out_path, meta


def load_disparity_head(bundle_path: str | os.PathLike):
    """Bundle -> (DisparityHead in eval mode, BundleMeta). Torch is only needed here and below."""
    from monodepth_training.bundle_io import load_bundle
    from monodepth_training.networks.export_wrapper import DisparityHead

    depth_net, _pose, meta = load_bundle(bundle_path, map_location="cpu")
    return DisparityHead(depth_net, meta.min_depth, meta.max_depth).eval(), meta


def parity_inputs(height: int, width: int, n_random: int = 2, n_synthetic: int = 2, seed: int = 0) -> list:
    """Network inputs (1, 3, H, W) float32 for parity checks: uniform noise, then synthetic street frames."""
    rng = np.random.default_rng(seed)
    xs = [rng.random((1, 3, height, width), dtype=np.float32) for _ in range(n_random)]
    if n_synthetic:
        xs += [preprocess(f, height, width) for f in synthetic_frames(n_synthetic, height, width, start=500)]
    return xs


def torch_vs_onnx_max_diff(head, onnx_path: str | os.PathLike, inputs: list[np.ndarray]) -> float:
    """Max |disp_torch - disp_onnxruntime| over ``inputs`` ((1, 3, H, W) float32 each), ORT on CPU."""
    import torch

    from monodepth_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(onnx_path, threads=None)
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            ref = head(torch.from_numpy(x)).numpy()
            got = backend._run_disp(x)
            worst = max(worst, float(np.max(np.abs(ref - got))))
    return worst


def export_onnx(
    bundle: str | os.PathLike,
    out_dir: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    name: str | None = None,
    atol: float = PARITY_ATOL,
    n_random: int = 2,
    n_synthetic: int = 2,
) -> ExportResult:
    """Export a bundle to ``<out_dir>/<name or bundle stem>.onnx`` (+ ``.onnx.json``) and check parity with
    PyTorch on random and synthetic frames; raises ExportError when the max abs disparity diff exceeds ``atol``.
    """
    bundle = Path(bundle)
    bundle_meta = read_meta(bundle)  # validates without torch, with a clear BundleError
    head, _ = load_disparity_head(bundle)
    out_path = Path(out_dir) / f"{name or bundle.stem}.onnx"
    t0 = time.perf_counter()
    out_path, meta = export_module_onnx(head, bundle_meta, out_path, file_sha256(bundle), opset)
    export_s = time.perf_counter() - t0
    diff = torch_vs_onnx_max_diff(head, out_path, parity_inputs(meta.height, meta.width, n_random, n_synthetic))
    if not diff < atol:  # never leave a model behind that does not compute what the bundle computes
        out_path.unlink(missing_ok=True)
        sidecar_path(out_path).unlink(missing_ok=True)
        raise ExportError(f"ONNX Runtime disagrees with PyTorch: max |d disp| = {diff:.3g} >= {atol:g}; removed")
    return ExportResult(path=out_path, meta=meta, parity_max_abs_diff=diff, seconds=export_s)


@dataclass
class ExportResult:
    path: Path
    meta: ModelMeta
    parity_max_abs_diff: float | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# Calibration and held-out frames


def synthetic_frames(n: int, height: int, width: int, start: int = 0, seed: int = 0, with_depth: bool = False):
    """``n`` frames of the synthetic world at the model size: list of RGB (H, W, 3) uint8, or of (rgb, depth_m)
    with depth 0 where invalid (sky) when ``with_depth``."""
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

    world = SyntheticWorld(SynthConfig(width=width, height=height, seed=seed))
    out = []
    for i in range(start, start + n):
        f = world.render(i)
        if with_depth:
            out.append((f.rgb, np.where(np.isfinite(f.depth_m), f.depth_m, 0.0).astype(np.float32)))
        else:
            out.append(f.rgb)
    return out


def parse_synthetic_spec(spec: str) -> int | None:
    """``synthetic`` -> None (use the caller's count), ``synthetic:N`` -> N; anything else -> ValueError."""
    head, _, count = spec.partition(":")
    if head != "synthetic":
        raise ValueError(f"not a synthetic spec: {spec!r}")
    if not count:
        return None
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"bad synthetic frame count in {spec!r}: use synthetic or synthetic:N with N >= 1")
    return int(count)


def _kitti_frames(data_dir: Path, split: str, n: int, with_depth: bool) -> list:
    from monodepth_ros import kitti

    split_file = data_dir / "splits" / f"{split}_files.txt"
    if not split_file.is_file():
        raise ValueError(f"KITTI folder {data_dir} has no split file {split_file.relative_to(data_dir)}")
    entries = kitti.read_split(split_file)
    if not entries:
        raise ValueError(f"split file {split_file} is empty")
    # Spread the picks over the whole split: consecutive frames are near-duplicates.
    picks = np.unique(np.linspace(0, len(entries) - 1, num=min(n, len(entries))).round().astype(int))
    out = []
    for i in picks:
        e = entries[int(i)]
        img_path = kitti.image_path(data_dir, e)
        rgb = kitti.load_rgb(img_path)
        if with_depth:
            cam = f"image_0{kitti.side_to_cam(e.side)}"
            gt_path = data_dir / e.folder / "proj_depth" / "groundtruth" / cam / img_path.with_suffix(".png").name
            out.append((rgb, kitti.read_depth_png(gt_path) if gt_path.is_file() else None))
        else:
            out.append(rgb)
    return out


def _bag_frames(bag_path: Path, n: int, skip: int, with_depth: bool, image_topic: str, info_topic: str,
                gt_topic: str | None) -> list:
    from monodepth_ros.bag_io import BagReader, GtSource, iter_frames

    out = []
    with BagReader(bag_path) as bag:
        gt = None
        if with_depth and gt_topic and gt_topic in bag.topics:
            gt = GtSource(kind="depth", topic=gt_topic)
        for k, fr in enumerate(iter_frames(bag, image_topic, info_topic, gt=gt, max_frames=skip + n)):
            if k < skip:
                continue
            out.append((fr.rgb, fr.gt_depth_m) if with_depth else fr.rgb)
    if not out:
        raise ValueError(f"bag {bag_path} has no frames on {image_topic} after skipping {skip}")
    return out


def load_frames(
    spec: str,
    n: int,
    height: int,
    width: int,
    split: str = "train",
    heldout: bool = False,
    image_topic: str = "/camera/image_raw",
    info_topic: str = "/camera/camera_info",
    gt_topic: str | None = "/camera/depth_gt",
) -> list:
    """Frames from ``spec`` (see module docstring). Calibration: list of RGB uint8. ``heldout``: list of
    (rgb, gt_depth_m or None) taken from data the calibration did not see (other synthetic indices, the KITTI
    ``val``/``test`` split, or bag frames after the first ``n``)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"frame count must be a positive integer, got {n!r}")
    if spec.startswith("synthetic"):
        count = parse_synthetic_spec(spec) or n
        if heldout:  # other part of the drive, so no frame is shared with the calibration set
            return synthetic_frames(n, height, width, start=10_000, with_depth=True)
        return synthetic_frames(count, height, width)
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"calibration data {spec!r}: no such file or folder (expected synthetic[:N], a KITTI folder"
                         " with splits/, or a rosbag2 .mcap/.db3 bag)")
    is_bag = path.suffix in (".mcap", ".db3") or (path.is_dir() and (path / "metadata.yaml").is_file())
    if is_bag:
        return _bag_frames(path, n, n if heldout else 0, heldout, image_topic, info_topic, gt_topic)
    if path.is_dir() and (path / "splits").is_dir():
        if heldout:
            for hs in ("val", "test"):
                if (path / "splits" / f"{hs}_files.txt").is_file():
                    return _kitti_frames(path, hs, n, True)
            raise ValueError(f"KITTI folder {path} has no val or test split for held-out frames")
        return _kitti_frames(path, split, n, False)
    raise ValueError(f"calibration data {spec!r} is neither a bag (.mcap/.db3/metadata.yaml) nor a KITTI folder "
                     "with a splits/ subfolder")


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _progress(total: int, desc: str) -> tuple[Callable[[], None], Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True)
    return (lambda: bar.update(1)), bar.close


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

    from monodepth_training.tensorrt_build import build_tensorrt

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
