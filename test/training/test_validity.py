"""The validity (sky) head: networks that carry it, fitting it with the trunk frozen, the bundle it makes, and its
export to ONNX (fp32 and INT8) with the second output the node reads."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from monodepth_training.bundle_io import load_bundle, save_bundle
from monodepth_training.export import export_onnx
from monodepth_training.networks.registry import build_depth_net, build_pose_net
from monodepth_training.networks.rtmonodepth import CPU_REALTIME
from monodepth_training.networks.validity import VALID_KEY, ValidityHead, has_validity_head, validity_head_of
from monodepth_training.quantize import fp32_node_names, quantize_int8
from monodepth_training.validity import (
    ValidityFitConfig,
    add_validity_head,
    below_horizon_labels,
    fit_validity_head,
    heldout_validity,
    main,
    synthetic_sky_frames,
)

from monodepth_ros.backends import OnnxRuntimeBackend, read_onnx_model_meta
from monodepth_ros.bundle import BundleMeta
from monodepth_ros.evaluation.validity import sky_scores

H, W = 64, 192
K_NORM = [[0.58, 0.0, 0.5], [0.0, 1.92, 0.5], [0.0, 0.0, 1.0]]
RT = {**CPU_REALTIME, "channels": list(CPU_REALTIME["channels"]), "convs": list(CPU_REALTIME["convs"])}
# Small enough for a unit test, enough for a random trunk's head to find the synthetic sky.
TINY_FIT = ValidityFitConfig(steps=300, synthetic_seeds=(0, 1), synthetic_frames=8, jittered_copies=1,
                             heldout_frames=6, camera_frames=0)


def _rt(validity: bool, seed: int = 0):
    torch.manual_seed(seed)
    return build_depth_net("rtmonodepth", **RT, validity_head=validity).eval()


def _bundle(path, net, validity: bool = False):
    meta = BundleMeta(depth_net="rtmonodepth", height=H, width=W, depth_kwargs={**RT, "validity_head": validity},
                      min_depth=0.1, max_depth=100.0, scale_policy="metric", scale=1.0, intrinsics_norm=K_NORM)
    save_bundle(path, net, meta)
    return path


@pytest.mark.parametrize("name, kwargs", [("rtmonodepth", RT), ("monodepth2", {"num_layers": 18, "width": 0.25})])
def test_networks_with_a_validity_head_add_a_full_resolution_probability_that_starts_at_one_half(name, kwargs):
    net = build_depth_net(name, **kwargs, validity_head=True).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, H, W))
    assert out[VALID_KEY].shape == (2, 1, H, W)
    assert torch.allclose(out[VALID_KEY], torch.full_like(out[VALID_KEY], 0.5))  # zero last conv: nothing masked
    assert has_validity_head(net) and isinstance(validity_head_of(net), ValidityHead)
    plain = build_depth_net(name, **kwargs).eval()
    assert VALID_KEY not in plain(torch.rand(1, 3, H, W)) and not has_validity_head(plain)
    with pytest.raises(ValueError, match="no validity head"):
        validity_head_of(plain)


def test_below_horizon_labels_mark_only_rows_under_the_horizon_plus_margin():
    labels = below_horizon_labels(cy=31.5, height=H, width=W, margin=0.1)
    first = int(np.ceil(31.5 + 0.1 * H))
    assert (labels[first:] == 1).all() and (labels[:first] == -1).all()


def test_fitting_learns_the_synthetic_sky_and_leaves_every_trunk_weight_as_it_was():
    net = _rt(validity=True)
    before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("decoder.validity.")}
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        disp_before = net(x)[("disp", 0)].clone()
    rgb, sky = synthetic_sky_frames(H, W, TINY_FIT.synthetic_seeds, TINY_FIT.synthetic_frames,
                                    TINY_FIT.synthetic_stride)
    assert 0.01 < sky.mean() < 0.5  # the worlds show some sky
    # The camera's own frames: all-black frames labelled surface below the horizon must not be marked sky.
    cam = np.zeros((4, H, W, 3), np.uint8)
    cam_labels = np.stack([below_horizon_labels(H / 2, H, W, 0.05)] * 4)
    history = fit_validity_head(net, rgb, sky, cam, cam_labels, TINY_FIT, log=lambda _m: None)
    assert history[-1] < history[0]
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    with torch.no_grad():
        assert torch.equal(net(x)[("disp", 0)], disp_before)
    scores = heldout_validity(net, H, W, TINY_FIT.heldout_frames, 0.5)
    assert scores["recall"] > 0.5 and scores["surface_invalid"] < 0.05, scores


def test_sky_scores_count_recall_precision_and_lost_surfaces():
    valid = np.array([[0.1, 0.2, 0.9, 0.6], [0.9, 0.1, 0.8, 0.95]], np.float32)
    sky = np.array([[True, True, True, False], [False, False, False, False]])
    s = sky_scores(valid, sky, 0.5)
    assert s["recall"] == pytest.approx(2 / 3) and s["precision"] == pytest.approx(2 / 3)
    assert s["surface_invalid"] == pytest.approx(1 / 5) and s["sky_share"] == pytest.approx(3 / 8)
    assert np.isnan(sky_scores(np.ones((2, 2)), np.zeros((2, 2), bool), 0.5)["recall"])
    with pytest.raises(ValueError, match="differ in shape"):
        sky_scores(valid, sky[:1], 0.5)


@pytest.fixture(scope="module")
def validity_bundle(tmp_path_factory):
    """A random rtmonodepth bundle with a pose net, given a fitted validity head by add_validity_head."""
    d = tmp_path_factory.mktemp("validity")
    torch.manual_seed(1)
    net = _rt(validity=False)
    pose_net = build_pose_net("monodepth2_pose", num_layers=18, width=0.25)
    meta = BundleMeta(depth_net="rtmonodepth", height=H, width=W, depth_kwargs=RT, pose_net="monodepth2_pose",
                      pose_kwargs={"num_layers": 18, "width": 0.25}, min_depth=0.1, max_depth=100.0,
                      scale_policy="metric", scale=1.0, intrinsics_norm=K_NORM)
    src = d / "plain.safetensors"
    save_bundle(src, net, meta, pose_net)
    out = d / "with_validity.safetensors"
    report = add_validity_head(src, out, None, TINY_FIT, log=lambda _m: None)
    return {"dir": d, "src": src, "out": out, "report": report}


def test_add_validity_head_writes_a_bundle_whose_depth_and_pose_are_the_input_bundles(validity_bundle):
    src_depth, src_pose, _ = load_bundle(validity_bundle["src"])
    depth, pose, meta = load_bundle(validity_bundle["out"])
    assert meta.depth_kwargs["validity_head"] is True and has_validity_head(depth)
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        assert torch.equal(depth(x)[("disp", 0)], src_depth(x)[("disp", 0)])
    assert all(torch.equal(a, b) for a, b in zip(pose.state_dict().values(), src_pose.state_dict().values()))
    assert validity_bundle["report"]["heldout_synthetic"]["recall"] > 0.5


def test_export_adds_the_valid_output_with_metadata_and_parity(validity_bundle):
    res = export_onnx(validity_bundle["out"], validity_bundle["dir"] / "onnx")
    model = onnx.load(res.path)
    assert [o.name for o in model.graph.output] == ["disp", "valid"]
    assert read_onnx_model_meta(res.path).validity_output == "valid"
    assert res.parity_max_abs_diff < 1e-4  # over both outputs
    backend = OnnxRuntimeBackend(res.path, threads=1)
    rgb, sky = synthetic_sky_frames(H, W, [1000], 3, 5)
    disp, valid = backend.infer_outputs(rgb[0])
    assert disp.shape == valid.shape == (H, W) and 0.0 <= valid.min() and valid.max() <= 1.0
    depth_net, _, _ = load_bundle(validity_bundle["out"])
    with torch.no_grad():
        ref = depth_net(torch.from_numpy(rgb[:1]).permute(0, 3, 1, 2).float() / 255)[VALID_KEY][0, 0].numpy()
    np.testing.assert_allclose(valid, ref, atol=1e-4)
    plain = export_onnx(validity_bundle["src"], validity_bundle["dir"] / "onnx_plain")
    assert read_onnx_model_meta(plain.path).validity_output is None
    assert OnnxRuntimeBackend(plain.path, threads=1).infer_outputs(rgb[0])[1] is None


def test_int8_keeps_the_disparity_tail_in_fp32_and_reports_validity_agreement(validity_bundle):
    res = export_onnx(validity_bundle["out"], validity_bundle["dir"] / "onnx_q")
    model = onnx.load(res.path)
    sigmoids = [n for n in model.graph.node if n.op_type == "Sigmoid"]
    assert len(sigmoids) >= 2
    kept = fp32_node_names(model, "tail")
    producers = {o: n for n in model.graph.node for o in n.output}
    assert producers["disp"].name in kept  # the affine map to disparity
    assert producers["valid"].name not in kept  # the validity path is quantised
    assert sum(1 for n in sigmoids if n.name in kept) == 1
    rgb, _ = synthetic_sky_frames(H, W, [3], 10, 3)
    q = quantize_int8(res.path, list(rgb[:6]), validity_bundle["dir"] / "m.int8.onnx", heldout_frames=list(rgb[6:]),
                      recipes=({"name": "per_channel", "per_channel": True, "keep_fp32": "tail"},), threads=1)
    assert 0.9 <= q.report["validity_agreement"] <= 1.0
    assert read_onnx_model_meta(q.path).validity_output == "valid"


def test_cli_writes_bundle_and_report_and_rejects_bad_input(validity_bundle, tmp_path, capsys):
    assert main(["--model", str(validity_bundle["src"]), "--out", str(tmp_path / "o.txt")]) == 2
    assert "safetensors" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "o.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    bad_cfg = tmp_path / "c.yaml"
    bad_cfg.write_text("model: {}\n")
    assert main(["--model", str(validity_bundle["src"]), "--out", str(tmp_path / "o.safetensors"),
                 "--config", str(bad_cfg)]) == 2
    assert "data.train" in capsys.readouterr().err
    assert main(["--model", str(validity_bundle["src"]), "--out", str(tmp_path / "o.safetensors"),
                 "--steps", "0"]) == 2
    assert "steps" in capsys.readouterr().err
