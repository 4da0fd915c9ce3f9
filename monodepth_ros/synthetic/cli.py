"""``monodepth-synth``: render a seeded synthetic drive to a KITTI-style folder or a rosbag2, with a progress bar.

Examples::

    monodepth-synth --out data/synth --format kitti --frames 500 --seed 0 --static-segments --moving-objects
    monodepth-synth --out bags/synth_drive --format bag --frames 300 --storage mcap
"""

from __future__ import annotations

import argparse
import sys
import time

from monodepth_ros.cli_common import EXIT_OK, CliParser, run_guarded
from monodepth_ros.synthetic.world import SynthConfig, SyntheticWorld

PROG = "monodepth-synth"


def _size(text: str) -> tuple[int, int]:
    try:
        w_px, h_px = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x192 (WIDTHxHEIGHT), got {text!r}") from None
    if w_px < 8 or h_px < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return w_px, h_px


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> CliParser:
    p = CliParser(PROG, "Render a seeded synthetic drive (exact depth, poses, intrinsics) to a KITTI folder or a "
                  "rosbag2.")
    p.add_argument("--out", required=True, help="KITTI root folder (kitti) or the bag directory to create (bag)")
    p.add_argument("--format", choices=("kitti", "bag"), default="kitti", help="output layout")
    p.add_argument("--frames", type=_positive_int, default=200, help="number of frames")
    p.add_argument("--seed", type=int, default=0, help="world seed (non-negative)")
    p.add_argument("--size", type=_size, default="640x192", help="image size, WIDTHxHEIGHT")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate in Hz")
    p.add_argument("--speed", type=float, default=10.0, help="cruise speed in m/s (10 = ~1 m per frame at 10 Hz)")
    p.add_argument("--static-segments", action="store_true", help="the car stops now and then (static camera)")
    p.add_argument("--moving-objects", action="store_true", help="oncoming traffic and a same-speed leader car")
    p.add_argument("--stereo", action="store_true", help="kitti: also write the right camera (image_03)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag: rosbag2 storage")
    p.add_argument("--date", default="2011_09_26", help="kitti: date folder name")
    p.add_argument("--drive", type=int, default=1, help="kitti: drive number")
    p.add_argument("--workers", type=_positive_int, default=1, help="render in this many processes")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing bag directory (bag) or drive folder (kitti); refused without it")
    return p


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``monodepth-synth``; exit codes as in :mod:`monodepth_ros.cli_common`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be non-negative, got {args.seed}")
    if args.stereo and args.format == "bag":
        parser.error("--stereo is only supported with --format kitti")
    if args.format == "kitti" and args.frames < 3:
        parser.error("--format kitti needs --frames >= 3 (split files list frames with both neighbours)")
    width, height = args.size
    try:
        cfg = SynthConfig(width=width, height=height, fps=args.fps, speed_mps=args.speed, seed=args.seed,
                          static_segments=args.static_segments, moving_objects=args.moving_objects)  # fmt: skip
        world = SyntheticWorld(cfg)
    except ValueError as e:
        parser.error(str(e))
    from tqdm import tqdm

    from monodepth_ros.synthetic import writers

    def render() -> int:
        n_views = args.frames * (2 if args.stereo else 1)
        t0 = time.perf_counter()
        # delay: a refusal before the first frame (an existing output) stays one line on stderr
        with tqdm(total=args.frames, unit="frame", desc=f"synth {args.format}", delay=0.5) as bar:
            if args.format == "kitti":
                out = writers.write_kitti(world, args.out, args.frames, date=args.date, drive=args.drive,
                                          stereo=args.stereo, overwrite=args.overwrite, progress=bar.update,
                                          workers=args.workers)  # fmt: skip
            else:
                out = writers.write_bag(world, args.out, args.frames, storage=args.storage, overwrite=args.overwrite,
                                        progress=bar.update, workers=args.workers)  # fmt: skip
        dt = time.perf_counter() - t0
        print(f"wrote {args.frames} frames ({n_views} views) to {out} in {dt:.1f} s ({n_views / dt:.1f} views/s)")
        return EXIT_OK

    return run_guarded(PROG, render, bad_input=(ValueError, FileExistsError))


if __name__ == "__main__":
    sys.exit(main())
