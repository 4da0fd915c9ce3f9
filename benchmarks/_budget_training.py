"""The one training loop of the benchmark scripts: train a depth + pose network pair until this process has used a
given number of CPU seconds on it (or, on a GPU, a number of wall seconds), then predict depth on held-out frames.

``architecture_ablation.py``, ``loss_ablation.py`` and ``table1.py`` all train through :func:`train_for_budget`, so a
"60 CPU-seconds" row means the same loop in each. On the CPU the budget is process CPU time (``time.process_time``),
not wall time, because the machine is shared: other processes slow the wall clock, not the work done. Data loading
runs in this process (no loader workers) and counts against the budget, the same for every network. On a GPU the
process's CPU time says little about the work done (the GPU does it, loader workers feed it), so the budget there is
wall time (``budget_wall_s``), and the batches move to the networks' device. A budget can also be a number of
optimiser steps (``budget_steps``): a GPU run then repeats, step for step, the training a CPU run did in its CPU
seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from monodepth_training.geometry import sigmoid_to_disp
from monodepth_training.losses import ExtraLossConfig, total_loss
from torch import nn
from torch.utils.data import DataLoader

# Depth range of every benchmark network (Monodepth2's).
MIN_DEPTH, MAX_DEPTH = 0.1, 100.0
# Scalars of the loss dict recorded every ``history_every`` steps (those that the step's loss has).
HISTORY_KEYS = ("loss", "photometric", "velocity", "feature_metric", "pose_translation_m")


@dataclass
class BudgetRun:
    """What one budgeted training did: optimiser ``steps``, process CPU and wall seconds, the last step's loss, and
    ``history``: one dict of :data:`HISTORY_KEYS` scalars every ``history_every`` steps."""

    steps: int
    cpu_s: float
    wall_s: float
    last_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    # What the budget counted ("cpu" seconds, "wall" seconds, "steps") and the AMP dtype, e.g. "float16".
    budget_kind: str = "cpu"
    amp: str | None = None


class DeadlineReached(RuntimeError):
    """A run hit its ``deadline`` before its budget was spent. The run is abandoned, never reported short: a row
    trained for less than the stated budget would not be the row the table describes."""

    def __init__(self, steps: int, wall_s: float):
        super().__init__(f"deadline reached after {steps} steps ({wall_s:.0f} wall-s), before the budget was spent")
        self.steps, self.wall_s = steps, wall_s


def to_device(batch, device: torch.device):
    """``batch`` (nested dicts / lists / tuples of tensors and other values) with every tensor on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def train_for_budget(depth_net: nn.Module, pose_net: nn.Module, loader: DataLoader, *, budget_cpu_s: float,
                     lr: float, extras: ExtraLossConfig | None = None, featurenet: nn.Module | None = None,
                     use_stereo: bool = False, temporal_offsets: Iterable[int] = (-1, 1), history_every: int = 10,
                     budget_wall_s: float | None = None, budget_steps: int | None = None, amp: bool = False,
                     deadline: float | None = None, **loss_switches) -> BudgetRun:
    """Adam (``lr``) on :func:`monodepth_training.losses.total_loss` until ``budget_cpu_s`` CPU seconds are used
    (or, with ``budget_wall_s``, until that many wall seconds have passed: the GPU budget; or, with
    ``budget_steps``, for exactly that many optimiser steps). ``deadline`` (a ``time.perf_counter()`` value) raises
    :class:`DeadlineReached` when it passes before the budget is spent.

    The networks' device (where ``depth_net``'s parameters are) decides where the batches go. ``amp`` (CUDA only)
    runs the networks under float16 autocast with a gradient scaler, as Lightning's ``16-mixed`` does; the loss
    itself stays float32 (``monodepth2_loss`` turns autocast off).

    One optimiser holds the depth, pose and (joint mode) FeatureNet parameters. The loader is re-iterated until the
    budget ends; the budget is checked after each step, so at least one step runs. ``extras`` (the survey's extra
    terms, with velocity's warm-up applied per step) and ``loss_switches`` (``automask``, ``min_reprojection``,
    ``full_res_multiscale``, ``alpha``, ``smoothness_weight``) go to ``total_loss``; the networks see
    ``batch["color_aug"]``, the loss compares ``batch["color"]``.
    """
    extras = extras if extras is not None else ExtraLossConfig()
    offsets = list(temporal_offsets)
    device = next(depth_net.parameters()).device
    amp = bool(amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    params = [*depth_net.parameters(), *pose_net.parameters()]
    if featurenet is not None:
        params += list(featurenet.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    depth_net.train()
    pose_net.train()
    steps, history = 0, []
    c0, t0 = time.process_time(), time.perf_counter()
    if budget_steps is not None and budget_steps < 1:
        raise ValueError(f"budget_steps must be >= 1, got {budget_steps}")
    # The budget's clock: the step count, wall time when budget_wall_s is given (a GPU), else this process's CPU time.
    if budget_steps is not None:
        kind, clock, start, limit = "steps", (lambda: steps), 0, budget_steps
    elif budget_wall_s is not None:
        kind, clock, start, limit = "wall", time.perf_counter, t0, budget_wall_s
    else:
        kind, clock, start, limit = "cpu", time.process_time, c0, budget_cpu_s
    done = False
    while not done:
        for batch in loader:
            if device.type != "cpu":
                batch = to_device(batch, device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                losses = total_loss(depth_net, pose_net, batch, "color_aug", temporal_offsets=offsets,
                                    use_stereo=use_stereo, min_depth=MIN_DEPTH, max_depth=MAX_DEPTH,
                                    extras=extras.at_step(steps), featurenet=featurenet, **loss_switches)
            opt.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.step(opt)
            scaler.update()
            steps += 1
            # Reading a loss syncs a GPU: only every history_every steps, and the last step's once, after the loop.
            if steps % history_every == 0:
                history.append({k: float(losses[k].detach()) for k in HISTORY_KEYS if k in losses})
            if clock() - start >= limit:
                done = True
                break
            if deadline is not None and time.perf_counter() >= deadline:
                raise DeadlineReached(steps, time.perf_counter() - t0)
    last = float(losses["loss"].detach())
    return BudgetRun(steps, time.process_time() - c0, time.perf_counter() - t0, last, history,
                     budget_kind=kind,
                     amp="float16" if amp else None)


def heldout_predictions(depth_net: nn.Module, dataset, batch_size: int = 8,
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Depth GT (metres) and predicted depth (model units), each a list of (H, W) arrays, one per sample of
    ``dataset`` (built with ``load_depth_gt=True``). The network runs in eval mode and is left in the mode it
    was in."""
    was_training = depth_net.training
    depth_net.eval()
    device = next(depth_net.parameters()).device
    gts, preds = [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size):
            disp = sigmoid_to_disp(depth_net(batch["color"][0].to(device))[("disp", 0)].float(), MIN_DEPTH, MAX_DEPTH)
            preds += list((1.0 / disp)[:, 0].cpu().numpy())
            gts += list(batch["depth_gt"][:, 0].numpy())
    depth_net.train(was_training)
    return gts, preds
