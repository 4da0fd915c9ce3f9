"""Photometric losses: SSIM against scikit-image, photometric error values, per-pixel minimum, auto-masking,
smoothness, and the composed Monodepth2 loss (gradients, switches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monodepth_training import losses
from monodepth_training.geometry import warp
from monodepth_training.networks import build_depth_net, build_pose_net, predict_T_src_from_tgt
from skimage.metrics import structural_similarity

torch.set_num_threads(1)
MIN_DEPTH, MAX_DEPTH = 0.1, 100.0
DEPTH_RANGE = {"min_depth": MIN_DEPTH, "max_depth": MAX_DEPTH}


def texture(B: int, H: int, W: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Band-limited random RGB texture (B, 3, H, W) in [0, 1]: fine enough that a sub-pixel shift shows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, H, W, generator=g, dtype=dtype)
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, 1).clamp(0, 1)


def kitti_like_K(B: int, H: int, W: int) -> torch.Tensor:
    K = torch.tensor([[0.58 * W, 0, 0.5 * W - 0.5], [0, 1.92 * H, 0.5 * H - 0.5], [0, 0, 1]])
    return K.expand(B, 3, 3).clone()


def sigma_from_depth(depth: torch.Tensor) -> torch.Tensor:
    """Inverse of sigmoid_to_disp + 1/depth: what a perfect depth network would output."""
    min_disp, max_disp = 1 / MAX_DEPTH, 1 / MIN_DEPTH
    return (1 / depth - min_disp) / (max_disp - min_disp)


def translation_pose(B: int, S: int, t_xyz) -> torch.Tensor:
    T = torch.eye(4).expand(B, S, 4, 4).clone()
    T[..., :3, 3] = torch.tensor(t_xyz, dtype=torch.float32)
    return T


# ---------------------------------------------------------------- SSIM / photometric error


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_matches_skimage_uniform_3x3_window_away_from_borders(dtype):
    x = texture(1, 24, 32, seed=1, dtype=dtype)
    g = torch.Generator().manual_seed(2)
    y = (0.7 * x + 0.3 * torch.rand(x.shape, generator=g, dtype=dtype)).clamp(0, 1)
    ours = losses.ssim_index(x, y)[0].permute(1, 2, 0).numpy()
    _, ref = structural_similarity(
        x[0].permute(1, 2, 0).numpy(), y[0].permute(1, 2, 0).numpy(), win_size=3, use_sample_covariance=False,
        gaussian_weights=False, data_range=1.0, channel_axis=-1, full=True,
    )
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(ours[1:-1, 1:-1], ref[1:-1, 1:-1], atol=tol)
    assert ours[1:-1, 1:-1].std() > 0.05  # a textured comparison, not a constant map


@pytest.mark.parametrize("B", [1, 3])
def test_ssim_dissimilarity_is_zero_for_identical_images_and_bounded(B):
    x = texture(B, 16, 16)
    assert losses.ssim_dissimilarity(x, x).abs().max() < 1e-5
    d = losses.ssim_dissimilarity(x, 1 - x)
    assert d.shape == (B, 3, 16, 16) and float(d.min()) >= 0 and float(d.max()) <= 1 and float(d.mean()) > 0.3


def test_ssim_gradient_is_correct():
    x = texture(1, 6, 7, dtype=torch.float64).requires_grad_()
    y = texture(1, 6, 7, seed=3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: losses.ssim_dissimilarity(a, y), (x,))


def test_photometric_error_on_constant_images_matches_closed_form():
    a, b = 0.5, 0.6
    # float64: in float32, E[x^2] - mu^2 leaves ~1e-8 of rounding, which is visible next to C2 = 9e-4.
    pred, target = torch.full((2, 3, 8, 8), a, dtype=torch.float64), torch.full((2, 3, 8, 8), b, dtype=torch.float64)
    # Zero variance: SSIM reduces to the luminance term.
    ssim = (2 * a * b + losses.SSIM_C1) / (a * a + b * b + losses.SSIM_C1)
    expected = 0.85 * (1 - ssim) / 2 + 0.15 * abs(a - b)
    err = losses.photometric_error(pred, target)
    assert err.shape == (2, 1, 8, 8)
    torch.testing.assert_close(err, torch.full_like(err, expected))
    torch.testing.assert_close(losses.photometric_error(pred, target, alpha=0.0), torch.full_like(err, 0.1))


def test_photometric_error_averages_channels():
    target = texture(1, 8, 8)
    pred = target.clone()
    pred[:, 0] += 0.3  # one channel off by 0.3 -> L1 mean over 3 channels is 0.1
    torch.testing.assert_close(losses.photometric_error(pred, target, alpha=0.0), torch.full((1, 1, 8, 8), 0.1))


# ---------------------------------------------------------------- minimum and auto-masking


def test_min_reprojection_returns_per_pixel_minimum_and_index():
    errors = torch.tensor([[[[0.3, 0.1]], [[0.2, 0.4]]]])  # (B=1, S=2, H=1, W=2)
    loss, idx = losses.min_reprojection(errors)
    torch.testing.assert_close(loss, torch.tensor([[[[0.2, 0.1]]]]))
    assert idx.tolist() == [[[[1, 0]]]]


def test_min_reprojection_ignores_occluded_source():
    B, H, W = 1, 32, 64
    target = texture(B, H, W)
    clean, occluded = target.clone(), target.clone()
    occluded[..., 8:24, 20:40] = texture(B, 16, 20, seed=9)  # an occluder covers the patch in source 0
    sources = torch.stack([occluded, clean], 1)
    outputs = {("disp", 0): sigma_from_depth(torch.full((B, 1, H, W), 10.0))}
    args = (outputs, target, sources, translation_pose(B, 2, [0, 0, 0]), kitti_like_K(B, H, W))
    out = losses.monodepth2_loss(*args, **DEPTH_RANGE, automask=False, smoothness_weight=0.0)
    patch = (..., slice(10, 22), slice(22, 38))
    assert (out["min_source_idx"][patch] == 1).all()
    assert float(out["error_map"][patch].max()) < 1e-3
    averaged = losses.monodepth2_loss(*args, **DEPTH_RANGE, automask=False, min_reprojection=False,
                                      smoothness_weight=0.0)
    assert float(averaged["error_map"][patch].mean()) > 0.05  # averaging lets the occluder in


def test_automask_prefers_identity_on_exact_ties_and_reports_winners():
    reproj = torch.tensor([[[[0.2, 0.0, 0.5]]]])
    identity = torch.tensor([[[[0.2, 0.1, 0.3]]]])
    loss, mask = losses.automask_min(reproj, identity, tie_break=1e-5, generator=torch.Generator().manual_seed(0))
    assert mask.tolist() == [[[[False, True, False]]]]
    torch.testing.assert_close(loss, torch.tensor([[[[0.2, 0.0, 0.3]]]]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("t_guess", [[0.0, 0.0, 0.0], [0.05, 0.0, 0.2]], ids=["identity_pose", "small_pose_guess"])
def test_automask_masks_static_camera(t_guess):
    B, H, W = 2, 32, 96
    frame = texture(B, H, W)
    sources = torch.stack([frame, frame], 1)  # the camera does not move: every frame is the same
    depth = 5.0 + 10.0 * torch.rand(B, 1, H, W, generator=torch.Generator().manual_seed(4))
    out = losses.monodepth2_loss(
        {("disp", 0): sigma_from_depth(depth)}, frame, sources, translation_pose(B, 2, t_guess),
        kitti_like_K(B, H, W), **DEPTH_RANGE, generator=torch.Generator().manual_seed(1),
    )
    masked = 1 - float(out["automask_fraction"])
    assert masked >= 0.95


def test_automask_keeps_pixels_of_moving_camera():
    B, H, W = 2, 32, 96
    K = kitti_like_K(B, H, W)
    depth = torch.full((B, 1, H, W), 8.0)
    source = texture(B, H, W, seed=5)
    T = translation_pose(B, 1, [0.4, 0.0, 0.3])  # 0.4 m sideways at 8 m: a few pixels of parallax
    target = warp(source, depth, K, T[:, 0])  # the target view rendered from the source with the geometry twin
    out = losses.monodepth2_loss(
        {("disp", 0): sigma_from_depth(depth)}, target, source.unsqueeze(1), T, K, **DEPTH_RANGE,
        generator=torch.Generator().manual_seed(1),
    )
    assert float(out["automask_fraction"]) >= 0.95
    assert float(out["photometric"]) < 1e-3  # the true depth and pose explain the target


# ---------------------------------------------------------------- smoothness


def test_smoothness_is_zero_for_constant_disparity():
    img = texture(2, 16, 24)
    assert float(losses.smoothness_loss(torch.full((2, 1, 16, 24), 0.3), img)) == 0.0


def test_smoothness_is_lower_where_image_edges_match_disparity_edges():
    H, W = 16, 32
    disp = torch.full((1, 1, H, W), 0.2)
    disp[..., 16:] = 0.6  # a depth discontinuity at column 16
    img_same_edge = torch.full((1, 3, H, W), 0.1)
    img_same_edge[..., 16:] = 0.9
    img_other_edge = torch.full((1, 3, H, W), 0.1)
    img_other_edge[..., 8:] = 0.9
    aligned = float(losses.smoothness_loss(disp, img_same_edge))
    misaligned = float(losses.smoothness_loss(disp, img_other_edge))
    assert 0 < aligned < misaligned


def test_smoothness_is_invariant_to_disparity_scale():
    disp = torch.rand(1, 1, 16, 24, generator=torch.Generator().manual_seed(0)) + 0.1
    img = texture(1, 16, 24)
    torch.testing.assert_close(losses.smoothness_loss(3 * disp, img), losses.smoothness_loss(disp, img))


# ---------------------------------------------------------------- the composed loss


def test_gradients_reach_depth_and_pose_networks():
    torch.manual_seed(0)
    B, H, W = 2, 64, 96
    depth_net, pose_net = build_depth_net("monodepth2"), build_pose_net("monodepth2_pose")
    prev, tgt, nxt = texture(B, H, W, 1), texture(B, H, W, 2), texture(B, H, W, 3)
    T = torch.stack([predict_T_src_from_tgt(pose_net, tgt, prev, src_is_before=True),
                     predict_T_src_from_tgt(pose_net, tgt, nxt, src_is_before=False)], 1)
    out = losses.monodepth2_loss(depth_net(tgt), tgt, [prev, nxt], T, kitti_like_K(B, H, W), **DEPTH_RANGE)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    for name, p in [("depth encoder", depth_net.encoder.encoder.conv1.weight),
                    ("depth decoder", depth_net.decoder.convs["dispconv_0"].conv.weight),
                    ("depth decoder coarse", depth_net.decoder.convs["dispconv_3"].conv.weight),
                    ("pose encoder", pose_net.encoder.encoder.conv1.weight),
                    ("pose decoder", pose_net.decoder.pose_2.weight)]:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


@pytest.mark.parametrize("full_res", [True, False])
def test_multiscale_loss_reports_terms_and_maps(full_res):
    B, H, W = 1, 32, 64
    tgt = texture(B, H, W)
    sigmas = {("disp", s): torch.rand(B, 1, H // 2**s, W // 2**s, generator=torch.Generator().manual_seed(s))
              for s in range(4)}
    out = losses.monodepth2_loss(sigmas, tgt, [texture(B, H, W, 7)], translation_pose(B, 1, [0, 0, 0.5]),
                                 kitti_like_K(B, H, W), **DEPTH_RANGE, full_res_multiscale=full_res)
    torch.testing.assert_close(out["loss"], out["photometric"] + out["smoothness"])
    assert out["smoothness"] > 0
    assert out["error_map"].shape == (B, 1, H, W) and out["automask"].dtype == torch.bool
    assert out["warped"].shape == (B, 1, 3, H, W) and out["depth"].shape == (B, 1, H, W)


def test_full_res_multiscale_changes_coarse_scale_terms():
    B, H, W = 1, 32, 64
    tgt, src = texture(B, H, W), texture(B, H, W, 7)
    sigmas = {("disp", s): torch.rand(B, 1, H // 2**s, W // 2**s, generator=torch.Generator().manual_seed(s))
              for s in range(4)}
    args = (sigmas, tgt, [src], translation_pose(B, 1, [0, 0, 0.5]), kitti_like_K(B, H, W))
    a = losses.monodepth2_loss(*args, **DEPTH_RANGE, full_res_multiscale=True, tie_break=0.0)["photometric"]
    b = losses.monodepth2_loss(*args, **DEPTH_RANGE, full_res_multiscale=False, tie_break=0.0)["photometric"]
    assert not torch.isclose(a, b)


def test_monodepth2_loss_rejects_mismatched_shapes():
    tgt = texture(1, 16, 32)
    with pytest.raises(ValueError, match="T_src_from_tgt"):
        losses.monodepth2_loss({("disp", 0): torch.rand(1, 1, 16, 32)}, tgt, [tgt], torch.eye(4)[None],
                               kitti_like_K(1, 16, 32), **DEPTH_RANGE)


def test_loss_runs_in_float32_under_autocast():
    B, H, W = 1, 32, 64
    tgt, src = texture(B, H, W), texture(B, H, W, 7)
    sigma = torch.rand(B, 1, H, W, generator=torch.Generator().manual_seed(0))
    args = ({("disp", 0): sigma}, tgt, [src], translation_pose(B, 1, [0.1, 0, 0.5]), kitti_like_K(B, H, W))
    ref = losses.monodepth2_loss(*args, **DEPTH_RANGE, tie_break=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # What the loss receives from a network under AMP: half-precision disparities.
        half_args = ({("disp", 0): sigma.bfloat16()}, *args[1:])
        out = losses.monodepth2_loss(*half_args, **DEPTH_RANGE, tie_break=0.0)
    assert out["loss"].dtype == torch.float32
    torch.testing.assert_close(out["loss"], ref["loss"], rtol=2e-2, atol=0)


def test_ground_truth_depth_and_pose_explain_synthetic_frames():
    # Pins the pose direction against the synthetic world: T_src_from_tgt = inv(T_world_from_src) @ T_world_from_tgt.
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

    world = SyntheticWorld(SynthConfig(width=320, height=96, seed=0))
    tgt, prev, nxt = world.render(10), world.render(9), world.render(11)

    def rgb01(frame):
        return torch.from_numpy(frame.rgb).permute(2, 0, 1)[None].float() / 255

    T = torch.from_numpy(np.stack([np.linalg.inv(f.T_world_from_cam) @ tgt.T_world_from_cam for f in (prev, nxt)]))
    T = T[None].float()
    depth_m = np.clip(np.where(np.isfinite(tgt.depth_m), tgt.depth_m, MAX_DEPTH), MIN_DEPTH, MAX_DEPTH)
    outputs = {("disp", 0): sigma_from_depth(torch.from_numpy(depth_m)[None, None].float())}
    K = torch.from_numpy(tgt.K)[None].float()

    def photometric(T_src_from_tgt):
        return float(losses.monodepth2_loss(outputs, rgb01(tgt), [rgb01(prev), rgb01(nxt)], T_src_from_tgt, K,
                                            **DEPTH_RANGE, automask=False, smoothness_weight=0.0)["photometric"])

    truth, inverted = photometric(T), photometric(torch.linalg.inv(T))
    static = photometric(torch.eye(4).expand(1, 2, 4, 4))
    assert truth < 0.4 * static
    assert inverted > 2 * truth
