"""One training step's loss with the survey's extras on top of Monodepth2's: feature-metric reprojection
(FeatDepth), velocity supervision (PackNet-SfM), stereo as a fixed-pose source, and SfMLearner's
explainability masks, and known ego-motion (GT poses: warp with them, supervise the pose net). The LightningModule
calls :func:`total_loss`; each extra is off at weight 0.

Scale policy that follows from the switches (:func:`resolve_scale_policy`): velocity supervision ties pose, and
through the warp depth, to metres ("metric"); a stereo source with its baseline in metres does the same
("fixed", scale 1: depth_m = 1 / disp); neither leaves the scale unknown ("relative": median scaling).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from monodepth_training.datasets import STEREO_KEY
from monodepth_training.geometry import sigmoid_to_disp
from monodepth_training.losses.explainability import explainability_photometric
from monodepth_training.losses.feature_metric import CVT_WEIGHT, DIS_WEIGHT, feature_metric_loss, featurenet_loss
from monodepth_training.losses.known_pose import pose_supervision_loss, select_known_poses
from monodepth_training.losses.photometric import monodepth2_loss
from monodepth_training.losses.supervised import supervised_depth_loss
from monodepth_training.losses.velocity import velocity_loss
from monodepth_training.networks.featurenet import FeatureNet, load_featurenet
from monodepth_training.networks.monodepth2 import predict_T_src_from_tgt
from torch import nn

FEATURENET_MODES = ("off", "joint", "pretrained")


@dataclass(frozen=True)
class ExtraLossConfig:
    """Weights of the extras (0 = off). See :mod:`monodepth_training.losses.feature_metric` (and
    :mod:`monodepth_training.losses.velocity`) for where they come from."""

    feature_metric_weight: float = 0.0
    velocity_weight: float = 0.0
    explainability_weight: float = 0.0
    featurenet_mode: str = "off"
    dis_weight: float = DIS_WEIGHT
    cvt_weight: float = CVT_WEIGHT
    # Steps of photometric-only training before the velocity term starts. The term constrains only the LENGTH
    # of the translation: from step 0 it inflates the untrained pose net's randomly directed translation, and
    # the depth escapes to max_depth, where the warp no longer depends on the translation and the sigmoid
    # gradient vanishes (measured on the synthetic world: median depth 99 m after 136 steps). A short warm-up
    # lets the photometric loss point the translation along the motion first; then velocity sets its length.
    velocity_warmup_steps: int = 0
    # Log-L1 to the depth GT on the samples that have it (the synthetic world's exact depth); real frames
    # without GT contribute nothing. Not in the survey: it is what a synthetic world with exact depth is for.
    depth_supervision_weight: float = 0.0
    # Known ego-motion (:mod:`monodepth_training.losses.known_pose`): warp with the sample's GT relative pose
    # (``T_gt``) where it has one, and/or supervise the pose network with it.
    gt_pose_warp: bool = False
    pose_supervision_weight: float = 0.0
    # Steps before the feature-metric term reaches the depth and pose networks (a joint FeatureNet trains on its
    # own objective from step 0). From scratch, with the term on from step 0, the pose net collapsed to ~5 mm per
    # frame and the depth never left its initial constant (docs/survey.md, "FeatDepth"); with the motion known
    # the same loss learns, so the warm-up lets the photometric loss establish the motion first.
    feature_metric_warmup_steps: int = 0
    # Internal: False while the feature-metric term is in its warm-up (set by ``at_step``).
    feature_metric_active: bool = True

    def __post_init__(self):
        if self.featurenet_mode not in FEATURENET_MODES:
            raise ValueError(f"featurenet_mode must be one of {FEATURENET_MODES}, got {self.featurenet_mode!r}")
        for name in ("feature_metric_weight", "velocity_weight", "explainability_weight", "depth_supervision_weight",
                     "pose_supervision_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.feature_metric_weight > 0 and self.featurenet_mode == "off":
            raise ValueError("feature_metric_weight > 0 needs featurenet_mode 'joint' or 'pretrained'")
        for name in ("velocity_warmup_steps", "feature_metric_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def at_step(self, step: int) -> ExtraLossConfig:
        """The weights in force at training step ``step`` (velocity off, and the feature-metric term kept from the
        depth and pose networks, during their warm-ups)."""
        out = self
        if self.velocity_weight > 0 and step < self.velocity_warmup_steps:
            out = replace(out, velocity_weight=0.0)
        if self.feature_metric_weight > 0 and step < self.feature_metric_warmup_steps:
            out = replace(out, feature_metric_active=False)
        return out


def resolve_scale_policy(requested: str, velocity_weight: float, use_stereo: bool,
                         depth_supervision_weight: float = 0.0, gt_pose_warp: bool = False) -> tuple[str, float]:
    """(scale_policy, scale) for the bundle. ``requested="auto"``: "metric" with velocity or metric depth
    supervision or a warp by known metric poses, "fixed" (scale 1.0, the baseline is in metres) with stereo, else
    "relative". Any other value is kept as given."""
    if requested != "auto":
        return requested, 1.0
    if velocity_weight > 0 or depth_supervision_weight > 0 or gt_pose_warp:
        return "metric", 1.0
    if use_stereo:
        return "fixed", 1.0
    return "relative", 1.0


def build_featurenet(mode: str, path: str | os.PathLike | None = None,
                     kwargs: Mapping[str, Any] | None = None) -> FeatureNet | None:
    """``off`` -> None; ``joint`` -> a FeatureNet trained alongside depth/pose (initialised from ``path`` if
    given); ``pretrained`` -> loaded from ``path`` (required) and frozen in eval mode."""
    if mode not in FEATURENET_MODES:
        raise ValueError(f"featurenet_mode must be one of {FEATURENET_MODES}, got {mode!r}")
    if mode == "off":
        return None
    if mode == "pretrained":
        if path is None:
            raise ValueError("featurenet_mode 'pretrained' needs featurenet_path (a save_featurenet file)")
        net = load_featurenet(path)
        net.requires_grad_(False)
        return net.eval()
    return load_featurenet(path) if path is not None else FeatureNet(**dict(kwargs or {}))


def _predict_poses(pose_net: nn.Module, inputs: Mapping, offsets: list[int], want_masks: bool):
    """T_src_from_tgt (B, 4, 4) per temporal offset, and the target's explainability masks per offset."""
    poses, masks = [], []
    for off in offsets:
        if want_masks:
            from monodepth_training.networks.sfmlearner import predict_T_src_from_tgt_and_mask

            T, m = predict_T_src_from_tgt_and_mask(pose_net, inputs[0], inputs[off], src_is_before=off < 0)
            masks.append(m)
        else:
            T = predict_T_src_from_tgt(pose_net, inputs[0], inputs[off], src_is_before=off < 0)
        poses.append(T)
    return poses, masks


