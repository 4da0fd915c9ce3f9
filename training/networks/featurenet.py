"""FeatDepth's FeatureNet (Shu et al., "Feature-metric Loss for Self-supervised Learning of Depth and Egomotion",
ECCV 2020): an image autoencoder whose encoder features replace raw colours in the reprojection loss.

The encoder is the project's ResNet (:class:`ResnetEncoder`); the decoder reconstructs the image from the
bottleneck alone (no skip connections, as in FeatDepth), so every encoder level has to carry the image content
instead of letting a skip route it around. Training signal (see :mod:`monodepth_training.losses.feature_metric`):
photometric reconstruction + discriminative (large first-order feature gradients) + convergent (small
second-order gradients). The network is a training aid only: it never goes into a model bundle or an export.

Feature level: FeatDepth warps the first encoder level (after conv1: H/2, 64 channels, a 7-pixel receptive field).
``feature_level`` selects a deeper level (e.g. 1: H/4, ~43-pixel receptive field), whose features can vary
inside a textureless patch as far as the receptive field reaches an edge.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from monodepth_training.networks.layers import Conv3x3, ConvBlock, upsample2x
from monodepth_training.networks.monodepth2 import normalize_rgb01
from monodepth_training.networks.resnet_encoder import ResnetEncoder
from torch import nn

DECODER_CHANNELS = (16, 32, 64, 128, 256)


class ReconstructionDecoder(nn.Module):
    """Bottleneck feature (B, C4, H/32, W/32) -> {("recon", s): sigmoid RGB (B, 3, H/2^s, W/2^s)} for ``scales``.

    Five stages of ConvBlock, nearest x2 upsampling and a second ConvBlock, without encoder skips.
    """

    def __init__(self, bottleneck_channels: int, scales: Sequence[int] = (0, 1, 2, 3)):
        super().__init__()
        bad = [s for s in scales if s not in range(4)]
        if bad or not scales:
            raise ValueError(f"scales must be a non-empty subset of 0..3, got {list(scales)}")
        self.scales = tuple(sorted(int(s) for s in scales))
        self.convs = nn.ModuleDict()
        for i in range(4, -1, -1):
            ch_in = int(bottleneck_channels) if i == 4 else DECODER_CHANNELS[i + 1]
            self.convs[f"up_{i}_0"] = ConvBlock(ch_in, DECODER_CHANNELS[i])
            self.convs[f"up_{i}_1"] = ConvBlock(DECODER_CHANNELS[i], DECODER_CHANNELS[i])
        for s in self.scales:
            self.convs[f"rgb_{s}"] = Conv3x3(DECODER_CHANNELS[s], 3)

    def forward(self, bottleneck: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
        out: dict[tuple[str, int], torch.Tensor] = {}
        x = bottleneck
        for i in range(4, -1, -1):
            x = self.convs[f"up_{i}_1"](upsample2x(self.convs[f"up_{i}_0"](x)))
            if i in self.scales:
                out[("recon", i)] = torch.sigmoid(self.convs[f"rgb_{i}"](x))
        return out


class FeatureNet(nn.Module):
    """ResNet encoder + reconstruction decoder on [0, 1] RGB (B, 3, H, W), H and W multiples of 32.

    forward(rgb01) -> dict with ``"features"``: the 5 encoder levels (level i at H/2^(i+1)), and
    ``("recon", s)``: reconstructed RGB (B, 3, H/2^s, W/2^s) in [0, 1].
    :meth:`feature_map` returns only level ``feature_level`` (B, C, H/2^(l+1), W/2^(l+1)), the map the
    feature-metric loss warps.
    """

    def __init__(self, num_layers: int = 18, pretrained_path: str | os.PathLike | None = None,
                 feature_level: int = 0, scales: Sequence[int] = (0, 1, 2, 3), width: float = 1.0):
        super().__init__()
        if feature_level not in range(5):
            raise ValueError(f"feature_level must be within 0..4, got {feature_level}")
        self.feature_level = int(feature_level)
        self.config = {"num_layers": int(num_layers), "feature_level": self.feature_level,
                       "scales": [int(s) for s in scales], "width": float(width)}
        self.encoder = ResnetEncoder(num_layers, pretrained_path, num_input_images=1, width=width)
        self.decoder = ReconstructionDecoder(int(self.encoder.num_ch_enc[-1]), scales)
        self.scales = self.decoder.scales

    @property
    def feature_stride(self) -> int:
        """Input pixels per feature-map pixel at ``feature_level``."""
        return 2 ** (self.feature_level + 1)

    def _check(self, rgb01: torch.Tensor) -> None:
        if rgb01.ndim != 4 or rgb01.shape[1] != 3:
            raise ValueError(f"FeatureNet input must be (B, 3, H, W) RGB, got {tuple(rgb01.shape)}")
        if rgb01.shape[-2] % 32 or rgb01.shape[-1] % 32:
            raise ValueError(f"FeatureNet needs H, W multiples of 32, got {tuple(rgb01.shape[-2:])}")

    def encode(self, rgb01: torch.Tensor) -> list[torch.Tensor]:
        """rgb01 (B, 3, H, W) -> the 5 encoder levels."""
        self._check(rgb01)
        return self.encoder(normalize_rgb01(rgb01))

    def feature_map(self, rgb01: torch.Tensor) -> torch.Tensor:
        """rgb01 (B, 3, H, W) -> features (B, C, H/s, W/s) at ``feature_level``, s = :attr:`feature_stride`."""
        return self.encode(rgb01)[self.feature_level]

    def forward(self, rgb01: torch.Tensor) -> dict:
        features = self.encode(rgb01)
        out: dict = {"features": features}
        out.update(self.decoder(features[-1]))
        return out


def save_featurenet(path: str | os.PathLike, net: FeatureNet) -> None:
    """Write a FeatureNet's weights + constructor config to one ``.safetensors`` file, atomically."""
    import json

    from safetensors.torch import save as st_save

    from monodepth_ros.bundle import atomic_write_bytes

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(path, st_save(state, metadata={"featurenet": json.dumps(net.config)}))


def load_featurenet(path: str | os.PathLike) -> FeatureNet:
    """Rebuild a FeatureNet saved by :func:`save_featurenet` (strict key check; no pickle involved)."""
    import json
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FeatureNet weights not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "featurenet" not in meta:
        raise ValueError(f"{path} has no 'featurenet' metadata: not written by save_featurenet")
    net = FeatureNet(**json.loads(meta["featurenet"]))
    net.load_state_dict(load_file(str(path)), strict=True)
    return net
