"""FeatDepth's feature-metric loss and its FeatureNet regularisers, as pure functions of tensors.

Shapes: B = batch, S = sources, C = feature channels, H x W = image size, h x w = feature-map size.

Feature-metric (Shu et al., ECCV 2020): warp the SOURCE's feature map into the target with the predicted depth
and pose and compare it with the target's feature map (robust L1). Features from a FeatureNet trained to
reconstruct the image, with a *discriminative* term (large first-order feature gradients, so a wrong depth
changes the warped feature even where the colour is flat) and a *convergent* term (small second-order
gradients, so that loss basin is smooth and wide). Released weights: 1e-3 each (``DIS_WEIGHT``,
``CVT_WEIGHT``), feature-metric term 1e-3 relative to the photometric term (``FEATURE_METRIC_WEIGHT``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monodepth_training.geometry import warp
from monodepth_training.losses.photometric import photometric_error, scale_intrinsics

# FeatDepth's released training configuration (cfg_kitti_fm_joint: dis=1e-3, cvt=1e-3, perception_weight=1e-3).
DIS_WEIGHT = 1e-3
CVT_WEIGHT = 1e-3
FEATURE_METRIC_WEIGHT = 1e-3
# Robust L1 sqrt(x^2 + eps^2): differentiable at 0, FeatDepth's choice for feature residuals.
ROBUST_L1_EPS = 1e-3


def _check4(name: str, x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be (B, C, H, W), got shape {tuple(x.shape)}")


def _grad_x(x: torch.Tensor) -> torch.Tensor:
    """Forward difference along width: (B, C, H, W) -> (B, C, H, W-1)."""
    return x[..., :, 1:] - x[..., :, :-1]


def _grad_y(x: torch.Tensor) -> torch.Tensor:
    """Forward difference along height: (B, C, H, W) -> (B, C, H-1, W)."""
    return x[..., 1:, :] - x[..., :-1, :]


def _image_at(image: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor | None:
    if image is None:
        return None
    _check4("image", image)
    if image.shape[0] != features.shape[0]:
        raise ValueError(f"image batch {image.shape[0]} != features batch {features.shape[0]}")
    h, w = features.shape[-2:]
    return image if image.shape[-2:] == (h, w) else F.interpolate(image, (h, w), mode="area")


def _weighted_abs_mean(feature_diff: torch.Tensor, image_diff: torch.Tensor | None) -> torch.Tensor:
    """mean |dF| * exp(-mean_c |dI|) over all elements (no weight when ``image_diff`` is None).

    A map too small for the difference (e.g. 2 rows for a second derivative) contributes 0, not NaN.
    """
    if feature_diff.numel() == 0:
        return feature_diff.sum()
    if image_diff is None:
        return feature_diff.abs().mean()
    return (feature_diff.abs() * torch.exp(-image_diff.abs().mean(1, keepdim=True))).mean()


def discriminative_loss(features: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
    """FeatDepth's discriminative loss: MINUS the mean absolute first-order feature gradient (scalar).

    features (B, C, h, w); image (B, 3, H, W) in [0, 1] or None. Lower is better: minimising it makes features
    change from pixel to pixel, so that a wrongly warped pixel lands on a different feature. With ``image``,
    each gradient is weighted by exp(-|dI|) of the image (area-resized to h x w, channel mean), as the
    authors' released code does: the push is strongest where the image itself is flat, exactly where the
    photometric loss has nothing to hold on to. Without ``image`` it is the paper's unweighted
    -(mean |dF/dx| + mean |dF/dy|).
    """
    _check4("features", features)
    img = _image_at(image, features)
    gx = _weighted_abs_mean(_grad_x(features), None if img is None else _grad_x(img))
    gy = _weighted_abs_mean(_grad_y(features), None if img is None else _grad_y(img))
    return -(gx + gy)


def convergent_loss(features: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
    """FeatDepth's convergent loss: mean absolute SECOND-order feature gradient (scalar, >= 0).

    features (B, C, h, w); image (B, 3, H, W) or None. Sum of the xx, xy, yx and yy terms; with ``image`` each
    is weighted by exp(-|d2 I|) as in the released code. Small second derivatives keep feature gradients
    consistent over a neighbourhood, which widens the basin of the feature-metric loss around the true
    correspondence so gradient descent can reach it from further away.
    """
    _check4("features", features)
    img = _image_at(image, features)
    fx, fy = _grad_x(features), _grad_y(features)
    pairs = [(_grad_x(fx), None), (_grad_y(fx), None), (_grad_x(fy), None), (_grad_y(fy), None)]
    if img is not None:
        ix, iy = _grad_x(img), _grad_y(img)
        pairs = [(pairs[0][0], _grad_x(ix)), (pairs[1][0], _grad_y(ix)),
                 (pairs[2][0], _grad_x(iy)), (pairs[3][0], _grad_y(iy))]
    return sum(_weighted_abs_mean(f, i) for f, i in pairs)


def _depth_at(depth: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Depth (B, 1, H, W) -> (B, 1, h, w), resampling inverse depth (what the networks predict) bilinearly."""
    if depth.shape[-2:] == (h, w):
        return depth
    return 1.0 / F.interpolate(1.0 / depth, (h, w), mode="bilinear", align_corners=False)


