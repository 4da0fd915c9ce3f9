"""TensorRT engine build from the exported ONNX (TensorRT >= 10), with the INT8 entropy calibrator.

It lives in the runtime, not the trainer, because a robot that upgrades TensorRT or changes GPU has no trainer:
:class:`monodepth_ros.backends.tensorrt_backend.TensorRTBackend` rebuilds a stale engine with :func:`build_engine`.
Every engine gets a sidecar ``<engine>.json`` recording the TensorRT version and the GPU it was built for.
INT8 engines are calibrated with an entropy calibrator (IInt8EntropyCalibrator2) whose cache file is kept
next to the engine, so a rebuild at load needs no calibration frames. An ONNX that is already INT8 QDQ
(``monodepth-export --format ort-int8``) builds as an explicitly quantised engine without a calibrator.

``tensorrt`` and ``cuda-python`` are imported lazily: importing this module costs nothing on a CPU-only robot.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import replace
from pathlib import Path

from monodepth_ros.backends.calibration import CalibrationBatches
from monodepth_ros.backends.model_meta import ModelLoadError, check_model_file, read_onnx_model_meta, write_sidecar
from monodepth_ros.backends.tensorrt_env import (
    check_cuda,
    import_cudart,
    runtime_environment,
    tensorrt_unavailable_reason,
)
from monodepth_ros.bundle import atomic_write_bytes, file_sha256

# ---------------------------------------------------------------------------------------------------------------
# INT8 calibrator


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
                self._device_ptr = check_cuda(cudart.cudaMalloc(batches.nbytes), "cudaMalloc")

        def get_batch_size(self):
            return 1  # explicit-batch network with a static (1, 3, H, W) input

        def get_batch(self, names):
            if batches is None:
                return None
            x = batches.next_batch()
            if x is None:
                return None
            check_cuda(
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
    *,
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
