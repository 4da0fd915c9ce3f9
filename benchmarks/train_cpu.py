"""CPU training benchmark: train Monodepth2 (ResNet-18 from scratch) on the synthetic world for a fixed wall-clock
budget and compare the held-out KITTI-protocol metrics of the trained and the untrained network.

    .venv/bin/python benchmarks/train_cpu.py                       # 320x96, 20 min budget
    .venv/bin/python benchmarks/train_cpu.py --budget-s 600 --height 64 --width 192

Writes benchmarks/results/train_cpu.json (both metric sets, samples/s, settings, machine load) and prints a table.
Held-out = a synthetic world with a different seed than the training world. Median scaling per image (the
model is relative-scale), GT capped at 80 m, no crop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import lightning as L
import torch
from monodepth_training.data import DepthDataModule
from monodepth_training.module import MonoDepthModule

from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.evaluation.metrics import METRIC_NAMES

RESULTS = Path(__file__).resolve().parent / "results" / "train_cpu.json"


class _Throughput(L.Callback):
    """Counts training samples and the time spent in training batches (data loading included)."""

    def __init__(self):
        self.samples = 0
        self.t_start = None
        self.t_end = None

    def on_train_start(self, trainer, pl_module):
        self.t_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.samples += int(batch["K"].shape[0])
        self.t_end = time.perf_counter()


def _validate(module: MonoDepthModule, dm: DepthDataModule) -> dict[str, float]:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.validate(module, datamodule=dm, verbose=False)
    return {k: float(trainer.callback_metrics[f"val/{k}"]) for k in METRIC_NAMES}


def train_and_evaluate(*, height: int = 96, width: int = 320, budget_s: float = 1200.0,
                       out_dir: str | Path = "runs/bench", seed: int = 0, batch_size: int = 4, lr: float = 3e-4,
                       train_frames: int = 2000, val_frames: int = 42, num_workers: int = 1,
                       init_depth: float | None = 1.0, net_width: float = 1.0) -> dict:
    """Train for ``budget_s`` seconds of wall clock and return untrained / trained held-out metrics + throughput."""
    L.seed_everything(seed, workers=True)
    dm = DepthDataModule(
        train={"source": "synthetic", "seed": seed, "num_frames": train_frames},
        val={"source": "synthetic", "seed": seed + 1000, "num_frames": val_frames},
        height=height, width=width, batch_size=batch_size, num_workers=num_workers,
    )
    nets = {"num_layers": 18, "width": net_width}
    module = MonoDepthModule(height=height, width=width, lr=lr, init_depth=init_depth, depth_kwargs=nets,
                             pose_kwargs=nets)
    untrained = _validate(module, dm)

    meter = _Throughput()
    trainer = L.Trainer(
        accelerator="cpu", max_time={"seconds": budget_s}, max_epochs=-1, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[meter],
        default_root_dir=str(out_dir),
    )
    trainer.fit(module, datamodule=dm)
    train_s = (meter.t_end or time.perf_counter()) - (meter.t_start or time.perf_counter())
    trained = _validate(module, dm)
    module.export_bundle(Path(out_dir) / "train_cpu.safetensors", {"benchmark": "train_cpu"})
    return {
        "untrained": untrained,
        "trained": trained,
        "steps": int(trainer.global_step),
        "samples": meter.samples,
        "train_s": train_s,
        "samples_per_s": meter.samples / train_s if train_s > 0 else float("nan"),
        "settings": {"height": height, "width": width, "budget_s": budget_s, "batch_size": batch_size, "lr": lr,
                     "train_frames": train_frames, "val_frames": val_frames, "seed": seed, "init_depth": init_depth,
                     "net_width": net_width,
                     "torch_threads": torch.get_num_threads(), "num_workers": num_workers},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--budget-s", type=float, default=1200.0, help="training wall-clock budget (default 20 min)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 is several times faster than 2 on a CPU shared with other jobs "
                         "(OpenMP threads spin-wait on each other)")
    ap.add_argument("--init-depth", type=float, default=1.0,
                    help="initial depth of the disparity heads (model units); <= 0 = Monodepth2's plain init")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    result = train_and_evaluate(height=args.height, width=args.width, budget_s=args.budget_s,
                                out_dir="runs/bench_train_cpu", batch_size=args.batch_size, lr=args.lr,
                                init_depth=args.init_depth if args.init_depth > 0 else None)
    result["machine"] = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                         "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "device": "cpu"}
    atomic_write_bytes(args.out, (json.dumps(result, indent=2) + "\n").encode())
    print(f"held-out synthetic world, {args.width}x{args.height}, {result['steps']} steps, "
          f"{result['samples']} samples in {result['train_s']:.0f} s = {result['samples_per_s']:.2f} samples/s")
    print(f"{'':10}" + "".join(f"{k:>10}" for k in METRIC_NAMES))
    for name in ("untrained", "trained"):
        print(f"{name:10}" + "".join(f"{result[name][k]:10.3f}" for k in METRIC_NAMES))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
