"""Model bundle -> ONNX (fp32), checked against PyTorch.

The ONNX contract (see :mod:`monodepth_ros.backends.model_meta`): input ``rgb`` (1, 3, H, W) float32 RGB in
[0, 1], output ``disp`` (1, 1, H, W) scaled disparity, ``depth = scale / disp``, and ``valid`` (1, 1, H, W) for a
network with a validity head (probability of a surface, not sky). Static shapes, no GridSample,
only operators TensorRT's ONNX parser supports. Opset 18: the torch.export-based exporter of torch 2.13 emits
18 and cannot convert ``Pad`` down to 17 (the issue asks for >= 17; TensorRT 10 parses up to opset 20+).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from monodepth_training.export.parity import PARITY_ATOL, parity_inputs, torch_vs_onnx_max_diff

from monodepth_ros.backends.model_meta import (
    INPUT_NAME,
    META_KEY,
    OUTPUT_NAME,
    VALIDITY_OUTPUT_NAME,
    ModelMeta,
    model_meta_from_bundle,
    sidecar_path,
    write_sidecar,
)
from monodepth_ros.bundle import BundleMeta, atomic_write_bytes, file_sha256, read_meta

DEFAULT_OPSET = 18
MIN_OPSET = 17

# Operators the exported depth nets may contain: all are supported by TensorRT 10's ONNX parser (with static
# shapes) and by ONNX Runtime. Anything else fails the export with its name, rather than failing later on a robot.
TRT_SAFE_OPS = frozenset(
    """Add Sub Mul Div Pow Sqrt Exp Log Neg Abs Min Max Clip Relu LeakyRelu Elu Selu Sigmoid Tanh Softplus Erf
    HardSigmoid HardSwish PRelu Conv ConvTranspose BatchNormalization InstanceNormalization MaxPool AveragePool
    GlobalAveragePool GlobalMaxPool Pad Resize Upsample Concat Split Slice Reshape Flatten Transpose Squeeze
    Unsqueeze Identity Constant Gemm MatMul ReduceMean ReduceSum ReduceMax Softmax DepthToSpace SpaceToDepth Cast
    Tile Expand Where Equal Less Greater Not QuantizeLinear DequantizeLinear""".split()
)
FORBIDDEN_OPS = {"GridSample": "grid_sample has no place in the depth path (and is slow or unsupported in TensorRT)"}


class ExportError(RuntimeError):
    """The export produced a graph that breaks the contract (ops, shapes, parity)."""


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("torch", "onnx", "onnxruntime", "monodepth_ros"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for lg, _ in saved:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def output_names(with_validity: bool) -> list[str]:
    """The graph's outputs, in order: ``disp`` [, ``valid``]."""
    return [OUTPUT_NAME, VALIDITY_OUTPUT_NAME] if with_validity else [OUTPUT_NAME]


def check_graph(model, expect_hw: tuple[int, int], with_validity: bool = False) -> None:
    """Raise ExportError unless the graph has only TensorRT-safe ops, fully static shapes and the agreed I/O
    (outputs :func:`output_names`, each (1, 1, H, W)).

    ``model``: onnx.ModelProto (after shape inference, so value_info covers intermediate tensors).
    """
    H, W = expect_hw
    bad = {}
    for node in model.graph.node:
        if node.op_type in FORBIDDEN_OPS:
            raise ExportError(f"graph contains {node.op_type} ({node.name}): {FORBIDDEN_OPS[node.op_type]}")
        if node.domain not in ("", "ai.onnx") or node.op_type not in TRT_SAFE_OPS:
            bad.setdefault(f"{node.domain + '::' if node.domain else ''}{node.op_type}", node.name)
        if node.op_type == "Pad":
            mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
            if mode == "wrap":
                raise ExportError(f"Pad mode 'wrap' ({node.name}) is not supported by TensorRT")
    if bad:
        raise ExportError(f"graph contains operators outside the TensorRT-safe set: {bad}")

    def dims(vi):
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]

    ins = [(i.name, dims(i)) for i in model.graph.input]
    outs = [(o.name, dims(o)) for o in model.graph.output]
    if ins != [(INPUT_NAME, [1, 3, H, W])]:
        raise ExportError(f"graph inputs {ins}, expected [({INPUT_NAME!r}, [1, 3, {H}, {W}])]")
    want = [(name, [1, 1, H, W]) for name in output_names(with_validity)]
    if outs != want:
        raise ExportError(f"graph outputs {outs}, expected {want}")
    dynamic = [vi.name for vi in model.graph.value_info if any(not isinstance(d, int) or d <= 0 for d in dims(vi))]
    if dynamic:
        raise ExportError(f"tensors with dynamic or unknown shapes in the graph: {dynamic[:10]}")


