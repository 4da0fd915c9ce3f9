"""Model bundles: save/load round trip, damaged files, metadata mismatches, the torch backend, and the ONNX
export of the disparity head checked against ONNX Runtime."""

from __future__ import annotations

import json
import warnings
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
from monodepth_training.bundle_io import init_from_bundle, load_bundle, save_bundle
from monodepth_training.inference import TorchBackend
from monodepth_training.networks import build_depth_net, build_pose_net
from monodepth_training.networks.export_wrapper import DisparityHead
from safetensors.torch import save as st_save

from monodepth_ros.bundle import META_KEY, BundleError, BundleMeta, file_sha256, read_meta

torch.set_num_threads(1)
H, W = 64, 192


def perturb_bn(net: torch.nn.Module, seed: int = 0) -> None:
    """Non-default BatchNorm statistics, so a round trip that dropped buffers would show."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def make_meta(**overrides) -> BundleMeta:
    fields = dict(depth_net="monodepth2", height=H, width=W, min_depth=0.1, max_depth=100.0,
                  depth_kwargs={"num_layers": 18, "pretrained_path": None, "scales": (0, 1, 2, 3)},
                  pose_net="monodepth2_pose", pose_kwargs={"num_layers": 18, "pretrained_path": None})
    fields.update(overrides)
    return BundleMeta(**fields)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    depth_net, pose_net = build_depth_net("monodepth2"), build_pose_net("monodepth2_pose")
    perturb_bn(depth_net)
    perturb_bn(pose_net, 1)
    return depth_net.eval(), pose_net.eval()


@pytest.fixture(scope="module")
def bundle_path(nets, tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "model.safetensors"
    save_bundle(path, nets[0], make_meta(), pose_net=nets[1])
    return path


def test_round_trip_gives_identical_outputs(nets, bundle_path):
    depth_net, pose_net = nets
    depth2, pose2, meta = load_bundle(bundle_path)
    assert meta.depth_net == "monodepth2" and (meta.height, meta.width) == (H, W)
    x, y = torch.rand(2, 3, H, W), torch.rand(2, 3, H, W)
    with torch.no_grad():
        a, b = depth_net(x), depth2(x)
        for s in range(4):
            assert torch.equal(a[("disp", s)], b[("disp", s)])
        for u, v in zip(pose_net(x, y), pose2(x, y)):
            assert torch.equal(u, v)


def test_bundle_without_pose_net_loads_depth_only(nets, tmp_path):
    path = tmp_path / "depth_only.safetensors"
    written = save_bundle(path, nets[0], make_meta())
    assert written.pose_net is None
    depth2, pose2, meta = load_bundle(path)
    assert pose2 is None and meta.pose_net is None


def test_recorded_kwargs_never_hold_local_paths(tmp_path):
    weights = tmp_path / "imagenet_r18.pth"
    state = {k.removeprefix("encoder."): v for k, v in build_depth_net("monodepth2").encoder.state_dict().items()}
    torch.save(state, weights)
    depth_net = build_depth_net("monodepth2", pretrained_path=str(weights))
    meta = make_meta(depth_kwargs=dict(depth_net.registry_kwargs))
    path = tmp_path / "m.safetensors"
    save_bundle(path, depth_net, meta)
    recorded = read_meta(path)
    assert recorded.depth_kwargs["pretrained_path"] is None
    assert str(tmp_path) not in recorded.to_json()
    weights.unlink()  # the bundle must load on a machine without the ImageNet file
    load_bundle(path)


def test_truncated_file_is_a_bundle_error(bundle_path, tmp_path):
    data = bundle_path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="cannot read bundle"):
        load_bundle(bad)


def test_corrupted_header_is_a_bundle_error(bundle_path, tmp_path):
    data = bytearray(bundle_path.read_bytes())
    data[8:40] = b"\xff" * 32  # garbage inside the JSON header
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError):
        load_bundle(bad)


def test_missing_file_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "absent.safetensors")


def test_metadata_naming_another_depth_is_a_bundle_error_listing_keys(nets, tmp_path):
    # Hand-written file whose metadata claims ResNet-50 over ResNet-18 weights (save_bundle would refuse it).
    tensors = {"depth." + k: v.contiguous().clone() for k, v in nets[0].state_dict().items()}
    meta = make_meta(depth_kwargs={"num_layers": 50}, pose_net=None, pose_kwargs={})
    path = tmp_path / "lying.safetensors"
    path.write_bytes(st_save(tensors, metadata={META_KEY: meta.to_json()}))
    with pytest.raises(BundleError, match=r"missing keys \[.*conv3.*shape mismatches"):
        load_bundle(path)


def test_unknown_architecture_in_metadata_is_a_bundle_error(nets, tmp_path):
    tensors = {"depth." + k: v.contiguous().clone() for k, v in nets[0].state_dict().items()}
    meta = json.loads(make_meta(pose_net=None, pose_kwargs={}).to_json())
    meta["depth_net"] = "not_a_net"
    path = tmp_path / "unknown.safetensors"
    path.write_bytes(st_save(tensors, metadata={META_KEY: json.dumps(meta)}))
    with pytest.raises(BundleError, match="unknown depth network 'not_a_net'"):
        load_bundle(path)


def test_save_refuses_metadata_that_does_not_match_the_network(nets, tmp_path):
    path = tmp_path / "never.safetensors"
    with pytest.raises(BundleError, match="do not match 'monodepth2'"):
        save_bundle(path, nets[0], make_meta(depth_kwargs={"num_layers": 34}, pose_net=None))
    with pytest.raises(BundleError, match="multiple of 32"):
        save_bundle(path, nets[0], make_meta(height=70))
    assert not path.exists()


def test_torch_backend_runs_bundle_like_the_disparity_head(nets, bundle_path):
    backend = TorchBackend(bundle_path)
    assert backend.info.source_sha256 == file_sha256(bundle_path)
    assert (backend.info.height, backend.info.width, backend.info.scale_policy) == (H, W, "relative")
    rgb = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    disp = backend.infer_disp(rgb)
    with torch.no_grad():
        x = torch.from_numpy(rgb.astype(np.float32).transpose(2, 0, 1)[None] / 255.0)
        ref = DisparityHead(nets[0], 0.1, 100.0)(x)[0, 0].numpy()
    np.testing.assert_allclose(disp, ref, rtol=1e-5, atol=1e-6)
    assert 1 / 100.0 <= disp.min() and disp.max() <= 1 / 0.1
    depth = backend.infer(rgb, out_size=(2 * H, 2 * W))
    assert depth.shape == (2 * H, 2 * W) and np.isfinite(depth).all()


def test_torch_backend_is_registered_as_entry_point():
    eps = {ep.name: ep for ep in entry_points(group="monodepth_ros.backends")}
    assert eps["torch"].load() is TorchBackend


def test_disparity_head_exports_to_onnx_opset17_and_matches_onnxruntime(nets, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    head = DisparityHead(nets[0], 0.1, 100.0).eval()
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "head.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation / constant-folding notes
        # dynamo=False: the torch.export-based exporter cannot down-convert reflection Pad to opset 17.
        torch.onnx.export(head, (x,), str(path), opset_version=17, input_names=["rgb"], output_names=["disp"],
                          dynamo=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    ops = {n.op_type for n in model.graph.node}
    assert "GridSample" not in ops and "Pad" in ops and "Resize" in ops
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, H, W]  # static shapes
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (disp_ort,) = session.run(["disp"], {"rgb": x.numpy()})
    with torch.no_grad():
        disp_torch = head(x).numpy()
    assert disp_ort.shape == (1, 1, H, W)
    np.testing.assert_allclose(disp_ort, disp_torch, atol=1e-4, rtol=0)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_init_from_bundle_copies_depth_and_pose_weights_into_fresh_networks(nets, bundle_path):
    torch.manual_seed(5)
    depth_net, pose_net = build_depth_net("monodepth2"), build_pose_net("monodepth2_pose")
    assert not _same_weights(depth_net, nets[0])
    notes = init_from_bundle(bundle_path, depth_net, pose_net)
    assert _same_weights(depth_net, nets[0]) and _same_weights(pose_net, nets[1])
    assert len(notes) == 2 and "pose network" in notes[1]


def test_init_from_a_depth_only_bundle_leaves_the_pose_network_as_built(nets, tmp_path):
    path = tmp_path / "depth_only.safetensors"
    save_bundle(path, nets[0], make_meta())
    torch.manual_seed(6)
    depth_net, pose_net = build_depth_net("monodepth2"), build_pose_net("monodepth2_pose")
    pose_before = {k: v.clone() for k, v in pose_net.state_dict().items()}
    notes = init_from_bundle(path, depth_net, pose_net)
    assert _same_weights(depth_net, nets[0])
    assert all(torch.equal(v, pose_before[k]) for k, v in pose_net.state_dict().items())
    assert "starts from scratch" in notes[-1]


def test_init_from_a_bundle_of_another_width_names_both_architectures(bundle_path):
    slim = build_depth_net("monodepth2", width=0.5)
    with pytest.raises(BundleError, match=r"depth network is 'monodepth2'.*width.*0\.5.*model\.depth_kwargs"):
        init_from_bundle(bundle_path, slim)


def test_module_init_from_starts_training_from_the_bundle(nets, bundle_path):
    from monodepth_training.module import MonoDepthModule

    module = MonoDepthModule(height=H, width=W, init_from=str(bundle_path), init_depth=10.0)
    assert _same_weights(module.depth, nets[0]) and _same_weights(module.pose, nets[1])
