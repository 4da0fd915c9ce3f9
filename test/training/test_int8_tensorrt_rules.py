"""One INT8 ONNX for ONNX Runtime, OpenVINO and TensorRT: the default quantisation is symmetric (INT8, zero point 0,
float biases), :func:`tensorrt_qdq_violations` checks TensorRT's Q/DQ rules without TensorRT, and the symmetric
model of the shipped (trained) default network stays within the INT8 accuracy budget."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from monodepth_training.export import load_frames, tensorrt_qdq_violations
from monodepth_training.export.qdq_rules import qdq_summary
from monodepth_training.quantize import RECIPES, quantize_int8
from onnx import TensorProto, helper, numpy_helper

from monodepth_ros.backends.model_meta import read_onnx_model_meta

SHIPPED_FP32 = Path(__file__).resolve().parents[2] / "monodepth_ros" / "models" / "default.onnx"


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    """A copy of the shipped fp32 default model (trained, 320x96, with a validity output) and its sidecar."""
    d = tmp_path_factory.mktemp("int8_rules")
    for name in (SHIPPED_FP32.name, SHIPPED_FP32.name + ".json"):
        shutil.copy(SHIPPED_FP32.parent / name, d / name)
    return d / SHIPPED_FP32.name


@pytest.fixture(scope="module")
def frames(fp32):
    meta = read_onnx_model_meta(fp32)
    calib = load_frames("synthetic:24", 24, meta.height, meta.width)
    held = load_frames("synthetic", 12, meta.height, meta.width, heldout=True)
    return calib, [f for f, _ in held], [g for _, g in held]


@pytest.mark.parametrize("recipe", RECIPES, ids=[r["name"] for r in RECIPES])
def test_default_int8_recipes_meet_tensorrt_qdq_rules(fp32, frames, tmp_path, recipe):
    q = quantize_int8(fp32, frames[0][:4], out_path=tmp_path / "q.int8.onnx", recipes=(recipe,), threads=2)
    model = onnx.load(str(q.path))
    assert tensorrt_qdq_violations(model) == [] and q.tensorrt_violations == []
    # really quantised, symmetrically: every zero point INT8 and 0, no INT32 bias
    consts = {t.name: t for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 20
    zps = [consts[n.input[2]] for n in qdq if len(n.input) > 2]
    assert zps and {z.data_type for z in zps} == {TensorProto.INT8}
    assert all(not numpy_helper.to_array(z).any() for z in zps)
    if recipe["per_channel"]:  # Conv weights per output channel
        axes = [next((a.i for a in n.attribute if a.name == "axis"), 1) for n in qdq
                if n.op_type == "DequantizeLinear" and numpy_helper.to_array(consts[n.input[1]]).size > 1]
        assert axes and set(axes) == {0}
    # the check is recorded with the recipe in the model's metadata
    quant = read_onnx_model_meta(q.path).quantization
    assert quant["tensorrt_qdq_violations"] == []
    assert quant["recipe"]["symmetric"] is True and quant["recipe"]["activation_type"] == "QInt8"
    assert quant["recipe"]["bias"] == "float"


def test_asymmetric_int8_is_flagged_uint8_nonzero_zero_point_and_int32_bias(fp32, frames, tmp_path):
    q = quantize_int8(fp32, frames[0][:4], out_path=tmp_path / "asym.int8.onnx", recipes=RECIPES[:1], threads=2,
                      symmetric=False)
    found = tensorrt_qdq_violations(onnx.load(str(q.path)))
    assert found == q.tensorrt_violations == read_onnx_model_meta(q.path).quantization["tensorrt_qdq_violations"]
    assert any("UINT8 quantisation inside the graph" in v for v in found)
    assert any("is not 0 (asymmetric)" in v for v in found)
    assert any("INT32" in v and "QuantizeBias=False" in v for v in found)
    assert qdq_summary(found).startswith(f"{len(found)} violations: ")


def _hand_made(zp_type=TensorProto.INT8, zp=0, act_scale=0.1, w_axis=0, w_scales=4, bias=False) -> onnx.ModelProto:
    """x (1, 4, 8, 8) -> Q/DQ -> Conv(4 -> 4, 3x3) with an INT8 weight DQ (per channel along ``w_axis``) -> y."""
    np_zp = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8}[zp_type]
    w = np.arange(4 * 4 * 9, dtype=np.int8).reshape(4, 4, 3, 3) - 72
    inits = [
        numpy_helper.from_array(np.array(act_scale, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(zp, np_zp), "x_zp"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.full(w_scales, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(w_scales, np.int8), "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="q_x"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w", axis=w_axis),
    ]
    conv_in = ["x_dq", "w"]
    if bias:
        inits += [numpy_helper.from_array(np.arange(4, dtype=np.int32), "b_q"),
                  numpy_helper.from_array(np.array(0.001, np.float32), "b_scale")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_scale"], ["b"], name="dq_b"))
        conv_in.append("b")
    nodes.append(helper.make_node("Conv", conv_in, ["y"], name="conv", pads=[1, 1, 1, 1]))
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_checker_accepts_a_symmetric_int8_conv():
    assert tensorrt_qdq_violations(_hand_made()) == []


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"zp_type": TensorProto.UINT8, "zp": 128}, ["q_x", "UINT8 quantisation inside the graph"]),
        ({"zp": 3}, ["q_x", "is not 0 (asymmetric)"]),
        ({"act_scale": -0.1}, ["dq_x", "not positive and finite"]),
        ({"act_scale": float("inf")}, ["q_x", "not positive and finite"]),
        ({"w_axis": 1}, ["dq_w", "TensorRT needs its output channels (axis 0)"]),
        ({"w_axis": 4}, ["dq_w", "outside a rank-4 tensor"]),
        ({"w_scales": 3}, ["dq_w", "3 per-channel scales for 4 channels"]),
        ({"bias": True}, ["dq_b", "INT32"]),
    ],
    ids=["uint8", "nonzero-zero-point", "negative-scale", "infinite-scale", "conv-weight-axis-1", "axis-out-of-rank",
         "scale-count", "int32-bias"],
)
def test_checker_flags_each_tensorrt_qdq_rule(kwargs, expected):
    model = _hand_made(**kwargs)
    before = model.SerializeToString()
    found = tensorrt_qdq_violations(model)
    node, text = expected
    assert any(node in v and text in v for v in found), found
    assert model.SerializeToString() == before  # pure


def test_symmetric_int8_of_the_default_model_is_within_budget_on_onnxruntime(fp32, frames, tmp_path):
    calib, held, gts = frames
    q = quantize_int8(fp32, calib, out_path=tmp_path / "sym.int8.onnx", heldout_frames=held, heldout_gts=gts,
                      threads=2)
    r = q.report
    assert r["backend"] == "onnxruntime" and r["budget_metric"] == "degradation_rel"
    # Measured 2026-11-30 (24 calibration / 12 held-out synthetic frames): per_tensor +1.0 % abs_rel vs GT
    # (the asymmetric model: +1.5 %). Whether OpenVINO also meets it is test_int8_budget_is_judged_on_openvino_too's.
    assert r["degradation_rel"] <= 0.02, q.summary_lines()
    assert r["abs_rel_int8_vs_fp32"] < 0.03 and r["validity_agreement"] > 0.98
    assert q.tensorrt_violations == []


def test_openvino_computes_the_symmetric_model_as_written_without_its_int8_kernels(fp32, frames, tmp_path):
    """The symmetric QDQ file means the same to OpenVINO as to ONNX Runtime: run as written (OpenVINO's
    low-precision transformations off, Q/DQ evaluated in float) its depth is ONNX Runtime's INT8 depth."""
    ov = pytest.importorskip("openvino")
    from monodepth_ros.backends.base import preprocess
    from monodepth_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    calib, held, _ = frames
    q = quantize_int8(fp32, calib, out_path=tmp_path / "sym.int8.onnx", recipes=RECIPES[:1], threads=2)
    meta = read_onnx_model_meta(q.path)
    compiled = ov.Core().compile_model(str(q.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                               "INFERENCE_NUM_THREADS": 2, "LP_TRANSFORMS_MODE": False})
    ort8 = OnnxRuntimeBackend(q.path, threads=2)
    rel = []
    for rgb in held[:4]:
        d_ov = compiled({meta.input: preprocess(rgb, meta.height, meta.width)})[compiled.output(meta.output)][0, 0]
        d_ort = ort8.infer_disp(rgb)
        rel.append(float(np.mean(np.abs(d_ov - d_ort) / d_ort)))
    # 0.6-0.8 % measured (integer requantisation in ONNX Runtime vs float Q/DQ rounding); OpenVINO's INT8 kernels
    # differ by 3-5 % (the xfail below)
    assert max(rel) < 0.01, rel


