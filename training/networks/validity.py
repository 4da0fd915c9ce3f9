"""The validity head: a per-pixel probability that a depth network's pixel shows a surface (1) and not the sky (0).

A monocular network gives every pixel a depth, the sky included (the default model puts the synthetic world's sky
at a median of ~22 m, inside the road's range), so a point cloud gets a wall where the sky is. The head reads the
decoder's finest feature map, which already carries the context of the whole encoder pyramid, and is trained on
its own with the trunk frozen (:mod:`monodepth_training.validity`): the depth the network publishes does not
change, and any trained bundle can get a head afterwards. The synthetic world gives exact sky labels for free.

Exported as the graph's second output ``valid`` (``monodepth_ros.backends.model_meta.VALIDITY_OUTPUT_NAME``); the
node publishes NaN where it is below ``validity_threshold`` and the value itself as ``depth/confidence``.
"""

from __future__ import annotations

import torch
from torch import nn

VALID_KEY = ("valid", 0)  # the depth network's output key: probability (B, 1, H, W) in [0, 1], full resolution
LEAKY_SLOPE = 0.1


class ValidityHead(nn.Module):
    """Decoder feature (B, C, H/u, W/u) -> validity logits (B, 1, H, W), ``u`` = ``upscale`` (1 or 2).

    Two 3x3 convs (C -> C, LeakyReLU, C -> u*u) and, for ``u`` = 2, a pixel shuffle to full resolution, as the
    rtmonodepth disparity head does, so every output pixel has its own value without a full-resolution conv.
    The last conv starts at zero weight and bias: an untrained head says 0.5 everywhere, which the node's default
    threshold (0.5) does not mask.
    """

    def __init__(self, in_channels: int, upscale: int = 1):
        super().__init__()
        if upscale not in (1, 2):
            raise ValueError(f"upscale must be 1 or 2, got {upscale}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        self.upscale = int(upscale)
        self.hidden = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=False)
        self.logits = nn.Conv2d(in_channels, self.upscale * self.upscale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(self.upscale) if self.upscale > 1 else nn.Identity()
        nn.init.zeros_(self.logits.weight)
        nn.init.zeros_(self.logits.bias)

    def forward_logits(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> logits (B, 1, h * u, w * u), for the training loss (BCE on logits is stable)."""
        return self.shuffle(self.logits(self.act(self.hidden(feature))))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> probability (B, 1, h * u, w * u). Sigmoid before the shuffle (they commute), so the
        exported graph's validity ends in Sigmoid -> DepthToSpace like the disparity head."""
        z = self.logits(self.act(self.hidden(feature)))
        return self.shuffle(torch.sigmoid(z))


def validity_head_of(depth_net: nn.Module) -> ValidityHead:
    """The :class:`ValidityHead` of a registered depth network built with ``validity_head=True``.

    Raises ValueError naming the network when it has none (built without it, or an architecture without support).
    """
    head = getattr(getattr(depth_net, "decoder", None), "validity", None)
    if not isinstance(head, ValidityHead):
        name = getattr(depth_net, "registry_name", type(depth_net).__name__)
        raise ValueError(f"depth network {name!r} has no validity head: build it with validity_head=True "
                         f"(supported: rtmonodepth, monodepth2)")
    return head


def has_validity_head(depth_net: nn.Module) -> bool:
    """True when ``depth_net`` emits :data:`VALID_KEY`."""
    return isinstance(getattr(getattr(depth_net, "decoder", None), "validity", None), ValidityHead)
