"""Depth supervision where exact ground truth exists, as a pure function of tensors.

Shapes: B = batch, H x W = GT size, h x w = prediction size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_depth_loss(depth_pred: torch.Tensor, depth_gt: torch.Tensor, max_depth: float = float("inf")
                          ) -> torch.Tensor:
    """Mean |log(pred) - log(gt)| over the pixels with ground truth (scalar): depth supervision where exact GT
    exists (the synthetic world's rendered depth), next to the self-supervised terms.

    depth_pred (B, 1, h, w) metres (any size; resized bilinearly to the GT's); depth_gt (B, 1, H, W) metres,
    0 / non-finite / beyond ``max_depth`` = no GT (sky, real frames without LiDAR). The log error is scale-
    aware (it pins metres, unlike a median-scaled error) and weights a 10 % miss equally at 5 m and at 50 m.
    Without any GT pixel in the batch it is an exact 0 that still carries a (zero) gradient.
    """
    if depth_pred.ndim != 4 or depth_gt.ndim != 4 or depth_pred.shape[:2] != depth_gt.shape[:2]:
        raise ValueError(f"need (B, 1, h, w) prediction and (B, 1, H, W) GT, got {tuple(depth_pred.shape)} and "
                         f"{tuple(depth_gt.shape)}")
    gt = depth_gt.to(depth_pred.dtype)
    valid = torch.isfinite(gt) & (gt > 0) & (gt <= max_depth)
    if not bool(valid.any()):
        return depth_pred.sum() * 0.0
    if depth_pred.shape[-2:] != gt.shape[-2:]:
        depth_pred = F.interpolate(depth_pred, gt.shape[-2:], mode="bilinear", align_corners=False)
    err = (torch.log(depth_pred.clamp_min(1e-6)) - torch.log(torch.where(valid, gt, torch.ones_like(gt)))).abs()
    return err[valid].mean()
