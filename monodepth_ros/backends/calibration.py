"""INT8 calibration input: frames -> network inputs, as TensorRT's entropy calibrator
(:mod:`monodepth_ros.backends.tensorrt_build`) and ONNX Runtime's static quantisation both consume them.

Plain NumPy, tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from monodepth_ros.backends.base import preprocess


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
