"""Metric scale from velocity supervision and stereo, and the extras wired into one training step
(feature-metric with a joint or pre-trained FeatureNet, explainability masks), on the synthetic world."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monodepth_training.datasets.synthetic import SyntheticDataset
from monodepth_training.geometry import sigmoid_to_disp
from monodepth_training.losses import (
    ExtraLossConfig,
    build_featurenet,
    resolve_scale_policy,
    total_loss,
    velocity_loss,
)
from monodepth_training.networks.featurenet import FeatureNet, save_featurenet
from monodepth_training.networks.monodepth2 import predict_T_src_from_tgt
from monodepth_training.networks.registry import build_depth_net, build_pose_net, set_initial_depth
from torch.utils.data import DataLoader, default_collate

from monodepth_ros.evaluation.metrics import evaluate_depth

H, W = 64, 96
SLIM = {"num_layers": 18, "width": 0.25}


def _batch(n=2, **kw):
    ds = SyntheticDataset(H, W, num_frames=n + 2, seed=0, **kw)
    return default_collate([ds[i] for i in range(n)])


def test_velocity_loss_drives_the_pose_translation_norm_to_the_distance_driven():
    """A freshly initialised pose net predicts ~0 translation (x0.01 output scaling); a few dozen steps of the
    velocity loss alone bring ||t|| to v * dt of the synthetic drive (about 1 m between frames)."""
    torch.manual_seed(0)
    batch = _batch(4)
    pose = build_pose_net("monodepth2_pose", **SLIM)
    opt = torch.optim.Adam(pose.parameters(), lr=1e-3)
    distance_m = (0.5 * (batch["speed_mps"][0] + batch["speed_mps"][1]) * batch["dt_s"][1]).abs()
    assert torch.all(distance_m > 0.5)

    def norm():
        T = predict_T_src_from_tgt(pose, batch["color"][0], batch["color"][1], src_is_before=False)
        return T[:, :3, 3].norm(dim=1)

    with torch.no_grad():
        start = norm()
    for _ in range(25):
        T = predict_T_src_from_tgt(pose, batch["color"][0], batch["color"][1], src_is_before=False)
        loss = velocity_loss(T[:, :3, 3], 0.5 * (batch["speed_mps"][0] + batch["speed_mps"][1]), batch["dt_s"][1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = norm()
    assert torch.all((start - distance_m).abs() > 0.8 * distance_m)
    assert torch.all((end - distance_m).abs() < 0.15 * distance_m)


def test_velocity_warmup_switches_the_term_on_after_its_steps_and_the_module_follows_its_global_step():
    from monodepth_training.module import MonoDepthModule

    extras = ExtraLossConfig(velocity_weight=0.1, velocity_warmup_steps=3)
    assert [extras.at_step(s).velocity_weight for s in range(5)] == [0.0, 0.0, 0.0, 0.1, 0.1]
    assert ExtraLossConfig(velocity_weight=0.1).at_step(0).velocity_weight == 0.1
    with pytest.raises(ValueError, match="velocity_warmup_steps"):
        ExtraLossConfig(velocity_weight=0.1, velocity_warmup_steps=-1)

    torch.manual_seed(0)
    model = MonoDepthModule(depth_kwargs=SLIM, pose_kwargs={**SLIM, "translation_scale": 0.1}, height=H, width=W,
                            velocity_weight=0.1, velocity_warmup_steps=5, init_depth=10.0)
    assert model.pose.decoder.translation_scale == 0.1
    batch = _batch(2)
    # Outside a Trainer the global step is 0: inside the warm-up, so the velocity term is not in the loss.
    warm = model._loss(batch, "color_aug")
    assert "velocity" not in warm
    model.extras = ExtraLossConfig(velocity_weight=0.1)  # no warm-up: the term is there
    assert float(model._loss(batch, "color_aug")["velocity"]) > 0


def test_translation_scale_scales_only_the_translation_and_is_validated():
    torch.manual_seed(0)
    plain = build_pose_net("monodepth2_pose", **SLIM)
    torch.manual_seed(0)
    scaled = build_pose_net("monodepth2_pose", **SLIM, translation_scale=0.1)
    a, b = torch.rand(2, 3, H, W), torch.rand(2, 3, H, W)
    with torch.no_grad():
        (r0, t0), (r1, t1) = plain(a, b), scaled(a, b)
    torch.testing.assert_close(r1, r0)
    torch.testing.assert_close(t1, 10.0 * t0)
    with pytest.raises(ValueError, match="translation_scale"):
        build_pose_net("monodepth2_pose", **SLIM, translation_scale=0.0)


def test_scale_policy_follows_the_supervision():
    assert resolve_scale_policy("auto", velocity_weight=0.1, use_stereo=False) == ("metric", 1.0)
    assert resolve_scale_policy("auto", velocity_weight=0.1, use_stereo=True) == ("metric", 1.0)
    assert resolve_scale_policy("auto", velocity_weight=0.0, use_stereo=True) == ("fixed", 1.0)
    assert resolve_scale_policy("auto", velocity_weight=0.0, use_stereo=False) == ("relative", 1.0)
    assert resolve_scale_policy("relative", velocity_weight=0.1, use_stereo=False)[0] == "relative"


def test_dataset_stereo_pose_is_the_fixed_metric_baseline():
    batch = _batch(2, use_stereo=True)
    expected = np.eye(4, dtype=np.float32)
    expected[0, 3] = -0.54  # the right camera 0.54 m along the left's +x: target points move by -0.54 m
    np.testing.assert_allclose(batch["T_stereo"][0].numpy(), expected, atol=1e-6)


def test_total_loss_adds_feature_metric_velocity_and_stereo_and_reaches_every_network():
    torch.manual_seed(0)
    batch = _batch(2, use_stereo=True)
    depth = build_depth_net("monodepth2", **SLIM)
    pose = build_pose_net("monodepth2_pose", **SLIM)
    extras = ExtraLossConfig(feature_metric_weight=1e-3, velocity_weight=0.1, featurenet_mode="joint")
    featurenet = build_featurenet("joint", kwargs=SLIM)
    kw = dict(temporal_offsets=[-1, 1], use_stereo=True, min_depth=0.1, max_depth=100.0)
    losses = total_loss(depth, pose, batch, "color_aug", extras=extras, featurenet=featurenet, **kw)
    for key in ("feature_metric", "featurenet", "velocity", "pose_translation_m"):
        assert torch.isfinite(losses[key]), key
    plain = total_loss(depth, pose, batch, "color_aug", extras=ExtraLossConfig(), **kw)
    assert "velocity" not in plain and "feature_metric" not in plain
    losses["loss"].backward()
    for net in (depth, pose, featurenet):
        assert sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None) > 0
    with pytest.raises(ValueError, match="featurenet_mode"):
        ExtraLossConfig(feature_metric_weight=1e-3)


def test_pretrained_featurenet_loads_frozen_from_its_safetensors_file(tmp_path):
    torch.manual_seed(0)
    net = FeatureNet(**SLIM, feature_level=1)
    path = tmp_path / "featurenet.safetensors"
    save_featurenet(path, net)
    loaded = build_featurenet("pretrained", path)
    x = torch.rand(1, 3, H, W)
    net.eval()
    assert torch.equal(loaded.feature_map(x), net.feature_map(x))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    with pytest.raises(ValueError, match="featurenet_path"):
        build_featurenet("pretrained")
    (tmp_path / "plain.safetensors").write_bytes(path.read_bytes()[:50])
    with pytest.raises(Exception):  # noqa: B017 - a truncated file: safetensors' own error
        build_featurenet("pretrained", tmp_path / "plain.safetensors")


def test_explainability_masks_replace_the_photometric_term_and_learn_with_the_regulariser():
    torch.manual_seed(0)
    batch = _batch(2)
    depth = build_depth_net("monodepth2", **SLIM)
    pose = build_pose_net("sfmlearner_pose")
    kw = dict(temporal_offsets=[-1, 1], use_stereo=False, min_depth=0.1, max_depth=100.0)
    losses = total_loss(depth, pose, batch, "color_aug", extras=ExtraLossConfig(explainability_weight=0.2), **kw)
    # Sum over 2 sources x 4 scales of BCE towards 1; an untrained mask sits near 0.5 (BCE ~0.69 each).
    assert 0 < float(losses["explainability_reg"]) < 8 * 1.5
    losses["loss"].backward()
    assert pose.mask_preds["0"].weight.grad.abs().sum() > 0
    off = total_loss(depth, pose, batch, "color_aug", extras=ExtraLossConfig(), **kw)
    assert "explainability_reg" not in off


def _train_and_eval(velocity_weight: float, steps: int) -> tuple[dict, dict]:
    torch.manual_seed(0)
    world = {"static_segments": True, "moving_objects": True}
    train = SyntheticDataset(H, W * 2, num_frames=400, seed=0, world=world, augment=True)
    held = SyntheticDataset(H, W * 2, num_frames=40, seed=1000, world=world, load_depth_gt=True)
    # With velocity: the recipe of config/train/synthetic_metric.yaml (10 m initial depth, translation x 0.1,
    # warm-up). Without: plain monocular training as config/train/synthetic.yaml (initial depth 1, x 0.01); the
    # metric recipe without its velocity term has nothing to hold the scale and measured 0.97 median-scaled.
    metric = velocity_weight > 0
    depth = build_depth_net("monodepth2", num_layers=18, width=0.5)
    set_initial_depth(depth, 10.0 if metric else 1.0, 0.1, 100.0)
    pose = build_pose_net("monodepth2_pose", num_layers=18, width=0.5, translation_scale=0.1 if metric else 0.01)
    opt = torch.optim.Adam([*depth.parameters(), *pose.parameters()], lr=2e-4)
    extras = ExtraLossConfig(velocity_weight=velocity_weight, velocity_warmup_steps=150)
    loader = DataLoader(train, batch_size=4, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0))
    step = 0
    while step < steps:
        for batch in loader:
            loss = total_loss(depth, pose, batch, "color_aug", temporal_offsets=[-1, 1], use_stereo=False,
                                 min_depth=0.1, max_depth=100.0, extras=extras.at_step(step))["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    depth.eval()
    gts, preds = [], []
    with torch.no_grad():
        for b in DataLoader(held, batch_size=8):
            preds += list((1.0 / sigmoid_to_disp(depth(b["color"][0])[("disp", 0)], 0.1, 100.0))[:, 0].numpy())
            gts += list(b["depth_gt"][:, 0].numpy())
    med = evaluate_depth(gts, preds, median_scaling=True, crop=None)
    raw = evaluate_depth(gts, preds, median_scaling=False, crop=None)
    return med.metrics, raw.metrics


@pytest.mark.slow
@pytest.mark.timeout(3600)  # two CPU trainings; on a shared 2-core machine they need more than the default 600 s
def test_velocity_supervision_makes_unscaled_depth_nearly_as_good_as_median_scaled():
    """The issue's claim: with velocity supervision the held-out abs_rel WITHOUT median scaling is within 1.5x
    of the median-scaled figure; without it the unscaled depth is far off (the scale is arbitrary)."""
    med_v, raw_v = _train_and_eval(velocity_weight=0.1, steps=450)
    med_0, raw_0 = _train_and_eval(velocity_weight=0.0, steps=450)
    print(f"velocity: median-scaled {med_v['abs_rel']:.3f} unscaled {raw_v['abs_rel']:.3f}; "
          f"none: median-scaled {med_0['abs_rel']:.3f} unscaled {raw_0['abs_rel']:.3f}")
    assert raw_v["abs_rel"] <= 1.5 * med_v["abs_rel"]
    # Without velocity the unscaled depth is far worse than with it. Not asserted: that the plain monocular run
    # itself learns. From scratch at this size it is fragile (README, "Not understood"): 0.341 median-scaled
    # in one run, collapsed to 0.832 in another (2026-11-30, velocity run 0.268 / 0.278 unscaled), and this
    # test is about the scale, not about that.
    assert raw_0["abs_rel"] > 1.5 * raw_v["abs_rel"]


# ------------------------------------------------------------------------------ the LightningModule switches
def test_module_switches_pick_the_scale_policy_and_add_the_extra_terms(tmp_path):
    from monodepth_training.bundle_io import load_bundle
    from monodepth_training.module import MonoDepthModule

    from monodepth_ros.bundle import read_meta

    nets = {"depth_kwargs": SLIM, "pose_kwargs": SLIM, "height": H, "width": W}
    assert MonoDepthModule(**nets).scale_policy == "relative"
    assert MonoDepthModule(**nets, use_stereo=True).scale_policy == "fixed"
    torch.manual_seed(0)
    model = MonoDepthModule(**nets, velocity_weight=0.1, feature_metric_weight=1e-3, featurenet_mode="joint",
                            featurenet_kwargs=SLIM)
    assert model.scale_policy == "metric"
    losses = model._loss(_batch(2), "color_aug")
    assert {"velocity", "feature_metric", "featurenet"} <= set(losses)
    losses["loss"].backward()
    assert model.featurenet.encoder.encoder.conv1.weight.grad.abs().sum() > 0
    path = tmp_path / "metric.safetensors"
    model.export_bundle(path)
    meta = read_meta(path)
    assert meta.scale_policy == "metric" and meta.training["extras"]["velocity_weight"] == 0.1
    depth_net, _, _ = load_bundle(path)  # the FeatureNet is a training aid: not in the bundle
    assert not any(k.startswith("featurenet") for k in depth_net.state_dict())


def test_synthetic_metric_config_parses_with_the_velocity_recipe():
    """The shipped metric config goes through monodepth-train's own parser (a typo in a key fails here)."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[2]
    cli = Path(sys.executable).with_name("monodepth-train")
    config = repo / "config/train/synthetic_metric.yaml"
    out = subprocess.run([str(cli), "fit", "--config", str(config), "--print_config"], capture_output=True, text=True,
                         timeout=300, cwd=repo)
    assert out.returncode == 0, out.stderr[-2000:]
    model = yaml.safe_load(out.stdout)["model"]
    assert model["velocity_weight"] == 0.1 and model["velocity_warmup_steps"] == 150
    assert model["init_depth"] == 10.0 and model["pose_kwargs"]["translation_scale"] == 0.1


