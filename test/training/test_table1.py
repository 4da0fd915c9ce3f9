"""benchmarks/table1.py, our own Table I: a tiny end-to-end run writes the rows, the paper column and the per-seed
statistics; the statistics and the "beats its untrained network" flag are pure functions checked on hand-made
numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import table1  # noqa: E402


def test_mean_std_is_the_mean_and_sample_std_over_seeds():
    s = table1.mean_std([0.30, 0.50, 0.40])
    assert s["mean"] == pytest.approx(0.40)
    assert s["std"] == pytest.approx(0.10)  # ddof 1: sqrt((0.01 + 0.01 + 0) / 2)
    assert s["n"] == 3
    assert table1.mean_std([0.25]) == {"mean": 0.25, "std": None, "n": 1}
    with pytest.raises(ValueError):
        table1.mean_std([])


def test_aggregate_gives_each_shared_metric_its_mean_and_std():
    per_seed = [{"abs_rel": 0.2, "a1": 0.7, "only_here": 1.0}, {"abs_rel": 0.4, "a1": 0.5}]
    agg = table1.aggregate(per_seed)
    assert set(agg) == {"abs_rel", "a1"}
    assert agg["abs_rel"]["mean"] == pytest.approx(0.3)
    assert agg["abs_rel"]["std"] == pytest.approx(math.sqrt(0.02))
    assert agg["a1"]["mean"] == pytest.approx(0.6)


def test_a_system_beats_its_untrained_network_only_by_more_than_two_combined_std():
    untrained = [0.60, 0.61, 0.59]  # std 0.01
    assert table1.beats_untrained([0.30, 0.32, 0.31], untrained)
    # 0.04 lower on average, but the trained seeds scatter by 0.05: within 2 * hypot(0.05, 0.01) = 0.102.
    assert not table1.beats_untrained([0.51, 0.56, 0.61], untrained)
    # Worse than untrained is never "beats".
    assert not table1.beats_untrained([0.70, 0.71, 0.72], untrained)
    c = table1.compare([0.51, 0.56, 0.61], untrained)
    assert c["diff"] == pytest.approx(-0.04)
    assert c["margin"] == pytest.approx(2 * math.hypot(0.05, 0.01))
    assert c["noise_known"] and not c["lower"] and not c["higher"]


def test_with_one_seed_each_the_verdict_rests_on_the_sign_and_says_so():
    c = table1.compare([0.30], [0.31])
    assert c["lower"] and c["margin"] == 0.0 and not c["noise_known"]
    assert not table1.beats_untrained([0.31], [0.31])


def test_feature_metric_ablation_and_featdepth_share_their_training_runs():
    assert table1.ablation_recipe("feature_metric").key() == table1.SYSTEMS["featdepth"].key()
    assert table1.ablation_recipe("no_automask").key() != table1.SYSTEMS["monodepth2"].key()
    assert set(table1.PAPER) == set(table1.SYSTEMS)


def test_monodepth2_recipes_scale_the_pose_translation_by_0_1_and_the_papers_0_01_is_an_ablation():
    """Monodepth2, FeatDepth and every Monodepth2 ablation build a pose net whose translation is x0.1 (0.01 collapsed
    one of two seeds); "paper_translation_scale" is the Monodepth2 recipe the pilot ran before, key for key."""
    for recipe in [table1.SYSTEMS["monodepth2"], table1.SYSTEMS["featdepth"],
                   *(table1.ablation_recipe(a) for a in table1.DEFAULT_ABLATIONS)]:
        _, pose_net, _ = table1.build_networks(recipe, seed=0)
        assert pose_net.decoder.translation_scale == 0.1, recipe.name
    paper = table1.ablation_recipe("paper_translation_scale")
    before = table1.Recipe("monodepth2", "Monodepth2", "monodepth2", dict(paper.depth_kwargs), paper.pose_net)
    assert paper.key() == before.key() and paper.pose_kwargs == {}
    assert table1.build_networks(paper, seed=0)[1].decoder.translation_scale == 0.01
    # The other pose-net systems keep the paper's scale; PackNet + velocity has its metric 0.1.
    assert table1.SYSTEMS["ddv"].pose_kwargs == {} and table1.SYSTEMS["diffnet"].pose_kwargs == {}


def test_quick_sets_defaults_but_explicit_flags_win():
    args = table1.parse_args(["--quick", "--seeds", "3"])
    assert args.budget_cpu_s == table1.QUICK["budget_cpu_s"]
    assert args.seeds == 3
    with pytest.raises(SystemExit):
        table1.parse_args(["--systems", "monodepth3"])


def test_tiny_run_without_real_data_writes_rows_paper_column_and_seed_statistics(tmp_path, capsys):
    out = tmp_path / "table1.json"
    rc = table1.main(["--systems", "rtmonodepth", "--ablations", "no_automask", "--seeds", "2",
                      "--budget-cpu-s", "0.5", "--height", "64", "--width", "192", "--train-frames", "12",
                      "--heldout-frames", "3", "--latency-runs", "0", "--real-data", str(tmp_path / "absent"),
                      "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    printed = capsys.readouterr().out

    assert not result["data"]["real_used"] and "synthetic world only" in result["data"]["real_note"]
    assert "synthetic world only" in printed and "Real KITTI raw drive" not in printed
    [row] = result["systems"]
    assert row["name"] == "rtmonodepth"
    assert row["paper"]["abs_rel"] == 0.125 and row["paper"]["resolution"] == "640x192"
    assert row["complexity"]["params_m"] > 0 and row["complexity"]["gflops_640x192"] > 0
    assert [r["seed"] for r in row["runs"]] == [0, 1] and all(r["steps"] >= 1 for r in row["runs"])

    syn = row["summary"]["synthetic"]
    assert row["summary"]["real"] is None
    abs_rel = [r["trained"]["synthetic"]["median_scaled"]["abs_rel"] for r in row["runs"]]
    assert syn["trained"]["abs_rel"]["mean"] == pytest.approx(sum(abs_rel) / 2)
    assert syn["trained"]["abs_rel"]["std"] == pytest.approx(abs(abs_rel[0] - abs_rel[1]) / math.sqrt(2))
    untrained = [r["untrained"]["synthetic"]["median_scaled"]["abs_rel"] for r in row["runs"]]
    assert syn["vs_untrained"]["beats_untrained"] == table1.beats_untrained(abs_rel, untrained)
    if not syn["vs_untrained"]["beats_untrained"]:
        assert "flagged" in printed

    [ablation] = result["ablations"]
    assert ablation["ablation"] == "no_automask" and len(ablation["runs"]) == 2
    assert ablation["recipe"]["switches"] == {"automask": False}
    assert result["ablation_baseline"]["name"] == "monodepth2"
    assert "- auto-masking" in printed and "0.125 (640x192)" in printed


def test_a_table_split_over_processes_merges_into_the_same_rows_and_a_deadline_skips_whole_runs(tmp_path):
    """The GPU session's plumbing on the CPU: one process per seed with a wall budget and loader workers, a
    deadline that leaves a run out (listed, not cut short), then --merge joins the seeds into one row."""
    common = ["--systems", "rtmonodepth", "--ablations", "none", "--seeds", "1", "--budget-wall-s", "0.5",
              "--workers", "1", "--height", "64", "--width", "192", "--train-frames", "12", "--heldout-frames", "3",
              "--latency-runs", "0", "--real-data", str(tmp_path / "absent")]
    # Separate processes, as on the device: a DataLoader with workers leaves torch's SIGCHLD handler in its
    # process, and a later fork in the same pytest process (a test's subprocess.run) was seen to segfault.
    for seed in (0, 1):
        res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "table1.py"), *common, "--seed-start",
                              str(seed), "--out", str(tmp_path / f"s{seed}.json")], cwd=REPO, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert "wall-s" in res.stdout
    s0 = json.loads((tmp_path / "s0.json").read_text())
    [run] = s0["systems"][0]["runs"]
    assert run["seed"] == 0 and run["budget_kind"] == "wall" and run["amp"] is None and run["steps"] >= 1

    # In this process: the deadline leaves the one run out, so no loader (and no worker) starts.
    assert table1.main([*common, "--seed-start", "2", "--deadline-s", "1", "--out", str(tmp_path / "late.json")]) == 0
    late = json.loads((tmp_path / "late.json").read_text())
    assert late["systems"] == [] and [s["seed"] for s in late["skipped"]] == [2]

    out = tmp_path / "merged.json"
    assert table1.main(["--merge", str(tmp_path / "s0.json"), str(tmp_path / "s1.json"), str(tmp_path / "late.json"),
                        "--latency-runs", "0", "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    [row] = merged["systems"]
    assert [r["seed"] for r in row["runs"]] == [0, 1]
    assert row["summary"]["synthetic"]["trained"]["abs_rel"]["n"] == 2
    assert merged["seeds_run"] == 2 and [s["seed"] for s in merged["skipped"]] == [2]


def test_merge_refuses_tables_run_with_other_settings(tmp_path):
    base = {"settings": {"height": 64, "width": 192}, "systems": [], "ablation_baseline": None, "ablations": [],
            "data": {}, "machine": {}, "wall_s": 1.0}
    other = {**base, "settings": {"height": 96, "width": 320}}
    for name, part in (("a", base), ("b", other)):
        (tmp_path / f"{name}.json").write_text(json.dumps(part))
    with pytest.raises(SystemExit, match="other settings"):
        table1.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "m.json")])


def test_gpu_settings_are_checked_before_anything_trains():
    with pytest.raises(SystemExit):
        table1.parse_args(["--device", "tpu"])
    with pytest.raises(SystemExit):  # staged real frames without the training frames
        table1.parse_args(["--real-staged", "x.npz"])
    if not table1.torch.cuda.is_available():
        with pytest.raises(SystemExit):
            table1.parse_args(["--device", "cuda", "--budget-wall-s", "10"])


def test_known_pose_ablations_warp_with_gt_poses_at_the_metric_init_and_are_metric():
    gt = table1.ablation_recipe("gt_pose")
    fm = table1.ablation_recipe("feature_metric_gt_pose")
    base = table1.SYSTEMS["monodepth2"]
    assert gt.extras == {"gt_pose_warp": True, "pose_supervision_weight": 1.0} and gt.metric and not base.metric
    assert gt.init_depth == table1.METRIC_INIT_DEPTH != base.init_depth
    assert fm.extras["feature_metric_weight"] > 0 and fm.extras["gt_pose_warp"] and fm.featurenet_kwargs
    step0 = table1.ablation_recipe("feature_metric_from_step0")
    assert "feature_metric_warmup_steps" not in step0.extras and not step0.metric
    assert table1.SYSTEMS["featdepth"].extras["feature_metric_warmup_steps"] == table1.FEATURE_METRIC_WARMUP_STEPS
    assert len({gt.key(), fm.key(), step0.key(), base.key(), table1.ablation_recipe("feature_metric").key()}) == 5
    # The default table runs the Monodepth2 ideas; the diagnoses only when named.
    assert table1.parse_args([]).ablations == table1.DEFAULT_ABLATIONS == [
        "no_min_reprojection", "no_automask", "no_full_res_multiscale", "feature_metric"]


def test_ablations_trained_apart_from_their_baseline_merge_into_one_comparison(tmp_path):
    """--skip-baseline trains only the ablation (here the known-pose one, whose samples carry T_gt); --merge with
    a JSON holding the Monodepth2 baseline gives the ablation table."""
    common = ["--seeds", "1", "--budget-cpu-s", "1", "--height", "64", "--width", "192", "--train-frames", "8",
              "--heldout-frames", "3", "--latency-runs", "0", "--real-data", str(tmp_path / "absent")]
    assert table1.main([*common, "--systems", "", "--ablations", "gt_pose", "--skip-baseline",
                        "--out", str(tmp_path / "abl.json")]) == 0
    abl = json.loads((tmp_path / "abl.json").read_text())
    assert abl["ablation_baseline"] is None and [a["ablation"] for a in abl["ablations"]] == ["gt_pose"]
    assert abl["ablations"][0]["recipe"]["extras"]["gt_pose_warp"] is True
    assert table1.main([*common, "--systems", "monodepth2", "--ablations", "none",
                        "--out", str(tmp_path / "base.json")]) == 0
    out = tmp_path / "merged.json"
    assert table1.main(["--merge", str(tmp_path / "base.json"), str(tmp_path / "abl.json"), "--latency-runs", "0",
                        "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert merged["ablation_baseline"]["name"] == "monodepth2" and merged["ablations"][0]["ablation"] == "gt_pose"


def _row(recipe, steps: list[int]) -> dict:
    """A table JSON row of ``recipe`` whose runs took ``steps``."""
    return table1.recipe_fields(recipe) | {"runs": [{"seed": i, "steps": n} for i, n in enumerate(steps)]}


def test_table_trainings_lists_a_run_in_two_rows_once_with_its_first_rows_recipe():
    md2, featdepth = table1.SYSTEMS["monodepth2"], table1.SYSTEMS["featdepth"]
    feature_metric = table1.ablation_recipe("feature_metric")
    assert feature_metric.key() == featdepth.key()
    table = {"systems": [_row(md2, [2300, 2400]), _row(featdepth, [1665])],
             "ablation_baseline": _row(md2, [2300, 2400]), "ablations": [_row(feature_metric, [1665, 1700])]}
    trainings = table1.table_trainings(table)
    assert list(trainings) == [(md2.key(), 0), (md2.key(), 1), (featdepth.key(), 0), (featdepth.key(), 1)]
    assert trainings[(featdepth.key(), 0)][0].name == "featdepth"
    assert [run["steps"] for _, run in trainings.values()] == [2300, 2400, 1665, 1700]


def test_a_step_budget_keeps_the_pilots_steps_and_scales_the_rest_by_their_measured_cost():
    md2, featdepth = table1.SYSTEMS["monodepth2"], table1.SYSTEMS["featdepth"]
    no_automask = table1.ablation_recipe("no_automask")
    # Monodepth2 is also the ablation baseline: the same two runs in two rows count once.
    pilot = {"settings": {"budget_cpu_s": 1200.0}, "systems": [_row(md2, [2300, 2400]), _row(featdepth, [1665])],
             "ablation_baseline": _row(md2, [2300, 2400]), "ablations": []}
    rate = {"settings": {"budget_cpu_s": 150.0}, "systems": [_row(md2, [300])], "ablation_baseline": None,
            "ablations": [_row(no_automask, [330])]}
    steps = table1.budget_steps_table(pilot, rate)
    assert steps[md2.cost_key()]["steps"] == 2350 and "2 run(s)" in steps[md2.cost_key()]["how"]
    # FeatDepth and "+ feature-metric" are one training: one budget for both names.
    assert steps[table1.ablation_recipe("feature_metric").cost_key()]["steps"] == 1665
    assert (steps[no_automask.cost_key()]["steps"] == round(2350 * 1.1)
            and "x 1.100" in steps[no_automask.cost_key()]["how"])
    # The translation scale changes no work: Monodepth2 with the paper's 0.01 has Monodepth2's budget.
    paper_scale = table1.ablation_recipe("paper_translation_scale")
    assert paper_scale.key() != md2.key() and steps[paper_scale.cost_key()]["steps"] == 2350
    assert featdepth.cost_key() != md2.cost_key()
    with pytest.raises(ValueError, match="Monodepth2"):
        table1.budget_steps_table({**pilot, "systems": [_row(featdepth, [1665])], "ablation_baseline": None}, rate)


def test_queue_jobs_are_claimed_once_each_by_racing_processes(tmp_path):
    jobs = [("monodepth2", 1), ("ablation:no_automask", 0), ("featdepth", 2)]
    table1.write_queue(tmp_path / "q", jobs)
    a, b = table1.claim_jobs(tmp_path / "q", "a"), table1.claim_jobs(tmp_path / "q", "b")
    got = [next(a), next(b), next(a)]
    assert [(r.name, s) for r, s in got] == jobs
    assert next(b, None) is None and next(a, None) is None
    assert sorted(p.name for p in (tmp_path / "q" / "claimed").iterdir()) == ["000.a.json", "001.b.json", "002.a.json"]
    with pytest.raises(ValueError, match="unknown recipe"):
        table1.write_queue(tmp_path / "bad", [("monodepth3", 0)])


def test_step_budget_runs_repeat_a_cpu_pilot_and_merge_into_its_rows(tmp_path):
    """A CPU-seconds pilot, then a queue worker repeating its trainings for their steps (on this CPU here; on a GPU
    in the session) joins the pilot's rows with another seed; settings that differ from the pilot are refused."""
    common = ["--height", "64", "--width", "192", "--train-frames", "8", "--heldout-frames", "3",
              "--latency-runs", "0", "--real-data", str(tmp_path / "absent")]
    assert table1.main([*common, "--systems", "rtmonodepth", "--ablations", "none", "--seeds", "1",
                        "--budget-cpu-s", "0.5", "--out", str(tmp_path / "pilot.json")]) == 0
    pilot = json.loads((tmp_path / "pilot.json").read_text())
    pilot_steps = pilot["systems"][0]["runs"][0]["steps"]
    with pytest.raises(SystemExit):  # another batch size than the pilot's
        table1.parse_args([*common, "--batch-size", "2", "--budget-steps-from", str(tmp_path / "pilot.json")])
    with pytest.raises(SystemExit):  # a step budget is float32 and not wall time
        table1.parse_args([*common, "--budget-wall-s", "5", "--budget-steps-from", str(tmp_path / "pilot.json")])

    table1.write_queue(tmp_path / "q", [("rtmonodepth", 1)])
    assert table1.main([*common, "--budget-steps-from", str(tmp_path / "pilot.json"), "--queue", str(tmp_path / "q"),
                        "--out", str(tmp_path / "worker.json")]) == 0
    worker = json.loads((tmp_path / "worker.json").read_text())
    [run] = worker["systems"][0]["runs"]
    assert run["seed"] == 1 and run["steps"] == pilot_steps and run["budget_kind"] == "steps"
    assert worker["settings"]["budget_cpu_s"] == 0.5 and worker["step_budget"]["rtmonodepth"]["steps"] == pilot_steps
    assert "exactly the steps" in worker["budget_rule"]

    assert table1.main(["--merge", str(tmp_path / "pilot.json"), str(tmp_path / "worker.json"), "--latency-runs", "0",
                        "--out", str(tmp_path / "merged.json")]) == 0
    merged = json.loads((tmp_path / "merged.json").read_text())
    [row] = merged["systems"]
    assert [(r["seed"], r.get("budget_kind")) for r in row["runs"]] == [(0, "cpu"), (1, "steps")]
    assert "1 run(s) (cpu, float32) instead trained for exactly the steps" in merged["budget_rule"]
    assert [p["file"] for p in merged["machine"]["parts"]] == [str(tmp_path / "pilot.json"),
                                                                str(tmp_path / "worker.json")]


