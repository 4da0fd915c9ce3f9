"""`make train-default-gpu`: the default model's recipe at 640x192 with AMP, trained in one call on a lent GPU.

The GPU machine starts bare, reaches no network and takes at most 64 MiB of upload, so the work is split in three:

- ``prepare`` (here, no GPU): stage into ``.gpu_stage/`` (git-ignored) the wheels its image lacks and the training
  frames (KITTI odometry 03, frames 0-699, shrunk to 640x192 as the dataset would), check that everything that
  travels stays under 64 MiB, and write the one device command to ``.gpu_stage/device_call.json``;
- ``device`` (there): train with ``config/train/default_model_gpu.yaml``, pick the bundle as ``make
  train-default`` does, export ONNX + INT8, and leave in ``--out``: ``gpu_run.json`` (throughput, steps, device,
  scores) and the bundles and exports split into parts under the 16 MiB a returned file may have;
- ``collect`` (here): join the returned parts back into files and check them against ``gpu_run.json``.

``device --dry-run`` runs the same code on CPU at a tiny size for a few steps: the test suite uses it to check
everything up to the device call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import lightning as L

from monodepth_ros.bundle import atomic_write_bytes, file_sha256

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "train" / "default_model_gpu.yaml"
STAGE = ".gpu_stage"  # relative to the repository root: the device call carries it by this name
KITTI_SOURCE = REPO.parent / "shared" / "data" / "real" / "kitti_odometry"

# What the lent GPU machine accepts: upload, command, returned files.
TRAVEL_LIMIT_BYTES = 64 * 2**20
COMMAND_MAX_CHARS = 2000
RETURN_FILE_MAX_BYTES = 16 * 2**20
RETURN_MAX_FILES = 8
PART_BYTES = 15 * 2**20
# A machine is held for 15 minutes of device time in all, start-up included; one command may run 10.
DEVICE_TIMEOUT_S = 590
# The device half stops starting new work after this long, so that a slow export cannot cost the bundles.
DEVICE_BUDGET_S = 550

# Packages the trainer imports that the GPU image does not have (its package list of 2026-11-17): the Lightning CLI's
# config parser with its signature extras, and kornia. Pinned to what this checkout's venv runs.
CARRIED_WHEELS = ("kornia", "kornia_rs", "jsonargparse", "docstring_parser", "typeshed_client")
# Staged frames: JPEG (the KITTI frames are JPEG already; PNG would not fit in 64 MiB). 700 frames at 640x192
# take 33 MiB at quality 95 (mean |error| 1.1 grey levels against the shrunk original), 23 MiB at 90 (1.8).
JPEG_QUALITY = 95


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# ----------------------------------------------------------------------------------------------- prepare
def wheel_pins(requirements: Path = REPO / "requirements" / "train.txt") -> dict[str, str]:
    """``{name: version}`` of the carried wheels: requirements/train.txt's pin where it has one, else the version
    this venv runs (the transitive ones, e.g. kornia_rs), so the GPU runs what the tests here ran."""
    from importlib.metadata import version

    pinned = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            pinned[_normalise(name.split("[", 1)[0])] = ver.strip()
    return {name: pinned.get(_normalise(name)) or version(name) for name in CARRIED_WHEELS}


def download_wheels(dest: Path, pins: dict[str, str]) -> list[Path]:
    """Fetch the wheels for the GPU image's CPython 3.12 on x86-64 (README's recipe); one version of each, since
    two stop the whole install there."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    for p in platforms:
        cmd += ["--platform", p]
    cmd += [f"{name}=={ver}" for name, ver in pins.items()]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("*.whl"))
    names = [_normalise(w.name.split("-", 1)[0]) for w in wheels]
    if sorted(names) != sorted(_normalise(n) for n in pins):
        raise RuntimeError(f"expected one wheel each of {sorted(pins)}, got {[w.name for w in wheels]}")
    return wheels


