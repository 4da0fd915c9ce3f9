"""The one training loop of the benchmark scripts: train a depth + pose network pair until this process has used a
given number of CPU seconds on it, then predict depth on held-out frames.

``architecture_ablation.py``, ``loss_ablation.py`` and ``table1.py`` all train through :func:`train_for_budget`, so a
"60 CPU-seconds" row means the same loop in each. The budget is process CPU time (``time.process_time``), not wall
time, because the machine is shared: other processes slow the wall clock, not the work done. Data loading runs in
this process (no loader workers) and counts against the budget, the same for every network.
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


def train_for_budget(depth_net: nn.Module, pose_net: nn.Module, loader: DataLoader, *, budget_cpu_s: float,
                     lr: float, extras: ExtraLossConfig | None = None, featurenet: nn.Module | None = None,
                     use_stereo: bool = False, temporal_offsets: Iterable[int] = (-1, 1), history_every: int = 10,
                     **loss_switches) -> BudgetRun:
    """Adam (``lr``) on :func:`monodepth_training.losses.total_loss` until ``budget_cpu_s`` CPU seconds are used.

    One optimiser holds the depth, pose and (joint mode) FeatureNet parameters. The loader is re-iterated until the
    budget ends; the budget is checked after each step, so at least one step runs. ``extras`` (the survey's extra
    terms, with velocity's warm-up applied per step) and ``loss_switches`` (``automask``, ``min_reprojection``,
    ``full_res_multiscale``, ``alpha``, ``smoothness_weight``) go to ``total_loss``; the networks see
    ``batch["color_aug"]``, the loss compares ``batch["color"]``.
    """
    extras = extras if extras is not None else ExtraLossConfig()
    offsets = list(temporal_offsets)
    params = [*depth_net.parameters(), *pose_net.parameters()]
    if featurenet is not None:
        params += list(featurenet.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    depth_net.train()
    pose_net.train()
    steps, history, last = 0, [], float("nan")
    c0, t0 = time.process_time(), time.perf_counter()
    done = False
    while not done:
        for batch in loader:
            losses = total_loss(depth_net, pose_net, batch, "color_aug", temporal_offsets=offsets,
                                use_stereo=use_stereo, min_depth=MIN_DEPTH, max_depth=MAX_DEPTH,
                                extras=extras.at_step(steps), featurenet=featurenet, **loss_switches)
            opt.zero_grad()
            losses["loss"].backward()
            opt.step()
            steps, last = steps + 1, float(losses["loss"].detach())
            if steps % history_every == 0:
                history.append({k: float(losses[k].detach()) for k in HISTORY_KEYS if k in losses})
            if time.process_time() - c0 >= budget_cpu_s:
                done = True
                break
    return BudgetRun(steps, time.process_time() - c0, time.perf_counter() - t0, last, history)


def heldout_predictions(depth_net: nn.Module, dataset, batch_size: int = 8,
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Depth GT (metres) and predicted depth (model units), each a list of (H, W) arrays, one per sample of
    ``dataset`` (built with ``load_depth_gt=True``). The network runs in eval mode and is left in the mode it
    was in."""
    was_training = depth_net.training
    depth_net.eval()
    gts, preds = [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size):
            disp = sigmoid_to_disp(depth_net(batch["color"][0])[("disp", 0)], MIN_DEPTH, MAX_DEPTH)
            preds += list((1.0 / disp)[:, 0].numpy())
            gts += list(batch["depth_gt"][:, 0].numpy())
    depth_net.train(was_training)
    return gts, preds
