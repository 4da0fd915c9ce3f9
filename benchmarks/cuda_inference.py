"""Bare depth-network throughput on a CUDA GPU at 640x192: PyTorch eager float32, eager float16, and float16 replayed
from a CUDA graph. The GPU half of the CPU latency tables (``inference.py``): the same networks, no node around them.

    python benchmarks/cuda_inference.py [--device cuda] [--runs 300] [--out benchmarks/results/cuda_inference.json]

Networks (:data:`NETWORKS`): the shipped default's layout (RT-MonoDepth CPU, grey), the slim ResNet-18 it replaced,
the full Monodepth2 ResNet-18 and RT-MonoDepth-S, each randomly initialised: latency does not depend on the weights.
Batch 1, the input already on the device and the output left there ("bare": no copies, no pre- or post-processing);
each timed call ends with a device synchronise. A CUDA graph removes the per-kernel launch cost of Python and the
dispatcher, which is what bounds networks this small on a large GPU. ONNX Runtime's CUDA provider is used when the
installed onnxruntime has it; it is reported as absent otherwise. Exit 3 when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from model_complexity import measure
from monodepth_training.networks import rtmonodepth
from monodepth_training.networks.registry import build_depth_net

from monodepth_ros.bundle import atomic_write_bytes

RESULTS = Path(__file__).resolve().parent / "results" / "cuda_inference.json"
EXIT_NO_DEVICE = 3
HEIGHT, WIDTH = 192, 640

# (label, registry name, kwargs): the models of the performance issue's tables.
NETWORKS = [
    ("RT CPU (shipped default layout)", "rtmonodepth",
     {**rtmonodepth.CPU_REALTIME, "input_color": "grey", "validity_head": True}),
    ("Monodepth2 R18 x0.375 grey (previous default)", "monodepth2",
     {"num_layers": 18, "width": 0.375, "input_color": "grey"}),
    ("Monodepth2 ResNet-18", "monodepth2", {"num_layers": 18}),
    ("RT-MonoDepth-S", "rtmonodepth", dict(rtmonodepth.PAPER_SMALL)),
]


def timed_ms(fn, runs: int, sync, warmup: int = 20) -> dict:
    """p50 / p99 / mean wall ms of ``fn()`` followed by ``sync()`` (the device synchronise), over ``runs`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        fn()
        sync()
        times[i] = (time.perf_counter() - t) * 1e3
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
            "mean": float(times.mean()), "fps_p50": float(1e3 / np.percentile(times, 50)), "runs": runs}


def graphed(net: torch.nn.Module, x: torch.Tensor):
    """``net(x)`` captured once into a CUDA graph; the returned function replays it (same input buffer)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):  # warm up cuDNN's algorithm choice outside the capture
            net(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        net(x)
    return graph.replay


def measure_network(name: str, kwargs: dict, device: torch.device, runs: int) -> dict:
    """The three timings of one network; on the CPU (``--dry-run``, the plumbing check) float32 only: CPU float16
    convolutions are slow reference kernels, nothing a robot would run."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    net = build_depth_net(name, **kwargs).eval().to(device)
    x32 = torch.rand(1, 3, HEIGHT, WIDTH, device=device)  # RGB in [0, 1]; grey networks convert inside
    out: dict = {}
    with torch.no_grad():
        out["eager_fp32"] = timed_ms(lambda: net(x32), runs, sync, warmup=min(20, runs))
        if not cuda:
            return out | {"eager_fp16": None, "graph_fp16": None}
        net16, x16 = net.half(), x32.half()
        out["eager_fp16"] = timed_ms(lambda: net16(x16), runs, sync)
    out["graph_fp16"] = timed_ms(graphed(net16, x16), runs, sync)
    return out


def ort_cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def report(result: dict) -> str:
    head = f"{'network (640x192, batch 1)':<48} {'GFLOPs':>7} " + " ".join(
        f"{m:>18}" for m in ("eager fp32 ms", "eager fp16 ms", "CUDA graph fp16 ms", "graph fp16 FPS"))
    m = result["machine"]
    lines = [f"{m['gpu'] or 'CPU dry run'}, torch {m['torch']}, CUDA {m['cuda']}",
             head, "-" * len(head)]
    for r in result["rows"]:
        e, g = r["eager_fp16"], r["graph_fp16"]
        lines.append(f"{r['label']:<48} {r['gflops']:>7.2f} {r['eager_fp32']['p50']:>18.3f} "
                     + (f"{e['p50']:>18.3f} {g['p50']:>18.3f} {g['fps_p50']:>18.0f}" if g else
                        " ".join(f"{'-':>18}" for _ in range(3))))
    lines.append(f"ONNX Runtime CUDA provider: {'present' if result['ort_cuda'] else 'absent (CPU-only onnxruntime)'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--dry-run", action="store_true", help="--device cpu, a few runs, no CUDA graph (plumbing)")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.device, args.runs = "cpu", min(args.runs, 2)
    elif not args.device.startswith("cuda") or not torch.cuda.is_available():
        print(f"cuda_inference: no CUDA device ({args.device!r}, torch {torch.__version__}); nothing measured",
              file=sys.stderr)
        return EXIT_NO_DEVICE
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    device = torch.device(args.device)
    rows = []
    for label, name, kwargs in NETWORKS:
        cost = measure("depth", name, kwargs, HEIGHT, WIDTH)
        rows.append({"label": label, "name": name, "kwargs": kwargs, "gflops": cost["gflops"],
                     "params_m": cost["params_m"], **measure_network(name, kwargs, device, args.runs)})
        print(f"  {label}: eager fp32 p50 {rows[-1]['eager_fp32']['p50']:.3f} ms", flush=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
                          "platform": platform.platform()},
              "height": HEIGHT, "width": WIDTH, "ort_cuda": ort_cuda_available(), "rows": rows}
    print(report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, json.dumps(result, indent=2).encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
