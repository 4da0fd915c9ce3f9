"""The inference-backend interface shared by ONNX Runtime, TensorRT and the (optional) torch backend.

Every backend runs a depth network exported with a fixed input size and returns the network's *scaled
disparity* (1/m, Monodepth2 convention, before any scale policy). The shared pre-processing (resize to the
model size, RGB uint8 -> NCHW float32 in [0, 1]) lives here, in one place. Normalisation (mean/std) is part
of the exported graph, so backends feed [0, 1] RGB.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to interpret a backend's output."""

    height: int
    width: int
    min_depth: float
    max_depth: float
    scale_policy: str  # "relative" | "fixed" | "metric" (see monodepth_ros.bundle.BundleMeta)
    scale: float = 1.0
    name: str = ""
    source_sha256: str = ""


def resize_rgb(rgb_uint8: np.ndarray, height: int, width: int) -> np.ndarray:
    """Image (H, W, C) -> (height, width, C), the one resize between a camera frame and a network input.

    Area interpolation when shrinking, linear when enlarging; unchanged when the size already matches. The
    training datasets (and their caches) call this too, so training and inference see the same pixels.
    """
    H, W = rgb_uint8.shape[:2]
    if (H, W) == (height, width):
        return rgb_uint8
    interp = cv2.INTER_AREA if (H >= height and W >= width) else cv2.INTER_LINEAR
    return cv2.resize(rgb_uint8, (width, height), interpolation=interp)


def preprocess(rgb_uint8: np.ndarray, height: int, width: int) -> np.ndarray:
    """RGB image (H, W, 3) uint8 -> network input (1, 3, height, width) float32 in [0, 1] (:func:`resize_rgb`)."""
    if rgb_uint8.ndim != 3 or rgb_uint8.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb_uint8.shape}")
    if rgb_uint8.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB, got {rgb_uint8.dtype}")
    rgb_uint8 = resize_rgb(rgb_uint8, height, width)
    x = rgb_uint8.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


class DepthBackend(abc.ABC):
    """Base class: subclasses implement :meth:`_run_disp` on a preprocessed batch of one."""

    name = "base"

    def __init__(self, info: ModelInfo):
        self.info = info

    @abc.abstractmethod
    def _run_disp(self, x: np.ndarray) -> np.ndarray:
        """Network input (1, 3, h, w) float32 -> scaled disparity (1, 1, h, w) float32."""

    def infer_disp(self, rgb_uint8: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> scaled disparity (h, w) float32 at model resolution."""
        x = preprocess(rgb_uint8, self.info.height, self.info.width)
        disp = np.asarray(self._run_disp(x), dtype=np.float32)
        return disp.reshape(self.info.height, self.info.width)

    def infer(self, rgb_uint8: np.ndarray, out_size: tuple[int, int] | None = None) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> depth in model units (h, w) float32, ``scale`` applied, no median scaling.

        ``out_size`` = (height, width) resizes the *disparity* bilinearly before inversion, as the KITTI
        protocol does. Non-positive or non-finite disparity gives NaN depth.
        """
        from monodepth_ros.pipeline import depth_from_disp

        return depth_from_disp(self.infer_disp(rgb_uint8), out_size, self.info.scale)

    def close(self) -> None:  # noqa: B027 - optional hook; backends holding GPU memory override it
        """Release resources (no-op by default)."""
