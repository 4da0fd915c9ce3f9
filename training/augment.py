"""Training-time augmentation as pure functions: photometric colour jitter and horizontal flip.

Monodepth2's recipe: the jitter parameters are drawn once per sample and applied identically to every frame
of that sample (so the photometric loss still compares like with like), and only to the network input; the
loss targets stay un-jittered. A horizontal flip mirrors every frame and must also mirror the intrinsics
(``cx -> W - 1 - cx``) and any stereo extrinsics, or the warp would be wrong.

The colour operations are kornia's (tested, differentiable); only the parameter sampling lives here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from kornia.enhance import adjust_contrast_with_mean_subtraction, adjust_hue, adjust_saturation

__all__ = [
    "ColorJitter",
    "JitterParams",
    "sample_jitter_params",
    "apply_color_jitter",
    "hflip_images",
    "hflip_intrinsics",
    "hflip_pose",
]


@dataclass(frozen=True)
class ColorJitter:
    """Jitter strengths (torchvision semantics): factors drawn from [1 - s, 1 + s], hue shift from [-h, h]
    in fractions of a full turn. ``prob`` is the chance that a sample is jittered at all (Monodepth2: 0.5)."""

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.1
    prob: float = 0.5

    def __post_init__(self):
        for name in ("brightness", "contrast", "saturation"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"ColorJitter.{name} must be in [0, 1), got {v}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"ColorJitter.hue must be in [0, 0.5], got {self.hue}")
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"ColorJitter.prob must be in [0, 1], got {self.prob}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class JitterParams:
    """One draw of jitter factors; identity is (1, 1, 1, 0)."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0

    @property
    def is_identity(self) -> bool:
        return (self.brightness, self.contrast, self.saturation, self.hue) == (1.0, 1.0, 1.0, 0.0)


def sample_jitter_params(cfg: ColorJitter, rng: np.random.Generator) -> JitterParams:
    """Draw one set of jitter factors (or the identity, with probability ``1 - cfg.prob``)."""
    if rng.random() >= cfg.prob:
        return JitterParams()
    return JitterParams(
        brightness=float(rng.uniform(1.0 - cfg.brightness, 1.0 + cfg.brightness)),
        contrast=float(rng.uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast)),
        saturation=float(rng.uniform(1.0 - cfg.saturation, 1.0 + cfg.saturation)),
        hue=float(rng.uniform(-cfg.hue, cfg.hue)),
    )


def apply_color_jitter(images: torch.Tensor, params: JitterParams) -> torch.Tensor:
    """Apply the same jitter to every image: (N, 3, H, W) or (3, H, W) float RGB in [0, 1] -> same shape.

    Order: brightness, contrast, saturation, hue (fixed, so one parameter draw is one function).
    """
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"expected RGB images (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    if params.is_identity:
        return images.clone()
    # Brightness is multiplicative as in torchvision; kornia's adjust_brightness is additive.
    out = (images * params.brightness).clamp(0.0, 1.0)
    if params.contrast != 1.0:
        out = adjust_contrast_with_mean_subtraction(out, float(params.contrast))
    if params.saturation != 1.0:
        out = adjust_saturation(out, float(params.saturation)).clamp(0.0, 1.0)
    if params.hue != 0.0:
        # kornia takes the hue shift in radians; torchvision-style strengths are fractions of a turn.
        out = adjust_hue(out, float(params.hue * 2.0 * math.pi)).clamp(0.0, 1.0)
    return out


def hflip_images(images: torch.Tensor) -> torch.Tensor:
    """Mirror images left-right: (..., H, W) -> (..., H, W)."""
    return torch.flip(images, dims=(-1,))


def hflip_intrinsics(K: np.ndarray, width: int) -> np.ndarray:
    """Pixel intrinsics (3, 3) of the mirrored image of ``width`` pixels: ``cx -> W - 1 - cx``.

    Pixel ``u`` moves to ``W - 1 - u``, so the principal point does too; focal lengths are unchanged
    (a skew term would change sign).
    """
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 2] = (width - 1) - K2[0, 2]
    K2[0, 1] = -K2[0, 1]
    return K2


def hflip_pose(T: np.ndarray) -> np.ndarray:
    """Relative camera pose (4, 4) expressed in the mirrored world: ``F @ T @ F`` with ``F = diag(-1, 1, 1, 1)``.

    Mirroring x swaps left and right cameras, so a stereo baseline changes sign.
    """
    F = np.diag([-1.0, 1.0, 1.0, 1.0])
    return F @ np.asarray(T, dtype=np.float64) @ F
