"""Pose evaluation: absolute trajectory error (ATE) on short snippets, the figure SfMLearner, Monodepth2 and
their successors report for KITTI odometry sequences 09 and 10.

For every window of ``snippet`` consecutive frames, both trajectories are expressed relative to the window's
first frame (so no rotation alignment is needed), the prediction is scaled by the least-squares factor
``s = sum(gt . pred) / sum(pred . pred)`` over the camera positions, and the window's error is computed from the
position residuals. The result is the mean and std over windows.

The papers' per-window error is ``sqrt(sum ||e||^2) / n`` (SfMLearner's ``compute_ate``, copied by Monodepth2),
which is NOT the RMSE ``sqrt(sum ||e||^2 / n)``; ``error="papers"`` (default) reproduces the published numbers,
``error="rmse"`` gives the textbook RMSE.
"""

from __future__ import annotations

import numpy as np

from monodepth_ros.geometry import invert_pose

__all__ = ["snippet_ate", "ate_snippets", "compose_relative"]


def compose_relative(rel_poses: np.ndarray) -> np.ndarray:
    """Chain relative poses ``T_{i}_from_{i+1}`` (M, 4, 4) into ``T_0_from_k`` (M + 1, 4, 4), k = 0..M."""
    rel_poses = np.asarray(rel_poses, dtype=np.float64)
    out = np.empty((rel_poses.shape[0] + 1, 4, 4))
    out[0] = np.eye(4)
    for k, T in enumerate(rel_poses):  # M <= snippet - 1 (4): a short sequential product, not a hot path
        out[k + 1] = out[k] @ T
    return out


def snippet_ate(gt_xyz: np.ndarray, pred_xyz: np.ndarray, error: str = "papers") -> float:
    """ATE of one snippet from camera positions (n, 3) relative to the snippet's first frame.

    The first positions are made to coincide (both are the origin when built by :func:`ate_snippets`), then
    the prediction is scaled by ``sum(gt . pred) / sum(pred . pred)``.
    """
    gt_xyz = np.asarray(gt_xyz, dtype=np.float64)
    pred_xyz = np.asarray(pred_xyz, dtype=np.float64)
    if gt_xyz.shape != pred_xyz.shape or gt_xyz.ndim != 2 or gt_xyz.shape[1] != 3:
        raise ValueError(f"positions must be matching (n, 3) arrays, got {gt_xyz.shape} and {pred_xyz.shape}")
    pred_xyz = pred_xyz + (gt_xyz[0] - pred_xyz[0])
    denom = float(np.sum(pred_xyz**2))
    # A prediction that does not move cannot be scaled; its error is then the GT motion itself.
    scale = float(np.sum(gt_xyz * pred_xyz)) / denom if denom > 0 else 0.0
    sq_err = float(np.sum((pred_xyz * scale - gt_xyz) ** 2))
    n = gt_xyz.shape[0]
    if error == "papers":
        return float(np.sqrt(sq_err) / n)
    if error == "rmse":
        return float(np.sqrt(sq_err / n))
    raise ValueError(f"error must be 'papers' or 'rmse', got {error!r}")


def ate_snippets(gt_poses: np.ndarray, pred_rel_poses: np.ndarray, snippet: int = 5, error: str = "papers",
                 include_tail: bool = False) -> tuple[float, float]:
    """Mean and std of the snippet ATE over a sequence.

    Args:
        gt_poses: GT camera poses ``T_world_from_cam`` (N, 4, 4).
        pred_rel_poses: predicted motion between consecutive frames, ``T_prev_from_next`` (N - 1, 4, 4):
            entry i maps points of camera i+1 into camera i (i.e. the pose of frame i+1 seen from frame i).
            A pose network trained Monodepth2-style gives ``T_src_from_tgt``; with target = frame i and
            source = frame i+1, invert it to get this.
        snippet: frames per window (5 in the papers); windows start at every frame (stride 1).
        error: "papers" (``sqrt(sum e^2) / n``) or "rmse".
        include_tail: also score the shorter windows at the end of the sequence, as Monodepth2's loop does
            (it runs a window from every frame but the last); off by default so every window has ``snippet``
            frames.
    Returns:
        (mean ATE, std ATE) in the units of the GT positions.
    """
    gt_poses = np.asarray(gt_poses, dtype=np.float64)
    pred_rel_poses = np.asarray(pred_rel_poses, dtype=np.float64)
    if gt_poses.ndim != 3 or gt_poses.shape[1:] != (4, 4):
        raise ValueError(f"gt_poses must be (N, 4, 4), got {gt_poses.shape}")
    N = gt_poses.shape[0]
    if pred_rel_poses.shape != (N - 1, 4, 4):
        raise ValueError(f"pred_rel_poses must be (N - 1, 4, 4) = ({N - 1}, 4, 4), got {pred_rel_poses.shape}")
    if snippet < 2:
        raise ValueError(f"snippet must be >= 2 frames, got {snippet}")
    if N < snippet:
        raise ValueError(f"need at least {snippet} frames for one snippet, got {N}")
    last_start = N - 2 if include_tail else N - snippet
    ates = []
    for start in range(last_start + 1):  # one small window per frame; the per-window math is vectorised
        stop = min(start + snippet, N)
        gt_local = invert_pose(gt_poses[start]) @ gt_poses[start:stop]  # T_first_from_k
        pred_local = compose_relative(pred_rel_poses[start : stop - 1])
        ates.append(snippet_ate(gt_local[:, :3, 3], pred_local[:, :3, 3], error))
    ates = np.asarray(ates)
    return float(ates.mean()), float(ates.std())
