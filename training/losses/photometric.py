"""Self-supervised photometric losses (Monodepth2), as pure functions of tensors.

Shapes: B = batch, S = number of source frames, C = channels, H x W = image size. Images are RGB in [0, 1].
The building blocks (SSIM, photometric error, per-pixel minimum, auto-masking, and the edge-aware smoothness
of :mod:`.smoothness`) are composed by :func:`monodepth2_loss`, whose switches (``automask``,
``min_reprojection``, ``full_res_multiscale``) let the ablations turn each idea off by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from monodepth_training.geometry import sigmoid_to_disp, warp
from monodepth_training.losses.smoothness import smoothness_loss

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def ssim_index(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM of two images (B, C, H, W) -> (B, C, H, W), 1 = identical.

    Monodepth2's variant: local statistics from a 3x3 mean filter (population variance) over a reflection-
    padded image, C1 = 0.01^2, C2 = 0.03^2 for data in [0, 1]. Written here rather than taken from kornia
    because kornia's SSIM uses a Gaussian window and zero padding, which is a different function.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    C = x.shape[1]
    # One pooling call over all five moment images instead of five calls.
    stack = F.pad(torch.cat([x, y, x * x, y * y, x * y], dim=1), (1, 1, 1, 1), mode="reflect")
    # The 3x3 mean as a depthwise convolution: same numbers as avg_pool2d(3, 1), ~4x faster forward on CPU.
    box = torch.full((5 * C, 1, 3, 3), 1.0 / 9.0, dtype=stack.dtype, device=stack.device)
    mu_x, mu_y, e_xx, e_yy, e_xy = F.conv2d(stack, box, groups=5 * C).split(C, dim=1)
    sigma_x = e_xx - mu_x * mu_x
    sigma_y = e_yy - mu_y * mu_y
    sigma_xy = e_xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    den = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return num / den


def ssim_dissimilarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 clamped to [0, 1]: (B, C, H, W) x2 -> (B, C, H, W), 0 = identical."""
    return torch.clamp((1 - ssim_index(x, y)) / 2, 0, 1)


# Short name from the agreed interface: the SSIM index itself, not the loss.
ssim = ssim_index


