"""The training loop end to end on the synthetic world: the CLI with the shipped quick-start config (shrunk),
checkpoints, the model bundle, resume after a real SIGKILL, and that training lowers the loss / the error."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from monodepth_training.bundle_io import load_bundle
from monodepth_training.cli import run
from monodepth_training.datasets.synthetic import SyntheticDataset
from monodepth_training.module import MonoDepthModule
from torch.utils.data import default_collate

from monodepth_ros.bundle import read_meta

REPO = Path(__file__).resolve().parents[1]
H, W = 64, 96  # the smallest size whose deepest feature map (H/32) still takes reflection padding

# A callback importable by the CLI from tmp_path: it records the global step of every training batch.
STEP_RECORDER = '''
import lightning as L

class StepRecorder(L.Callback):
    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with open(self.path, "a") as f:
            f.write(f"{trainer.global_step}\\n")
'''


def _config(tmp_path: Path, every_n_steps: int = 2, **trainer) -> Path:
    """The shipped synthetic quick-start config, shrunk and pointed into ``tmp_path``."""
    cfg = yaml.safe_load((REPO / "config/train/synthetic.yaml").read_text())
    root = tmp_path / "run"
    cfg["data"].update(height=H, width=W, batch_size=2, num_workers=0)
    cfg["data"]["train"]["num_frames"] = 12
    cfg["data"]["val"]["num_frames"] = 5
    t = cfg["trainer"]
    t.update(default_root_dir=str(root), enable_progress_bar=False, log_every_n_steps=1, **trainer)
    t["logger"]["init_args"]["save_dir"] = str(root)
    for cb in t["callbacks"]:
        args = cb.get("init_args", {})
        if "dirpath" in args:
            args["dirpath"] = str(root / Path(args["dirpath"]).name)
        if "every_n_train_steps" in args:
            args["every_n_train_steps"] = every_n_steps
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a CPU shared with other jobs, OpenMP threads spin-waiting on each other made a
    step 5-10x slower than a single thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_with_recorder(tmp_path: Path, args: list[str], log: Path):
    sys.path.insert(0, str(tmp_path))
    try:
        return run([*args, "--trainer.callbacks+=step_recorder.StepRecorder", f"--trainer.callbacks.path={log}"])
    finally:
        sys.path.remove(str(tmp_path))


def test_short_fit_gives_finite_losses_checkpoints_and_a_loadable_bundle(tmp_path):
    # Integer limits of 2, not 1: a YAML 1 reaches Lightning as 1.0, which means "100 %".
    cfg = _config(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=2, num_sanity_val_steps=0)
    cli = run(["fit", "--config", str(cfg)])
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    assert math.isfinite(float(metrics["train/loss"])) and math.isfinite(float(metrics["val/abs_rel"]))
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "last.ckpt").exists() and list(ckpts.glob("best-*.ckpt"))
    # Lightning's checkpoint loads with the safe (weights-only) unpickler.
    state = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2

    bundles = tmp_path / "run" / "bundles"
    for name in ("best.safetensors", "last.safetensors"):
        meta = read_meta(bundles / name)
        assert (meta.height, meta.width, meta.depth_net, meta.scale_policy) == (H, W, "monodepth2", "relative")
    depth_net, pose_net, meta = load_bundle(bundles / "last.safetensors")
    assert pose_net is not None and meta.depth_kwargs["pretrained_path"] is None
    K = SyntheticDataset(height=H, width=W, num_frames=3).scaled_intrinsics((1, "left"))
    np.testing.assert_allclose(meta.intrinsics_norm, [[K[0, 0] / W, 0, K[0, 2] / W], [0, K[1, 1] / H, K[1, 2] / H],
                                                      [0, 0, 1]], atol=1e-9)
    assert meta.training["config"]["data"]["train"]["source"] == "synthetic"
    assert meta.training["global_step"] == 2
    # The bundle's depth net is the trained one, not a fresh init.
    x = torch.rand(1, 3, H, W)
    cli.model.eval()
    torch.testing.assert_close(depth_net(x)[("disp", 0)], cli.model.depth(x)[("disp", 0)])
    assert list((tmp_path / "run" / "tb").rglob("events.out.tfevents.*"))


def test_resume_from_last_continues_the_global_step_mid_epoch(tmp_path):
    cfg = _config(tmp_path, every_n_steps=2, max_steps=2, limit_val_batches=0, num_sanity_val_steps=0)
    (tmp_path / "step_recorder.py").write_text(STEP_RECORDER)
    first = _run_with_recorder(tmp_path, ["fit", "--config", str(cfg)], tmp_path / "a.txt")
    assert first.trainer.global_step == 2  # stopped inside the first epoch (5 batches)
    ckpts = tmp_path / "run" / "checkpoints"
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    resumed = _run_with_recorder(tmp_path, ["fit", "--config", str(cfg), "--ckpt_path", "last",
                                            "--trainer.max_steps", "3"], tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_text().split() == ["0", "1"]
    assert (tmp_path / "b.txt").read_text().split() == ["2"]  # continued, not restarted
    assert resumed.trainer.global_step == 3


@pytest.mark.slow
def test_resume_from_last_after_sigkill_continues_the_global_step(tmp_path):
    cfg = _config(tmp_path, every_n_steps=2, max_epochs=100, limit_val_batches=1)
    (tmp_path / "step_recorder.py").write_text(STEP_RECORDER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    log = tmp_path / "steps_first.txt"
    recorder = ["--trainer.callbacks+=step_recorder.StepRecorder", f"--trainer.callbacks.path={log}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "monodepth_training.cli", "fit", "--config", str(cfg), *recorder],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    ckpts = tmp_path / "run" / "checkpoints"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not list(ckpts.glob("step-00000[4-9].ckpt")):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        assert list(ckpts.glob("step-*.ckpt")), "no step checkpoint within the time limit"
    finally:
        proc.send_signal(signal.SIGKILL)  # no graceful shutdown: like a power cut or an OOM kill
        proc.wait()
    saved_step = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    steps_before_kill = [int(s) for s in log.read_text().split()]
    assert saved_step >= 4 and max(steps_before_kill) >= saved_step
    assert max(steps_before_kill) - saved_step <= 2  # at most one checkpoint interval lost

    log2 = tmp_path / "steps_resumed.txt"
    cli = _run_with_recorder(tmp_path, ["fit", "--config", str(cfg), "--ckpt_path", "last",
                                        "--trainer.max_steps", str(saved_step + 3)], log2)
    assert [int(s) for s in log2.read_text().split()] == [saved_step, saved_step + 1, saved_step + 2]
    assert cli.trainer.global_step == saved_step + 3


def _fixed_batch(n=2, seed=0):
    ds = SyntheticDataset(height=64, width=96, num_frames=n + 2, seed=seed)
    return default_collate([ds[i] for i in range(n)])


def test_twenty_adam_steps_lower_the_photometric_loss_on_a_batch():
    torch.manual_seed(0)
    batch = _fixed_batch()
    model = MonoDepthModule(height=64, width=96, lr=5e-4)
    opt = torch.optim.Adam(model.parameters(), lr=model.hparams.lr)
    losses = []
    for _ in range(20):
        loss = model._loss(batch, "color_aug")["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a 15-minute training plus two validations
def test_training_on_the_synthetic_world_beats_the_untrained_network_on_held_out_frames(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from train_cpu import train_and_evaluate
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    # The README's train_cpu run (320x96, full ResNet-18, init_depth 1, lr 3e-4, 15 min): measured 0.563 -> 0.388.
    # At 192x64 this Lightning run collapsed instead (seed 0: 1.09 after 548 steps, half-width, lr 2e-4) although
    # the plain loop of benchmarks/loss_ablation.py learns there (0.316); see the README, "Training on CPU".
    result = train_and_evaluate(height=96, width=320, budget_s=900, out_dir=tmp_path, seed=0)
    untrained, trained = result["untrained"]["abs_rel"], result["trained"]["abs_rel"]
    assert trained < 0.75 * untrained, result
