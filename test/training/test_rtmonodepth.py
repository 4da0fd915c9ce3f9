"""The RT-MonoDepth-style real-time network ("rtmonodepth"): output contract at the model sizes, gradients, grey
input, initial depth, ONNX export with parity and TensorRT-safe operators, ONNX Runtime INT8, bundle round trip,
a training step, and the default model's config as a one-network change of the previous slim-ResNet recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from monodepth_training.bundle_io import load_bundle, save_bundle
from monodepth_training.export import PARITY_ATOL, check_graph, export_onnx, load_frames
from monodepth_training.geometry import sigmoid_to_disp
from monodepth_training.networks import build_depth_net, list_models
from monodepth_training.networks.registry import set_initial_depth
from monodepth_training.networks.rtmonodepth import CPU_REALTIME, PAPER_SMALL
from monodepth_training.quantize import fp32_node_names, quantize_int8

from monodepth_ros.backends import OnnxRuntimeBackend, create_backend, read_onnx_model_meta
from monodepth_ros.bundle import BundleMeta

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # test/training/conftest.py

REPO = Path(__file__).resolve().parents[2]
H, W = 96, 320
# The paper's layout at a quarter of its widths: same topology (3 convs per stage, no BatchNorm), cheap on a CPU.
PAPER_QUARTER = {"width": 0.25}
# Every operator the exported graphs may hold: the network's own (BatchNorm is folded into Conv, the pixel
# shuffle is DepthToSpace) and the input normalisation, luma step and disparity scaling around it.
EXPECTED_OPS = {"Conv", "LeakyRelu", "Resize", "Add", "Concat", "Sigmoid", "DepthToSpace", "Sub", "Div", "Mul",
                "ReduceSum", "Expand", "Reshape", "Transpose", "Constant", "Identity"}


def _net(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_depth_net("rtmonodepth", **kwargs)


def _bundle(path: Path, kwargs: dict, height: int = H, width: int = W) -> Path:
    net = _net(**kwargs).eval()
    meta = BundleMeta(depth_net="rtmonodepth", height=height, width=width, depth_kwargs=dict(net.registry_kwargs),
                      min_depth=0.1, max_depth=100.0, scale_policy="metric")
    save_bundle(path, net, meta)
    return path


# ------------------------------------------------------------------------------------------- output contract
def test_registered_with_the_paper_layout_as_defaults():
    assert "rtmonodepth" in list_models()["depth"]
    net = build_depth_net("rtmonodepth")
    assert net.encoder.num_ch_enc == (64, 64, 128, 256)
    assert [len(stage) for stage in net.encoder.stages] == [3, 3, 3, 3]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net.registry_kwargs["input_color"] == "rgb" and net.registry_kwargs["width"] == 1.0


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("hw", [(96, 320), (192, 640)])
def test_returns_four_sigmoid_scales_at_the_model_sizes(hw, batch):
    h, w = hw
    net = _net(**CPU_REALTIME).eval()
    with torch.no_grad():
        out = net(torch.rand(batch, 3, h, w))
    assert list(out) == [("disp", s) for s in range(4)]
    for s in range(4):
        sigma = out[("disp", s)]
        assert sigma.shape == (batch, 1, h >> s, w >> s)
        assert torch.isfinite(sigma).all() and 0 <= float(sigma.min()) and float(sigma.max()) <= 1


@pytest.mark.parametrize("kwargs", [{}, PAPER_SMALL, {"width": 0.5}], ids=["paper", "paper_small", "paper_half"])
def test_paper_layouts_have_the_same_contract(kwargs):
    with torch.device("meta"):  # shapes only: nothing is computed
        out = build_depth_net("rtmonodepth", **kwargs)(torch.empty(2, 3, 192, 640))
    assert {k: tuple(v.shape) for k, v in out.items()} == {("disp", s): (2, 1, 192 >> s, 640 >> s) for s in range(4)}


def test_rejects_sizes_not_multiple_of_16_and_bad_layouts():
    net = _net(**CPU_REALTIME)
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.rand(1, 3, 96, 328))
    with pytest.raises(ValueError, match="4 channel counts"):
        build_depth_net("rtmonodepth", channels=(16, 32, 64))
    with pytest.raises(ValueError, match="at least one conv"):
        build_depth_net("rtmonodepth", convs=(0, 2, 3, 3))


@pytest.mark.parametrize("kwargs", [CPU_REALTIME, PAPER_QUARTER], ids=["cpu", "paper_quarter"])
def test_gradient_reaches_every_parameter(kwargs):
    net = _net(**kwargs).train()
    out = net(torch.rand(2, 3, 64, 96))
    sum(v.mean() for v in out.values()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_width_scales_channels_and_parameters():
    n = {w: sum(p.numel() for p in _net(width=w).parameters()) for w in (0.5, 1.0)}
    assert _net(width=0.5).encoder.num_ch_enc == (32, 32, 64, 128)
    assert 0.2 < n[0.5] / n[1.0] < 0.3


# ------------------------------------------------------------------------------------------- input colour
def test_grey_model_sees_the_luma_so_a_grey_camera_and_its_colour_twin_agree():
    rgb = torch.rand(2, 3, 64, 96)
    luma = (0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]).expand(-1, 3, -1, -1).contiguous()
    grey = _net(**CPU_REALTIME, input_color="grey").eval()
    colour = _net(**CPU_REALTIME, input_color="rgb").eval()
    with torch.no_grad():
        torch.testing.assert_close(grey(rgb)[("disp", 0)], grey(luma)[("disp", 0)])
        assert not torch.allclose(colour(rgb)[("disp", 0)], colour(luma)[("disp", 0)])
    with pytest.raises(ValueError, match="input_color"):
        build_depth_net("rtmonodepth", input_color="bgr")


# ------------------------------------------------------------------------------------------- initial depth
@pytest.mark.parametrize("kwargs", [CPU_REALTIME, PAPER_QUARTER], ids=["cpu", "paper_quarter"])
@pytest.mark.parametrize("depth_m", [3.0, 10.0, 40.0])
def test_set_initial_depth_starts_every_scale_at_the_requested_depth(kwargs, depth_m):
    net = _net(**kwargs).train()  # as in training: BatchNorm on batch statistics
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        set_initial_depth(net, depth_m, 0.1, 100.0)
        out = net(x)
    assert len(net.disparity_head_biases()) == 4
    for key, sigma in out.items():
        depth = 1.0 / sigmoid_to_disp(sigma, 0.1, 100.0)
        # the random head weights add some spread around the bias, so the median is checked, not every pixel
        assert depth_m / 1.5 < float(depth.median()) < depth_m * 1.5, (key, float(depth.median()))


# ------------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The real-time configuration (grey input, 96x320) as a bundle and its ONNX export through monodepth-export."""
    d = tmp_path_factory.mktemp("rt_export")
    bundle = _bundle(d / "rt.safetensors", {**CPU_REALTIME, "input_color": "grey"})
    return {"dir": d, "bundle": bundle, "res": export_onnx(bundle, d / "out")}