def total_loss(
    depth_net: nn.Module,
    pose_net: nn.Module | None,
    batch: Mapping[str, Any],
    color_key: str,
    *,
    temporal_offsets: list[int],
    use_stereo: bool,
    min_depth: float,
    max_depth: float,
    extras: ExtraLossConfig,
    featurenet: FeatureNet | None = None,
    outputs: Mapping | None = None,
    alpha: float = 0.85,
    smoothness_weight: float = 1e-3,
    automask: bool = True,
    min_reprojection: bool = True,
    full_res_multiscale: bool = True,
) -> dict[str, torch.Tensor]:
    """The total loss of one batch: Monodepth2's loss + the enabled extras (the sample layout of ``datasets.base``).

    Networks see ``batch[color_key]`` (augmented inputs); losses compare the un-augmented ``batch["color"]``.
    Returns :func:`monodepth2_loss`'s dict with ``loss`` including the extras, plus the scalars that apply:
    ``feature_metric``, ``featurenet`` (joint mode: its own objective, also in ``loss``), ``velocity``
    (metres), ``pose_translation_m`` (mean predicted translation norm), ``explainability_reg``,
    ``depth_supervised`` (log-L1 to ``batch["depth_gt"]`` where it is valid), ``pose_supervised`` (the pose
    net against ``batch["T_gt"]``). With ``extras.gt_pose_warp`` the warp uses ``batch["T_gt"]`` where it is known;
    ``pose_translation_m`` and the velocity term always describe the pose network's own prediction.
    """
    inputs = batch[color_key]
    colors = batch["color"]
    outputs = depth_net(inputs[0]) if outputs is None else outputs
    want_masks = bool(extras.explainability_weight > 0 and getattr(pose_net, "predicts_explainability", False))
    poses, masks = _predict_poses(pose_net, inputs, temporal_offsets, want_masks) if temporal_offsets else ([], [])
    all_poses = list(poses)
    pose_sup = None
    if poses and (extras.gt_pose_warp or extras.pose_supervision_weight > 0):
        if "T_gt" not in batch:
            raise KeyError("gt_pose_warp / pose_supervision_weight need the samples' known poses (batch['T_gt'])")
        known = [batch["T_gt"][off] for off in temporal_offsets]
        if extras.pose_supervision_weight > 0:
            pose_sup = torch.stack([pose_supervision_loss(T, G) for T, G in zip(poses, known, strict=True)]).mean()
        if extras.gt_pose_warp:
            all_poses = [select_known_poses(T, G) for T, G in zip(poses, known, strict=True)]
    sources = [colors[off] for off in temporal_offsets]
    if use_stereo:
        all_poses.append(batch["T_stereo"].to(inputs[0].dtype))
        sources.append(colors[STEREO_KEY])
    T_all = torch.stack(all_poses, dim=1).float()
    K = batch["K"].float()
    losses = monodepth2_loss(
        outputs, colors[0], sources, T_all, K, min_depth=min_depth, max_depth=max_depth, alpha=alpha,
        smoothness_weight=smoothness_weight, automask=automask, min_reprojection=min_reprojection,
        full_res_multiscale=full_res_multiscale,
    )
    total = losses["loss"]

    if want_masks and masks:
        S_t = len(temporal_offsets)
        src_t = torch.stack(sources[:S_t], 1).float()
        photo = explainability_photometric(outputs, colors[0].float(), src_t, T_all[:, :S_t], K, masks=masks,
                                            min_depth=min_depth, max_depth=max_depth, alpha=alpha)
        from monodepth_training.networks.sfmlearner import explainability_regularization

        reg = explainability_regularization([m for per_src in masks for m in per_src.values()])
        # SfMLearner's loss replaces the min/auto-masked photometric term (their masks do that job).
        total = photo + losses["smoothness"] + extras.explainability_weight * reg
        losses["photometric"] = photo
        losses["explainability_reg"] = reg.detach()

    if featurenet is not None and extras.feature_metric_weight > 0:
        keys = [0, *temporal_offsets] + ([STEREO_KEY] if use_stereo else [])
        imgs = torch.stack([colors[k] for k in keys], 1).float()  # (B, 1 + S, 3, H, W)
        B, N = imgs.shape[:2]
        # The depth/pose networks see the features as fixed targets: letting this term reach the FeatureNet
        # would reward features that collapse to a constant. The FeatureNet learns only from its own objective.
        if extras.featurenet_mode == "pretrained":
            featurenet.eval()  # frozen: BatchNorm must not track the depth run's statistics either
        if extras.feature_metric_active:
            with torch.no_grad():
                feats = featurenet.feature_map(imgs.flatten(0, 1))
            feats = feats.view(B, N, *feats.shape[1:])
            depth = 1.0 / sigmoid_to_disp(outputs[("disp", 0)].float(), min_depth, max_depth)
            fm = feature_metric_loss(feats[:, 0], feats[:, 1:], depth, K, T_all)
            total = total + extras.feature_metric_weight * fm
            losses["feature_metric"] = fm.detach()
        if extras.featurenet_mode == "joint" and featurenet.training:
            fn = featurenet_loss(featurenet(colors[0].float()), colors[0].float(), extras.dis_weight,
                                 extras.cvt_weight)
            total = total + fn["loss"]
            losses["featurenet"] = fn["loss"].detach()

    if poses:
        t_norm = torch.stack([T[:, :3, 3].norm(dim=1) for T in poses]).mean()
        losses["pose_translation_m"] = t_norm.detach()
    if extras.velocity_weight > 0 and poses:
        terms = []
        for off, T in zip(temporal_offsets, poses, strict=True):
            # Mean speed over the interval ~ the average of the two frames' speeds.
            speed = 0.5 * (batch["speed_mps"][0] + batch["speed_mps"][off])
            terms.append(velocity_loss(T[:, :3, 3], speed, batch["dt_s"][off]))
        vel = torch.stack(terms).mean()
        total = total + extras.velocity_weight * vel
        losses["velocity"] = vel.detach()

    if pose_sup is not None:
        total = total + extras.pose_supervision_weight * pose_sup
        losses["pose_supervised"] = pose_sup.detach()

    if extras.depth_supervision_weight > 0 and "depth_gt" in batch:
        terms = [supervised_depth_loss(1.0 / sigmoid_to_disp(outputs[("disp", s)].float(), min_depth, max_depth),
                                       batch["depth_gt"], max_depth)
                 for s in sorted(k[1] for k in outputs if isinstance(k, tuple) and k[0] == "disp")]
        sup = torch.stack(terms).mean()
        total = total + extras.depth_supervision_weight * sup
        losses["depth_supervised"] = sup.detach()

    losses["loss"] = total
    return losses
