"""PackNet (Guizilini et al., "3D Packing for Self-Supervised Monocular Depth Estimation", CVPR 2020).

Encoder-decoder whose down- and up-sampling are learned, detail-preserving *packing* blocks instead of strided
convolutions / pooling:

- packing:   space-to-depth (``pixel_unshuffle``, r=2) -> 3D conv over the (channel, H, W) volume -> 2D conv;
- unpacking: 2D conv -> 3D conv -> depth-to-space (``pixel_shuffle``, r=2).

GroupNorm throughout, ELU activations, residual blocks in the encoder, skip connections and coarse-to-fine
inverse-depth outputs (each coarser prediction, upsampled, feeds the next finer decoder stage) in the decoder.
``version="01"`` is the paper's PackNet01 (128.3 M parameters with d=8 volumes per 3D conv; the paper reports
128 M); ``version="slim"`` keeps the topology with a quarter of the widths for CPU experiments.

Export notes (why the layers look like this): zero padding is done by the convolutions themselves, never by a
separate ``Pad`` node (TensorRT 7 rejected ONNX Pad with non-initializer pads); the 3D convolutions are 5D ``Conv``
nodes and the re-arrangements are ``Reshape``/``Transpose``/``DepthToSpace``, all static-shape.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monodepth_training.networks.monodepth2 import normalize_rgb01
from monodepth_training.networks.registry import register_depth_net

# Paper widths (PackNet01, Table 1 of the paper): stem, then encoder stages 1..5.
_WIDTHS = {"01": (64, 64, 64, 128, 256, 512), "slim": (16, 16, 16, 32, 64, 128)}
_RESIDUAL_BLOCKS = (2, 2, 3, 3)
_PACK_KERNELS = (5, 3, 3, 3, 3)


def _groups(channels: int, preferred: int = 16) -> int:
    """Largest group count <= ``preferred`` that divides ``channels`` (slim widths are not multiples of 16)."""
    g = min(preferred, channels)
    while channels % g:
        g -= 1
    return g


class ConvGNELU(nn.Module):
    """k x k conv (zero padding inside the conv) -> GroupNorm -> ELU; the paper's basic 2D layer."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.GroupNorm(_groups(out_ch), out_ch)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ResidualConv(nn.Module):
    """Two 3x3 convs with a 1x1 projection shortcut, joined before a GroupNorm + ELU."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0):
        super().__init__()
        self.conv1 = ConvGNELU(in_ch, out_ch, 3)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)
        self.norm = nn.GroupNorm(_groups(out_ch, 4), out_ch)
        self.act = nn.ELU(inplace=True)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.conv2(self.conv1(x)))
        return self.act(self.norm(y + self.shortcut(x)))


def residual_block(in_ch: int, out_ch: int, n: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(*[ResidualConv(in_ch if i == 0 else out_ch, out_ch, dropout) for i in range(n)])


def space_to_depth(x: torch.Tensor, r: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, C*r*r, H/r, W/r), lossless (``pixel_shuffle`` inverts it)."""
    if x.shape[-2] % r or x.shape[-1] % r:
        raise ValueError(f"space_to_depth needs H, W divisible by {r}, got {tuple(x.shape[-2:])}")
    return F.pixel_unshuffle(x, r)


def depth_to_space(x: torch.Tensor, r: int = 2) -> torch.Tensor:
    """(B, C*r*r, H, W) -> (B, C, H*r, W*r); inverse of :func:`space_to_depth`."""
    return F.pixel_shuffle(x, r)


