"""TensorRT engine build from the exported ONNX (TensorRT 10.x and 11.x), with the INT8 entropy calibrator on 10.

It lives in the runtime, not the trainer, because a robot that upgrades TensorRT or changes GPU has no trainer:
:class:`monodepth_ros.backends.tensorrt_backend.TensorRTBackend` rebuilds a stale engine with :func:`build_engine`.
Every engine gets a sidecar ``<engine>.json`` recording the TensorRT version and the GPU it was built for.

What each TensorRT major accepts is decided in one place, :func:`build_plan`:

- TensorRT 10 (weakly typed): precision from builder flags (``FP16``, ``INT8``); INT8 from an fp32 ONNX through an
  entropy calibrator (IInt8EntropyCalibrator2), or explicit from an INT8 Q/DQ ONNX.
- TensorRT 11 (strongly typed only: the precision flags and ``int8_calibrator`` are gone): precision comes from
  the graph's types, so FP16 parses an FP16 copy of the fp32 ONNX made at build time (:func:`fp16_onnx_bytes`,
  float32 inputs and outputs kept), and INT8 needs an INT8 Q/DQ ONNX.

TensorRT runs only symmetric signed INT8 Q/DQ; an ONNX Runtime model with QUInt8 activations is refused up front
(:func:`tensorrt_qdq_problem`) rather than failing deep in the parser.

Caches (both beside the engine): the timing cache is named by TensorRT version and GPU
(:func:`timing_cache_path`), and one TensorRT refuses anyway is dropped with a log line; the INT8 calibration
cache is named by the ONNX's sha256, the TensorRT version and the GPU (:func:`calib_cache_path`), so a changed
ONNX, TensorRT or GPU never reuses an old table: such a rebuild needs calibration frames again.

``tensorrt`` and ``cuda-python`` are imported lazily: importing this module costs nothing on a CPU-only robot.
"""

from __future__ import annotations

import datetime
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from monodepth_ros.backends.calibration import CalibrationBatches
from monodepth_ros.backends.model_meta import (
    PRECISIONS,
    ModelLoadError,
    ModelMeta,
    check_model_file,
    read_onnx_model_meta,
    write_sidecar,
)
from monodepth_ros.backends.tensorrt_env import (
    check_cuda,
    import_cudart,
    runtime_environment,
    say,
    tensorrt_major,
    tensorrt_unavailable_reason,
    tensorrt_version_problem,
)
from monodepth_ros.bundle import atomic_write_bytes, file_sha256

# ---------------------------------------------------------------------------------------------------------------
# What each TensorRT major accepts (pure, tested without TensorRT)


@dataclass(frozen=True)
class BuildPlan:
    """How one engine is built with one TensorRT major."""

    precision: str  # of the engine: fp32 | fp16 | int8
    strongly_typed: bool  # network created with NetworkDefinitionCreationFlag.STRONGLY_TYPED
    builder_flags: tuple[str, ...]  # names in trt.BuilderFlag to set (TensorRT 10 only)
    calibrator: bool  # INT8 entropy calibrator (TensorRT 10, fp32 ONNX)
    convert_fp16: bool  # parse an FP16 copy of the fp32 ONNX (TensorRT 11)
    int8_mode: str | None  # "explicit_qdq" | "entropy_calibrator2" | None


