"""TensorRT backend (TensorRT >= 10, CUDA via cuda-python): engine build from the exported ONNX, version-checked
engine cache, and inference with ``execute_async_v3``.

Engines are specific to a TensorRT version and a GPU model, so every engine has a sidecar ``<engine>.json``
recording both; at load the backend compares them with what is installed and rebuilds from the ONNX on a
mismatch (the rebuild code lives here, in the runtime, because a robot that upgrades TensorRT has no trainer).
INT8 engines are calibrated with an entropy calibrator (IInt8EntropyCalibrator2) whose cache file is kept
next to the engine, so a rebuild at load needs no calibration frames. An ONNX that is already INT8 QDQ
(``monodepth-export --format ort-int8``) builds as an explicitly quantised engine without a calibrator.

``tensorrt`` and ``cuda-python`` are imported lazily: importing this module costs nothing on a CPU-only robot.
Everything up to the TensorRT calls (calibration batches, rebuild decision, metadata) is plain NumPy/JSON and
is tested without a GPU.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from monodepth_ros.backends.base import DepthBackend, preprocess
from monodepth_ros.backends.model_meta import (
    ModelLoadError,
    ModelMeta,
    check_io_against_meta,
    check_model_file,
    read_onnx_model_meta,
    read_sidecar,
    write_sidecar,
)
from monodepth_ros.bundle import atomic_write_bytes, file_sha256

MIN_TENSORRT_MAJOR = 10
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Availability (no TensorRT needed to ask)


def import_cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime`` in 12.6+/13, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # older cuda-python layout
    return cudart


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT >= 10, cuda-python and a CUDA device are all present; else why not (for logs/skips)."""
    try:
        import tensorrt as trt
    except ImportError as e:
        return f"the 'tensorrt' Python package is not installed ({e})"
    try:
        major = int(str(trt.__version__).split(".")[0])
    except ValueError:
        return f"cannot parse the TensorRT version {trt.__version__!r}"
    if major < MIN_TENSORRT_MAJOR:
        return f"TensorRT {trt.__version__} is older than the required {MIN_TENSORRT_MAJOR}.x"
    try:
        cudart = import_cudart()
    except ImportError as e:
        return f"cuda-python is not installed ({e})"
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        return f"no CUDA device available ({err})"
    return None


def _check_cuda(result, what: str):
    cudart = import_cudart()
    err = result[0] if isinstance(result, tuple) else result
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA {what} failed: {err}")
    if isinstance(result, tuple):
        return result[1] if len(result) == 2 else result[1:]
    return None


def runtime_environment(device: int = 0) -> dict[str, str]:
    """What an engine is tied to: TensorRT version, GPU name and compute capability of ``device``."""
    import tensorrt as trt

    cudart = import_cudart()
    prop = _check_cuda(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {
        "version": str(trt.__version__),
        "device_name": name.rstrip("\x00").strip(),
        "compute_capability": f"{prop.major}.{prop.minor}",
    }


# ---------------------------------------------------------------------------------------------------------------
# Pure logic: rebuild decision and calibration batches (tested without TensorRT)


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


class CalibrationBatches:
    """Calibration frames -> network inputs (1, 3, H, W) float32 in [0, 1], one per call, as TensorRT's
    calibrator and ORT's CalibrationDataReader both consume them.

    ``frames``: iterable of RGB uint8 (h, w, 3) images (resized with the backends' :func:`preprocess`) or of
    already preprocessed (1, 3, H, W) float32 arrays.
    """

    def __init__(self, frames: Iterable[np.ndarray], height: int, width: int, limit: int | None = None):
        self.height, self.width, self.limit = int(height), int(width), limit
        self._frames = frames
        self._it: Iterator[np.ndarray] | None = None
        self.count = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.height, self.width)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    def to_input(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim == 3 and frame.dtype == np.uint8:
            return preprocess(frame, self.height, self.width)
        if frame.shape == self.shape and frame.dtype == np.float32:
            return np.ascontiguousarray(frame)
        raise ValueError(
            f"calibration frame must be RGB uint8 (h, w, 3) or float32 {self.shape}, got {frame.dtype} {frame.shape}"
        )

    def next_batch(self) -> np.ndarray | None:
        """The next input, or None when the frames (or ``limit``) are exhausted."""
        if self._it is None:
            self._it = iter(self._frames)
        if self.limit is not None and self.count >= self.limit:
            return None
        try:
            frame = next(self._it)
        except StopIteration:
            return None
        self.count += 1
        return self.to_input(frame)


def make_entropy_calibrator(batches: CalibrationBatches | None, cache_path: str | os.PathLike, progress=None):
    """An ``trt.IInt8EntropyCalibrator2`` fed by ``batches`` and caching its table at ``cache_path``.

    With ``batches`` None, only the cache is used (engine rebuild at load). ``progress``: optional callable
    invoked once per batch handed to TensorRT (the export CLI's tqdm bar).
    """
    import tensorrt as trt

    if not hasattr(trt, "IInt8EntropyCalibrator2"):  # implicit INT8 calibration is gone after TensorRT 10
        raise RuntimeError(
            f"TensorRT {trt.__version__} has no IInt8EntropyCalibrator2: export with --format ort-int8 and build "
            "the engine from that INT8 QDQ ONNX (explicit quantisation) instead"
        )
    cudart = import_cudart()
    cache_path = Path(cache_path)

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._device_ptr = None
            if batches is not None:
                self._device_ptr = _check_cuda(cudart.cudaMalloc(batches.nbytes), "cudaMalloc")

        def get_batch_size(self):
            return 1  # explicit-batch network with a static (1, 3, H, W) input

        def get_batch(self, names):
            if batches is None:
                return None
            x = batches.next_batch()
            if x is None:
                return None
            _check_cuda(
                cudart.cudaMemcpy(
                    self._device_ptr, x.ctypes.data, x.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                ),
                "cudaMemcpy H2D",
            )
            if progress is not None:
                progress()
            return [int(self._device_ptr)]

        def read_calibration_cache(self):
            # A cache means TensorRT skips get_batch entirely; it is only valid for the same ONNX.
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache):
            atomic_write_bytes(cache_path, bytes(cache))

        def free(self):
            if self._device_ptr is not None:
                cudart.cudaFree(self._device_ptr)
                self._device_ptr = None

    return _EntropyCalibrator()