class PackingBlock(nn.Module):
    """Learned 2x downsampling: (B, C, H, W) -> (B, C, H/2, W/2).

    Space-to-depth keeps every pixel (C -> 4C channels), a 3D conv treats the 4C channels as a depth axis and
    expands it to ``d`` feature volumes, and a 2D conv compresses the 4C*d channels back to C.
    """

    def __init__(self, channels: int, kernel: int, d: int = 4, r: int = 2):
        super().__init__()
        self.r = r
        self.conv3d = nn.Conv3d(1, d, kernel_size=3, padding=1)
        self.conv = ConvGNELU(channels * r * r * d, channels, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = space_to_depth(x, self.r)
        b, c, h, w = x.shape
        x = self.conv3d(x.unsqueeze(1))  # (B, d, 4C, H/2, W/2)
        return self.conv(x.reshape(b, -1, h, w))


class UnpackingBlock(nn.Module):
    """Learned 2x upsampling: (B, C_in, H, W) -> (B, C_out, 2H, 2W).

    A 2D conv produces C_out*4/d channels, a 3D conv expands them to ``d`` volumes (C_out*4 channels), and
    depth-to-space lays them out at twice the resolution.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, d: int = 4, r: int = 2):
        super().__init__()
        if (out_ch * r * r) % d:
            raise ValueError(f"out_ch*r*r={out_ch * r * r} must be divisible by d={d}")
        self.r = r
        self.conv = ConvGNELU(in_ch, out_ch * r * r // d, kernel)
        self.conv3d = nn.Conv3d(1, d, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        b, c, h, w = x.shape
        x = self.conv3d(x.unsqueeze(1)).reshape(b, -1, h, w)  # (B, d*C', H, W)
        return depth_to_space(x, self.r)


class InvDepthHead(nn.Module):
    """3x3 conv -> sigmoid: inverse depth in sigmoid units (B, 1, H, W); scaled later by sigmoid_to_disp."""

    def __init__(self, in_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


@register_depth_net("packnet")
class PackNet(nn.Module):
    """PackNet depth network, registry contract: forward(rgb01 (B, 3, H, W) in [0, 1]) ->
    {("disp", s): sigmoid (B, 1, H/2^s, W/2^s)} for s in 0..3.  H and W must be multiples of 32.

    ``version``: "01" (paper, default) or "slim" (quarter widths). ``d``: number of 3D-conv feature volumes
    (8: with it the parameter count matches the paper's 128 M). Input normalisation (Monodepth2's constants) is
    inside the network. The paper trains from scratch (no ImageNet weights), so there is no ``pretrained_path``.
    """

    def __init__(self, version: str = "01", d: int = 8, dropout: float = 0.0):
        super().__init__()
        if version not in _WIDTHS:
            raise ValueError(f"unknown PackNet version {version!r}; choose one of {sorted(_WIDTHS)}")
        self.version = version
        n0, n1, n2, n3, n4, n5 = _WIDTHS[version]

        self.stem = ConvGNELU(3, n0, 5)
        self.conv1 = ConvGNELU(n0, n1, 7)
        self.conv2 = residual_block(n1, n2, _RESIDUAL_BLOCKS[0], dropout)
        self.conv3 = residual_block(n2, n3, _RESIDUAL_BLOCKS[1], dropout)
        self.conv4 = residual_block(n3, n4, _RESIDUAL_BLOCKS[2], dropout)
        self.conv5 = residual_block(n4, n5, _RESIDUAL_BLOCKS[3], dropout)
        self.pack1, self.pack2, self.pack3, self.pack4, self.pack5 = (
            PackingBlock(c, k, d) for c, k in zip((n1, n2, n3, n4, n5), _PACK_KERNELS))

        self.unpack5 = UnpackingBlock(n5, n5, d=d)
        self.unpack4 = UnpackingBlock(n5, n4, d=d)
        self.unpack3 = UnpackingBlock(n4, n3, d=d)
        self.unpack2 = UnpackingBlock(n3, n2, d=d)
        self.unpack1 = UnpackingBlock(n2, n1, d=d)
        # Decoder convs: unpacked features + encoder skip (+ upsampled coarser inverse depth from stage 3 on).
        self.iconv5 = ConvGNELU(n5 + n4, n5, 3)
        self.iconv4 = ConvGNELU(n4 + n3, n4, 3)
        self.iconv3 = ConvGNELU(n3 + n2 + 1, n3, 3)
        self.iconv2 = ConvGNELU(n2 + n1 + 1, n2, 3)
        self.iconv1 = ConvGNELU(n1 + n0 + 1, n1, 3)
        self.disp4 = InvDepthHead(n4)
        self.disp3 = InvDepthHead(n3)
        self.disp2 = InvDepthHead(n2)
        self.disp1 = InvDepthHead(n1)

    def forward(self, rgb01: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
        if rgb01.ndim != 4 or rgb01.shape[1] != 3:
            raise ValueError(f"PackNet expects (B, 3, H, W) RGB, got {tuple(rgb01.shape)}")
        if rgb01.shape[-2] % 32 or rgb01.shape[-1] % 32:
            raise ValueError(f"PackNet needs H, W multiples of 32, got {tuple(rgb01.shape[-2:])}")
        x = normalize_rgb01(rgb01)

        x0 = self.stem(x)                      # 1/1
        x1p = self.pack1(self.conv1(x0))       # 1/2
        x2p = self.pack2(self.conv2(x1p))      # 1/4
        x3p = self.pack3(self.conv3(x2p))      # 1/8
        x4p = self.pack4(self.conv4(x3p))      # 1/16
        x5p = self.pack5(self.conv5(x4p))      # 1/32

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=2.0, mode="nearest")

        y5 = self.iconv5(torch.cat([self.unpack5(x5p), x4p], 1))      # 1/16
        y4 = self.iconv4(torch.cat([self.unpack4(y5), x3p], 1))       # 1/8
        d3 = self.disp4(y4)
        y3 = self.iconv3(torch.cat([self.unpack3(y4), x2p, up(d3)], 1))   # 1/4
        d2 = self.disp3(y3)
        y2 = self.iconv2(torch.cat([self.unpack2(y3), x1p, up(d2)], 1))   # 1/2
        d1 = self.disp2(y2)
        y1 = self.iconv1(torch.cat([self.unpack1(y2), x0, up(d1)], 1))    # 1/1
        d0 = self.disp1(y1)
        return {("disp", 0): d0, ("disp", 1): d1, ("disp", 2): d2, ("disp", 3): d3}

    def disparity_head_biases(self) -> list[torch.Tensor]:
        """Biases of the convs in front of the disparity sigmoids (see ``registry.set_initial_depth``)."""
        return [head.conv.bias for head in (self.disp1, self.disp2, self.disp3, self.disp4)]
