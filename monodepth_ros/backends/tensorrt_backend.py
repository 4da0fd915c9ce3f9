"""TensorRT backend (TensorRT 10.x or 11.x, CUDA via cuda-python): version-checked engine cache and inference with
``execute_async_v3``.

Engines are specific to a TensorRT version and a GPU model, so every engine has a sidecar ``<engine>.json``
recording both; at load the backend compares them with what is installed and rebuilds from the ONNX on a
mismatch (with :func:`monodepth_ros.backends.tensorrt_build.build_engine`, which lives in the runtime because a
robot that upgrades TensorRT has no trainer). A rebuild keeps the engine's precision (:func:`engine_precision`).

Where engines live (:func:`resolve_engine`): an engine built ahead beside the model (``monodepth-export --format
tensorrt``, ``<stem>.<precision>.engine``) is used while it is current; every engine the runtime builds itself
goes to the engine cache folder (``engine_cache_dir``, default :data:`DEFAULT_ENGINE_CACHE_DIR`), never into the
model's folder, which is often a read-only install. Cached engines are named by the ONNX's sha256, so two models
with one file name do not collide.

``tensorrt`` and ``cuda-python`` are imported lazily: importing this module costs nothing on a CPU-only robot.
Everything up to the TensorRT calls (rebuild decision, engine choice, metadata) is plain NumPy/JSON and is tested
without a GPU.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monodepth_ros.backends.base import DepthBackend
from monodepth_ros.backends.model_meta import (
    PRECISIONS,
    ModelLoadError,
    ModelMeta,
    check_io_against_meta,
    check_model_file,
    read_onnx_model_meta,
    read_sidecar,
)
from monodepth_ros.backends.tensorrt_build import build_engine, engine_path_for
from monodepth_ros.backends.tensorrt_env import (
    ThreadDevice,
    check_cuda,
    import_cudart,
    runtime_environment,
    say,
    tensorrt_unavailable_reason,
)
from monodepth_ros.bundle import file_sha256

log = logging.getLogger(__name__)

DEFAULT_ENGINE_CACHE_DIR = "~/.cache/monodepth_ros"
NO_ENGINE = "no engine built yet"
_PRECISION_IN_NAME = re.compile(r"\.(fp32|fp16|int8)\.(?:engine|plan)$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------------------
# Pure logic: rebuild decision, engine precision and location (tested without TensorRT)


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


def engine_precision(engine_path: str | os.PathLike, engine_meta: ModelMeta | None) -> str:
    """The precision of an engine: its sidecar's, else the ``.<precision>.engine`` in its name, else fp16.

    A stale engine is rebuilt at this precision: an INT8 engine must not come back as FP16.
    """
    if engine_meta is not None and engine_meta.precision in PRECISIONS:
        return engine_meta.precision
    m = _PRECISION_IN_NAME.search(Path(engine_path).name)
    return m.group(1).lower() if m else "fp16"


def engine_source_onnx(engine_path: str | os.PathLike, engine_meta: ModelMeta | None) -> Path | None:
    """The ONNX an engine was built from, per its sidecar: beside the engine, else at its recorded path."""
    built = (engine_meta.tensorrt or {}) if engine_meta else {}
    p = Path(engine_path)
    if built.get("onnx_file") and p.with_name(built["onnx_file"]).is_file():
        return p.with_name(built["onnx_file"])
    if built.get("onnx_path") and Path(built["onnx_path"]).is_file():
        return Path(built["onnx_path"])
    return None


def engine_cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` (``~`` expanded), or :data:`DEFAULT_ENGINE_CACHE_DIR`."""
    return Path(os.path.expanduser(str(cache_dir or DEFAULT_ENGINE_CACHE_DIR)))


def cached_engine_path(cache_dir: str | os.PathLike, onnx_path: str | os.PathLike, onnx_sha256: str,
                       precision: str) -> Path:
    """``<cache>/<stem>-<sha256[:12]>.<precision>.engine``: the engine the runtime builds for one ONNX."""
    return Path(cache_dir) / f"{Path(onnx_path).stem}-{onnx_sha256[:12]}.{precision}.engine"


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed; RuntimeError naming it when it cannot be created or written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RuntimeError(f"engine cache folder {folder} cannot be created ({e}): set the node parameter "
                           "engine_cache_dir to a writable folder") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RuntimeError(f"engine cache folder {folder} is not writable: set the node parameter engine_cache_dir "
                           "to a writable folder")
    return folder


@dataclass(frozen=True)
class EngineChoice:
    """Which engine to load, or to build first (:func:`resolve_engine`)."""

    engine: Path
    onnx: Path | None  # the ONNX it comes from (None: not known, no rebuild possible)
    reason: str | None  # why ``engine`` must be (re)built; None when it is current
    precision: str
    passed_over: tuple[str, ...] = ()  # existing engines not used, each "path: why" (for the log)


