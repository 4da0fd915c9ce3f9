"""The documented "train on your own bag" path, end to end at a tiny size: a recorded bag -> monodepth-train with
the shipped rosbag template -> model bundle -> monodepth-export (ONNX) -> the real depth node over DDS replaying a
bag with that model. Each step is the console command a user runs."""

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from monodepth_ros.synthetic import SynthConfig, SyntheticWorld
from monodepth_ros.synthetic.writers import write_bag

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.ros
def test_recorded_bag_trains_exports_and_runs_in_the_node(tmp_path, ros_subprocess_env):
    env = dict(ros_subprocess_env, OMP_NUM_THREADS="1")
    world = SyntheticWorld(SynthConfig(width=192, height=64, seed=3))
    bag = write_bag(world, tmp_path / "my_robot_bag", 24)

    source = {"source": "rosbag", "bag": str(bag), "image_topic": "/camera/image_raw",
              "camera_info_topic": "/camera/camera_info", "odom_topic": "/odom", "min_dt_s": 0.05}
    # The template's interleaved hold-out, scaled to a 2.4 s bag: 0.3 s of every 1 s validates.
    source.update(val_every_s=1.0, val_chunk_s=0.3)
    train = dict(source, split="train")
    val = dict(source, split="val", depth_topic="/camera/depth_gt")
    _run([BIN / "monodepth-train", "fit", "--config", REPO / "config/train/rosbag.yaml",
          "--data.height", "64", "--data.width", "192", "--data.batch_size", "2", "--data.num_workers", "0",
          "--data.train", json.dumps(train), "--data.val", json.dumps(val),
          "--model.depth_kwargs", '{"num_layers": 18, "width": 0.25}',
          "--model.pose_kwargs", '{"num_layers": 18, "width": 0.25}',
          "--trainer.max_steps", "3", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"],
         cwd=tmp_path, env=env)
    bundle = tmp_path / "runs/rosbag/bundles/last.safetensors"
    assert bundle.is_file(), sorted(p.name for p in (tmp_path / "runs/rosbag").rglob("*"))

    from monodepth_ros.backends import read_onnx_model_meta
    from monodepth_ros.bundle import read_meta

    meta = read_meta(bundle)
    # Intrinsics came from the bag's camera_info, not from a hard-coded camera.
    assert meta.intrinsics_norm is not None
    assert meta.intrinsics_norm[0][0] == pytest.approx(world.cfg.K[0, 0] / 192, rel=1e-6)

    # The README's step 3: a sky mask fitted on the synthetic sky and this bag's own frames (a short fit).
    cfg = tmp_path / "my_bag.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"train": train}}))
    sky_bundle = tmp_path / "runs/rosbag/bundles/last_sky.safetensors"
    _run([BIN / "monodepth-fit-validity", "--model", bundle, "--out", sky_bundle, "--config", cfg, "--steps", "20",
          "--camera-frames", "6", "--report", tmp_path / "validity.json"], cwd=tmp_path, env=env)
    assert json.loads((tmp_path / "validity.json").read_text())["camera_frames"] == 6

    _run([BIN / "monodepth-export", "--model", sky_bundle, "--format", "onnx", "--out", tmp_path / "models",
          "--name", "mine"], cwd=tmp_path, env=env)
    model = tmp_path / "models" / "mine.onnx"
    assert read_onnx_model_meta(model).validity_output == "valid"

    out = tmp_path / "replay"
    _run([BIN / "monodepth-replay", "--bag", bag, "--model", model, "--gt-topic", "/camera/depth_gt",
          "--through-node", "--out", out, "--quiet"], cwd=tmp_path, env=env)
    report = json.loads((out / "report.json").read_text())
    assert report["frames"]["input"] == 24
    assert report["frames"]["with_depth"] >= 0.9 * 24
    assert math.isfinite(report["metrics"]["abs_rel"]) and 0 <= report["metrics"]["a1"] <= 1
    assert (out / "replay_bag").is_dir() and os.listdir(out / "replay_bag")


def test_metric_supervision_with_a_relative_scale_policy_warns_and_names_the_policy_auto_gives():
    from monodepth_training.module import MonoDepthModule

    tiny = {"num_layers": 18, "width": 0.25}
    common = dict(depth_kwargs=tiny, pose_kwargs=tiny, height=32, width=64)
    with pytest.warns(UserWarning, match="scale_policy 'auto' gives 'metric'"):
        module = MonoDepthModule(velocity_weight=0.1, scale_policy="relative", **common)
    assert module.scale_policy == "relative"  # the explicit choice stands; the user is told
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auto = MonoDepthModule(velocity_weight=0.1, scale_policy="auto", **common)
        MonoDepthModule(velocity_weight=0.0, scale_policy="relative", **common)
    assert auto.scale_policy == "metric"
    assert not [w for w in caught if "scale_policy" in str(w.message)]
