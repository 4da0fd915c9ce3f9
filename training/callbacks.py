"""Trainer callbacks: model-bundle export (at each new best validation score and at the end of fit) and
depth previews in TensorBoard. Both are thin: the module builds the bundle, ``monodepth_ros.visualize``
colours the depth.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch


class BundleExport(L.Callback):
    """Write the self-describing model bundle (``.safetensors``, see :mod:`monodepth_ros.bundle`).

    - ``<dirpath>/best.safetensors`` whenever ``monitor`` improves after a validation run
      (the same criterion as the top-k ModelCheckpoint, evaluated independently of its ordering);
    - ``<dirpath>/last.safetensors`` when fit ends (also after an interrupt, so Ctrl-C still leaves a model).

    Args:
        dirpath: folder for the bundles; ``None`` = ``<trainer.default_root_dir>/bundles``.
        monitor, mode: the validation metric and direction defining "best" (``None`` disables best export).
    """

    def __init__(self, dirpath: str | None = None, monitor: str | None = "val/abs_rel", mode: str = "min"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.dirpath = dirpath
        self.monitor = monitor
        self.mode = mode
        self.best_score: float | None = None
        self.best_path: str | None = None
        self.last_path: str | None = None

    def _dir(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "bundles"

    def _better(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score < self.best_score if self.mode == "min" else score > self.best_score

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.monitor is None or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        score = float(value)
        if not math.isfinite(score) or not self._better(score):
            return
        self.best_score = score
        if trainer.is_global_zero:
            path = self._dir(trainer) / "best.safetensors"
            pl_module.export_bundle(path, {"selected_by": {self.monitor: score}, **_val_metrics(trainer)})
            self.best_path = str(path)

    def _export_last(self, trainer: L.Trainer, pl_module: L.LightningModule, reason: str) -> None:
        if trainer.is_global_zero:
            path = self._dir(trainer) / "last.safetensors"
            pl_module.export_bundle(path, {"exported_on": reason, **_val_metrics(trainer)})
            self.last_path = str(path)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._export_last(trainer, pl_module, "fit_end")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self._export_last(trainer, pl_module, "interrupted")

    # The best score survives a resume, so a worse model after resuming does not overwrite best.safetensors.
    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_path": self.best_path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score")
        self.best_path = state_dict.get("best_path")


def _val_metrics(trainer: L.Trainer) -> dict[str, Any]:
    vals = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
    return {"val_metrics": vals} if vals else {}


def _fallback_colorize(depth_m: np.ndarray, min_m: float, max_m: float) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8, near = bright, NaN/0 -> black (used when monodepth_ros.visualize is
    missing)."""
    import cv2

    with np.errstate(divide="ignore", invalid="ignore"):
        inv = (1.0 / np.clip(depth_m, min_m, max_m) - 1.0 / max_m) / (1.0 / min_m - 1.0 / max_m)
    valid = np.isfinite(depth_m) & (depth_m > 0)
    grey = np.where(valid, np.clip(inv, 0, 1) * 255, 0).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)
    rgb[~valid] = 0
    return rgb


def colorize(depth_m: np.ndarray, min_m: float, max_m: float) -> np.ndarray:
    """(H, W) depth in metres -> (H, W, 3) uint8 RGB with the project's fixed colour map."""
    try:
        from monodepth_ros.visualize import colorize_depth
    except ImportError:
        return _fallback_colorize(depth_m, min_m, max_m)
    return colorize_depth(depth_m, min_m, max_m)


def preview_panel(
    rgb01: torch.Tensor, depth: torch.Tensor, gt: torch.Tensor | None, max_images: int = 4
) -> np.ndarray:
    """Stack rows of [image | predicted depth | GT depth]: rgb01 (B, 3, H, W), depth (B, 1, H, W),
    gt (B, 1, Hg, Wg) or None -> (rows*H, cols*W, 3) uint8. Depths are coloured over a shared range taken
    from the prediction (relative models have no metric range)."""
    import cv2

    n = min(max_images, rgb01.shape[0])
    rows = []
    for i in range(n):
        img = (rgb01[i].detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        d = depth[i, 0].detach().float().cpu().numpy()
        lo, hi = np.percentile(d[np.isfinite(d)], [2, 98]) if np.isfinite(d).any() else (0.1, 100.0)
        lo, hi = max(float(lo), 1e-3), max(float(hi), float(lo) * 1.01 + 1e-3)
        tiles = [img, colorize(d, lo, hi)]
        if gt is not None:
            g = gt[i, 0].detach().float().cpu().numpy()
            g = cv2.resize(g, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
            if np.any(g > 0):
                # Put the GT on the prediction's scale so colours are comparable.
                scale = np.median(d[g > 0]) / np.median(g[g > 0])
                g = np.where(g > 0, g * scale, 0)
            tiles.append(colorize(np.where(g > 0, g, np.nan), lo, hi))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


class DepthPreview(L.Callback):
    """Log [image | depth | GT] panels to TensorBoard: the first validation batch of every validation run,
    and the current training batch every ``every_n_train_steps`` steps (0 disables the training previews)."""

    def __init__(self, max_images: int = 4, every_n_train_steps: int = 0):
        super().__init__()
        self.max_images = max_images
        self.every_n_train_steps = every_n_train_steps

    @staticmethod
    def _writer(trainer: L.Trainer):
        for logger in trainer.loggers:
            exp = getattr(logger, "experiment", None)
            if hasattr(exp, "add_image"):
                return exp
        return None

    def _log(self, trainer: L.Trainer, tag: str, rgb01, depth, gt) -> None:
        writer = self._writer(trainer)
        if writer is None or not trainer.is_global_zero:
            return
        panel = preview_panel(rgb01, depth, gt, self.max_images)
        writer.add_image(tag, panel, global_step=trainer.global_step, dataformats="HWC")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not isinstance(outputs, dict) or "disp" not in outputs:
            return
        self._log(trainer, "val/preview", batch["color"][0], 1.0 / outputs["disp"], batch.get("depth_gt"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.every_n_train_steps
        if n <= 0 or not isinstance(outputs, dict) or "depth" not in outputs or trainer.global_step % n:
            return
        self._log(trainer, "train/preview", batch["color"][0], outputs["depth"], None)
