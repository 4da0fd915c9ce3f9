"""Parity of an exported ONNX model with the PyTorch network it came from: the inputs it is checked on and the
measurement (max abs disparity difference, ONNX Runtime on CPU)."""

from __future__ import annotations

import os

import numpy as np
from monodepth_training.export.calibration import synthetic_frames

from monodepth_ros.backends.base import preprocess

PARITY_ATOL = 1e-4


def parity_inputs(height: int, width: int, n_random: int = 2, n_synthetic: int = 2, seed: int = 0) -> list:
    """Network inputs (1, 3, H, W) float32 for parity checks: uniform noise, then synthetic street frames."""
    rng = np.random.default_rng(seed)
    xs = [rng.random((1, 3, height, width), dtype=np.float32) for _ in range(n_random)]
    if n_synthetic:
        xs += [preprocess(f, height, width) for f in synthetic_frames(n_synthetic, height, width, start=500)]
    return xs


def torch_vs_onnx_max_diff(head, onnx_path: str | os.PathLike, inputs: list[np.ndarray]) -> float:
    """Max |disp_torch - disp_onnxruntime| over ``inputs`` ((1, 3, H, W) float32 each), ORT on CPU; for a head
    with a validity output (an ``ExportHead`` returning (disp, valid)), the max over both outputs."""
    import torch

    from monodepth_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(onnx_path, threads=None)
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            ref = head(torch.from_numpy(x))
            refs = ref if isinstance(ref, tuple) else (ref,)
            got = backend._run(x)
            if len(refs) == 2 and got[1] is None:
                raise ValueError(f"{onnx_path} has no validity output, but its network has a validity head")
            for r, g in zip(refs, got):
                worst = max(worst, float(np.max(np.abs(r.numpy() - g))))
    return worst
