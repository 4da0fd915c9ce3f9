"""Inference backends. ``create_backend`` (added by the export work) picks TensorRT > ORT-CUDA > ORT-CPU."""

from monodepth_ros.backends.base import DepthBackend, ModelInfo, preprocess

__all__ = ["DepthBackend", "ModelInfo", "preprocess"]
