"""SfMLearner baseline (Zhou, Brown, Snavely & Lowe, "Unsupervised Learning of Depth and Ego-Motion from Video",
CVPR 2017): its DispNet-style depth network, the pose network with an explainability-mask decoder, and the
mask's regulariser.

The depth network (registered "sfmlearner") is an encoder of seven stride-2 conv pairs (32 ... 512 channels,
kernels 7, 5, 3, ...) and a decoder of transposed convs with skip connections whose four finest stages emit
disparities, each coarser one upsampled into the next stage. The paper squashes with ``10 * sigmoid + 0.01``; here
the plain sigmoid is returned so that ``sigmoid_to_disp`` maps it like every other network.

The pose encoder is seven stride-2 ReLU convolutions on the stacked frames; a 1x1 conv + spatial mean gives the
6-DoF motion (x 0.01). The explainability decoder runs stride-2 transposed convolutions from the 5th encoder
layer and emits a sigmoid mask at four scales: 1 where the photometric error should count, towards 0 where the
static-scene model cannot explain a pixel (moving objects, occlusions). Without the regulariser the trivial
solution is an all-zero mask, hence :func:`explainability_regularization` (binary cross-entropy towards 1).

Adaptation to this project's pairwise pose contract (the paper feeds the target and all sources at once):
``forward(rgb01_a, rgb01_b)`` returns the motion of ``T_b_from_a`` like every registered pose net, and
:meth:`SfMLearnerPoseNet.forward_with_masks` also returns masks with 2 channels per scale: channel 0 lives on
frame ``a``'s pixel grid, channel 1 on frame ``b``'s. :func:`predict_T_src_from_tgt_and_mask` picks the
target's channel, whichever order the frames are fed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from monodepth_training.geometry import pose_from_axis_angle
from monodepth_training.networks.monodepth2 import normalize_rgb01
from monodepth_training.networks.pose_decoder import POSE_OUTPUT_SCALE
from monodepth_training.networks.registry import register_depth_net, register_pose_net
from torch import nn

ENCODER_CHANNELS = (16, 32, 64, 128, 256, 256, 256)
ENCODER_KERNELS = (7, 5, 3, 3, 3, 3, 3)
MASK_CHANNELS = (256, 128, 64, 32, 16)  # upcnv5 .. upcnv1
# SfMLearner's weight on the explainability regulariser (its released training setting).
EXPLAIN_REG_WEIGHT = 0.2


def _conv(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride=2, padding=kernel // 2), nn.ReLU(inplace=True))


def _upconv(in_ch: int, out_ch: int) -> nn.Sequential:
    # kernel 3, stride 2, padding 1, output_padding 1: exactly doubles H and W
    return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1),
                         nn.ReLU(inplace=True))


DISP_ENCODER_CHANNELS = (32, 64, 128, 256, 512, 512, 512)
DISP_ENCODER_KERNELS = (7, 5, 3, 3, 3, 3, 3)
DISP_DECODER_CHANNELS = (16, 32, 64, 128, 256, 512, 512)  # stage 1 .. 7 (output stride 2^(i-1))


def _conv_pair(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    """Stride-2 conv then stride-1 conv, both ReLU: one DispNet encoder level."""
    pad = kernel // 2
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, 2, pad), nn.ReLU(inplace=True),
                         nn.Conv2d(out_ch, out_ch, kernel, 1, pad), nn.ReLU(inplace=True))


def _resize_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # With H, W multiples of 32 (not 128) the two deepest levels have odd sizes, so a x2 transposed conv can
    # overshoot its skip by a pixel; nearest resizing to the skip's size is SfMLearner's own remedy.
    return x if x.shape[-2:] == ref.shape[-2:] else F.interpolate(x, size=ref.shape[-2:], mode="nearest")


@register_depth_net("sfmlearner")
class SfMLearnerDepthNet(nn.Module):
    """DispNet-style depth network: rgb01 (B, 3, H, W) -> {("disp", s): sigmoid (B, 1, H/2^s, W/2^s)}, s in 0..3.

    H, W multiples of 32.
    """

    def __init__(self):
        super().__init__()
        chans = (3,) + DISP_ENCODER_CHANNELS
        self.encoder = nn.ModuleList(_conv_pair(chans[i], chans[i + 1], k) for i, k in enumerate(DISP_ENCODER_KERNELS))
        self.upconvs = nn.ModuleDict()
        self.iconvs = nn.ModuleDict()
        self.disps = nn.ModuleDict()
        ch_in = DISP_ENCODER_CHANNELS[-1]
        for level in range(7, 0, -1):  # decoder level ``level`` works at stride 2^(level-1)
            out = DISP_DECODER_CHANNELS[level - 1]
            self.upconvs[str(level)] = _upconv(ch_in, out)
            skip = DISP_ENCODER_CHANNELS[level - 2] if level > 1 else 0
            extra = 1 if level <= 3 else 0  # the upsampled coarser disparity joins stages 3, 2, 1
            self.iconvs[str(level)] = nn.Sequential(nn.Conv2d(out + skip + extra, out, 3, padding=1),
                                                    nn.ReLU(inplace=True))
            if level <= 4:
                self.disps[str(level - 1)] = nn.Conv2d(out, 1, 3, padding=1)
            ch_in = out

    def forward(self, rgb01: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
        if rgb01.ndim != 4 or rgb01.shape[1] != 3:
            raise ValueError(f"SfMLearner depth net expects (B, 3, H, W) RGB, got {tuple(rgb01.shape)}")
        if rgb01.shape[-2] % 32 or rgb01.shape[-1] % 32:
            raise ValueError(f"SfMLearner depth net needs H, W multiples of 32, got {tuple(rgb01.shape[-2:])}")
        x = normalize_rgb01(rgb01)
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        out: dict[tuple[str, int], torch.Tensor] = {}
        disp = None
        for level in range(7, 0, -1):
            ref = skips[level - 2] if level > 1 else rgb01
            x = _resize_like(self.upconvs[str(level)](x), ref)
            parts = [x] + ([skips[level - 2]] if level > 1 else [])
            if disp is not None:
                parts.append(F.interpolate(disp, scale_factor=2.0, mode="nearest"))
            x = self.iconvs[str(level)](torch.cat(parts, 1))
            if str(level - 1) in self.disps:
                disp = torch.sigmoid(self.disps[str(level - 1)](x))
                out[("disp", level - 1)] = disp
        return out

    def disparity_head_biases(self) -> list[torch.Tensor]:
        """Biases of the convs in front of the disparity sigmoids (see ``registry.set_initial_depth``)."""
        return [head.bias for head in self.disps.values()]


@register_pose_net("sfmlearner_pose")
class SfMLearnerPoseNet(nn.Module):
    """Pose + explainability network on two frames (B, 3, H, W) each in [0, 1]; H, W multiples of 32.

    forward(rgb01_a, rgb01_b) -> (axisangle (B, 3), translation (B, 3)) of ``T_b_from_a``.
    forward_with_masks(...) -> (axisangle, translation, {("explain", s): sigmoid (B, 2, H/2^s, W/2^s)}), s 0..3.
    """

    predicts_explainability = True

    def __init__(self, num_scales: int = 4, translation_scale: float = POSE_OUTPUT_SCALE):
        super().__init__()
        if not 1 <= num_scales <= 4:
            raise ValueError(f"num_scales must be within 1..4, got {num_scales}")
        if not translation_scale > 0:
            raise ValueError(f"translation_scale must be > 0, got {translation_scale}")
        self.translation_scale = float(translation_scale)
        self.num_scales = num_scales
        chans = (6,) + ENCODER_CHANNELS
        self.encoder = nn.ModuleList(_conv(chans[i], chans[i + 1], k) for i, k in enumerate(ENCODER_KERNELS))
        self.pose_pred = nn.Conv2d(ENCODER_CHANNELS[-1], 6, 1)
        ups = (ENCODER_CHANNELS[4],) + MASK_CHANNELS
        self.upconvs = nn.ModuleList(_upconv(ups[i], ups[i + 1]) for i in range(len(MASK_CHANNELS)))
        # Masks come from upcnv4 (1/8), upcnv3 (1/4), upcnv2 (1/2), upcnv1 (1/1): scales 3, 2, 1, 0.
        self.mask_preds = nn.ModuleDict({str(s): nn.Conv2d(MASK_CHANNELS[4 - s], 2, 3, padding=1)
                                         for s in range(num_scales)})

    def _encode(self, rgb01_a: torch.Tensor, rgb01_b: torch.Tensor) -> list[torch.Tensor]:
        if rgb01_a.shape != rgb01_b.shape or rgb01_a.ndim != 4 or rgb01_a.shape[1] != 3:
            raise ValueError(f"pose inputs must both be (B, 3, H, W): {tuple(rgb01_a.shape)}, {tuple(rgb01_b.shape)}")
        if rgb01_a.shape[-2] % 32 or rgb01_a.shape[-1] % 32:
            raise ValueError(f"SfMLearner pose net needs H, W multiples of 32, got {tuple(rgb01_a.shape[-2:])}")
        x = normalize_rgb01(torch.cat([rgb01_a, rgb01_b], 1))
        feats = []
        for layer in self.encoder:
            x = layer(x)
            feats.append(x)
        return feats

    def _pose(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        motion = self.pose_pred(feats[-1]).mean(dim=(2, 3))  # (B, 6)
        # As PoseDecoder: rotation x 0.01 always, translation x translation_scale (0.01 unless metric training).
        return POSE_OUTPUT_SCALE * motion[:, :3], self.translation_scale * motion[:, 3:]

    def forward(self, rgb01_a: torch.Tensor, rgb01_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._pose(self._encode(rgb01_a, rgb01_b))

    def forward_with_masks(self, rgb01_a: torch.Tensor, rgb01_b: torch.Tensor):
        feats = self._encode(rgb01_a, rgb01_b)
        axisangle, translation = self._pose(feats)
        x = feats[4]
        masks: dict[tuple[str, int], torch.Tensor] = {}
        for i, up in enumerate(self.upconvs):
            x = up(x)
            scale = 4 - i  # upcnv5 -> 1/16 (no mask), upcnv4 -> scale 3, ...
            if str(scale) in self.mask_preds:
                masks[("explain", scale)] = torch.sigmoid(self.mask_preds[str(scale)](x))
        return axisangle, translation, masks


def predict_T_src_from_tgt_and_mask(pose_net: SfMLearnerPoseNet, rgb01_tgt: torch.Tensor, rgb01_src: torch.Tensor,
                                    src_is_before: bool) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """``T_src_from_tgt`` (B, 4, 4) and the target's explainability masks {s: (B, 1, H/2^s, W/2^s)}.

    Same frame ordering as ``monodepth2.predict_T_src_from_tgt`` (earlier frame first); the mask channel that
    lies on the target's pixel grid is returned.
    """
    if src_is_before:
        axisangle, translation, masks = pose_net.forward_with_masks(rgb01_src, rgb01_tgt)
        T = pose_from_axis_angle(axisangle, translation, invert=True)
        channel = 1
    else:
        axisangle, translation, masks = pose_net.forward_with_masks(rgb01_tgt, rgb01_src)
        T = pose_from_axis_angle(axisangle, translation)
        channel = 0
    return T, {s: m[:, channel:channel + 1] for (_, s), m in masks.items()}


def explainability_regularization(masks: Mapping | Iterable[torch.Tensor]) -> torch.Tensor:
    """SfMLearner's regulariser: sum over scales of mean binary cross-entropy of each mask towards 1 (scalar).

    ``masks``: tensors (B, C, h, w) with values in [0, 1] (a dict's values or any iterable). It is 0 for all-ones
    masks and grows as masks move towards 0, which stops the photometric loss from switching every pixel off.
    Multiply by ``EXPLAIN_REG_WEIGHT`` (0.2) as the paper's code does.
    """
    values = list(masks.values()) if isinstance(masks, Mapping) else list(masks)
    if not values:
        raise ValueError("explainability_regularization needs at least one mask")
    # CUDA autocast refuses binary_cross_entropy (unsafe in float16); the masks are probabilities, not logits, so
    # the term runs in float32 with autocast off (found by the first GPU run of the table, benchmarks/table1.py).
    with torch.autocast(device_type=values[0].device.type, enabled=False):
        total = values[0].new_zeros((), dtype=torch.float32)
        for m in values:  # binary_cross_entropy itself rejects values outside [0, 1]
            m = m.float()
            total = total + F.binary_cross_entropy(m, torch.ones_like(m))
    return total
