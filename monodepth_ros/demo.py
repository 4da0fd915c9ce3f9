"""`make demo`: the main job, end to end, on the embedded default model.

1. render a short synthetic drive (640x192, 10 Hz, exact depth GT) into a rosbag2 (MCAP);
2. start the real depth node as its own process and play the bag into it over DDS (loopback only) at the
   recorded rate, recording what the node publishes;
3. score the published depth against the bag's GT (KITTI metrics, median scaling), and print the table, the
   achieved rate, drops, latency and the paths of the output bag and the report.

Runtime only: no torch. Everything is written under ``--out`` (default ``out/demo``).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from monodepth_ros.cli_common import EXIT_OK, CliParser, fail, run_guarded

PROG = "monodepth-demo"
DEFAULT_OUT = Path("out") / "demo"


def _model(path: Path | None) -> Path:
    from monodepth_ros.replay import default_model_path

    model = path or default_model_path()
    if not model.is_file():
        raise FileNotFoundError(
            f"embedded default model not found at {model}; reproduce it with `make train-default` or pass --model")
    return model


def build_parser() -> CliParser:
    p = CliParser(PROG, __doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (replaced)")
    p.add_argument("--frames", type=int, default=120, help="frames in the synthetic drive (10 Hz, >= 10)")
    p.add_argument("--seed", type=int, default=7, help="world seed (the default model never saw seed 7)")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the embedded default model)")
    p.add_argument("--in-process", action="store_true", help="skip DDS: run the backend directly on each frame")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m monodepth_ros.demo`` (``make demo``); exit codes as in :mod:`monodepth_ros.cli_common`."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.frames < 10:
        p.error("--frames must be >= 10")
    try:
        model = _model(args.model)
    except FileNotFoundError as e:
        return fail(PROG, e)

    from monodepth_ros.bag.reader import BagError
    from monodepth_ros.replay import NodeFailure, ReplayError

    return run_guarded(PROG, lambda: _demo(args, model), bad_input=(BagError, ReplayError, ValueError),
                       failure=(NodeFailure,))


def _demo(args, model: Path) -> int:
    from tqdm import tqdm

    from monodepth_ros.replay import ReplayConfig, run_replay
    from monodepth_ros.replay.report import summary_text
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld
    from monodepth_ros.synthetic.writers import write_bag

    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.time()

    print(f"[1/3] rendering a {args.frames}-frame synthetic drive (640x192, 10 Hz, seed {args.seed}) into a bag")
    world = SyntheticWorld(SynthConfig(width=640, height=192, seed=args.seed, moving_objects=True))
    with tqdm(total=args.frames, unit="frame", desc="render") as bar:
        bag = write_bag(world, out / "input_bag", args.frames, storage="mcap", progress=bar.update)

    mode = "in-process backend" if args.in_process else "the depth node process over DDS"
    print(f"[2/3] replaying the bag through {mode} with {model.name}")
    cfg = ReplayConfig(bag=bag, out_dir=out / "replay", model=model, gt_topic="/camera/depth_gt",
                       through_node=not args.in_process)
    report = run_replay(cfg)

    scaled = "median-scaled" if report.get("settings", {}).get("median_scaling") else "metric, no median scaling"
    print(f"[3/3] results (held-out synthetic drive, KITTI metrics {scaled}, GT capped at 80 m)")
    print(summary_text(report))
    for key, path in report["outputs"].items():
        print(f"{key:>12}: {path}")
    print(f"demo finished in {time.time() - t0:.0f} s")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
