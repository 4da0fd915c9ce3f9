"""FeatDepth's feature-metric loss and FeatureNet regularisers, the velocity loss and the fixed stereo pose:
each pinned against geometry we can state exactly (synthetic frames with exact depth and poses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monodepth_training.geometry import warp
from monodepth_training.losses import (
    convergent_loss,
    discriminative_loss,
    feature_metric_error,
    feature_metric_loss,
    featurenet_loss,
    photometric_error,
    scale_intrinsics,
    velocity_loss,
)
from monodepth_training.networks.featurenet import FeatureNet

from monodepth_ros.geometry import invert_pose
from monodepth_ros.geometry import scale_intrinsics as scale_intrinsics_np
from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

H, W = 64, 128


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(SynthConfig(width=W, height=H, seed=3))


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255.0


def _depth_t(depth_m: np.ndarray) -> torch.Tensor:
    d = np.where(np.isfinite(depth_m), depth_m, 200.0).astype(np.float32)  # sky: far, warps like infinity
    return torch.from_numpy(d)[None, None]


# --------------------------------------------------------------------------------------------- intrinsics
@pytest.mark.parametrize(("sx", "sy"), [(0.5, 0.5), (0.25, 0.25), (0.3, 0.7)])
def test_scale_intrinsics_matches_the_numpy_core(sx, sy):
    K = np.array([[300.0, 0.2, 151.3], [0.0, 290.0, 47.9], [0.0, 0.0, 1.0]])
    got = scale_intrinsics(torch.tensor(K, dtype=torch.float64)[None].repeat(2, 1, 1), sx, sy)
    np.testing.assert_allclose(got[1].numpy(), scale_intrinsics_np(K, sx, sy), atol=1e-12)


# ---------------------------------------------------------------------------------------- regularisers
def test_discriminative_loss_rewards_larger_feature_gradients():
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(2, 4, 16, 32)
    flat = torch.zeros_like(ramp)
    assert discriminative_loss(flat) == 0
    assert discriminative_loss(3 * ramp) < discriminative_loss(ramp) < 0


def test_discriminative_loss_counts_feature_gradients_less_where_the_image_has_an_edge():
    ramp = torch.linspace(0, 4, 32).view(1, 1, 1, 32).expand(1, 8, 16, 32).contiguous()
    flat_img = torch.full((1, 3, 16, 32), 0.5)
    edge_img = flat_img.clone()
    edge_img[..., 16:] = 1.0
    edge_img[..., :16] = 0.0
    edge_img[..., 8:24] = torch.linspace(0, 1, 16)  # image gradient across the middle
    # exp(-|dI|) < 1 where the image changes, so the same feature gradient is rewarded less there.
    assert discriminative_loss(ramp, edge_img) > discriminative_loss(ramp, flat_img)
    assert torch.isclose(discriminative_loss(ramp, flat_img), discriminative_loss(ramp))


def test_convergent_loss_is_zero_for_linear_features_and_positive_for_curved_ones():
    x = torch.linspace(-1, 1, 32)
    linear = x.view(1, 1, 1, 32).expand(1, 2, 8, 32)
    curved = (x**2).view(1, 1, 1, 32).expand(1, 2, 8, 32)
    assert convergent_loss(linear) < 1e-6
    assert convergent_loss(curved) > 1e-4
    assert convergent_loss(curved, torch.rand(1, 3, 16, 64)) > 0  # image resized to the feature size


def test_regularisers_reject_non_image_tensors():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        discriminative_loss(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="batch"):
        convergent_loss(torch.zeros(2, 3, 8, 8), torch.zeros(1, 3, 8, 8))


# ------------------------------------------------------------------------------------- feature metric
def test_feature_metric_error_is_smallest_at_the_true_pose_on_a_rendered_pair(world):
    """Features = the image at half resolution: warping frame 6 into frame 5 with the exact depth and pose
    matches better than with the pose 0.5 m off sideways or vertically, or no warp at all; the half-resolution
    warp only lines up if K is rescaled correctly."""
    f5, f6 = world.render(5), world.render(6)
    T = invert_pose(f6.T_world_from_cam) @ f5.T_world_from_cam  # T_src_from_tgt, src = frame 6
    T_true = torch.tensor(T, dtype=torch.float32)[None]
    T_off_x, T_off_y = T_true.clone(), T_true.clone()
    T_off_x[0, 0, 3] += 0.5
    T_off_y[0, 1, 3] += 0.5
    K = torch.tensor(f5.K, dtype=torch.float32)[None]
    half = torch.nn.functional.avg_pool2d
    ft, fs = half(_t(f5.rgb), 2), half(_t(f6.rgb), 2)
    depth = _depth_t(f5.depth_m)
    err_true = feature_metric_error(ft, fs, depth, K, T_true).mean()
    err_off_x = feature_metric_error(ft, fs, depth, K, T_off_x).mean()
    err_off_y = feature_metric_error(ft, fs, depth, K, T_off_y).mean()
    err_identity = (ft - fs).abs().mean()
    # Measured at seed 3: 0.033 true vs 0.053 (x), 0.080 (y), 0.051 unwarped; the rest is disocclusion/aliasing.
    assert err_true < 0.75 * err_off_x
    assert err_true < 0.5 * err_off_y
    assert err_true < 0.75 * err_identity


def test_feature_metric_loss_takes_the_per_pixel_minimum_over_sources(world):
    f5, f6 = world.render(5), world.render(6)
    T = torch.tensor(invert_pose(f6.T_world_from_cam) @ f5.T_world_from_cam, dtype=torch.float32)[None]
    K = torch.tensor(f5.K, dtype=torch.float32)[None]
    ft, fs = _t(f5.rgb), _t(f6.rgb)
    garbage = torch.rand_like(fs)
    depth = _depth_t(f5.depth_m)
    good = feature_metric_loss(ft, fs, depth, K, T)
    both = feature_metric_loss(ft, torch.stack([garbage, fs], 1), depth, K, torch.stack([T, T], 1))
    only_garbage = feature_metric_loss(ft, garbage, depth, K, T)
    assert both <= good + 1e-6
    assert both < 0.5 * only_garbage
    masked = feature_metric_loss(ft, fs, depth, K, T, mask=torch.zeros(1, 1, H, W, dtype=torch.bool))
    assert masked == 0
    with pytest.raises(ValueError, match="T_src_from_tgt"):
        feature_metric_loss(ft, torch.stack([fs, fs], 1), depth, K, T)


def test_feature_metric_loss_sends_gradients_to_depth_and_pose():
    feats = torch.rand(2, 8, 16, 32)
    depth = torch.full((2, 1, 64, 128), 5.0, requires_grad=True)
    t = torch.zeros(2, 3, requires_grad=True)
    T = torch.eye(4).repeat(2, 1, 1)
    T = T.index_put((torch.arange(2)[:, None], torch.arange(3)[None], torch.full((1, 3), 3)), t)
    K = torch.tensor([[70.0, 0, 64], [0, 120, 32], [0, 0, 1]]).repeat(2, 1, 1)
    loss = feature_metric_loss(feats, torch.roll(feats, 1, -1), depth, K, T)
    loss.backward()
    assert depth.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------- FeatureNet
def test_featurenet_outputs_features_and_reconstructions_and_trains_end_to_end():
    torch.manual_seed(0)
    net = FeatureNet(num_layers=18, feature_level=1)
    x = torch.rand(2, 3, 64, 96)
    out = net(x)
    assert [tuple(f.shape[-2:]) for f in out["features"]] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    for s in (0, 1, 2, 3):
        assert out[("recon", s)].shape == (2, 3, 64 // 2**s, 96 // 2**s)
    assert net.feature_map(x).shape == (2, 64, 16, 24) and net.feature_stride == 4
    losses = featurenet_loss(out, x)
    assert losses["discriminative"] < 0 < losses["convergent"]
    losses["loss"].backward()
    assert net.encoder.encoder.conv1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 3, 60, 96))


# ------------------------------------------------------------------------------------------- velocity
def test_velocity_loss_is_the_mean_gap_between_translation_norm_and_distance_driven():
    t = torch.tensor([[0.0, 0.0, 1.0], [3.0, 4.0, 0.0], [1.0, 0.0, 0.0]], requires_grad=True)
    speed = torch.tensor([10.0, 10.0, float("nan")])  # third sample has no odometry: ignored
    dt = torch.tensor([0.1, -0.1, 0.1])  # a source before the target: negative dt, same distance
    loss = velocity_loss(t, speed, dt)
    assert torch.isclose(loss, torch.tensor((0.0 + 4.0) / 2))
    loss.backward()
    assert t.grad[2].abs().sum() == 0 and t.grad[1].abs().sum() > 0
    no_speed = velocity_loss(t, torch.full((3,), float("nan")), dt)
    assert no_speed == 0 and no_speed.requires_grad


# --------------------------------------------------------------------------------------------- stereo
def test_the_datasets_stereo_pose_warps_the_right_view_onto_the_left_with_exact_depth(world):
    from monodepth_training.datasets.synthetic import SyntheticDataset

    ds = SyntheticDataset(height=H, width=W, num_frames=3, seed=3, use_stereo=True, augment=False)
    T_lr = ds[0]["T_stereo"][None]  # target left, source right: the pose the loss warps with
    left, right = world.render(7, camera="left"), world.render(7, camera="right")
    K = torch.tensor(left.K, dtype=torch.float32)[None]
    depth = _depth_t(left.depth_m)
    tgt, src = _t(left.rgb), _t(right.rgb)
    good = photometric_error(warp(src, depth, K, T_lr), tgt)
    T_rl = T_lr.clone()
    T_rl[:, 0, 3] *= -1  # the other side's pose: wrong for this pair
    bad = photometric_error(warp(src, depth, K, T_rl), tgt)
    inner = (slice(None), slice(None), slice(4, -4), slice(16, -16))  # away from the disoccluded border
    assert good[inner].mean() < 0.5 * bad[inner].mean()
    assert good[inner].mean() < 0.5 * photometric_error(src, tgt)[inner].mean()


# ------------------------------------------------------------------------- the paper's textureless claim
WALL_Z_M, SHIFT_M = 10.0, 1.0  # a fronto-parallel wall 10 m away; the source camera 1 m to the right


def _wall_image(edges_m: np.ndarray, colours: np.ndarray, cam_x_m: float, K: np.ndarray, w: int = W,
                h: int = H, supersample: int = 8) -> torch.Tensor:
    """(1, 3, h, w) view of a wall at WALL_Z_M made of flat-coloured vertical bands (band i spans wall x in
    [edges_m[i-1], edges_m[i])), seen by a camera at x = cam_x_m; anti-aliased so edges sit at exact
    sub-pixel positions."""
    u = (np.arange(w * supersample) + 0.5) / supersample - 0.5
    x_m = (u - K[0, 2]) * WALL_Z_M / K[0, 0] + cam_x_m
    row = colours[np.searchsorted(edges_m, x_m)].reshape(w, supersample, 3).mean(1)
    img = np.broadcast_to(row[None], (h, w, 3))
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()[None]


def at_values(loss: np.ndarray, candidates_m: np.ndarray) -> list[float]:
    """Loss values at the candidates closest to 0.8x and 1.25x the true depth."""
    return [float(loss[np.argmin(np.abs(candidates_m - z))]) for z in (0.8 * WALL_Z_M, 1.25 * WALL_Z_M)]


def test_feature_metric_loss_has_a_minimum_at_the_true_depth_where_the_photometric_loss_is_flat():
    """FeatDepth's claim on a textureless wall: for pixels inside flat-coloured bands (farther from every edge
    than the largest candidate shift), the photometric loss does not change with the candidate depth at all,
    while the feature-metric loss of a FeatureNet (ResNet level 1, ~43 px receptive field that reaches the
    band edges), trained briefly with its reconstruction + discriminative + convergent objective, has a clear
    minimum at the true depth."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    K = SynthConfig(width=W, height=H).K
    net = FeatureNet(num_layers=18, feature_level=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(10):  # a tiny run on random band walls; the paper's 1e-3 weights are for 40 epochs
        batch = []
        for _ in range(3):
            edges = np.sort(rng.uniform(-8, 8, rng.integers(2, 5)))
            batch.append(_wall_image(edges, rng.uniform(0.1, 0.9, (edges.size + 1, 3)), rng.uniform(-3, 3), K))
        x = torch.cat(batch)
        losses = featurenet_loss(net(x), x, dis_weight=1e-2, cvt_weight=1e-2)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    net.eval()

    edges = np.array([-3.0, 1.5, 5.0])
    colours = np.array([[0.3, 0.5, 0.6], [0.7, 0.6, 0.4], [0.35, 0.4, 0.45], [0.6, 0.3, 0.3]])
    tgt, src = _wall_image(edges, colours, 0.0, K), _wall_image(edges, colours, SHIFT_M, K)
    Kt = torch.tensor(K, dtype=torch.float32)[None]
    T = torch.eye(4)[None]
    T[0, 0, 3] = -SHIFT_M  # the source camera sits SHIFT_M to the right: target points move by -SHIFT_M
    candidates_m = np.linspace(6.0, 16.0, 41)
    shift_error_px = K[0, 0] * SHIFT_M * np.abs(1 / candidates_m - 1 / WALL_Z_M)
    # Textureless pixels: farther from every edge than any candidate moves them (+2 px for SSIM's 3x3 window),
    # and farther than half the receptive field from the image border (zero padding makes border pixels'
    # features depend on their position, which would bias the comparison).
    edge_u = K[0, 2] + edges * K[0, 0] / WALL_Z_M
    u = np.arange(W)
    dist_px = np.abs(u[:, None] - edge_u[None]).min(1)
    flat_cols = (dist_px > shift_error_px.max() + 2) & (u >= 24) & (u < W - 24)
    stride = net.feature_stride
    flat_feat_cols = flat_cols.reshape(-1, stride).all(1)
    assert flat_cols.sum() >= 24 and flat_feat_cols.sum() >= 4

    photo_flat, photo_all, feat_flat = [], [], []
    with torch.no_grad():
        ft, fs = net.feature_map(tgt), net.feature_map(src)
        for z in candidates_m:
            depth = torch.full((1, 1, H, W), float(z))
            err = photometric_error(warp(src, depth, Kt, T), tgt)[0, 0]
            photo_flat.append(float(err[:, torch.from_numpy(flat_cols)].mean()))
            photo_all.append(float(err.mean()))
            ferr = feature_metric_error(ft, fs, depth, Kt, T)[0, 0]
            feat_flat.append(float(ferr[:, torch.from_numpy(flat_feat_cols)].mean()))
    photo_flat, photo_all, feat_flat = map(np.array, (photo_flat, photo_all, feat_flat))

    print(f"photometric flat-region range {np.ptp(photo_flat):.2e} vs whole image {np.ptp(photo_all):.2e}; "
          f"feature-metric argmin {candidates_m[feat_flat.argmin()]:.2f} m, "
          f"max/min {feat_flat.max() / feat_flat.min():.2f}, "
          f"at 0.8x / 1.25x: {[round(float(v / feat_flat.min()), 2) for v in at_values(feat_flat, candidates_m)]}")
    # The whole image does carry a depth signal (the band edges), so the warp itself is right ...
    assert abs(candidates_m[photo_all.argmin()] - WALL_Z_M) <= 0.5
    # ... but inside the bands the photometric loss is flat: <1 % of the whole-image variation.
    assert np.ptp(photo_flat) < 0.01 * np.ptp(photo_all)
    # The feature-metric loss on the same pixels: argmin within 10 % of the true depth, and a clear basin.
    z_best = candidates_m[feat_flat.argmin()]
    assert abs(z_best - WALL_Z_M) <= 0.1 * WALL_Z_M
    assert min(at_values(feat_flat, candidates_m)) > 1.2 * feat_flat.min()
    assert np.ptp(feat_flat) > 0.5 * feat_flat.min()


def test_supervised_depth_loss_is_zero_at_the_gt_and_the_mean_log_error_elsewhere():
    from monodepth_training.losses import supervised_depth_loss

    gt = torch.full((2, 1, 8, 12), 10.0)
    gt[0, 0, :2] = 0.0  # no GT (sky / LiDAR hole)
    gt[1, 0, :, :3] = float("inf")
    assert float(supervised_depth_loss(gt.clamp_max(50.0).clone(), gt)) == 0.0
    pred = torch.full((2, 1, 8, 12), 20.0)
    assert float(supervised_depth_loss(pred, gt)) == pytest.approx(np.log(2.0), rel=1e-6)
    # Beyond max_depth counts as no GT; a prediction at another size is resized to the GT's.
    gt_far = gt.clone()
    gt_far[0] = 500.0
    loss = supervised_depth_loss(torch.full((2, 1, 4, 6), 20.0), gt_far, max_depth=100.0)
    assert float(loss) == pytest.approx(np.log(2.0), rel=1e-6)


def test_supervised_depth_loss_without_any_gt_is_zero_but_keeps_the_graph():
    from monodepth_training.losses import supervised_depth_loss

    pred = torch.full((1, 1, 4, 4), 5.0, requires_grad=True)
    loss = supervised_depth_loss(pred, torch.zeros(1, 1, 4, 4))
    loss.backward()
    assert float(loss) == 0.0 and float(pred.grad.abs().sum()) == 0.0


def test_depth_supervision_enters_the_step_loss_only_where_a_sample_has_gt():
    from monodepth_training.losses import ExtraLossConfig, resolve_scale_policy, total_loss
    from monodepth_training.networks.registry import build_depth_net, build_pose_net

    torch.manual_seed(0)
    depth = build_depth_net("monodepth2", num_layers=18, width=0.125)
    pose = build_pose_net("monodepth2_pose", num_layers=18, width=0.125)
    B, H, W = 2, 64, 96
    imgs = {k: torch.rand(B, 3, H, W) for k in (0, -1, 1)}
    K = torch.tensor([[60.0, 0, 48], [0, 60.0, 32], [0, 0, 1]]).expand(B, 3, 3)
    batch = {"color": imgs, "color_aug": imgs, "K": K, "depth_gt": torch.zeros(B, 1, H, W)}
    kw = dict(temporal_offsets=[-1, 1], use_stereo=False, min_depth=0.1, max_depth=100.0)
    cfg = ExtraLossConfig(depth_supervision_weight=0.5)
    without_gt = total_loss(depth, pose, batch, "color_aug", extras=cfg, **kw)
    assert float(without_gt["depth_supervised"]) == 0.0
    batch["depth_gt"][1] = 3.0
    with_gt = total_loss(depth, pose, batch, "color_aug", extras=cfg, **kw)
    assert float(with_gt["depth_supervised"]) > 0.0
    expected = without_gt["loss"] + 0.5 * with_gt["depth_supervised"]
    assert float(with_gt["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert resolve_scale_policy("auto", 0.0, False, depth_supervision_weight=0.5) == ("metric", 1.0)
