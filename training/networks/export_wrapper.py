"""The export heads: a depth network reduced to what a robot needs, scaled disparity at full resolution (and,
when the network has one, its validity).

:class:`ExportHead` is what ONNX export traces: input "rgb" (B, 3, H, W) in [0, 1], output "disp" (B, 1, H, W) in
1/m units of the model (depth = scale / disp), plus "valid" (B, 1, H, W) in [0, 1] for a network with a validity
head (:mod:`monodepth_training.networks.validity`). :class:`DisparityHead` gives the disparity alone, for the
torch-side evaluations. Only plain convolutions, padding, nearest resize and elementwise ops, so it exports with
static shapes and no grid_sample.
"""

from __future__ import annotations

import torch
from monodepth_training.geometry import sigmoid_to_disp
from monodepth_training.networks.validity import VALID_KEY, has_validity_head
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


class ExportHead(DisparityHead):
    """rgb01 (B, 3, H, W) -> disp (B, 1, H, W), or (disp, valid (B, 1, H, W)) when ``with_validity``: the graph a
    model file holds. ``with_validity`` is True when the depth network has a validity head."""

    def __init__(self, depth_net: nn.Module, min_depth: float, max_depth: float):
        super().__init__(depth_net, min_depth, max_depth)
        self.with_validity = has_validity_head(depth_net)

    def forward(self, rgb01: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.depth_net(rgb01)
        disp = sigmoid_to_disp(out[("disp", 0)], self.min_depth, self.max_depth)
        return (disp, out[VALID_KEY]) if self.with_validity else disp
