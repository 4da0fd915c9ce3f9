"""Networks: ResNet encoder shapes and torchvision weight loading, decoders, pose conventions, registry."""

from __future__ import annotations

import pytest
import torch
from monodepth_training.geometry import pose_from_axis_angle
from monodepth_training.networks import (
    DEPTH_NETS,
    DepthDecoder,
    PoseDecoder,
    ResnetEncoder,
    build_depth_net,
    build_pose_net,
    list_models,
    predict_T_src_from_tgt,
    register_depth_net,
)
from safetensors.torch import save_file

torch.set_num_threads(1)


def torchvision_state_dict(encoder: ResnetEncoder, drop_num_batches: bool = False) -> dict[str, torch.Tensor]:
    """An encoder's weights laid out as a torchvision ResNet checkpoint (with a 1000-class ``fc``)."""
    state = {k.removeprefix("encoder."): v.clone() for k, v in encoder.state_dict().items()}
    if drop_num_batches:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.randn(1000, int(encoder.num_ch_enc[-1]))
    state["fc.bias"] = torch.zeros(1000)
    return state


def randomise_bn(module: torch.nn.Module) -> None:
    """Give BatchNorm non-trivial statistics so weight-loading tests compare real numbers."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize(
    "num_layers, channels", [(18, [64, 64, 128, 256, 512]), (34, [64, 64, 128, 256, 512]),
                             (50, [64, 256, 512, 1024, 2048])]
)
def test_resnet_encoder_feature_shapes_and_channels(num_layers, channels):
    enc = ResnetEncoder(num_layers)
    assert list(enc.num_ch_enc) == channels
    feats = enc(torch.rand(2, 3, 64, 96))
    assert len(feats) == 5
    for i, f in enumerate(feats):
        assert f.shape == (2, channels[i], 64 // 2 ** (i + 1), 96 // 2 ** (i + 1))


def test_resnet_rejects_unsupported_depth():
    with pytest.raises(ValueError, match="num_layers"):
        ResnetEncoder(101)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_weights_reproduce_source_encoder_outputs(tmp_path, fmt):
    src = ResnetEncoder(18)
    randomise_bn(src)
    state = torchvision_state_dict(src, drop_num_batches=(fmt == "pth"))
    path = tmp_path / f"resnet18.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    loaded = ResnetEncoder(18, pretrained_path=path)
    fresh = ResnetEncoder(18)
    src.eval(), loaded.eval(), fresh.eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ref, out, other = src(x)[-1], loaded(x)[-1], fresh(x)[-1]
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(other, ref)  # the comparison is meaningful: random init differs


def test_wrong_state_dict_keys_name_missing_and_unexpected(tmp_path):
    state = torchvision_state_dict(ResnetEncoder(18))
    state["layer9.0.conv1.weight"] = state.pop("layer4.0.conv1.weight")
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys \['layer4\.0\.conv1\.weight'\].*layer9\.0\.conv1\.weight"):
        ResnetEncoder(18, pretrained_path=path)


def test_resnet34_weights_do_not_load_into_resnet18(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(torchvision_state_dict(ResnetEncoder(34)), path)
    with pytest.raises(ValueError, match="unexpected keys"):
        ResnetEncoder(18, pretrained_path=path)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained weights file not found"):
        ResnetEncoder(18, pretrained_path=tmp_path / "nope.pth")


def test_two_frame_encoder_duplicates_and_halves_first_conv(tmp_path):
    torch.manual_seed(0)  # the result must not depend on what ran before
    src = ResnetEncoder(18)
    randomise_bn(src)
    path = tmp_path / "r18.pth"
    torch.save(torchvision_state_dict(src), path)
    pose_enc = ResnetEncoder(18, pretrained_path=path, num_input_images=2)
    w = src.encoder.conv1.weight
    assert pose_enc.encoder.conv1.weight.shape == (64, 6, 7, 7)
    torch.testing.assert_close(pose_enc.encoder.conv1.weight, torch.cat([w, w], 1) / 2)
    # Two identical frames then give exactly the single-frame features.
    src.eval(), pose_enc.eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        # (w x + w x) / 2 and w x round differently in float32: ~1e-5 after 18 layers of O(1) features
        torch.testing.assert_close(pose_enc(torch.cat([x, x], 1))[-1], src(x)[-1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("hw", [(64, 192), (96, 320)])
def test_depth_decoder_outputs_four_sigmoid_scales(hw):
    H, W = hw
    net = build_depth_net("monodepth2")
    with torch.no_grad():
        out = net(torch.rand(1, 3, H, W))
    assert sorted(out) == [("disp", s) for s in range(4)]
    for s in range(4):
        d = out[("disp", s)]
        assert d.shape == (1, 1, H // 2**s, W // 2**s)
        assert float(d.min()) > 0 and float(d.max()) < 1


def test_depth_decoder_honours_scales_and_rejects_bad_ones():
    dec = DepthDecoder([64, 64, 128, 256, 512], scales=(0,))
    feats = ResnetEncoder(18)(torch.rand(1, 3, 64, 64))
    assert list(dec(feats)) == [("disp", 0)]
    with pytest.raises(ValueError, match="scales"):
        DepthDecoder([64, 64, 128, 256, 512], scales=(0, 5))


def test_pose_decoder_scales_raw_output_by_001_and_splits_axisangle_translation():
    dec = PoseDecoder([64, 64, 128, 256, 512], num_input_features=1, num_frames_to_predict_for=2)
    raw = torch.arange(12, dtype=torch.float32) - 5.0
    with torch.no_grad():
        dec.pose_2.weight.zero_()
        dec.pose_2.bias.copy_(raw)
    feats = [torch.rand(3, 512, 2, 3)]
    axisangle, translation = dec([feats])
    assert axisangle.shape == translation.shape == (3, 2, 1, 3)
    expected = 0.01 * raw.view(2, 6)
    torch.testing.assert_close(axisangle[0, :, 0], expected[:, :3])
    torch.testing.assert_close(translation[1, :, 0], expected[:, 3:])


def test_pose_net_outputs_small_motion_per_sample():
    net = build_pose_net("monodepth2_pose")
    a, b = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        axisangle, translation = net(a, b)
    assert axisangle.shape == translation.shape == (2, 3)
    # Untrained output is ~0.01 x O(1) activations: near the identity pose, as Monodepth2 intends.
    assert float(translation.abs().max()) < 0.1


def test_predict_T_src_from_tgt_inverts_when_source_is_earlier():
    torch.manual_seed(0)
    net = build_pose_net("monodepth2_pose").eval()
    frame_a, frame_b = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        # Frame a is earlier than b. Both calls feed the network (a, b); one must be the other's inverse.
        T_a_from_b = predict_T_src_from_tgt(net, frame_b, frame_a, src_is_before=True)
        T_b_from_a = predict_T_src_from_tgt(net, frame_a, frame_b, src_is_before=False)
        T_direct = pose_from_axis_angle(*net(frame_a, frame_b))
    torch.testing.assert_close(T_b_from_a, T_direct)
    torch.testing.assert_close(T_a_from_b @ T_b_from_a, torch.eye(4).unsqueeze(0), atol=1e-6, rtol=0)
    assert not torch.allclose(T_b_from_a, torch.eye(4).unsqueeze(0), atol=1e-6)


def test_registry_lists_builds_and_reports_unknowns():
    assert "monodepth2" in list_models()["depth"] and "monodepth2_pose" in list_models()["pose"]
    net = build_depth_net("monodepth2", num_layers=34, scales=(0, 1))
    assert net.registry_name == "monodepth2"
    assert net.registry_kwargs == {"num_layers": 34, "pretrained_path": None, "scales": (0, 1), "width": 1.0,
                                   "input_color": "rgb", "validity_head": False}
    assert list(net.encoder.num_ch_enc) == [64, 64, 128, 256, 512]
    with pytest.raises(ValueError, match=r"unknown depth network 'nope'; registered: \[.*'monodepth2'"):
        build_depth_net("nope")
    with pytest.raises(TypeError, match="unknown arguments \\['layers'\\]"):
        build_depth_net("monodepth2", layers=18)


def test_register_decorator_adds_a_new_architecture():
    @register_depth_net("tiny_test_net", channels=4)
    class TinyNet(torch.nn.Module):
        def __init__(self, channels: int = 2):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, channels, 1)

        def forward(self, rgb01):
            return {("disp", 0): torch.sigmoid(self.conv(rgb01)[:, :1])}

    try:
        net = build_depth_net("tiny_test_net")
        assert net.conv.out_channels == 4
        with pytest.raises(ValueError, match="already registered"):
            register_depth_net("tiny_test_net")(torch.nn.Identity)
    finally:
        DEPTH_NETS.pop("tiny_test_net", None)


def test_architecture_modules_register_on_first_lookup():
    import sys

    from monodepth_training.networks.registry import ARCHITECTURE_MODULES

    list_models()
    for name in ARCHITECTURE_MODULES:
        assert f"monodepth_training.networks.{name}" in sys.modules


def test_slim_width_scales_parameters_and_keeps_output_shapes():
    import torch
    from monodepth_training.networks import build_depth_net

    full = build_depth_net("monodepth2", num_layers=18)
    slim = build_depth_net("monodepth2", num_layers=18, width=0.5)
    n_full = sum(p.numel() for p in full.parameters())
    n_slim = sum(p.numel() for p in slim.parameters())
    assert 0.2 < n_slim / n_full < 0.3  # channels halve, so parameters drop to about a quarter
    out = slim(torch.rand(1, 3, 64, 192))
    assert out[("disp", 0)].shape == (1, 1, 64, 192) and out[("disp", 3)].shape == (1, 1, 8, 24)


def test_slim_width_refuses_imagenet_weights(tmp_path):
    import pytest
    from monodepth_training.networks.resnet_encoder import ResnetEncoder

    with pytest.raises(ValueError, match="width 1.0"):
        ResnetEncoder(18, pretrained_path=tmp_path / "resnet18.pth", width=0.5)


@pytest.mark.parametrize(("name", "kwargs"), [("monodepth2", {"width": 0.25}), ("packnet", {}), ("diffnet", {}),
                                              ("sfmlearner", {})])
def test_set_initial_depth_starts_every_sigmoid_network_at_the_requested_depth(name, kwargs):
    from monodepth_training.geometry import sigmoid_to_disp
    from monodepth_training.networks.registry import set_initial_depth

    torch.manual_seed(0)
    net = build_depth_net(name, **kwargs)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        plain = 1.0 / sigmoid_to_disp(net(x)[("disp", 0)], 0.1, 100.0)
        set_initial_depth(net, 8.0, 0.1, 100.0)
        out = net(x)
    # Monodepth2's plain init starts near 2 * min_depth; after the call every scale starts near 8 (the random
    # head weights still add some spread, so the median is checked, not every pixel).
    assert float(plain.median()) < 1.0
    for key, sigma in out.items():
        depth = 1.0 / sigmoid_to_disp(sigma, 0.1, 100.0)
        assert 4.0 < float(depth.median()) < 16.0, (name, key, float(depth.median()))


def test_set_initial_depth_refuses_networks_without_sigmoid_heads_and_depths_outside_the_range():
    from monodepth_training.networks.registry import set_initial_depth

    with pytest.raises(ValueError, match="ddv"):
        set_initial_depth(build_depth_net("ddv", num_layers=18), 5.0, 0.1, 100.0)
    with pytest.raises(ValueError, match="strictly inside"):
        set_initial_depth(build_depth_net("monodepth2", width=0.25), 100.0, 0.1, 100.0)


def test_grey_input_models_see_the_luma_so_a_grey_camera_and_its_colour_twin_agree():
    from monodepth_training.networks.monodepth2 import rgb_to_grey3
    from monodepth_training.networks.registry import build_depth_net, build_pose_net

    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 64, 64)
    luma = (0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]).expand(-1, 3, -1, -1)
    torch.testing.assert_close(rgb_to_grey3(rgb), luma)
    torch.testing.assert_close(rgb_to_grey3(luma), luma)  # a mono8 frame fed as 3 equal channels is a fixed point
    depth = build_depth_net("monodepth2", num_layers=18, width=0.125, input_color="grey").eval()
    pose = build_pose_net("monodepth2_pose", num_layers=18, width=0.125, input_color="grey").eval()
    with torch.no_grad():
        torch.testing.assert_close(depth(rgb)[("disp", 0)], depth(luma.contiguous())[("disp", 0)])
        a, b = pose(rgb, rgb.flip(0)), pose(luma.contiguous(), luma.flip(0).contiguous())
    torch.testing.assert_close(a, b)
    colour = build_depth_net("monodepth2", num_layers=18, width=0.125).eval()
    with torch.no_grad():
        assert not torch.allclose(colour(rgb)[("disp", 0)], colour(luma.contiguous())[("disp", 0)])
    with pytest.raises(ValueError, match="input_color"):
        build_depth_net("monodepth2", num_layers=18, width=0.125, input_color="bgr")
