"""benchmarks/_budget_training.py: the one loop of the benchmark trainings, with a CPU-time, wall-time or step
budget, a deadline that abandons a run, and batches moved to the networks' device."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _budget_training import DeadlineReached, to_device, train_for_budget  # noqa: E402


def test_to_device_moves_every_tensor_of_a_nested_batch_and_keeps_the_rest():
    batch = {("color", 0, 0): torch.zeros(2, 3), "K": [torch.eye(3), (torch.ones(1), "name")], "index": 7}
    moved = to_device(batch, torch.device("meta"))
    assert moved[("color", 0, 0)].device.type == "meta"
    assert moved["K"][0].device.type == "meta" and moved["K"][1][0].device.type == "meta"
    assert isinstance(moved["K"][1], tuple) and moved["K"][1][1] == "name" and moved["index"] == 7


def _tiny_pair_and_loader():
    """A tiny RT-MonoDepth and pose net, and a loader over six synthetic frames at 32x96."""
    from monodepth_training.datasets.synthetic import SyntheticDataset
    from monodepth_training.networks.registry import build_depth_net, build_pose_net
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    depth = build_depth_net("rtmonodepth", channels=[8, 8, 16, 16], convs=[1, 1, 1, 1])
    pose = build_pose_net("monodepth2_pose", num_layers=18, width=0.125)
    data = SyntheticDataset(32, 96, num_frames=6, seed=0)
    return depth, pose, DataLoader(data, batch_size=2, drop_last=True)


def test_a_step_budget_runs_exactly_that_many_steps_across_epochs():
    depth, pose, loader = _tiny_pair_and_loader()  # 2 batches per epoch: 5 steps cross two epochs
    run = train_for_budget(depth, pose, loader, budget_cpu_s=1e9, budget_steps=5, lr=1e-4)
    assert run.steps == 5 and run.budget_kind == "steps"
    with pytest.raises(ValueError, match="budget_steps"):
        train_for_budget(depth, pose, loader, budget_cpu_s=1.0, budget_steps=0, lr=1e-4)


def test_a_run_past_its_deadline_is_abandoned_not_reported_short():
    depth, pose, loader = _tiny_pair_and_loader()
    with pytest.raises(DeadlineReached) as e:
        train_for_budget(depth, pose, loader, budget_cpu_s=1e9, budget_steps=50, lr=1e-4,
                         deadline=time.perf_counter())
    assert e.value.steps == 1 and "before the budget was spent" in str(e.value)
