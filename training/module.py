"""The LightningModule: depth + pose networks from the registry, the Monodepth2 loss, Adam + StepLR, and
validation with the project's KITTI-protocol metrics. Lightning's Trainer owns the loop, devices, precision,
checkpoints and logging; this file only says what one step computes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import lightning as L
import numpy as np
import torch
from monodepth_training.bundle_io import init_from_bundle, save_bundle
from monodepth_training.geometry import sigmoid_to_disp
from monodepth_training.losses import ExtraLossConfig, build_featurenet, resolve_scale_policy, total_loss
from monodepth_training.networks.registry import build_depth_net, build_pose_net, set_initial_depth

from monodepth_ros.bundle import SCALE_POLICIES, BundleMeta
from monodepth_ros.evaluation.metrics import METRIC_NAMES, evaluate_image, summarize, valid_mask
from monodepth_ros.pipeline import depth_from_disp


class MonoDepthModule(L.LightningModule):
    """Self-supervised monocular depth (Monodepth2 recipe) with pluggable registered networks.

    Args:
        depth_net, depth_kwargs: registered depth network name and constructor arguments
            (e.g. ``{"num_layers": 18, "pretrained_path": "weights/resnet18.pth"}``).
        pose_net, pose_kwargs: registered pose network (unused when training on stereo pairs only).
        height, width, frame_offsets, use_stereo: linked from the data module by the CLI.
        min_depth, max_depth: range of the sigmoid -> disparity mapping (metres, or model units if relative).
        lr, weight_decay: Adam.
        lr_step_epochs, lr_gamma: StepLR (Monodepth2: x0.1 after 15 epochs).
        ssim_alpha, smoothness_weight, automask, min_reprojection, full_res_multiscale: loss switches, see
            :func:`monodepth_training.losses.monodepth2_loss`.
        scale_policy, scale: written into the model bundle (relative | fixed | metric); validation uses
            median scaling for ``relative`` and the fixed factor otherwise. ``auto`` (the default) follows the
            supervision: ``metric`` with velocity supervision, ``fixed`` (scale 1, the baseline is in metres)
            with a stereo source, else ``relative``.
        feature_metric_weight: FeatDepth's feature-metric reprojection term (paper: 1e-3; 0 = off); needs
            ``featurenet_mode`` joint (FeatureNet trained alongside, from ``featurenet_kwargs``) or pretrained
            (frozen, from ``featurenet_path`` written by ``networks.featurenet.save_featurenet``).
        velocity_weight: PackNet-SfM's | ||t|| - v dt | on the pose translation (PackNet's default 0.1; 0 = off);
            needs speed and time stamps in the data (synthetic, KITTI oxts, a bag's odometry topic).
        velocity_warmup_steps: photometric-only steps before the velocity term starts (see
            ``ExtraLossConfig.velocity_warmup_steps`` for why a from-scratch run needs them).
        depth_supervision_weight: log-L1 to the depth GT on the training samples that carry it (a ``mix`` with the
            synthetic world: exact rendered depth; 0 = off). Makes the model metric (``auto`` -> ``metric``).
        feature_metric_warmup_steps: steps before the feature-metric term reaches the depth and pose networks
            (a joint FeatureNet trains from step 0; see ``ExtraLossConfig.feature_metric_warmup_steps``).
        gt_pose_warp: warp the source frames with the samples' known relative poses (``T_gt``: KITTI odometry GT,
            the synthetic world) instead of the pose network's, per sample where known (the pose net elsewhere).
            Known poses are in metres, so ``auto`` -> ``metric``.
        pose_supervision_weight: ||t - t_gt||_1 + ||R - R_gt||_F on the pose network where ``T_gt`` is known (0 =
            off); with ``gt_pose_warp`` it is what still trains the bundle's pose net.
        explainability_weight: with a pose net that predicts explainability masks (``sfmlearner_pose``), use
            SfMLearner's mask-weighted photometric term and its regulariser at this weight (paper: 0.2; 0 = off).
        See :mod:`monodepth_training.losses.total`.
        eval_min_depth, eval_max_depth, eval_crop: KITTI-protocol evaluation range (GT cap) and crop.
        init_depth: start the untrained depth network at this depth (model units) instead of the sigmoid
            midpoint (~2 * min_depth); see :func:`networks.registry.set_initial_depth`. ``None`` = Monodepth2's
            plain init. From scratch on the synthetic world this is what lets monocular training learn on a CPU
            budget (docs/training.md); with ImageNet-pretrained encoders it matters less.
        init_from: a model bundle (``.safetensors``) to start from instead of random weights: fine-tuning, e.g.
            a model trained before (``make train-default``'s bundle) on your own bag. Its architectures must equal
            ``depth_net``/``pose_net`` and their kwargs (:func:`monodepth_training.bundle_io.init_from_bundle`).
            The optimiser, schedule and step count start fresh; to continue an interrupted run use
            ``--ckpt_path last`` instead.
    """

    def __init__(
        self,
        *,
        depth_net: str = "monodepth2",
        depth_kwargs: dict[str, Any] | None = None,
        pose_net: str = "monodepth2_pose",
        pose_kwargs: dict[str, Any] | None = None,
        height: int = 96,
        width: int = 320,
        frame_offsets: list[int] | tuple[int, ...] = (0, -1, 1),
        use_stereo: bool = False,
        min_depth: float = 0.1,
        max_depth: float = 100.0,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        lr_step_epochs: int = 15,
        lr_gamma: float = 0.1,
        ssim_alpha: float = 0.85,
        smoothness_weight: float = 1e-3,
        automask: bool = True,
        min_reprojection: bool = True,
        full_res_multiscale: bool = True,
        scale_policy: str = "auto",
        scale: float = 1.0,
        eval_min_depth: float = 1e-3,
        eval_max_depth: float = 80.0,
        eval_crop: str | None = None,
        feature_metric_weight: float = 0.0,
        featurenet_mode: str = "off",
        featurenet_path: str | None = None,
        featurenet_kwargs: dict[str, Any] | None = None,
        velocity_weight: float = 0.0,
        explainability_weight: float = 0.0,
        init_depth: float | None = None,
        velocity_warmup_steps: int = 0,
        depth_supervision_weight: float = 0.0,
        gt_pose_warp: bool = False,
        pose_supervision_weight: float = 0.0,
        feature_metric_warmup_steps: int = 0,
        init_from: str | None = None,
    ):
        super().__init__()
        if height % 32 or width % 32:
            raise ValueError(f"training size {width}x{height} must be a multiple of 32 (encoder strides)")
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        if scale_policy not in (*SCALE_POLICIES, "auto"):
            raise ValueError(f"scale_policy must be one of {SCALE_POLICIES}, got {scale_policy!r}")
        frame_offsets = [int(o) for o in frame_offsets]
        if not frame_offsets or frame_offsets[0] != 0:
            raise ValueError(f"frame_offsets must start with 0 (the target), got {frame_offsets}")
        if len(frame_offsets) == 1 and not use_stereo:
            raise ValueError("no source frame: give temporal offsets (e.g. [0, -1, 1]) and/or use_stereo")
        self.save_hyperparameters()
        self.depth = build_depth_net(depth_net, **(depth_kwargs or {}))
        if init_depth is not None:
            set_initial_depth(self.depth, float(init_depth), min_depth, max_depth)
        self.temporal_offsets = frame_offsets[1:]
        self.pose = build_pose_net(pose_net, **(pose_kwargs or {})) if self.temporal_offsets else None
        if init_from is not None:
            # Loaded before a resumed checkpoint (if any) overwrites the weights, so resuming stays exact.
            for note in init_from_bundle(init_from, self.depth, self.pose):
                L.pytorch.utilities.rank_zero_info(f"init_from: {note}")
        self.extras = ExtraLossConfig(feature_metric_weight=feature_metric_weight, velocity_weight=velocity_weight,
                                      explainability_weight=explainability_weight, featurenet_mode=featurenet_mode,
                                      velocity_warmup_steps=velocity_warmup_steps,
                                      depth_supervision_weight=depth_supervision_weight,
                                      gt_pose_warp=bool(gt_pose_warp), pose_supervision_weight=pose_supervision_weight,
                                      feature_metric_warmup_steps=feature_metric_warmup_steps)
        if velocity_weight > 0 and not self.temporal_offsets:
            raise ValueError("velocity_weight > 0 needs temporal source frames (a pose network to supervise)")
        if (gt_pose_warp or pose_supervision_weight > 0) and not self.temporal_offsets:
            raise ValueError("gt_pose_warp / pose_supervision_weight need temporal source frames (frame_offsets)")
        if gt_pose_warp and pose_supervision_weight == 0:
            L.pytorch.utilities.rank_zero_warn(
                "gt_pose_warp without pose_supervision_weight: the pose network learns nothing from samples with "
                "known poses, so the bundle's pose net stays untrained on them (set pose_supervision_weight, e.g. 1)",
                stacklevel=2)
        # Training aid only (not in the bundle); a submodule so joint mode optimises it and checkpoints hold it.
        self.featurenet = build_featurenet(featurenet_mode, featurenet_path, featurenet_kwargs)
        if scale_policy == "auto":
            self.scale_policy, self.scale = resolve_scale_policy(scale_policy, velocity_weight, use_stereo,
                                                                 depth_supervision_weight, bool(gt_pose_warp))
        else:
            self.scale_policy, self.scale = scale_policy, float(scale)
        if scale_policy == "relative" and (velocity_weight > 0 or depth_supervision_weight > 0 or gt_pose_warp):
            # The supervision makes the depth metric, but a relative bundle tells evaluation to median-scale it
            # and the node to treat it as scale-free: the metric scale would be thrown away without a word.
            follows, _ = resolve_scale_policy("auto", velocity_weight, use_stereo, depth_supervision_weight,
                                              bool(gt_pose_warp))
            L.pytorch.utilities.rank_zero_warn(
                f"scale_policy 'relative' with metric supervision (velocity_weight={velocity_weight}, "
                f"depth_supervision_weight={depth_supervision_weight}, gt_pose_warp={bool(gt_pose_warp)}): the model "
                f"learns metres but its bundle will say relative (up to an unknown scale, median-scaled in "
                f"evaluation). scale_policy 'auto' gives {follows!r}.", stacklevel=2)
        # Set by the CLI (full run config) and at fit start (the training camera); both go into the bundle.
        self.run_config: dict[str, Any] | None = None
        self.intrinsics_norm: list[list[float]] | None = None
        self._val_per_image: list[dict[str, float]] = []

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, rgb01: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
        """rgb01 (B, 3, H, W) in [0, 1] -> {("disp", s): sigmoid (B, 1, H/2^s, W/2^s)}."""
        return self.depth(rgb01)

    def predict_disp(self, rgb01: torch.Tensor) -> torch.Tensor:
        """rgb01 (B, 3, H, W) -> scaled disparity (B, 1, H, W) in [1/max_depth, 1/min_depth]."""
        hp = self.hparams
        return sigmoid_to_disp(self.depth(rgb01)[("disp", 0)], hp.min_depth, hp.max_depth)

    def _loss(self, batch: dict[str, Any], color_key: str, outputs=None) -> dict[str, torch.Tensor]:
        """The total loss of one batch (:func:`monodepth_training.losses.total_loss`) with this module's switches."""
        hp = self.hparams
        return total_loss(
            self.depth, self.pose, batch, color_key, temporal_offsets=self.temporal_offsets,
            use_stereo=hp.use_stereo, min_depth=hp.min_depth, max_depth=hp.max_depth,
            extras=self.extras.at_step(self.global_step),
            featurenet=self.featurenet, outputs=outputs, alpha=hp.ssim_alpha,
            smoothness_weight=hp.smoothness_weight, automask=hp.automask, min_reprojection=hp.min_reprojection,
            full_res_multiscale=hp.full_res_multiscale,
        )

    # ------------------------------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        losses = self._loss(batch, "color_aug")
        bs = batch["K"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=bs)
        self.log("train/photometric", losses["photometric"], batch_size=bs)
        self.log("train/smoothness", losses["smoothness"], batch_size=bs)
        self.log("train/automask_fraction", losses["automask_fraction"], batch_size=bs)
        for key in ("feature_metric", "featurenet", "velocity", "pose_translation_m", "explainability_reg",
                    "depth_supervised", "pose_supervised"):
            if key in losses:
                self.log(f"train/{key}", losses[key], batch_size=bs)
        # The depth map rides along for the preview callback (detached by the loss already).
        return {"loss": losses["loss"], "depth": losses["depth"]}

    # ---------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_per_image = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        hp = self.hparams
        bs = batch["K"].shape[0]
        outputs = self.depth(batch["color"][0])
        losses = self._loss(batch, "color", outputs)
        self.log("val/loss", losses["loss"], sync_dist=True, batch_size=bs)
        disp = sigmoid_to_disp(outputs[("disp", 0)], hp.min_depth, hp.max_depth).float()
        out = {"disp": disp}
        if "depth_gt" in batch:
            disp_np = disp.squeeze(1).cpu().numpy()
            gt_np = batch["depth_gt"].squeeze(1).cpu().numpy()
            for i in range(gt_np.shape[0]):
                if not valid_mask(gt_np[i], hp.eval_min_depth, hp.eval_max_depth, hp.eval_crop).any():
                    continue  # a frame without GT (e.g. no LiDAR match) says nothing about depth
                self._val_per_image.append(
                    evaluate_image(
                        gt_np[i],
                        # Resize the disparity (not the depth) to the GT size, then invert: the runtime's function.
                        depth_from_disp(disp_np[i], gt_np[i].shape),
                        median_scaling=self.scale_policy == "relative",
                        fixed_scale=self.scale if self.scale_policy == "fixed" else 1.0,
                        min_depth=hp.eval_min_depth,
                        max_depth=hp.eval_max_depth,
                        cap_m=hp.eval_max_depth,
                        crop=hp.eval_crop,
                    )
                )
        return out

    def on_validation_epoch_end(self) -> None:
        if not self._val_per_image:
            return
        result = summarize(self._val_per_image, median_scaling=self.scale_policy == "relative")
        for name in METRIC_NAMES:
            self.log(f"val/{name}", float(result.metrics[name]), sync_dist=True, prog_bar=name == "abs_rel")
        if np.isfinite(result.ratio_mean):
            self.log("val/median_ratio", float(result.ratio_mean), sync_dist=True)
        self._val_per_image = []

    # ----------------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.lr_step_epochs, gamma=hp.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------------------------------- bundle
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        ds = getattr(dm, "train_dataset", None)
        if ds is not None and hasattr(ds, "intrinsics_norm"):
            K_norm = ds.intrinsics_norm()
            self.intrinsics_norm = None if K_norm is None else np.asarray(K_norm, dtype=float).tolist()

    def bundle_meta(self, extra_training: dict[str, Any] | None = None) -> BundleMeta:
        """The self-describing metadata of the current weights (see :class:`monodepth_ros.bundle.BundleMeta`)."""
        hp = self.hparams
        training: dict[str, Any] = {
            "framework": "monodepth_training (Lightning)",
            "global_step": int(self.global_step) if self._trainer is not None else 0,
            "epoch": int(self.current_epoch) if self._trainer is not None else 0,
            "frame_offsets": list(hp.frame_offsets),
            "use_stereo": bool(hp.use_stereo),
            "extras": {"feature_metric_weight": float(hp.feature_metric_weight),
                       "featurenet_mode": hp.featurenet_mode, "velocity_weight": float(hp.velocity_weight),
                       "depth_supervision_weight": float(hp.depth_supervision_weight),
                       "gt_pose_warp": bool(hp.gt_pose_warp),
                       "pose_supervision_weight": float(hp.pose_supervision_weight),
                       "feature_metric_warmup_steps": int(hp.feature_metric_warmup_steps),
                       "explainability_weight": float(hp.explainability_weight)},
            "written_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": self.run_config or {"model": dict(hp)},
        }
        training.update(extra_training or {})
        return BundleMeta(
            depth_net=hp.depth_net,
            height=int(hp.height),
            width=int(hp.width),
            min_depth=float(hp.min_depth),
            max_depth=float(hp.max_depth),
            depth_kwargs=dict(getattr(self.depth, "registry_kwargs", hp.depth_kwargs or {})),
            pose_net=hp.pose_net if self.pose is not None else None,
            pose_kwargs=dict(getattr(self.pose, "registry_kwargs", hp.pose_kwargs or {})) if self.pose else {},
            scale_policy=self.scale_policy,
            scale=float(self.scale),
            intrinsics_norm=self.intrinsics_norm,
            training=_jsonable(training),
        )

    def export_bundle(self, path, extra_training: dict[str, Any] | None = None) -> BundleMeta:
        """Write the model bundle (depth + pose weights and metadata) to ``path`` atomically."""
        return save_bundle(path, self.depth, self.bundle_meta(extra_training), pose_net=self.pose)


def _jsonable(value: Any) -> Any:
    """Plain JSON types only (the bundle metadata is JSON): tuples -> lists, numpy/torch scalars -> numbers,
    anything else -> its string form."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, (np.generic, torch.Tensor)) and np.size(value) == 1:
        return value.item()
    return str(value)
