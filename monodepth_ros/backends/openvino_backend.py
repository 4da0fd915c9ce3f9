"""OpenVINO backend: runs the same exported ``model.onnx`` (fp32 or INT8 QDQ) as ONNX Runtime, on an Intel/x86 CPU.

OpenVINO reads the ONNX file directly (no conversion step, no extra file on the robot). It is an optional extra
(``requirements/openvino.txt``, like TensorRT): ``openvino`` is imported lazily, so importing this module costs
nothing on a robot without it, and :func:`openvino_unavailable_reason` says why it cannot be used.

Settings: ``PERFORMANCE_HINT`` LATENCY (one stream, one image at a time, as the node runs), ``threads`` ->
``INFERENCE_NUM_THREADS``, and ``INFERENCE_PRECISION_HINT`` f32: on CPUs with AVX512-BF16/AMX OpenVINO would
otherwise run an fp32 model in bfloat16, which changes its depth by far more than ONNX Runtime parity allows.
An INT8 QDQ model still runs its quantised layers in INT8.

The metadata is read (and checked against the graph and the sidecar) by the runtime's one ONNX metadata reader,
:func:`monodepth_ros.backends.model_meta.read_onnx_model_meta`; the graph OpenVINO loaded is then checked
against it too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from monodepth_ros.backends.base import DepthBackend
from monodepth_ros.backends.model_meta import (
    ModelLoadError,
    check_io_against_meta,
    check_model_file,
    read_onnx_model_meta,
)

DEFAULT_DEVICE = "CPU"


def openvino_unavailable_reason(device: str = DEFAULT_DEVICE) -> str | None:
    """None when the ``openvino`` package imports and sees ``device``; else why not (for logs and test skips)."""
    try:
        import openvino as ov
    except ImportError as e:
        return (f"the 'openvino' Python package is not installed ({e}); "
                "pip install -r requirements/openvino.txt")
    try:
        devices = ov.Core().available_devices
    except Exception as e:  # noqa: BLE001 - a broken install reports through here
        return f"OpenVINO {getattr(ov, '__version__', '?')} cannot start: {e}"
    if device not in devices:
        return f"OpenVINO sees no {device} device (available: {devices})"
    return None


def _port_name(port, *wanted: str) -> str:
    # A port may carry several tensor names: report the one the metadata asks for, when it is among them.
    names = port.get_names()
    return next((w for w in wanted if w in names), port.get_any_name())


def _port_shape(port) -> list:
    # Dynamic dimensions become strings (e.g. "?"), which never equal the static shape the metadata requires.
    return [d.get_length() if d.is_static else str(d) for d in port.get_partial_shape()]


class OpenVINOBackend(DepthBackend):
    """Depth from an exported ONNX model through OpenVINO.

    ``threads``: ``INFERENCE_NUM_THREADS`` (None = OpenVINO's default, one per physical core). ``device``: an
    OpenVINO device name (``CPU``; ``GPU`` for an Intel iGPU). Raises :class:`ModelLoadError` for a missing,
    corrupt or mismatched model, RuntimeError when OpenVINO itself is unavailable.
    """

    name = "openvino"

    def __init__(self, onnx_path: str | os.PathLike, threads: int | None = None, device: str = DEFAULT_DEVICE):
        path = check_model_file(onnx_path, (".onnx",))
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        try:
            import openvino as ov
        except ImportError as e:
            raise RuntimeError(f"OpenVINO backend requested but {openvino_unavailable_reason(device)}") from e
        # Metadata first (one reader for every backend): a metadata-less or mismatched file fails here, clearly.
        self.meta = read_onnx_model_meta(path)
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses from its C++ frontend
            raise ModelLoadError(f"OpenVINO cannot read ONNX model {path} (corrupt or unsupported?): {e}") from e
        wanted = self.meta.read_outputs
        check_io_against_meta(
            self.meta,
            [(_port_name(p, self.meta.input), _port_shape(p)) for p in model.inputs],
            [(_port_name(p, *wanted), _port_shape(p)) for p in model.outputs],
            path,
        )
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self._compiled = core.compile_model(model, device, config)
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"OpenVINO cannot compile {path} for {device}: {e}") from e
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.output(self.meta.output)
        self._valid = self._compiled.output(self.meta.validity_output) if self.meta.validity_output else None
        super().__init__(self.meta.to_model_info(name=Path(path).name))
        self.path = path
        self.device = device
        self.threads = threads
        self.precision = self.meta.precision
        self.version = str(ov.__version__)

    @property
    def compiled_threads(self) -> int:
        """``INFERENCE_NUM_THREADS`` of the compiled model (what OpenVINO actually uses; 0 = its default)."""
        return int(self._compiled.get_property("INFERENCE_NUM_THREADS"))

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self._request is None:
            raise RuntimeError(f"{self!r} was closed")
        # share_inputs: x is a fresh contiguous array; the outputs are copied (the request reuses its buffers).
        out = self._request.infer({self.meta.input: x}, share_inputs=True)
        disp = np.array(out[self._output], dtype=np.float32, copy=True)
        return disp, None if self._valid is None else np.array(out[self._valid], dtype=np.float32, copy=True)

    def close(self) -> None:
        self._request = None
        self._compiled = None

    def __repr__(self) -> str:
        return (
            f"OpenVINOBackend({self.path.name}, {self.precision}, {self.info.width}x{self.info.height}, "
            f"device={self.device}, threads={self.threads})"
        )
