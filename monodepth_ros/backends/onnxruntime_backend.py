"""ONNX Runtime backend: runs an exported ``model.onnx`` (fp32 or INT8 QDQ) on CPU or CUDA."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from monodepth_ros.backends.base import DepthBackend
from monodepth_ros.backends.model_meta import ModelLoadError, check_model_file, meta_from_session


class OnnxRuntimeBackend(DepthBackend):
    """Depth from an exported ONNX model through ONNX Runtime.

    ``threads``: intra-op threads (None = ORT's default, one per core). ``providers``: ORT execution providers in
    priority order (None = CPU only). The model's embedded metadata is validated against its graph at load.
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, threads: int | None = None, providers: list | None = None):
        import onnxruntime as ort

        path = check_model_file(onnx_path, (".onnx",))
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1  # one image at a time: parallelism is inside the operators
        if threads is not None:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        providers = list(providers) if providers else ["CPUExecutionProvider"]
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # InvalidProtobuf / Fail / InvalidGraph / NoSuchFile from the C++ side
            raise ModelLoadError(f"cannot load ONNX model {path} (corrupt or truncated?): {e}") from e
        self.meta = meta_from_session(self._sess, path)
        super().__init__(self.meta.to_model_info(name=Path(path).name))
        self.path = path
        self.threads = threads
        self.providers = self._sess.get_providers()
        self.precision = self.meta.precision
        self._outputs = list(self.meta.read_outputs)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outs = self._sess.run(self._outputs, {self.meta.input: x})  # one run: disp, then valid if the model has it
        return outs[0], outs[1] if len(outs) > 1 else None

    def __repr__(self) -> str:
        return (
            f"OnnxRuntimeBackend({self.path.name}, {self.precision}, {self.info.width}x{self.info.height}, "
            f"providers={self.providers}, threads={self.threads})"
        )