def test_feature_metric_warmup_keeps_the_term_from_depth_and_pose_while_the_featurenet_already_learns():
    extras = ExtraLossConfig(feature_metric_weight=1e-3, featurenet_mode="joint", feature_metric_warmup_steps=5)
    assert not extras.at_step(4).feature_metric_active and extras.at_step(5).feature_metric_active
    assert extras.at_step(0).feature_metric_weight == 1e-3  # the weight itself is kept
    with pytest.raises(ValueError, match="feature_metric_warmup_steps"):
        ExtraLossConfig(feature_metric_warmup_steps=-1)
    torch.manual_seed(0)
    depth, pose = build_depth_net("monodepth2", **SLIM), build_pose_net("monodepth2_pose", **SLIM)
    featurenet = build_featurenet("joint", kwargs=SLIM)
    batch = _batch(2)
    kw = dict(temporal_offsets=[-1, 1], use_stereo=False, min_depth=0.1, max_depth=100.0, featurenet=featurenet)
    early = total_loss(depth, pose, batch, "color_aug", extras=extras.at_step(0), **kw)
    assert "feature_metric" not in early and "featurenet" in early
    late = total_loss(depth, pose, batch, "color_aug", extras=extras.at_step(5), **kw)
    assert "feature_metric" in late
    torch.testing.assert_close(late["loss"] - early["loss"], 1e-3 * late["feature_metric"], rtol=1e-4, atol=1e-6)
    early["loss"].backward()
    assert featurenet.encoder.encoder.conv1.weight.grad.abs().sum() > 0