def photometric_error(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """Photometric reprojection error: alpha * (1 - SSIM)/2 + (1 - alpha) * L1, mean over channels.

    pred, target: (B, C, H, W) -> (B, 1, H, W).
    """
    l1 = (pred - target).abs().mean(1, keepdim=True)
    if alpha == 0:
        return l1
    return alpha * ssim_dissimilarity(pred, target).mean(1, keepdim=True) + (1 - alpha) * l1


def min_reprojection(errors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel minimum over sources: errors (B, S, H, W) -> (min (B, 1, H, W), argmin (B, 1, H, W) long).

    A pixel occluded or out of view in one source is usually visible in another, so the minimum ignores the
    source that cannot explain it instead of averaging its large error in.
    """
    return torch.min(errors, dim=1, keepdim=True)


_min_over_sources = min_reprojection


def automask_min(
    reproj: torch.Tensor,
    identity: torch.Tensor,
    tie_break: float = 1e-5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Auto-masked per-pixel minimum.

    reproj (B, S, H, W): errors of the warped sources; identity (B, S', H, W): errors of the UNwarped sources
    against the target. Returns (loss (B, 1, H, W), mask (B, 1, H, W) bool), ``mask`` True where a warped
    source won, i.e. where the pixel counts. Pixels that an unwarped source already explains (static camera,
    objects moving with the camera, textureless areas) take the identity error, which carries no gradient
    to the networks, so they are masked out.

    The tie-break is uniform noise in [-tie_break, 0) added to the identity errors. It breaks ties randomly
    among near-equal values, and it makes an exact tie (static frames under a zero pose) go to the identity, as
    the paper's strict inequality (reprojection must be *lower* to count) says. Monodepth2's code uses
    zero-mean noise instead, which keeps about half of such exactly tied pixels.
    """
    if reproj.shape[0] != identity.shape[0] or reproj.shape[2:] != identity.shape[2:]:
        raise ValueError(f"reproj {tuple(reproj.shape)} and identity {tuple(identity.shape)} differ in B, H, W")
    if tie_break > 0:
        noise = torch.rand(identity.shape, generator=generator, device=identity.device, dtype=identity.dtype)
        identity = identity - tie_break * noise
    loss, idx = torch.min(torch.cat([identity, reproj], dim=1), dim=1, keepdim=True)
    return loss, idx >= identity.shape[1]


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Pixel intrinsics (B, 3, 3) of an image resized by (sx, sy) -> (B, 3, 3).

    Same pixel-centre convention as :func:`monodepth_ros.geometry.scale_intrinsics`:
    fx' = fx sx, cx' = (cx + 0.5) sx - 0.5 (and likewise in y).
    """
    if K.ndim != 3 or K.shape[-2:] != (3, 3):
        raise ValueError(f"K must be (B, 3, 3), got {tuple(K.shape)}")
    scale = K.new_tensor([sx, sy, 1.0]).view(1, 3, 1)
    K2 = K * scale  # rows 0 and 1 scaled: fx, cx (and fy, cy)
    K2[:, 0, 2] = K2[:, 0, 2] + 0.5 * sx - 0.5
    K2[:, 1, 2] = K2[:, 1, 2] + 0.5 * sy - 0.5
    return K2


def _warp_sources(sources: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """sources (B, S, 3, H, W), depth (B, 1, H, W), K (B, 3, 3), T (B, S, 4, 4) -> warped (B, S, 3, H, W)."""
    B, S = sources.shape[:2]
    flat = warp(
        sources.flatten(0, 1),
        depth.repeat_interleave(S, dim=0),
        K.repeat_interleave(S, dim=0),
        T.flatten(0, 1),
    )
    return flat.view_as(sources)


def _errors(images: torch.Tensor, target: torch.Tensor, alpha: float) -> torch.Tensor:
    """images (B, S, 3, H, W) vs target (B, 3, H, W) -> photometric errors (B, S, H, W)."""
    B, S = images.shape[:2]
    err = photometric_error(images.flatten(0, 1), target.repeat_interleave(S, dim=0), alpha)
    return err.view(B, S, *err.shape[-2:])


def monodepth2_loss(
    outputs: Mapping[tuple[str, int], torch.Tensor],
    target: torch.Tensor,
    sources: torch.Tensor | Sequence[torch.Tensor],
    T_src_from_tgt: torch.Tensor,
    K: torch.Tensor,
    *,
    min_depth: float,
    max_depth: float,
    alpha: float = 0.85,
    smoothness_weight: float = 1e-3,
    automask: bool = True,
    min_reprojection: bool = True,
    full_res_multiscale: bool = True,
    tie_break: float = 1e-5,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Monodepth2's multi-scale self-supervised loss.

    Args:
        outputs: depth-net output {("disp", s): sigmoid (B, 1, H/2^s, W/2^s)}.
        target: target frame (B, 3, H, W), the UN-augmented colours.
        sources: source frames (B, S, 3, H, W) or a list of S tensors (B, 3, H, W) (e.g. t-1, t+1, stereo).
        T_src_from_tgt: (B, S, 4, 4) poses mapping target-camera points into each source camera
            (``networks.predict_T_src_from_tgt`` for temporal sources, the fixed baseline for stereo).
        K: (B, 3, 3) pixel intrinsics at H x W.
        min_depth, max_depth: range of the sigmoid -> disparity mapping.
        automask: join the unwarped-source errors into the minimum (auto-masking).
        min_reprojection: per-pixel minimum over sources (False: average over sources, as a baseline).
        full_res_multiscale: upsample every scale's disparity to H x W before warping (True), or warp at the
            scale's own resolution with downscaled images and intrinsics (False, the older scheme).

    Per scale s: photometric term = mean of the (masked) per-pixel error, smoothness term =
    ``smoothness_weight / 2**s`` * edge-aware smoothness of that scale's own disparity against the target
    downscaled to it. The total is the mean over scales.

    Returns a dict of scalars ``loss``, ``photometric``, ``smoothness`` (both averaged over scales, smoothness
    already weighted), ``automask_fraction`` (share of scale-0 pixels where a warped source won) and detached
    scale-0 maps for logging: ``error_map`` (B, 1, H, W), ``automask`` (B, 1, H, W) bool, ``min_source_idx``
    (B, 1, H, W) long (which source was lowest), ``warped`` (B, S, 3, H, W), ``depth`` (B, 1, H, W).
    """
    if not isinstance(sources, torch.Tensor):
        sources = torch.stack(list(sources), dim=1)
    shapes_ok = target.ndim == 4 and sources.ndim == 5 and sources.shape[2:] == target.shape[1:]
    if not shapes_ok or sources.shape[0] != target.shape[0]:
        raise ValueError(f"target must be (B, 3, H, W) and sources (B, S, 3, H, W); got {tuple(target.shape)}, "
                         f"{tuple(sources.shape)}")
    B, S = sources.shape[:2]
    if S == 0:
        raise ValueError("monodepth2_loss needs at least one source frame")
    if T_src_from_tgt.shape != (B, S, 4, 4):
        raise ValueError(f"T_src_from_tgt must be {(B, S, 4, 4)}, got {tuple(T_src_from_tgt.shape)}")
    scales = sorted(s for (kind, s) in outputs if kind == "disp")
    if not scales:
        raise ValueError("outputs hold no ('disp', s) entries")
    # Under AMP the networks run in half precision, but the warp's pixel coordinates (hundreds of pixels) and
    # SSIM's E[x^2] - mu^2 lose too much in fp16/bf16, so the loss itself always runs in float32.
    with torch.autocast(device_type=target.device.type, enabled=False):
        return _monodepth2_loss_fp32(
            {k: outputs[k].float() for k in outputs if k[0] == "disp"}, target.float(), sources.float(),
            T_src_from_tgt.float(), K.float(), scales=scales, min_depth=min_depth, max_depth=max_depth, alpha=alpha,
            smoothness_weight=smoothness_weight, automask=automask, min_reprojection=min_reprojection,
            full_res_multiscale=full_res_multiscale, tie_break=tie_break, generator=generator,
        )


def _monodepth2_loss_fp32(outputs, target, sources, T_src_from_tgt, K, *, scales, min_depth, max_depth, alpha,
                          smoothness_weight, automask, min_reprojection, full_res_multiscale, tie_break, generator):
    """Body of :func:`monodepth2_loss` on validated float32 inputs."""
    B, S = sources.shape[:2]
    H, W = target.shape[-2:]
    photometric_terms, smooth_terms = [], []
    logs: dict[str, torch.Tensor] = {}
    identity_full = _errors(sources, target, alpha) if automask and full_res_multiscale else None
    for s in scales:
        disp_s = outputs[("disp", s)]
        h, w = disp_s.shape[-2:]
        if full_res_multiscale:
            sigma = disp_s if (h, w) == (H, W) else F.interpolate(disp_s, (H, W), mode="bilinear", align_corners=False)
            tgt, srcs, K_s, identity = target, sources, K, identity_full
        else:
            sigma = disp_s
            tgt = target if (h, w) == (H, W) else F.interpolate(target, (h, w), mode="area")
            srcs = sources if (h, w) == (H, W) else F.interpolate(sources.flatten(0, 1), (h, w), mode="area").view(
                B, S, 3, h, w)
            K_s = scale_intrinsics(K, w / W, h / H)
            identity = _errors(srcs, tgt, alpha) if automask else None
        depth = 1.0 / sigmoid_to_disp(sigma, min_depth, max_depth)
        warped = _warp_sources(srcs, depth, K_s, T_src_from_tgt)
        reproj = _errors(warped, tgt, alpha)  # (B, S, h', w')
        min_idx = torch.min(reproj, dim=1, keepdim=True)[1]
        if not min_reprojection:
            reproj = reproj.mean(1, keepdim=True)
            identity = identity.mean(1, keepdim=True) if identity is not None else None
        if automask:
            error_map, mask = automask_min(reproj, identity, tie_break, generator)
        else:
            # The ``min_reprojection`` switch shadows the function of that name here.
            error_map = _min_over_sources(reproj)[0] if min_reprojection else reproj
            mask = torch.ones_like(error_map, dtype=torch.bool)
        photometric_terms.append(error_map.mean())

        img_s = target if (h, w) == (H, W) else F.interpolate(target, (h, w), mode="area")
        smooth_terms.append(smoothness_weight / 2**s * smoothness_loss(disp_s, img_s))

        if s == scales[0]:
            logs = {
                "error_map": error_map.detach(),
                "automask": mask,
                "automask_fraction": mask.float().mean(),
                "min_source_idx": min_idx,
                "warped": warped.detach(),
                "depth": depth.detach(),
            }
    photometric = torch.stack(photometric_terms).mean()
    smoothness = torch.stack(smooth_terms).mean()
    return {"loss": photometric + smoothness, "photometric": photometric, "smoothness": smoothness, **logs}
