"""TensorRT backend (TensorRT >= 10, CUDA via cuda-python): version-checked engine cache and inference with
``execute_async_v3``.

Engines are specific to a TensorRT version and a GPU model, so every engine has a sidecar ``<engine>.json``
recording both; at load the backend compares them with what is installed and rebuilds from the ONNX on a
mismatch (with :func:`monodepth_ros.backends.tensorrt_build.build_engine`, which lives in the runtime because a
robot that upgrades TensorRT has no trainer).

``tensorrt`` and ``cuda-python`` are imported lazily: importing this module costs nothing on a CPU-only robot.
Everything up to the TensorRT calls (rebuild decision, metadata) is plain NumPy/JSON and is tested without a GPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from monodepth_ros.backends.base import DepthBackend
from monodepth_ros.backends.model_meta import (
    ModelLoadError,
    ModelMeta,
    check_io_against_meta,
    check_model_file,
    read_onnx_model_meta,
    read_sidecar,
)
from monodepth_ros.backends.tensorrt_build import build_engine, engine_path_for
from monodepth_ros.backends.tensorrt_env import (
    check_cuda,
    import_cudart,
    runtime_environment,
    tensorrt_unavailable_reason,
)
from monodepth_ros.bundle import file_sha256

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Pure logic: rebuild decision (tested without TensorRT)


def engine_rebuild_reason(engine_meta: ModelMeta | None, env: dict[str, str], onnx_sha256: str | None) -> str | None:
    """Why an engine must be rebuilt (or None to reuse it).

    ``engine_meta``: the engine sidecar (None if missing); ``env``: :func:`runtime_environment`;
    ``onnx_sha256``: hash of the ONNX it should come from (None when no ONNX is at hand to compare).
    """
    if engine_meta is None or not engine_meta.tensorrt:
        return "the engine has no metadata sidecar"
    built = engine_meta.tensorrt
    if built.get("version") != env["version"]:
        return f"engine built with TensorRT {built.get('version')}, installed is {env['version']}"
    if built.get("compute_capability") != env["compute_capability"] or built.get("device_name") != env["device_name"]:
        return (
            f"engine built for {built.get('device_name')} (sm {built.get('compute_capability')}), "
            f"this GPU is {env['device_name']} (sm {env['compute_capability']})"
        )
    if onnx_sha256 is not None and built.get("onnx_sha256") != onnx_sha256:
        return "the ONNX model changed since the engine was built"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Runtime


def resolve_engine(
    path: str | os.PathLike, precision: str = "fp16", env: dict[str, str] | None = None, device: int = 0
) -> tuple[Path, Path | None, str | None]:
    """-> (engine path, ONNX path or None, rebuild reason or None) for an ``.engine`` or ``.onnx`` path."""
    p = check_model_file(path, (".engine", ".plan", ".onnx"))
    if p.suffix.lower() == ".onnx":
        onnx_path: Path | None = p
        onnx_meta = read_onnx_model_meta(p)
        engine_path = engine_path_for(p, "int8" if onnx_meta.precision == "int8" else precision)
    else:
        engine_path = p
        side = read_sidecar(p)
        onnx_file = (side.tensorrt or {}).get("onnx_file") if side else None
        onnx_path = p.with_name(onnx_file) if onnx_file and p.with_name(onnx_file).is_file() else None
    env = env or runtime_environment(device)
    if not engine_path.is_file():
        return engine_path, onnx_path, "no engine built yet"
    side = read_sidecar(engine_path)
    reason = engine_rebuild_reason(side, env, file_sha256(onnx_path) if onnx_path else None)
    return engine_path, onnx_path, reason


class TensorRTBackend(DepthBackend):
    """Depth through a TensorRT engine. ``engine_or_onnx_path``: an ``.engine`` with its sidecar, or the exported
    ``.onnx`` (the engine ``<stem>.<precision>.engine`` is built next to it on first use and reused after).
    A stale engine (other TensorRT version or GPU) is rebuilt from the ONNX when ``rebuild`` is true."""

    name = "tensorrt"

    def __init__(
        self,
        engine_or_onnx_path: str | os.PathLike,
        *,
        precision: str = "fp16",
        device: int = 0,
        rebuild: bool = True,
        workspace_mib: int = 1024,
        logger: logging.Logger | None = None,
    ):
        reason = tensorrt_unavailable_reason()
        if reason:
            raise RuntimeError(f"TensorRT backend unavailable: {reason}")
        if precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
        import tensorrt as trt

        self._log = logger or log
        self._cudart = cudart = import_cudart()
        check_cuda(cudart.cudaSetDevice(device), "cudaSetDevice")
        engine_path, onnx_path, stale = resolve_engine(engine_or_onnx_path, precision, device=device)
        if stale:
            if not (rebuild and onnx_path):
                raise ModelLoadError(f"engine {engine_path} cannot be used ({stale}) and no ONNX to rebuild from")
            self._log.warning("rebuilding TensorRT engine %s: %s", engine_path, stale)
            build_engine(
                onnx_path, engine_path, fp16=precision != "fp32", int8=precision == "int8",
                workspace_mib=workspace_mib, device=device,
            )
        meta = read_sidecar(engine_path)
        if meta is None:
            raise ModelLoadError(f"engine {engine_path} has no metadata sidecar {engine_path.name}.json")

        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise ModelLoadError(f"TensorRT cannot deserialize {engine_path} (corrupt, truncated or built elsewhere)")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        io = {n: tuple(self._engine.get_tensor_shape(n)) for n in names}
        inputs = [(n, io[n]) for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [(n, io[n]) for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        check_io_against_meta(meta, inputs, outputs, engine_path)
        for n in names:
            if self._engine.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise ModelLoadError(f"{engine_path}: tensor {n!r} is {self._engine.get_tensor_dtype(n)}, need FLOAT")

        super().__init__(meta.to_model_info(name=engine_path.name))
        self.meta, self.path, self.precision = meta, engine_path, meta.precision
        self._context = self._engine.create_execution_context()
        self._stream = check_cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._in_nbytes = int(np.prod(meta.input_shape)) * 4
        self._d_in = check_cuda(cudart.cudaMalloc(self._in_nbytes), "cudaMalloc")
        # The outputs read back each frame: disp, and valid when the sidecar names it (same shape, host + device).
        read = meta.read_outputs
        self._out_host = {n: np.empty(meta.output_shape, np.float32) for n in read}
        self._d_out: dict[str, Any] = {}
        for n in read:
            self._d_out[n] = check_cuda(cudart.cudaMalloc(self._out_host[n].nbytes), "cudaMalloc")
            self._context.set_tensor_address(n, int(self._d_out[n]))
        self._extra: list[Any] = []
        for n, shape in outputs:  # other outputs are not read but still need memory to write to
            if n not in self._out_host:
                ptr = check_cuda(cudart.cudaMalloc(max(4, int(np.prod(shape)) * 4)), "cudaMalloc")
                self._extra.append(ptr)
                self._context.set_tensor_address(n, int(ptr))
        self._context.set_tensor_address(meta.input, int(self._d_in))

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        cudart = self._cudart
        x = np.ascontiguousarray(x, dtype=np.float32)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cuda(cudart.cudaMemcpyAsync(self._d_in, x.ctypes.data, self._in_nbytes, h2d, self._stream), "H2D")
        if not self._context.execute_async_v3(int(self._stream)):  # TensorRT takes the raw cudaStream_t handle
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for n, host in self._out_host.items():
            check_cuda(cudart.cudaMemcpyAsync(host.ctypes.data, self._d_out[n], host.nbytes, d2h, self._stream), "D2H")
        check_cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        valid = self.meta.validity_output
        return self._out_host[self.meta.output].copy(), self._out_host[valid].copy() if valid else None

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        if getattr(self, "_d_in", None) is not None:
            cudart.cudaFree(self._d_in)
            self._d_in = None
        for ptr in getattr(self, "_d_out", {}).values():
            cudart.cudaFree(ptr)
        self._d_out = {}
        for ptr in getattr(self, "_extra", []):
            cudart.cudaFree(ptr)
        self._extra = []
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
