"""``monodepth-train``: LightningCLI over :class:`MonoDepthModule` + :class:`DepthDataModule`.

    monodepth-train fit --config config/train/synthetic.yaml
    monodepth-train fit --config config/train/synthetic.yaml --ckpt_path last     # resume
    monodepth-train fit --config config/train/kitti_monodepth2.yaml --trainer.devices 4 --trainer.strategy ddp

What this adds to the stock CLI: the data module's size / offsets / stereo switch are linked into the model
(one source of truth), mixed precision is dropped when there is no CUDA device, checkpoints are loaded with
``weights_only=True`` unless asked otherwise, and the resolved config is handed to the model so the bundle
records how it was trained. A misspelt key (in the YAML or on the command line) is named with its full path and
the nearest valid key before anything is built (:mod:`monodepth_training.config_check`), and any other parse
error is one short message rather than a usage dump; both exit with status 2.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Any, NoReturn

import lightning as L
import torch
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from monodepth_training.callbacks import ResumableLast
from monodepth_training.config_check import check_config, config_from_args, format_problems
from monodepth_training.data import DepthDataModule
from monodepth_training.module import MonoDepthModule

from monodepth_ros.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    KeepIndentedLines,
    error_line,
    exit_codes_epilog,
)

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


# SIGTERM and the first Ctrl-C stop a fit cleanly (the step in flight is saved) with 128 + SIGTERM, not 130.
EXIT_STOPPED = 128 + signal.SIGTERM
EPILOG = exit_codes_epilog((
    *((c, m) for c, m in EXIT_CODES if c != EXIT_INTERRUPTED),
    (EXIT_STOPPED, "stopped by SIGTERM or Ctrl-C, the step in flight saved (resume with --ckpt_path last)")))


class _HelpFormatter(KeepIndentedLines, DefaultHelpFormatter):
    """jsonargparse's help formatter that keeps the exit-code table's indented lines."""


_HELP = {"epilog": EPILOG, "formatter_class": _HelpFormatter}


class ShortErrorParser(LightningArgumentParser):
    """jsonargparse's parser, but a parse error is the project's one line ``PROG: error: ... (see PROG --help)``
    (:mod:`monodepth_ros.cli_common`): jsonargparse printed the whole usage (some 90 lines) before it, which hid
    the error. ``JSONARGPARSE_DEBUG`` keeps the original."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        prog = (getattr(ex, "subcommand_parser", None) or self).prog.replace(" [options]", "")
        self.exit(EXIT_BAD_INPUT, f"{error_line(prog, message)} (see {prog} --help)\n")


class MonoDepthCLI(LightningCLI):
    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        # Misspelt keys first, with their full path and the nearest valid key, before jsonargparse (which cannot see
        # inside data.train / data.val) and before any model or dataset is built.
        argv = sys.argv[1:] if args is None else args
        found = config_from_args(argv, self.subcommands()) if isinstance(argv, (list, tuple)) else None
        if found is not None:
            subcommand, cfg = found
            if problems := check_config(cfg, subcommand):
                sys.stderr.write(format_problems(problems, f"{parser.prog} {subcommand}") + "\n")
                sys.exit(EXIT_BAD_INPUT)
        super().parse_arguments(parser, args)

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
        parser_class=ShortErrorParser,
        parser_kwargs={**_HELP, **{sub: dict(_HELP) for sub in MonoDepthCLI.subcommands()}},
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
        sys.exit(EXIT_STOPPED)


if __name__ == "__main__":
    main()
