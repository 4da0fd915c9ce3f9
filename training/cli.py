"""``monodepth-train``: LightningCLI over :class:`MonoDepthModule` + :class:`DepthDataModule`.

    monodepth-train fit --config config/train/synthetic.yaml
    monodepth-train fit --config config/train/synthetic.yaml --ckpt_path last     # resume
    monodepth-train fit --config config/train/kitti_monodepth2.yaml --trainer.devices 4 --trainer.strategy ddp

What this adds to the stock CLI: the data module's size / offsets / stereo switch are linked into the model
(one source of truth), mixed precision is dropped when there is no CUDA device, checkpoints are loaded with
``weights_only=True`` unless asked otherwise, and the resolved config is handed to the model so the bundle
records how it was trained.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from monodepth_training.callbacks import ResumableLast
from monodepth_training.data import DepthDataModule
from monodepth_training.module import MonoDepthModule

# Precisions that need a CUDA device to mean anything; on CPU they fall back to full precision.
_GPU_ONLY_PRECISIONS = {"16-mixed", "16", 16, "16-true"}


def resolve_last(ckpt_path: str | None, trainer: L.Trainer) -> str | None:
    """``"last"`` -> the path of ResumableLast's ``last.ckpt`` when it exists; anything else unchanged.

    Lightning resolves ``"last"`` by looking for ``last*.ckpt`` in the folders of ModelCheckpoint callbacks only, so
    it would miss ``last.ckpt`` in a folder no ModelCheckpoint writes to, or prefer another newer ``last``."""
    if ckpt_path != "last":
        return ckpt_path
    for cb in trainer.callbacks:
        if isinstance(cb, ResumableLast) and (path := cb.path(trainer.default_root_dir)).is_file():
            return str(path)
    return ckpt_path


class MonoDepthCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for key in ("height", "width", "frame_offsets", "use_stereo"):
            parser.link_arguments(f"data.{key}", f"model.{key}")

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(str(self.subcommand), self.config)
        precision = cfg.trainer.get("precision")
        accelerator = str(cfg.trainer.get("accelerator", "auto"))
        if precision in _GPU_ONLY_PRECISIONS and (accelerator == "cpu" or not torch.cuda.is_available()):
            rank_zero_info(f"precision={precision!r} needs CUDA; training on CPU in 32-bit instead")
            cfg.trainer.precision = "32-true"

    def _run_config(self) -> dict[str, Any]:
        cfg = self.config.get(str(self.subcommand), self.config)
        return json.loads(json.dumps(cfg.clone().as_dict(), default=str))

    # LightningCLI calls a method named like the subcommand if the CLI has one.
    def fit(self, model, datamodule=None, ckpt_path=None, weights_only=None, **kwargs) -> None:
        model.run_config = self._run_config()
        if not any(isinstance(cb, ResumableLast) for cb in self.trainer.callbacks):
            rank_zero_warn("no ResumableLast callback: a kill or a stop loses every step since the last checkpoint, "
                           "and `--ckpt_path last` has no last.ckpt of the final step to resume from")
        ckpt_path = resolve_last(ckpt_path, self.trainer)
        # Our checkpoints hold only tensors and plain containers, so the safe loader suffices; a checkpoint
        # that needs arbitrary unpickling is refused unless the user explicitly passes --weights_only false.
        self.trainer.fit(
            model,
            datamodule=datamodule,
            ckpt_path=ckpt_path,
            weights_only=True if weights_only is None else weights_only,
            **kwargs,
        )

    def validate(self, model, datamodule=None, ckpt_path=None, weights_only=None, **kwargs) -> None:
        self.trainer.validate(
            model,
            datamodule=datamodule,
            ckpt_path=resolve_last(ckpt_path, self.trainer),
            weights_only=True if weights_only is None else weights_only,
            **kwargs,
        )


def run(args: list[str] | None = None) -> MonoDepthCLI:
    """Parse ``args`` (``None``: the command line, read by LightningCLI itself), build everything and run the
    subcommand."""
    return MonoDepthCLI(
        MonoDepthModule,
        DepthDataModule,
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )


def _show_trainer_info_logs() -> None:
    """Print the trainer's own INFO lines (what a dataset kept and dropped, ...) on stderr. Only the
    ``monodepth_training`` logger is set up, so other libraries keep their defaults."""
    log = logging.getLogger("monodepth_training")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main() -> None:
    """Console entry point ``monodepth-train``."""
    _show_trainer_info_logs()
    # No args: LightningCLI reads sys.argv, and warns when it is given args while sys.argv holds some too.
    try:
        run()
    except SIGTERMException:
        # Lightning ends a SIGTERM (or Ctrl-C) stop with SystemExit(None), status 0, which tells a scheduler or a
        # script (train_default.py) that training finished. 143 = 128 + SIGTERM, the status of a terminated job.
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
