"""Torch inference backend: runs a model bundle directly, without exporting it.

For development machines and checks of the exported graphs against the source network. Registered under the
``monodepth_ros.backends`` entry point as ``torch`` so the runtime can offer it without importing the trainer.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from monodepth_training.bundle_io import load_bundle
from monodepth_training.networks.export_wrapper import ExportHead

from monodepth_ros.backends.base import DepthBackend
from monodepth_ros.backends.model_meta import model_meta_from_bundle
from monodepth_ros.bundle import file_sha256


class TorchBackend(DepthBackend):
    """Depth backend over a ``.safetensors`` bundle, running its :class:`ExportHead` under inference mode (the
    validity output too when the network has one).

    ``device``: a torch device string ("cpu", "cuda", "cuda:1"). ``threads`` sets torch's intra-op thread
    count when given (a process-wide setting). Other keyword arguments are accepted and ignored so every
    backend can be created with the same call.
    """

    name = "torch"

    def __init__(self, model_path: str | os.PathLike, device: str = "cpu", threads: int | None = None, **_):
        depth_net, _pose, meta = load_bundle(model_path, map_location=device)
        model_meta = model_meta_from_bundle(meta, file_sha256(model_path))
        super().__init__(model_meta.to_model_info(name=meta.depth_net))
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device)
        self.meta = meta
        self.head = ExportHead(depth_net, meta.min_depth, meta.max_depth).to(self.device).eval()

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            out = self.head(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        disp, valid = out if isinstance(out, tuple) else (out, None)
        return disp.float().cpu().numpy(), None if valid is None else valid.float().cpu().numpy()

    def close(self) -> None:
        self.head = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
