"""Inference latency: backend x precision x resolution -> median / p99 latency and FPS on this machine.

Times ``backend.infer(rgb)`` end to end (pre-processing, network, disparity -> depth) for one RGB frame at the
model resolution, after warm-up. The backends of one model are timed in interleaved blocks, so that a load change
on a shared machine hits them alike. ONNX Runtime and OpenVINO (when installed) run the same ONNX files with the
same ``--threads``; the summary prints OpenVINO's speed-up over ONNX Runtime and INT8's over fp32.

Without ``--model``/``--onnx`` it exports a randomly initialised Monodepth2-R18 at each resolution (latency does
not depend on the weights; INT8 is calibrated on synthetic frames). ``--onnx`` times exported files as they are
(no torch needed), e.g. the shipped default model and its INT8 twin:

    .venv/bin/python benchmarks/inference.py [--model B.safetensors] [--threads 2] [--iters 50]
    .venv/bin/python benchmarks/inference.py --onnx monodepth_ros/models/default.onnx \
        monodepth_ros/models/default.int8.onnx --threads 2

Prints a table and writes benchmarks/results/inference.json (``--out`` to change).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "inference.json"


def parse_resolution(text: str) -> tuple[int, int]:
    """``"640x192"`` -> (height 192, width 640)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"resolution must look like 640x192, got {text!r}") from e
    return h, w


def _stats(times: np.ndarray) -> dict[str, float]:
    median = float(np.median(times))
    return {"median_ms": median, "p99_ms": float(np.percentile(times, 99)), "mean_ms": float(times.mean()),
            "fps": 1e3 / median, "iters": int(times.size)}


def time_backend(backend, rgb: np.ndarray, iters: int, warmup: int) -> dict[str, float]:
    """Latency statistics (ms) of ``backend.infer(rgb)`` over ``iters`` runs after ``warmup`` runs."""
    return time_backends([backend], rgb, iters, warmup, blocks=1)[0]


