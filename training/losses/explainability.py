"""SfMLearner's explainability-mask-weighted photometric term, as a pure function of tensors (the masks'
regulariser lives with the pose network: :func:`monodepth_training.networks.sfmlearner.explainability_regularization`).

Shapes: B = batch, S = temporal sources, H x W = image size, h x w = mask size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monodepth_training.geometry import sigmoid_to_disp, warp
from monodepth_training.losses.photometric import photometric_error


def explainability_photometric(outputs, target, sources, T, K, *, masks, min_depth, max_depth, alpha):
    """SfMLearner's photometric term: per scale (disparity upsampled to full size), the mean over temporal
    sources of mask * photometric error; averaged over scales. sources (B, S, 3, H, W), T (B, S, 4, 4),
    masks: per source {scale: (B, 1, h, w)}."""
    H, W = target.shape[-2:]
    terms = []
    for (_, s), sigma in sorted((k, v) for k, v in outputs.items() if k[0] == "disp"):
        if s not in masks[0]:
            continue
        sigma = sigma if sigma.shape[-2:] == (H, W) else F.interpolate(sigma, (H, W), mode="bilinear",
                                                                       align_corners=False)
        depth = 1.0 / sigmoid_to_disp(sigma.float(), min_depth, max_depth)
        for i in range(len(masks)):
            err = photometric_error(warp(sources[:, i], depth, K, T[:, i]), target, alpha)
            m = F.interpolate(masks[i][s].float(), (H, W), mode="bilinear", align_corners=False)
            terms.append((err * m).mean())
    return torch.stack(terms).mean()
