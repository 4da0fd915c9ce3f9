"""Self-attention + discrete disparity volume depth network (Johnston & Carneiro, CVPR 2020).

- Encoder: ResNet-101 (Bottleneck [3, 4, 23, 3]) with the last two stages dilated instead of strided, so the
  deepest features stay at 1/8 resolution (the paper's setting), or a lighter ResNet-18/50 (undilated by
  default). Module names follow torchvision, so a local torchvision ImageNet file loads (``pretrained_path``).
- Self-attention on the last encoder map: 1x1 query/key/value convs, softmax attention over all positions,
  added back through a learnable ``gamma`` that starts at 0 (the block starts as the identity).
- Decoder: Monodepth2-style upsampling with skips; each output scale predicts ``num_bins`` logits, a softmax
  over the bins turns them into a discrete disparity volume and the expected value over the bin centres is the
  disparity. Bins are uniform in disparity between 1/max_depth and 1/min_depth, which is uniform in the
  sigmoid units the rest of the code uses, so the output is a sigmoid-unit disparity in (0, 1) like every
  other depth network here and the losses / ``sigmoid_to_disp`` treat it the same way.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from monodepth_training.networks.layers import Conv3x3, ConvBlock, upsample2x
from monodepth_training.networks.monodepth2 import normalize_rgb01
from monodepth_training.networks.registry import register_depth_net
from monodepth_training.networks.resnet_encoder import (
    BasicBlock,
    Bottleneck,
    ResNetTrunk,
    init_resnet_weights,
    load_state_dict_file,
    load_torchvision_resnet,
)
from torch import nn

_SPECS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
          101: (Bottleneck, (3, 4, 23, 3))}
DECODER_CHANNELS = (16, 32, 64, 128, 256)


class DilatedResNetTrunk(ResNetTrunk):
    """torchvision-named ResNet-18/34/50/101 body; ``dilate_last`` turns layer3/layer4's stride into dilation.

    Built here (rather than in resnet_encoder) because it adds ResNet-101 and dilation, which the Monodepth2
    encoder does not need. Reuses the parent's ``_make_layer`` and block classes so names and init match.
    """

    def __init__(self, num_layers: int, dilate_last: bool):
        nn.Module.__init__(self)
        if num_layers not in _SPECS:
            raise ValueError(f"num_layers must be one of {sorted(_SPECS)}, got {num_layers}")
        block, blocks = _SPECS[num_layers]
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._in_planes = 64
        self.layer1 = self._make_layer(block, 64, blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, blocks[3], 2)
        init_resnet_weights(self)
        if dilate_last:
            _dilate(self.layer3, 2)
            _dilate(self.layer4, 4)


def _dilate(layer: nn.Sequential, dilation: int) -> None:
    """Replace a stage's stride-2 downsampling by dilated 3x3 convs (DeepLab-style output stride 8).

    Only strides, dilations and paddings change, never weight shapes, so ImageNet weights still load.
    """
    for block in layer:
        for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d)):
            conv.stride = (1, 1)
            if conv.kernel_size == (3, 3):
                conv.dilation = (dilation, dilation)
                conv.padding = (dilation, dilation)


class SelfAttention(nn.Module):
    """Non-local self-attention over all positions: (B, C, h, w) -> (B, C, h, w).

    ``attn = softmax_j(q_i . k_j)`` with q, k from 1x1 convs to C/8 channels and v from a 1x1 conv to C
    channels; output = gamma * (attn @ v) + x, gamma initialised to 0.
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        inner = max(channels // reduction, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, N, N) over the N = h*w positions; each row sums to 1."""
        b, _, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, N, C')
        k = self.key(x).flatten(2)                    # (B, C', N)
        return torch.softmax(q @ k, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        v = self.value(x).flatten(2)                  # (B, C, N)
        out = v @ self.attention(x).transpose(1, 2)   # (B, C, N): out_i = sum_j attn_ij v_j
        return self.gamma * out.reshape(b, c, h, w) + x


def bin_centres(num_bins: int) -> torch.Tensor:
    """Centres of ``num_bins`` uniform bins on [0, 1] in sigmoid units (= uniform in disparity), (K,)."""
    return (torch.arange(num_bins, dtype=torch.float32) + 0.5) / num_bins


def expected_disparity(logits: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Discrete disparity volume -> (expected disparity (B, 1, H, W), probabilities (B, K, H, W)).

    ``logits`` (B, K, H, W) over K bins with ``centres`` (K,) in sigmoid units; the expectation therefore lies in
    [centres[0], centres[-1]] and is differentiable (a soft arg-max).
    """
    prob = torch.softmax(logits, dim=1)
    return (prob * centres.view(1, -1, 1, 1)).sum(dim=1, keepdim=True), prob


class DDVDecoder(nn.Module):
    """Encoder features [f0 .. f4] -> {("disp", s): expected sigmoid-unit disparity (B, 1, H/2^s, W/2^s)}, s 0..3.

    Undilated encoder (f_i at stride 2^(i+1)): Monodepth2's stages 4 -> 0 (ConvBlock, x2 upsampling, skip
    concatenation, ConvBlock). Dilated encoder (f2, f3, f4 all at stride 8): those three are fused by one
    ConvBlock into the scale-3 features, then stages 2 -> 0 upsample as above. Every scale ends in a 3x3 conv to
    ``num_bins`` logits and the soft arg-max over the bins.
    """

    def __init__(self, num_ch_enc: list[int], dilated: bool, num_bins: int):
        super().__init__()
        self.dilated = dilated
        self.register_buffer("centres", bin_centres(num_bins), persistent=False)
        self.convs = nn.ModuleDict()
        if dilated:
            self.convs["fuse_3"] = ConvBlock(sum(num_ch_enc[2:]), DECODER_CHANNELS[3])
            self.stages, ch_in = (2, 1, 0), DECODER_CHANNELS[3]
        else:
            self.stages, ch_in = (4, 3, 2, 1, 0), num_ch_enc[-1]
        for i in self.stages:
            self.convs[f"upconv_{i}_0"] = ConvBlock(ch_in, DECODER_CHANNELS[i])
            skip_ch = num_ch_enc[i - 1] if i > 0 else 0
            self.convs[f"upconv_{i}_1"] = ConvBlock(DECODER_CHANNELS[i] + skip_ch, DECODER_CHANNELS[i])
            ch_in = DECODER_CHANNELS[i]
        for s in range(4):
            self.convs[f"ddv_{s}"] = Conv3x3(DECODER_CHANNELS[s], num_bins)

    def forward(self, features: list[torch.Tensor]) -> dict[tuple[str, int], torch.Tensor]:
        out: dict[tuple[str, int], torch.Tensor] = {}
        if self.dilated:
            x = self.convs["fuse_3"](torch.cat(features[2:][::-1], 1))
            out[("disp", 3)], _ = expected_disparity(self.convs["ddv_3"](x), self.centres)
        else:
            x = features[-1]
        for i in self.stages:
            x = upsample2x(self.convs[f"upconv_{i}_0"](x))
            if i > 0:
                x = torch.cat([x, features[i - 1]], 1)
            x = self.convs[f"upconv_{i}_1"](x)
            if i < 4:
                out[("disp", i)], _ = expected_disparity(self.convs[f"ddv_{i}"](x), self.centres)
        return out


@register_depth_net("ddv")
class DDVDepthNet(nn.Module):
    """ResNet (dilated) encoder + self-attention + DDV decoder.

    forward(rgb01 (B, 3, H, W) in [0, 1]) -> {("disp", s): sigmoid-unit disparity (B, 1, H/2^s, W/2^s)},
    s in 0..3; H, W multiples of 32. ``num_layers`` 101 is the paper; 18/34/50 are lighter options.
    ``dilate_last`` defaults to the paper's choice for 101 (True) and to False for the lighter encoders.
    """

    def __init__(self, num_layers: int = 101, num_bins: int = 128, dilate_last: bool | None = None,
                 pretrained_path: str | os.PathLike | None = None):
        super().__init__()
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        if dilate_last is None:
            dilate_last = num_layers == 101
        self.encoder = DilatedResNetTrunk(num_layers, dilate_last)
        if pretrained_path is not None:
            load_torchvision_resnet(self.encoder, load_state_dict_file(pretrained_path))
        exp = 4 if _SPECS[num_layers][0] is Bottleneck else 1
        self.num_ch_enc = np.array([64, 64 * exp, 128 * exp, 256 * exp, 512 * exp])
        self.attention = SelfAttention(int(self.num_ch_enc[-1]))
        self.decoder = DDVDecoder([int(c) for c in self.num_ch_enc], dilate_last, num_bins)

    def forward(self, rgb01: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
        if rgb01.ndim != 4 or rgb01.shape[1] != 3:
            raise ValueError(f"DDV expects (B, 3, H, W) RGB, got {tuple(rgb01.shape)}")
        if rgb01.shape[-2] % 32 or rgb01.shape[-1] % 32:
            raise ValueError(f"DDV needs H, W multiples of 32, got {tuple(rgb01.shape[-2:])}")
        e = self.encoder
        f0 = e.relu(e.bn1(e.conv1(normalize_rgb01(rgb01))))
        f1 = e.layer1(e.maxpool(f0))
        f2 = e.layer2(f1)
        f3 = e.layer3(f2)
        f4 = self.attention(e.layer4(f3))
        return self.decoder([f0, f1, f2, f3, f4])


def ddv_volume(net: DDVDepthNet, rgb01: torch.Tensor, scale: int = 0) -> torch.Tensor:
    """Bin probabilities (B, K, H/2^s, W/2^s) at ``scale``: the discrete disparity volume itself (for analysis)."""
    captured: dict[str, torch.Tensor] = {}
    hook = net.decoder.convs[f"ddv_{scale}"].register_forward_hook(lambda m, i, o: captured.setdefault("l", o))
    try:
        net(rgb01)
    finally:
        hook.remove()
    return torch.softmax(captured["l"], dim=1)
