"""`make train-default-gpu`: everything up to the device call, checked on CPU.

The GPU machine is lent to some tasks only, starts bare and reaches no network, so what can go wrong there is
checked here: the GPU config is the default recipe, the staged frames read like the originals, what travels fits
64 MiB and the command 2000 characters, and the device half runs end to end (on CPU, tiny, a few steps) importing
nothing the GPU image lacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pytest
import yaml
from monodepth_training import train_default_gpu as gpu

REPO = Path(__file__).resolve().parents[2]
REAL = gpu.KITTI_SOURCE
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real KITTI odometry frames not present at {REAL} "
                                                         "(a clone without ../shared)")
needs_git = pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                               reason="not a git checkout: what travels is defined by git's ignore rules")

# Distributions the GPU image holds (/work/.library/device/KINDS.md, package list of 2026-11-17), limited to those
# the device half was seen to import; a new import outside this list must travel as a wheel.
IMAGE_DISTRIBUTIONS = frozenset(
    """absl-py attrs cycler filelock fonttools fsspec kiwisolver lightning lightning-utilities matplotlib ml-dtypes
    mpmath networkx numpy onnx onnx-ir onnxruntime onnxscript opencv-python-headless packaging pillow protobuf
    pyparsing python-dateutil pyyaml safetensors scipy sympy tensorboard torch torchmetrics tqdm
    typing-extensions""".split()
)
# Imported here only because this venv has them; each importer falls back without (fsspec's lz4/zstd codecs,
# jsonargparse's ruamel loader, the ROS wheels' .pth hook).
# OpenVINO: the INT8 export also checks its budget on OpenVINO where installed, and says "not checked" where not.
OPTIONAL_HERE = frozenset({"lz4", "backports-zstd", "ruamel-yaml", "ros-wheels-bootstrapper", "openvino",
                           "openvino-telemetry"})
# The five carried wheels measured 7.9 MiB (kornia_rs alone 5.1).
WHEELS_BYTES_BOUND = 9 * 2**20


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------------------------- no data
def test_gpu_config_is_the_default_recipe_at_640x192_with_amp():
    cpu = _load(REPO / "config/train/default_model.yaml")
    gpu_cfg = _load(gpu.CONFIG)
    # The recipe: every model setting but the LR step (stretched to the GPU's many more epochs, see the config).
    assert {k: v for k, v in gpu_cfg["model"].items() if k != "lr_step_epochs"} == \
        {k: v for k, v in cpu["model"].items() if k != "lr_step_epochs"}
    assert gpu_cfg["model"]["lr_step_epochs"] >= cpu["model"]["lr_step_epochs"]
    assert gpu_cfg["seed_everything"] == cpu["seed_everything"]
    d_gpu, d_cpu = gpu_cfg["data"], cpu["data"]
    assert (d_gpu["height"], d_gpu["width"]) == (192, 640)
    assert d_gpu["batch_size"] > d_cpu["batch_size"]
    for key in ("frame_offsets", "use_stereo", "val"):
        assert d_gpu[key] == d_cpu[key], key
    # The same data parts, in the same order (the first names the training camera), but for where the real frames
    # are read and the per-worker frame cache (which does not change a sample).
    assert d_gpu["train"]["source"] == d_cpu["train"]["source"]
    parts_gpu, parts_cpu = d_gpu["train"]["parts"], d_cpu["train"]["parts"]
    assert len(parts_gpu) == len(parts_cpu)
    for pg, pc in zip(parts_gpu, parts_cpu, strict=True):
        assert {k: v for k, v in pg.items() if k not in ("data_dir", "cache_frames")} == \
            {k: v for k, v in pc.items() if k not in ("data_dir", "cache_frames")}
    assert gpu._kitti_part(gpu_cfg)["data_dir"] == f"{gpu.STAGE}/kitti_odometry"
    t_gpu, t_cpu = gpu_cfg["trainer"], cpu["trainer"]
    assert t_gpu["precision"] == "16-mixed"
    # The same callbacks, but for their folders and how often the resumable checkpoint is written.
    def callbacks(cfg):
        return [(c["class_path"], {k: v for k, v in c["init_args"].items()
                                   if k not in ("dirpath", "every_n_train_steps")}) for c in cfg["callbacks"]]

    assert callbacks(t_gpu) == callbacks(t_cpu)
    # Every output of the GPU run lands in its own folder, not in the CPU run's.
    assert all("default_model_gpu" in c["init_args"]["dirpath"] for c in t_gpu["callbacks"])


def test_device_call_fits_the_tool_and_leaves_time_for_start_and_export():
    call = gpu.device_call()
    assert len(call["command"]) <= gpu.COMMAND_MAX_CHARS
    assert call["carry"] == [gpu.STAGE] and len(call["carry"]) <= 8
    # The README's wheel install first, then the device half, its log kept in $OUT.
    assert call["command"].index("pip install -q --no-index --no-deps") < call["command"].index(" device ")
    assert f"{gpu.STAGE}/wheels/*.whl" in call["command"] and '"$OUT/train.log"' in call["command"]
    days, h, m, s = (int(x) for x in _load(gpu.CONFIG)["trainer"]["max_time"].split(":"))
    max_time_s = ((days * 24 + h) * 60 + m) * 60 + s
    # Training, then ~1 min of imports and loaders before it and ~2 min of validation, scoring and export after.
    assert max_time_s + 180 <= gpu.DEVICE_BUDGET_S < call["timeout_s"] <= 600


@needs_git
def test_staging_folder_is_git_ignored():
    # The staged frames are KITTI's (non-commercial licence): they must never be committable.
    rc = subprocess.run(["git", "check-ignore", "-q", f"{gpu.STAGE}/kitti_odometry/x.jpg"], cwd=REPO).returncode
    assert rc == 0


def test_trainer_imports_through_the_device_shim_without_an_install(tmp_path):
    # There is no pip install of this repo on the GPU machine: the command links training/ as monodepth_training
    # (setup.py's package_dir) onto PYTHONPATH. The script must still find the repo (its config) through the link.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "monodepth_training").symlink_to(REPO / "training", target_is_directory=True)
    code = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
        "import monodepth_training.train_default_gpu as m\n"
        "print(m.__file__); print(m.REPO); print(m.CONFIG.is_file())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    file, repo, config_found = res.stdout.split()
    assert file.startswith(str(shim)) and Path(repo) == REPO and config_found == "True"
    assert "/tmp/shim/monodepth_training" in gpu.device_call()["command"]
    assert gpu.device_call()["command"].startswith(gpu.device_setup())  # the one set-up every device command uses


def test_carried_wheels_are_pinned_like_the_venv():
    pins = gpu.wheel_pins()
    assert sorted(pins) == sorted(gpu.CARRIED_WHEELS)
    req = (REPO / "requirements/train.txt").read_text()
    assert f"kornia=={pins['kornia']}" in req
    assert f"jsonargparse[signatures]=={pins['jsonargparse']}" in req
    from importlib.metadata import version

    for name in ("kornia_rs", "docstring_parser", "typeshed_client"):
        assert pins[name] == version(name)


class _Trainer:
    def __init__(self):
        self.global_step = 0
        self.current_epoch = 0


def test_throughput_leaves_out_warmup_and_validation(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(gpu.time, "perf_counter", lambda: clock[0])
    cb = gpu.Throughput(warmup_steps=2, report_every_s=1e9)
    trainer, batch = _Trainer(), {"index": np.zeros(4)}
    for step in range(6):
        clock[0] += 0.5 if step != 0 else 30.0  # waiting for data; the first wait is the workers' start
        cb.on_train_batch_start(trainer, None, batch, step)
        clock[0] += 2.0 if step < 2 else 1.0  # warm-up steps are slow
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, None, None, batch, step)
        if step == 3:
            cb.on_validation_start(trainer, None)
            clock[0] += 100.0
    # Steps 2..5 count (global_step 3..6 > 2), except the wait after validation (step 4 starts fresh).
    assert cb.steps == 4 and cb.samples == 16
    assert cb.busy_s == pytest.approx(4.0)
    assert cb.wait_s == pytest.approx(1.5)  # waits before steps 2, 3 and 5
    assert cb.samples_per_s() == pytest.approx(16 / 5.5)
    assert cb.data_wait_fraction() == pytest.approx(1.5 / 5.5)


def test_parts_join_back_into_the_files_and_catch_corruption(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "run"
    src.mkdir()
    files = []
    for name, n in (("best.safetensors", 2500), ("last.safetensors", 1200)):
        (src / name).write_bytes(rng.bytes(n))
        files.append(src / name)
    out = tmp_path / "out"
    out.mkdir()
    parts = gpu.split_into_parts(files, out, "bundles", part_bytes=1000)
    assert len(parts) > 2 and all((out / p).stat().st_size <= 1000 for p in parts)
    report = {"bundles": {f.name: {"sha256": hashlib.sha256(f.read_bytes()).hexdigest()} for f in files},
              "parts": {"bundles": parts}}
    (out / "gpu_run.json").write_text(json.dumps(report))
    gpu.collect(out, tmp_path / "back")
    for f in files:
        assert (tmp_path / "back" / f.name).read_bytes() == f.read_bytes()
    # A damaged part (a byte inside best.safetensors' data) or a lost one must not pass as a complete bundle.
    names = list(parts)
    joined = b"".join((out / p).read_bytes() for p in names)
    at = joined.index(files[0].read_bytes()[:64]) + 100
    damaged = bytearray((out / names[at // 1000]).read_bytes())
    damaged[at % 1000] ^= 0xFF
    (out / names[at // 1000]).write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="missing or corrupt: \\['best.safetensors'\\]"):
        gpu.collect(out, tmp_path / "again")
    (out / names[-1]).unlink()  # the tar's zero padding: unpacking alone would not notice
    with pytest.raises(ValueError, match="missing or corrupt: bundles parts"):
        gpu.collect(out, tmp_path / "again")


# ---------------------------------------------------------------------------------- with the real frames
@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    if not REAL.is_dir():
        pytest.skip(f"real KITTI odometry frames not present at {REAL} (a clone without ../shared)")
    stage = tmp_path_factory.mktemp("gpu_stage")
    manifest = gpu.prepare(stage, REAL, wheels=False)
    return stage, manifest


@needs_real
@needs_git
def test_prepare_stages_the_700_training_frames_under_the_travel_limit(staged):
    from monodepth_ros.datasets.kitti_odometry import load_sequence

    stage, manifest = staged
    images = sorted((stage / "kitti_odometry/sequences/03/image_0").iterdir())
    assert [int(p.stem) for p in images] == list(range(700))  # frames 700-800 are held out: not staged
    seq = load_sequence(stage / "kitti_odometry", "03")
    assert seq.num_frames() == 801 and seq.poses.shape == (801, 4, 4)  # stamps and poses whole
    wheels = gpu.REPO / gpu.STAGE / "wheels"
    wheel_bytes = gpu.tree_bytes(wheels) if wheels.is_dir() else 0
    assert wheel_bytes <= WHEELS_BYTES_BOUND
    total = gpu.repo_travel_bytes() + manifest["stage_bytes"] + WHEELS_BYTES_BOUND
    assert total < gpu.TRAVEL_LIMIT_BYTES, f"{total / 2**20:.1f} MiB would travel"


@needs_real
def test_staged_frames_read_like_the_originals_at_640x192(staged):
    from monodepth_training.datasets import build_dataset

    stage, _ = staged
    spec = {"source": "kitti_odometry", "sequences": ["03"], "frames": [0, 699], "camera": 0}
    kw = {"height": 192, "width": 640, "frame_offsets": [0, -1, 1], "augment": False}
    orig = build_dataset({**spec, "data_dir": str(REAL)}, **kw)
    copy = build_dataset({**spec, "data_dir": str(stage / "kitti_odometry")}, **kw)
    assert len(orig) == len(copy) == 698
    np.testing.assert_allclose(copy.intrinsics_norm(), orig.intrinsics_norm(), rtol=1e-9)
    for i in (0, 350, 697):
        a, b = orig[i], copy[i]
        np.testing.assert_allclose(b["K"].numpy(), a["K"].numpy(), rtol=1e-6)
        for off in (0, -1, 1):
            assert float(b["speed_mps"][off]) == pytest.approx(float(a["speed_mps"][off]))
            diff = (b["color"][off] - a["color"][off]).abs()
            # Only the JPEG re-encode differs (quality 95: ~1 grey level on average).
            assert float(diff.mean()) < 2.5 / 255 and float(diff.max()) < 40 / 255


@needs_real
def test_device_half_dry_run_returns_bundles_exports_and_report(staged, tmp_path):
    stage, _ = staged
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # A fresh process, as on the device, so that its imports can be checked against the GPU image.
    res = subprocess.run([sys.executable, "-m", "monodepth_training.train_default_gpu", "device", "--dry-run",
                          "--stage", str(stage), "--out", str(out), "--work", str(work)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((out / "gpu_run.json").read_text())
    assert report["steps"] == 3 and report["precision"] == "32-true"  # 16-mixed falls back on CPU
    assert report["device"].startswith("cpu") and report["samples_per_s"] > 0
    assert report["chosen_bundle"] == "last.safetensors" and set(report["bundles"]) == {"best.safetensors",
                                                                                         "last.safetensors"}
    assert report["export"]["rc"] == 0
    # What the tool returns: at most 8 files (train.log is the 8th), each at most 16 MiB, 64 MiB together.
    returned = [p for p in out.iterdir() if p.is_file()]
    assert len(returned) + 1 <= gpu.RETURN_MAX_FILES
    assert all(p.stat().st_size <= gpu.RETURN_FILE_MAX_BYTES for p in returned)
    assert sum(p.stat().st_size for p in returned) < gpu.TRAVEL_LIMIT_BYTES

    back = tmp_path / "back"
    gpu.collect(out, back)
    from monodepth_training.bundle_io import load_bundle

    _, pose, meta = load_bundle(back / "best.safetensors")
    assert (meta.height, meta.width) == (64, 224) and pose is not None
    assert {"default.onnx", "default.int8.onnx"} <= {p.name for p in back.iterdir()}

    dists = packages_distributions()
    foreign = set()
    for mod in report["imported_modules"]:
        if mod in sys.stdlib_module_names or mod.startswith("monodepth_"):
            continue
        names = {_norm(d) for d in dists.get(mod, [])}
        if names and not names & (IMAGE_DISTRIBUTIONS | {_norm(w) for w in gpu.CARRIED_WHEELS} | OPTIONAL_HERE):
            foreign.add(f"{mod} ({', '.join(sorted(names))})")
    assert not foreign, f"the device half imports what the GPU image lacks: {sorted(foreign)}"