def _staleness(engine: Path, env: dict[str, str], onnx_sha256: str | None) -> str | None:
    if not engine.is_file():
        return NO_ENGINE
    try:
        meta = read_sidecar(engine)
    except ModelLoadError as e:
        return f"its sidecar is unreadable ({e})"
    return engine_rebuild_reason(meta, env, onnx_sha256)


def resolve_engine(
    path: str | os.PathLike,
    precision: str | None = None,
    env: dict[str, str] | None = None,
    device: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> EngineChoice:
    """The engine for an ``.engine`` or ``.onnx`` path: the first current one of (the given engine, or the one
    built ahead beside the ONNX) and (its copy in the cache folder); when neither is current, the cache copy with
    the reason to build it.

    ``precision`` None: the engine's own (:func:`engine_precision`) or, for an ONNX, fp16; an INT8 Q/DQ ONNX
    always maps to int8. ``env``: :func:`runtime_environment` (queried when None).
    """
    p = check_model_file(path, (".engine", ".plan", ".onnx"))
    cache = engine_cache_folder(cache_dir)
    if p.suffix.lower() == ".onnx":
        onnx_path: Path | None = p
        precision = "int8" if read_onnx_model_meta(p).precision == "int8" else (precision or "fp16")
        onnx_sha256: str | None = file_sha256(p)
        candidates = [engine_path_for(p, precision), cached_engine_path(cache, p, onnx_sha256, precision)]
    else:
        try:
            side = read_sidecar(p)
        except ModelLoadError:
            side = None
        precision = precision or engine_precision(p, side)
        onnx_path = engine_source_onnx(p, side)
        onnx_sha256 = file_sha256(onnx_path) if onnx_path else None
        candidates = [p] if p.parent.resolve() == cache.resolve() else [p, cache / p.name]
    env = env or runtime_environment(device)
    passed_over = []
    for engine in candidates:
        reason = _staleness(engine, env, onnx_sha256)
        if reason is None:
            return EngineChoice(engine, onnx_path, None, precision, tuple(passed_over))
        if reason != NO_ENGINE and engine != candidates[-1]:
            passed_over.append(f"{engine}: {reason}")
    return EngineChoice(candidates[-1], onnx_path, reason, precision, tuple(passed_over))


# ---------------------------------------------------------------------------------------------------------------
# Runtime


class TensorRTBackend(DepthBackend):
    """Depth through a TensorRT engine. ``engine_or_onnx_path``: an ``.engine`` with its sidecar, or the exported
    ``.onnx``; which engine is used or built, and where: :func:`resolve_engine`. A missing or stale engine (other
    TensorRT version, GPU or ONNX) is built from the ONNX when ``rebuild`` is true, at ``precision`` (None: the
    engine's own, fp16 for an fp32 ONNX, int8 for an INT8 Q/DQ ONNX), into ``engine_cache_dir``. ``logger``: a
    logging.Logger or an rclpy logger; the build logs its progress there."""

    name = "tensorrt"

    def __init__(
        self,
        engine_or_onnx_path: str | os.PathLike,
        *,
        precision: str | None = None,
        device: int = 0,
        rebuild: bool = True,
        workspace_mib: int = 1024,
        engine_cache_dir: str | os.PathLike | None = None,
        logger=None,
    ):
        reason = tensorrt_unavailable_reason()
        if reason:
            raise RuntimeError(f"TensorRT backend unavailable: {reason}")
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS} or None, got {precision!r}")
        import tensorrt as trt

        self._log = logger or log
        self._cudart = cudart = import_cudart()
        self._device = ThreadDevice(cudart, device)
        self._device.ensure()
        choice = resolve_engine(engine_or_onnx_path, precision, device=device, cache_dir=engine_cache_dir)
        for line in choice.passed_over:
            say(self._log, "warning", f"TensorRT engine not used: {line}")
        engine_path = choice.engine
        if choice.reason:
            if not (rebuild and choice.onnx):
                raise ModelLoadError(f"engine {engine_path} cannot be used ({choice.reason}) and there is no ONNX "
                                     "to rebuild it from")
            ensure_writable_dir(engine_path.parent)
            say(self._log, "info" if choice.reason == NO_ENGINE else "warning",
                f"TensorRT engine {engine_path}: {choice.reason}; building it from {choice.onnx}")
            build_engine(
                choice.onnx, engine_path, fp16=choice.precision != "fp32", int8=choice.precision == "int8",
                workspace_mib=workspace_mib, device=device, logger=self._log,
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
        self._device.ensure()  # the node infers in a worker thread, not the one that built the backend
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
        if getattr(self, "_device", None) is not None:
            self._device.ensure()
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
