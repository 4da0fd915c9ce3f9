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
from monodepth_ros.visualize import colorize_depth


def preview_image(world: SyntheticWorld, index: int) -> np.ndarray:
    """Frame ``index`` above its depth, (2H, W, 3) uint8 RGB."""
    f = world.render(index)
    # The project's fixed depth colour map (the node's depth/colored uses it too): comparable across pictures.
    return np.vstack([f.rgb, colorize_depth(f.depth_m, min_m=2.0, max_m=80.0)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--index", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-moving-objects", dest="moving_objects", action="store_false",
                   help="leave out the moving cars (shown by default)")  # fmt: skip
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
