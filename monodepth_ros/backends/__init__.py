"""Inference backends. :func:`create_backend` picks TensorRT > ONNX Runtime CUDA > OpenVINO > ONNX Runtime CPU
for ``auto`` (:data:`AUTO_ORDER`, :func:`auto_candidates`) and logs its choice; TensorRT and OpenVINO are optional
extras. ``torch`` (debugging) comes from the trainer through an entry point, so the runtime never imports torch.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points
from pathlib import Path

from monodepth_ros.backends.base import DepthBackend, ModelInfo, preprocess
from monodepth_ros.backends.model_meta import (
    OUTPUT_CONVENTION,
    ModelLoadError,
    ModelMeta,
    read_onnx_meta,
    read_onnx_model_meta,
    read_sidecar,
)
from monodepth_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from monodepth_ros.backends.openvino_backend import OpenVINOBackend, openvino_unavailable_reason
from monodepth_ros.backends.tensorrt_backend import DEFAULT_ENGINE_CACHE_DIR, TensorRTBackend, engine_source_onnx
from monodepth_ros.backends.tensorrt_env import tensorrt_unavailable_reason

__all__ = [
    "AUTO_ORDER",
    "BACKEND_KINDS",
    "DEFAULT_ENGINE_CACHE_DIR",
    "DepthBackend",
    "ModelInfo",
    "ModelLoadError",
    "ModelMeta",
    "OUTPUT_CONVENTION",
    "OnnxRuntimeBackend",
    "OpenVINOBackend",
    "TensorRTBackend",
    "auto_candidates",
    "create_backend",
    "load_entry_point_backend",
    "preprocess",
    "read_onnx_meta",
    "read_onnx_model_meta",
    "openvino_unavailable_reason",
    "read_sidecar",
    "tensorrt_unavailable_reason",
]

BACKEND_KINDS = ("auto", "onnxruntime", "openvino", "tensorrt", "torch")
# What ``auto`` tries, best first; each one that fails at load (other than a bad model file) falls to the next.
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "openvino", "onnxruntime-cpu")
ENTRY_POINT_GROUP = "monodepth_ros.backends"
_log = logging.getLogger(__name__)


def _say(logger, level: str, msg: str) -> None:
    # Works with logging.Logger and rclpy's RcutilsLogger (whose method is ``warn`` on older distros).
    fn = getattr(logger, level, None) or getattr(logger, "warn" if level == "warning" else "info")
    fn(msg)


def load_entry_point_backend(name: str, model_path: str | os.PathLike, threads: int | None = None) -> DepthBackend:
    """Instantiate the backend registered as ``name`` in the ``monodepth_ros.backends`` entry-point group."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        raise RuntimeError(
            f"no '{name}' backend registered in entry-point group '{ENTRY_POINT_GROUP}': "
            "install the trainer (pip install -e . with requirements/train.txt) to use kind='torch'"
        )
    ep = next(iter(found))
    try:
        cls = ep.load()
    except ImportError as e:
        raise RuntimeError(f"backend '{name}' ({ep.value}) cannot be imported: {e}; is torch installed?") from e
    return cls(str(model_path), threads=threads)


def auto_candidates(*, tensorrt: bool, ort_cuda: bool, openvino: bool) -> list[str]:
    """The entries of :data:`AUTO_ORDER` that are available, best first (ONNX Runtime CPU always is)."""
    available = {"tensorrt": tensorrt, "onnxruntime-cuda": ort_cuda, "openvino": openvino, "onnxruntime-cpu": True}
    return [c for c in AUTO_ORDER if available[c]]


_LABELS = {"tensorrt": "TensorRT", "onnxruntime-cuda": "ONNX Runtime CUDA", "openvino": "OpenVINO",
           "onnxruntime-cpu": "ONNX Runtime CPU"}


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _onnx_for(path: Path, logger) -> Path:
    """``path`` itself, or for a TensorRT engine the ONNX it was built from (ModelLoadError when there is none)."""
    if path.suffix.lower() not in (".engine", ".plan"):
        return path
    onnx_path = engine_source_onnx(path, read_sidecar(path))
    if onnx_path is None:
        raise ModelLoadError(f"{path} is a TensorRT engine and TensorRT is unusable here; its ONNX is not found")
    _say(logger, "info", f"using {onnx_path.name}, the ONNX the engine {path.name} was built from")
    return onnx_path


