"""DIFFNet (Zhou, Greenwood & Taylor, "Self-Supervised Monocular Depth Estimation with Internal Feature Fusion",
BMVC 2021): an HRNet-W18 encoder and a decoder that fuses the encoder's *internal* features.

For every resolution the decoder concatenates what the encoder produced there in all of its stages (e.g. the
stride-4 branch after stages 2, 3 and 4), plus the upsampled decoder state, re-weights the channels with a
squeeze-excitation (SE) block, convolves, predicts a sigmoid disparity at scales 3..0, and upsamples.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from monodepth_training.networks.hrnet import W18_CHANNELS, HRNetEncoder
from monodepth_training.networks.layers import Conv3x3, ConvBlock, upsample2x
from monodepth_training.networks.monodepth2 import normalize_rgb01
from monodepth_training.networks.registry import register_depth_net
from torch import nn

# Decoder widths at strides 1, 2, 4, 8, 16, 32 (index = log2 stride).
DECODER_CHANNELS = (16, 32, 64, 128, 256, 256)


class SqueezeExcitation(nn.Module):
    """Channel attention (Hu et al.): (B, C, H, W) -> same, each channel scaled by a gate in (0, 1).

    The gate is a 2-layer bottleneck MLP (1x1 convs, ratio ``reduction``) on the global average of each channel.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # adaptive_avg_pool2d exports as GlobalAveragePool (no opset-dependent ReduceMean axes)
        gate = torch.sigmoid(self.fc2(self.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * gate


class FusionDecoder(nn.Module):
    """HRNet features -> {("disp", s): sigmoid (B, 1, H/2^s, W/2^s)} for s in 0..3.

    Level with stride 2^l (l = 5 .. 0): input = [upsampled decoder state] + [every encoder feature at that
    stride, from every stage] -> SE -> ConvBlock -> (disparity head if l <= 3) -> x2 upsampling (if l > 0).
    """

    def __init__(self, branch_channels: tuple[int, ...] = W18_CHANNELS, stem_channels: int = 64,
                 reduction: int = 16):
        super().__init__()
        # Number of stages in which branch b (stride 2^(b+2)) exists: branches 0, 1 in stages 2-4, then 2, then 1.
        self.branch_uses = (3, 3, 2, 1)
        enc_ch = {1: stem_channels}
        for b, c in enumerate(branch_channels):
            enc_ch[b + 2] = c * self.branch_uses[b]
        self.se = nn.ModuleDict()
        self.conv = nn.ModuleDict()
        self.disp = nn.ModuleDict()
        prev = 0
        for level in range(5, -1, -1):
            ch_in = prev + enc_ch.get(level, 0)
            self.se[str(level)] = SqueezeExcitation(ch_in, reduction)
            self.conv[str(level)] = ConvBlock(ch_in, DECODER_CHANNELS[level])
            prev = DECODER_CHANNELS[level]
            if level <= 3:
                self.disp[str(level)] = Conv3x3(DECODER_CHANNELS[level], 1)

    def forward(self, feats: dict) -> dict[tuple[str, int], torch.Tensor]:
        per_level: dict[int, list[torch.Tensor]] = {1: [feats["stem"]]}
        for stage in feats["stages"]:
            for b, f in enumerate(stage):
                per_level.setdefault(b + 2, []).append(f)
        out: dict[tuple[str, int], torch.Tensor] = {}
        x = None
        for level in range(5, -1, -1):
            parts = ([] if x is None else [x]) + per_level.get(level, [])
            y = self.conv[str(level)](self.se[str(level)](torch.cat(parts, 1)))
            if level <= 3:
                out[("disp", level)] = torch.sigmoid(self.disp[str(level)](y))
            x = upsample2x(y) if level > 0 else None
        return out


@register_depth_net("diffnet")
class DIFFNet(nn.Module):
    """HRNet-W18 encoder + SE fusion decoder.

    forward(rgb01 (B, 3, H, W) in [0, 1]) -> {("disp", s): sigmoid (B, 1, H/2^s, W/2^s)}, s in 0..3; H, W multiples
    of 32. ``width`` scales the HRNet branch widths (18 = the paper's W18; smaller for quick CPU runs).
    ``num_modules``: HRNet modules in stages 2, 3, 4 (W18: 1, 4, 3) and ``num_blocks`` residual blocks per branch
    (W18: 4); fewer give a shallower net with the same multi-resolution structure, for fast tests.
    ``pretrained_path``: a local HRNet-W18 ImageNet state dict (only with the W18 defaults).
    """

    def __init__(self, width: int = 18, num_modules: tuple[int, int, int] = (1, 4, 3), num_blocks: int = 4,
                 se_reduction: int = 16, pretrained_path: str | os.PathLike | None = None):
        super().__init__()
        if width < 2 or num_blocks < 1 or len(num_modules) != 3 or min(num_modules) < 1:
            raise ValueError(f"bad HRNet size: width={width}, num_modules={num_modules}, num_blocks={num_blocks}")
        channels = tuple(width * m for m in (1, 2, 4, 8))
        stages = tuple((int(m), int(num_blocks)) for m in num_modules)
        self.encoder = HRNetEncoder(channels, stages, pretrained_path=pretrained_path)
        self.decoder = FusionDecoder(channels, 64, se_reduction)

    def forward(self, rgb01: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
        if rgb01.ndim != 4 or rgb01.shape[1] != 3:
            raise ValueError(f"DIFFNet expects (B, 3, H, W) RGB, got {tuple(rgb01.shape)}")
        if rgb01.shape[-2] % 32 or rgb01.shape[-1] % 32:
            raise ValueError(f"DIFFNet needs H, W multiples of 32, got {tuple(rgb01.shape[-2:])}")
        return self.decoder(self.encoder(normalize_rgb01(rgb01)))

    def disparity_head_biases(self) -> list[torch.Tensor]:
        """Biases of the convs in front of the disparity sigmoids (see ``registry.set_initial_depth``)."""
        return [head.conv.bias for head in self.decoder.disp.values()]
