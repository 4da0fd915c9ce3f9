"""Every command line against the one interface (monodepth_ros.cli_common): --help lists the exit-code table,
bad input exits 2 with one stderr line naming the program, the shared options are spelled the same everywhere,
every option has help text, and no old spelling survives."""

from __future__ import annotations

import argparse

import pytest
from monodepth_training import validity as fit_validity_cli
from monodepth_training.export import cli as export_cli

from monodepth_ros import demo
from monodepth_ros.cli_common import EXIT_BAD_INPUT, EXIT_CODES
from monodepth_ros.evaluation import evaluate, kitti_gt
from monodepth_ros.replay import cli as replay_cli
from monodepth_ros.synthetic import cli as synth_cli

CLIS = {
    "monodepth-eval": evaluate,
    "monodepth-replay": replay_cli,
    "monodepth-export": export_cli,
    "monodepth-fit-validity": fit_validity_cli,
    "monodepth-synth": synth_cli,
    "python -m monodepth_ros.evaluation.kitti_gt": kitti_gt,
    "monodepth-demo": demo,
}
OLD_SPELLINGS = {"--onnx", "--checkpoint", "--bundle", "--cap-m"}


def _run(module, argv: list[str], capsys) -> tuple[int, str, str]:
    """``module.main(argv)`` -> (exit code, stdout, stderr), whether it returns or exits."""
    try:
        rc = module.main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


@pytest.mark.parametrize("prog", CLIS)
def test_help_lists_every_exit_code(prog, capsys):
    rc, out, _ = _run(CLIS[prog], ["--help"], capsys)
    assert rc == 0 and out.startswith(f"usage: {prog} ")
    table = out[out.index("exit codes:"):]
    for code, meaning in EXIT_CODES:
        assert f"  {code:<4} {meaning}" in table, code


@pytest.mark.parametrize("prog", CLIS)
def test_every_option_has_help_text_and_a_shown_default(prog):
    parser = CLIS[prog].build_parser()
    assert parser.prog == prog
    text = parser.format_help()
    for action in parser._actions:
        assert action.help and action.help.strip(), f"{prog} {action.option_strings}: no help text"
        if action.nargs != 0 and action.default not in (None, [], argparse.SUPPRESS):
            assert f"(default: {action.default})" in " ".join(text.split()), f"{prog} {action.option_strings}"


@pytest.mark.parametrize("prog", CLIS)
def test_an_unknown_option_exits_2_with_one_line(prog, capsys):
    rc, _, err = _run(CLIS[prog], ["--no-such-option"], capsys)
    assert rc == EXIT_BAD_INPUT
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err


@pytest.mark.parametrize("prog, argv", [
    ("monodepth-eval", ["--model", "{tmp}/m.onnx", "--data", "{tmp}", "--split", "{tmp}/missing.txt"]),
    ("monodepth-eval", ["--model", "{tmp}/m.engine", "--data", "{tmp}", "--split", "{tmp}/s.txt"]),
    ("monodepth-replay", ["--bag", "{tmp}/missing_bag", "--out", "{tmp}/out"]),
    ("monodepth-replay", ["--bag", "{tmp}/missing_bag", "--out", "{tmp}/out", "--max-depth", "-1"]),
    ("monodepth-export", ["--model", "{tmp}/missing.safetensors", "--format", "onnx", "--out", "{tmp}/out"]),
    ("monodepth-fit-validity", ["--model", "{tmp}/missing.safetensors", "--out", "{tmp}/o.safetensors"]),
    ("monodepth-synth", ["--out", "{tmp}/k", "--date", "yesterday", "--frames", "3", "--size", "32x16"]),
    ("python -m monodepth_ros.evaluation.kitti_gt", ["--data", "{tmp}", "--split", "{tmp}/s.txt", "--out",
                                                     "{tmp}/gt.npz"]),
    ("monodepth-demo", ["--model", "{tmp}/missing.onnx", "--out", "{tmp}/demo"]),
])
def test_bad_input_exits_2_with_one_line_naming_the_program(prog, argv, tmp_path, capsys):
    rc, _, err = _run(CLIS[prog], [a.format(tmp=tmp_path) for a in argv], capsys)
    assert rc == EXIT_BAD_INPUT, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and "Traceback" not in err, err


def test_shared_options_are_spelled_the_same_everywhere():
    opts = {prog: _options(m.build_parser()) for prog, m in CLIS.items()}
    for prog, o in opts.items():
        assert not OLD_SPELLINGS & o.keys(), prog
    for prog in ("monodepth-eval", "monodepth-replay", "monodepth-export", "monodepth-demo"):
        assert "--model" in opts[prog], prog
    for prog in ("monodepth-eval", "monodepth-replay"):
        assert "--max-depth" in opts[prog], prog
        assert tuple(opts[prog]["--crop"].choices) == ("garg", "eigen", "none"), prog
    assert opts["monodepth-eval"]["--crop"].default == "garg"
    assert opts["monodepth-replay"]["--crop"].default == "none"
    assert opts["monodepth-eval"]["--max-depth"].default == opts["monodepth-replay"]["--max-depth"].default == 80.0


def test_eval_picks_the_backend_from_the_model_suffix(tmp_path):
    from pathlib import Path

    assert evaluate.model_backend(Path("a/m.onnx")) == "onnxruntime"
    assert evaluate.model_backend(Path("b/best.safetensors")) == "torch"
    with pytest.raises(ValueError, match=r"--model must be an exported \.onnx .* or a \.safetensors bundle"):
        evaluate.model_backend(Path("m.engine"))
    # --backend overrides the default for what can run the file
    assert evaluate.model_backend(Path("a/m.onnx"), "openvino") == "openvino"
    assert evaluate.model_backend(Path("a/m.onnx"), "auto") == "auto"
    with pytest.raises(ValueError, match="--backend openvino cannot run best.safetensors: choose from torch"):
        evaluate.model_backend(Path("b/best.safetensors"), "openvino")
    assert evaluate.build_parser().parse_args(["--model", "m.onnx", "--data", "d", "--split", "s",
                                               "--backend", "openvino"]).backend == "openvino"


def test_backend_choices_agree_between_node_replay_and_the_runtime():
    from monodepth_ros.backends import BACKEND_KINDS
    from monodepth_ros.node_params import PARAM_BY_NAME

    assert "openvino" in BACKEND_KINDS
    assert set(PARAM_BY_NAME["backend"].choices) == set(BACKEND_KINDS)
    replay_choices = _options(replay_cli.build_parser())["--backend"].choices
    assert set(replay_choices) == set(BACKEND_KINDS)
    assert set(_options(evaluate.build_parser())["--backend"].choices) == set(BACKEND_KINDS)


def test_replay_crop_none_and_max_depth_reach_the_config(tmp_path):
    args = replay_cli.build_parser().parse_args(["--bag", "b", "--out", "o", "--max-depth", "50"])
    cfg = replay_cli.config_from_args(args)
    assert cfg.crop is None and cfg.max_depth == 50.0 and cfg.record == ("depth", "depth_info", "colored")
    args = replay_cli.build_parser().parse_args(["--bag", "b", "--out", "o", "--crop", "garg", "--record",
                                                 "depth, points"])
    cfg = replay_cli.config_from_args(args)
    assert cfg.crop == "garg" and cfg.record == ("depth", "points")