def _open(candidate: str, path: Path, threads: int | None, logger, engine_cache_dir=None) -> DepthBackend:
    """Open one entry of :data:`AUTO_ORDER` and log it; raises on any failure."""
    if candidate == "tensorrt":
        # precision None: the engine's own, so that a stale INT8 engine is rebuilt as INT8.
        backend = TensorRTBackend(path, engine_cache_dir=engine_cache_dir, logger=logger)
        _say(logger, "info", f"depth backend: TensorRT {backend.precision} ({backend.path.name})")
        return backend
    path = _onnx_for(path, logger)
    if candidate == "onnxruntime-cuda":
        backend = OnnxRuntimeBackend(path, threads=threads, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        if not backend.providers or backend.providers[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"CUDAExecutionProvider did not activate (providers {backend.providers})")
        _say(logger, "info", f"depth backend: ONNX Runtime CUDA, {backend.precision} ({path.name})")
        return backend
    if candidate == "openvino":
        backend = OpenVINOBackend(path, threads=threads)
        _say(
            logger, "info",
            f"depth backend: OpenVINO {backend.version} {backend.device}, {backend.precision}, "
            f"threads={threads or 'default'} ({path.name})",
        )
        return backend
    backend = OnnxRuntimeBackend(path, threads=threads, providers=["CPUExecutionProvider"])
    _say(
        logger, "info",
        f"depth backend: ONNX Runtime CPU, {backend.precision}, threads={threads or 'default'} ({path.name})",
    )
    return backend


def create_backend(
    model_path: str | os.PathLike,
    kind: str = "auto",
    threads: int | None = None,
    logger=None,
    engine_cache_dir: str | os.PathLike | None = None,
) -> DepthBackend:
    """Open ``model_path`` with the backend ``kind`` and log which one was chosen.

    ``model_path``: an exported ``.onnx``, a TensorRT ``.engine`` (with sidecar), or (``torch`` only) a
    ``.safetensors`` bundle. ``auto`` tries :data:`AUTO_ORDER`, skipping what is not installed: TensorRT when it,
    cuda-python and a GPU are present; ONNX Runtime with CUDAExecutionProvider when available; OpenVINO on the CPU
    when installed; else ONNX Runtime on the CPU. ``threads`` sets the CPU backends' inference threads. A backend
    that fails to load falls back to the next one with a warning, except for a bad model file (ModelLoadError),
    which no other backend could read either. ``onnxruntime``: CUDA when available, else CPU.
    ``engine_cache_dir``: where TensorRT engines built at load go (default :data:`DEFAULT_ENGINE_CACHE_DIR`).
    """
    logger = logger or _log
    if kind not in BACKEND_KINDS:
        raise ValueError(f"backend kind must be one of {BACKEND_KINDS}, got {kind!r}")
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    suffix = path.suffix.lower()

    if kind == "torch" or (kind == "auto" and suffix == ".safetensors"):
        backend = load_entry_point_backend("torch", path, threads=threads)
        _say(logger, "info", f"depth backend: torch ({path.name})")
        return backend

    if kind == "auto":
        trt_reason = tensorrt_unavailable_reason()
        ov_reason = openvino_unavailable_reason()
        candidates = auto_candidates(tensorrt=trt_reason is None, ort_cuda=_ort_has_cuda(), openvino=ov_reason is None)
        for name, reason in (("TensorRT", trt_reason), ("OpenVINO", ov_reason)):
            if reason is not None:
                _say(logger, "info", f"{name} not used: {reason}")
    elif kind in ("tensorrt", "openvino"):
        reason = tensorrt_unavailable_reason() if kind == "tensorrt" else openvino_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"kind={kind!r} requested but {reason}")
        candidates = [kind]
    else:  # onnxruntime
        candidates = (["onnxruntime-cuda"] if _ort_has_cuda() else []) + ["onnxruntime-cpu"]

    for i, candidate in enumerate(candidates):
        last = i == len(candidates) - 1
        try:
            return _open(candidate, path, threads, logger, engine_cache_dir)
        except Exception as e:
            # A bad ONNX file is bad for every backend; TensorRT's own engine/sidecar problems are not.
            if last or (isinstance(e, ModelLoadError) and candidate != "tensorrt"):
                raise
            _say(logger, "warning",
                 f"{_LABELS[candidate]} backend failed ({e}); falling back to {_LABELS[candidates[i + 1]]}")
    raise AssertionError("unreachable: the last candidate returns or raises")
