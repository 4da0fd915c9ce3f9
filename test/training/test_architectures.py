"""The survey's architectures (PackNet, self-attention + DDV, DIFFNet, SfMLearner pose + explainability):
output contract, gradients, ONNX export parity and TensorRT-safe operators, CPU memory, and a few real training
steps on the synthetic world.

Fast tests use reduced widths (``SMALL``); the papers' configurations are checked for shapes and parameter counts
at a small resolution, and exported / run at 640x192 in the ``slow`` tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import monodepth_training.networks.ddv as ddv
import monodepth_training.networks.diffnet as diffnet
import monodepth_training.networks.packnet as packnet
import monodepth_training.networks.sfmlearner as sfm
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from monodepth_training.export import FORBIDDEN_OPS, TRT_SAFE_OPS
from monodepth_training.networks import build_depth_net, build_pose_net, predict_T_src_from_tgt
from monodepth_training.networks.export_wrapper import DisparityHead
from torch import nn

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # test/training/conftest.py

NETS = ("packnet", "ddv", "diffnet", "sfmlearner")
# Reduced widths that keep each topology (same blocks, fewer channels / bins) so CPU tests stay fast.
SMALL = {"packnet": {"version": "slim"}, "ddv": {"num_layers": 18, "num_bins": 16},
         "diffnet": {"width": 6, "num_modules": (1, 1, 1), "num_blocks": 1}, "sfmlearner": {}}
# Published parameter counts (millions): PackNet Table 2 (PackNet01 128M); DIFFNet Table 1 (10.87M).
PAPER_PARAMS_M = {"packnet": 128.0, "diffnet": 10.87}
# TorchScript-export extras: shape bookkeeping on constant shapes, all in TensorRT's ONNX operator matrix.
SHAPE_OPS = {"Shape", "ConstantOfShape", "Gather"}


def _seeded(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_depth_net(name, **kwargs)


def _calibrate_batchnorm(net: nn.Module, height: int, width: int) -> nn.Module:
    """Give BatchNorm realistic running statistics (an untrained net's default stats saturate the sigmoid, which
    would make an export parity check meaningless), then switch to eval mode. Zero-initialised scales (HRNet's
    residual and fusion ends) get random ones, as training gives them: zero scales fold into identical all-zero
    conv weights, which the exporter shares through Identity nodes instead of one initializer per Conv."""
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
            if not m.weight.detach().any():
                with torch.no_grad():
                    m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
    net.train()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(2):
            net(torch.rand(2, 3, height, width, generator=gen))
    return net.eval()


def _first_conv(net: nn.Module) -> nn.Module:
    return next(m for m in net.modules() if isinstance(m, nn.Conv2d))


# ------------------------------------------------------------------------------------------- output contract
@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("hw", [(64, 96), (96, 160)])
def test_depth_net_returns_four_sigmoid_scales(name, hw):
    H, W = hw
    net = _seeded(name, **SMALL[name]).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, H, W))
    assert set(out) == {("disp", s) for s in range(4)}
    for s in range(4):
        d = out[("disp", s)]
        assert d.shape == (2, 1, H // 2**s, W // 2**s)
        assert torch.isfinite(d).all() and d.min() >= 0 and d.max() <= 1


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_paper_configuration_matches_published_parameter_count(name):
    params_m = sum(p.numel() for p in build_depth_net(name).parameters()) / 1e6
    assert abs(params_m - PAPER_PARAMS_M[name]) / PAPER_PARAMS_M[name] < 0.06, params_m


def test_ddv_paper_encoder_is_dilated_resnet101_at_stride_8():
    net = build_depth_net("ddv")
    blocks = [len(getattr(net.encoder, f"layer{i}")) for i in range(1, 5)]
    assert blocks == [3, 4, 23, 3]
    e = net.encoder
    with torch.no_grad():
        f = e.layer4(e.layer3(e.layer2(e.layer1(e.maxpool(e.relu(e.bn1(e.conv1(torch.rand(1, 3, 64, 96)))))))))
    assert f.shape == (1, 2048, 8, 12)


@pytest.mark.parametrize("name", NETS)
def test_depth_net_rejects_size_not_multiple_of_32(name):
    with pytest.raises(ValueError, match="multiple"):
        _seeded(name, **SMALL[name])(torch.rand(1, 3, 48, 96))


# ------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", NETS)
def test_gradient_reaches_first_layer(name):
    net = _seeded(name, **SMALL[name]).train()
    out = net(torch.rand(1, 3, 64, 64))
    sum(v.mean() for v in out.values()).backward()
    g = _first_conv(net).weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_sfmlearner_gradient_reaches_first_layer_through_pose_and_masks():
    net = build_pose_net("sfmlearner_pose")
    a, b = torch.rand(2, 2, 3, 64, 96).unbind(0)
    axisangle, translation, masks = net.forward_with_masks(a, b)
    loss = axisangle.abs().sum() + translation.abs().sum() + sfm.explainability_regularization(masks)
    loss.backward()
    assert _first_conv(net).weight.grad.abs().sum() > 0
    assert all(m[0].weight.grad.abs().sum() > 0 for m in net.upconvs)  # the mask decoder learns too


def test_self_attention_gamma_receives_gradient():
    attn = ddv.SelfAttention(16)
    x = torch.rand(1, 16, 4, 6)
    attn(x).pow(2).sum().backward()
    assert attn.gamma.grad is not None and attn.gamma.grad.abs() > 0


# ------------------------------------------------------------------------------------------- ONNX export
def _export_torchscript(head: nn.Module, x: torch.Tensor, path) -> onnx.ModelProto:
    torch.onnx.export(head, (x,), str(path), input_names=["rgb"], output_names=["disp"], opset_version=17,
                      dynamo=False, do_constant_folding=True)
    return onnx.load(str(path))


def _assert_tensorrt_safe(model: onnx.ModelProto) -> set[str]:
    ops = {n.op_type for n in model.graph.node}
    assert not ops & set(FORBIDDEN_OPS)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert ops <= TRT_SAFE_OPS | SHAPE_OPS, ops - TRT_SAFE_OPS - SHAPE_OPS
    inits = {i.name for i in model.graph.initializer}
    for n in model.graph.node:  # TensorRT: Conv weights must be initializers; Pad never 'wrap'
        if n.op_type == "Conv":
            assert n.input[1] in inits
        if n.op_type == "Pad":
            assert all(a.s != b"wrap" for a in n.attribute if a.name == "mode")
    return ops


@pytest.mark.parametrize("name", NETS)
def test_onnx_export_matches_onnxruntime_and_uses_tensorrt_ops(name, tmp_path):
    H, W = 64, 96
    net = _calibrate_batchnorm(_seeded(name, **SMALL[name]), H, W)
    head = DisparityHead(net, 0.1, 100.0).eval()
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(2))
    model = _export_torchscript(head, x, tmp_path / "m.onnx")
    assert model.opset_import[0].version == 17
    ops = _assert_tensorrt_safe(model)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"rgb": x.numpy()})[0]
    with torch.no_grad():
        ref = head(x).numpy()
    assert got.shape == (1, 1, H, W)
    assert np.abs(got - ref).max() < 1e-4
    assert ref.std() > 1e-4  # a constant (saturated) output would make the parity check vacuous
    if name == "packnet":
        # 3D convolutions are 5D Conv nodes, unpacking is DepthToSpace, GroupNorm is InstanceNormalization and
        # padding happens inside the convolutions: no Pad node at all (TensorRT 7's Pad failure mode).
        conv_ranks = {len(i.dims) for i in model.graph.initializer if i.name in
                      {n.input[1] for n in model.graph.node if n.op_type == "Conv"}}
        assert 5 in conv_ranks
        assert {"DepthToSpace", "InstanceNormalization"} <= ops and "Pad" not in ops


@pytest.mark.slow
@pytest.mark.parametrize("name", NETS)
def test_paper_configuration_exports_through_monodepth_export(name, tmp_path):
    """The product path (torch.export-based, opset 18, ``check_graph``) on the papers' nets at 640x192."""
    from monodepth_training.export import export_module_onnx, torch_vs_onnx_max_diff

    from monodepth_ros.bundle import BundleMeta

    H, W = 192, 640
    net = _calibrate_batchnorm(_seeded(name), H, W)
    head = DisparityHead(net, 0.1, 100.0).eval()
    path, _ = export_module_onnx(head, BundleMeta(depth_net=name, height=H, width=W), tmp_path / "m.onnx", "0" * 64)
    x = np.random.default_rng(0).random((1, 3, H, W), dtype=np.float32)
    assert torch_vs_onnx_max_diff(head, path, [x]) < 1e-4


