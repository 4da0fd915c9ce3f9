"""ResNet-18/34/50 feature encoder, written here because the project does not depend on torchvision.

Module names follow torchvision's ResNet exactly (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so an ImageNet
state dict saved by torchvision loads with a strict key check. Weights are read from a LOCAL file only
(``.pth``/``.pt`` via ``torch.load(weights_only=True)``, or ``.safetensors``); nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

# (block type, blocks per stage) for the supported depths.
_RESNET_SPECS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride on the 3x3 conv (torchvision's "ResNet v1.5"), so torchvision weights match.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def init_resnet_weights(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan_out) convs, BatchNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def scaled_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded to a multiple of 8 (at least 8), the usual slim-network rule."""
    if not 0 < width <= 4:
        raise ValueError(f"width multiplier must be in (0, 4], got {width}")
    return max(8, int(round(channels * width / 8)) * 8)


class ResNetTrunk(nn.Module):
    """torchvision-compatible ResNet body without the classifier head (no ``avgpool``/``fc``)."""

    def __init__(self, num_layers: int, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        kind, blocks = _RESNET_SPECS[num_layers]
        block = BasicBlock if kind == "basic" else Bottleneck
        planes = [scaled_channels(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._in_planes = planes[0]
        self.layer1 = self._make_layer(block, planes[0], blocks[0], 1)
        self.layer2 = self._make_layer(block, planes[1], blocks[1], 2)
        self.layer3 = self._make_layer(block, planes[2], blocks[2], 2)
        self.layer4 = self._make_layer(block, planes[3], blocks[3], 2)
        init_resnet_weights(self)

    def _make_layer(self, block, planes: int, n_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in_planes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_planes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self._in_planes, planes, stride, downsample)]
        self._in_planes = planes * block.expansion
        layers += [block(self._in_planes, planes) for _ in range(n_blocks - 1)]
        return nn.Sequential(*layers)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a local ``.safetensors`` file or a torch file, never unpickling objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    # Some checkpoints wrap the weights, e.g. {"state_dict": {...}} or {"model": {...}}.
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat tensor state dict")
    return state


def load_torchvision_resnet(trunk: ResNetTrunk, state: dict[str, torch.Tensor], num_input_images: int = 1) -> None:
    """Load a torchvision-format ResNet ImageNet state dict into ``trunk`` with a strict key check.

    The classifier (``fc.*``) is dropped. Old torchvision checkpoints have no ``num_batches_tracked``
    buffers; those are allowed to be missing (they only matter for momentum-free BatchNorm). For
    ``num_input_images > 1`` the first conv's RGB filters are repeated once per image and divided by the
    number of images, so a stack of identical frames gives the same activations as one frame.
    """
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = trunk.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            "pretrained ResNet state dict does not match the encoder: "
            f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''}, "
            f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''} "
            "(is it a torchvision ResNet of the same depth?)"
        )
    state = dict(state)
    if num_input_images > 1:
        w = state["conv1.weight"]
        state["conv1.weight"] = torch.cat([w] * num_input_images, dim=1) / num_input_images
    bad_shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
                  if tuple(v.shape) != tuple(own[k].shape)]
    if bad_shapes:
        raise ValueError(f"pretrained ResNet state dict has wrong tensor shapes: {bad_shapes[:10]}")
    trunk.load_state_dict(state, strict=False)


class ResnetEncoder(nn.Module):
    """ResNet feature pyramid: normalised images (B, 3*n, H, W) -> 5 features.

    Feature i has ``num_ch_enc[i]`` channels at H/2^(i+1) x W/2^(i+1): the stem (after conv1/bn/relu, /2),
    then layer1 (/4, after max-pool) ... layer4 (/32). ``num_input_images`` > 1 stacks frames along channels
    (the pose encoder). ``pretrained_path`` is a local torchvision-format ImageNet state dict.
    ``width`` < 1 gives a slim encoder (every channel count scaled, e.g. 0.5 -> 1/4 of the parameters) for
    small embedded models; ImageNet weights exist only for width 1.
    """

    def __init__(
        self, num_layers: int = 18, pretrained_path: str | os.PathLike | None = None, num_input_images: int = 1,
        width: float = 1.0,
    ):
        super().__init__()
        if num_layers not in _RESNET_SPECS:
            raise ValueError(f"num_layers must be one of {sorted(_RESNET_SPECS)}, got {num_layers}")
        if num_input_images < 1:
            raise ValueError(f"num_input_images must be >= 1, got {num_input_images}")
        self.num_layers = num_layers
        self.num_input_images = num_input_images
        if pretrained_path is not None and width != 1.0:
            raise ValueError(f"ImageNet weights need width 1.0, got width {width}")
        self.num_ch_enc = np.array([scaled_channels(c, width) for c in (64, 64, 128, 256, 512)])
        if num_layers > 34:
            self.num_ch_enc[1:] *= 4
        self.encoder = ResNetTrunk(num_layers, in_channels=3 * num_input_images, width=width)
        if pretrained_path is not None:
            load_torchvision_resnet(self.encoder, load_state_dict_file(pretrained_path), num_input_images)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        e = self.encoder
        f0 = e.relu(e.bn1(e.conv1(x)))
        f1 = e.layer1(e.maxpool(f0))
        f2 = e.layer2(f1)
        f3 = e.layer3(f2)
        f4 = e.layer4(f3)
        return [f0, f1, f2, f3, f4]
