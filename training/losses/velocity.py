"""PackNet-SfM's velocity supervision, as a pure function of tensors.

Velocity (Guizilini et al., "3D Packing for Self-Supervised Monocular Depth Estimation", CVPR 2020):
| ||t_hat|| - v * dt |, the predicted translation norm against the distance driven; it fixes the scale of
pose, and through the warp the scale of depth, to metres. PackNet-SfM's default weight: 0.1
(``VELOCITY_WEIGHT``).
"""

from __future__ import annotations

import torch

# PackNet-SfM's configs/default_config.py: model.loss.velocity_loss_weight = 0.1.
VELOCITY_WEIGHT = 0.1


def velocity_loss(translation: torch.Tensor, speed_mps: torch.Tensor, dt_s: torch.Tensor) -> torch.Tensor:
    """PackNet-SfM's velocity supervision: mean over the batch of | ||t_hat|| - |v * dt| | in metres (scalar).

    translation (B, 3): translation of the predicted ``T_src_from_tgt`` (model units); speed_mps (B,) speed
    of the vehicle; dt_s (B,) time between the two frames (sign ignored). Samples whose speed or dt is not
    finite (a source without odometry) are left out; with none left the loss is an exact 0 that still
    carries a (zero) gradient, so a batch without speed does not break training. Using a single speed for
    the interval assumes it changes little between frames (0.1 s apart in KITTI).
    """
    if translation.ndim != 2 or translation.shape[1] != 3:
        raise ValueError(f"translation must be (B, 3), got {tuple(translation.shape)}")
    B = translation.shape[0]
    speed_mps = torch.as_tensor(speed_mps, dtype=translation.dtype, device=translation.device).reshape(-1)
    dt_s = torch.as_tensor(dt_s, dtype=translation.dtype, device=translation.device).reshape(-1)
    if speed_mps.numel() != B or dt_s.numel() != B:
        raise ValueError(f"speed_mps and dt_s need {B} values, got {speed_mps.numel()} and {dt_s.numel()}")
    distance_m = (speed_mps * dt_s).abs()
    valid = torch.isfinite(distance_m)
    if not bool(valid.any()):
        return translation.sum() * 0.0
    # Guard the norm's gradient at t = 0 (an untrained pose net predicts almost exactly zero).
    norm = torch.sqrt((translation[valid] ** 2).sum(1) + 1e-12)
    return (norm - distance_m[valid]).abs().mean()
