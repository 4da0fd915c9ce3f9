"""Sky benchmark: how much sky a model's validity output removes from the depth, and how many real surfaces with it.

For each exported model (default: the shipped fp32 and INT8 models), through the runtime backend the node uses:
- **synthetic, exact GT**: a held-out world (seed 1000, ``--frames`` frames at the model's size): sky recall and
  precision, and the share of surfaces marked invalid, at each ``--threshold`` (the node's default is 0.5); and
  where the sky would be published without the mask (median depth of the sky pixels, metres for a metric model);
- **real KITTI raw drive** (``--real``, LiDAR; every ``--stride``-th frame at the camera's 1242x375): the share of
  LiDAR points whose pixel is marked invalid (real surfaces the robot would lose), and the share of the pixels
  above the LiDAR's highest return that are marked invalid. The LiDAR (HDL-64E, up to +2 deg) sees nothing
  there: it is sky, the bridge, tree tops and building fronts, so this share is what the mask removes where
  no GT can say, and the panels show what it was.

    .venv/bin/python benchmarks/sky.py [--real ../shared/data/real] [--model X.onnx ...] [--out DIR]

Prints the tables, writes benchmarks/results/sky.json and, with real data, ``panels_<model>.png`` into ``--out``
(the git-ignored ``out/sky``: the panels hold KITTI pixels, never commit them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from real_data import MODELS_DIR, RAW_DRIVE, REPO, RealDataError, check_real_root, load_raw_frames

from monodepth_ros.backends import create_backend
from monodepth_ros.bundle import atomic_write_bytes
from monodepth_ros.evaluation.validity import sky_scores
from monodepth_ros.pipeline import invalid_pixels, resize_model_output
from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

RESULTS = REPO / "benchmarks" / "results" / "sky.json"
DEFAULT_OUT = REPO / "out" / "sky"
HELDOUT_SEED = 1000
MARK_RGB = np.array([255, 0, 255], np.float32)


def synthetic_rows(backend, thresholds: list[float], n_frames: int) -> dict:
    """Sky scores of ``backend``'s validity on a held-out synthetic world at the model's size."""
    h, w = backend.info.height, backend.info.width
    world = SyntheticWorld(SynthConfig(width=w, height=h, seed=HELDOUT_SEED))
    valids, skies, sky_depth = [], [], []
    for i in range(0, 5 * n_frames, 5):
        frame = world.render(i)
        disp, valid = backend.infer_outputs(frame.rgb)
        sky = ~np.isfinite(frame.depth_m)
        valids.append(valid)
        skies.append(sky)
        sky_depth.append(backend.info.scale / disp[sky])
    valid, sky = np.stack(valids), np.stack(skies)
    depths = np.concatenate(sky_depth)
    return {
        "frames": n_frames,
        "scores": [sky_scores(valid, sky, t) for t in thresholds],
        "sky_depth_unmasked_m": {"p5": float(np.percentile(depths, 5)), "median": float(np.median(depths)),
                                 "p95": float(np.percentile(depths, 95))} if depths.size else None,
    }


def real_rows(backend, frames, thresholds: list[float], panel_path: Path | None) -> dict:
    """LiDAR points lost and above-LiDAR pixels marked invalid on the raw drive, per threshold."""
    lidar = np.zeros(len(thresholds))
    above_marked = np.zeros(len(thresholds))
    n_lidar = n_above = 0
    panels = []
    picks = set(np.linspace(0, len(frames) - 1, 4).round().astype(int).tolist())
    for k, f in enumerate(frames):
        _, valid = backend.infer_outputs(f.rgb)
        v = resize_model_output(valid, f.gt_m.shape)  # as the node resizes it
        has = f.gt_m > 0
        top = np.where(has.any(axis=0), has.argmax(axis=0), f.gt_m.shape[0])  # highest LiDAR row per column
        above = np.arange(f.gt_m.shape[0])[:, None] < top[has.any(axis=0)].min()  # above every return
        above = np.broadcast_to(above, f.gt_m.shape)
        n_lidar += int(has.sum())
        n_above += int(above.sum())
        for j, t in enumerate(thresholds):
            marked = invalid_pixels(v, t)
            lidar[j] += (marked & has).sum()
            above_marked[j] += (marked & above).sum()
        if panel_path is not None and k in picks:
            marked = invalid_pixels(v, 0.5)
            img = f.rgb.astype(np.float32)
            img[marked] = 0.4 * img[marked] + 0.6 * MARK_RGB
            panels.append(img.astype(np.uint8))
    if panels:
        panel_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(panel_path), cv2.cvtColor(np.vstack(panels), cv2.COLOR_RGB2BGR))
    return {
        "frames": len(frames),
        "lidar_points": n_lidar,
        "above_lidar_pixels": n_above,
        "rows": [{"threshold": t, "lidar_marked_invalid": float(lidar[j] / max(n_lidar, 1)),
                  "above_lidar_marked_invalid": float(above_marked[j] / max(n_above, 1))}
                 for j, t in enumerate(thresholds)],
    }


def default_models() -> list[Path]:
    return [p for p in (MODELS_DIR / "default.onnx", MODELS_DIR / "default.int8.onnx") if p.is_file()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, action="append", default=[],
                   help="an exported .onnx with a validity output (repeatable; default: the shipped fp32 and INT8)")
    p.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real",
                   help="folder with kitti_raw/ (absent: synthetic rows only, said in the output)")
    p.add_argument("--stride", type=int, default=2, help="every n-th frame of the raw drive")
    p.add_argument("--frames", type=int, default=40, help="held-out synthetic frames")
    p.add_argument("--threshold", type=float, action="append", default=None,
                   help="validity thresholds to score (repeatable; default 0.3, 0.5, 0.7)")
    p.add_argument("--threads", type=int, default=1, help="inference threads")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="panels folder (KITTI pixels: never commit)")
    p.add_argument("--json", type=Path, default=RESULTS, help="where the JSON report goes")
    return p


def run(args: argparse.Namespace) -> dict:
    thresholds = args.threshold or [0.3, 0.5, 0.7]
    if any(not 0.0 < t < 1.0 for t in thresholds) or args.stride < 1 or args.frames < 1:
        raise ValueError("thresholds must be in (0, 1), --stride and --frames >= 1")
    models = args.model or default_models()
    if not models:
        raise ValueError("no model given and no shipped default model found")
    frames, real_note = None, None
    try:
        raw_root, _ = check_real_root(args.real)
        frames, _ = load_raw_frames(raw_root, RAW_DRIVE, args.stride)
    except RealDataError as e:
        real_note = f"real rows skipped: {e}"
    report = {"date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} CPUs", "thresholds": thresholds, "real_note": real_note, "models": {}}
    for path in models:
        backend = create_backend(str(path), "onnxruntime", threads=args.threads)
        try:
            if backend.meta.validity_output is None:
                report["models"][path.name] = {"validity_output": None,
                                               "note": "no validity output: sky is published as depth"}
                continue
            row = {"validity_output": backend.meta.validity_output,
                   "synthetic": synthetic_rows(backend, thresholds, args.frames)}
            if frames is not None:
                row["real"] = real_rows(backend, frames, thresholds, args.out / f"panels_{path.stem}.png")
            report["models"][path.name] = row
        finally:
            backend.close()
    return report


def print_report(report: dict) -> None:
    print(f"sky benchmark, {report['date_utc']}, {report['machine']}")
    if report["real_note"]:
        print(report["real_note"])
    for name, row in report["models"].items():
        if row.get("validity_output") is None:
            print(f"\n{name}: {row['note']}")
            continue
        syn = row["synthetic"]
        sd = syn["sky_depth_unmasked_m"]
        print(f"\n{name}: held-out synthetic world (seed {HELDOUT_SEED}, {syn['frames']} frames, exact sky); "
              f"unmasked the sky would be at {sd['median']:.1f} m (5-95 %: {sd['p5']:.1f}-{sd['p95']:.1f})")
        print("| threshold | sky recall | precision | surfaces marked invalid |")
        print("|---|---|---|---|")
        for s in syn["scores"]:
            print(f"| {s['threshold']:.1f} | {s['recall']:.3f} | {s['precision']:.3f} | "
                  f"{100 * s['surface_invalid']:.2f} % |")
        if "real" in row:
            r = row["real"]
            print(f"real KITTI raw drive ({r['frames']} frames, {r['lidar_points']} LiDAR points):")
            print("| threshold | LiDAR points marked invalid | pixels above the LiDAR marked invalid |")
            print("|---|---|---|")
            for x in r["rows"]:
                print(f"| {x['threshold']:.1f} | {100 * x['lidar_marked_invalid']:.3f} % | "
                      f"{100 * x['above_lidar_marked_invalid']:.1f} % |")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"sky: {e}", file=sys.stderr)
        return 2
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
    print(f"\nwrote {args.json}" + (f" and panels under {args.out}" if "real" in str(report) else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