def stage_frames(src_root: Path, dest_root: Path, *, sequence: str = "03", camera: int = 0,
                 frames: tuple[int, int] = (0, 699), height: int = 192, width: int = 640,
                 jpeg_quality: int | None = JPEG_QUALITY) -> dict[str, Any]:
    """Copy one KITTI odometry sequence's training frames, shrunk to ``height`` x ``width``, into ``dest_root``
    (JPEG at ``jpeg_quality``; None: lossless PNG, the exact pixels a dataset of this size decodes).

    The frames get the shrink the dataset itself applies (area resize of the decoded RGB) and the calibration the
    matching ``scale_intrinsics`` (``P' = A P``), so a dataset at this size reads the same pixels (up to the JPEG
    re-encode) and the same intrinsics as from the originals. ``times.txt`` and ``poses/NN.txt`` are copied whole:
    ``load_sequence`` wants one line per frame of the sequence, and the speeds of the edge frames use their
    neighbours.
    """
    import cv2
    import numpy as np

    from monodepth_ros.backends.base import resize_rgb
    from monodepth_ros.datasets.kitti import load_rgb, read_calib_file, write_calib_file
    from monodepth_ros.datasets.kitti_odometry import CAMERAS, load_sequence
    from monodepth_ros.geometry import scale_intrinsics

    seq = load_sequence(src_root, sequence)
    name = seq.sequence
    src_dir = Path(src_root) / "sequences" / name
    dst_dir = Path(dest_root) / "sequences" / name
    shutil.rmtree(dst_dir, ignore_errors=True)
    img_dir = dst_dir / CAMERAS[camera]
    img_dir.mkdir(parents=True)
    first, last = frames
    wanted = [i for i in sorted(seq.images[camera]) if first <= i <= last]
    if len(wanted) != last - first + 1:
        raise FileNotFoundError(f"{src_dir / CAMERAS[camera]} lacks frames of {first}-{last}")
    src_hw = None
    for i in wanted:
        rgb = load_rgb(seq.images[camera][i])
        src_hw = src_hw or rgb.shape[:2]
        if rgb.shape[:2] != src_hw:
            raise ValueError(f"{seq.images[camera][i]} is {rgb.shape[:2]}, the sequence's first frame {src_hw}")
        small = resize_rgb(rgb, height, width)
        grey = bool((small[..., 0] == small[..., 1]).all() and (small[..., 1] == small[..., 2]).all())
        out = small[..., 0] if grey else cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        ext, params = (".png", []) if jpeg_quality is None else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        ok, buf = cv2.imencode(ext, out, params)
        if not ok:
            raise RuntimeError(f"cannot encode {seq.images[camera][i]}")
        (img_dir / f"{i:06d}{ext}").write_bytes(buf.tobytes())

    sy, sx = height / src_hw[0], width / src_hw[1]
    A = scale_intrinsics(np.eye(3), sx, sy)  # the resize as a pixel map, so any P (with its t column) scales too
    calib = read_calib_file(src_dir / "calib.txt")
    for key, value in calib.items():
        if key.startswith("P") and value.size == 12:
            calib[key] = A @ value.reshape(3, 4)
    write_calib_file(dst_dir / "calib.txt", calib)
    shutil.copyfile(src_dir / "times.txt", dst_dir / "times.txt")
    poses = Path(src_root) / "poses" / f"{name}.txt"
    if poses.is_file():
        (Path(dest_root) / "poses").mkdir(exist_ok=True)
        shutil.copyfile(poses, Path(dest_root) / "poses" / f"{name}.txt")
    return {"sequence": name, "camera": camera, "frames": [first, last], "num_images": len(wanted),
            "source_hw": list(src_hw), "hw": [height, width],
            "jpeg_quality": None if jpeg_quality is None else int(jpeg_quality)}


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def repo_travel_bytes(repo: Path = REPO) -> int:
    """Bytes of what every device call sends: tracked and untracked-not-ignored files (README's rule)."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=repo, check=True,
                         capture_output=True).stdout
    return sum((repo / f).stat().st_size for f in out.decode().split("\0") if f and (repo / f).is_file())


def device_setup(stage: str = STAGE) -> str:
    """Shell prefix of every device command (this one's and ``benchmarks/gpu_session.py``'s): install the carried
    wheels to /tmp/site, map ``monodepth_training`` to ``training/`` (there is no install there: setup.py's
    package_dir does it here) and export the PYTHONPATH that finds both; stop if any of it fails."""
    return (
        "set -o pipefail; "
        f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
        f"{stage}/wheels/*.whl && mkdir -p /tmp/shim && ln -sfn \"$PWD/training\" /tmp/shim/monodepth_training "
        "&& export PYTHONPATH=/tmp/site:/tmp/shim:$PWD PYTHONUNBUFFERED=1 || exit; "
    )


def device_call(stage: str = STAGE, budget_s: int = DEVICE_BUDGET_S) -> dict[str, Any]:
    """The ``run`` tool call: :func:`device_setup`, then the device half, keeping its log."""
    command = (
        device_setup(stage)
        + "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; "
        f"python3 -m monodepth_training.train_default_gpu device --stage {stage} --out \"$OUT\" "
        f"--budget-s {budget_s} 2>&1 | tee \"$OUT/train.log\""
    )
    return {"command": command, "carry": [stage], "timeout_s": DEVICE_TIMEOUT_S}


def prepare(stage: Path, src_root: Path = KITTI_SOURCE, wheels: bool = True, config: Path = CONFIG,
            jpeg_quality: int = JPEG_QUALITY) -> dict[str, Any]:
    """Stage frames (and wheels) into ``stage``; return the manifest (also written to ``stage/manifest.json``)."""
    import yaml

    cfg = yaml.safe_load(Path(config).read_text())
    part = _kitti_part(cfg)
    stage = Path(stage)
    stage.mkdir(parents=True, exist_ok=True)
    if not Path(src_root).is_dir():
        raise FileNotFoundError(f"KITTI odometry folder not found: {src_root} (see ../shared/data/real/README.md)")
    t0 = time.time()
    frames = stage_frames(src_root, stage / "kitti_odometry", sequence=str(part["sequences"][0]),
                          camera=int(part.get("camera", 0)), frames=tuple(part["frames"]),
                          height=int(cfg["data"]["height"]), width=int(cfg["data"]["width"]),
                          jpeg_quality=jpeg_quality)
    manifest: dict[str, Any] = {"frames": {**frames, "source": str(src_root), "seconds": round(time.time() - t0, 1)},
                                "licence": "KITTI, CC BY-NC-SA 3.0: git-ignored, never commit"}
    if wheels:
        pins = wheel_pins()
        manifest["wheels"] = {w.name: w.stat().st_size for w in download_wheels(stage / "wheels", pins)}
    manifest["stage_bytes"] = tree_bytes(stage)
    atomic_write_bytes(stage / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _kitti_part(cfg: dict[str, Any]) -> dict[str, Any]:
    parts = cfg["data"]["train"].get("parts", [cfg["data"]["train"]])
    found = [p for p in parts if p.get("source") == "kitti_odometry"]
    if len(found) != 1:
        raise ValueError(f"expected one kitti_odometry part in the GPU config, got {len(found)}")
    return found[0]


# ------------------------------------------------------------------------------------------------ device
class Throughput(L.Callback):
    """Steady-state training samples/s, leaving out the first ``warmup_steps`` (worker start, cuDNN autotune)
    and validation; also how long the main process waited for the next batch (a loader-bound run waits most of
    its step). Prints a line every ``report_every_s`` because the progress bar is off in a log."""

    def __init__(self, warmup_steps: int = 20, report_every_s: float = 30.0):
        super().__init__()
        self.warmup_steps = warmup_steps
        self.report_every_s = report_every_s
        self.samples = 0
        self.steps = 0
        self.busy_s = 0.0
        self.wait_s = 0.0
        self._last_end: float | None = None
        self._start: float | None = None
        self._last_report = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last_end is not None and trainer.global_step >= self.warmup_steps:
            self.wait_s += now - self._last_end
        self._start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if trainer.global_step > self.warmup_steps and self._start is not None:
            self.samples += int(batch["index"].shape[0])
            self.steps += 1
            self.busy_s += now - self._start
        self._last_end = now
        if now - self._last_report >= self.report_every_s:
            self._last_report = now
            print(f"[gpu-train] step {trainer.global_step} epoch {trainer.current_epoch} "
                  f"{self.samples_per_s():.1f} samples/s, waited for data {self.data_wait_fraction():.0%}", flush=True)

    def on_validation_start(self, trainer, pl_module) -> None:
        # The gap across a validation is not time spent waiting for training data.
        self._last_end = None

    def samples_per_s(self) -> float:
        total = self.busy_s + self.wait_s
        return self.samples / total if total > 0 else 0.0

    def data_wait_fraction(self) -> float:
        total = self.busy_s + self.wait_s
        return self.wait_s / total if total > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {"samples_per_s": round(self.samples_per_s(), 2), "measured_steps": self.steps,
                "measured_samples": self.samples, "warmup_steps": self.warmup_steps,
                "data_wait_fraction": round(self.data_wait_fraction(), 3)}


def effective_config(work: Path, stage: Path, dry_run: bool, max_time: str | None = None,
                     config: Path = CONFIG) -> dict[str, Any]:
    """The GPU config with every path under ``work``, the real frames read from ``stage``, and the throughput
    callback added; ``dry_run`` shrinks it to a few CPU steps at a tiny size."""
    import yaml

    cfg = yaml.safe_load(Path(config).read_text())
    tr = cfg["trainer"]
    tr["default_root_dir"] = str(work)
    tr["logger"]["init_args"]["save_dir"] = str(work)
    for cb in tr["callbacks"]:
        if "dirpath" in cb.get("init_args", {}):
            sub = Path(cb["init_args"]["dirpath"]).name  # checkpoints / bundles
            cb["init_args"]["dirpath"] = str(work / sub)
    tr["callbacks"].append({"class_path": f"{__name__}.Throughput",
                            "init_args": {"warmup_steps": 1 if dry_run else 20}})
    tr["enable_progress_bar"] = False
    if max_time:
        tr["max_time"] = max_time
    _kitti_part(cfg)["data_dir"] = str(Path(stage) / "kitti_odometry")
    if dry_run:
        data = cfg["data"]
        data.update(height=64, width=224, batch_size=2, num_workers=0, pin_memory=False)
        for part in data["train"]["parts"]:
            if part["source"] == "synthetic":
                part.update(num_frames=8, cache_frames=8)
        data["val"]["num_frames"] = 4
        tr.update(accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=1,
                  num_sanity_val_steps=0, log_every_n_steps=1, benchmark=False, max_time=None)
    return cfg


def split_into_parts(files: list[Path], out: Path, stem: str, part_bytes: int = PART_BYTES) -> dict[str, int]:
    """Tar ``files`` (flat) and cut the tar into ``<stem>.tar.NN`` parts of at most ``part_bytes`` in ``out``: the
    tool returns files of at most 16 MiB, and a bundle (depth + pose net) is ~19 MB. Returns ``{part: bytes}``:
    a lost part can hold only the tar's zero padding, which unpacking would not miss."""
    tmp = out / f".{stem}.tar"
    with tarfile.open(tmp, "w") as tar:
        for f in files:
            tar.add(f, arcname=f.name)
    for old in out.glob(f"{stem}.tar.*"):
        old.unlink()
    names: dict[str, int] = {}
    with open(tmp, "rb") as src:
        while block := src.read(part_bytes):
            name = f"{stem}.tar.{len(names):02d}"
            (out / name).write_bytes(block)
            names[name] = len(block)
    tmp.unlink()
    return names