# ---------------------------------------------------------------------------------------------------------------
# Engine build


def engine_path_for(onnx_path: str | os.PathLike, precision: str) -> Path:
    """``model.onnx`` + ``fp16`` -> ``model.fp16.engine`` (next to the ONNX)."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.{precision}.engine")


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike | None = None,
    fp16: bool = True,
    int8: bool = False,
    calib: CalibrationBatches | None = None,
    workspace_mib: int = 1024,
    device: int = 0,
    progress=None,
) -> Path:
    """Build and save a TensorRT engine from an exported ONNX model; returns the engine path.

    Writes ``<engine>``, ``<engine>.json`` (model metadata + TensorRT version, GPU, compute capability),
    ``<engine>.timing.cache`` (reused by later builds) and, for INT8, ``<engine>.calib.cache``.
    ``int8`` on an fp32 ONNX needs ``calib`` frames or an existing calibration cache; on an INT8 QDQ ONNX the
    quantisation scales come from the graph itself.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise RuntimeError(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    onnx_path = check_model_file(onnx_path, (".onnx",))
    onnx_meta = read_onnx_model_meta(onnx_path)
    explicit_int8 = onnx_meta.precision == "int8"
    int8 = int8 or explicit_int8
    precision = "int8" if int8 else ("fp16" if fp16 else "fp32")
    engine_path = Path(engine_path) if engine_path else engine_path_for(onnx_path, precision)
    timing_path = engine_path.with_name(engine_path.name + ".timing.cache")
    calib_path = engine_path.with_name(engine_path.name + ".calib.cache")
    if int8 and not explicit_int8 and calib is None and not calib_path.is_file():
        raise ValueError(
            "INT8 TensorRT build needs calibration frames (monodepth-export --int8 --calib DATA) "
            f"or an existing calibration cache at {calib_path}"
        )

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode, no flag needed
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
        if not explicit_int8:
            calibrator = make_entropy_calibrator(calib, calib_path, progress=progress)
            config.int8_calibrator = calibrator
    timing_cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing_cache, ignore_mismatch=False)

    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")

    atomic_write_bytes(engine_path, bytes(plan))
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    env = runtime_environment(device)
    engine_meta = replace(
        onnx_meta,
        precision=precision,
        tensorrt={
            **env,
            "onnx_file": onnx_path.name,
            "onnx_sha256": file_sha256(onnx_path),
            "fp16": bool(fp16),
            "int8": bool(int8),
            "int8_mode": ("explicit_qdq" if explicit_int8 else "entropy_calibrator2") if int8 else None,
            "calib_cache": calib_path.name if (int8 and not explicit_int8) else None,
            "timing_cache": timing_path.name,
            "workspace_mib": int(workspace_mib),
            "built_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    )
    write_sidecar(engine_path, engine_meta)
    return engine_path


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
        _check_cuda(cudart.cudaSetDevice(device), "cudaSetDevice")
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
        self._stream = _check_cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._out_host = np.empty(meta.output_shape, np.float32)
        self._in_nbytes = int(np.prod(meta.input_shape)) * 4
        self._d_in = _check_cuda(cudart.cudaMalloc(self._in_nbytes), "cudaMalloc")
        self._d_out = _check_cuda(cudart.cudaMalloc(self._out_host.nbytes), "cudaMalloc")
        self._extra: list[Any] = []
        for n, shape in outputs:  # outputs other than disp still need memory to write to
            if n != meta.output:
                ptr = _check_cuda(cudart.cudaMalloc(max(4, int(np.prod(shape)) * 4)), "cudaMalloc")
                self._extra.append(ptr)
                self._context.set_tensor_address(n, int(ptr))
        self._context.set_tensor_address(meta.input, int(self._d_in))
        self._context.set_tensor_address(meta.output, int(self._d_out))

    def _run_disp(self, x: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        x = np.ascontiguousarray(x, dtype=np.float32)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check_cuda(cudart.cudaMemcpyAsync(self._d_in, x.ctypes.data, self._in_nbytes, h2d, self._stream), "H2D")
        if not self._context.execute_async_v3(int(self._stream)):  # TensorRT takes the raw cudaStream_t handle
            raise RuntimeError("TensorRT execute_async_v3 failed")
        _check_cuda(
            cudart.cudaMemcpyAsync(self._out_host.ctypes.data, self._d_out, self._out_host.nbytes, d2h, self._stream),
            "D2H",
        )
        _check_cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return self._out_host.copy()

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for attr in ("_d_in", "_d_out"):
            ptr = getattr(self, attr, None)
            if ptr is not None:
                cudart.cudaFree(ptr)
                setattr(self, attr, None)
        for ptr in getattr(self, "_extra", []):
            cudart.cudaFree(ptr)
        self._extra = []
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
