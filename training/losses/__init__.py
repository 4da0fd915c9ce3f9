"""Training losses, as pure functions of tensors: one module per term, and one function that assembles them.

- :mod:`.photometric`: SSIM, photometric error, per-pixel minimum reprojection, auto-masking, and
  :func:`monodepth2_loss` (Monodepth2's multi-scale photometric + smoothness loss).
- :mod:`.smoothness`: edge-aware disparity smoothness.
- :mod:`.feature_metric`: FeatDepth's feature-metric loss and its FeatureNet regularisers.
- :mod:`.velocity`: PackNet-SfM's velocity supervision.
- :mod:`.explainability`: SfMLearner's mask-weighted photometric term.
- :mod:`.known_pose`: known ego-motion (GT poses) for the warp and as pose-network supervision.
- :mod:`.supervised`: log-L1 depth supervision where exact ground truth exists.
- :mod:`.total`: :func:`total_loss`, the one training step's loss the LightningModule calls (Monodepth2's loss +
  the extras switched on in :class:`ExtraLossConfig`).
"""

from monodepth_training.losses.explainability import explainability_photometric
from monodepth_training.losses.feature_metric import (
    CVT_WEIGHT,
    DIS_WEIGHT,
    FEATURE_METRIC_WEIGHT,
    ROBUST_L1_EPS,
    convergent_loss,
    discriminative_loss,
    feature_metric_error,
    feature_metric_loss,
    featurenet_loss,
)
from monodepth_training.losses.known_pose import known_pose_mask, pose_supervision_loss, select_known_poses
from monodepth_training.losses.photometric import (
    SSIM_C1,
    SSIM_C2,
    automask_min,
    min_reprojection,
    monodepth2_loss,
    photometric_error,
    scale_intrinsics,
    ssim,
    ssim_dissimilarity,
    ssim_index,
)
from monodepth_training.losses.smoothness import smoothness_loss
from monodepth_training.losses.supervised import supervised_depth_loss
from monodepth_training.losses.total import (
    FEATURENET_MODES,
    ExtraLossConfig,
    build_featurenet,
    resolve_scale_policy,
    total_loss,
)
from monodepth_training.losses.velocity import VELOCITY_WEIGHT, velocity_loss

__all__ = [
    "CVT_WEIGHT",
    "DIS_WEIGHT",
    "FEATURENET_MODES",
    "FEATURE_METRIC_WEIGHT",
    "ROBUST_L1_EPS",
    "SSIM_C1",
    "SSIM_C2",
    "VELOCITY_WEIGHT",
    "ExtraLossConfig",
    "automask_min",
    "build_featurenet",
    "convergent_loss",
    "discriminative_loss",
    "explainability_photometric",
    "feature_metric_error",
    "known_pose_mask",
    "feature_metric_loss",
    "featurenet_loss",
    "min_reprojection",
    "monodepth2_loss",
    "photometric_error",
    "pose_supervision_loss",
    "resolve_scale_policy",
    "scale_intrinsics",
    "select_known_poses",
    "smoothness_loss",
    "ssim",
    "ssim_dissimilarity",
    "ssim_index",
    "supervised_depth_loss",
    "total_loss",
    "velocity_loss",
]