# ------------------------------------------------------------------------------------------- memory
_RSS_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    import monodepth_training.networks.ddv, monodepth_training.networks.diffnet, monodepth_training.networks.packnet
    import monodepth_training.networks.sfmlearner
    from monodepth_training.networks import build_depth_net

    def status_kb(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    torch.set_num_threads(1)
    name, H, W = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    net = build_depth_net(name).eval()
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        net(torch.rand(1, 3, 64, 64))  # one-off library set-up (thread pool, oneDNN) stays out of the number
    try:  # reset this process's peak-RSS mark (Linux >= 4.0) so construction peaks do not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    rss_before_kb = status_kb("VmRSS")
    with torch.no_grad():
        out = net(x)
    # VmHWM belongs to this process image (reset by exec), unlike ru_maxrss, which inherits the parent's peak.
    growth_kb = status_kb("VmHWM") - rss_before_kb
    print(json.dumps({"growth_mb": max(growth_kb, 0) / 1024,
                      "finite": all(bool(torch.isfinite(v).all()) for v in out.values()),
                      "shapes": {str(k[1]): list(v.shape) for k, v in out.items()}}))
""")


def _forward_rss_growth_mb(name: str, H: int, W: int) -> float:
    """Peak RSS growth (MiB) of one batch-1 no-grad forward of the paper configuration, in a fresh process so
    earlier tests' allocations cannot hide it. Weights and a tiny warm-up forward come before the baseline. Also the
    paper configuration's output contract is checked (4 finite scales of the right size)."""
    res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, name, str(H), str(W)], capture_output=True, text=True,
                         timeout=500, check=True)
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert data["finite"]
    assert data["shapes"] == {str(s): [1, 1, H >> s, W >> s] for s in range(4)}
    return data["growth_mb"]


