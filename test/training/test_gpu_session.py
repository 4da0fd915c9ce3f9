"""The lent-GPU session (benchmarks/gpu_session.py) and its parity check (benchmarks/cuda_parity.py), run here on
the CPU: the same code up to the device, so that the one device call of an issue does not find a plumbing bug."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import cuda_parity  # noqa: E402
import gpu_session  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # test/training/conftest.py


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny trained-shape model: bundle + its ONNX export (with the validity output)."""
    from monodepth_training.bundle_io import BundleMeta, save_bundle
    from monodepth_training.export import cli as export
    from monodepth_training.networks.registry import build_depth_net

    d = tmp_path_factory.mktemp("model")
    kw = {"channels": [8, 8, 16, 16], "convs": [1, 1, 1, 1], "validity_head": True}
    net = build_depth_net("rtmonodepth", **kw)
    save_bundle(d / "m.safetensors", net, BundleMeta(depth_net="rtmonodepth", depth_kwargs=kw, height=32, width=96,
                                                     min_depth=0.1, max_depth=100.0))
    assert export.main(["--model", str(d / "m.safetensors"), "--format", "onnx", "--out", str(d), "--name", "m"]) == 0
    return d / "m.safetensors", d / "m.onnx"


def test_parity_of_a_model_with_itself_is_float_rounding_and_latency_is_reported(exported, tmp_path):
    bundle, onnx = exported
    out = tmp_path / "parity.json"
    assert cuda_parity.main(["--bundle", str(bundle), "--onnx", str(onnx), "--device", "cpu", "--frames", "3",
                             "--runs", "4", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == {"synthetic": 3} and report["model_hw"] == [32, 96] and report["has_validity"]
    assert report["parity_tf32_off"]["disp_max_abs"] < 1e-4 and report["parity_tf32_off"]["valid_max_abs"] < 1e-4
    assert set(report["latency_ms"]) == {"onnxruntime_cpu", "torch_cpu_fp32"}
    assert all(t["p50"] > 0 and t["runs"] == 4 for t in report["latency_ms"].values())


def test_parity_without_a_cuda_device_exits_3_and_measures_nothing(exported, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    bundle, onnx = exported
    out = tmp_path / "parity.json"
    assert cuda_parity.main(["--bundle", str(bundle), "--onnx", str(onnx), "--out", str(out)]) == 3
    assert "no CUDA device" in capsys.readouterr().err and not out.exists()


def test_compare_outputs_reports_each_difference_and_refuses_mismatched_outputs():
    disp = np.full((2, 3), 0.5, np.float32)
    d = cuda_parity.compare_outputs((disp, None), (disp * 1.01, None))
    assert d["disp_max_abs"] == pytest.approx(0.005, rel=1e-3) and d["depth_max_rel"] == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(ValueError, match="validity"):
        cuda_parity.compare_outputs((disp, disp), (disp, None))


def test_session_jobs_cover_every_system_and_ablation_within_the_tool_limits():
    import table1

    systems, ablations = set(), set()
    for _name, job in gpu_session.TABLE_JOBS:
        args = table1.parse_args([*job, "--real-data", "absent"])
        systems |= set(args.systems)
        ablations |= set(args.ablations)
    # The default ablations (the Monodepth2 ideas); the diagnosis ablations run by name only.
    assert systems == set(table1.SYSTEMS) and ablations == set(table1.DEFAULT_ABLATIONS)
    assert len(gpu_session.TABLE_JOBS) + 1 <= 8  # + the default training on one GPU's processes, in the CPU's reach
    assert gpu_session.DEVICE_TIMEOUT_S <= 600


@pytest.mark.slow
def test_device_half_dry_run_returns_what_collect_unpacks(tmp_path):
    """Every job of the session, tiny and on the CPU, in a fresh process as on the device; needs the staged folder
    (`gpu_session.py prepare`, which needs the real data)."""
    stage = REPO / gpu_session.STAGE
    if not (stage / gpu_session.REAL_EVAL).is_file():
        pytest.skip(f"{stage} not prepared (run benchmarks/gpu_session.py prepare; needs ../shared/data/real)")
    out = tmp_path / "out"
    out.mkdir()
    res = subprocess.run([sys.executable, "benchmarks/gpu_session.py", "device", "--dry-run", "--out", str(out)],
                         cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    returned = [p for p in out.rglob("*") if p.is_file()]
    assert len(returned) + 1 <= 8  # + session.log, which the device command tees
    with tarfile.open(out / "session.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"cuda_parity.json", "table1_md2_seed0.json", "default_train.log"} <= names
    back = tmp_path / "back"
    gpu_session.collect(out, back)
    assert (back / "default" / "last.safetensors").is_file()
    assert json.loads((back / "table1_md2_seed0.json").read_text())["systems"]


def test_seed_jobs_give_every_system_and_default_ablation_three_seeds_with_the_pilot():
    import table1

    pilot = json.loads((REPO / gpu_session.PILOT).read_text())
    seeds: dict[str, set[int]] = {}
    for row in table1.table_rows(pilot):
        seeds.setdefault(table1.row_recipe(row).key(), set()).update(r["seed"] for r in row["runs"])
    jobs = gpu_session.seed_jobs(pilot)
    for name, seed in jobs:
        seeds.setdefault(table1.recipe_named(name).key(), set()).add(seed)
    wanted = [table1.SYSTEMS[s] for s in table1.SYSTEMS] + [table1.ablation_recipe(a)
                                                            for a in table1.DEFAULT_ABLATIONS]
    assert all({0, 1, 2} <= seeds[r.key()] for r in wanted)
    assert len(set(jobs)) == len(jobs)
    # What the pilot has is not run again, except the CPU-vs-GPU check, which follows the second seeds.
    have = set(table1.table_trainings(pilot))
    again = [job for job in jobs if (table1.recipe_named(job[0]).key(), job[1]) in have]
    assert again == [job for job in gpu_session.CHECK_JOBS
                     if (table1.recipe_named(job[0]).key(), job[1]) in have]
    for check in again:
        at = jobs.index(check)
        assert all(seed <= 1 for _, seed in jobs[:at]) and all(seed >= 2 for _, seed in jobs[at + 1:])
    # Every job has a step budget from the committed pilot and step-rate tables.
    budget = table1.budget_steps_table(pilot, json.loads((REPO / gpu_session.STEP_RATE).read_text()))
    assert all(table1.recipe_named(n).cost_key() in budget for n, _ in jobs)


@pytest.mark.slow
def test_seeds_plan_stages_lossless_frames_and_its_dry_run_returns_the_workers_tables(tmp_path):
    """prepare-seeds (the real frames at 192x64, as the pilot's datasets shrink them), then the device half tiny on
    the CPU: the inference benchmark and two queue workers, whose tables come back in session.tar.gz."""
    real = REPO.parent / "shared" / "data" / "real"
    if not real.is_dir():
        pytest.skip(f"no real data at {real} (a user's clone); CI has it")
    stage = tmp_path / "stage"
    call = gpu_session.prepare_seeds(stage, real, wheels_from=REPO / gpu_session.STAGE / "wheels")
    assert call["frames"]["hw"] == [64, 192] and call["frames"]["jpeg_quality"] is None
    assert call["travel_mib"] < 64 and call["timeout_s"] <= 600
    from real_data import load_staged_frames

    staged = load_staged_frames(stage / gpu_session.SEEDS_REAL_EVAL)
    assert len(staged) == 39 and staged[0].rgb.shape == (64, 192, 3)
    out = tmp_path / "out"
    out.mkdir()
    res = subprocess.run([sys.executable, "benchmarks/gpu_session.py", "device-seeds", "--dry-run", "--stage",
                          str(stage), "--out", str(out)], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    with tarfile.open(out / "session.tar.gz") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    import table1

    # A run can sit in two rows (FeatDepth is both a system and the feature-metric ablation): count trainings.
    runs = {training: run for w in (0, 1) for training, (_, run)
            in table1.table_trainings(json.loads((tmp_path / "back" / f"table1_w{w}.json").read_text())).items()}
    wanted = gpu_session.seed_jobs(json.loads((REPO / gpu_session.PILOT).read_text()))[:3]
    assert set(runs) == {(table1.recipe_named(name).key(), seed) for name, seed in wanted}
    assert all(r["budget_kind"] == "steps" and r["steps"] == 2 for r in runs.values())
    assert json.loads((tmp_path / "back" / "cuda_inference.json").read_text())["rows"]


def test_cuda_inference_without_a_device_exits_3_and_writes_nothing(tmp_path, capsys):
    import cuda_inference

    if cuda_inference.torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-device path is not reachable here")
    assert cuda_inference.main(["--out", str(tmp_path / "x.json")]) == cuda_inference.EXIT_NO_DEVICE
    assert not (tmp_path / "x.json").exists() and "no CUDA device" in capsys.readouterr().err


def test_the_gpu_is_shared_by_as_many_processes_as_the_probe_shows_it_gains_from():
    assert gpu_session.choose_workers(20.0, 22.0, 4) == 1  # context switches eat the second process's gain
    assert gpu_session.choose_workers(20.0, 40.0, 4) == 2  # gains, but far from linear
    assert gpu_session.choose_workers(20.0, 70.0, 4) == gpu_session.SEED_WORKERS
