"""Monodepth2 depth decoder: U-Net style upsampling with encoder skips, 4 sigmoid disparity outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monodepth_training.networks.layers import Conv3x3, ConvBlock, upsample2x
from monodepth_training.networks.resnet_encoder import scaled_channels
from monodepth_training.networks.validity import VALID_KEY, ValidityHead
from torch import nn

DECODER_CHANNELS = (16, 32, 64, 128, 256)


class DepthDecoder(nn.Module):
    """Encoder features -> {("disp", s): sigmoid (B, 1, H/2^s, W/2^s)} for s in ``scales``.

    ``num_ch_enc`` are the encoder's 5 channel counts (features at H/2 ... H/32). Each stage i (4 -> 0)
    runs ConvBlock, nearest x2 upsampling, concatenation with encoder feature i-1 (when ``use_skips`` and
    i > 0) and a second ConvBlock; stages whose index is in ``scales`` emit a 3x3 reflection-padded conv +
    sigmoid. The sigmoid is mapped to disparity later by ``geometry.sigmoid_to_disp``. ``validity_head`` adds
    ``("valid", 0)`` (B, 1, H, W) from stage 0's feature (:mod:`monodepth_training.networks.validity`).
    """

    def __init__(self, num_ch_enc: Sequence[int], scales: Sequence[int] = (0, 1, 2, 3), use_skips: bool = True,
                 width: float = 1.0, validity_head: bool = False):
        super().__init__()
        if len(num_ch_enc) != 5:
            raise ValueError(f"DepthDecoder needs 5 encoder channel counts, got {list(num_ch_enc)}")
        bad = [s for s in scales if s not in range(4)]
        if bad:
            raise ValueError(f"scales must be within 0..3, got {list(scales)}")
        self.num_ch_enc = [int(c) for c in num_ch_enc]
        self.scales = tuple(sorted(int(s) for s in scales))
        self.use_skips = use_skips
        ch_dec = [scaled_channels(c, width) for c in DECODER_CHANNELS]
        self.convs = nn.ModuleDict()
        for i in range(4, -1, -1):
            ch_in = self.num_ch_enc[-1] if i == 4 else ch_dec[i + 1]
            self.convs[f"upconv_{i}_0"] = ConvBlock(ch_in, ch_dec[i])
            ch_in = ch_dec[i] + (self.num_ch_enc[i - 1] if use_skips and i > 0 else 0)
            self.convs[f"upconv_{i}_1"] = ConvBlock(ch_in, ch_dec[i])
        for s in self.scales:
            self.convs[f"dispconv_{s}"] = Conv3x3(ch_dec[s], 1)
        self.validity = ValidityHead(ch_dec[0], upscale=1) if validity_head else None

    def forward(self, features: Sequence[torch.Tensor]) -> dict[tuple[str, int], torch.Tensor]:
        outputs: dict[tuple[str, int], torch.Tensor] = {}
        x = features[-1]
        for i in range(4, -1, -1):
            x = upsample2x(self.convs[f"upconv_{i}_0"](x))
            if self.use_skips and i > 0:
                x = torch.cat([x, features[i - 1]], dim=1)
            x = self.convs[f"upconv_{i}_1"](x)
            if i in self.scales:
                outputs[("disp", i)] = torch.sigmoid(self.convs[f"dispconv_{i}"](x))
        if self.validity is not None:  # x is the full-resolution feature of stage 0
            outputs[VALID_KEY] = self.validity(x)
        return outputs
