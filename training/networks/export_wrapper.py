"""The export head: a depth network reduced to one tensor out, scaled disparity at full resolution.

This is what ONNX export traces: input "rgb" (B, 3, H, W) in [0, 1], output "disp" (B, 1, H, W) in 1/m units
of the model (depth = scale / disp). Only plain convolutions, padding, nearest resize and elementwise ops,
so it exports at opset 17 with static shapes and no grid_sample.
"""

from __future__ import annotations

import torch
from monodepth_training.geometry import sigmoid_to_disp
from torch import nn


class DisparityHead(nn.Module):
    """rgb01 (B, 3, H, W) -> scaled disparity (B, 1, H, W) in [1/max_depth, 1/min_depth] from scale 0."""

    def __init__(self, depth_net: nn.Module, min_depth: float, max_depth: float):
        super().__init__()
        if not (0 < min_depth < max_depth):
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.depth_net = depth_net
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)

    def forward(self, rgb01: torch.Tensor) -> torch.Tensor:
        return sigmoid_to_disp(self.depth_net(rgb01)[("disp", 0)], self.min_depth, self.max_depth)