def test_the_markdown_summary_gives_each_row_its_seeds_and_verdict():
    def run(seed: int, trained: float, untrained: float) -> dict:
        scores = {"median_scaled": {"abs_rel": trained}, "unscaled": None}
        return {"seed": seed, "steps": 100 + seed, "trained": {"synthetic": scores, "real": None},
                "untrained": {"synthetic": {"median_scaled": {"abs_rel": untrained}, "unscaled": None}, "real": None}}

    md2 = {"label": "Monodepth2", "paper": {"abs_rel": 0.115, "resolution": "640x192"},
           "runs": [run(0, 0.30, 0.60), run(1, 0.32, 0.61)]}
    abl = {"label": "- auto-masking", "runs": [run(0, 0.50, 0.60), run(1, 0.52, 0.61)]}
    for row in (md2, abl):
        row["summary"] = table1.summarize_runs(row["runs"])
    text = table1.markdown_table({"systems": [md2], "ablations": [abl], "ablation_baseline": md2})
    header, rule, system, ablation = text.splitlines()
    assert header.count("|") == rule.count("|") == system.count("|") == ablation.count("|") == 8
    assert "| Monodepth2 | 0.115 (640x192) | 0.310+-0.014 (0.605+-0.007) | - | 2 | 100+-1 | yes / - |" == system
    assert ablation.startswith("| Monodepth2 - auto-masking | - | 0.510+-0.014") and "vs Monodepth2: worse" in ablation
