"""`make train-default`: reproduce the embedded default model shipped in ``monodepth_ros/models/``.

Stages (each a real project command, so this is also an end-to-end check of train -> export):
1. ``monodepth-train fit --config config/train/default_model.yaml`` (resumes from ``last`` if a run exists);
2. take the bundle of the last step (validation runs on the synthetic world, which says little about real frames,
   so "best" is not the better model for a real camera) and score it against the untrained network;
3. ``monodepth-fit-validity``: give it a validity (sky) output, fitted with the depth network frozen on the
   synthetic world's exact sky and the rows below the horizon of the training camera's own frames
   (:mod:`monodepth_training.validity`); the depth does not change;
4. ``monodepth-export --format onnx`` and ``--format ort-int8`` (calibrated on synthetic training frames,
   INT8 accuracy checked on held-out frames);
5. copy ``default.onnx``, ``default.int8.onnx`` and their JSON sidecars into ``monodepth_ros/models/``,
   plus ``default_model.json`` recording how it was made and what it scored.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from monodepth_ros.bundle import atomic_write_bytes, file_sha256

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "train" / "default_model.yaml"
RUN_DIR = REPO / "runs" / "default_model"
MODELS_DIR = REPO / "monodepth_ros" / "models"


def _run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def heldout_scores(bundle: Path, n_frames: int = 40, seed: int = 2000) -> dict:
    """Median-scaled 7 metrics of the bundle and of an untrained twin on a held-out synthetic world."""
    import numpy as np
    import torch
    from monodepth_training.bundle_io import load_bundle
    from monodepth_training.networks import build_depth_net
    from monodepth_training.networks.export_wrapper import DisparityHead

    from monodepth_ros.evaluation.metrics import evaluate_depth
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

    depth_net, _, meta = load_bundle(bundle)
    torch.manual_seed(0)
    untrained = build_depth_net(meta.depth_net, **meta.depth_kwargs).eval()
    world = SyntheticWorld(SynthConfig(width=meta.width, height=meta.height, seed=seed,
                                       static_segments=True, moving_objects=True))
    frames = [world.render(i) for i in range(0, 5 * n_frames, 5)]
    rgb = torch.from_numpy(np.stack([f.rgb for f in frames])).permute(0, 3, 1, 2).float() / 255.0
    gts = [np.where(np.isfinite(f.depth_m), f.depth_m, 0.0) for f in frames]
    out = {}
    for name, net in (("trained", depth_net), ("untrained", untrained)):
        head = DisparityHead(net, meta.min_depth, meta.max_depth).eval()
        with torch.inference_mode():
            disp = head(rgb)[:, 0].numpy()
        res = evaluate_depth(gts, list(1.0 / disp), median_scaling=True, crop=None)
        out[name] = {**res.metrics, "ratio_mean": res.ratio_mean, "ratio_std": res.ratio_std}
    return out


def trained_seconds(last_ckpt: Path) -> float | None:
    """Training time of the whole run, resumes included (Lightning's Timer state in ``last.ckpt``), or None."""
    if not last_ckpt.is_file():
        return None
    import torch

    state = torch.load(last_ckpt, map_location="cpu", weights_only=True).get("callbacks", {}).get("Timer", {})
    seconds = state.get("time_elapsed", {}).get("train")
    return None if seconds is None else round(float(seconds), 1)


def missing_data_dirs(config_path: Path) -> list[str]:
    """The ``data_dir`` folders named by the config's training sources (a mix's parts too) that do not exist,
    resolved like the trainer resolves them (relative to the repository root)."""
    import yaml

    cfg = yaml.safe_load(config_path.read_text())
    train = cfg.get("data", {}).get("train", {})
    specs = train.get("parts", []) if train.get("source") == "mix" else [train]
    dirs = [s["data_dir"] for s in specs if isinstance(s, dict) and "data_dir" in s]
    return [d for d in dirs if not (REPO / d).is_dir()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-train", action="store_true", help="export the existing best bundle only")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="extra monodepth-train arguments")
    args = p.parse_args(argv)
    bin_dir = Path(sys.executable).parent
    t0 = time.time()
    missing = missing_data_dirs(CONFIG)
    if missing and not args.skip_train:
        print(f"train-default: training data not found: {', '.join(missing)} (relative to {REPO}). The default "
              "model learns from the real KITTI frames in ../shared/data/real (non-commercial licence, not part of "
              "the repository); see its README.", file=sys.stderr)
        return 2
    if not args.skip_train:
        cmd = [str(bin_dir / "monodepth-train"), "fit", "--config", str(CONFIG)]
        if (RUN_DIR / "checkpoints" / "last.ckpt").exists():
            cmd += ["--ckpt_path", "last"]
        _run(cmd + list(args.train_args))
    train_s = time.time() - t0
    bundle = RUN_DIR / "bundles" / "last.safetensors"
    if not bundle.is_file():
        print(f"train-default: no bundle under {RUN_DIR / 'bundles'}", file=sys.stderr)
        return 2
    scores = heldout_scores(bundle)
    for name, m in scores.items():
        print(f"held-out synthetic ({name}): abs_rel {m['abs_rel']:.3f}  rmse {m['rmse']:.3f}  a1 {m['a1']:.3f}")

    valid_bundle = RUN_DIR / "bundles" / "last_validity.safetensors"
    validity_report = RUN_DIR / "validity.json"
    _run([str(bin_dir / "monodepth-fit-validity"), "--model", str(bundle), "--out", str(valid_bundle),
          "--config", str(CONFIG), "--report", str(validity_report)])

    export_dir = RUN_DIR / "export"
    shutil.rmtree(export_dir, ignore_errors=True)
    export = str(bin_dir / "monodepth-export")
    _run([export, "--model", str(valid_bundle), "--format", "onnx", "--out", str(export_dir), "--name", "default"])
    _run([export, "--model", str(valid_bundle), "--format", "ort-int8", "--out", str(export_dir), "--name",
          "default", "--calib", "synthetic:64", "--heldout-frames", "24"])

    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    shipped = {}
    for src in sorted(export_dir.iterdir()):
        if src.suffix in (".onnx", ".json") and src.name.startswith("default"):
            dst = MODELS_DIR / src.name
            atomic_write_bytes(dst, src.read_bytes())
            shipped[src.name] = {"bytes": dst.stat().st_size, "sha256": file_sha256(dst)}
    record = {
        "command": "make train-default",
        "config": str(CONFIG.relative_to(REPO)),
        "bundle_sha256": file_sha256(bundle),
        "train_wall_s": round(train_s, 1),
        "trained_on": "KITTI odometry 03 frames 0-699 (grey camera, velocity supervision from the GT-pose speed), "
                      "320x96, from scratch, CPU",
        "train_seconds_total": trained_seconds(RUN_DIR / "checkpoints" / "last.ckpt"),
        "heldout_synthetic": scores,
        "validity": {k: v for k, v in json.loads(validity_report.read_text()).items() if k in
                     ("config", "camera_frames", "heldout_synthetic")},
        "files": shipped,
    }
    atomic_write_bytes(MODELS_DIR / "default_model.json", (json.dumps(record, indent=2) + "\n").encode())
    total_mb = sum(v["bytes"] for v in shipped.values()) / 1e6
    print(f"shipped {len(shipped)} files ({total_mb:.1f} MB) to {MODELS_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
