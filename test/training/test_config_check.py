"""A misspelt config key is named, with its full path and the nearest valid key, before anything is built: in the
YAML or on the command line, in every section, inside data.train / data.val and inside each part of a mix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from monodepth_training.config_check import check_config, config_from_args, format_problems

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("fit", "validate", "test", "predict")
TRAIN_CMD = ([str(Path(sys.executable).with_name("monodepth-train"))]
             if Path(sys.executable).with_name("monodepth-train").exists()
             else [sys.executable, "-m", "monodepth_training.cli"])


def _synthetic() -> dict:
    return yaml.safe_load((REPO / "config/train/synthetic.yaml").read_text())


def _one(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


def _valid(problem: str) -> list[str]:
    """The valid keys a problem lists (its last line, after the colon)."""
    return problem.splitlines()[-1].split(": ", 1)[1].split(", ")


@pytest.mark.parametrize("path", sorted((REPO / "config/train").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_passes(path):
    assert check_config(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize(("section", "typo", "meant"), [
    ("model", "init_dpeth", "init_depth"),
    ("data", "batchsize", "batch_size"),
    ("trainer", "max_epoch", "max_epochs"),
])
def test_an_unknown_key_in_a_section_is_named_with_the_nearest_valid_one_and_the_valid_keys(section, typo, meant):
    cfg = _synthetic()
    cfg[section][typo] = 1
    problem = _one(check_config(cfg))
    first, valid = problem.splitlines()
    assert first == f"unknown key {section}.{typo}; did you mean {section}.{meant}?"
    assert valid.strip().startswith(f"valid keys in {section} (") and meant in _valid(problem)


def test_an_unknown_section_is_named():
    cfg = _synthetic()
    cfg["modle"] = cfg.pop("model")
    problem = _one(check_config(cfg))
    assert problem.startswith("unknown section modle; did you mean model?")
    assert _valid(problem) == ["ckpt_path", "data", "model", "seed_everything", "trainer", "weights_only"]


def test_the_top_level_keys_follow_the_subcommand():
    assert check_config({"verbose": True}, "validate") == []
    assert "unknown section verbose" in _one(check_config({"verbose": True}, "fit"))


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_key_inside_a_data_source_is_checked_against_that_sources_constructor(split):
    cfg = _synthetic()
    cfg["data"][split]["num_frame"] = cfg["data"][split].pop("num_frames")
    problem = _one(check_config(cfg))
    assert problem.startswith(f"unknown key data.{split}.num_frame; did you mean data.{split}.num_frames?")
    # The synthetic source's own arguments and those it passes on to the base dataset.
    assert f"valid keys in data.{split} (source 'synthetic'):" in problem
    assert {"num_frames", "world", "load_depth_gt", "flip_prob"} <= set(_valid(problem))


def test_a_key_of_another_source_is_refused_and_a_shared_setting_is_accepted():
    rosbag = {"source": "rosbag", "bag": "b", "image_topic": "/i", "load_depth_gt": False, "split": "val"}
    assert check_config({"data": {"train": rosbag}}) == []
    assert "unknown key data.train.num_frames" in _one(check_config({"data": {"train": {**rosbag,
                                                                                         "num_frames": 3}}}))


def test_an_unknown_or_missing_source_is_named():
    problem = _one(check_config({"data": {"train": {"source": "synthtic"}}}))
    assert problem.startswith("unknown source data.train.source='synthtic'; did you mean 'synthetic'?")
    assert _valid(problem) == ["kitti", "kitti_odometry", "mix", "rosbag", "synthetic"]
    assert "has no 'source' key" in _one(check_config({"data": {"val": {"data_dir": "x"}}}))
    assert check_config({"data": {"train": {"source": "synthetic"}, "val": None}}) == []


def test_every_part_of_a_mix_is_checked():
    mix = {"source": "mix", "load_depth_gt": True, "flip_prob": 0.2, "parts": [
        {"source": "synthetic", "repeat": 2, "num_frames": 3},
        {"source": "kitti", "data_dir": "d", "split_file": "s", "gt_dir": None},
    ]}
    assert check_config({"data": {"train": mix}}) == []
    mix["parts"][1]["split_fle"] = "s"
    mix["parts"].append({"source": "mix", "parts": []})
    mix["partz"] = []
    problems = check_config({"data": {"train": mix}})
    assert len(problems) == 3, problems
    assert problems[0].startswith("unknown key data.train.partz; did you mean data.train.parts?")
    assert problems[1].startswith("unknown key data.train.parts[1].split_fle; did you mean "
                                  "data.train.parts[1].split_file?")
    assert problems[2] == "data.train.parts[2]: a mix cannot contain another mix"


def test_the_command_line_merges_into_the_config_like_jsonargparse(tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_synthetic()))
    sub, cfg = config_from_args(
        ["fit", "--config", str(cfg_path), "--model.init_dpeth", "3", "--data.train.num_frame=4",
         "--data.val", '{"source": "synthetic", "seed": 7}', "--trainer.max_steps", "-1",
         "--trainer.callbacks+=my.Recorder", "--trainer.callbacks.path=/x", "--print_config"], SUBCOMMANDS)
    assert sub == "fit"
    assert cfg["model"]["init_dpeth"] == 3 and cfg["model"]["init_depth"] == 1.0
    assert cfg["data"]["train"] == {"source": "synthetic", "seed": 0, "num_frames": 600, "num_frame": 4}
    assert cfg["data"]["val"] == {"source": "synthetic", "seed": 7}  # a whole dict replaces, a dotted key merges
    assert cfg["trainer"]["max_steps"] == -1 and cfg["trainer"]["callbacks"][-1] == "my.Recorder"
    assert [p.splitlines()[0] for p in check_config(cfg)] == [
        "unknown key model.init_dpeth; did you mean model.init_depth?",
        "unknown key data.train.num_frame; did you mean data.train.num_frames?"]
    assert config_from_args(["fit", "--help"], SUBCOMMANDS) is None
    assert config_from_args(["--help"], SUBCOMMANDS) is None


def test_the_message_is_short_and_starts_with_the_projects_error_line():
    cfg = _synthetic()
    cfg["trainer"]["max_epoch"] = 1
    lines = format_problems(check_config(cfg)).splitlines()
    assert lines[0] == "monodepth-train fit: error: unknown key trainer.max_epoch; did you mean trainer.max_epochs?"
    assert lines[1].startswith("  valid keys in trainer (Trainer): accelerator, ")
    assert len(lines) == 3
    cfg["model"]["lrr"] = 1
    lines = format_problems(check_config(cfg)).splitlines()
    assert lines[0] == "monodepth-train fit: error: 2 problems in the config:" and len(lines) == 6


def _train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TRAIN_CMD, "fit", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize(("where", "typo", "meant"), [
    ("model", "init_dpeth", "model.init_depth"),
    ("train", "num_frame", "data.train.num_frames"),
    ("command_line", "init_dpeth", "model.init_depth"),
])
def test_monodepth_train_with_a_typo_exits_2_with_a_few_lines_naming_the_key(tmp_path, where, typo, meant):
    cfg = _synthetic()
    cfg["trainer"]["default_root_dir"] = str(tmp_path / "run")  # nothing should be written there
    args = []
    if where == "model":
        cfg["model"][typo] = cfg["model"].pop("init_depth")
    elif where == "train":
        cfg["data"]["train"][typo] = cfg["data"]["train"].pop("num_frames")
    else:
        args = [f"--model.{typo}", "3"]
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = _train(tmp_path, "--config", str(path), *args)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-3000:]
    assert f"did you mean {meant}?" in text
    assert len(text.splitlines()) < 10, text
    assert "Traceback" not in text and "usage:" not in text
    assert not (tmp_path / "run").exists()


def test_any_other_parse_error_is_one_message_without_the_usage(tmp_path):
    out = _train(tmp_path, "--config", str(REPO / "config/train/synthetic.yaml"), "--data.batch_size", "many")
    assert out.returncode == 2
    assert "data.batch_size" in out.stderr and "usage:" not in out.stderr
    assert len(out.stderr.splitlines()) < 6, out.stderr
