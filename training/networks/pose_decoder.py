"""Monodepth2 pose decoder: encoder bottleneck features -> axis-angle + translation per predicted frame."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Monodepth2 scales the raw outputs by 0.01 so that an untrained network starts near the identity pose.
POSE_OUTPUT_SCALE = 0.01


class PoseDecoder(nn.Module):
    """List of encoder feature lists -> (axisangle, translation), each (B, frames, 1, 3).

    ``num_input_features`` encoders' last features (B, num_ch_enc[-1], h, w) are squeezed by a 1x1 conv to 256
    channels, concatenated, passed through three convs, averaged over space and scaled by 0.01.

    ``translation_scale`` replaces the 0.01 on the translation only (the rotation keeps 0.01). 0.01 suits
    relative-scale training, where the learned translations are ~0.01 units per frame. Under velocity
    supervision the translation is metres (~1 m per frame at 10 m/s and 10 Hz), which at 0.01 needs a raw
    output of ~100 and thousands of steps to grow; 0.1 gets there in a few hundred.
    """

    def __init__(self, num_ch_enc: Sequence[int], num_input_features: int = 1, num_frames_to_predict_for: int = 1,
                 stride: int = 1, translation_scale: float = POSE_OUTPUT_SCALE):
        super().__init__()
        if not translation_scale > 0:
            raise ValueError(f"translation_scale must be > 0, got {translation_scale}")
        self.translation_scale = float(translation_scale)
        self.num_ch_enc = [int(c) for c in num_ch_enc]
        self.num_input_features = num_input_features
        self.num_frames_to_predict_for = num_frames_to_predict_for
        self.squeeze = nn.Conv2d(self.num_ch_enc[-1], 256, 1)
        self.pose_0 = nn.Conv2d(num_input_features * 256, 256, 3, stride, 1)
        self.pose_1 = nn.Conv2d(256, 256, 3, stride, 1)
        self.pose_2 = nn.Conv2d(256, 6 * num_frames_to_predict_for, 1)
        self.relu = nn.ReLU()

    def forward(self, input_features: Sequence[Sequence[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(input_features) != self.num_input_features:
            raise ValueError(f"expected {self.num_input_features} feature lists, got {len(input_features)}")
        x = torch.cat([self.relu(self.squeeze(f[-1])) for f in input_features], dim=1)
        x = self.relu(self.pose_0(x))
        x = self.relu(self.pose_1(x))
        x = self.pose_2(x).mean(dim=(2, 3))  # (B, 6 * frames)
        x = x.view(-1, self.num_frames_to_predict_for, 1, 6)
        return POSE_OUTPUT_SCALE * x[..., :3], self.translation_scale * x[..., 3:]
