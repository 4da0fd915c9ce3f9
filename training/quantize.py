"""ONNX Runtime INT8: static QDQ quantisation of an exported fp32 depth model, with an accuracy budget.

Recipes are tried from fastest to most conservative until the held-out accuracy stays within the budget on ONNX
Runtime and, when installed, OpenVINO (:func:`int8_budget_report`)
(abs_rel degradation <= 2 % relative by default):

1. ``per_tensor``        -- one scale per weight tensor (fastest on CPU);
2. ``per_channel``       -- one scale per output channel (ResNet weights vary a lot across channels);
3. ``per_channel_mixed`` -- per-channel, and the sensitive layers stay fp32: the first conv (it sees the raw
   image) and the disparity head (last conv before the sigmoid).

In every recipe the ops after the disparity Sigmoid (the affine map to [1/max_depth, 1/min_depth]) stay fp32: 8 bits
over a 1/depth range spanning 1000x would leave only a handful of levels for everything beyond ~10 m.

Quantisation is symmetric by default: activations and weights QInt8 with zero point 0, Conv biases left in float
(:data:`SYMMETRIC_OPTIONS`). That is what TensorRT's explicit quantisation accepts
(:func:`monodepth_training.export.qdq_rules.tensorrt_qdq_violations`), so one INT8 ONNX serves ONNX Runtime,
OpenVINO and TensorRT. ``symmetric=False`` gives ONNX Runtime's x86 default instead (QUInt8 activations with a
zero point, INT32 biases), which TensorRT cannot build. MinMax calibration runs once; later recipes reuse its
ranges from a cache. The kept recipe, its accuracy report and the TensorRT rule check go into the INT8 model's
metadata.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from monodepth_training.export.qdq_rules import tensorrt_qdq_violations

from monodepth_ros.backends.calibration import CalibrationBatches
from monodepth_ros.backends.model_meta import (
    META_KEY,
    OUTPUT_NAME,
    ModelMeta,
    read_onnx_model_meta,
    sidecar_path,
    write_sidecar,
)
from monodepth_ros.bundle import atomic_write_bytes

VALIDITY_REPORT_THRESHOLD = 0.5  # the node's default validity_threshold

# ONNX Runtime quantize_static extra options of the symmetric (TensorRT-buildable) scheme: zero points 0, and
# biases stay float because TensorRT's DequantizeLinear reads INT8 only (an INT32 bias DQ does not parse).
SYMMETRIC_OPTIONS: dict[str, Any] = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}

RECIPES: tuple[dict[str, Any], ...] = (
    {"name": "per_tensor", "per_channel": False, "keep_fp32": "tail"},
    {"name": "per_channel", "per_channel": True, "keep_fp32": "tail"},
    {"name": "per_channel_mixed", "per_channel": True, "keep_fp32": "sensitive"},
)


# ---------------------------------------------------------------------------------------------------------------
# Accuracy


def abs_rel(reference: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """mean(|pred - reference| / reference) over ``mask`` (default: finite, positive reference). Any shape."""
    reference = np.asarray(reference, np.float64)
    pred = np.asarray(pred, np.float64)
    if mask is None:
        mask = np.isfinite(reference) & (reference > 0) & np.isfinite(pred)
    if not mask.any():
        raise ValueError("abs_rel: no valid pixel")
    return float(np.mean(np.abs(pred[mask] - reference[mask]) / reference[mask]))


def int8_accuracy_report(
    fp32_onnx: str | os.PathLike,
    int8_onnx: str | os.PathLike,
    frames: list[np.ndarray],
    gts: list[np.ndarray] | None = None,
    *,
    threads: int | None = 2,
    budget: float = 0.02,
    backend: str = "onnxruntime",
) -> dict[str, Any]:
    """Compare an INT8 model with its fp32 source on held-out frames, both run by ``backend`` (``onnxruntime``
    or ``openvino``: the same QDQ file serves both).

    ``frames``: RGB uint8 (h, w, 3); ``gts``: matching GT depth maps in metres (0 = invalid) or None.
    Returns a dict with ``n_frames``, ``abs_rel_int8_vs_fp32`` (depth of INT8 against depth of fp32, mean over
    frames), ``max_abs_disp_diff``, for models with a validity output ``validity_agreement`` (share of pixels
    on the same side of the node's default threshold in both); with GT also ``abs_rel_fp32_gt``,
    ``abs_rel_int8_gt`` (KITTI protocol with median scaling, :func:`monodepth_ros.evaluation.metrics.evaluate_depth`,
    no crop) and ``degradation_rel`` = (int8 - fp32) / fp32. ``budget_metric`` names what is compared with
    ``budget``: ``degradation_rel`` when GT is there, else the stricter proxy ``abs_rel_int8_vs_fp32``;
    ``budget_met`` is the verdict.
    """
    from monodepth_ros.pipeline import invalid_pixels

    if not frames:
        raise ValueError("int8_accuracy_report needs at least one held-out frame")
    if gts is not None and len(gts) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(gts)} GT maps")
    b32, b8 = _cpu_backend(backend, fp32_onnx, threads), _cpu_backend(backend, int8_onnx, threads)
    if (b32.info.height, b32.info.width) != (b8.info.height, b8.info.width):
        raise ValueError("fp32 and INT8 models have different input sizes")
    rel, max_disp = [], 0.0
    d32s, d8s = [], []
    agree: list[float] = []
    for i, rgb in enumerate(frames):
        (disp32, valid32), (disp8, valid8) = b32.infer_outputs(rgb), b8.infer_outputs(rgb)
        if valid32 is not None and valid8 is not None:
            t = VALIDITY_REPORT_THRESHOLD
            agree.append(float(np.mean(invalid_pixels(valid32, t) == invalid_pixels(valid8, t))))
        max_disp = max(max_disp, float(np.max(np.abs(disp32 - disp8))))
        rel.append(abs_rel(1.0 / disp32, 1.0 / disp8))
        if gts is not None:
            size = gts[i].shape
            d32s.append(b32.infer(rgb, out_size=size))
            d8s.append(b8.infer(rgb, out_size=size))
    report: dict[str, Any] = {
        "n_frames": len(frames),
        "abs_rel_int8_vs_fp32": float(np.mean(rel)),
        "max_abs_disp_diff": max_disp,
        "budget": budget,
        "backend": backend,
    }
    if agree:  # reported, not budgeted: the depth budget decides the recipe
        report["validity_agreement"] = float(np.mean(agree))
    if gts is not None:
        from monodepth_ros.evaluation.metrics import evaluate_depth

        m32 = evaluate_depth(gts, d32s, median_scaling=True, crop=None).metrics
        m8 = evaluate_depth(gts, d8s, median_scaling=True, crop=None).metrics
        report.update(
            abs_rel_fp32_gt=float(m32["abs_rel"]),
            abs_rel_int8_gt=float(m8["abs_rel"]),
            degradation_rel=float((m8["abs_rel"] - m32["abs_rel"]) / m32["abs_rel"]),
            budget_metric="degradation_rel",
        )
    else:
        report["budget_metric"] = "abs_rel_int8_vs_fp32"
    report["budget_met"] = bool(report[report["budget_metric"]] <= budget)
    return report


def int8_budget_report(
    fp32_onnx: str | os.PathLike,
    int8_onnx: str | os.PathLike,
    frames: list[np.ndarray],
    gts: list[np.ndarray] | None,
    *,
    threads: int | None = 2,
    budget: float = 0.02,
) -> dict[str, Any]:
    """:func:`int8_accuracy_report` on every CPU runtime that will run the one INT8 file: ONNX Runtime always, and
    OpenVINO when it is installed (``report["openvino"]``; else the reason it was not checked). OpenVINO's INT8
    kernels round differently: on the default model its depth moved 3-5 % from fp32 where ONNX Runtime's moved
    ~2 %, and whether that kept the GT budget depended on the calibration frames (measured 2026-11-30). So
    ``budget_met`` needs both runtimes, and ``score`` (what recipes are ranked by) is the worse of the two."""
    from monodepth_ros.backends.openvino_backend import openvino_unavailable_reason

    report = int8_accuracy_report(fp32_onnx, int8_onnx, frames, gts, threads=threads, budget=budget)
    report["score"] = report[report["budget_metric"]]
    reason = openvino_unavailable_reason()
    if reason is not None:
        report["openvino"] = f"not checked: {reason}"
        return report
    ov = int8_accuracy_report(fp32_onnx, int8_onnx, frames, gts, threads=threads, budget=budget,
                              backend="openvino")
    report["openvino"] = ov
    report["budget_met"] = bool(report["budget_met"] and ov["budget_met"])
    report["score"] = max(report["score"], ov[ov["budget_metric"]])
    return report


def _cpu_backend(kind: str, path: str | os.PathLike, threads: int | None):
    if kind == "onnxruntime":
        from monodepth_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, threads=threads)
    if kind == "openvino":
        from monodepth_ros.backends.openvino_backend import OpenVINOBackend

        return OpenVINOBackend(path, threads=threads)
    raise ValueError(f"INT8 accuracy report backend must be onnxruntime or openvino, got {kind!r}")


# ---------------------------------------------------------------------------------------------------------------
# Graph helpers


def fp32_node_names(model, which: str) -> list[str]:
    """Names of nodes to keep in fp32: ``tail`` = the disparity Sigmoid (the last Sigmoid on the way to the
    graph output ``disp``) and everything after it up to that output; ``sensitive`` = tail plus the first Conv
    and the Conv feeding that Sigmoid. A validity output (``valid``) is quantised: 8 bits resolve a probability
    compared with a threshold well. ``model``: onnx.ModelProto."""
    nodes = list(model.graph.node)
    producers = {o: n for n in nodes for o in n.output}
    keep: list[str] = []
    sigmoid = None
    path: list = []  # nodes from the disp output back to the disparity Sigmoid
    frontier = [OUTPUT_NAME]
    seen: set[str] = set()
    while frontier and sigmoid is None:  # breadth-first back from the output: the nearest Sigmoid
        nxt = []
        for tensor in frontier:
            n = producers.get(tensor)
            if n is None or n.name in seen:
                continue
            seen.add(n.name)
            path.append(n)
            if n.op_type == "Sigmoid":
                sigmoid = n
                break
            nxt.extend(n.input)
        frontier = nxt
    if sigmoid is not None:
        keep = [n.name for n in reversed(path)]
    if which == "sensitive":
        convs = [n for n in nodes if n.op_type == "Conv"]
        if convs:
            keep.append(convs[0].name)
        if sigmoid is not None:
            src = producers.get(sigmoid.input[0])
            if src is not None and src.op_type == "Conv":
                keep.append(src.name)
    return keep


class _FrameReader:
    """ONNX Runtime CalibrationDataReader over :class:`CalibrationBatches` (with an optional progress callback)."""

    def __init__(self, batches: CalibrationBatches, input_name: str, progress=None):
        self.batches, self.input_name, self.progress = batches, input_name, progress

    def get_next(self):
        x = self.batches.next_batch()
        if x is None:
            return None
        if self.progress is not None:
            self.progress()
        return {self.input_name: x}

    def rewind(self):  # interface method used by some ORT calibrators
        self.batches = CalibrationBatches(self.batches._frames, self.batches.height, self.batches.width)


@dataclass
class QuantResult:
    path: Path
    recipe: dict[str, Any]
    report: dict[str, Any]
    budget_met: bool
    tried: list[dict[str, Any]] = field(default_factory=list)
    tensorrt_violations: list[str] = field(default_factory=list)  # :func:`tensorrt_qdq_violations` of the model

    def summary_lines(self) -> list[str]:
        out = []
        for t in self.tried:
            r = t["report"]
            if not r:
                out.append(f"{t['recipe']['name']:<18} not evaluated (no held-out frames)")
                continue
            gt = (f", abs_rel vs GT fp32 {r['abs_rel_fp32_gt']:.4f} -> int8 {r['abs_rel_int8_gt']:.4f} "
                  f"({r['degradation_rel']:+.2%})") if "degradation_rel" in r else ""
            ov = r.get("openvino")
            if isinstance(ov, dict):
                gt += (f"; OpenVINO: vs fp32 {ov['abs_rel_int8_vs_fp32']:.4f}"
                       + (f", vs GT {ov['degradation_rel']:+.2%}" if "degradation_rel" in ov else ""))
            out.append(f"{t['recipe']['name']:<18} abs_rel int8 vs fp32 depth {r['abs_rel_int8_vs_fp32']:.4f}{gt} "
                       f"-> {'within' if r['budget_met'] else 'over'} budget")
        return out


def quantize_int8(
    onnx_path: str | os.PathLike,
    calib_frames: list[np.ndarray],
    out_path: str | os.PathLike | None = None,
    *,
    heldout_frames: list[np.ndarray] | None = None,
    heldout_gts: list[np.ndarray] | None = None,
    budget: float = 0.02,
    recipes: tuple[dict[str, Any], ...] = RECIPES,
    threads: int | None = 2,
    symmetric: bool = True,
    progress: bool = False,
) -> QuantResult:
    """Quantise ``onnx_path`` (fp32 export) to ``out_path`` (default ``<stem>.int8.onnx``) with static QDQ.

    ``calib_frames``: RGB uint8 frames from the training data. Recipes are tried in order until
    :func:`int8_accuracy_report` on ``heldout_frames`` (and ``heldout_gts`` if given) meets ``budget``; if none
    does, the best one is kept and ``budget_met`` is False. Without held-out frames the first recipe is kept
    unevaluated. ``symmetric``: the TensorRT-buildable scheme (module docstring); False: ONNX Runtime's asymmetric
    x86 default. Returns a QuantResult; the INT8 model's metadata records recipe, report and the TensorRT Q/DQ
    rule check (``tensorrt_qdq_violations``, [] when TensorRT can build the model).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_path = Path(onnx_path)
    meta = read_onnx_model_meta(onnx_path)
    if meta.precision != "fp32":
        raise ValueError(f"{onnx_path} is already {meta.precision}; quantise the fp32 export")
    if not calib_frames:
        raise ValueError("quantize_int8 needs calibration frames")
    out_path = Path(out_path) if out_path else onnx_path.with_name(f"{onnx_path.stem}.int8.onnx")
    act_type = QuantType.QInt8 if symmetric else QuantType.QUInt8
    extra_options = dict(SYMMETRIC_OPTIONS) if symmetric else {}

    tried: list[dict[str, Any]] = []
    best: tuple[float, bytes, dict, dict] | None = None
    with tempfile.TemporaryDirectory(prefix="mdr-quant-") as tmp:
        tmp = Path(tmp)
        pre = tmp / "pre.onnx"
        # Fuses and folds (Conv+BN, constants) first, so each Conv gets one QDQ pair (ORT's advice).
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        cache = tmp / "calib_ranges.json"
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(calib_frames), desc="INT8 calibration", unit="frame", dynamic_ncols=True)
        tick = bar.update if bar is not None else None
        for recipe in recipes:
            reader = None
            if not cache.is_file():  # calibrate once; later recipes read the ranges from the cache
                reader = _FrameReader(CalibrationBatches(calib_frames, meta.height, meta.width), meta.input, tick)
            q_out = tmp / f"{recipe['name']}.onnx"
            exclude = fp32_node_names(pre_model, recipe["keep_fp32"])
            quantize_static(
                str(pre), str(q_out), reader, quant_format=QuantFormat.QDQ, per_channel=recipe["per_channel"],
                activation_type=act_type, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
                extra_options=extra_options,
            )
            if bar is not None:
                bar.close()
                bar = None
            full = {**recipe, "fp32_nodes": exclude, "activation_type": act_type.name, "weight_type": "QInt8",
                    "symmetric": symmetric, "bias": "float" if symmetric else "int32", "calibrate_method": "MinMax",
                    "format": "QDQ", "calib_frames": len(calib_frames)}
            q_model = onnx.load(str(q_out))
            q_bytes = _with_meta(q_model, meta, full, None)
            if not heldout_frames:
                best = (0.0, q_bytes, full, {})
                tried.append({"recipe": full, "report": {}})
                break
            q_path_tmp = tmp / f"{recipe['name']}.meta.onnx"
            q_path_tmp.write_bytes(q_bytes)
            report = int8_budget_report(onnx_path, q_path_tmp, heldout_frames, heldout_gts, threads=threads,
                                        budget=budget)
            tried.append({"recipe": full, "report": report})
            score = report["score"]
            if best is None or score < best[0]:
                best = (score, q_bytes, full, report)
            if report["budget_met"]:
                break
        assert best is not None
        _, _, recipe, report = best
        kept = onnx.load_from_string(best[1])
        violations = tensorrt_qdq_violations(kept)
        final = _with_meta(kept, meta, recipe, report or None,
                           [{"name": t["recipe"]["name"], **t["report"]} for t in tried], violations)
    sidecar_path(out_path).unlink(missing_ok=True)  # describes the model being replaced
    atomic_write_bytes(out_path, final)
    q_meta = read_onnx_model_meta(out_path)
    write_sidecar(out_path, q_meta)
    met = bool(report.get("budget_met", False)) if report else False
    return QuantResult(path=out_path, recipe=recipe, report=report, budget_met=met, tried=tried,
                       tensorrt_violations=violations)


def _with_meta(model, meta: ModelMeta, recipe: dict, report: dict | None, tried: list | None = None,
               tensorrt_violations: list[str] | None = None) -> bytes:
    import onnx

    quantization = {"recipe": recipe, "report": report, "tried": tried}
    if tensorrt_violations is not None:
        quantization["tensorrt_qdq_violations"] = tensorrt_violations
    q_meta = replace(meta, precision="int8", quantization=quantization)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {META_KEY: q_meta.to_json()})
    return model.SerializeToString()
