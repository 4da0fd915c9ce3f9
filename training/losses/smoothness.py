"""Edge-aware smoothness of the predicted disparity (Monodepth2), as a pure function of tensors.

Shapes: B = batch, H x W = image size. Images are RGB in [0, 1].
"""

from __future__ import annotations

import torch
from kornia.losses import inverse_depth_smoothness_loss


def smoothness_loss(disp: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of mean-normalised disparity: disp (B, 1, H, W), img (B, 3, H, W) -> scalar.

    Disparity is divided by its per-image mean first, so the term cannot be lowered by shrinking the depth
    scale. The edge-aware weighting (|d disp| * exp(-mean_c |d img|), x and y) is kornia's
    ``inverse_depth_smoothness_loss``, which is the same function as Monodepth2's.
    """
    norm_disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    return inverse_depth_smoothness_loss(norm_disp, img)
