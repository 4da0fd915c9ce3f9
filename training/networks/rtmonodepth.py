"""A real-time depth network after RT-MonoDepth (Feng, Chen, Zhang, Hu, Li & Lu, "Real-time Monocular Depth
Estimation on Embedded Systems", ICIP 2024, arXiv:2308.10569), written here from the paper's description.

The paper's point is that on embedded inference engines latency follows the number and size of the layers more
than the cleverness of the blocks: its encoder is a 4-stage pyramid of plain 3x3 convolutions (the first of each
stage with stride 2; no residual blocks, no depth-wise convolutions, no normalisation), and its decoder shrinks
the channels *before* each nearest x2 upsampling and fuses the encoder feature of the same size by addition
(concatenation at the finest level). RT-MonoDepth has encoder channels (64, 64, 128, 256) with three convs per
stage (the registry defaults); RT-MonoDepth-S has (64, 64, 128, 192) with two.

``channels``, ``convs`` and ``width`` choose the size. On a CPU the cost sits at high resolution: the H/2 level
(three 64-channel encoder convs and the decoder's conv after the concatenation) is more than half of the paper
network's FLOPs. The project's real-time model (``CPU_REALTIME``: the shipped default model,
``config/train/default_model.yaml``) therefore spends little at H/2 and H/4 and more at H/8 and H/16:
``channels=(16, 32, 64, 128), convs=(1, 2, 3, 3)``.

Where this network departs from the paper, and why:

- One contract for every registered net: disparities at 4 scales, scale 0 at the full input resolution. The
  encoder's finest feature is at H/2, so the scale-0 head is a sub-pixel conv there: 4 sigmoids per H/2 pixel,
  rearranged to full resolution (``PixelShuffle``, ONNX ``DepthToSpace``, which TensorRT's parser supports).
  Full-resolution detail without a full-resolution convolution: in ONNX Runtime a conv + head at 320x96 took
  about 1 ms of the 3.7 ms of a first version that had one.
- ``batch_norm=True`` adds BatchNorm to the encoder convs (the paper has none). The project trains from scratch on
  a small budget, where normalised activations usually converge faster (the slim ResNet default has BatchNorm
  too); export folds it into the convolutions, so inference pays nothing. Not an ablated choice.
- Zero padding inside the convolutions (no separate reflection-pad layers) and LeakyReLU(0.1) throughout: each
  layer is one fused Conv+activation in ONNX Runtime and TensorRT, and one QDQ pair in INT8.

The exported graph holds only Conv (BatchNorm folded), LeakyRelu, nearest Resize with a fixed factor, Add, Concat,
Sigmoid and DepthToSpace (or the Reshape/Transpose it lowers to), plus the input normalisation and, for
``input_color="grey"``, the luma step of :func:`monodepth2.normalize_rgb01`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monodepth_training.networks.layers import upsample2x
from monodepth_training.networks.monodepth2 import _check_input_color, normalize_rgb01
from monodepth_training.networks.registry import register_depth_net
from monodepth_training.networks.resnet_encoder import scaled_channels
from monodepth_training.networks.validity import VALID_KEY, ValidityHead
from torch import nn

# The project's real-time configuration for CPUs: the shipped default model (config/train/default_model.yaml).
CPU_REALTIME = {"channels": (16, 32, 64, 128), "convs": (1, 2, 3, 3), "batch_norm": True}
# RT-MonoDepth-S in the paper (the registry defaults are RT-MonoDepth).
PAPER_SMALL = {"channels": (64, 64, 128, 192), "convs": (2, 2, 2, 2)}
LEAKY_SLOPE = 0.1
NUM_STAGES = 4  # encoder features at H/2 ... H/16; also the number of disparity scales (H ... H/8)


def _conv(in_ch: int, out_ch: int, stride: int = 1, batch_norm: bool = False) -> nn.Sequential:
    """3x3 conv (zero padding) [+ BatchNorm] + LeakyReLU: (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride)."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
    return nn.Sequential(*layers)


