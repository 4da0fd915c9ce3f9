"""The Monodepth2 depth and pose networks as complete models that take [0, 1] RGB.

Input normalisation ``(x - 0.45) / 0.225`` lives inside the models, so an exported depth graph takes plain
[0, 1] RGB and every backend feeds the same thing.

Pose convention (Monodepth2): ``pose_net(rgb01_a, rgb01_b)`` with frame ``a`` earlier in time than ``b``
predicts the motion parameters of ``T_b_from_a`` (maps points in camera ``a`` into camera ``b``).
Call :func:`predict_T_src_from_tgt` instead of ordering the frames by hand.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from monodepth_training.geometry import pose_from_axis_angle
from monodepth_training.networks.depth_decoder import DepthDecoder
from monodepth_training.networks.pose_decoder import POSE_OUTPUT_SCALE, PoseDecoder
from monodepth_training.networks.resnet_encoder import ResnetEncoder
from torch import nn

from monodepth_ros.backends.model_meta import INPUT_COLORS

# Monodepth2's normalisation constants (roughly ImageNet's grey level), applied inside the graph.
INPUT_MEAN = 0.45
INPUT_STD = 0.225


# ITU-R BT.601 luma, the weights OpenCV's RGB2GRAY and most camera drivers' mono8 conversion use.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def rgb_to_grey3(rgb01: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB (B, 3k, H, W) -> its luma repeated in all three channels of each of the k frames.

    A grey frame fed as three equal channels (the node's mono8 path) maps to itself, so a model with this in
    its graph gives the same depth for a grey camera and for the luma of a colour camera.
    """
    B, C, H, W = rgb01.shape
    if C % 3:
        raise ValueError(f"expected 3k channels, got {C}")
    w = rgb01.new_tensor(LUMA_WEIGHTS).view(1, 1, 3, 1, 1)
    luma = (rgb01.view(B, C // 3, 3, H, W) * w).sum(2, keepdim=True)
    return luma.expand(B, C // 3, 3, H, W).reshape(B, C, H, W)


def normalize_rgb01(rgb01: torch.Tensor, input_color: str = "rgb") -> torch.Tensor:
    """[0, 1] RGB (B, 3k, H, W) -> network input (B, 3k, H, W); ``input_color="grey"`` takes the luma first."""
    if input_color == "grey":
        rgb01 = rgb_to_grey3(rgb01)
    return (rgb01 - INPUT_MEAN) / INPUT_STD


def _check_input_color(input_color: str) -> str:
    if input_color not in INPUT_COLORS:
        raise ValueError(f"input_color must be one of {INPUT_COLORS}, got {input_color!r}")
    return input_color


class Monodepth2DepthNet(nn.Module):
    """ResNet encoder + Monodepth2 depth decoder: rgb01 (B, 3, H, W) -> {("disp", s): sigmoid (B, 1, H/2^s, W/2^s)}.

    H and W must be multiples of 32. ``width`` < 1 scales every channel count of encoder and decoder (the
    paper's network is width 1; the embedded default model uses a slim one to stay small). ``input_color="grey"``
    puts an RGB -> luma step at the front of the graph, so one model serves grey (mono8) and colour cameras.
    ``validity_head`` adds the ``("valid", 0)`` output (:mod:`monodepth_training.networks.validity`).
    """

    def __init__(self, num_layers: int = 18, pretrained_path: str | os.PathLike | None = None,
                 scales: Sequence[int] = (0, 1, 2, 3), width: float = 1.0, input_color: str = "rgb",
                 validity_head: bool = False):
        super().__init__()
        self.input_color = _check_input_color(input_color)
        self.encoder = ResnetEncoder(num_layers, pretrained_path, num_input_images=1, width=width)
        self.decoder = DepthDecoder(self.encoder.num_ch_enc, scales, width=width, validity_head=validity_head)
        self.scales = self.decoder.scales

    def forward(self, rgb01: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
        return self.decoder(self.encoder(normalize_rgb01(rgb01, self.input_color)))

    def disparity_head_biases(self) -> list[torch.Tensor]:
        """Biases of the convs in front of the disparity sigmoids (see ``registry.set_initial_depth``)."""
        return [self.decoder.convs[f"dispconv_{s}"].conv.bias for s in self.scales]


class Monodepth2PoseNet(nn.Module):
    """Separate ResNet encoder on two stacked frames + pose decoder.

    forward(rgb01_a (B, 3, H, W), rgb01_b (B, 3, H, W)) -> (axisangle (B, 3), translation (B, 3)) such that
    ``geometry.pose_from_axis_angle(axisangle, translation)`` is ``T_b_from_a``. With ``a`` = target and
    ``b`` = source this is ``T_src_from_tgt``; Monodepth2 always feeds the earlier frame first, which
    :func:`predict_T_src_from_tgt` takes care of.
    """

    def __init__(self, num_layers: int = 18, pretrained_path: str | os.PathLike | None = None, width: float = 1.0,
                 translation_scale: float = POSE_OUTPUT_SCALE, input_color: str = "rgb"):
        super().__init__()
        self.input_color = _check_input_color(input_color)
        self.encoder = ResnetEncoder(num_layers, pretrained_path, num_input_images=2, width=width)
        self.decoder = PoseDecoder(self.encoder.num_ch_enc, num_input_features=1, num_frames_to_predict_for=1,
                                   translation_scale=translation_scale)

    def forward(self, rgb01_a: torch.Tensor, rgb01_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if rgb01_a.shape != rgb01_b.shape:
            raise ValueError(f"pose inputs differ in shape: {tuple(rgb01_a.shape)} vs {tuple(rgb01_b.shape)}")
        features = self.encoder(normalize_rgb01(torch.cat([rgb01_a, rgb01_b], dim=1), self.input_color))
        axisangle, translation = self.decoder([features])
        return axisangle[:, 0, 0], translation[:, 0, 0]


def predict_T_src_from_tgt(pose_net: nn.Module, rgb01_tgt: torch.Tensor, rgb01_src: torch.Tensor,
                           src_is_before: bool) -> torch.Tensor:
    """Pose that warps a source frame into the target view: ``T_src_from_tgt`` (B, 4, 4).

    ``rgb01_tgt``, ``rgb01_src``: (B, 3, H, W) in [0, 1]. As in Monodepth2 the network always sees the two
    frames in temporal order: a source after the target is fed ``(tgt, src)`` and its output used as is; a
    source before the target (``src_is_before=True``) is fed ``(src, tgt)``, which predicts
    ``T_tgt_from_src``, and that pose is inverted. Keeping the order fixed means the network only ever learns
    forward-in-time motion.
    """
    if src_is_before:
        axisangle, translation = pose_net(rgb01_src, rgb01_tgt)
        return pose_from_axis_angle(axisangle, translation, invert=True)
    axisangle, translation = pose_net(rgb01_tgt, rgb01_src)
    return pose_from_axis_angle(axisangle, translation)