def export_module_onnx(
    head,
    bundle_meta: BundleMeta,
    out_path: str | os.PathLike,
    source_sha256: str,
    opset: int = DEFAULT_OPSET,
) -> tuple[Path, ModelMeta]:
    """Export an :class:`~monodepth_training.networks.export_wrapper.ExportHead` ``rgb01 (1, 3, H, W) -> disp
    (1, 1, H, W)`` [``, valid (1, 1, H, W)``] to ``out_path`` with metadata.

    Runs onnx.checker (full_check) and strict shape inference, checks ops/shapes, embeds the metadata and writes
    the model and its sidecar atomically.
    """
    import onnx
    import torch

    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    H, W = bundle_meta.height, bundle_meta.width
    head = head.eval()
    with_validity = bool(getattr(head, "with_validity", False))
    example = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0))
    # The exporter prints progress lines on stdout and its graph passes log at INFO: keep the CLI readable.
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("onnx_ir", "onnxscript"):
        program = torch.onnx.export(
            head, (example,), None, input_names=[INPUT_NAME], output_names=output_names(with_validity),
            opset_version=opset, dynamo=True, external_data=False, verbose=False, optimize=True,
        )
    model = program.model_proto
    real_opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if real_opset < MIN_OPSET:
        raise ExportError(f"exported opset {real_opset} < {MIN_OPSET}")

    meta = model_meta_from_bundle(bundle_meta, source_sha256, opset=int(real_opset), producer=_versions())
    if (meta.validity_output is not None) != with_validity:
        raise ExportError(f"the bundle's depth_kwargs say validity_head={meta.validity_output is not None} but the "
                          f"network {'has' if with_validity else 'has no'} validity head")
    meta.validate("export metadata")
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {META_KEY: meta.to_json()})
    model.producer_name = "monodepth_ros"

    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    check_graph(inferred, (H, W), with_validity)

    out_path = Path(out_path)
    atomic_write_bytes(out_path, model.SerializeToString())
    write_sidecar(out_path, meta)
    return out_path, meta


def load_disparity_head(bundle_path: str | os.PathLike):
    """Bundle -> (ExportHead in eval mode, BundleMeta). Torch is only needed here and below."""
    from monodepth_training.bundle_io import load_bundle
    from monodepth_training.networks.export_wrapper import ExportHead

    depth_net, _pose, meta = load_bundle(bundle_path, map_location="cpu")
    return ExportHead(depth_net, meta.min_depth, meta.max_depth).eval(), meta


@dataclass
class ExportResult:
    path: Path
    meta: ModelMeta
    parity_max_abs_diff: float | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def export_onnx(
    bundle: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    name: str | None = None,
    atol: float = PARITY_ATOL,
    n_random: int = 2,
    n_synthetic: int = 2,
) -> ExportResult:
    """Export a bundle to ``<out_dir>/<name or bundle stem>.onnx`` (+ ``.onnx.json``) and check parity with
    PyTorch on random and synthetic frames; raises ExportError when the max abs disparity diff exceeds ``atol``.
    """
    bundle = Path(bundle)
    bundle_meta = read_meta(bundle)  # validates without torch, with a clear BundleError
    head, _ = load_disparity_head(bundle)
    out_path = Path(out_dir) / f"{name or bundle.stem}.onnx"
    t0 = time.perf_counter()
    out_path, meta = export_module_onnx(head, bundle_meta, out_path, file_sha256(bundle), opset)
    export_s = time.perf_counter() - t0
    diff = torch_vs_onnx_max_diff(head, out_path, parity_inputs(meta.height, meta.width, n_random, n_synthetic))
    if not diff < atol:  # never leave a model behind that does not compute what the bundle computes
        out_path.unlink(missing_ok=True)
        sidecar_path(out_path).unlink(missing_ok=True)
        raise ExportError(f"ONNX Runtime disagrees with PyTorch: max |d disp| (or |d valid|) = {diff:.3g} >= {atol:g}; "
                          "removed")
    return ExportResult(path=out_path, meta=meta, parity_max_abs_diff=diff, seconds=export_s)
