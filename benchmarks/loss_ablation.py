"""Loss ablation on the synthetic world: Monodepth2 baseline, + feature-metric, + velocity, + stereo,
- auto-masking, - min-reprojection, - full-resolution multi-scale, each trained for the SAME CPU-time budget.

    .venv/bin/python benchmarks/loss_ablation.py [--budget-cpu-s 240] [--variants baseline,velocity,...]

Training and held-out data have static-camera segments and independently moving cars. Every variant starts
from the same seed and trains until this process has used ``--budget-cpu-s`` CPU seconds on it (CPU time, not
wall time, because the machine is shared: other processes slow the wall clock, not the work done). The held-out
world (a different seed) is evaluated twice: with per-image median scaling (the monocular protocol) and
WITHOUT any scaling (what a metric model must get right), and the spread of the per-image median ratios
(std / mean) shows how consistent the scale is from frame to frame. Prints the tables and writes
benchmarks/results/loss_ablation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

import torch
from _budget_training import MAX_DEPTH, MIN_DEPTH, heldout_predictions, train_for_budget
from monodepth_training.datasets.synthetic import SyntheticDataset
from monodepth_training.losses import (
    FEATURE_METRIC_WEIGHT,
    VELOCITY_WEIGHT,
    ExtraLossConfig,
    build_featurenet,
)
from monodepth_training.networks.registry import build_depth_net, build_pose_net, set_initial_depth
from torch.utils.data import DataLoader

from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.evaluation.metrics import METRIC_NAMES, evaluate_depth

RESULTS = Path(__file__).resolve().parent / "results" / "loss_ablation.json"
WORLD = {"static_segments": True, "moving_objects": True}

# Every variant starts its disparity heads at a fixed depth (MonoDepthModule's init_depth): relative-scale
# variants at 1 model unit, metric ones (velocity, stereo) at 10 m, a typical street depth. The metric velocity
# recipe also has the pose translation scaled by 0.1 instead of 0.01 and 150 photometric-only warm-up steps
# (config/train/synthetic_metric.yaml has the same; see ExtraLossConfig.velocity_warmup_steps for why).
RELATIVE_INIT_DEPTH, METRIC_INIT_DEPTH = 1.0, 10.0
METRIC_TRANSLATION_SCALE, VELOCITY_WARMUP_STEPS = 0.1, 150
VELOCITY = {"velocity_weight": VELOCITY_WEIGHT, "velocity_warmup_steps": VELOCITY_WARMUP_STEPS}

# name -> (loss switches, extras, use_stereo)
VARIANTS = {
    "baseline": ({}, {}, False),
    "feature_metric": ({}, {"feature_metric_weight": FEATURE_METRIC_WEIGHT, "featurenet_mode": "joint"}, False),
    "velocity": ({}, VELOCITY, False),
    "stereo": ({}, {}, True),
    "no_automask": ({"automask": False}, {}, False),
    "no_min_reprojection": ({"min_reprojection": False}, {}, False),
    "no_full_res_multiscale": ({"full_res_multiscale": False}, {}, False),
    # Not part of the standard table: velocity without auto-masking.
    "velocity_no_automask": ({"automask": False}, VELOCITY, False),
}
DEFAULT_VARIANTS = ["baseline", "feature_metric", "velocity", "stereo", "no_automask", "no_min_reprojection",
                    "no_full_res_multiscale"]


def run_variant(name: str, args, heldout) -> dict:
    switches, extras_kw, use_stereo = VARIANTS[name]
    torch.manual_seed(args.seed)
    train = SyntheticDataset(args.height, args.width, num_frames=args.train_frames, seed=0, world=WORLD,
                             augment=True, use_stereo=use_stereo)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=0, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))
    net_kw = {"num_layers": 18, "width": args.net_width}
    velocity = extras_kw.get("velocity_weight", 0) > 0
    metric = use_stereo or velocity
    depth_net = build_depth_net("monodepth2", **net_kw)
    set_initial_depth(depth_net, METRIC_INIT_DEPTH if metric else RELATIVE_INIT_DEPTH, MIN_DEPTH, MAX_DEPTH)
    pose_net = build_pose_net("monodepth2_pose", **net_kw,
                              **({"translation_scale": METRIC_TRANSLATION_SCALE} if velocity else {}))
    extras = ExtraLossConfig(**extras_kw)
    featurenet = build_featurenet(extras.featurenet_mode, kwargs={"num_layers": 18, "width": args.net_width})
    run = train_for_budget(depth_net, pose_net, loader, budget_cpu_s=args.budget_cpu_s, lr=args.lr, extras=extras,
                           featurenet=featurenet, use_stereo=use_stereo, **switches)
    steps, history, cpu_s, wall_s = run.steps, run.history, run.cpu_s, run.wall_s

    gts, preds = heldout_predictions(depth_net, heldout)
    med = evaluate_depth(gts, preds, median_scaling=True, crop=None)
    raw = evaluate_depth(gts, preds, median_scaling=False, crop=None)
    return {
        "steps": steps,
        "cpu_s": round(cpu_s, 1),
        "wall_s": round(wall_s, 1),
        "samples_per_cpu_s": round(steps * args.batch_size / cpu_s, 3),
        "median_scaled": med.metrics,
        "unscaled": raw.metrics,
        "ratio_mean": med.ratio_mean,
        "ratio_std": med.ratio_std,
        "ratio_cv": med.ratio_std / med.ratio_mean,
        "last_losses": history[-1] if history else {},
    }


def table(results: dict, key: str) -> str:
    lines = [f"{'variant':<24}" + "".join(f"{m:>10}" for m in METRIC_NAMES)]
    for name, r in results.items():
        lines.append(f"{name:<24}" + "".join(f"{r[key][m]:10.3f}" for m in METRIC_NAMES))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-cpu-s", type=float, default=240.0, help="CPU seconds of training per variant")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma list from {list(VARIANTS)}")
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--net-width", type=float, default=0.5, help="channel multiplier of all networks")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--train-frames", type=int, default=600)
    ap.add_argument("--heldout-frames", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 per process on a shared CPU (spin-waiting OpenMP threads cost ~5x)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    heldout = SyntheticDataset(args.height, args.width, num_frames=args.heldout_frames, seed=1000, world=WORLD,
                               load_depth_gt=True)
    results = {}
    for name in names:
        results[name] = run_variant(name, args, heldout)
        r = results[name]
        print(f"{name}: {r['steps']} steps in {r['cpu_s']} CPU s ({r['wall_s']} s wall); "
              f"abs_rel median-scaled {r['median_scaled']['abs_rel']:.3f}, unscaled {r['unscaled']['abs_rel']:.3f}, "
              f"ratio {r['ratio_mean']:.3f} +- {r['ratio_std']:.3f}", flush=True)
    print("\nHeld-out, per-image median scaling:\n" + table(results, "median_scaled"))
    print("\nHeld-out, NO scaling (model units taken as metres):\n" + table(results, "unscaled"))
    print("\nScale consistency (per-image median ratio gt/pred):")
    for name, r in results.items():
        print(f"  {name:<24} mean {r['ratio_mean']:8.3f}  std {r['ratio_std']:7.3f}  std/mean {r['ratio_cv']:.3f}")
    payload = {
        "written_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                    "torch_threads": args.threads},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "world": WORLD,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, json.dumps(payload, indent=2).encode())
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