def _exported_ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_onnx_export_matches_pytorch_and_holds_only_tensorrt_safe_ops(exported):
    res = exported["res"]
    assert res.parity_max_abs_diff < PARITY_ATOL  # export_onnx's own check: ONNX Runtime vs PyTorch
    model = onnx.load(str(res.path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    check_graph(onnx.shape_inference.infer_shapes(model, strict_mode=True), (H, W))  # static, TensorRT-safe
    assert _exported_ops(res.path) <= EXPECTED_OPS, _exported_ops(res.path) - EXPECTED_OPS
    assert "BatchNormalization" not in _exported_ops(res.path)  # folded into the convolutions
    meta = read_onnx_model_meta(res.path)
    assert meta.input_color == "grey" and (meta.height, meta.width) == (H, W)
    backend = OnnxRuntimeBackend(res.path, threads=1)
    disp = backend.infer_disp(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8))
    assert disp.shape == (H, W) and float(np.ptp(disp)) > 1e-4  # a real image, not a constant


def test_paper_layout_without_batchnorm_exports_too(tmp_path):
    bundle = _bundle(tmp_path / "paper.safetensors", PAPER_QUARTER, height=64, width=192)
    res = export_onnx(bundle, tmp_path / "out")
    assert res.parity_max_abs_diff < PARITY_ATOL
    assert _exported_ops(res.path) <= EXPECTED_OPS


def test_int8_qdq_model_runs_in_onnxruntime_with_the_disparity_head_found(exported, tmp_path):
    res = exported["res"]
    # The sub-pixel head conv feeds the last Sigmoid directly, so the mixed recipe keeps it (and the first conv)
    # in fp32, as it does for Monodepth2.
    model = onnx.load(str(res.path))
    by_name = {n.name: n for n in model.graph.node}
    tail, sensitive = fp32_node_names(model, "tail"), fp32_node_names(model, "sensitive")
    assert by_name[tail[0]].op_type == "Sigmoid"
    assert [by_name[n].op_type for n in sensitive if n not in tail] == ["Conv", "Conv"]

    calib = load_frames("synthetic:6", 6, H, W)
    held = load_frames("synthetic", 3, H, W, heldout=True)
    frames, gts = [f for f, _ in held], [g for _, g in held]
    q = quantize_int8(res.path, calib, out_path=tmp_path / "rt.int8.onnx", heldout_frames=frames, heldout_gts=gts,
                      threads=1)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _exported_ops(q.path)
    assert q.recipe["format"] == "QDQ"
    # an untrained net says nothing about the 2 % budget; INT8 depth must stay close to fp32 depth
    assert 0 <= q.report["abs_rel_int8_vs_fp32"] < 0.1
    backend = create_backend(q.path, threads=1)
    assert backend.precision == "int8"
    disp = backend.infer_disp(frames[0])
    assert disp.shape == (H, W) and np.isfinite(disp).all()


# ------------------------------------------------------------------------------------------- bundle, training
def test_bundle_round_trip_gives_identical_outputs(exported):
    net, _pose, meta = load_bundle(exported["bundle"])
    assert meta.depth_net == "rtmonodepth" and meta.depth_kwargs["channels"] == list(CPU_REALTIME["channels"])
    ref = _net(**CPU_REALTIME, input_color="grey").eval()
    x = torch.rand(2, 3, H, W)
    with torch.no_grad():
        a, b = ref(x), net.eval()(x)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_training_steps_of_the_lightning_module_stay_finite():
    from monodepth_training.datasets.synthetic import SyntheticDataset
    from monodepth_training.module import MonoDepthModule
    from torch.utils.data import default_collate

    ds = SyntheticDataset(64, 96, num_frames=4, seed=3, frame_offsets=(0, -1, 1))
    batch = default_collate([ds[0], ds[1]])
    torch.manual_seed(0)
    module = MonoDepthModule(depth_net="rtmonodepth", depth_kwargs=dict(CPU_REALTIME), pose_net="monodepth2_pose",
                             pose_kwargs={"width": 0.25}, height=64, width=96, frame_offsets=[0, -1, 1], lr=1e-4,
                             init_depth=10.0)
    opt = module.configure_optimizers()["optimizer"]
    first = module.depth.encoder.stages[0][0][0].weight
    before = first.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        loss = module._loss(batch, "color_aug")["loss"]
        loss.backward()
        opt.step()
        assert np.isfinite(loss.item())
    assert not torch.equal(before, first)


def test_default_model_is_the_previous_slim_resnet_recipe_with_only_the_realtime_depth_network():
    def load(name):
        return yaml.safe_load((REPO / "config" / "train" / name).read_text())

    base, rt = load("default_model_resnet.yaml"), load("default_model.yaml")
    assert rt["model"].pop("depth_net") == "rtmonodepth"
    kwargs = rt["model"].pop("depth_kwargs")
    assert kwargs == {**{k: list(v) if isinstance(v, tuple) else v for k, v in CPU_REALTIME.items()},
                      "input_color": base["model"]["depth_kwargs"]["input_color"]}
    for key in ("depth_net", "depth_kwargs"):
        base["model"].pop(key)
    assert rt["model"] == base["model"] and rt["data"] == base["data"]
    assert rt["seed_everything"] == base["seed_everything"]
    # the trainer differs only in where it writes
    as_text = yaml.safe_dump(rt["trainer"])
    assert "runs/default_model_resnet" not in as_text and yaml.safe_load(
        as_text.replace("runs/default_model", "runs/default_model_resnet")) == base["trainer"]
