"""Everything this project measures on a lent GPU, in one call of at most 10 minutes (the device tool's limit).

    .venv/bin/python benchmarks/gpu_session.py prepare          # here: stage into .gpu_stage, print the call
    python3 benchmarks/gpu_session.py device --out "$OUT"       # there, after the printed command's wheel set-up
    .venv/bin/python benchmarks/gpu_session.py collect FILES_AT # here: unpack what came back

The device half runs side by side on the one GPU:
1. ``cuda_parity.py`` first, alone on an idle GPU: the shipped ONNX on ONNX Runtime (CPU) against its PyTorch
   bundle on CUDA, parity and latency (the part of the GPU robot check that needs no TensorRT);
2. ``make train-default-gpu``'s device half (``training/train_default_gpu.py``): the default model's recipe at
   640x192 with AMP, then its ONNX + INT8 export;
3. ``table1.py`` at 640x192, split over processes by system and seed (:data:`TABLE_JOBS`), each training for the
   same wall budget with float16 AMP, scored on the held-out synthetic world and the raw drive's staged frames.

``prepare`` stages what the bare GPU machine lacks into ``.gpu_stage/`` (git-ignored; KITTI's licence: never
commit it): ``train_default_gpu prepare``'s wheels and odometry frames, the raw drive's evaluation frames
(``real_data.save_staged_frames``: RGB pre-shrunk to 640x192 as JPEG, LiDAR GT exact) and a depth-only copy of the
shipped model's bundle; it checks the 64 MiB upload limit and writes the call to ``.gpu_stage/session_call.json``.
What comes back: ``default/`` (gpu_run.json and the bundle/export parts, as ``train_default_gpu collect`` reads
them) and ``session.tar.gz`` (every log, the table JSONs, the parity JSON, nvidia-smi).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
STAGE = ".gpu_stage"
REAL_EVAL = "real_eval_640x192.npz"
DEFAULT_DEPTH = "default_depth.safetensors"
DEFAULT_BUNDLE = REPO / "runs" / "default_model" / "bundles" / "last_validity.safetensors"
TRAVEL_LIMIT_BYTES = 64 * 2**20
DEVICE_TIMEOUT_S = 590

# Table I at 640x192: (job name, table1.py arguments). The Monodepth2 family (the system, FeatDepth and the
# three loss ablations: 5 trainings) runs one process per seed; the other systems two seeds per process.
TABLE_JOBS = (
    ("md2_seed0", ["--systems", "monodepth2,featdepth", "--seeds", "1", "--seed-start", "0"]),
    ("md2_seed1", ["--systems", "monodepth2,featdepth", "--seeds", "1", "--seed-start", "1"]),
    ("md2_seed2", ["--systems", "monodepth2,featdepth", "--seeds", "1", "--seed-start", "2"]),
    ("sfm_packnet", ["--systems", "sfmlearner,packnet", "--ablations", "none", "--seeds", "2"]),
    ("ddv_diffnet", ["--systems", "ddv,diffnet", "--ablations", "none", "--seeds", "2"]),
    ("rtmonodepth", ["--systems", "rtmonodepth", "--ablations", "none", "--seeds", "2"]),
)
# 5 trainings x (75 s + evaluation) + set-up fit a 490 s deadline; a run that would not fit is skipped, not cut.
TABLE_SETTINGS = ["--height", "192", "--width", "640", "--batch-size", "12", "--workers", "2", "--threads", "2",
                  "--latency-runs", "0", "--budget-wall-s", "75", "--deadline-s", "490"]


def prepare(stage: Path, real: Path) -> dict:
    sys.path.insert(0, str(BENCH))
    from monodepth_training.bundle_io import load_bundle, save_bundle
    from monodepth_training.train_default_gpu import device_setup, repo_travel_bytes, tree_bytes
    from monodepth_training.train_default_gpu import main as gpu_main
    from real_data import check_real_root, load_raw_frames, save_staged_frames

    if not (stage / "manifest.json").is_file():
        if gpu_main(["prepare", "--stage", str(stage)]) != 0:
            raise SystemExit("gpu_session: train_default_gpu prepare failed")
    raw_root, _ = check_real_root(real)
    frames, _ = load_raw_frames(raw_root, stride=2)
    info = save_staged_frames(stage / REAL_EVAL, frames, 192, 640)
    depth_net, _pose, meta = load_bundle(DEFAULT_BUNDLE)
    save_bundle(stage / DEFAULT_DEPTH, depth_net, meta)  # the parity check needs only the depth net
    total = repo_travel_bytes() + tree_bytes(stage)
    if total > TRAVEL_LIMIT_BYTES:
        raise SystemExit(f"gpu_session: {total / 2**20:.1f} MiB would travel, over the 64 MiB limit")
    rel = os.path.relpath(stage, REPO)
    command = (device_setup(rel) + f"python3 benchmarks/gpu_session.py device --stage {rel} "
               "--out \"$OUT\" 2>&1 | tee \"$OUT/session.log\"")
    call = {"command": command, "carry": [rel],
            "timeout_s": DEVICE_TIMEOUT_S, "travel_mib": round(total / 2**20, 1), "real_eval": info}
    (stage / "session_call.json").write_text(json.dumps(call, indent=2) + "\n")
    return call


def device(stage: Path, out: Path, dry_run: bool = False) -> int:
    """The device half: parity, default training and the table side by side. The command :func:`prepare` writes
    has already installed the carried wheels and set PYTHONPATH (``train_default_gpu.device_setup``)."""
    t0 = time.time()
    logs = Path(tempfile.mkdtemp(prefix="gpu_session_"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    with open(logs / "nvidia-smi.txt", "w") as f:
        if shutil.which("nvidia-smi"):
            subprocess.run(["nvidia-smi"], stdout=f, stderr=subprocess.STDOUT, check=False)
        else:
            f.write("no nvidia-smi\n")
    py = sys.executable
    dev = "cpu" if dry_run else "cuda"

    def start(name: str, args: list[str]) -> tuple[str, subprocess.Popen, object]:
        log = open(logs / f"{name}.log", "w")
        print(f"[session {time.time() - t0:5.0f} s] start {name}", flush=True)
        return name, subprocess.Popen([py, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log

    def finish(jobs, timeout_at: float) -> None:
        for name, proc, log in jobs:
            try:
                rc = proc.wait(timeout=max(1.0, timeout_at - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "killed at the session's limit"
            log.close()
            print(f"[session {time.time() - t0:5.0f} s] {name}: rc {rc}", flush=True)

    parity = ["benchmarks/cuda_parity.py", "--bundle", str(stage / DEFAULT_DEPTH),
              "--onnx", "monodepth_ros/models/default.onnx", "--real-staged", str(stage / REAL_EVAL),
              "--device", dev, "--out", str(logs / "cuda_parity.json")] + (["--frames", "2", "--runs", "5"]
                                                                         if dry_run else [])
    finish([start("cuda_parity", parity)], t0 + (60 if dry_run else 120))

    jobs = []
    default_out = out / "default"
    default_out.mkdir(parents=True, exist_ok=True)
    jobs.append(start("default_train", ["-m", "monodepth_training.train_default_gpu", "device", "--stage",
                                        str(stage), "--out", str(default_out), "--work", str(logs / "default_run"),
                                        "--budget-s", "430"]
                      + (["--dry-run"] if dry_run else ["--max-time", "00:00:04:30"])))
    settings = (["--quick", "--budget-wall-s", "2", "--deadline-s", "60", "--height", "64", "--width", "192",
                 "--workers", "1"] if dry_run else TABLE_SETTINGS)
    for name, job in (TABLE_JOBS[:1] if dry_run else TABLE_JOBS):
        jobs.append(start(f"table1_{name}", ["benchmarks/table1.py", "--device", dev, *settings, *job,
                                             "--real-staged", str(stage / REAL_EVAL),
                                             "--odom-root", str(stage / "kitti_odometry"),
                                             "--out", str(logs / f"table1_{name}.json")]))
    finish(jobs, t0 + (300 if dry_run else 560))
    shutil.rmtree(logs / "default_run" / "checkpoints", ignore_errors=True)  # 58 MB each; the bundles come back
    with tarfile.open(out / "session.tar.gz", "w:gz") as tar:
        for p in sorted(logs.rglob("*")):
            if p.is_file() and p.stat().st_size < 4 * 2**20:
                tar.add(p, arcname=str(p.relative_to(logs)))
    print(f"[session {time.time() - t0:5.0f} s] done; returned: "
          f"{sorted(str(p.relative_to(out)) for p in out.rglob('*') if p.is_file())}", flush=True)
    return 0


def collect(src: Path, dest: Path) -> None:
    """Unpack ``session.tar.gz`` into ``dest`` and join the default model's parts (train_default_gpu collect)."""
    from monodepth_training.train_default_gpu import collect as collect_default

    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src / "session.tar.gz") as tar:
        tar.extractall(dest, filter="data")
    if (src / "default" / "gpu_run.json").is_file():
        collect_default(src / "default", dest / "default")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("--stage", type=Path, default=REPO / STAGE)
    pp.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    pd = sub.add_parser("device")
    pd.add_argument("--stage", type=Path, default=Path(STAGE))
    pd.add_argument("--out", type=Path, required=True)
    pd.add_argument("--dry-run", action="store_true", help="tiny CPU versions of every job (checks the plumbing)")
    pc = sub.add_parser("collect")
    pc.add_argument("src", type=Path)
    pc.add_argument("--to", type=Path, default=REPO / "runs" / "gpu_session")
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        call = prepare(args.stage, args.real)
        print(json.dumps(call, indent=2))
        return 0
    if args.cmd == "device":
        return device(args.stage if args.stage.is_absolute() else REPO / args.stage, args.out, args.dry_run)
    collect(args.src, args.to)
    print(f"collected into {args.to}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
