"""TensorRT engine build for ``monodepth-export --format tensorrt``: the trainer-side wrapper around
:func:`monodepth_ros.backends.tensorrt_build.build_engine` (which lives in the runtime, so a robot can rebuild
an engine after a TensorRT or GPU change), adding the calibration frames and a progress bar.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from monodepth_ros.backends.calibration import CalibrationBatches
from monodepth_ros.backends.model_meta import read_onnx_model_meta
from monodepth_ros.backends.tensorrt_build import build_engine, engine_path_for


def build_tensorrt(
    onnx: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fp16: bool = True,
    int8: bool = False,
    calib: list[np.ndarray] | None = None,
    workspace_mib: int = 1024,
    progress: bool = True,
) -> Path:
    """Build ``<out_dir>/<stem>.<fp32|fp16|int8>.engine`` (+ ``.json``; the timing and calibration caches beside it
    are named by TensorRT version and GPU, see ``monodepth_ros.backends.tensorrt_build``).

    ``calib``: RGB uint8 frames for the INT8 entropy calibrator (the same frames as ONNX Runtime INT8).
    Raises RuntimeError naming the reason when TensorRT, cuda-python or a GPU is missing.
    """
    onnx = Path(onnx)
    meta = read_onnx_model_meta(onnx)
    precision = "int8" if (int8 or meta.precision == "int8") else ("fp16" if fp16 else "fp32")
    engine = Path(out_dir) / engine_path_for(onnx, precision).name
    batches = CalibrationBatches(calib, meta.height, meta.width) if (int8 and calib) else None
    bar = None
    if batches is not None and progress:
        from tqdm import tqdm

        bar = tqdm(total=len(calib), desc="TensorRT INT8 calibration", unit="frame", dynamic_ncols=True)
    try:
        return build_engine(
            onnx, engine, fp16=fp16, int8=int8, calib=batches, workspace_mib=workspace_mib,
            progress=(lambda: bar.update(1)) if bar else None,
        )
    finally:
        if bar is not None:
            bar.close()
