"""Export of a real Monodepth2-R18 bundle to ONNX and ONNX Runtime INT8: graph contract, metadata, parity with
PyTorch, the INT8 accuracy report, and the monodepth-export command line."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
import torch
from monodepth_training.bundle_io import save_bundle
from monodepth_training.export import (
    PARITY_ATOL,
    ExportError,
    check_graph,
    export_onnx,
    load_disparity_head,
    load_frames,
    synthetic_frames,
)
from monodepth_training.export.cli import main
from monodepth_training.networks.registry import build_depth_net
from monodepth_training.quantize import fp32_node_names, int8_accuracy_report, quantize_int8

from monodepth_ros.backends import OnnxRuntimeBackend, create_backend, read_onnx_model_meta
from monodepth_ros.backends.base import preprocess
from monodepth_ros.backends.model_meta import META_KEY, sidecar_path
from monodepth_ros.bundle import BundleMeta, file_sha256

H, W = 96, 320
K_NORM = [[0.58, 0.0, 0.5], [0.0, 1.92, 0.5], [0.0, 0.0, 1.0]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A randomly initialised Monodepth2-R18 bundle (96x320, fixed scale 5.4) and its ONNX export."""
    d = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    net = build_depth_net("monodepth2", num_layers=18)
    meta = BundleMeta(depth_net="monodepth2", height=H, width=W, depth_kwargs={"num_layers": 18},
                      min_depth=0.1, max_depth=100.0, scale_policy="fixed", scale=5.4, intrinsics_norm=K_NORM)
    bundle = d / "md2_r18.safetensors"
    save_bundle(bundle, net, meta)
    res = export_onnx(bundle, d / "out")
    head, _ = load_disparity_head(bundle)
    return {"dir": d, "bundle": bundle, "res": res, "head": head}


def _torch_disp(head, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(torch.from_numpy(x)).numpy()


def test_onnx_runtime_matches_pytorch_on_random_and_synthetic_frames(exported):
    backend = OnnxRuntimeBackend(exported["res"].path, threads=2)
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(2)]
    frames += synthetic_frames(2, H, W, start=40)
    diffs = []
    for rgb in frames:
        x = preprocess(rgb, H, W)
        ref = _torch_disp(exported["head"], x)[0, 0]
        got = backend.infer_disp(rgb)
        assert got.shape == (H, W)
        diffs.append(float(np.max(np.abs(ref - got))))
    assert max(diffs) < PARITY_ATOL, diffs
    # the export's own check is the same measurement, and it is recorded
    assert exported["res"].parity_max_abs_diff < PARITY_ATOL
    # the output really is disparity in [1/max_depth, 1/min_depth], not a constant
    assert 1 / 100.0 - 1e-6 <= got.min() and got.max() <= 1 / 0.1 + 1e-6
    assert float(np.ptp(got)) > 1e-4


def test_onnx_graph_is_static_trt_safe_and_opset_at_least_17(exported):
    model = onnx.load(str(exported["res"].path))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    ops = {n.op_type for n in model.graph.node}
    assert "GridSample" not in ops and "Shape" not in ops
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    check_graph(inferred, (H, W))  # raises on any dynamic dim or op outside the TensorRT-safe set
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert (model.graph.input[0].name, dims) == ("rgb", [1, 3, H, W])
    assert model.graph.output[0].name == "disp"


def test_check_graph_rejects_grid_sample_and_dynamic_input():
    from onnx import TensorProto, helper

    def graph(op_nodes, in_dims):
        x = helper.make_tensor_value_info("rgb", TensorProto.FLOAT, in_dims)
        g = helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, H, W, 2])
        y = helper.make_tensor_value_info("disp", TensorProto.FLOAT, [1, 1, H, W])
        return helper.make_model(helper.make_graph(op_nodes, "g", [x, g], [y]))

    gs = helper.make_node("GridSample", ["rgb", "grid"], ["disp"])
    with pytest.raises(ExportError, match="GridSample"):
        check_graph(graph([gs], [1, 1, H, W]), (H, W))
    ident = helper.make_node("Identity", ["rgb"], ["disp"])
    with pytest.raises(ExportError, match="graph inputs"):
        check_graph(graph([ident], ["batch", 1, H, W]), (H, W))


