"""Inference backends. :func:`create_backend` picks TensorRT > ONNX Runtime CUDA > ONNX Runtime CPU for ``auto``
and logs its choice; ``torch`` (debugging) comes from the trainer through an entry point, so the runtime
never imports torch.
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
from monodepth_ros.backends.tensorrt_backend import TensorRTBackend
from monodepth_ros.backends.tensorrt_env import tensorrt_unavailable_reason

__all__ = [
    "BACKEND_KINDS",
    "DepthBackend",
    "ModelInfo",
    "ModelLoadError",
    "ModelMeta",
    "OUTPUT_CONVENTION",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "create_backend",
    "load_entry_point_backend",
    "preprocess",
    "read_onnx_meta",
    "read_onnx_model_meta",
    "read_sidecar",
    "tensorrt_unavailable_reason",
]

BACKEND_KINDS = ("auto", "onnxruntime", "tensorrt", "torch")
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


def _onnx_next_to_engine(path: Path) -> Path | None:
    side = read_sidecar(path)
    onnx_file = (side.tensorrt or {}).get("onnx_file") if side else None
    if onnx_file and path.with_name(onnx_file).is_file():
        return path.with_name(onnx_file)
    return None


def create_backend(
    model_path: str | os.PathLike,
    kind: str = "auto",
    threads: int | None = None,
    logger=None,
) -> DepthBackend:
    """Open ``model_path`` with the backend ``kind`` and log which one was chosen.

    ``model_path``: an exported ``.onnx``, a TensorRT ``.engine`` (with sidecar), or (``torch`` only) a
    ``.safetensors`` bundle. ``auto``: TensorRT when it, cuda-python and a GPU are present; else ONNX Runtime
    with CUDAExecutionProvider when available; else ONNX Runtime on CPU with ``threads`` intra-op threads.
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

    if kind in ("auto", "tensorrt"):
        reason = tensorrt_unavailable_reason()
        if reason is None:
            try:
                backend = TensorRTBackend(path, logger=logger if isinstance(logger, logging.Logger) else None)
                _say(logger, "info", f"depth backend: TensorRT {backend.precision} ({backend.path.name})")
                return backend
            except Exception as e:
                if kind == "tensorrt":
                    raise
                _say(logger, "warning", f"TensorRT backend failed ({e}); falling back to ONNX Runtime")
        elif kind == "tensorrt":
            raise RuntimeError(f"kind='tensorrt' requested but {reason}")
        else:
            _say(logger, "info", f"TensorRT not used: {reason}")

    if suffix in (".engine", ".plan"):
        onnx_path = _onnx_next_to_engine(path)
        if onnx_path is None:
            raise ModelLoadError(f"{path} is a TensorRT engine and TensorRT is unusable here; no ONNX beside it")
        _say(logger, "info", f"using {onnx_path.name}, the ONNX the engine {path.name} was built from")
        path = onnx_path

    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        try:
            cuda_first = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            backend = OnnxRuntimeBackend(path, threads=threads, providers=cuda_first)
            if backend.providers and backend.providers[0] == "CUDAExecutionProvider":
                _say(logger, "info", f"depth backend: ONNX Runtime CUDA, {backend.precision} ({path.name})")
                return backend
        except ModelLoadError:
            raise
        except Exception as e:
            _say(logger, "warning", f"ONNX Runtime CUDA failed ({e}); using the CPU")
    backend = OnnxRuntimeBackend(path, threads=threads, providers=["CPUExecutionProvider"])
    _say(
        logger, "info",
        f"depth backend: ONNX Runtime CPU, {backend.precision}, threads={threads or 'default'} ({path.name})",
    )
    return backend
