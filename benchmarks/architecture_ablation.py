"""Architecture ablation on the synthetic world: every registered depth network (CPU-sized variants) trained with
the same Monodepth2 loss for the SAME CPU-time budget, then evaluated on a held-out world.

    .venv/bin/python benchmarks/architecture_ablation.py [--budget-cpu-s 90] [--height 64 --width 192]

CPU time (not wall time) is the budget because the machine is shared. Reported per network: the 7 KITTI-protocol
metrics with per-image median scaling (held-out synthetic world, different seed, GT capped at 80 m, no crop),
parameters and GFLOPs (torch FlopCounterMode) at the training size and at 640x192, and ONNX Runtime latency (CPU,
1 thread, median of ``--ort-runs``) of the exported disparity head at the training size. The pose network is
Monodepth2's ResNet-18 for all but SfMLearner (its own pose net; explainability off, so only the architectures
differ). Writes benchmarks/results/architecture_ablation.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import monodepth_training.networks.ddv  # noqa: F401  (registers on import)
import monodepth_training.networks.diffnet  # noqa: F401
import monodepth_training.networks.packnet  # noqa: F401
import monodepth_training.networks.sfmlearner  # noqa: F401
import numpy as np
import onnxruntime as ort
import torch
from _budget_training import MAX_DEPTH, MIN_DEPTH, heldout_predictions, train_for_budget
from model_complexity import measure
from monodepth_training.datasets.synthetic import SyntheticDataset
from monodepth_training.networks import build_depth_net, build_pose_net
from monodepth_training.networks.export_wrapper import DisparityHead
from torch.utils.data import DataLoader

from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.evaluation.metrics import METRIC_NAMES, evaluate_depth

RESULTS = Path(__file__).resolve().parent / "results" / "architecture_ablation.json"
# (label, depth net, kwargs, pose net): reduced widths where the paper's model is far too slow for a CPU budget.
ARCHS = [
    ("monodepth2 R18", "monodepth2", {"num_layers": 18}, "monodepth2_pose"),
    ("packnet slim", "packnet", {"version": "slim"}, "monodepth2_pose"),
    ("ddv R18 (128 bins)", "ddv", {"num_layers": 18}, "monodepth2_pose"),
    ("diffnet W18", "diffnet", {}, "monodepth2_pose"),
    ("sfmlearner", "sfmlearner", {}, "sfmlearner_pose"),
]


def ort_latency_ms(depth_net, height: int, width: int, runs: int) -> float:
    """Median ONNX Runtime CPU latency (ms, 1 thread) of the exported disparity head at height x width."""
    head = DisparityHead(depth_net.eval(), MIN_DEPTH, MAX_DEPTH).eval()
    x = torch.rand(1, 3, height, width)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        torch.onnx.export(head, (x,), path, input_names=["rgb"], output_names=["disp"], opset_version=17,
                          dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {"rgb": x.numpy()}
        sess.run(None, feed)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def run(label, name, kwargs, pose_name, *, args, train, heldout) -> dict:
    torch.manual_seed(args.seed)
    depth_net, pose_net = build_depth_net(name, **kwargs), build_pose_net(pose_name)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))
    # Only the architectures differ: Monodepth2's loss for all (SfMLearner's explainability off).
    trained = train_for_budget(depth_net, pose_net, loader, budget_cpu_s=args.budget_cpu_s, lr=args.lr)
    steps, cpu_s, wall_s, last = trained.steps, trained.cpu_s, trained.wall_s, trained.last_loss
    gts, preds = heldout_predictions(depth_net, heldout)
    res = evaluate_depth(gts, preds, median_scaling=True, crop=None)
    small = measure("depth", name, kwargs, args.height, args.width)
    full = measure("depth", name, kwargs, 192, 640)
    return {"label": label, "depth_net": name, "kwargs": kwargs, "pose_net": pose_name, "steps": steps,
            "cpu_s": round(cpu_s, 1), "wall_s": round(wall_s, 1), "last_loss": last, "metrics": res.metrics,
            "params_m": round(small["params_m"], 3), "gflops_train_size": round(small["gflops"], 2),
            "gflops_640x192": round(full["gflops"], 1),
            "ort_ms_train_size": round(ort_latency_ms(depth_net, args.height, args.width, args.ort_runs), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-cpu-s", type=float, default=90.0)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--train-frames", type=int, default=400)
    ap.add_argument("--heldout-frames", type=int, default=34)
    ap.add_argument("--ort-runs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--archs", default="", help="comma-separated labels' depth-net names to run (default: all)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)

    train = SyntheticDataset(args.height, args.width, num_frames=args.train_frames, seed=0, augment=True)
    heldout = SyntheticDataset(args.height, args.width, num_frames=args.heldout_frames, seed=1000,
                               load_depth_gt=True)
    wanted = set(filter(None, args.archs.split(",")))
    rows = [run(*a, args=args, train=train, heldout=heldout) for a in ARCHS if not wanted or a[1] in wanted]

    cols = " ".join(f"{m:>8}" for m in METRIC_NAMES)
    print(f"Architecture ablation: {args.width}x{args.height}, {args.budget_cpu_s:.0f} CPU-s each, held-out synthetic")
    print(f"{'network':<20} {'steps':>5} {cols} {'params M':>8} {'GF@train':>8} {'GF@640':>7} {'ORT ms':>7}")
    for r in rows:
        vals = " ".join(f"{r['metrics'][m]:>8.3f}" for m in METRIC_NAMES)
        print(f"{r['label']:<20} {r['steps']:>5} {vals} {r['params_m']:>8.2f} {r['gflops_train_size']:>8.2f} "
              f"{r['gflops_640x192']:>7.1f} {r['ort_ms_train_size']:>7.1f}")
    out = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "settings": vars(args) | {"out": str(args.out)},
           "rows": rows}
    atomic_write_bytes(args.out, json.dumps(out, indent=2).encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