def test_metadata_is_embedded_and_sidecar_matches(exported):
    res, bundle = exported["res"], exported["bundle"]
    meta = read_onnx_model_meta(res.path)
    assert (meta.height, meta.width, meta.scale_policy, meta.scale) == (H, W, "fixed", 5.4)
    assert (meta.min_depth, meta.max_depth) == (0.1, 100.0)
    assert meta.output == "disp" and meta.input == "rgb" and meta.precision == "fp32"
    assert meta.output_convention == "depth = scale / disp"
    assert meta.source_sha256 == file_sha256(bundle)
    assert meta.intrinsics_norm == K_NORM and meta.mean == [0.45] * 3 and meta.std == [0.225] * 3
    assert meta.opset >= 17 and meta.producer["torch"] and meta.producer["onnxruntime"]
    embedded = {p.key: p.value for p in onnx.load(str(res.path)).metadata_props}[META_KEY]
    side = json.loads(sidecar_path(res.path).read_text())
    assert side == json.loads(embedded)


def test_infer_gives_depth_as_scale_over_disparity(exported):
    backend = create_backend(exported["res"].path, kind="onnxruntime", threads=2)
    rgb = synthetic_frames(1, 192, 640, start=3)[0]  # larger than the model: resized inside
    disp = backend.infer_disp(rgb)
    depth = backend.infer(rgb)
    np.testing.assert_allclose(depth, 5.4 / disp, rtol=1e-6)
    assert backend.infer(rgb, out_size=(192, 640)).shape == (192, 640)


