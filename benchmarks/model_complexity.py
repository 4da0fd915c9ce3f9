"""Parameter counts and FLOPs of every registered network at 640x192, beside the papers' published numbers.

    .venv/bin/python benchmarks/model_complexity.py [--height 192 --width 640] [--only NAME ...] [--latency-runs N]

Prints a table and writes benchmarks/results/model_complexity.json (``--out`` to change). FLOPs come from torch's
own ``FlopCounterMode`` (convolutions, matmuls; elementwise ops are not counted) on a ``meta``-device copy of each
network, so nothing is computed and even PackNet01 is measured in seconds. Papers usually quote multiply-adds
("FLOPs" in their tables are MACs), so both are listed: GMACs = GFLOPs / 2.

``--latency-runs N`` adds the ONNX Runtime CPU latency (1 thread, median of N runs) of each depth network's
exported disparity head, randomly initialised (latency does not depend on the weights); that builds and runs the
real networks, so pair it with ``--only`` for the big ones. ``--only`` keeps the rows of the named architectures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Architectures outside the registry's eager imports register on import.
import monodepth_training.networks.ddv  # noqa: F401
import monodepth_training.networks.diffnet  # noqa: F401
import monodepth_training.networks.packnet  # noqa: F401
import monodepth_training.networks.sfmlearner  # noqa: F401
import torch
from monodepth_training.networks import rtmonodepth
from monodepth_training.networks.registry import DEPTH_NETS, POSE_NETS, build_depth_net, build_pose_net
from torch.utils.flop_counter import FlopCounterMode

RESULTS = Path(__file__).resolve().parent / "results" / "model_complexity.json"

# (kind, registry name, kwargs, label); registry defaults are each paper's configuration.
VARIANTS = [
    ("depth", "packnet", {"version": "slim"}, "PackNet slim (quarter widths)"),
    ("depth", "ddv", {"num_layers": 50, "dilate_last": False}, "DDV ResNet-50 (undilated)"),
    ("depth", "ddv", {"num_layers": 18, "dilate_last": False}, "DDV ResNet-18 (undilated)"),
    ("depth", "monodepth2", {"num_layers": 50}, "Monodepth2 ResNet-50"),
    ("depth", "monodepth2", {"num_layers": 18, "width": 0.375, "input_color": "grey"},
     "Monodepth2 R18 x0.375 (previous default)"),
    ("depth", "rtmonodepth", rtmonodepth.PAPER_SMALL, "RT-MonoDepth-S"),
    ("depth", "rtmonodepth", {**rtmonodepth.CPU_REALTIME, "input_color": "grey"}, "RT CPU (default model)"),
]
# Published parameter counts (millions) for the same configuration, and where they come from.
PAPER = {
    "monodepth2": (14.3, "Godard et al. ICCV 2019 (ResNet-18)"),
    "packnet": (128.0, "Guizilini et al. CVPR 2020, Table 2 (PackNet)"),
    "ddv": (None, "Johnston & Carneiro CVPR 2020: ResNet-101 + attention + DDV, count not stated"),
    "diffnet": (10.87, "Zhou et al. BMVC 2021 (DIFFNet, HRNet-18)"),
    "sfmlearner": (None, "Zhou et al. CVPR 2017: DispNet-style, count not stated"),
    "rtmonodepth": (None, "Feng et al. ICIP 2024 (RT-MonoDepth): plain-conv pyramid; count not checked here"),
}


def measure(kind: str, name: str, kwargs: dict, height: int, width: int) -> dict:
    """Params (M) and GFLOPs / GMACs of one forward at batch 1 (pose nets: one frame pair)."""
    build = build_depth_net if kind == "depth" else build_pose_net
    with torch.device("meta"):
        net = build(name, **kwargs).eval()
        frames = [torch.empty(1, 3, height, width) for _ in range(1 if kind == "depth" else 2)]
    params = sum(p.numel() for p in net.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(*frames)
    flops = counter.get_total_flops()
    return {"kind": kind, "name": name, "kwargs": kwargs, "params_m": params / 1e6, "gflops": flops / 1e9,
            "gmacs": flops / 2e9}


def depth_latency_ms(name: str, kwargs: dict, height: int, width: int, runs: int) -> float:
    """Median ONNX Runtime CPU latency (ms, 1 thread) of a randomly initialised depth net's disparity head."""
    from architecture_ablation import ort_latency_ms  # lazy: that benchmark imports this module at its top

    torch.manual_seed(0)
    return ort_latency_ms(build_depth_net(name, **kwargs), height, width, runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="keep only the rows of these registry names")
    ap.add_argument("--latency-runs", type=int, default=0, help="ONNX Runtime CPU latency of depth nets (0: off)")
    args = ap.parse_args(argv)

    jobs = [("depth", n, {}, f"{n} (paper default)") for n in sorted(DEPTH_NETS)]
    jobs += [v for v in VARIANTS if v[1] in DEPTH_NETS]
    jobs += [("pose", n, {}, f"{n} (paper default)") for n in sorted(POSE_NETS)]
    if args.only:
        jobs = [j for j in jobs if j[1] in args.only]
    rows = []
    t0 = time.perf_counter()
    for kind, name, kwargs, label in jobs:
        row = measure(kind, name, kwargs, args.height, args.width)
        paper_m, source = PAPER.get(name, (None, "")) if not kwargs else (None, "")
        row.update(label=label, paper_params_m=paper_m, paper_source=source)
        if args.latency_runs > 0 and kind == "depth":
            row["ort_cpu_1t_ms"] = depth_latency_ms(name, kwargs, args.height, args.width, args.latency_runs)
        rows.append(row)

    header = (f"{'network':<38} {'kind':<5} {'params (M)':>10} {'paper (M)':>9} {'GFLOPs':>8} {'GMACs':>7}"
              f" {'ORT ms':>7}")
    print(f"Model complexity at {args.width}x{args.height}, batch 1 (pose nets: one frame pair); ORT ms: ONNX Runtime "
          f"CPU, 1 thread, median of {args.latency_runs} runs")
    print(header)
    print("-" * len(header))
    for r in rows:
        paper = f"{r['paper_params_m']:.2f}" if r["paper_params_m"] is not None else "-"
        ms = f"{r['ort_cpu_1t_ms']:.2f}" if "ort_cpu_1t_ms" in r else "-"
        print(f"{r['label']:<38} {r['kind']:<5} {r['params_m']:>10.2f} {paper:>9} {r['gflops']:>8.2f} "
              f"{r['gmacs']:>7.2f} {ms:>7}")
    result = {"height": args.height, "width": args.width, "batch": 1, "flop_counter": "torch.utils.flop_counter",
              "torch": torch.__version__, "seconds": round(time.perf_counter() - t0, 2),
              "latency": {"runtime": "onnxruntime CPUExecutionProvider", "threads": 1, "runs": args.latency_runs},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(args.out)  # atomic
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
