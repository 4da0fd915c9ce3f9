"""Torch twin of :mod:`monodepth_ros.geometry` for training: the same conventions, batched, differentiable.

Shapes use B = batch, H, W = image size. Intrinsics are pixel matrices at the resolution being warped.
Only what the photometric warp needs lives here; everything else stays in the NumPy core.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.conversions import axis_angle_to_rotation_matrix


def sigmoid_to_disp(sigma: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Sigmoid output (any shape) -> scaled disparity in [1/max_depth, 1/min_depth] (Monodepth2)."""
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    return min_disp + (max_disp - min_disp) * sigma


def depth_to_sigmoid(depth: float, min_depth: float, max_depth: float) -> float:
    """Inverse of :func:`sigmoid_to_disp` for one depth in (min_depth, max_depth): the sigmoid value giving it."""
    if not min_depth < depth < max_depth:
        raise ValueError(f"depth {depth} must lie strictly inside ({min_depth}, {max_depth})")
    return (1.0 / depth - 1.0 / max_depth) / (1.0 / min_depth - 1.0 / max_depth)


def disp_to_depth(sigma: torch.Tensor, min_depth: float, max_depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid output -> (scaled disparity, depth), both the shape of ``sigma``."""
    disp = sigmoid_to_disp(sigma, min_depth, max_depth)
    return disp, 1.0 / disp


def pose_from_axis_angle(axis_angle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """Axis-angle (B, 3) + translation (B, 3) -> pose (B, 4, 4); ``invert`` returns the inverse pose.

    Rotation via kornia's tested Rodrigues implementation.
    """
    R = axis_angle_to_rotation_matrix(axis_angle)  # (B, 3, 3)
    t = translation.unsqueeze(-1)  # (B, 3, 1)
    if invert:
        R = R.transpose(1, 2)
        t = -R @ t
    T = torch.zeros(axis_angle.shape[0], 4, 4, dtype=axis_angle.dtype, device=axis_angle.device)
    T[:, :3, :3] = R
    T[:, :3, 3:] = t
    T[:, 3, 3] = 1.0
    return T


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel coordinates (3, H*W), row-major, pixel centres at integer coordinates."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], 0)


def backproject(depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
    """Depth (B, 1, H, W) + inverse intrinsics (B, 3, 3) -> camera points (B, 3, H*W)."""
    B, _, H, W = depth.shape
    pix = pixel_grid(H, W, depth.device, depth.dtype)  # (3, HW)
    rays = inv_K @ pix.unsqueeze(0)  # (B, 3, HW)
    return rays * depth.reshape(B, 1, H * W)


def project_to_grid(
    points: torch.Tensor, K: torch.Tensor, T: torch.Tensor, height: int, width: int, *, eps: float = 1e-7
) -> torch.Tensor:
    """Camera points (B, 3, N=H*W), intrinsics (B, 3, 3), pose (B, 4, 4) -> grid_sample grid (B, H, W, 2).

    Points are moved by ``T`` then projected; the grid uses ``align_corners=False`` normalisation, so pixel
    centre ``u`` maps to ``(2u + 1) / W - 1``.
    """
    B = points.shape[0]
    p = T[:, :3, :3] @ points + T[:, :3, 3:]
    uvw = K @ p
    z = uvw[:, 2:3].clamp(min=eps)
    uv = uvw[:, :2] / z  # (B, 2, N)
    uv = uv.reshape(B, 2, height, width).permute(0, 2, 3, 1)
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=uv.dtype, device=uv.device)
    return (uv + 0.5) * scale - 1.0


def warp(
    source: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, T_src_from_tgt: torch.Tensor
) -> torch.Tensor:
    """Inverse-warp ``source`` (B, C, H, W) into the target view using target depth (B, 1, H, W).

    ``K`` (B, 3, 3) are pixel intrinsics at H x W; ``T_src_from_tgt`` (B, 4, 4) maps target-camera points into
    the source camera. Border padding, as Monodepth2.
    """
    H, W = depth.shape[-2:]
    grid = project_to_grid(backproject(depth, torch.linalg.inv(K)), K, T_src_from_tgt, H, W)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
