"""Procedural, tileable textures for the synthetic world, stored as mip pyramids for alias-free sampling.

Every texture is generated once per world from its seed. Noise is made periodic by construction: white noise
is shaped in the Fourier domain (a 1/f^beta spectrum), and an inverse FFT of a spectrum on the integer grid is
periodic over the tile, so textures repeat without seams. Photometric self-supervision needs texture on every
surface; these give grain at several scales (asphalt, paving, bricks, foliage, paint).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TILE_PX = 256


def periodic_noise(rng: np.random.Generator, size: int = TILE_PX, beta: float = 1.5, min_freq: float = 1.0):
    """Tileable fractal noise (size, size) float32 with zero mean and unit std.

    ``beta`` sets the spectral slope (larger = smoother); frequencies below ``min_freq`` cycles/tile are removed.
    """
    white = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None] * size
    fx = np.fft.rfftfreq(size)[None, :] * size
    f = np.hypot(fx, fy)
    amp = np.where(f >= min_freq, 1.0 / np.maximum(f, 1.0) ** beta, 0.0)
    out = np.fft.irfft2(np.fft.rfft2(white) * amp, s=(size, size))
    out -= out.mean()
    return (out / (out.std() + 1e-12)).astype(np.float32)


def _bricks(rng, size=TILE_PX, rows=8, cols=4, mortar_px=3):
    """Running-bond bricks: per-brick shade variation and dark mortar lines, (size, size) grey in [0, 1]."""
    v, u = np.mgrid[0:size, 0:size]
    row_h, col_w = size // rows, size // cols
    row = v // row_h
    shifted = (u + (row % 2) * (col_w // 2)) % size
    col = shifted // col_w
    shade = rng.uniform(0.75, 1.15, (rows, cols))[row, col]
    mortar = ((v % row_h) < mortar_px) | ((shifted % col_w) < mortar_px)
    return np.where(mortar, 0.55, shade)


def _slabs(rng, size=TILE_PX, n=4, joint_px=2):
    """Square paving slabs with joints, (size, size) grey in [0, 1]."""
    v, u = np.mgrid[0:size, 0:size]
    s = size // n
    shade = rng.uniform(0.85, 1.1, (n, n))[v // s, u // s]
    joint = ((v % s) < joint_px) | ((u % s) < joint_px)
    return np.where(joint, 0.6, shade)


@dataclass
class MipTexture:
    """A grey texture pyramid flattened into one array (one gather samples any level), times an RGB colour.

    Grey x colour keeps every gather scalar, a third of the memory traffic of RGB texels; all materials here
    are single-hued, so nothing is lost. ``data`` (sum of level areas,) float32; ``offsets[l]`` = first texel of
    level ``l`` (side ``size >> l``); ``tile_m`` = world size of one tile in metres.
    """

    data: np.ndarray
    offsets: np.ndarray
    size: int
    levels: int
    tile_m: float
    colour: np.ndarray

    @classmethod
    def from_image(cls, grey: np.ndarray, tile_m: float, colour=(1.0, 1.0, 1.0)) -> MipTexture:
        level = np.asarray(grey, dtype=np.float32)
        size = level.shape[0]
        if level.shape != (size, size) or size & (size - 1):
            raise ValueError(f"texture must be square with a power-of-two side, got {level.shape}")
        flat, offsets, off = [], [], 0
        while True:
            offsets.append(off)
            flat.append(level.ravel())
            off += level.size
            if level.shape[0] <= 4:
                break
            # 2x2 box filter: the tile is periodic, so the pyramid stays tileable at every level.
            level = 0.25 * (level[0::2, 0::2] + level[1::2, 0::2] + level[0::2, 1::2] + level[1::2, 1::2])
        return cls(np.concatenate(flat), np.array(offsets, np.int32), size, len(offsets), float(tile_m),
                   np.asarray(colour, np.float32))  # fmt: skip

    def sample_grey(self, s_m: np.ndarray, t_m: np.ndarray, footprint_m: np.ndarray) -> np.ndarray:
        """Bilinear lookup (N,) at surface coordinates (N,) metres, in the mip level whose texels are at least
        the pixel footprint (N,) metres: texture never carries frequencies the pixel grid cannot hold, which
        would make consecutive frames disagree photometrically."""
        texel_m = np.float32(self.tile_m / self.size)
        lvl = np.ceil(np.log2(np.maximum(footprint_m, np.float32(1e-6)) / texel_m))
        lvl = np.clip(np.nan_to_num(lvl, nan=0.0), 0, self.levels - 1).astype(np.int32)
        size_l = np.int32(self.size) >> lvl
        # Texel centres sit at half-integers of the level's grid.
        scale = size_l.astype(np.float32) * np.float32(1.0 / self.tile_m)
        fu = s_m * scale - np.float32(0.5)
        fv = t_m * scale - np.float32(0.5)
        u0, v0 = np.floor(fu), np.floor(fv)
        wu, wv = fu - u0, fv - v0
        mask = size_l - 1  # power-of-two sides: wrap with a bit mask
        iu0 = u0.astype(np.int32) & mask
        iv0 = v0.astype(np.int32) & mask
        iu1 = (iu0 + 1) & mask
        row0 = self.offsets[lvl] + iv0 * size_l
        row1 = self.offsets[lvl] + ((iv0 + 1) & mask) * size_l
        d = self.data
        top = d[row0 + iu0] * (1 - wu) + d[row0 + iu1] * wu
        bot = d[row1 + iu0] * (1 - wu) + d[row1 + iu1] * wu
        return top * (1 - wv) + bot * wv

    def sample(self, s_m: np.ndarray, t_m: np.ndarray, footprint_m: np.ndarray) -> np.ndarray:
        """Like :meth:`sample_grey`, times the texture colour: (N, 3) float32 linear RGB."""
        return self.sample_grey(s_m, t_m, footprint_m)[:, None] * self.colour


def make_textures(seed: int) -> dict[str, MipTexture]:
    """All material textures of a world, deterministic in ``seed``. Colours are albedos before tinting."""
    rng = np.random.default_rng([seed, 0x7E7])
    n = lambda beta=1.2, mf=1.0: periodic_noise(rng, beta=beta, min_freq=mf)  # noqa: E731
    T = MipTexture.from_image
    tex = {}
    # Asphalt: fine grain plus blotches of wear; neutral grey so lane paint stands out.
    tex["asphalt"] = T(np.clip(0.32 + 0.06 * n(0.6) + 0.05 * n(2.0) + 0.03 * n(1.0, 8), 0.05, 1), 6.4, (1, 1, 1.02))
    tex["sidewalk"] = T(_slabs(rng) * (0.62 + 0.05 * n(0.8) + 0.05 * n(2.0)), 3.2, (1.0, 0.97, 0.92))
    tex["kerb"] = T(0.7 + 0.06 * n(0.8), 3.2, (0.95, 0.95, 0.95))
    tex["brick"] = T(_bricks(rng) * (0.8 + 0.08 * n(0.9) + 0.08 * n(2.2)), 2.4)
    tex["plaster"] = T(0.8 + 0.06 * n(1.0) + 0.06 * n(2.5, 2) + 0.03 * n(0.5), 4.8)
    tex["paint"] = T(0.85 + 0.05 * n(1.0) + 0.04 * n(2.5), 3.2)
    tex["metal"] = T(0.55 + 0.05 * n(0.7), 1.6, (0.9, 0.92, 0.95))
    tex["bark"] = T(0.35 + 0.08 * n(1.0, 4) + 0.05 * n(0.6), 1.6, (0.55, 0.4, 0.28))
    tex["leaves"] = T(np.clip(0.45 + 0.18 * n(0.7) + 0.12 * n(1.8), 0.05, 1), 3.2, (0.35, 0.7, 0.25))
    tex["glass"] = T(0.25 + 0.05 * n(2.0) + 0.03 * n(0.8), 3.2, (0.75, 0.85, 1.0))
    tex["clouds"] = T(np.clip(0.5 + 0.35 * n(2.0, 2), 0, 1), 1.0)
    return tex
