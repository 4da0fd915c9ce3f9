"""Inference latency: backend x precision x resolution -> median / p99 latency and FPS on this machine.

Times ``backend.infer(rgb)`` end to end (pre-processing, network, disparity -> depth) for one RGB frame at the
model resolution, after warm-up. Without ``--model`` it exports a randomly initialised Monodepth2-R18 at each
resolution (latency does not depend on the weights; INT8 is calibrated on synthetic frames).

    .venv/bin/python benchmarks/inference.py [--model B.safetensors] [--threads 2] [--iters 50]

Prints a table and writes benchmarks/results/inference.json.
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
from importlib.metadata import version
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


def time_backend(backend, rgb: np.ndarray, iters: int, warmup: int) -> dict[str, float]:
    """Latency statistics (ms) of ``backend.infer(rgb)`` over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        backend.infer(rgb)
    times = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        backend.infer(rgb)
        times[i] = (time.perf_counter() - t0) * 1e3
    median = float(np.median(times))
    return {"median_ms": median, "p99_ms": float(np.percentile(times, 99)), "mean_ms": float(times.mean()),
            "fps": 1e3 / median, "iters": iters}


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
    p.add_argument("--model", default=None,
                   help="benchmark this model bundle (.safetensors, at its own resolution) instead")
    p.add_argument("--resolutions", type=parse_resolution, nargs="+",
                   default=[parse_resolution("320x96"), parse_resolution("640x192")])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for ONNX Runtime and torch")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--calib-frames", type=int, default=16)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    from monodepth_training.export import export_onnx, load_frames, synthetic_frames
    from monodepth_training.quantize import quantize_int8

    from monodepth_ros.backends import create_backend
    from monodepth_ros.bundle import read_meta

    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mdr-bench-") as tmp:
        tmp = Path(tmp)
        if args.model:
            m = read_meta(args.model)
            jobs = [((m.height, m.width), Path(args.model))]
        else:
            jobs = [((h, w), None) for h, w in args.resolutions]
        for (h, w), bundle in jobs:
            bundle = bundle or make_bundle(tmp / f"r18_{w}x{h}.safetensors", h, w)
            res = export_onnx(bundle, tmp / f"{w}x{h}", n_random=1, n_synthetic=1)
            calib = load_frames(f"synthetic:{args.calib_frames}", args.calib_frames, h, w)
            q = quantize_int8(res.path, calib)
            rgb = synthetic_frames(1, h, w, start=123)[0]
            variants = [("onnxruntime", "fp32", res.path), ("onnxruntime", "int8", q.path)]
            if not args.no_torch:
                variants.append(("torch", "fp32", bundle))
            for kind, precision, path in variants:
                backend = create_backend(path, kind=kind, threads=args.threads)
                stats = time_backend(backend, rgb, args.iters, args.warmup)
                backend.close()
                rows.append({"backend": kind, "precision": precision, "resolution": f"{w}x{h}",
                             "threads": args.threads, **stats,
                             "int8_recipe": q.recipe["name"] if precision == "int8" else None})
                print(f"  {kind:<12} {precision:<5} {w}x{h}: {stats['median_ms']:.1f} ms", file=sys.stderr)

    header = f"{'backend':<12} {'precision':<9} {'resolution':<10} {'threads':>7} {'median ms':>10} " \
             f"{'p99 ms':>8} {'FPS':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['backend']:<12} {r['precision']:<9} {r['resolution']:<10} {r['threads']:>7} "
              f"{r['median_ms']:>10.1f} {r['p99_ms']:>8.1f} {r['fps']:>7.1f}")

    report = {
        "benchmark": "inference",
        "measured_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "what": "backend.infer(rgb uint8 at model size) end to end, single frame, after warm-up",
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "note": "CPU shared with other processes while measured unless stated otherwise",
                    "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
        "versions": {d: version(d) for d in ("onnxruntime", "torch", "onnx", "numpy")},
        "model": "monodepth2 ResNet-18" + ("" if args.model else " (random init)"),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