def build_plan(trt_major: int, precision: str, onnx_precision: str = "fp32", allow_fp16: bool = True) -> BuildPlan:
    """The build for an engine of ``precision`` from an ONNX of ``onnx_precision`` with TensorRT ``trt_major``.

    An INT8 Q/DQ ONNX always gives an INT8 engine. ``allow_fp16`` (TensorRT 10): let INT8 engines use FP16 kernels
    where a layer is not quantised. Raises ValueError for what that major cannot build, RuntimeError for a major
    this code does not support.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    problem = tensorrt_version_problem(str(trt_major))
    if problem:
        raise RuntimeError(f"cannot build a TensorRT engine: {problem}")
    qdq = onnx_precision == "int8"
    precision = "int8" if qdq else precision
    int8_mode = ("explicit_qdq" if qdq else "entropy_calibrator2") if precision == "int8" else None
    if trt_major == 10:
        flags = (("FP16",) if precision == "fp16" or (precision == "int8" and allow_fp16) else ())
        flags += ("INT8",) if precision == "int8" else ()
        return BuildPlan(precision, False, flags, int8_mode == "entropy_calibrator2", False, int8_mode)
    # TensorRT 11: strongly typed, the graph's types are the precision.
    if int8_mode == "entropy_calibrator2":
        raise ValueError(
            f"TensorRT {trt_major} has no INT8 calibration (BuilderFlag.INT8 and int8_calibrator were removed): "
            "build INT8 from an INT8 Q/DQ ONNX with symmetric signed INT8, or build fp16"
        )
    return BuildPlan(precision, True, (), False, precision == "fp16" and onnx_precision == "fp32", int8_mode)


def tensorrt_qdq_problem(meta: ModelMeta, name: str = "the model") -> str | None:
    """Why the INT8 Q/DQ ONNX described by ``meta`` cannot become a TensorRT engine, or None.

    TensorRT runs only symmetric signed INT8 Q/DQ (zero point 0); ONNX Runtime's asymmetric static quantisation
    (QUInt8 activations) makes graphs its parser rejects deep inside. Decided from the metadata the exporter
    writes: its check of TensorRT's Q/DQ rules (``tensorrt_qdq_violations``) when recorded, else the recipe's
    types and symmetry; nothing is refused when neither says.
    """
    quant = meta.quantization or {}
    violations = quant.get("tensorrt_qdq_violations")
    if isinstance(violations, list):
        bad = [str(v) for v in violations[:3]] + ([f"{len(violations) - 3} more"] if len(violations) > 3 else [])
    else:
        recipe = quant.get("recipe") or {}
        bad = [f"{k}={recipe[k]}" for k in ("activation_type", "weight_type") if recipe.get(k) not in (None, "QInt8")]
        bad += ["asymmetric (symmetric=false)"] if recipe.get("symmetric") is False else []
    if not bad:
        return None
    return (f"{name} is INT8 Q/DQ that TensorRT cannot build ({'; '.join(bad)}): TensorRT runs only symmetric "
            "signed INT8 Q/DQ (QInt8, zero point 0); use the fp32 ONNX (an fp16 engine) or re-export the INT8 model "
            "with the symmetric recipe (monodepth-export --format ort-int8)")


# ---------------------------------------------------------------------------------------------------------------
# File names (pure)


def engine_path_for(onnx_path: str | os.PathLike, precision: str) -> Path:
    """``model.onnx`` + ``fp16`` -> ``model.fp16.engine`` (next to the ONNX)."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.{precision}.engine")


