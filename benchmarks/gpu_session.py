"""Everything this project measures on a lent GPU, in one call of at most 10 minutes (the device tool's limit).

    .venv/bin/python benchmarks/gpu_session.py prepare          # here: stage into .gpu_stage, print the call
    python3 benchmarks/gpu_session.py device --out "$OUT"       # there, after the printed command's wheel set-up
    .venv/bin/python benchmarks/gpu_session.py collect FILES_AT # here: unpack what came back
    .venv/bin/python benchmarks/gpu_session.py prepare-seeds    # the seeds plan (seed_jobs): stage, print the call
    python3 benchmarks/gpu_session.py device-seeds --out "$OUT" # there

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


# The "seeds" plan (``prepare-seeds`` / ``device-seeds``): the CPU pilot table's missing seeds and ablations at its
# own size (192x64), each run for exactly the steps its training reached in the pilot's 1200 CPU-s (table1.py
# --budget-steps-from), float32, so that they join the pilot's rows. Claimed from one queue by SEED_WORKERS
# processes sharing the GPU (small networks at 192x64 are bound by kernel launches, which parallelise across
# processes); most needed first: a second seed of everything, then the third, then more ablation seeds.
SEEDS_STAGE = ".gpu_stage_seeds"
SEEDS_HW = (64, 192)
SEEDS_REAL_EVAL = "real_eval_64x192.npz"
PILOT = "benchmarks/results/table1_pilot_all.json"
STEP_RATE = "benchmarks/results/table1_step_rate.json"
SEED_WORKERS = 8
PROBE_K = 4
_ABL = ("ablation:no_min_reprojection", "ablation:no_automask", "ablation:no_full_res_multiscale")
_SYSTEMS = ("featdepth", "packnet", "ddv", "monodepth2", "sfmlearner", "rtmonodepth", "diffnet")
# Every row's runs up to three seeds (then more for the ablations), most needed first; :func:`seed_jobs` drops what
# the pilot already has. CHECK_JOBS run even so: the pilot's own run again, the GPU against the CPU for equal steps.
SEED_PLAN = (
    [(name, s) for s in (0, 1) for name in _SYSTEMS] + [(a, s) for s in (0, 1) for a in _ABL]
    + [(name, 2) for name in _SYSTEMS] + [(a, 2) for a in _ABL]
    + [(name, s) for s in (3, 4) for name in ("monodepth2", "featdepth", *_ABL)]
)
CHECK_JOBS = [("monodepth2", 0)]


def seed_jobs(pilot: dict) -> list[tuple[str, int]]:
    """:data:`SEED_PLAN` without the (training, seed) runs ``pilot`` (a table JSON) has, plus :data:`CHECK_JOBS`
    after the second seeds."""
    import table1

    have = set(table1.table_trainings(pilot))
    todo = [job for job in SEED_PLAN if (table1.recipe_named(job[0]).key(), job[1]) not in have]
    second = sum(1 for _, seed in todo if seed <= 1)
    checks = [job for job in CHECK_JOBS if job not in todo]  # a check the pilot lacks is an ordinary job
    return todo[:second] + checks + todo[second:]
SEEDS_SETTINGS = ["--height", str(SEEDS_HW[0]), "--width", str(SEEDS_HW[1]), "--batch-size", "4", "--lr", "2e-4",
                  "--train-frames", "600", "--heldout-frames", "60", "--threads", "1", "--workers", "0",
                  "--latency-runs", "0"]


def prepare(stage: Path, real: Path) -> dict:
    sys.path.insert(0, str(BENCH))
    from monodepth_training.bundle_io import load_bundle, save_bundle
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
    return write_call(stage, "device", real_eval=info)


def write_call(stage: Path, subcommand: str, **extra) -> dict:
    """The device call that runs ``subcommand`` on the staged folder, written to ``stage/session_call.json``, after
    checking that the repo and the stage fit the 64 MiB that may travel."""
    from monodepth_training.train_default_gpu import device_setup, repo_travel_bytes, tree_bytes

    total = repo_travel_bytes() + tree_bytes(stage)
    if total > TRAVEL_LIMIT_BYTES:
        raise SystemExit(f"gpu_session: {total / 2**20:.1f} MiB would travel, over the 64 MiB limit")
    rel = os.path.relpath(stage, REPO)
    command = (device_setup(rel) + f"python3 benchmarks/gpu_session.py {subcommand} --stage {rel} "
               "--out \"$OUT\" 2>&1 | tee \"$OUT/session.log\"")
    call = {"command": command, "carry": [rel], "timeout_s": DEVICE_TIMEOUT_S,
            "travel_mib": round(total / 2**20, 1), **extra}
    (stage / "session_call.json").write_text(json.dumps(call, indent=2) + "\n")
    return call


class Session:
    """One device half's bookkeeping: a log folder (with nvidia-smi's view of the GPU), child processes started with
    their logs in it and awaited up to a time, and the folder packed for the trip back."""

    def __init__(self, prefix: str):
        self.t0 = time.time()
        self.logs = Path(tempfile.mkdtemp(prefix=prefix))
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        with open(self.logs / "nvidia-smi.txt", "w") as f:
            if shutil.which("nvidia-smi"):
                subprocess.run(["nvidia-smi"], stdout=f, stderr=subprocess.STDOUT, check=False)
            else:
                f.write("no nvidia-smi\n")

    def start(self, name: str, args: list[str]) -> tuple[str, subprocess.Popen, object]:
        log = open(self.logs / f"{name}.log", "w")
        print(f"[session {time.time() - self.t0:5.0f} s] start {name}", flush=True)
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return name, proc, log

    def finish(self, jobs, timeout_at: float) -> None:
        """Wait for ``jobs`` (from :meth:`start`) until ``timeout_at`` (a ``time.time()``), killing what is left."""
        for name, proc, log in jobs:
            try:
                rc = proc.wait(timeout=max(1.0, timeout_at - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "killed at the session's limit"
            log.close()
            print(f"[session {time.time() - self.t0:5.0f} s] {name}: rc {rc}", flush=True)

    def pack(self, path: Path) -> None:
        """Every log file under 4 MiB into one tar.gz (what the device tool brings back)."""
        with tarfile.open(path, "w:gz") as tar:
            for p in sorted(self.logs.rglob("*")):
                if p.is_file() and p.stat().st_size < 4 * 2**20:
                    tar.add(p, arcname=str(p.relative_to(self.logs)))


def device(stage: Path, out: Path, dry_run: bool = False) -> int:
    """The device half: parity, default training and the table side by side. The command :func:`prepare` writes
    has already installed the carried wheels and set PYTHONPATH (``train_default_gpu.device_setup``)."""
    session = Session("gpu_session_")
    t0, logs, start, finish = session.t0, session.logs, session.start, session.finish
    dev = "cpu" if dry_run else "cuda"

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
    session.pack(out / "session.tar.gz")
    print(f"[session {time.time() - t0:5.0f} s] done; returned: "
          f"{sorted(str(p.relative_to(out)) for p in out.rglob('*') if p.is_file())}", flush=True)
    return 0


def prepare_seeds(stage: Path, real: Path, wheels_from: Path | None = None) -> dict:
    """Stage the seeds plan: the odometry training frames and the raw drive's evaluation frames at 192x64, both
    lossless (PNG / raw), shrunk by the runtime's ``resize_rgb`` as the CPU pilot's datasets and backend shrank them,
    so that a GPU run reads the pilot's exact pixels; plus the trainer's wheels (copied from ``wheels_from``, else
    downloaded). Writes and returns the device call."""
    sys.path.insert(0, str(BENCH))
    from monodepth_training.train_default_gpu import (
        download_wheels,
        stage_frames,
        wheel_pins,
    )
    from real_data import check_real_root, load_raw_frames, save_staged_frames

    stage.mkdir(parents=True, exist_ok=True)
    raw_root, odom_root = check_real_root(real)
    h, w = SEEDS_HW
    frames_info = stage_frames(odom_root, stage / "kitti_odometry", height=h, width=w, jpeg_quality=None)
    frames, _ = load_raw_frames(raw_root, stride=2)
    info = save_staged_frames(stage / SEEDS_REAL_EVAL, frames, h, w, jpeg_quality=None)
    (stage / "wheels").mkdir(exist_ok=True)
    if wheels_from is not None and any(wheels_from.glob("*.whl")):
        for whl in wheels_from.glob("*.whl"):
            shutil.copyfile(whl, stage / "wheels" / whl.name)
    else:
        download_wheels(stage / "wheels", wheel_pins())
    return write_call(stage, "device-seeds", frames=frames_info, real_eval=info)


def tiny_pilot(path: Path, jobs, steps: int = 2) -> None:
    """A stand-in pilot table for the dry run: every job's training at ``steps`` steps, the dry run's settings."""
    import table1

    rows = [table1.recipe_fields(table1.recipe_named(name)) | {"runs": [{"seed": 0, "steps": steps}]}
            for name in dict.fromkeys(n for n, _ in jobs)]
    settings = {"height": SEEDS_HW[0], "width": SEEDS_HW[1], "batch_size": 4, "lr": 2e-4, "train_frames": 24,
                "heldout_frames": 4, "real_stride": 2, "budget_cpu_s": 1.0, "budget_wall_s": None}
    path.write_text(json.dumps({"settings": settings, "systems": rows, "ablation_baseline": None, "ablations": []}))


def probe_rate(device: str, seconds: float, warmup_steps: int = 20) -> float:
    """Optimiser steps per second of one Monodepth2 training at the seeds plan's size and batch, on cached
    synthetic frames (data loading is not what is measured), after ``warmup_steps`` steps."""
    import table1
    import torch
    from _budget_training import train_for_budget
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    recipe = table1.SYSTEMS["monodepth2"]
    depth, pose, _ = table1.build_networks(recipe, 0)
    depth.to(device), pose.to(device)
    loader = DataLoader(table1.training_set(*SEEDS_HW, 48, None, cache_all=True), batch_size=4, shuffle=True,
                        drop_last=True)
    train_for_budget(depth, pose, loader, budget_cpu_s=1e9, budget_steps=warmup_steps, lr=2e-4)
    run = train_for_budget(depth, pose, loader, budget_cpu_s=1e9, budget_wall_s=seconds, lr=2e-4)
    return run.steps / run.wall_s


def choose_workers(rate_1: float, rate_k: float, k: int) -> int:
    """How many processes share the GPU, from the aggregate rates of 1 and of ``k`` probing processes: launch-bound
    trainings gain from more processes only as far as the GPU's switching between their contexts allows."""
    if rate_k < 1.2 * rate_1:
        return 1
    if rate_k < 0.6 * k * rate_1:
        return max(2, k // 2)
    return SEED_WORKERS


def device_seeds(stage: Path, out: Path, dry_run: bool = False) -> int:
    """The seeds plan's device half: ``cuda_inference.py`` alone on the idle GPU first, then SEED_WORKERS table1
    processes claiming :func:`seed_jobs` from one queue until the deadline. Each worker rewrites its JSON after
    every run, so what finished comes back even if the call's limit kills a worker."""
    session = Session("gpu_seeds_")
    t0, logs, start, finish = session.t0, session.logs, session.start, session.finish
    dev = "cpu" if dry_run else "cuda"
    limit = 150 if dry_run else 575  # the session's own end, inside the tool's 590 s

    inference = ["benchmarks/cuda_inference.py", "--out", str(logs / "cuda_inference.json")]
    finish([start("cuda_inference", inference + (["--dry-run"] if dry_run else []))], t0 + (60 if dry_run else 100))

    # How many processes: one probing process alone, then PROBE_K at once (each prints its steps/s).
    probe_s = "2" if dry_run else "12"
    rates = {}
    for k in (1, PROBE_K):
        procs = [start(f"probe{k}_{i}", ["benchmarks/gpu_session.py", "probe", "--device", dev, "--seconds", probe_s])
                 for i in range(k)]
        finish(procs, time.time() + 90)
        rates[k] = sum(float((logs / f"probe{k}_{i}.log").read_text().split("PROBE_STEPS_PER_S")[-1].split()[0])
                       for i in range(k) if "PROBE_STEPS_PER_S" in (logs / f"probe{k}_{i}.log").read_text())
    n_workers = 2 if dry_run else choose_workers(rates[1], rates[PROBE_K], PROBE_K)
    print(f"[session {time.time() - t0:5.0f} s] probe: {rates[1]:.1f} steps/s alone, {rates[PROBE_K]:.1f} with "
          f"{PROBE_K} processes -> {n_workers} worker(s)", flush=True)
    (logs / "probe.json").write_text(json.dumps({"rates": rates, "workers": n_workers}))

    sys.path.insert(0, str(BENCH))
    import table1

    jobs_list = seed_jobs(json.loads((REPO / PILOT).read_text()))
    jobs_list = jobs_list[:3] if dry_run else jobs_list

    table1.write_queue(logs / "queue", jobs_list)
    if dry_run:
        pilot, rate = logs / "tiny_pilot.json", None
        tiny_pilot(pilot, jobs_list)
        settings = [*SEEDS_SETTINGS, "--train-frames", "24", "--heldout-frames", "4"]
    else:
        pilot, rate, settings = REPO / PILOT, REPO / STEP_RATE, SEEDS_SETTINGS
    budget = ["--budget-steps-from", str(pilot)] + (["--budget-steps-rate", str(rate)] if rate else [])
    deadline = limit - (time.time() - t0) - 10  # each worker's clock starts now; 10 s to write and pack
    workers = []
    for i in range(n_workers):
        workers.append(start(f"table1_w{i}", [
            "benchmarks/table1.py", "--device", dev, *settings, *budget,
            "--queue", str(logs / "queue"), "--deadline-s", f"{deadline:.0f}",
            "--real-staged", str(stage / SEEDS_REAL_EVAL), "--odom-root", str(stage / "kitti_odometry"),
            "--parallel-note", f"{n_workers} process(es) claiming runs from one queue on one GPU",
            "--out", str(logs / f"table1_w{i}.json")]))
    finish(workers, t0 + limit)
    left = sorted(p.name for p in (logs / "queue" / "todo").glob("*.json"))
    print(f"[session {time.time() - t0:5.0f} s] jobs never claimed: {len(left)}", flush=True)
    session.pack(out / "session.tar.gz")
    print(f"[session {time.time() - t0:5.0f} s] done", flush=True)
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
    ps = sub.add_parser("prepare-seeds")
    ps.add_argument("--stage", type=Path, default=REPO / SEEDS_STAGE)
    ps.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    ps.add_argument("--wheels-from", type=Path, default=REPO / STAGE / "wheels",
                    help="copy the trainer's wheels from here when it has them (else they are downloaded)")
    pds = sub.add_parser("device-seeds")
    pds.add_argument("--stage", type=Path, default=Path(SEEDS_STAGE))
    pds.add_argument("--out", type=Path, required=True)
    pds.add_argument("--dry-run", action="store_true", help="tiny CPU versions of every job (checks the plumbing)")
    pr = sub.add_parser("probe", help="print one training's steps/s (device-seeds runs it to pick the processes)")
    pr.add_argument("--device", default="cuda")
    pr.add_argument("--seconds", type=float, default=12.0)
    pc = sub.add_parser("collect")
    pc.add_argument("src", type=Path)
    pc.add_argument("--to", type=Path, default=REPO / "runs" / "gpu_session")
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        call = prepare(args.stage, args.real)
        print(json.dumps(call, indent=2))
        return 0
    if args.cmd == "probe":
        sys.path.insert(0, str(BENCH))
        print(f"PROBE_STEPS_PER_S {probe_rate(args.device, args.seconds):.3f}", flush=True)
        return 0
    if args.cmd == "prepare-seeds":
        print(json.dumps(prepare_seeds(args.stage, args.real, args.wheels_from), indent=2))
        return 0
    if args.cmd in ("device", "device-seeds"):
        run = device if args.cmd == "device" else device_seeds
        return run(args.stage if args.stage.is_absolute() else REPO / args.stage, args.out, args.dry_run)
    collect(args.src, args.to)
    print(f"collected into {args.to}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
