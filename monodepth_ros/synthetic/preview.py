"""Render one synthetic frame beside its depth as a PNG (the README picture).

``python -m monodepth_ros.synthetic.preview --out docs/img/synthetic_frame.png [--index 40 --seed 0]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.synthetic.world import SynthConfig, SyntheticWorld


def depth_to_colour(depth_m: np.ndarray, min_m: float = 2.0, max_m: float = 80.0) -> np.ndarray:
    """Depth (H, W) metres -> (H, W, 3) uint8 RGB, magma on inverse depth (near = bright); sky/inf = black."""
    disp = 1.0 / np.clip(depth_m, min_m, max_m)
    scaled = (disp - 1.0 / max_m) / (1.0 / min_m - 1.0 / max_m)
    grey = np.round(np.clip(scaled, 0.0, 1.0) ** 0.5 * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(grey, cv2.COLORMAP_MAGMA)[..., ::-1].copy()
    rgb[~np.isfinite(depth_m)] = 0
    return rgb


def preview_image(world: SyntheticWorld, index: int) -> np.ndarray:
    """Frame ``index`` above its depth, (2H, W, 3) uint8 RGB."""
    f = world.render(index)
    return np.vstack([f.rgb, depth_to_colour(f.depth_m)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--index", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--moving-objects", action="store_true", default=True)
    args = p.parse_args(argv)
    world = SyntheticWorld(SynthConfig(seed=args.seed, moving_objects=args.moving_objects))
    ok, buf = cv2.imencode(".png", preview_image(world, args.index)[..., ::-1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(args.out, buf.tobytes())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