def _write_report(out: Path, report: dict[str, Any]) -> None:
    atomic_write_bytes(out / "gpu_run.json", (json.dumps(report, indent=2, default=str) + "\n").encode())


def run_device(stage: Path, out: Path, work: Path, *, dry_run: bool = False, max_time: str | None = None,
               budget_s: float = DEVICE_BUDGET_S) -> dict[str, Any]:
    """Train, pick, score and export; every stage updates ``out/gpu_run.json`` so a cut-off run still reports."""
    import torch
    import yaml
    from monodepth_training import cli

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": "make train-default-gpu", "dry_run": dry_run,
                              "config": str(CONFIG.relative_to(REPO)), "torch": torch.__version__,
                              "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        report["device"] = torch.cuda.get_device_name(0)
    else:
        report["device"] = f"cpu ({os.cpu_count()} cores)"
        if not dry_run:
            raise SystemExit("train_default_gpu: no CUDA device (use --dry-run to check the pipeline on CPU)")
    manifest_path = stage / "manifest.json"
    if not manifest_path.is_file():
        raise SystemExit(f"train_default_gpu: {manifest_path} missing: run `make train-default-gpu-prepare` first")
    manifest = json.loads(manifest_path.read_text())
    cfg = effective_config(work, stage, dry_run, max_time)
    if not dry_run and manifest["frames"]["hw"] != [cfg["data"]["height"], cfg["data"]["width"]]:
        raise SystemExit(f"staged frames are {manifest['frames']['hw']}, the config trains at "
                         f"{[cfg['data']['height'], cfg['data']['width']]}: run the prepare step again")
    if out.resolve().is_relative_to(work.resolve()):
        raise SystemExit(f"train_default_gpu: --out {out} must not lie inside the run folder {work}")
    # A fresh run each time: one device call has no earlier run to resume.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg_path = work / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    report.update(height=cfg["data"]["height"], width=cfg["data"]["width"], batch_size=cfg["data"]["batch_size"],
                  num_workers=cfg["data"]["num_workers"], max_time=cfg["trainer"].get("max_time"))
    _write_report(out, report)

    # TF32 for whatever stays in float32 under AMP; no effect on CPU.
    torch.set_float32_matmul_precision("high")
    t_fit = time.time()
    argv, sys.argv = sys.argv, sys.argv[:1]  # else LightningCLI warns that it got both args and a command line
    try:
        run = cli.run(["fit", "--config", str(cfg_path)])
    except BaseException as e:  # the report says why even when the log is cut off
        report.update(error=f"{type(e).__name__}: {e}", wall_s=round(time.time() - t0, 1))
        _write_report(out, report)
        raise
    finally:
        sys.argv = argv
    trainer = run.trainer
    throughput = next(cb for cb in trainer.callbacks if isinstance(cb, Throughput))
    report.update(
        precision=str(trainer.precision),
        steps=int(trainer.global_step),
        epochs=int(trainer.current_epoch),
        fit_wall_s=round(time.time() - t_fit, 1),
        **throughput.summary(),
        val_metrics={k: float(v) for k, v in trainer.callback_metrics.items()
                     if k.startswith("val/") and v.numel() == 1},
    )
    if torch.cuda.is_available():
        report["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)

    # The same choice as `make train-default`: the last step (validation is synthetic; see train_default.py).
    bundles = {p.name: p for p in (work / "bundles").glob("*.safetensors")}
    chosen = bundles.get("last.safetensors") or bundles.get("best.safetensors")
    if chosen is None:
        raise SystemExit(f"train_default_gpu: no bundle under {work / 'bundles'}")
    report["bundles"] = {n: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for n, p in sorted(bundles.items())}
    report["chosen_bundle"] = chosen.name
    report["parts"] = {"bundles": split_into_parts(sorted(bundles.values()), out, "bundles")}
    report["wall_s"] = round(time.time() - t0, 1)
    _write_report(out, report)

    from monodepth_training.train_default import heldout_scores

    report["heldout_synthetic"] = heldout_scores(chosen, n_frames=4 if dry_run else 40)
    _write_report(out, report)

    export_dir = work / "export"
    left = budget_s - (time.time() - t0)
    # ONNX + INT8 at 640x192 took 33 s on 2 busy cores here (ONNX alone 6 s): start only what still fits.
    fmt = "ort-int8" if dry_run or left > 75 else "onnx"
    if left > 30:
        from monodepth_training.export import cli as export

        args = ["--model", str(chosen), "--format", fmt, "--out", str(export_dir), "--name", "default"]
        if fmt == "ort-int8":  # `make train-default`'s calibration, on more of the machine's cores
            args += (["--calib", "synthetic:4", "--heldout-frames", "4", "--threads", "1"] if dry_run
                     else ["--calib", "synthetic:64", "--heldout-frames", "24", "--threads", "8"])
        t_exp = time.time()
        rc = export.main(args)
        files = sorted(p for p in export_dir.glob("default*") if p.suffix in (".onnx", ".json"))
        report["export"] = {"format": fmt, "rc": rc, "wall_s": round(time.time() - t_exp, 1),
                            "files": {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files}}
        report["parts"]["export"] = split_into_parts(files, out, "export")
    else:
        report["export"] = {"skipped": f"only {left:.0f} s of the {budget_s:.0f} s budget left"}
    report["wall_s"] = round(time.time() - t0, 1)
    report["imported_modules"] = sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")})
    _write_report(out, report)
    returned = sorted(p.name for p in out.iterdir() if p.is_file())
    too_big = [n for n in returned if (out / n).stat().st_size > RETURN_FILE_MAX_BYTES]
    if too_big or len(returned) + 1 > RETURN_MAX_FILES:  # + the train.log the device command writes
        print(f"train_default_gpu: WARNING {returned} exceed what the tool returns", file=sys.stderr)
    print(f"[gpu-train] done: {report['steps']} steps, {report['samples_per_s']} samples/s on {report['device']}, "
          f"{report['wall_s']} s; chosen {chosen.name}", flush=True)
    return report


# ----------------------------------------------------------------------------------------------- collect
def collect(src: Path, dest: Path) -> dict[str, Any]:
    """Join the returned ``*.tar.NN`` parts, unpack them into ``dest`` and check each file's sha256."""
    report = json.loads((Path(src) / "gpu_run.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    expected = {**report.get("bundles", {}), **report.get("export", {}).get("files", {})}
    for stem, parts in report.get("parts", {}).items():
        tar_path = dest / f"{stem}.tar"
        try:
            with open(tar_path, "wb") as f:
                for name, size in parts.items():
                    block = (Path(src) / name).read_bytes()
                    if len(block) != size:
                        raise OSError(f"{name} has {len(block)} bytes, {size} were sent")
                    f.write(block)
            with tarfile.open(tar_path) as tar:
                tar.extractall(dest, filter="data")
        except (OSError, tarfile.TarError) as e:
            raise ValueError(f"returned files missing or corrupt: {stem} parts ({e})") from e
        finally:
            tar_path.unlink(missing_ok=True)
    bad = [n for n, info in expected.items() if not (dest / n).is_file() or file_sha256(dest / n) != info["sha256"]]
    if bad:
        raise ValueError(f"returned files missing or corrupt: {bad}")
    shutil.copyfile(Path(src) / "gpu_run.json", dest / "gpu_run.json")
    return report


# ---------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="stage wheels + frames into .gpu_stage and write the device call")
    pp.add_argument("--stage", default=STAGE, help="staging folder, relative to the repository root")
    pp.add_argument("--kitti", default=str(KITTI_SOURCE), help="KITTI odometry folder (holding sequences/)")
    pp.add_argument("--no-wheels", action="store_true", help="frames only (a CUDA machine with this venv)")
    pp.add_argument("--jpeg-quality", type=int, default=JPEG_QUALITY, help="of the staged frames (default 95)")
    pd = sub.add_parser("device", help="train + export on the GPU, results into --out")
    pd.add_argument("--stage", default=STAGE)
    pd.add_argument("--out", required=True, help="folder for gpu_run.json and the returned parts")
    pd.add_argument("--work", default="runs/default_model_gpu", help="run folder (checkpoints, bundles, logs)")
    pd.add_argument("--max-time", default=None, help="override trainer.max_time (DD:HH:MM:SS)")
    pd.add_argument("--budget-s", type=float, default=DEVICE_BUDGET_S, help="start no export after this long")
    pd.add_argument("--dry-run", action="store_true", help="a few CPU steps at a tiny size")
    pc = sub.add_parser("collect", help="join the parts a device call returned and verify them")
    pc.add_argument("src", help="the folder the device files landed in (files_at)")
    pc.add_argument("--to", default="runs/default_model_gpu/returned")
    args = p.parse_args(argv)

    def here(path: str) -> Path:
        return Path(path) if Path(path).is_absolute() else REPO / path

    if args.cmd == "prepare":
        stage = here(args.stage)
        # The staged frames are KITTI's pixels: never committable. Only a folder inside the repo can be carried.
        inside = stage.resolve().is_relative_to(REPO.resolve())
        if inside and subprocess.run(["git", "check-ignore", "-q", str(stage / "x")], cwd=REPO).returncode != 0:
            print(f"train_default_gpu: {stage} is not git-ignored; add it to .gitignore first", file=sys.stderr)
            return 1
        manifest = prepare(stage, Path(args.kitti), wheels=not args.no_wheels, jpeg_quality=args.jpeg_quality)
        repo_b = repo_travel_bytes()
        total = repo_b + manifest["stage_bytes"]
        call = device_call(os.path.relpath(stage, REPO))
        call["travel_bytes"] = {"repo": repo_b, "stage": manifest["stage_bytes"], "total": total,
                                "limit": TRAVEL_LIMIT_BYTES}
        atomic_write_bytes(stage / "device_call.json", (json.dumps(call, indent=2) + "\n").encode())
        print(f"staged {manifest['frames']['num_images']} frames"
              f"{' + ' + str(len(manifest['wheels'])) + ' wheels' if 'wheels' in manifest else ''} into {stage}: "
              f"{manifest['stage_bytes'] / 2**20:.1f} MiB; with the repo {total / 2**20:.1f} MiB of 64")
        if not inside:
            print(f"note: {stage} is outside the repository, so a device call cannot carry it")
        print(f"device call ({len(call['command'])} chars), also in {stage / 'device_call.json'}:")
        print(json.dumps({k: call[k] for k in ("command", "carry", "timeout_s")}, indent=2))
        if total > TRAVEL_LIMIT_BYTES:
            print("train_default_gpu: over the 64 MiB the device call may carry; try --jpeg-quality 90 (10 MiB less)",
                  file=sys.stderr)
            return 1
        return 0
    if args.cmd == "device":
        run_device(here(args.stage), Path(args.out), here(args.work), dry_run=args.dry_run,
                   max_time=args.max_time, budget_s=args.budget_s)
        return 0
    report = collect(Path(args.src), here(args.to))
    print(f"collected {report.get('chosen_bundle')} and exports into {here(args.to)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
