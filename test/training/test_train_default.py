"""`make train-default`: the shipped recipe names its data, and a missing data folder stops it with a clear error."""

from __future__ import annotations

from monodepth_training import train_default


def test_missing_real_data_folders_are_listed_from_the_mix_parts(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  train:\n    source: mix\n    parts:\n"
                   "      - {source: kitti_odometry, data_dir: no/such/folder}\n"
                   "      - {source: synthetic, num_frames: 5}\n")
    assert train_default.missing_data_dirs(cfg) == ["no/such/folder"]
    cfg.write_text("data:\n  train: {source: kitti, data_dir: test, split_file: x}\n")
    assert train_default.missing_data_dirs(cfg) == []  # relative to the repository root, which has test/


def test_shipped_recipe_trains_on_real_odometry_frames_0_to_699_with_velocity_and_grey_input():
    import yaml

    cfg = yaml.safe_load(train_default.CONFIG.read_text())
    parts = cfg["data"]["train"]["parts"]
    real = next(p for p in parts if p["source"] == "kitti_odometry")
    assert real["frames"] == [0, 699]  # 700-800 are held out for the pose benchmark
    assert cfg["model"]["depth_kwargs"]["input_color"] == "grey"
    assert cfg["model"]["velocity_weight"] > 0 and cfg["model"]["scale_policy"] == "auto"  # -> metric


def test_trained_seconds_reads_the_timer_of_a_resumed_run(tmp_path):
    import torch

    torch.save({"callbacks": {"Timer": {"time_elapsed": {"train": 1234.56}}}}, tmp_path / "last.ckpt")
    assert train_default.trained_seconds(tmp_path / "last.ckpt") == 1234.6
    assert train_default.trained_seconds(tmp_path / "missing.ckpt") is None