# Ceilings (MiB of RSS growth, batch 1, no grad, after a warm-up): about twice what was measured at 64x192 /
# 640x192 (PackNet01 302 / 790, DDV R101 25 / 321, DIFFNet 10 / 103, SfMLearner 6 / 55), so a regression that
# keeps every stage's activations alive (or a quadratic blow-up in the attention) fails.
FAST_MEMORY_CEILING_MB = {"packnet": 650, "ddv": 64, "diffnet": 32, "sfmlearner": 24}
SLOW_MEMORY_CEILING_MB = {"packnet": 1600, "ddv": 700, "diffnet": 220, "sfmlearner": 120}


@pytest.mark.parametrize("name", NETS)
def test_paper_configuration_forward_has_four_scales_and_fits_memory_ceiling(name):
    growth_mb = _forward_rss_growth_mb(name, 64, 192)
    assert growth_mb < FAST_MEMORY_CEILING_MB[name], growth_mb


@pytest.mark.slow
@pytest.mark.parametrize("name", NETS)
def test_paper_configuration_forward_at_640x192_fits_memory_ceiling(name):
    growth_mb = _forward_rss_growth_mb(name, 192, 640)
    assert growth_mb < SLOW_MEMORY_CEILING_MB[name], growth_mb


# ------------------------------------------------------------------------------------------- PackNet blocks
def test_space_to_depth_is_invertible_both_ways():
    x = torch.rand(2, 5, 8, 12)
    packed = packnet.space_to_depth(x)
    assert packed.shape == (2, 20, 4, 6)
    assert torch.equal(packnet.depth_to_space(packed), x)
    assert torch.equal(packnet.space_to_depth(packnet.depth_to_space(packed)), packed)