def test_int8_quantisation_end_to_end_with_accuracy_report(exported, tmp_path):
    res = exported["res"]
    calib = load_frames("synthetic:6", 6, H, W)
    held = load_frames("synthetic", 3, H, W, heldout=True)
    frames, gts = [f for f, _ in held], [g for _, g in held]
    q = quantize_int8(res.path, calib, out_path=tmp_path / "m.int8.onnx", heldout_frames=frames, heldout_gts=gts,
                      threads=2)
    r = q.report
    for key in ("n_frames", "abs_rel_int8_vs_fp32", "max_abs_disp_diff", "abs_rel_fp32_gt", "abs_rel_int8_gt",
                "degradation_rel", "budget_metric", "budget_met"):
        assert key in r, key
    assert r["n_frames"] == 3 and r["budget_metric"] == "degradation_rel"
    # An untrained net says nothing about INT8 accuracy (the lead re-checks the 2 % budget on a trained model);
    # here: INT8 depth stays close to fp32 depth and the GT comparison is finite.
    assert 0 <= r["abs_rel_int8_vs_fp32"] < 0.1
    assert np.isfinite(r["abs_rel_fp32_gt"]) and np.isfinite(r["abs_rel_int8_gt"])
    assert q.budget_met == r["budget_met"]

    meta = read_onnx_model_meta(q.path)
    assert meta.precision == "int8" and meta.source_sha256 == read_onnx_model_meta(res.path).source_sha256
    assert meta.quantization["recipe"]["name"] == q.recipe["name"]
    assert meta.quantization["recipe"]["format"] == "QDQ"
    # symmetric by default, so TensorRT can build the same file
    assert q.tensorrt_violations == [] and meta.quantization["tensorrt_qdq_violations"] == []
    ops = {n.op_type for n in onnx.load(str(q.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    backend = create_backend(q.path, threads=2)
    assert backend.precision == "int8" and backend.infer_disp(frames[0]).shape == (H, W)
    # the standalone report agrees with the one recorded
    again = int8_accuracy_report(res.path, q.path, frames, gts, threads=2)
    assert again["abs_rel_int8_vs_fp32"] == pytest.approx(r["abs_rel_int8_vs_fp32"], rel=1e-6)


def test_mixed_precision_keeps_first_conv_and_disparity_head_in_fp32(exported):
    model = onnx.load(str(exported["res"].path))
    tail = fp32_node_names(model, "tail")
    sensitive = fp32_node_names(model, "sensitive")
    by_name = {n.name: n for n in model.graph.node}
    assert [by_name[n].op_type for n in tail][0] == "Sigmoid"
    assert set(tail) < set(sensitive)
    extra = [by_name[n] for n in sensitive if n not in tail]
    assert [n.op_type for n in extra] == ["Conv", "Conv"]
    assert "rgb" not in extra[0].input  # the first conv reads the normalised image, not a later feature map
    assert extra[0].name == next(n.name for n in model.graph.node if n.op_type == "Conv")


def test_cli_exports_onnx_and_prints_parity(exported, tmp_path, capsys):
    rc = main(["--model", str(exported["bundle"]), "--format", "onnx", "--out", str(tmp_path), "--name", "cli"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "parity vs PyTorch" in out and "max |d disp|" in out
    assert (tmp_path / "cli.onnx").is_file() and (tmp_path / "cli.onnx.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "onnx"], "bundle not found"),
        (["--format", "ort-int8"], "needs --calib"),
        (["--format", "ort-int8", "--calib", "synthetic:0"], "bad synthetic frame count"),
        (["--format", "ort-int8", "--calib", "/nonexistent/kitti"], "no such file or folder"),
        (["--format", "onnx", "--fp16"], "apply to --format tensorrt only"),
        (["--format", "tensorrt", "--int8"], "needs --calib"),
    ],
)
def test_cli_rejects_bad_inputs_with_clear_errors(exported, tmp_path, capsys, args, message):
    bundle = str(tmp_path / "missing.safetensors") if message == "bundle not found" else str(exported["bundle"])
    rc = main(["--model", bundle, "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("monodepth-export: error: "), err
    assert message in err


@pytest.mark.slow  # a second full export; the fast variant is test_tensorrt's test_without_tensorrt_...say_why
def test_cli_tensorrt_without_tensorrt_exports_onnx_then_says_why(exported, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed: this test pins the behaviour on machines without it")
    except ImportError:
        pass
    rc = main(["--model", str(exported["bundle"]), "--format", "tensorrt", "--fp16", "--out", str(tmp_path)])
    assert rc == 1
    assert "tensorrt" in capsys.readouterr().err.lower()
    assert (tmp_path / "md2_r18.onnx").is_file()


def test_load_frames_rejects_unknown_data(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="neither a bag"):
        load_frames(str(tmp_path / "plain"), 2, H, W)
    with pytest.raises(ValueError, match="positive integer"):
        load_frames("synthetic", 0, H, W)


def test_load_frames_reads_kitti_split_and_heldout_gt(tmp_path):
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld, writers

    world = SyntheticWorld(SynthConfig(width=W, height=H))
    writers.write_kitti(world, tmp_path / "kitti", 12)
    from monodepth_ros.datasets.kitti import read_split

    n_train = len(read_split(tmp_path / "kitti" / "splits" / "train_files.txt"))
    calib = load_frames(str(tmp_path / "kitti"), 3, H, W)
    assert len(calib) == min(3, n_train) > 0  # spread over the split, never more than it holds
    assert calib[0].dtype == np.uint8 and calib[0].shape == (H, W, 3)
    held = load_frames(str(tmp_path / "kitti"), 2, H, W, heldout=True)
    assert held and all(g is not None and g.shape == (H, W) and (g > 0).any() for _, g in held)


def test_failed_parity_check_raises_and_leaves_no_model(exported, tmp_path):
    # atol=0: float32 ONNX Runtime never matches PyTorch bit for bit, so the check must fail and clean up
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export_onnx(exported["bundle"], tmp_path, atol=0.0, n_random=1, n_synthetic=0)
    assert list(tmp_path.iterdir()) == []


def test_load_frames_reads_a_bag_with_heldout_gt_after_the_calibration_frames(tmp_path):
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld
    from monodepth_ros.synthetic.writers import write_bag

    world = SyntheticWorld(SynthConfig(width=W, height=H))
    bag = write_bag(world, tmp_path / "drive", 6, storage="mcap")
    calib = load_frames(str(bag), 3, H, W)
    assert len(calib) == 3 and calib[0].shape == (H, W, 3) and calib[0].dtype == np.uint8
    np.testing.assert_array_equal(calib[0], world.render(0).rgb)
    held = load_frames(str(bag), 3, H, W, heldout=True)
    assert len(held) == 3
    np.testing.assert_array_equal(held[0][0], world.render(3).rgb)  # no overlap with the calibration frames
    assert all(g is not None and g.shape == (H, W) for _, g in held)


def test_int8_tries_every_recipe_when_over_budget_and_keeps_the_best(exported, tmp_path):
    calib = load_frames("synthetic:4", 4, H, W)
    frames = synthetic_frames(2, H, W, start=777)
    # a negative budget cannot be met: all recipes are tried in order, the most accurate one is kept and flagged
    q = quantize_int8(exported["res"].path, calib, out_path=tmp_path / "q.onnx", heldout_frames=frames,
                      budget=-1.0, threads=2)
    names = [t["recipe"]["name"] for t in q.tried]
    assert names == ["per_tensor", "per_channel", "per_channel_mixed"]
    scores = {t["recipe"]["name"]: t["report"]["abs_rel_int8_vs_fp32"] for t in q.tried}
    assert q.recipe["name"] == min(scores, key=scores.get)
    assert q.budget_met is False and q.report["budget_metric"] == "abs_rel_int8_vs_fp32"
    meta = read_onnx_model_meta(q.path)
    assert meta.quantization["report"]["budget_met"] is False
    assert [t["name"] for t in meta.quantization["tried"]] == names
    mixed = next(t["recipe"] for t in q.tried if t["recipe"]["name"] == "per_channel_mixed")
    assert len(mixed["fp32_nodes"]) == len(q.tried[0]["recipe"]["fp32_nodes"]) + 2  # + first conv, disp conv


def test_grey_input_model_exports_its_luma_step_and_records_input_color(tmp_path):
    torch.manual_seed(0)
    kwargs = {"num_layers": 18, "width": 0.125, "input_color": "grey"}
    net = build_depth_net("monodepth2", **kwargs)
    meta = BundleMeta(depth_net="monodepth2", height=64, width=192, depth_kwargs=kwargs, scale_policy="metric")
    bundle = tmp_path / "grey.safetensors"
    save_bundle(bundle, net, meta)
    res = export_onnx(bundle, tmp_path / "out")
    assert read_onnx_model_meta(res.path).input_color == "grey"
    backend = OnnxRuntimeBackend(res.path, threads=1)
    rgb = np.random.default_rng(3).integers(0, 256, (64, 192, 3), dtype=np.uint8)
    grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    # The colour frame and its mono8 twin (OpenCV's luma, rounded to uint8) give the same depth.
    np.testing.assert_allclose(backend.infer(rgb), backend.infer(grey), rtol=2e-2)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A small Monodepth2-R18 bundle (width 1/8, 64x192): the command-line tests' fast export."""
    torch.manual_seed(0)
    kwargs = {"num_layers": 18, "width": 0.125}
    meta = BundleMeta(depth_net="monodepth2", height=64, width=192, depth_kwargs=kwargs, scale_policy="fixed",
                      scale=5.4)
    bundle = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    save_bundle(bundle, build_depth_net("monodepth2", **kwargs), meta)
    return bundle


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("monodepth-export: error: "), err
    return lines[0]


def test_cli_bad_model_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    rc = main(["--model", str(bad), "--format", "onnx", "--out", str(tmp_path / "out")])
    assert rc == 2 and "cannot read bundle" in _one_error_line(capsys)


def test_cli_calibration_data_without_frames_is_one_line_and_exit_2(tiny_bundle, tmp_path, capsys):
    kitti = tmp_path / "kitti"
    (kitti / "splits").mkdir(parents=True)
    (kitti / "splits" / "train_files.txt").write_text("2011_09_26/2011_09_26_drive_0001_sync 5 l\n")
    rc = main(["--model", str(tiny_bundle), "--format", "ort-int8", "--calib", str(kitti), "--out", str(tmp_path)])
    assert rc == 2 and "no image for 2011_09_26" in _one_error_line(capsys)


def test_cli_out_that_is_a_file_is_one_line_and_exit_2(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("a file, not a folder")
    rc = main(["--model", str(tiny_bundle), "--format", "onnx", "--out", str(out)])
    assert rc == 2 and str(out) in _one_error_line(capsys)


def test_cli_tensorrt_parse_failure_keeps_the_onnx_and_exits_1(tiny_bundle, tmp_path, capsys, monkeypatch):
    from monodepth_training.export import tensorrt_engine

    from monodepth_ros.backends.model_meta import ModelLoadError

    def cannot_parse(onnx_path, *_args, **_kwargs):  # what tensorrt_build raises when the parser fails
        raise ModelLoadError(f"TensorRT cannot parse {onnx_path}: [QuantizeLinear] zero point must be 0")

    monkeypatch.setattr(tensorrt_engine, "build_tensorrt", cannot_parse)
    rc = main(["--model", str(tiny_bundle), "--format", "tensorrt", "--out", str(tmp_path)])
    line = _one_error_line(capsys)
    assert rc == 1 and "TensorRT cannot parse" in line and "the ONNX above is complete" in line
    assert (tmp_path / "tiny.onnx").is_file()


def test_cli_int8_reports_the_tensorrt_qdq_check(tiny_bundle, tmp_path, capsys):
    rc = main(["--model", str(tiny_bundle), "--format", "ort-int8", "--calib", "synthetic:4", "--heldout-frames", "2",
               "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc in (0, 1)  # an untrained net may miss the accuracy budget; the model is written either way
    assert "scheme=symmetric" in out and "TensorRT Q/DQ rules: met" in out
    assert read_onnx_model_meta(tmp_path / "tiny.int8.onnx").quantization["tensorrt_qdq_violations"] == []
