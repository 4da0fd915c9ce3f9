"""Model bundle -> exported models: ONNX export (:mod:`.onnx_export`), its parity check with PyTorch
(:mod:`.parity`), calibration and held-out frames (:mod:`.calibration`), TensorRT's rules for a QDQ INT8 model
(:mod:`.qdq_rules`), the TensorRT engine build (:mod:`.tensorrt_engine`) and the ``monodepth-export`` command line
(:mod:`.cli`)."""

from monodepth_training.export.calibration import BagTopics, load_frames, parse_synthetic_spec, synthetic_frames
from monodepth_training.export.onnx_export import (
    DEFAULT_OPSET,
    FORBIDDEN_OPS,
    MIN_OPSET,
    TRT_SAFE_OPS,
    ExportError,
    ExportResult,
    check_graph,
    export_module_onnx,
    export_onnx,
    load_disparity_head,
)
from monodepth_training.export.parity import PARITY_ATOL, parity_inputs, torch_vs_onnx_max_diff
from monodepth_training.export.qdq_rules import tensorrt_qdq_violations

__all__ = [
    "DEFAULT_OPSET",
    "FORBIDDEN_OPS",
    "MIN_OPSET",
    "PARITY_ATOL",
    "TRT_SAFE_OPS",
    "BagTopics",
    "ExportError",
    "ExportResult",
    "check_graph",
    "export_module_onnx",
    "export_onnx",
    "load_disparity_head",
    "load_frames",
    "parity_inputs",
    "parse_synthetic_spec",
    "synthetic_frames",
    "tensorrt_qdq_violations",
    "torch_vs_onnx_max_diff",
]