def test_space_to_depth_rejects_odd_size():
    with pytest.raises(ValueError, match="divisible"):
        packnet.space_to_depth(torch.rand(1, 3, 7, 8))


@pytest.mark.parametrize("channels,d", [(8, 4), (16, 8)])
def test_unpack_of_pack_restores_spatial_size(channels, d):
    pack = packnet.PackingBlock(channels, kernel=3, d=d)
    unpack = packnet.UnpackingBlock(channels, channels, d=d)
    x = torch.rand(1, channels, 16, 24)
    packed = pack(x)
    assert packed.shape == (1, channels, 8, 12)
    assert unpack(packed).shape == x.shape


def test_packnet_uses_groupnorm_not_batchnorm():
    net = build_depth_net("packnet", version="slim")
    kinds = {type(m) for m in net.modules()}
    assert nn.GroupNorm in kinds and nn.BatchNorm2d not in kinds
    assert any(isinstance(m, nn.Conv3d) for m in net.modules())


# ------------------------------------------------------------------------------------------- DDV
def test_ddv_expected_disparity_lies_within_bin_range_and_softmax_sums_to_one():
    centres = ddv.bin_centres(32)
    logits = torch.randn(3, 32, 5, 7) * 50  # very peaked and very flat distributions alike
    disp, prob = ddv.expected_disparity(logits, centres)
    assert torch.allclose(prob.sum(1), torch.ones(3, 5, 7), atol=1e-6)
    assert disp.shape == (3, 1, 5, 7)
    assert (disp >= centres[0] - 1e-6).all() and (disp <= centres[-1] + 1e-6).all()


def test_ddv_one_hot_volume_gives_that_bins_centre():
    centres = ddv.bin_centres(8)
    logits = torch.full((1, 8, 1, 1), -1e4)
    logits[0, 5] = 1e4
    assert torch.allclose(ddv.expected_disparity(logits, centres)[0], centres[5].view(1, 1, 1, 1))


def test_ddv_bins_span_the_sigmoid_disparity_range_uniformly():
    c = ddv.bin_centres(128)
    assert torch.allclose(c[1:] - c[:-1], torch.full((127,), 1 / 128))
    assert 0 < c[0] < c[-1] < 1


def test_ddv_network_volume_is_a_distribution_and_output_is_its_expectation():
    net = _seeded("ddv", **SMALL["ddv"]).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        vol = ddv.ddv_volume(net, x, scale=1)
        disp = net(x)[("disp", 1)]
    assert vol.shape == (1, 16, 32, 48)
    assert torch.allclose(vol.sum(1), torch.ones(1, 32, 48), atol=1e-5)
    expected = (vol * net.decoder.centres.view(1, -1, 1, 1)).sum(1, keepdim=True)
    assert torch.allclose(disp, expected, atol=1e-6)


def test_self_attention_mixes_all_positions():
    torch.manual_seed(0)
    attn = ddv.SelfAttention(16)
    x = torch.rand(1, 16, 4, 6)
    weights = attn.attention(x)
    assert weights.shape == (1, 24, 24)
    assert torch.allclose(weights.sum(-1), torch.ones(1, 24))
    assert torch.equal(attn(x), x)  # gamma starts at 0: the block starts as the identity
    with torch.no_grad():
        attn.gamma.fill_(1.0)
        x2 = x.clone()
        x2[..., 3, 5] += 1.0  # change the far corner only
        diff = (attn(x2) - attn(x))[..., 0, 0]
    assert diff.abs().max() > 0  # ... and the opposite corner's output changes


# ------------------------------------------------------------------------------------------- DIFFNet
def test_hrnet_keeps_parallel_branches_at_strides_4_to_32():
    from monodepth_training.networks.hrnet import HRNetEncoder

    enc = HRNetEncoder().eval()
    with torch.no_grad():
        f = enc(torch.rand(1, 3, 64, 96))
    assert f["stem"].shape == (1, 64, 32, 48)
    assert [len(s) for s in f["stages"]] == [2, 3, 4]
    assert [tuple(t.shape) for t in f["stages"][-1]] == [(1, 18, 16, 24), (1, 36, 8, 12), (1, 72, 4, 6),
                                                          (1, 144, 2, 3)]