def test_int8_budget_is_judged_on_openvino_too(fp32, frames, tmp_path):
    """One INT8 file serves ONNX Runtime and OpenVINO, so the export's budget (abs_rel against GT, median-scaled,
    <= 2 % worse than fp32) is checked on both, and a recipe is kept only when both meet it. OpenVINO's signed-INT8
    CPU kernels move depth 3-5 % from fp32 (ONNX Runtime ~2 %): with this test's 24 calibration frames no recipe
    met it on OpenVINO (+2.7 % at best, measured 2026-11-30), which the result must say rather than hide. The
    shipped model (64 frames) meets it on both: test_openvino_backend.py."""
    pytest.importorskip("openvino")
    calib, held, gts = frames
    q = quantize_int8(fp32, calib, out_path=tmp_path / "sym.int8.onnx", heldout_frames=held, heldout_gts=gts,
                      threads=2)
    assert [t["recipe"]["name"] for t in q.tried][0] == RECIPES[0]["name"]
    for t in q.tried:
        r, ov = t["report"], t["report"]["openvino"]
        assert isinstance(ov, dict) and ov["backend"] == "openvino" and ov["budget_metric"] == "degradation_rel"
        ort_met = r["degradation_rel"] <= r["budget"]
        assert r["budget_met"] == (ort_met and ov["budget_met"])
        assert r["score"] == max(r["degradation_rel"], ov["degradation_rel"])
        assert ov["abs_rel_int8_vs_fp32"] < 0.08  # loose: catches a broken graph, not kernel rounding
    assert q.budget_met == any(t["report"]["budget_met"] for t in q.tried)
    assert any("OpenVINO" in line for line in q.summary_lines())
