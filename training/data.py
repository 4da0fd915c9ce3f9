"""The LightningDataModule: builds the train / val datasets from config dicts and hands out DataLoaders.

Shared settings (training size, frame offsets, stereo, augmentation) are set once here and linked into the
model by the CLI, so the two can never disagree.
"""

from __future__ import annotations

import signal
from typing import Any

import lightning as L
from monodepth_training.augment import ColorJitter
from monodepth_training.datasets import build_dataset, parse_frame_offsets
from torch.utils.data import DataLoader


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker start: leave SIGTERM and SIGINT to the training process.

    SLURM's scancel and a shell's Ctrl-C signal the whole process group. A worker that dies of the signal makes the
    main process raise "DataLoader worker ... is killed by signal" before it can finish the step and save
    ``last.ckpt``; ignoring the signals here lets the main process stop cleanly, and the workers exit with it.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class DepthDataModule(L.LightningDataModule):
    """Train / val datasets for the depth trainer.

    Args:
        train: training source, e.g. ``{"source": "synthetic", "num_frames": 400, "seed": 0}`` or
            ``{"source": "kitti", "data_dir": ..., "split_file": ...}`` or ``{"source": "rosbag", "bag": ...}``.
        val: validation source (held out), loaded without augmentation and with depth GT by default
            (a rosbag source only has GT with a ``depth_topic``); ``None`` disables validation.
        height, width: training size (multiples of 32).
        frame_offsets: target first, then temporal sources (Monodepth2: ``[0, -1, 1]``).
        use_stereo: add the stereo partner as a source (data must have one).
        batch_size, val_batch_size, num_workers: DataLoader settings.
        color_jitter: ``ColorJitter`` fields (brightness, contrast, saturation, hue, prob) overriding Monodepth2's
            defaults (0.2, 0.2, 0.2, 0.1, p=0.5); ``{prob: 0}`` turns jitter off.
        flip_prob: horizontal flip probability for training.
        depth_gt_size: (height, width) the validation GT is resized to (nearest); ``None`` keeps its size
            (fine when all GT maps share one size, e.g. synthetic; KITTI needs e.g. ``[375, 1242]``).
    """

    def __init__(
        self,
        train: dict[str, Any],
        val: dict[str, Any] | None = None,
        *,
        height: int = 96,
        width: int = 320,
        frame_offsets: list[int] = (0, -1, 1),
        use_stereo: bool = False,
        batch_size: int = 12,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        color_jitter: dict[str, float] | None = None,
        flip_prob: float = 0.5,
        depth_gt_size: list[int] | None = None,
        pin_memory: bool = False,
    ):
        super().__init__()
        if not isinstance(train, dict) or "source" not in train:
            raise ValueError(f"data.train must be a dict with a 'source' key, got {train!r}")
        if val is not None and (not isinstance(val, dict) or "source" not in val):
            raise ValueError(f"data.val must be a dict with a 'source' key or null, got {val!r}")
        parse_frame_offsets(frame_offsets)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.train_dataset = None
        self.val_dataset = None

    def _shared(self) -> dict[str, Any]:
        hp = self.hparams
        return {
            "height": hp.height,
            "width": hp.width,
            "frame_offsets": list(hp.frame_offsets),
            "use_stereo": hp.use_stereo,
        }

    def build_train(self):
        hp = self.hparams
        jitter = ColorJitter(**(hp.color_jitter or {}))
        return build_dataset(hp.train, augment=True, flip_prob=hp.flip_prob, color_jitter=jitter, **self._shared())

    def build_val(self):
        hp = self.hparams
        spec = dict(hp.val)
        gt_default = bool(spec.get("depth_topic")) if spec["source"] == "rosbag" else True
        spec.setdefault("load_depth_gt", gt_default)
        return build_dataset(spec, augment=False, depth_gt_size=hp.depth_gt_size, **self._shared())

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_dataset is None:
            self.train_dataset = self.build_train()
        if stage in ("fit", "validate") and self.val_dataset is None and self.hparams.val is not None:
            self.val_dataset = self.build_val()

    def _loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            drop_last=shuffle,
            persistent_workers=hp.num_workers > 0,
            worker_init_fn=ignore_stop_signals,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return self._loader(self.val_dataset, self.hparams.val_batch_size or self.hparams.batch_size, shuffle=False)
