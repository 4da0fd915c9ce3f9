"""Synthetic world rendering speed: frames/s per image size and option set, with the cast/shade split.

    .venv/bin/python benchmarks/synth_speed.py [--frames 60] [--sizes 640x192,320x96,1242x375]

Prints a table and writes benchmarks/results/synth_speed.json. ``fps`` is wall-clock; ``fps(cpu)`` divides by
this process's CPU time, i.e. the rate on one free core. The load average is recorded beside the numbers: on a
shared machine other processes slow the wall-clock rate down (the renderer is single-threaded NumPy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.synthetic import SynthConfig, SyntheticWorld
from monodepth_ros.synthetic import render as R

RESULTS = Path(__file__).resolve().parent / "results" / "synth_speed.json"


def bench(width: int, height: int, frames: int, moving: bool, static: bool) -> dict:
    world = SyntheticWorld(SynthConfig(width=width, height=height, moving_objects=moving, static_segments=static))
    world.render(0)  # warm-up: texture and ray caches
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(1, frames + 1):
        world.render(i)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU-time split (ms) of one mid-drive frame, averaged, to show where the time goes.
    T = world.T_world_from_cam(frames // 2)
    boxes = world.boxes_near(frames // 2, T[0, 3] - 12.0, T[0, 3] + world.cfg.draw_distance_m)
    reps = max(3, frames // 10)
    t1 = time.process_time()
    for _ in range(reps):
        cast = R.cast(T, world.K, width, height, boxes)
    t2 = time.process_time()
    for _ in range(reps):
        R.shade(*cast, K=world.K, boxes=boxes, tex=world.textures)
    t3 = time.process_time()
    return {
        "size": f"{width}x{height}",
        "moving_objects": moving,
        "static_segments": static,
        "frames": frames,
        "fps": frames / total,
        "ms_per_frame": 1000 * total / frames,
        # CPU time of this process: what one free core would give, independent of other processes' load.
        "fps_cpu_time": frames / cpu,
        "cast_cpu_ms": 1000 * (t2 - t1) / reps,
        "shade_cpu_ms": 1000 * (t3 - t2) / reps,
        "boxes_in_view_range": int(boxes.lo.shape[0]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--sizes", default="640x192,320x96,1242x375")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    for size in args.sizes.split(","):
        w_px, h_px = (int(v) for v in size.split("x"))
        for moving in (False, True):
            rows.append(bench(w_px, h_px, args.frames, moving, static=False))
    load_after = os.getloadavg()
    header = (
        f"{'size':>9} {'moving':>6} {'fps':>7} {'fps(cpu)':>8} {'ms/frame':>9} {'cast cpu':>8} {'shade cpu':>9} "
        f"{'boxes':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['size']:>9} {r['moving_objects']!s:>6} {r['fps']:7.1f} {r['fps_cpu_time']:8.1f} "
              f"{r['ms_per_frame']:9.1f} {r['cast_cpu_ms']:8.1f} {r['shade_cpu_ms']:9.1f} "
              f"{r['boxes_in_view_range']:6d}")  # fmt: skip
    print(f"load average before/after (1 min): {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    report = {
        "benchmark": "synth_speed",
        "measured_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "loadavg_1min_before": load_before[0],
                    "loadavg_1min_after": load_after[0]},  # fmt: skip
        "results": rows,
    }
    atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