def sanitise(name: str) -> str:
    """A GPU name or version as a file-name part: ``"NVIDIA Jetson AGX Orin"`` -> ``"NVIDIA_Jetson_AGX_Orin"``."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(name)).strip("_") or "unknown"


def timing_cache_path(folder: str | os.PathLike, env: dict[str, str]) -> Path:
    """The timing cache for the TensorRT version and GPU of ``env`` in ``folder``: timings are only valid there."""
    return Path(folder) / (f"timing.trt{sanitise(env['version'])}.{sanitise(env['device_name'])}."
                           f"sm{sanitise(env['compute_capability'])}.cache")


def calib_cache_path(engine_path: str | os.PathLike, onnx_sha256: str, env: dict[str, str]) -> Path:
    """The INT8 calibration cache of ``engine_path`` for one ONNX (by sha256), TensorRT version and GPU.

    TensorRT reads a cache instead of calibrating and cannot tell that it belongs to another graph; its tensor
    names come from the parser of one TensorRT version, and caches moved across GPUs are reported not to apply.
    """
    p = Path(engine_path)
    return p.with_name(f"{p.name}.calib.{onnx_sha256[:12]}.trt{sanitise(env['version'])}."
                       f"{sanitise(env['device_name'])}.cache")


# ---------------------------------------------------------------------------------------------------------------
# Builder pieces that take the TensorRT module or objects as parameters (tested with fakes)


def make_entropy_calibrator(batches: CalibrationBatches | None, cache_path: str | os.PathLike, progress=None,
                            trt=None):
    """An ``trt.IInt8EntropyCalibrator2`` (TensorRT 10) fed by ``batches`` and caching its table at ``cache_path``.

    With ``batches`` None, only the cache is used. ``progress``: optional callable invoked once per batch handed
    to TensorRT (the export CLI's tqdm bar). ``trt``: the tensorrt module (imported when None).
    """
    if trt is None:
        import tensorrt as trt
    if not hasattr(trt, "IInt8EntropyCalibrator2"):  # implicit INT8 calibration is gone after TensorRT 10
        raise RuntimeError(
            f"TensorRT {trt.__version__} has no IInt8EntropyCalibrator2: export with --format ort-int8 and build "
            "the engine from that INT8 QDQ ONNX (explicit quantisation) instead"
        )
    cudart = import_cudart() if batches is not None else None
    cache_path = Path(cache_path)

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._device_ptr = None
            if batches is not None:
                self._device_ptr = check_cuda(cudart.cudaMalloc(batches.nbytes), "cudaMalloc", cudart)

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
                "cudaMemcpy H2D", cudart,
            )
            if progress is not None:
                progress()
            return [int(self._device_ptr)]

        def read_calibration_cache(self):
            # A cache means TensorRT skips get_batch entirely: its name ties it to one ONNX, TensorRT and GPU.
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache):
            atomic_write_bytes(cache_path, bytes(cache))

        def free(self):
            if self._device_ptr is not None:
                cudart.cudaFree(self._device_ptr)
                self._device_ptr = None

    return _EntropyCalibrator()


def apply_timing_cache(config, data: bytes, logger=None, where: str = "") -> bool:
    """Give the builder ``config`` the serialised timing cache ``data`` (b"" for none); True when it was used.

    TensorRT refuses a cache from another TensorRT or GPU (``set_timing_cache`` returns False): the build then
    starts from an empty cache, with a log line, instead of failing; the empty cache is saved after the build.
    """
    if data:
        try:
            cache = config.create_timing_cache(data)
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign cache is only a slower build
            cache, why = None, f"cannot be read ({e})"
        else:
            why = "was refused by TensorRT (made by another TensorRT version or GPU?)"
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return True
        say(logger, "warning", f"TensorRT timing cache {where} {why}; building without it")
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return False


def make_progress_monitor(trt, logger=None, label: str = "engine"):
    """A ``trt.IProgressMonitor`` logging each top-level build phase, or None when TensorRT has none: an engine
    build takes minutes on a Jetson and must not look like a hang."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._t0 = time.monotonic()

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                say(logger, "info", f"TensorRT {label}: {phase_name} ({num_steps} steps, "
                                    f"{time.monotonic() - self._t0:.0f} s so far)")

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            pass

    return _Monitor()


def fp16_onnx_bytes(onnx_path: str | os.PathLike) -> bytes:
    """The fp32 ONNX converted to FP16 inside, with float32 inputs and outputs, serialised.

    TensorRT 11 takes the precision from the graph's types. Uses ONNX Runtime's float16 converter (it ships with
    onnxruntime and needs the ``onnx`` package), else onnxconverter-common's; RuntimeError saying what to install
    when neither can run.
    """
    try:
        import onnx
    except ImportError as e:
        raise RuntimeError(
            "TensorRT 11 builds an fp16 engine from an FP16 ONNX, converted at build time, which needs the 'onnx' "
            f"package: pip install onnx ({e})"
        ) from e
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        try:
            from onnxconverter_common.float16 import convert_float_to_float16
        except ImportError as e:
            raise RuntimeError(
                "TensorRT 11 builds an fp16 engine from an FP16 ONNX: no float16 converter found (onnxruntime's "
                f"onnxruntime.transformers.float16 or onnxconverter-common): pip install onnxconverter-common ({e})"
            ) from e
    model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    return model.SerializeToString()


# ---------------------------------------------------------------------------------------------------------------
# Engine build


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
    logger=None,
    env: dict[str, str] | None = None,
    trt_module=None,
) -> Path:
    """Build and save a TensorRT engine from an exported ONNX model; returns the engine path.

    Precision: int8 when ``int8`` or the ONNX is INT8 Q/DQ, else fp16 when ``fp16``, else fp32 (how: see
    :func:`build_plan`). Writes ``<engine>``, ``<engine>.json`` (model metadata + TensorRT version, GPU, compute
    capability, ONNX sha256, build mode), the timing cache beside it (:func:`timing_cache_path`, reused by later
    builds) and, for a calibrated INT8 engine, its calibration cache (:func:`calib_cache_path`). A calibrated INT8
    build needs ``calib`` frames unless that exact cache exists. ``logger``: a logging.Logger or rclpy logger
    for the build's progress. ``env`` (:func:`runtime_environment`) and ``trt_module`` replace the installed ones
    (tests, the device check).
    """
    if trt_module is None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise RuntimeError(f"cannot build a TensorRT engine: {reason}")
        import tensorrt as trt
    else:
        trt = trt_module
    problem = tensorrt_version_problem(trt.__version__)
    if problem:
        raise RuntimeError(f"cannot build a TensorRT engine: {problem}")

    onnx_path = check_model_file(onnx_path, (".onnx",))
    onnx_meta = read_onnx_model_meta(onnx_path)
    want = "int8" if int8 else ("fp16" if fp16 else "fp32")
    plan = build_plan(tensorrt_major(trt.__version__), want, onnx_meta.precision, allow_fp16=fp16)
    if plan.int8_mode == "explicit_qdq":
        qdq_problem = tensorrt_qdq_problem(onnx_meta, onnx_path.name)
        if qdq_problem:
            raise ModelLoadError(qdq_problem)
    engine_path = Path(engine_path) if engine_path else engine_path_for(onnx_path, plan.precision)
    env = env or runtime_environment(device)
    onnx_sha256 = file_sha256(onnx_path)
    timing_path = timing_cache_path(engine_path.parent, env)
    calib_path = calib_cache_path(engine_path, onnx_sha256, env) if plan.calibrator else None
    if plan.calibrator and calib is None and not calib_path.is_file():
        raise ValueError(
            f"INT8 TensorRT build of {onnx_path.name} needs calibration frames (monodepth-export --int8 --calib "
            f"DATA): there is no calibration cache for this ONNX, TensorRT {env['version']} and GPU "
            f"{env['device_name']} ({calib_path.name})"
        )

    say(logger, "info", f"building TensorRT {plan.precision} engine {engine_path} from {onnx_path.name} (TensorRT "
                        f"{trt.__version__}, {env['device_name']}); this takes from seconds to minutes")
    t0 = time.monotonic()
    onnx_bytes = fp16_onnx_bytes(onnx_path) if plan.convert_fp16 else onnx_path.read_bytes()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None) if plan.strongly_typed else None
    network = builder.create_network(0 if typed is None else 1 << int(typed))  # explicit batch is implied
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    calibrator = None
    if plan.calibrator:
        calibrator = make_entropy_calibrator(calib, calib_path, progress=progress, trt=trt)
        config.int8_calibrator = calibrator
    monitor = make_progress_monitor(trt, logger, engine_path.name)
    if monitor is not None:
        config.progress_monitor = monitor
    timing_reused = apply_timing_cache(config, timing_path.read_bytes() if timing_path.is_file() else b"",
                                       logger, timing_path.name)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")

    atomic_write_bytes(engine_path, bytes(serialized))
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    seconds = time.monotonic() - t0
    engine_meta = replace(
        onnx_meta,
        precision=plan.precision,
        tensorrt={
            **env,
            "onnx_file": onnx_path.name,
            "onnx_path": str(onnx_path.resolve()),
            "onnx_sha256": onnx_sha256,
            "build_mode": "strongly_typed" if plan.strongly_typed else "builder_flags",
            "builder_flags": list(plan.builder_flags),
            "onnx_converted_to_fp16": plan.convert_fp16,
            "fp16": plan.precision == "fp16" or "FP16" in plan.builder_flags,
            "int8": plan.precision == "int8",
            "int8_mode": plan.int8_mode,
            "calib_cache": calib_path.name if calib_path else None,
            "timing_cache": timing_path.name,
            "timing_cache_reused": timing_reused,
            "workspace_mib": int(workspace_mib),
            "build_seconds": round(seconds, 1),
            # timezone.utc, not datetime.UTC (3.11+): the runtime imports on Python 3.10 (ROS 2 Humble).
            "built_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        },
    )
    write_sidecar(engine_path, engine_meta)
    say(logger, "info", f"built TensorRT engine {engine_path.name} in {seconds:.0f} s")
    return engine_path