def test_untrained_diffnet_starts_at_the_initial_depth_with_unit_scale_features():
    """From scratch, each HRNet block and fusion starts as the identity (zero-initialised last BatchNorm scale):
    without it the paper's W18 stage-4 features had std ~4.5, the train-mode output of an image swung with its
    batch companions, training collapsed to disparity 0, and in eval mode the untrained net's sigmoids saturated
    (80-98% of pixels) instead of predicting ``set_initial_depth``'s depth."""
    from monodepth_training.geometry import sigmoid_to_disp
    from monodepth_training.networks.registry import set_initial_depth

    torch.manual_seed(0)
    net = build_depth_net("diffnet")  # the paper's W18
    set_initial_depth(net, 1.0, 0.1, 100.0)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        feats = net.encoder(x)
        out = net.eval()(x)
    assert max(float(f.std()) for f in feats["stages"][-1]) < 1.5
    for key, sigma in out.items():
        depth = 1.0 / sigmoid_to_disp(sigma, 0.1, 100.0)
        assert 0.7 < float(depth.min()) and float(depth.max()) < 1.4, (key, float(depth.min()), float(depth.max()))


def test_squeeze_excitation_only_rescales_channels():
    se = diffnet.SqueezeExcitation(32)
    x = torch.rand(2, 32, 5, 7) + 0.1
    y = se(x)
    ratio = y / x
    assert (ratio > 0).all() and (ratio < 1).all()
    assert torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), atol=1e-6)  # one gate per channel


# ------------------------------------------------------------------------------------------- SfMLearner
def test_explainability_regularization_is_zero_for_all_ones_and_positive_otherwise():
    ones = {("explain", s): torch.ones(2, 1, 8 >> s, 8 >> s) for s in range(4)}
    assert sfm.explainability_regularization(ones) == 0
    half = {k: v * 0.5 for k, v in ones.items()}
    assert torch.isclose(sfm.explainability_regularization(half), torch.tensor(4 * np.log(2.0), dtype=torch.float32))
    assert sfm.explainability_regularization([torch.full((1, 1, 2, 2), 0.99)]) > 0


def test_sfmlearner_outputs_pose_and_multiscale_masks():
    net = build_pose_net("sfmlearner_pose")
    a, b = torch.rand(2, 2, 3, 64, 96).unbind(0)
    axisangle, translation, masks = net.forward_with_masks(a, b)
    assert axisangle.shape == (2, 3) and translation.shape == (2, 3)
    assert {k: tuple(v.shape) for k, v in masks.items()} == {("explain", s): (2, 2, 64 >> s, 96 >> s)
                                                             for s in range(4)}
    assert all(((m > 0) & (m < 1)).all() for m in masks.values())
    aa2, t2 = net(a, b)  # plain forward = the registry's pose contract, same numbers
    assert torch.allclose(aa2, axisangle) and torch.allclose(t2, translation)


@pytest.mark.parametrize("src_is_before", [True, False])
def test_sfmlearner_returns_the_mask_on_the_target_grid(src_is_before):
    torch.manual_seed(0)
    net = build_pose_net("sfmlearner_pose").eval()
    tgt, src = torch.rand(2, 1, 3, 64, 96).unbind(0)
    with torch.no_grad():
        T, masks = sfm.predict_T_src_from_tgt_and_mask(net, tgt, src, src_is_before)
        T_ref = predict_T_src_from_tgt(net, tgt, src, src_is_before)
        order = (src, tgt) if src_is_before else (tgt, src)
        full = net.forward_with_masks(*order)[2]
    assert torch.allclose(T, T_ref)
    channel = 1 if src_is_before else 0
    for s in range(4):
        assert torch.equal(masks[s], full[("explain", s)][:, channel:channel + 1])


# ------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def synthetic_batch():
    """One real training batch (2 samples, 64x96, frames 0/-1/+1) from the synthetic world."""
    from monodepth_training.datasets.synthetic import SyntheticDataset
    from torch.utils.data import default_collate

    ds = SyntheticDataset(64, 96, num_frames=4, seed=3, frame_offsets=(0, -1, 1))
    return default_collate([ds[0], ds[1]])


