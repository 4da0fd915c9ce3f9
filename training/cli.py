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
import sys
from typing import Any

import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from monodepth_training.data import DepthDataModule
from monodepth_training.module import MonoDepthModule

# Precisions that need a CUDA device to mean anything; on CPU they fall back to full precision.
_GPU_ONLY_PRECISIONS = {"16-mixed", "16", 16, "16-true"}


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
            ckpt_path=ckpt_path,
            weights_only=True if weights_only is None else weights_only,
            **kwargs,
        )


def run(args: list[str] | None = None) -> MonoDepthCLI:
    """Parse ``args`` (default: the command line), build everything and run the subcommand."""
    return MonoDepthCLI(
        MonoDepthModule,
        DepthDataModule,
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )


def main() -> None:
    """Console entry point ``monodepth-train``."""
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