class PyramidEncoder(nn.Module):
    """Normalised image (B, 3, H, W) -> 4 features, feature i: (B, num_ch_enc[i], H/2^(i+1), W/2^(i+1)).

    Stage i is ``convs[i]`` 3x3 convs with ``num_ch_enc[i]`` channels, the first with stride 2.
    """

    def __init__(self, channels: Sequence[int], convs: Sequence[int], batch_norm: bool = False):
        super().__init__()
        if len(channels) != NUM_STAGES or len(convs) != NUM_STAGES:
            raise ValueError(f"need {NUM_STAGES} channel counts and conv counts, got {list(channels)}, {list(convs)}")
        if min(convs) < 1:
            raise ValueError(f"every stage needs at least one conv, got {list(convs)}")
        self.num_ch_enc = tuple(int(c) for c in channels)
        stages = []
        ch_in = 3
        for ch, n in zip(self.num_ch_enc, convs):
            stages.append(nn.Sequential(_conv(ch_in, ch, 2, batch_norm),
                                        *(_conv(ch, ch, 1, batch_norm) for _ in range(int(n) - 1))))
            ch_in = ch
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class RTDepthDecoder(nn.Module):
    """Encoder features (H/2 ... H/16) -> {("disp", s): sigmoid (B, 1, H/2^s, W/2^s)} for s in 0..3.

    From the H/16 feature up, level s (at H/2^s, s = 3, 2, 1) reduces the channels at the coarser size (3x3 conv,
    4x cheaper than after the upsampling), upsamples x2 (nearest), fuses encoder feature s - 1 (addition; at
    s = 1 concatenation when ``concat_finest``) and refines with one 3x3 conv; a 3x3 conv + sigmoid reads
    scale s from it. Scale 0 comes from the H/2 level too: a 3x3 conv to 4 channels + sigmoid, then a x2 pixel
    shuffle, so each full-resolution pixel has its own learned value. With ``validity_head`` a
    :class:`~monodepth_training.networks.validity.ValidityHead` reads the same H/2 feature and adds
    ``("valid", 0)`` (B, 1, H, W), the probability that a pixel is a surface and not the sky.
    """

    def __init__(self, num_ch_enc: Sequence[int], concat_finest: bool = True, validity_head: bool = False):
        super().__init__()
        if len(num_ch_enc) != NUM_STAGES:
            raise ValueError(f"RTDepthDecoder needs {NUM_STAGES} encoder channel counts, got {list(num_ch_enc)}")
        self.concat_finest = concat_finest
        c = [int(ch) for ch in num_ch_enc]
        self.reduce = nn.ModuleDict()
        self.fuse = nn.ModuleDict()
        self.disp = nn.ModuleDict()
        ch_in = c[3]
        for s in (3, 2, 1):
            self.reduce[str(s)] = _conv(ch_in, c[s - 1])
            self.fuse[str(s)] = _conv(2 * c[0] if s == 1 and concat_finest else c[s - 1], c[s - 1])
            self.disp[str(s)] = nn.Conv2d(c[s - 1], 1, 3, padding=1)
            ch_in = c[s - 1]
        self.disp["0"] = nn.Conv2d(c[0], 4, 3, padding=1)
        self.to_full_res = nn.PixelShuffle(2)
        self.validity = ValidityHead(c[0], upscale=2) if validity_head else None

    def forward(self, features: Sequence[torch.Tensor]) -> dict[tuple[str, int], torch.Tensor]:
        outputs: dict[tuple[str, int], torch.Tensor] = {}
        x = features[3]
        for s in (3, 2, 1):
            x = upsample2x(self.reduce[str(s)](x))
            x = torch.cat([x, features[0]], dim=1) if s == 1 and self.concat_finest else x + features[s - 1]
            x = self.fuse[str(s)](x)
            outputs[("disp", s)] = torch.sigmoid(self.disp[str(s)](x))
        # Sigmoid before the shuffle (they commute): the head conv then feeds the graph's last Sigmoid directly,
        # which is how the INT8 recipes find the disparity head to keep in fp32 (quantize.fp32_node_names).
        outputs[("disp", 0)] = self.to_full_res(torch.sigmoid(self.disp["0"](x)))
        if self.validity is not None:
            outputs[VALID_KEY] = self.validity(x)
        return dict(sorted(outputs.items()))


@register_depth_net("rtmonodepth")
class RTMonoDepthNet(nn.Module):
    """RT-MonoDepth-style net: rgb01 (B, 3, H, W) -> {("disp", s): sigmoid (B, 1, H/2^s, W/2^s)}, s in 0..3.

    H and W must be multiples of 16. ``channels`` (4 stages, H/2 ... H/16) and ``convs`` (per stage) default to
    the paper's RT-MonoDepth; RT-MonoDepth-S is ``channels=(64, 64, 128, 192), convs=(2, 2, 2, 2)``. ``width``
    scales every channel count (rounded to a multiple of 8, at least 8). ``input_color="grey"`` puts the
    RGB -> luma step in front of the graph, as in :class:`monodepth2.Monodepth2DepthNet`. ``validity_head`` adds
    the ``("valid", 0)`` output (:mod:`monodepth_training.networks.validity`).
    """

    def __init__(self, channels: Sequence[int] = (64, 64, 128, 256), convs: Sequence[int] = (3, 3, 3, 3),
                 width: float = 1.0, batch_norm: bool = False, concat_finest: bool = True, input_color: str = "rgb",
                 validity_head: bool = False):
        super().__init__()
        self.input_color = _check_input_color(input_color)
        scaled = [scaled_channels(int(ch), width) for ch in channels]
        self.encoder = PyramidEncoder(scaled, convs, batch_norm)
        self.decoder = RTDepthDecoder(self.encoder.num_ch_enc, concat_finest, validity_head)
        self.scales = tuple(range(NUM_STAGES))
        heads = list(self.decoder.disp.values())
        own_init = set(self.decoder.validity.modules()) if self.decoder.validity is not None else set()
        for m in self.modules():
            if m in own_init:  # the validity head initialises itself (a zero last conv: 0.5 everywhere)
                continue
            # Kaiming init for LeakyReLU keeps activations at unit scale through the plain (residual-free) stack.
            if isinstance(m, nn.Conv2d) and all(m is not h for h in heads):
                nn.init.kaiming_normal_(m.weight, a=LEAKY_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            # The heads start at a tenth of torch's default weights: LeakyReLU features are mostly positive, so at
            # full size the random weights shift every logit by a common offset and an untrained net would not
            # start at the depth that set_initial_depth puts in the biases.
            for h in heads:
                h.weight.mul_(0.1)

    def forward(self, rgb01: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
        if rgb01.ndim != 4 or rgb01.shape[1] != 3:
            raise ValueError(f"rtmonodepth expects (B, 3, H, W) RGB, got {tuple(rgb01.shape)}")
        if rgb01.shape[-2] % 16 or rgb01.shape[-1] % 16:
            raise ValueError(f"rtmonodepth needs H, W multiples of 16, got {tuple(rgb01.shape[-2:])}")
        return self.decoder(self.encoder(normalize_rgb01(rgb01, self.input_color)))

    def disparity_head_biases(self) -> list[torch.Tensor]:
        """Biases of the convs in front of the disparity sigmoids (see ``registry.set_initial_depth``)."""
        return [self.decoder.disp[str(s)].bias for s in self.scales]