def time_backends(backends: list, rgb: np.ndarray, iters: int, warmup: int, blocks: int = 5) -> list[dict]:
    """:func:`time_backend` for several backends, each warmed up, then timed in ``blocks`` interleaved rounds
    of ``iters / blocks`` runs (so that a load change on a shared machine affects all of them alike). Each block
    starts with two untimed runs: switching libraries leaves the other one's worker threads spinning for a while
    (measured: 4x OpenVINO's latency when blocks of 2 runs alternate with ONNX Runtime)."""
    for b in backends:
        for _ in range(warmup):
            b.infer(rgb)
    per_block = [iters // blocks + (1 if k < iters % blocks else 0) for k in range(blocks)]
    times: list[list[float]] = [[] for _ in backends]
    for n in per_block:
        for b, t in zip(backends, times):
            for _ in range(min(warmup, 2)):
                b.infer(rgb)
            for _ in range(n):
                t0 = time.perf_counter()
                b.infer(rgb)
                t.append((time.perf_counter() - t0) * 1e3)
    return [_stats(np.asarray(t)) for t in times]


def ratio_lines(rows: list[dict]) -> list[str]:
    """OpenVINO vs ONNX Runtime per (resolution, precision), and INT8 vs fp32 per (backend, resolution); a
    speed-up above 1 means the second one is faster."""
    med = {(r["backend"], r["precision"], r["resolution"]): r["median_ms"] for r in rows}
    lines = []
    for (backend, precision, res), ms in med.items():
        ort = med.get(("onnxruntime", precision, res))
        if backend == "openvino" and ort:
            lines.append(f"OpenVINO vs ONNX Runtime, {precision} {res}: {ort:.1f} -> {ms:.1f} ms, "
                         f"speed-up {ort / ms:.2f}x")
    for (backend, precision, res), ms in med.items():
        fp32 = med.get((backend, "fp32", res))
        if precision == "int8" and fp32:
            lines.append(f"INT8 vs fp32, {backend} {res}: {fp32:.1f} -> {ms:.1f} ms, speed-up {fp32 / ms:.2f}x")
    return lines


def sgemm_peak_gflops(threads: int, n: int = 4096, reps: int = 3) -> float:
    """This CPU's practical fp32 peak (GFLOP/s): the best single fp32 GEMM of two n x n matrices (2 n^3 FLOPs)
    on ``threads`` threads, through torch (MKL) and numpy (OpenBLAS), whichever is faster here (MKL takes a slower
    path on some AMD CPUs). A large square GEMM is as close to cores x clock x FMA width as real code gets, and
    it measures what this VM is actually given."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    a, b = np.random.default_rng(0).random((2, n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    best = float("inf")
    for mm in (lambda: torch.mm(ta, tb), lambda: a @ b):
        mm()
        for _ in range(reps):
            t0 = time.perf_counter()
            mm()
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def peak_fraction_lines(rows: list[dict], gflops: dict[str, float], peak: float) -> list[str]:
    """fp32 rows: achieved GFLOP/s (the network's direct-convolution FLOPs per frame / median latency) and its
    share of ``peak``. The latency is end to end (pre-processing included). Above 100 % the runtime does less
    arithmetic than direct convolution (e.g. Winograd 3x3 kernels), so read it as an effective rate."""
    lines = []
    for r in rows:
        g = gflops.get(r["resolution"])
        if g is None or r["precision"] != "fp32":
            continue
        achieved = g / (r["median_ms"] / 1e3)
        r["achieved_gflops_s"], r["peak_fraction"] = achieved, achieved / peak
        lines.append(f"Share of the CPU's fp32 peak ({peak:.0f} GFLOP/s, sgemm), {r['backend']} {r['resolution']}: "
                     f"{g:.1f} GFLOP in {r['median_ms']:.1f} ms = {achieved:.0f} GFLOP/s, "
                     f"{100 * achieved / peak:.0f} %")
    return lines


def make_bundle(path: Path, height: int, width: int) -> Path:
    import torch
    from monodepth_training.bundle_io import save_bundle
    from monodepth_training.networks.registry import build_depth_net

    from monodepth_ros.bundle import BundleMeta

    torch.manual_seed(0)
    save_bundle(path, build_depth_net("monodepth2", num_layers=18),
                BundleMeta(depth_net="monodepth2", height=height, width=width, depth_kwargs={"num_layers": 18}))
    return path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None,
                     help="benchmark this model bundle (.safetensors, at its own resolution) instead")
    src.add_argument("--onnx", type=Path, nargs="+", default=None,
                     help="time these exported .onnx files (fp32 and/or INT8 QDQ) as they are: no export, no torch")
    p.add_argument("--resolutions", type=parse_resolution, nargs="+",
                   default=[parse_resolution("320x96"), parse_resolution("640x192")])
    p.add_argument("--threads", type=int, default=2,
                   help="intra-op threads for ONNX Runtime, OpenVINO and torch")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--calib-frames", type=int, default=16)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-openvino", action="store_true")
    p.add_argument("--no-peak", action="store_true",
                   help="skip the sgemm peak and the share of it the fp32 network reaches (needs torch)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    from monodepth_ros.backends import create_backend, openvino_unavailable_reason, read_onnx_model_meta

    ov_reason = "--no-openvino" if args.no_openvino else openvino_unavailable_reason()
    onnx_kinds = ["onnxruntime"] + (["openvino"] if ov_reason is None else [])
    if ov_reason is not None:
        print(f"OpenVINO rows skipped: {ov_reason}", file=sys.stderr)

    load_before = os.getloadavg()
    rows = []
    gflops: dict[str, float] = {}  # resolution -> network GFLOPs per frame (bundle modes only: ONNX has no FLOPs)

    def measure(variants: list[tuple[str, str, Path]], h: int, w: int, rgb: np.ndarray, recipe: str | None):
        opened = [create_backend(path, kind=kind, threads=args.threads) for kind, _, path in variants]
        stats = time_backends(opened, rgb, args.iters, args.warmup)
        for (kind, precision, path), b, st in zip(variants, opened, stats):
            b.close()
            rows.append({"backend": kind, "precision": precision, "resolution": f"{w}x{h}", "model": path.name,
                         "threads": args.threads, **st, "int8_recipe": recipe if precision == "int8" else None})
            print(f"  {kind:<12} {precision:<5} {w}x{h}: {st['median_ms']:.1f} ms", file=sys.stderr)

    if args.onnx:
        from monodepth_ros.synthetic.world import SynthConfig, SyntheticWorld

        by_size: dict[tuple[int, int], list[tuple[str, str, Path]]] = {}
        recipe = None
        for path in args.onnx:
            meta = read_onnx_model_meta(path)
            recipe = (meta.quantization or {}).get("recipe", {}).get("name", recipe)
            by_size.setdefault((meta.height, meta.width), []).extend(
                (kind, meta.precision, Path(path)) for kind in onnx_kinds)
        for (h, w), variants in by_size.items():
            rgb = SyntheticWorld(SynthConfig(width=w, height=h, seed=123)).render(0).rgb
            measure(variants, h, w, rgb, recipe)
        model_desc = ", ".join(Path(x).name for x in args.onnx)
    else:
        from monodepth_training.export import export_onnx, load_frames, synthetic_frames
        from monodepth_training.quantize import quantize_int8

        from monodepth_ros.bundle import read_meta

        with tempfile.TemporaryDirectory(prefix="mdr-bench-") as tmp:
            tmp = Path(tmp)
            if args.model:
                m = read_meta(args.model)
                jobs = [((m.height, m.width), Path(args.model))]
            else:
                jobs = [((h, w), None) for h, w in args.resolutions]
            from model_complexity import measure as complexity

            for (h, w), bundle in jobs:
                bundle = bundle or make_bundle(tmp / f"r18_{w}x{h}.safetensors", h, w)
                bmeta = read_meta(bundle)
                gflops[f"{w}x{h}"] = complexity("depth", bmeta.depth_net, bmeta.depth_kwargs, h, w)["gflops"]
                res = export_onnx(bundle, tmp / f"{w}x{h}", n_random=1, n_synthetic=1)
                calib = load_frames(f"synthetic:{args.calib_frames}", args.calib_frames, h, w)
                q = quantize_int8(res.path, calib)
                rgb = synthetic_frames(1, h, w, start=123)[0]
                variants = [(kind, "fp32", res.path) for kind in onnx_kinds]
                variants += [(kind, "int8", q.path) for kind in onnx_kinds]
                if not args.no_torch:
                    variants.append(("torch", "fp32", bundle))
                measure(variants, h, w, rgb, q.recipe["name"])
        model_desc = "monodepth2 ResNet-18" + ("" if args.model else " (random init)")

    header = f"{'backend':<12} {'precision':<9} {'resolution':<10} {'threads':>7} {'median ms':>10} " \
             f"{'p99 ms':>8} {'FPS':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['backend']:<12} {r['precision']:<9} {r['resolution']:<10} {r['threads']:>7} "
              f"{r['median_ms']:>10.1f} {r['p99_ms']:>8.1f} {r['fps']:>7.1f}")
    ratios = ratio_lines(rows)
    peak = None
    if gflops and not args.no_peak:
        peak = sgemm_peak_gflops(args.threads)
        ratios += peak_fraction_lines(rows, gflops, peak)
    for line in ratios:
        print(line)

    load_after = os.getloadavg()
    versions = {}
    for d in ("onnxruntime", "openvino", "torch", "onnx", "numpy"):
        try:
            versions[d] = version(d)
        except PackageNotFoundError:
            versions[d] = None
    report = {
        "benchmark": "inference",
        "measured_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "what": "backend.infer(rgb uint8 at model size) end to end, single frame, after warm-up; backends of one "
                "model timed in interleaved blocks; OpenVINO with PERFORMANCE_HINT LATENCY and f32 precision hint",
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "note": "CPU shared with other processes while measured unless stated otherwise",
                    "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)]},
        "versions": versions,
        "model": model_desc,
        "network_gflops": gflops,
        "sgemm_peak_gflops_s": peak,
        "rows": rows,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
