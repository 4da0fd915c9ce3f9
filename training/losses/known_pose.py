"""Known ego-motion: warping with a source's GT relative poses, and supervising the pose network with them.

A robot usually knows how it moved (wheel odometry + IMU, GPS/INS, a SLAM system); KITTI odometry and our
synthetic world ship exact poses. Warping the source frames with that motion instead of the pose network's
removes the pose half of the joint depth/pose problem: from the first step the photometric loss sends the depth
network the gradient of the true geometry, in metres. Measured on KITTI odometry 03 (docs/real_cameras.md), the
pose network trained from scratch is no better than "drive straight at constant speed" (5-frame ATE 0.0149 m vs
0.0142 m), while a 1 degree yaw error moves a 320-pixel-wide image by about 3 pixels, as much as the parallax of a
kerb-side object 10 m away: on a winding road the learned pose corrupts the depth signal.

The pose network is still trained (by :func:`pose_supervision_loss`), so the bundle keeps a working pose net for
the pose benchmark and for samples without known poses; those fall back to its prediction
(:func:`select_known_poses`), per sample.
"""

from __future__ import annotations

import torch


def known_pose_mask(T_gt: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) known ``T_src_from_tgt`` (all-NaN where unknown) -> (B,) bool, True where the pose is known."""
    if T_gt.ndim != 3 or T_gt.shape[1:] != (4, 4):
        raise ValueError(f"T_gt must be (B, 4, 4), got {tuple(T_gt.shape)}")
    return torch.isfinite(T_gt).all(dim=2).all(dim=1)


def select_known_poses(T_pred: torch.Tensor, T_gt: torch.Tensor) -> torch.Tensor:
    """Per sample, the known pose where there is one, else the prediction: (B, 4, 4), (B, 4, 4) -> (B, 4, 4).

    The known pose carries no gradient; the prediction keeps its own where it is used.
    """
    if T_pred.shape != T_gt.shape:
        raise ValueError(f"T_pred {tuple(T_pred.shape)} and T_gt {tuple(T_gt.shape)} must have the same shape")
    known = known_pose_mask(T_gt)
    return torch.where(known[:, None, None], torch.nan_to_num(T_gt).to(T_pred.dtype), T_pred)


def pose_supervision_loss(T_pred: torch.Tensor, T_gt: torch.Tensor) -> torch.Tensor:
    """Mean over the samples with a known pose of ||t - t_gt||_1 (metres) + ||R - R_gt||_F (scalar).

    T_pred, T_gt (B, 4, 4) ``T_src_from_tgt``. The chordal rotation distance ||R - R_gt||_F equals
    2 sqrt(2) sin(theta / 2) for a rotation error theta (about 1.41 theta for small angles, in radians) and, unlike
    an arccos of the trace, has a finite gradient at zero error. Samples without a known pose are left out; with
    none left the loss is an exact 0 that still carries a (zero) gradient.
    """
    known = known_pose_mask(T_gt)
    if T_pred.shape != T_gt.shape:
        raise ValueError(f"T_pred {tuple(T_pred.shape)} and T_gt {tuple(T_gt.shape)} must have the same shape")
    if not bool(known.any()):
        return T_pred.sum() * 0.0
    P, G = T_pred[known].float(), T_gt[known].float()
    t_err = (P[:, :3, 3] - G[:, :3, 3]).abs().sum(dim=1)
    r_err = torch.sqrt(((P[:, :3, :3] - G[:, :3, :3]) ** 2).sum(dim=(1, 2)) + 1e-12)
    return (t_err + r_err).mean()
