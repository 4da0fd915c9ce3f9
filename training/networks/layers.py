"""Small convolution blocks shared by the depth and pose decoders (Monodepth2 style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conv3x3(nn.Module):
    """3x3 convolution with reflection padding: (B, C_in, H, W) -> (B, C_out, H, W).

    Reflection (not zero) padding keeps image borders from reading as strong edges, which would otherwise
    show up as depth artefacts along the frame edges.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """Conv3x3 followed by ELU: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv(x))


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upsampling: (B, C, H, W) -> (B, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")