@pytest.mark.parametrize("depth_net,pose_net", [("packnet", "monodepth2_pose"), ("ddv", "monodepth2_pose"),
                                                ("diffnet", "monodepth2_pose"), ("sfmlearner", "sfmlearner_pose")])
def test_network_trains_on_synthetic_world_without_nans(depth_net, pose_net, synthetic_batch):
    """Two optimiser steps of the real LightningModule's loss (Monodepth2) with each architecture."""
    from monodepth_training.module import MonoDepthModule

    torch.manual_seed(0)
    kwargs = SMALL.get(depth_net, {"num_layers": 18})
    module = MonoDepthModule(depth_net=depth_net, depth_kwargs=kwargs, pose_net=pose_net, height=64, width=96,
                             frame_offsets=[0, -1, 1], lr=1e-4)
    opt = module.configure_optimizers()["optimizer"]
    before = _first_conv(module.depth).weight.detach().clone()
    losses = []
    for _ in range(2):
        opt.zero_grad()
        loss = module._loss(synthetic_batch, "color_aug")["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all(), losses
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert not torch.equal(before, _first_conv(module.depth).weight)


def test_sfmlearner_trains_with_explainability_masks_on_synthetic_world(synthetic_batch):
    """SfMLearner's objective, as the training loss computes it: mask-weighted photometric error (SSIM + L1 here)
    + 0.2 x the mask regulariser."""
    from monodepth_training.losses import ExtraLossConfig, total_loss

    torch.manual_seed(0)
    depth_net, pose_net = build_depth_net("sfmlearner"), build_pose_net("sfmlearner_pose")
    opt = torch.optim.Adam([*depth_net.parameters(), *pose_net.parameters()], lr=2e-4)
    extras = ExtraLossConfig(explainability_weight=sfm.EXPLAIN_REG_WEIGHT)
    losses = []
    for _ in range(2):
        opt.zero_grad()
        out = total_loss(depth_net, pose_net, synthetic_batch, "color_aug", temporal_offsets=[-1, 1],
                         use_stereo=False, min_depth=0.1, max_depth=100.0, extras=extras)
        assert "explainability_reg" in out
        total = out["loss"]
        total.backward()
        opt.step()
        losses.append(total.item())
    assert np.isfinite(losses).all()
    assert all(p.grad is not None for p in pose_net.mask_preds.parameters())


# ------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("config", ["packnet_kitti", "ddv_kitti", "diffnet_kitti", "sfmlearner_kitti"])
def test_paper_config_names_registered_networks_at_a_valid_size(config):
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "train" / f"{config}.yaml").read_text())
    model, data = cfg["model"], cfg["data"]
    assert data["height"] % 32 == 0 and data["width"] % 32 == 0
    assert model["depth_net"] == config.removesuffix("_kitti")
    # Build on the meta device (no memory, no weights file needed) with the config's own arguments.
    depth_kwargs = {k: v for k, v in model["depth_kwargs"].items() if k != "pretrained_path"}
    pose_kwargs = {k: v for k, v in model["pose_kwargs"].items() if k != "pretrained_path"}
    with torch.device("meta"):
        build_depth_net(model["depth_net"], **depth_kwargs)
        build_pose_net(model["pose_net"], **pose_kwargs)


def test_explainability_regulariser_runs_in_float32_under_autocast():
    """CUDA autocast refuses binary_cross_entropy on half-precision masks (the first GPU table run died on it):
    the regulariser computes in float32 whatever the masks' dtype, with the same value."""
    from monodepth_training.networks.sfmlearner import explainability_regularization

    torch.manual_seed(0)
    masks = [torch.rand(2, 1, 8, 8) * 0.9 + 0.05, torch.rand(2, 1, 4, 4) * 0.9 + 0.05]
    ref = explainability_regularization(masks)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = explainability_regularization([m.bfloat16() for m in masks])
    assert low.dtype == torch.float32
    assert torch.allclose(low, ref, rtol=2e-2)
