"""benchmarks/_budget_training.py: the one loop of the benchmark trainings, with a CPU-time or a wall-time budget,
and batches moved to the networks' device."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _budget_training import to_device  # noqa: E402


def test_to_device_moves_every_tensor_of_a_nested_batch_and_keeps_the_rest():
    batch = {("color", 0, 0): torch.zeros(2, 3), "K": [torch.eye(3), (torch.ones(1), "name")], "index": 7}
    moved = to_device(batch, torch.device("meta"))
    assert moved[("color", 0, 0)].device.type == "meta"
    assert moved["K"][0].device.type == "meta" and moved["K"][1][0].device.type == "meta"
    assert isinstance(moved["K"][1], tuple) and moved["K"][1][1] == "name" and moved["index"] == 7
