"""Snippet ATE (SfMLearner/Monodepth2 KITTI odometry protocol): exact poses score zero, the score ignores a
global scale, the relative-pose convention is pinned, and the per-snippet formula matches hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monodepth_ros.evaluation.pose_eval import ate_snippets, compose_relative, snippet_ate
from monodepth_ros.geometry import invert_pose, pose_from_axis_angle


def curvy_trajectory(n: int = 12) -> np.ndarray:
    """GT ``T_world_from_cam`` (n, 4, 4): ~1 m/frame forward while yawing and pitching a little."""
    rng = np.random.default_rng(7)
    poses = [np.eye(4)]
    for _ in range(n - 1):
        step = pose_from_axis_angle(np.array([0.01, 0.08, 0.0]) + 0.02 * rng.standard_normal(3),
                                    np.array([0.05, -0.02, 1.0]) + 0.1 * rng.standard_normal(3))
        poses.append(poses[-1] @ step)
    return np.stack(poses)


def exact_rel(gt: np.ndarray) -> np.ndarray:
    """T_prev_from_next (n - 1, 4, 4) = inv(T_world_from_prev) @ T_world_from_next."""
    return invert_pose(gt[:-1]) @ gt[1:]


def test_exact_relative_poses_give_zero_ate():
    gt = curvy_trajectory()
    mean, std = ate_snippets(gt, exact_rel(gt))
    assert mean == pytest.approx(0.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_ate_is_invariant_to_a_global_translation_scale():
    gt = curvy_trajectory()
    rel = exact_rel(gt)
    rel[:, :3, 3] *= 0.27  # a monocular network's arbitrary scale
    mean, _ = ate_snippets(gt, rel)
    assert mean == pytest.approx(0.0, abs=1e-12)


def test_noisy_poses_score_worse_than_exact_ones():
    gt = curvy_trajectory()
    rel = exact_rel(gt)
    rng = np.random.default_rng(1)
    rel[:, :3, 3] += 0.05 * rng.standard_normal((len(rel), 3))
    mean, std = ate_snippets(gt, rel)
    assert 0.001 < mean < 0.1 and std > 0


def test_inverted_relative_poses_are_not_accepted_as_exact():
    # Pins the convention: entry i is T_{i}_from_{i+1}. Passing T_{i+1}_from_{i} must not score zero.
    gt = curvy_trajectory()
    mean, _ = ate_snippets(gt, invert_pose(exact_rel(gt)))
    assert mean > 0.01


def test_snippet_ate_hand_values_papers_and_rmse():
    gt = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    pred = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # orthogonal motion: best scale is 0
    assert snippet_ate(gt, pred, "papers") == pytest.approx(0.5)  # sqrt(1) / 2
    assert snippet_ate(gt, pred, "rmse") == pytest.approx(math.sqrt(0.5))
    gt3 = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 1.0, 0]])
    pred3 = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])  # scale = 5 / 5 = 1, one residual of 1 m
    assert snippet_ate(gt3, pred3) == pytest.approx(1.0 / 3)


def test_window_count_with_and_without_tail():
    gt = curvy_trajectory(8)
    rel = exact_rel(gt)
    rel[:, :3, 3] += 0.1
    # Monodepth2's loop also scores the 2..4-frame windows at the end; they change the mean.
    m_full, _ = ate_snippets(gt, rel)
    m_tail, _ = ate_snippets(gt, rel, include_tail=True)
    assert m_full > 0 and m_tail > 0 and m_full != m_tail


def test_compose_relative_chains_in_order():
    a = pose_from_axis_angle(np.array([0.0, 0.3, 0.0]), np.array([0.0, 0.0, 1.0]))
    b = pose_from_axis_angle(np.array([0.1, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]))
    chain = compose_relative(np.stack([a, b]))
    np.testing.assert_allclose(chain[2], a @ b)
    np.testing.assert_allclose(chain[0], np.eye(4))


def test_bad_shapes_are_named():
    gt = curvy_trajectory(6)
    with pytest.raises(ValueError, match=r"pred_rel_poses must be \(N - 1, 4, 4\)"):
        ate_snippets(gt, exact_rel(gt)[:-1])
    with pytest.raises(ValueError, match="at least 5 frames"):
        ate_snippets(gt[:4], exact_rel(gt[:4]))


def test_synthetic_drive_exact_poses_zero_and_scaled_poses_zero():
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

    world = SyntheticWorld(SynthConfig(width=64, height=32, seed=1))
    gt = np.stack([world.T_world_from_cam(i) for i in range(15)])
    assert np.linalg.norm(gt[-1, :3, 3] - gt[0, :3, 3]) > 5.0  # the car actually drives
    rel = exact_rel(gt)
    assert ate_snippets(gt, rel)[0] == pytest.approx(0.0, abs=1e-9)
    rel[:, :3, 3] *= 3.0
    assert ate_snippets(gt, rel)[0] == pytest.approx(0.0, abs=1e-9)
    rel[:, 0, 3] += 0.2  # a lateral drift the scale cannot absorb
    assert ate_snippets(gt, rel)[0] > 0.05
