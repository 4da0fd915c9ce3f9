"""Known ego-motion: the samples' GT relative poses (``T_gt``) as the warp's pose and as pose-net supervision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monodepth_training.datasets.synthetic import SyntheticDataset
from monodepth_training.geometry import warp
from monodepth_training.losses import (
    ExtraLossConfig,
    known_pose_mask,
    monodepth2_loss,
    pose_supervision_loss,
    resolve_scale_policy,
    select_known_poses,
    total_loss,
)
from monodepth_training.module import MonoDepthModule
from monodepth_training.networks.registry import build_depth_net, build_pose_net
from torch.utils.data import default_collate

from monodepth_ros.geometry import invert_pose, pose_from_axis_angle

H, W = 64, 96
SLIM = {"num_layers": 18, "width": 0.25}


def _T(axis_angle, t) -> torch.Tensor:
    return torch.tensor(pose_from_axis_angle(np.asarray(axis_angle, float), np.asarray(t, float)), dtype=torch.float32)


def test_synthetic_samples_carry_the_exact_pose_and_it_warps_the_source_onto_the_target():
    """The convention end to end: warping the next frame with the exact depth and ``T_gt`` reproduces the target
    far better than the inverse motion or no motion (the photometric loss's geometry)."""
    ds = SyntheticDataset(H, W, num_frames=8, seed=3, frame_offsets=[0, -1, 1], load_depth_gt=True)
    s = ds[3]
    f_tgt, f_src = ds.world.render(4), ds.world.render(5)
    np.testing.assert_allclose(s["T_gt"][1].numpy(), invert_pose(f_src.T_world_from_cam) @ f_tgt.T_world_from_cam,
                               atol=1e-5)
    depth = s["depth_gt"][None].clone()
    depth[depth <= 0] = 1e3  # sky
    K = s["K"][None]

    def err(T):
        return (warp(s["color"][1][None], depth, K, T[None]) - s["color"][0][None]).abs().mean().item()

    e_true, e_inv, e_none = err(s["T_gt"][1]), err(torch.linalg.inv(s["T_gt"][1])), err(torch.eye(4))
    # Measured at seed 3, 64x96: 0.057 exact vs 0.097 inverse and 0.083 unwarped (disocclusions, moving cars).
    assert e_true < 0.7 * e_inv and e_true < 0.75 * e_none


def test_select_known_poses_takes_the_known_pose_per_sample_and_the_prediction_elsewhere():
    pred = torch.stack([_T([0, 0.1, 0], [0, 0, 1]), _T([0, -0.1, 0], [1, 0, 0])]).requires_grad_(True)
    gt = torch.stack([_T([0, 0.02, 0], [0, 0, -0.8]), torch.full((4, 4), float("nan"))])
    assert known_pose_mask(gt).tolist() == [True, False]
    out = select_known_poses(pred, gt)
    torch.testing.assert_close(out[0], gt[0])
    torch.testing.assert_close(out[1], pred[1].detach())
    out.sum().backward()
    assert pred.grad[0].abs().sum() == 0 and pred.grad[1].abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        select_known_poses(pred, gt[:1])
    with pytest.raises(ValueError, match=r"\(B, 4, 4\)"):
        known_pose_mask(torch.zeros(4, 4))


def test_pose_supervision_is_translation_l1_plus_chordal_rotation_over_known_samples_only():
    gt = torch.stack([_T([0, 0.0, 0], [0, 0, -1]), torch.full((4, 4), float("nan"))])
    same = torch.stack([gt[0], _T([0, 0.3, 0], [5, 5, 5])])
    assert pose_supervision_loss(same, gt).item() == pytest.approx(0.0, abs=1e-5)
    theta = 0.05
    off = torch.stack([_T([0, theta, 0], [0.1, 0, -1.2]), _T([0, 0.3, 0], [5, 5, 5])])
    expected = 0.1 + 0.2 + 2 * np.sqrt(2) * np.sin(theta / 2)
    assert pose_supervision_loss(off, gt).item() == pytest.approx(expected, rel=1e-4)
    none = torch.full((2, 4, 4), float("nan"))
    p = off.clone().requires_grad_(True)
    z = pose_supervision_loss(p, none)
    z.backward()
    assert z.item() == 0.0 and torch.isfinite(p.grad).all()


def _nets():
    torch.manual_seed(0)
    return (build_depth_net("monodepth2", **SLIM), build_pose_net("monodepth2_pose", **SLIM))


def test_total_loss_with_gt_pose_warp_warps_with_the_known_poses_and_trains_the_pose_net_by_supervision():
    ds = SyntheticDataset(H, W, num_frames=5, seed=0, frame_offsets=[0, -1, 1])
    batch = default_collate([ds[0], ds[1]])
    depth, pose = _nets()
    kw = dict(temporal_offsets=[-1, 1], use_stereo=False, min_depth=0.1, max_depth=100.0)
    extras = ExtraLossConfig(gt_pose_warp=True, pose_supervision_weight=1.0)
    out = total_loss(depth, pose, batch, "color_aug", extras=extras, **kw)
    # The photometric term is the one computed with the GT poses directly.
    with torch.no_grad():
        ref = monodepth2_loss(depth(batch["color_aug"][0]), batch["color"][0],
                              [batch["color"][-1], batch["color"][1]],
                              torch.stack([batch["T_gt"][-1], batch["T_gt"][1]], 1), batch["K"],
                              min_depth=0.1, max_depth=100.0)
    assert out["photometric"].item() == pytest.approx(ref["photometric"].item(), rel=1e-5)
    assert out["pose_supervised"].item() > 0
    out["loss"].backward()
    # The pose net learns from the supervision only; the depth net from the photometric loss.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pose.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in depth.parameters())
    # Without known poses in a sample the pose net's own prediction warps it (and no supervision applies).
    unknown = dict(batch, T_gt={k: torch.full_like(v, float("nan")) for k, v in batch["T_gt"].items()})
    plain = total_loss(depth, pose, unknown, "color_aug", extras=ExtraLossConfig(), **kw)
    fallback = total_loss(depth, pose, unknown, "color_aug", extras=extras, **kw)
    assert fallback["photometric"].item() == pytest.approx(plain["photometric"].item(), rel=1e-5)
    assert fallback["pose_supervised"].item() == 0.0
    with pytest.raises(KeyError, match="T_gt"):
        total_loss(depth, pose, {k: v for k, v in batch.items() if k != "T_gt"}, "color_aug", extras=extras, **kw)


def test_known_poses_make_the_model_metric_and_the_module_validates_and_warns():
    assert resolve_scale_policy("auto", 0.0, False, 0.0, gt_pose_warp=True) == ("metric", 1.0)
    assert resolve_scale_policy("auto", 0.0, False, 0.0, gt_pose_warp=False)[0] == "relative"
    with pytest.raises(ValueError, match="pose_supervision_weight"):
        ExtraLossConfig(pose_supervision_weight=-1.0)
    m = MonoDepthModule(depth_kwargs=SLIM, pose_kwargs=SLIM, height=H, width=W, gt_pose_warp=True,
                        pose_supervision_weight=1.0)
    assert m.scale_policy == "metric"
    assert m.bundle_meta().training["extras"]["gt_pose_warp"] is True
    with pytest.warns(UserWarning, match="pose network learns nothing"):
        MonoDepthModule(depth_kwargs=SLIM, pose_kwargs=SLIM, height=H, width=W, gt_pose_warp=True)
    with pytest.raises(ValueError, match="temporal source frames"):
        MonoDepthModule(depth_kwargs=SLIM, height=H, width=W, frame_offsets=[0], use_stereo=True, gt_pose_warp=True,
                        pose_supervision_weight=1.0)


def test_the_documented_known_pose_command_line_parses_with_monodepth_train():
    """docs/real_cameras.md's reproduction line goes through monodepth-train's own parser (a typo fails here)."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[2]
    cli = Path(sys.executable).with_name("monodepth-train")
    args = ["--model.gt_pose_warp", "true", "--model.pose_supervision_weight", "1", "--model.velocity_weight", "0",
            "--model.velocity_warmup_steps", "0", "--trainer.default_root_dir", "runs/gtpose"]
    assert " ".join(args) in " ".join((repo / "docs/real_cameras.md").read_text().replace("`", "").split())
    out = subprocess.run([str(cli), "fit", "--config", str(repo / "config/train/default_model.yaml"), *args,
                          "--print_config"], capture_output=True, text=True, timeout=300, cwd=repo)
    assert out.returncode == 0, out.stderr[-2000:]
    model = yaml.safe_load(out.stdout)["model"]
    assert model["gt_pose_warp"] is True and model["pose_supervision_weight"] == 1.0 and model["velocity_weight"] == 0
