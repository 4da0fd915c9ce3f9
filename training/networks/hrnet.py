"""HRNet-W18 style encoder (Wang et al., "Deep High-Resolution Representation Learning", TPAMI 2020).

Keeps a high-resolution branch alive through the whole network and adds lower-resolution branches stage by
stage (strides 4, 8, 16, 32; widths 18, 36, 72, 144 for W18). Inside every module each branch runs residual
blocks, then all branches exchange information: every output branch sums every input branch, brought to its
resolution by 1x1 conv + nearest upsampling (coarser inputs) or strided 3x3 convs (finer inputs).

Module names follow the public HRNet ImageNet checkpoints (``conv1``, ``layer1``, ``transition1``, ``stage2.0
.branches.0.0.conv1`` ...), so a local HRNet-W18 classification state dict loads with ``pretrained_path``
(its classification head is dropped). DIFFNet (``diffnet.py``) is the depth network built on it.
"""

from __future__ import annotations

import os

import torch
from monodepth_training.networks.resnet_encoder import (
    BasicBlock,
    Bottleneck,
    init_resnet_weights,
    load_state_dict_file,
)
from torch import nn

# Widths and (modules, blocks per branch) of HRNet-W18's stages 2-4.
W18_CHANNELS = (18, 36, 72, 144)
W18_STAGES = ((1, 4), (4, 4), (3, 4))
_HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.", "last_layer.")


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
                               nn.BatchNorm2d(out_ch)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches (each ``blocks`` BasicBlocks) followed by the all-to-all fusion.

    forward(list of n tensors, branch i: (B, channels[i], H/2^(i+2), W/2^(i+2))) -> list of n tensors, same shapes.
    """

    def __init__(self, channels: tuple[int, ...], blocks: int):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(c, c) for _ in range(blocks)]) for c in channels)
        self.fuse_layers = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:  # coarser -> finer: 1x1 conv to the target width, nearest upsampling
                    row.append(nn.Sequential(
                        nn.Conv2d(channels[j], channels[i], 1, bias=False), nn.BatchNorm2d(channels[i]),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    row.append(nn.Identity())
                else:  # finer -> coarser: (i - j) stride-2 3x3 convs, ReLU between them but not after the last
                    steps = [_conv_bn(channels[j], channels[j], 3, 2) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], 3, 2, relu=False))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(row)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for row in self.fuse_layers:
            y = row[0](xs[0])
            for j in range(1, len(xs)):
                y = y + row[j](xs[j])
            out.append(self.relu(y))
        return out


def zero_init_branch_ends(module: nn.Module) -> None:
    """Zero the scale (gamma) of the last BatchNorm of every residual branch (BasicBlock ``bn2``, Bottleneck
    ``bn3``) and of every cross-resolution fusion path, so that an untrained HRNet passes each branch's input
    through unchanged (Goyal et al. 2017, torchvision's ``zero_init_residual``; the architecture is unchanged).

    Trained from scratch without it (table1: 192x64, batch 4, Adam 2e-4), DIFFNet's disparity fell to the
    no-parallax solution (sigmoid 0, depth = max, zero gradient) within ~130 steps and never learned. Each block and
    fusion adds a unit-variance BatchNorm output to the running sum: the W18 stage-4 features had std ~4.5
    (ResNet-18's ~1), and in training mode an image's disparity moved with the other images of its batch of 4
    (logit std across batch companions ~55% of the spatial std at scales 2-3; Monodepth2 ~10%). Zeroing only the
    residual ends, or only scaling the features down, did not stop the collapse; zeroing both ends did.
    ImageNet weights (``pretrained_path``) overwrite these scales. (Exported untrained, such convs fold to
    identical all-zero weights, which the TorchScript ONNX exporter shares through Identity nodes.)
    """
    for m in module.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
        elif isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, HighResolutionModule):
            for row in m.fuse_layers:
                for path in row:
                    norms = [b for b in path.modules() if isinstance(b, nn.BatchNorm2d)]
                    if norms:
                        nn.init.zeros_(norms[-1].weight)


class HRNetEncoder(nn.Module):
    """HRNet encoder on a normalised image (B, 3, H, W), H and W multiples of 32.

    forward -> dict with
      ``"stem"``: (B, 64, H/2, W/2), the first conv's output;
      ``"stages"``: list over stages 2, 3, 4 of the per-branch outputs, branch i at stride 2^(i+2) with
      ``channels[i]`` channels (stage 2 has 2 branches, stage 3 has 3, stage 4 has 4).
    DIFFNet fuses all of them ("internal feature fusion"), not just the last stage.
    """

    def __init__(self, channels: tuple[int, ...] = W18_CHANNELS, stages: tuple[tuple[int, int], ...] = W18_STAGES,
                 pretrained_path: str | os.PathLike | None = None):
        super().__init__()
        if len(channels) != 4 or len(stages) != 3:
            raise ValueError("HRNetEncoder needs 4 branch widths and 3 stage specs")
        self.channels = tuple(int(c) for c in channels)
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        down = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256))
        self.layer1 = nn.Sequential(Bottleneck(64, 64, 1, down), *[Bottleneck(256, 64) for _ in range(3)])
        self.transition1 = nn.ModuleList([
            _conv_bn(256, channels[0], 3), nn.Sequential(_conv_bn(256, channels[1], 3, 2))])
        self.stage2 = nn.Sequential(*[HighResolutionModule(channels[:2], stages[0][1]) for _ in range(stages[0][0])])
        self.transition2 = nn.ModuleList([nn.Identity(), nn.Identity(),
                                          nn.Sequential(_conv_bn(channels[1], channels[2], 3, 2))])
        self.stage3 = nn.Sequential(*[HighResolutionModule(channels[:3], stages[1][1]) for _ in range(stages[1][0])])
        self.transition3 = nn.ModuleList([nn.Identity(), nn.Identity(), nn.Identity(),
                                          nn.Sequential(_conv_bn(channels[2], channels[3], 3, 2))])
        self.stage4 = nn.Sequential(*[HighResolutionModule(channels, stages[2][1]) for _ in range(stages[2][0])])
        init_resnet_weights(self)
        zero_init_branch_ends(self)
        if pretrained_path is not None:
            self.load_pretrained(pretrained_path)

    def load_pretrained(self, path: str | os.PathLike) -> None:
        """Load a local HRNet ImageNet state dict (classification head ignored), strict on the backbone keys."""
        state = {k.removeprefix("module."): v for k, v in load_state_dict_file(path).items()}
        state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
        own = self.state_dict()
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise ValueError(f"HRNet state dict does not match: missing {missing[:10]}, unexpected {unexpected[:10]}")
        self.load_state_dict(state, strict=False)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        stem = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(self.relu(self.bn2(self.conv2(stem))))
        xs = self.stage2([t(x) for t in self.transition1])
        s2 = xs
        xs = self.stage3([t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(self.transition2)])
        s3 = xs
        xs = self.stage4([t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(self.transition3)])
        return {"stem": stem, "stages": [s2, s3, xs]}
