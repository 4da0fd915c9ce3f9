"""Trainer callbacks: the resumable ``last.ckpt`` (every N steps and whenever a run stops), model-bundle export
(at each new best validation score and at the end of fit) and depth previews in TensorBoard. All are thin:
Lightning writes the checkpoint, the module builds the bundle, ``monodepth_ros.visualize`` colours the depth.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

LAST_CKPT = "last.ckpt"


def is_stop_request(exception: BaseException, received_sigterm: bool) -> bool:
    """Whether ``exception`` ended fit because someone asked the run to stop (SIGTERM from SLURM / Kubernetes /
    ``kill``, or Ctrl-C, which :class:`ResumableLast` turns into the same request), not because it crashed.

    Lightning raises ``SIGTERMException`` at the next step boundary after a SIGTERM; anything else raised while a
    SIGTERM is pending (a DataLoader worker killed by the same signal) is part of that stop too."""
    return isinstance(exception, SIGTERMException) or received_sigterm


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _as_next_epoch_start(fit_loop: dict[str, Any]) -> None:
    """Rewrite the fit loop's state, saved at the end of an epoch, as the start of the next one, which Lightning
    resumes exactly whether or not the resumed run has a ``max_steps``.

    As saved (in on_train_epoch_end, or later), the epoch's counters say "processed, maybe not completed" and the
    batch counters "n of n batches done". Lightning (2.6) resumes that at the next epoch only when it does not
    *restart* its loops (``FitLoop.restarting``), i.e. when the resumed run has no ``max_steps``. With one, the
    epoch loop restarts with n of n batches done yet does not end until it has skipped a validation: without
    validation it runs batch n+1 (from a fresh iterator, batch_idx n); with it, the epoch ends without a batch but
    its epoch-end hooks run again and it is counted twice, so a later resume skips the rest of an epoch. Here the
    epoch is completed and the per-epoch
    counters are reset, as ``_TrainingEpochLoop.reset`` does when an epoch starts; both ways then start the next
    epoch at batch 0 (on_train_epoch_start included). The totals, the schedules and the logging step stay as saved
    (with a ``max_steps`` and validation, Lightning still skips a validation first, which moves its logging step,
    and only it, one ahead).
    """
    epoch = fit_loop["epoch_progress"]
    for counts in (epoch["total"], epoch["current"]):
        counts["completed"] = counts["processed"]  # FitLoop.on_advance_end does this right after the hooks
    batches = fit_loop["epoch_loop.batch_progress"]
    _zero(batches["current"])
    batches["is_last_batch"] = False
    _zero(fit_loop["epoch_loop.scheduler_progress"]["current"])
    for progress in fit_loop["epoch_loop.automatic_optimization.optim_progress"]["optimizer"].values():
        _zero(progress["current"])
    _zero(fit_loop["epoch_loop.val_loop.batch_progress"]["total"])  # counts the validation batches of an epoch


def _zero(counts: dict[str, int]) -> None:
    for key in counts:
        counts[key] = 0


class ResumableLast(Checkpoint):
    """The one owner of ``<dirpath>/last.ckpt``: a full Lightning checkpoint (weights, optimiser, LR schedule, loop
    position, callback state such as BundleExport's best score) that ``--ckpt_path last`` resumes from.

    It is written every ``every_n_train_steps`` optimiser steps, so a SIGKILL (power cut, OOM kill) loses at most
    that many steps, and again whenever fit stops with the final step: at its end (``max_steps``, ``max_epochs``,
    ``max_time``, early stopping), on SIGTERM, and on Ctrl-C. The first Ctrl-C during training asks for the same
    stop as SIGTERM (finish the step, save, exit); a second one interrupts at once. A crash (any other exception)
    does not overwrite ``last.ckpt``: the state after a failed step is not worth resuming from. A save due at an
    epoch's last batch is made at the end of the epoch, after its validation, and resumes at the next epoch's first
    batch.

    Each write goes to a temporary file that replaces ``last.ckpt`` in one rename, so a kill during the write
    leaves the previous ``last.ckpt`` whole. Only global rank 0 writes.

    Args:
        dirpath: folder of ``last.ckpt``; ``None`` = ``<trainer.default_root_dir>/checkpoints``.
        every_n_train_steps: the interval a SIGKILL may lose, in optimiser steps.
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 100):
        super().__init__()
        if every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1, got {every_n_train_steps}")
        self.dirpath = dirpath
        self.every_n_train_steps = every_n_train_steps
        self._start_step: int | None = None  # None until training starts: nothing to save before it
        self._saved_step: int | None = None
        self._at_epoch_start = False  # the checkpoint being written is to resume at the start of the next epoch
        self._previous_sigint: Any = None

    def path(self, default_root_dir: str | os.PathLike) -> Path:
        """Where ``last.ckpt`` is: ``dirpath``, or ``<default_root_dir>/checkpoints`` like ModelCheckpoint's."""
        return (Path(self.dirpath) if self.dirpath else Path(default_root_dir) / "checkpoints") / LAST_CKPT

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        path = self.path(trainer.default_root_dir)
        # Two writers of one last.ckpt was the bug this callback replaces: a ModelCheckpoint's own `last` (a link
        # to its newest top-k file) overwrote the newest step whenever validation ran without a new best.
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath \
                    and Path(cb.dirpath).resolve() == path.parent.resolve():
                raise ValueError(f"ModelCheckpoint(save_last={cb.save_last!r}) in {cb.dirpath} would overwrite "
                                 f"{LAST_CKPT}, which ResumableLast owns: drop its save_last")
        if trainer.is_global_zero:
            self._partial(path).unlink(missing_ok=True)  # left by a kill during a write

    @staticmethod
    def _partial(path: Path) -> Path:
        # Not `last*.ckpt`: Lightning's `ckpt_path="last"` lookup must never pick a half-written file.
        return path.with_name(f".{path.name}.partial")

    def _save(self, trainer: L.Trainer) -> None:
        if self._start_step is None or trainer.global_step <= self._start_step or trainer.fast_dev_run:
            return  # no step trained in this run: last.ckpt (if any) already holds this state
        path = self.path(trainer.default_root_dir)
        partial = self._partial(path)
        # Every rank calls this (a sharded strategy gathers here); rank 0 writes. Not weights only: resuming needs
        # the optimiser, the LR schedule and the loops.
        self._at_epoch_start = self._epoch_done(trainer)
        try:
            trainer.save_checkpoint(partial, weights_only=False)
        finally:
            self._at_epoch_start = False
        if trainer.is_global_zero:
            _fsync(partial)  # the data is on disk before the rename makes it last.ckpt
            os.replace(partial, path)
        self._saved_step = trainer.global_step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step
        self._saved_step = None
        self._redirect_ctrl_c()

    # Where to save matters as much as saving: a checkpoint written after fit has stopped records a cut epoch as
    # completed and the next epoch as already under way, so a resume starts an epoch late or runs a short epoch.
    # Within an epoch, Lightning resumes exactly from a batch end: a stop is saved at the batch end where it becomes
    # known (this callback runs after the other callbacks, Lightning's Timer included). An epoch's last batch is
    # different: a batch-end checkpoint there resumes past the epoch's validation and never starts the next epoch
    # (no on_train_epoch_start, its epoch counters stay one behind, so a later mid-epoch checkpoint, resumed without
    # max_steps, restarts its epoch). So whatever is due at the last batch, the interval or a stop, is saved at the
    # epoch's end, after its validation, and that checkpoint is written as the start of the next epoch (see
    # on_save_checkpoint). on_train_end and on_exception only catch a stop that neither saw (a SIGTERM during
    # validation, say).
    def _stop_pending(self, trainer: L.Trainer) -> bool:
        # Every rank must take the same decision (saving is collective): rank 0's SIGTERM counts for all.
        sigterm = trainer.strategy.broadcast(trainer.received_sigterm)
        return trainer.should_stop or sigterm or 0 <= trainer.max_steps <= trainer.global_step

    @staticmethod
    def _last_batch(trainer: L.Trainer) -> bool:
        # Lightning's own test when it restores a checkpoint (the same on every rank: the sampler evens them out).
        return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch

    @classmethod
    def _epoch_done(cls, trainer: L.Trainer) -> bool:
        """The epoch ran to its last batch and past its validation (`processed` counts it from there on)."""
        progress = trainer.fit_loop.epoch_progress.current
        return cls._last_batch(trainer) and progress.processed == progress.started

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self._last_batch(trainer):
            return  # saved at the epoch's end, if due
        # With gradient accumulation the step repeats over several batches: save once, after its optimiser step.
        if step != self._saved_step and (step % self.every_n_train_steps == 0 or self._stop_pending(trainer)):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._last_batch(trainer):
            return  # a cut epoch: saved at the batch end where it stopped
        step = trainer.global_step
        final_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        # A stop known here: at the last batch (max_time, max_steps, SIGTERM) or in this hook (EarlyStopping, a
        # Timer with interval="epoch"; this callback runs after them).
        if step != self._saved_step and (step % self.every_n_train_steps == 0 or final_epoch
                                         or self._stop_pending(trainer)):
            self._save(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # Called for every checkpoint the trainer writes (a ModelCheckpoint's too): only last.ckpt is rewritten.
        if self._at_epoch_start:
            _as_next_epoch_start(checkpoint["loops"]["fit_loop"])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_ctrl_c()
        if trainer.global_step != self._saved_step:
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_ctrl_c()
        if is_stop_request(exception, trainer.received_sigterm) and trainer.global_step != self._saved_step:
            self._save(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_ctrl_c()

    # Ctrl-C raises KeyboardInterrupt wherever Python happens to be, possibly halfway through an optimiser step, so
    # its state is not a step's. SIGTERM has Lightning's handler, which stops at the next step boundary: the first
    # Ctrl-C is forwarded to it. Only where Lightning installed that handler (the main thread, not Windows) and the
    # user has not installed a SIGINT handler of their own.
    def _redirect_ctrl_c(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            return
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return
        self._previous_sigint = signal.signal(signal.SIGINT, self._on_ctrl_c)

    def _restore_ctrl_c(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) == self._on_ctrl_c:
                signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def _on_ctrl_c(self, signum: int, frame: Any) -> None:
        self._restore_ctrl_c()  # a second Ctrl-C interrupts at once
        rank_zero_info("Ctrl-C: stopping after this step and saving last.ckpt (press Ctrl-C again to stop now)")
        signal.raise_signal(signal.SIGTERM)


class BundleExport(L.Callback):
    """Write the self-describing model bundle (``.safetensors``, see :mod:`monodepth_ros.bundle`).

    - ``<dirpath>/best.safetensors`` whenever ``monitor`` improves after a validation run
      (the same criterion as the top-k ModelCheckpoint, evaluated independently of its ordering);
    - ``<dirpath>/last.safetensors`` when fit ends, and when it is stopped (SIGTERM, Ctrl-C), so a stopped run
      still leaves a model. Only ``last.ckpt`` (:class:`ResumableLast`) can resume training.

    Then it prints where the bundles are and the ``monodepth-export`` command that turns one into a model for the
    node (:func:`bundle_summary`).

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
            print(bundle_summary(self._dir(trainer), self.monitor, self.best_score, stopped=reason != "fit_end"),
                  flush=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._export_last(trainer, pl_module, "fit_end")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # A raw KeyboardInterrupt (a second Ctrl-C) may stop mid-step; a model is still better than none here.
        if isinstance(exception, KeyboardInterrupt) or is_stop_request(exception, trainer.received_sigterm):
            self._export_last(trainer, pl_module, "interrupted")

    # The best score survives a resume, so a worse model after resuming does not overwrite best.safetensors.
    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_path": self.best_path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score")
        self.best_path = state_dict.get("best_path")


def bundle_summary(dirpath: str | os.PathLike, monitor: str | None = None, best_score: float | None = None,
                   stopped: bool = False) -> str:
    """What a fit prints at its end: the bundles in ``dirpath`` that exist (last, best), why there is no best
    yet where ``monitor`` would pick one, and the command that exports one (best when there is one) for the node."""
    paths = {name: Path(dirpath) / f"{name}.safetensors" for name in ("last", "best")}
    lines = [f"Training {'stopped' if stopped else 'finished'}. Model bundles:"]
    if paths["last"].is_file():
        lines.append(f"  last: {paths['last']}")
    if paths["best"].is_file():
        score = f"  ({monitor} {best_score:.4g})" if monitor and best_score is not None else ""
        lines.append(f"  best: {paths['best']}{score}")
    elif monitor:
        lines.append(f"  best: none yet (written when a validation run improves {monitor})")
    chosen = next((p for p in (paths["best"], paths["last"]) if p.is_file()), None)
    if chosen is None:
        lines.append(f"  none in {dirpath}")
        return "\n".join(lines)
    lines.append("Export one for the node with:")
    lines.append(f"  monodepth-export --model {shlex.quote(str(chosen))} --format onnx --out models/")
    return "\n".join(lines)


def _val_metrics(trainer: L.Trainer) -> dict[str, Any]:
    vals = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
    return {"val_metrics": vals} if vals else {}


def colorize(depth_m: np.ndarray, min_m: float, max_m: float) -> np.ndarray:
    """(H, W) depth in metres -> (H, W, 3) uint8 RGB with the project's fixed colour map."""
    from monodepth_ros.visualize import colorize_depth

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