def feature_metric_error(feat_tgt: torch.Tensor, feat_src: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                         T_src_from_tgt: torch.Tensor) -> torch.Tensor:
    """Per-pixel feature-metric error of one source: (B, 1, h, w).

    feat_tgt, feat_src: (B, C, h, w) feature maps of the target and source frames; depth: target depth
    (B, 1, H, W) at the IMAGE resolution (resampled to h x w here); K: (B, 3, 3) pixel intrinsics at H x W
    (rescaled to h x w here); T_src_from_tgt: (B, 4, 4). The source features are inverse-warped into the
    target with :func:`monodepth_training.geometry.warp` and compared by robust L1, mean over channels.
    """
    _check4("feat_tgt", feat_tgt)
    if feat_src.shape != feat_tgt.shape:
        raise ValueError(f"feat_src {tuple(feat_src.shape)} must match feat_tgt {tuple(feat_tgt.shape)}")
    _check4("depth", depth)
    h, w = feat_tgt.shape[-2:]
    H, W = depth.shape[-2:]
    K_feat = scale_intrinsics(K, w / W, h / H)
    warped = warp(feat_src, _depth_at(depth, h, w), K_feat, T_src_from_tgt)
    return torch.sqrt((warped - feat_tgt) ** 2 + ROBUST_L1_EPS**2).mean(1, keepdim=True)


def feature_metric_loss(feat_tgt: torch.Tensor, feat_src: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                        T_src_from_tgt: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Feature-metric reprojection loss (scalar).

    One source: feat_src (B, C, h, w), T_src_from_tgt (B, 4, 4). Several: feat_src (B, S, C, h, w),
    T_src_from_tgt (B, S, 4, 4), and the per-pixel MINIMUM over sources is taken (as for the photometric
    loss, so an occluded source does not count). ``mask`` (B, 1, h, w) bool/float optionally restricts the
    mean (e.g. to the auto-mask). Other arguments: see :func:`feature_metric_error`.
    """
    if feat_src.ndim == 4:
        err = feature_metric_error(feat_tgt, feat_src, depth, K, T_src_from_tgt)
    elif feat_src.ndim == 5:
        B, S = feat_src.shape[:2]
        if T_src_from_tgt.shape != (B, S, 4, 4):
            raise ValueError(f"T_src_from_tgt must be {(B, S, 4, 4)}, got {tuple(T_src_from_tgt.shape)}")
        errs = feature_metric_error(
            feat_tgt.repeat_interleave(S, 0), feat_src.flatten(0, 1), depth.repeat_interleave(S, 0),
            K.repeat_interleave(S, 0), T_src_from_tgt.flatten(0, 1),
        )
        err = errs.view(B, S, *errs.shape[-2:]).min(1, keepdim=True)[0]
    else:
        raise ValueError(f"feat_src must be (B, C, h, w) or (B, S, C, h, w), got {tuple(feat_src.shape)}")
    if mask is None:
        return err.mean()
    mask = mask.to(err.dtype)
    if mask.shape[-2:] != err.shape[-2:]:
        mask = F.interpolate(mask, err.shape[-2:], mode="nearest")
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


def featurenet_loss(outputs: dict, rgb01: torch.Tensor, dis_weight: float = DIS_WEIGHT,
                    cvt_weight: float = CVT_WEIGHT, alpha: float = 0.85) -> dict[str, torch.Tensor]:
    """FeatureNet's self-supervised objective from its forward output (see ``networks.featurenet.FeatureNet``).

    outputs: {"features": 5 tensors (B, C_i, h_i, w_i), ("recon", s): (B, 3, H/2^s, W/2^s)}; rgb01 (B, 3, H, W)
    the (un-augmented) input. Reconstruction = mean over scales of the photometric error (SSIM + L1, as the
    depth loss) against the area-downscaled image; regularisers over all 5 levels weighted 1/2^i / 5 as in the
    released code. Returns scalars ``loss``, ``reconstruction``, ``discriminative``, ``convergent``.
    """
    recon_keys = sorted(k for k in outputs if isinstance(k, tuple) and k[0] == "recon")
    if not recon_keys or "features" not in outputs:
        raise ValueError("outputs must hold 'features' and ('recon', s) entries (FeatureNet.forward)")
    rec_terms = []
    for key in recon_keys:
        pred = outputs[key]
        tgt = rgb01 if pred.shape[-2:] == rgb01.shape[-2:] else F.interpolate(rgb01, pred.shape[-2:], mode="area")
        rec_terms.append(photometric_error(pred, tgt, alpha).mean())
    reconstruction = torch.stack(rec_terms).mean()
    feats = outputs["features"]
    dis = sum(discriminative_loss(f, rgb01) / 2**i for i, f in enumerate(feats)) / len(feats)
    cvt = sum(convergent_loss(f, rgb01) / 2**i for i, f in enumerate(feats)) / len(feats)
    loss = reconstruction + dis_weight * dis + cvt_weight * cvt
    return {"loss": loss, "reconstruction": reconstruction, "discriminative": dis, "convergent": cvt}
