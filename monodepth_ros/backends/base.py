"""The inference-backend interface shared by ONNX Runtime, OpenVINO, TensorRT and the (optional) torch backend.

Every backend runs a depth network exported with a fixed input size and returns, from one run of the graph, the
network's *scaled disparity* (1/m, Monodepth2 convention, before any scale policy) and, when the model has one,
its per-pixel *validity* (probability of a surface, 0 = sky; see :mod:`monodepth_ros.backends.model_meta`). The
shared pre-processing (resize to the model size, RGB uint8 -> NCHW float32 in [0, 1]) lives here, in one place.
Normalisation (mean/std) is part of the exported graph, so backends feed [0, 1] RGB.
"""

from __future__ import annotations

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
    has_validity: bool = False  # the model has the "valid" output: the backend returns a validity map


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


class DepthBackend:
    """Base class: a subclass runs the network on a preprocessed batch of one in :meth:`_run`.

    :meth:`_run` gives both outputs of one graph run; :meth:`_run_disp` is the disparity alone. Each calls the
    other by default, so a subclass overrides one of them: the runtime backends override ``_run``; a backend
    without a validity output may override just ``_run_disp`` (``_run`` then returns ``(disp, None)``). A
    subclass that overrides neither is refused when it is defined.
    """

    name = "base"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls._run is DepthBackend._run and cls._run_disp is DepthBackend._run_disp:
            raise TypeError(f"{cls.__name__} must implement _run (or, for a model without a validity output, "
                            "_run_disp)")

    def __init__(self, info: ModelInfo):
        self.info = info

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Network input (1, 3, h, w) float32 -> (scaled disparity (1, 1, h, w), validity (1, 1, h, w) in
        [0, 1] or None when the model has no validity output), both float32, from one run of the graph."""
        return self._run_disp(x), None

    def _run_disp(self, x: np.ndarray) -> np.ndarray:
        """Network input (1, 3, h, w) float32 -> scaled disparity (1, 1, h, w) float32."""
        return self._run(x)[0]

    def infer_outputs(self, rgb_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB uint8 (H, W, 3) -> (scaled disparity (h, w) float32, validity (h, w) float32 in [0, 1] or None)
        at model resolution, from one run of the network. Validity is None when the model has no such output."""
        x = preprocess(rgb_uint8, self.info.height, self.info.width)
        disp, valid = self._run(x)
        hw = (self.info.height, self.info.width)
        disp = np.asarray(disp, dtype=np.float32).reshape(hw)
        return disp, None if valid is None else np.asarray(valid, dtype=np.float32).reshape(hw)

    def infer_disp(self, rgb_uint8: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> scaled disparity (h, w) float32 at model resolution (see :meth:`infer_outputs`)."""
        return self.infer_outputs(rgb_uint8)[0]

    def infer(self, rgb_uint8: np.ndarray, out_size: tuple[int, int] | None = None) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> depth in model units (h, w) float32, ``scale`` applied, no median scaling.

        ``out_size`` = (height, width) resizes the *disparity* bilinearly before inversion, as the KITTI
        protocol does. Non-positive or non-finite disparity gives NaN depth. The validity output is not applied
        here (the evaluation's view of the depth); the node masks sky in :func:`monodepth_ros.pipeline.process_frame`.
        """
        from monodepth_ros.pipeline import depth_from_disp

        return depth_from_disp(self.infer_disp(rgb_uint8), out_size, self.info.scale)

    def close(self) -> None:  # an optional hook: backends holding GPU memory override it
        """Release resources (no-op by default)."""
