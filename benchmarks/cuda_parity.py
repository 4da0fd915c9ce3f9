"""The exported ONNX on ONNX Runtime (CPU) against its PyTorch bundle on a CUDA GPU: do the two give the same depth,
and how long does each take per frame? The part of the GPU robot check that needs no TensorRT.

    python benchmarks/cuda_parity.py --bundle model.safetensors --onnx model.onnx [--device cuda] [--frames 24]
        [--runs 200] [--out benchmarks/results/cuda_parity.json]

Frames: the held-out synthetic world (seed 1000) rendered at the model's size, plus the raw drive's staged frames
(``--real-staged``, :func:`real_data.load_staged_frames`) when given. Both backends run through ``infer_outputs``
(the runtime's preprocess, one network run, its outputs at model size), so the comparison covers the whole path a
node uses. Parity is measured with TF32 off (PyTorch's cuDNN default allows it for convolutions, which changes
results at the 1e-3 level); latency with the defaults, as a user would run it. Exit 3 when the device is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from monodepth_ros.backends import create_backend
from monodepth_ros.bundle import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]
EXIT_NO_DEVICE = 3


def synthetic_frames(height: int, width: int, n: int, seed: int = 1000) -> list[np.ndarray]:
    """``n`` RGB uint8 (height, width, 3) frames of a held-out synthetic world, every 5th frame."""
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

    world = SyntheticWorld(SynthConfig(width=width, height=height, seed=seed))
    return [world.render(5 * i).rgb for i in range(n)]


def compare_outputs(a: tuple[np.ndarray, np.ndarray | None], b: tuple[np.ndarray, np.ndarray | None]) -> dict:
    """Differences between two ``infer_outputs`` results (disparity (h, w), validity (h, w) or None): max |diff| of
    each, and max relative difference of depth = 1 / disparity."""
    (da, va), (db, vb) = a, b
    out = {"disp_max_abs": float(np.max(np.abs(da - db))),
           "depth_max_rel": float(np.max(np.abs(db / da - 1.0)))}
    if (va is None) != (vb is None):
        raise ValueError("one backend has a validity output and the other not")
    if va is not None:
        out["valid_max_abs"] = float(np.max(np.abs(va - vb)))
    return out


def latency_ms(fn, frames: list[np.ndarray], runs: int, warmup: int = 10) -> dict:
    """p50 / p90 / p99 / mean wall ms of ``fn(frame)`` over ``runs`` calls cycling through ``frames``."""
    for i in range(warmup):
        fn(frames[i % len(frames)])
    times = []
    for i in range(runs):
        t = time.perf_counter()
        fn(frames[i % len(frames)])
        times.append((time.perf_counter() - t) * 1e3)
    t = np.asarray(times)
    return {"p50": float(np.percentile(t, 50)), "p90": float(np.percentile(t, 90)),
            "p99": float(np.percentile(t, 99)), "mean": float(t.mean()), "runs": runs}


def run(args: argparse.Namespace) -> dict:
    from monodepth_training.inference import TorchBackend

    ort = create_backend(args.onnx, kind="onnxruntime", threads=args.threads)
    h, w = ort.info.height, ort.info.width
    frames = synthetic_frames(h, w, args.frames)
    sources = {"synthetic": len(frames)}
    if args.real_staged:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from real_data import load_staged_frames

        real = [f.rgb for f in load_staged_frames(args.real_staged)]
        frames += real
        sources["real_staged"] = len(real)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = TorchBackend(args.bundle, device=args.device)
    if (dev.info.height, dev.info.width) != (h, w):
        raise SystemExit(f"cuda_parity: the bundle is {dev.info.height}x{dev.info.width}, the ONNX {h}x{w}")
    diffs = [compare_outputs(ort.infer_outputs(f), dev.infer_outputs(f)) for f in frames]
    parity = {k: max(d[k] for d in diffs) for k in diffs[0]}
    torch.backends.cudnn.allow_tf32 = True  # back to PyTorch's default for the timing
    lat = {"onnxruntime_cpu": latency_ms(ort.infer_outputs, frames, args.runs),
           f"torch_{args.device}_fp32": latency_ms(dev.infer_outputs, frames, args.runs)}
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor()
    return {
        "benchmark": "cuda_parity",
        "measured_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device_name, "torch": torch.__version__, "cuda": torch.version.cuda,
        "cpu": {"cores": os.cpu_count(), "platform": platform.platform(), "ort_threads": args.threads},
        "onnx": str(args.onnx), "bundle": str(args.bundle), "model_hw": [h, w],
        "has_validity": ort.info.has_validity, "frames": sources,
        "parity_tf32_off": parity, "latency_ms": lat,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True, help="the PyTorch bundle (.safetensors)")
    ap.add_argument("--onnx", type=Path, required=True, help="its ONNX export")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--frames", type=int, default=24, help="synthetic frames")
    ap.add_argument("--real-staged", type=Path, default=None, help="staged raw-drive frames (.npz) to add")
    ap.add_argument("--runs", type=int, default=200, help="timed calls per backend")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: its own)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cuda_parity.json")
    args = ap.parse_args(argv)
    if args.frames < 1 or args.runs < 1:
        ap.error("--frames and --runs must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"cuda_parity: torch {torch.__version__} sees no CUDA device; nothing measured", file=sys.stderr)
        return EXIT_NO_DEVICE
    report = run(args)
    lat = report["latency_ms"]
    print(f"{report['device']}: {report['frames']} frames at {report['model_hw'][1]}x{report['model_hw'][0]}")
    print("parity (TF32 off): " + ", ".join(f"{k} {v:.2e}" for k, v in report["parity_tf32_off"].items()))
    print(f"{'backend':<24} {'p50 ms':>8} {'p99 ms':>8}")
    for name, t in lat.items():
        print(f"{name:<24} {t['p50']:>8.2f} {t['p99']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
