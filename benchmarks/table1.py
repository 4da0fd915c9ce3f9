"""Our own Table I: every survey system trained with one recipe, on the same data, at the same size, for the same
CPU-time budget, then scored on a held-out synthetic world and on the real KITTI raw drive.

    .venv/bin/python benchmarks/table1.py [--budget-cpu-s 1200] [--seeds 3] [--systems monodepth2,packnet,...]
        [--ablations no_automask,...] [--height 64 --width 192] [--real-data ../shared/data/real] [--out X.json]
    .venv/bin/python benchmarks/table1.py --quick --out /tmp/table1.json     # end to end in well under a minute

Systems (:data:`SYSTEMS`): SfMLearner with explainability, Monodepth2, Monodepth2 + feature-metric loss (FeatDepth),
PackNet + velocity supervision, DDV, DIFFNet and the real-time ``rtmonodepth``. Each keeps its paper's loss and its
own network in the CPU-sized variant of ``architecture_ablation.ARCHS`` (stated per row where lighter than the
paper's); everything else is shared: training data (the synthetic world of ``loss_ablation.WORLD`` plus, when
``--real-data`` has it, KITTI odometry 03 frames 0-699), size, Adam at ``--lr``, batch, ``init_depth`` and the budget
of the one loop in ``_budget_training.train_for_budget``. Runs go one at a time, one torch thread.

Scored per (system, seed): the 7 KITTI metrics, median-scaled (and unscaled for the metric PackNet + velocity), on the
held-out synthetic world (seed 1000, exact GT, 80 m, no crop) and on the raw drive (``real_data.score_depth_model``:
LiDAR GT, Garg crop, 80 m), for the trained network and for the same network before training. Rows give mean +- the
sample std over seeds; a system is flagged where its abs_rel does not beat its untrained network's by more than
2 combined std (:func:`compare`). The Monodepth2 ablations (:data:`ABLATIONS`) are compared with Monodepth2 the same
way. Params and GFLOPs come from ``model_complexity.measure``, CPU ms from ``model_complexity.depth_latency_ms``.
Prints the tables; writes JSON (atomically) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from _budget_training import MAX_DEPTH, MIN_DEPTH, DeadlineReached, heldout_predictions, train_for_budget
from architecture_ablation import ARCHS
from loss_ablation import (
    METRIC_INIT_DEPTH,
    METRIC_TRANSLATION_SCALE,
    RELATIVE_INIT_DEPTH,
    VARIANTS,
    VELOCITY,
    WORLD,
)
from model_complexity import depth_latency_ms, measure
from monodepth_training.bundle_io import save_bundle
from monodepth_training.datasets.kitti_odometry import KittiOdometryDataset
from monodepth_training.datasets.mix import MixDataset
from monodepth_training.datasets.synthetic import SyntheticDataset
from monodepth_training.losses import ExtraLossConfig, build_featurenet
from monodepth_training.networks import rtmonodepth
from monodepth_training.networks.registry import build_depth_net, build_pose_net, set_initial_depth
from real_data import (
    RAW_DRIVE,
    DepthModel,
    RealDataError,
    check_real_root,
    load_raw_frames,
    load_staged_frames,
    score_depth_model,
)
from torch.utils.data import DataLoader

from monodepth_ros.bundle import BundleMeta, atomic_write_bytes
from monodepth_ros.evaluation.metrics import METRIC_NAMES, evaluate_depth

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "table1.json"
DEFAULT_REAL = REPO.parent / "shared" / "data" / "real"
ODOM_SEQUENCE, ODOM_TRAIN_FRAMES = "03", (0, 699)  # 700-800 are held out (../shared/data/real/README.md)
HELDOUT_SEED = 1000
NOISE_K = 2.0  # "clearly different" = means apart by more than NOISE_K combined standard deviations
EVAL_SETS = ("synthetic", "real")


@dataclass
class Recipe:
    """One trained configuration: a network pair, its start and its loss. ``key()`` identifies the training, so a
    system and an ablation that train the same thing (FeatDepth, "+ feature-metric") share their runs."""

    name: str
    label: str
    depth_net: str
    depth_kwargs: dict
    pose_net: str = "monodepth2_pose"
    pose_kwargs: dict = field(default_factory=dict)
    init_depth: float | None = RELATIVE_INIT_DEPTH
    extras: dict = field(default_factory=dict)  # ExtraLossConfig fields
    switches: dict = field(default_factory=dict)  # total_loss switches (automask, alpha, ...)
    featurenet_kwargs: dict = field(default_factory=dict)
    variant: str = ""  # how this network differs from the paper's, if it does

    @property
    def metric(self) -> bool:
        return self.extras.get("velocity_weight", 0) > 0 or bool(self.extras.get("gt_pose_warp", False))

    def key(self) -> str:
        d = asdict(self)
        for k in ("name", "label", "variant"):
            d.pop(k)
        return json.dumps(d, sort_keys=True, default=list)

    def cost_key(self) -> str:
        """What sets a training step's cost: :meth:`key` without the initial depth and the pose translation scale
        (an output bias and a constant factor, no work). Trainings that share it buy the same steps per CPU-second,
        so a step budget (:func:`budget_steps_table`) carries over between them."""
        d = json.loads(self.key())
        d.pop("init_depth")
        d["pose_kwargs"] = {k: v for k, v in d["pose_kwargs"].items() if k != "translation_scale"}
        return json.dumps(d, sort_keys=True)


def _arch(depth_net: str) -> tuple[dict, str]:
    """(depth kwargs, pose net) of ``depth_net``'s CPU-sized variant in ``architecture_ablation.ARCHS``."""
    return next((dict(kw), pose) for _label, name, kw, pose in ARCHS if name == depth_net)


def _system(name: str, label: str, depth_net: str, variant: str, **kw) -> Recipe:
    depth_kwargs, pose_net = _arch(depth_net) if depth_net in {a[1] for a in ARCHS} else ({}, "monodepth2_pose")
    return Recipe(name, label, depth_net, kw.pop("depth_kwargs", depth_kwargs), kw.pop("pose_net", pose_net),
                  variant=variant, **kw)


# FeatDepth's loss with the feature-metric term kept from depth and pose for the first 500 steps. From step 0 (the
# paper's schedule, with an ImageNet FeatureNet) it collapsed the from-scratch pose net to ~5 mm per frame and the
# depth never learned (pilot: held-out synthetic 0.599, untrained 0.597); after a photometric warm-up it learns
# (0.311). The step-0 form stays as the ablation "feature_metric_from_step0" (docs/survey.md, "FeatDepth").
FEATURE_METRIC_WARMUP_STEPS = 500
_FEATURE_METRIC = {**VARIANTS["feature_metric"][1], "feature_metric_warmup_steps": FEATURE_METRIC_WARMUP_STEPS}
# Monodepth2's pose decoder multiplies its translation by 0.01, made for an ImageNet-initialised pose net. From
# scratch, with 0.01, Monodepth2 and FeatDepth each collapsed on one of two seeds (held-out synthetic 0.599 =
# untrained; pose ~5.6 mm per frame, decided in the first ~100 steps); with 0.1 (the shipped default recipe's value)
# the collapsed seed learns (docs/survey.md, "Seed collapse"). The rotation keeps 0.01. Applied to Monodepth2, so to
# FeatDepth and every Monodepth2 ablation; the other pose-net systems keep the paper's 0.01, which their seeds learned
# with. The paper's value stays as the ablation "paper_translation_scale" (the old Monodepth2 runs are its runs).
FROM_SCRATCH_POSE = {"translation_scale": 0.1}
SYSTEMS: dict[str, Recipe] = {r.name: r for r in [
    # SfMLearner's loss as config/train/sfmlearner_kitti.yaml has it: L1 photometric (no SSIM), averaged over the
    # sources, each scale at its own resolution, mask-weighted with the explainability regulariser at 0.2.
    _system("sfmlearner", "Zhou et al. (SfMLearner) + explainability", "sfmlearner", "paper network (DispNet)",
            extras={"explainability_weight": 0.2},
            switches={"alpha": 0.0, "automask": False, "min_reprojection": False, "full_res_multiscale": False}),
    _system("monodepth2", "Monodepth2", "monodepth2",
            "paper network (ResNet-18), from scratch; pose translation x0.1 (paper x0.01)",
            pose_kwargs=dict(FROM_SCRATCH_POSE)),
    _system("featdepth", "Monodepth2 + feature-metric (FeatDepth)", "monodepth2",
            "light: Monodepth2 ResNet-18 + joint ResNet-18 FeatureNet (FeatDepth: ResNet-50 at 1024x320); the "
            "feature-metric term after 500 photometric steps (from step 0 the from-scratch pose net collapses); "
            "pose translation x0.1", extras=dict(_FEATURE_METRIC), featurenet_kwargs={"num_layers": 18},
            pose_kwargs=dict(FROM_SCRATCH_POSE)),
    _system("packnet", "PackNet-SfM + velocity", "packnet",
            "light: PackNet slim (quarter widths; PackNet01 is 410 GFLOPs at 640x192); ResNet-18 pose net",
            init_depth=METRIC_INIT_DEPTH, extras=dict(VELOCITY),
            pose_kwargs={"translation_scale": METRIC_TRANSLATION_SCALE}),
    _system("ddv", "DDV (self-attention, discrete disparity)", "ddv",
            "light: ResNet-18 undilated (paper: dilated ResNet-101); no init_depth (no sigmoid heads)",
            init_depth=None),
    _system("diffnet", "DIFFNet", "diffnet", "paper network (HRNet-W18), from scratch"),
    _system("rtmonodepth", "RT-MonoDepth (real-time)", "rtmonodepth",
            "project CPU configuration rtmonodepth.CPU_REALTIME (paper: channels 64/64/128/256, 3 convs per stage)",
            depth_kwargs=dict(rtmonodepth.CPU_REALTIME)),
]}

# The papers' KITTI Eigen abs_rel (monocular, median-scaled) as the survey's Table I quotes them: (abs_rel, paper
# resolution, source). Their networks start from ImageNet weights (PackNet: from scratch) and train for hours on a
# GPU on ~40k frames; ours train for minutes from scratch on a small set, so the column is context, not a target.
PAPER = {
    "sfmlearner": (0.183, "416x128", "Zhou et al. CVPR 2017; 0.183 is the authors' updated KITTI-only model "
                   "(github.com/tinghuiz/SfMLearner README: smoothness 0.5, without the explainability term)"),
    "monodepth2": (0.115, "640x192", "Godard et al. ICCV 2019, monocular ResNet-18"),
    "featdepth": (0.104, "1024x320", "Shu et al. ECCV 2020 (FeatDepth)"),
    "packnet": (0.111, "640x192", "Guizilini et al. CVPR 2020 (PackNet-SfM, monocular)"),
    "ddv": (0.110, "640x192", "Johnston & Carneiro CVPR 2020, as the survey's Table I gives it"),
    "diffnet": (0.102, "640x192", "Zhou, Greenwood & Taylor BMVC 2021 (DIFFNet)"),
    "rtmonodepth": (0.125, "640x192", "Feng et al. ICIP 2024 (RT-MonoDepth)"),
}

# Monodepth2 ablations: name -> (label, the loss_ablation variant it applies to the Monodepth2 system).
ABLATIONS = {
    "no_min_reprojection": "- min-reprojection (average over sources)",
    "no_automask": "- auto-masking",
    "no_full_res_multiscale": "- full-res multi-scale",
    "feature_metric": "+ feature-metric (FeatDepth, after 500 photometric steps)",
    "feature_metric_from_step0": "+ feature-metric from step 0 (FeatDepth's schedule)",
    "gt_pose": "+ known ego-motion (GT poses warp; metric init)",
    "feature_metric_gt_pose": "+ feature-metric from step 0, known ego-motion (FeatDepth diagnosis)",
    "paper_translation_scale": "pose translation x0.01 (the paper's; seed collapse diagnosis)",
}
# The Monodepth2 ideas; the other ABLATIONS are diagnoses, run when named.
DEFAULT_ABLATIONS = ["no_min_reprojection", "no_automask", "no_full_res_multiscale", "feature_metric"]
# Ablations that are not loss_ablation variants: known ego-motion (training/losses/known_pose.py). Both data parts
# (synthetic world, KITTI odometry) carry exact poses. Known poses are metres, so the depth starts at the metric
# init (as PackNet + velocity does) rather than the relative one; the pose net learns from the poses.
KNOWN_POSE = {"gt_pose_warp": True, "pose_supervision_weight": 1.0}
EXTRA_ABLATIONS = {
    "gt_pose": ({}, dict(KNOWN_POSE)),
    "feature_metric_gt_pose": (VARIANTS["feature_metric"][0], {**VARIANTS["feature_metric"][1], **KNOWN_POSE}),
    # FeatDepth's loss: the term reaches depth and pose after the photometric loss has set the motion (the joint
    # FeatureNet trains from step 0), as the FeatDepth system; and from step 0, which collapses the pose net.
    "feature_metric": (VARIANTS["feature_metric"][0], dict(_FEATURE_METRIC)),
    "feature_metric_from_step0": (VARIANTS["feature_metric"][0], dict(VARIANTS["feature_metric"][1])),
    "paper_translation_scale": ({}, {}),  # the loss as Monodepth2's; the pose net as POSE_ABLATIONS gives it
}
# Ablations that build the pose net with other kwargs than Monodepth2's. "paper_translation_scale": none at all, so
# PoseDecoder's 0.01 (see FROM_SCRATCH_POSE); its key is that of the Monodepth2 runs before the change.
POSE_ABLATIONS = {"paper_translation_scale": {}}


def ablation_recipe(name: str) -> Recipe:
    """The Monodepth2 system with one ``loss_ablation.VARIANTS`` change (no stereo: the training mix has none), or
    one of :data:`EXTRA_ABLATIONS` (with its pose kwargs from :data:`POSE_ABLATIONS` where that has them)."""
    if name in EXTRA_ABLATIONS:
        (switches, extras), use_stereo = EXTRA_ABLATIONS[name], False
    else:
        switches, extras, use_stereo = VARIANTS[name]
    if use_stereo:
        raise ValueError(f"ablation {name!r} needs stereo, which the training data has not")
    base = SYSTEMS["monodepth2"]
    known_pose = bool(extras.get("gt_pose_warp"))
    init_depth = METRIC_INIT_DEPTH if known_pose else base.init_depth
    pose_kwargs = {**base.pose_kwargs, "translation_scale": METRIC_TRANSLATION_SCALE} if known_pose else dict(
        base.pose_kwargs)
    if name in POSE_ABLATIONS:
        pose_kwargs = dict(POSE_ABLATIONS[name])
    return Recipe(f"ablation:{name}", ABLATIONS[name], base.depth_net, dict(base.depth_kwargs), base.pose_net,
                  pose_kwargs, init_depth, dict(extras), dict(switches),
                  {"num_layers": 18} if extras.get("featurenet_mode", "off") != "off" else {}, base.variant)


def table_rows(part: dict) -> list[dict]:
    """Every trained row of a table JSON: its systems, its ablation baseline and its ablations."""
    return part["systems"] + ([part["ablation_baseline"]] if part.get("ablation_baseline") else []) + part["ablations"]


def row_recipe(row: dict) -> Recipe:
    return Recipe(row["name"], row["label"], variant=row["variant"], **row["recipe"])


def table_trainings(part: dict) -> dict[tuple[str, int], tuple[Recipe, dict]]:
    """Every training of a table JSON once, as ``{(Recipe.key(), seed): (recipe of its first row, run)}`` in row
    order. A run shows in two rows when one training is two things: Monodepth2 is a system and the ablation
    baseline, FeatDepth a system and the feature-metric ablation."""
    out: dict[tuple[str, int], tuple[Recipe, dict]] = {}
    for row in table_rows(part):
        recipe = row_recipe(row)
        for run in row["runs"]:
            out.setdefault((recipe.key(), run["seed"]), (recipe, run))
    return out


def recipe_fields(recipe: Recipe) -> dict:
    """A table JSON row's description of ``recipe`` (the inverse of :func:`row_recipe`)."""
    return {"name": recipe.name, "label": recipe.label, "variant": recipe.variant,
            "recipe": {k: v for k, v in asdict(recipe).items() if k not in ("name", "label", "variant")}}


def budget_steps_table(pilot: dict, rate: dict | None = None) -> dict[str, dict]:
    """The step budget that repeats a CPU table's trainings elsewhere (a GPU): per training cost
    (:meth:`Recipe.cost_key`), ``{"name", "steps", "how"}``.

    A training whose cost ``pilot`` (a CPU-seconds table) measured keeps the mean of the steps its runs reached
    there. One that only ``rate`` measured (a shorter CPU table that trained it beside Monodepth2, one process, one
    thread) gets Monodepth2's pilot steps times its steps / Monodepth2's steps in ``rate``: what the pilot's CPU
    seconds would have bought it, from its measured cost per step."""
    def steps_by_cost(table: dict) -> dict[str, tuple[str, list[int]]]:
        out: dict[str, tuple[str, list[int]]] = {}
        for recipe, run in table_trainings(table).values():
            out.setdefault(recipe.cost_key(), (recipe.name, []))[1].append(run["steps"])
        return out

    budget = pilot["settings"]["budget_cpu_s"]
    out = {key: {"name": name, "steps": round(float(np.mean(steps))),
                 "how": f"pilot: {budget:g} CPU-s, {len(steps)} run(s)"}
           for key, (name, steps) in steps_by_cost(pilot).items()}
    if rate is not None:
        base = SYSTEMS["monodepth2"].cost_key()
        rate_steps = {key: (name, float(np.mean(steps))) for key, (name, steps) in steps_by_cost(rate).items()}
        if base not in out or base not in rate_steps:
            raise ValueError("the step-rate table and the pilot both need the Monodepth2 system to scale by")
        for key, (name, steps) in rate_steps.items():
            if key not in out:
                ratio = steps / rate_steps[base][1]
                out[key] = {"name": name, "steps": round(out[base]["steps"] * ratio),
                            "how": f"Monodepth2's pilot steps x {ratio:.3f} (its steps per CPU-s against "
                                   f"Monodepth2's, {rate['settings']['budget_cpu_s']:g} CPU-s each)"}
    return out


# ------------------------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n"}`` of per-seed values; ``std`` is the sample std (ddof 1), None for one value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to aggregate")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else None, "n": int(v.size)}


def aggregate(per_seed: Sequence[dict[str, float]]) -> dict[str, dict]:
    """Per metric (the keys all per-seed dicts share), :func:`mean_std` over the seeds."""
    keys = [k for k in per_seed[0] if all(k in d for d in per_seed)] if per_seed else []
    return {k: mean_std([d[k] for d in per_seed]) for k in keys}


def compare(a: Sequence[float], b: Sequence[float], k: float = NOISE_K) -> dict:
    """Is ``mean(a)`` clearly lower or higher than ``mean(b)``? Clearly = apart by more than ``k`` combined sample
    stds, ``k * sqrt(std_a^2 + std_b^2)`` (a side with one value adds 0). ``noise_known`` is False when neither
    side has two values: the verdict then rests on the sign of the difference alone."""
    sa, sb = mean_std(a), mean_std(b)
    margin = k * math.hypot(sa["std"] or 0.0, sb["std"] or 0.0)
    diff = sa["mean"] - sb["mean"]
    return {"diff": diff, "margin": margin, "lower": diff < -margin, "higher": diff > margin,
            "noise_known": sa["std"] is not None or sb["std"] is not None}


def beats_untrained(trained_abs_rel: Sequence[float], untrained_abs_rel: Sequence[float], k: float = NOISE_K) -> bool:
    """True when the trained network's abs_rel is below its untrained network's by more than ``k`` combined std."""
    return compare(trained_abs_rel, untrained_abs_rel, k)["lower"]


# -------------------------------------------------------------------------------------------------- data


def real_roots(real_data: Path) -> tuple[Path | None, Path | None, str]:
    """(kitti_raw root, kitti_odometry root, note); both None, with the reason, when the folder lacks a piece."""
    shown = os.path.relpath(real_data, REPO)
    try:
        raw, odom = check_real_root(real_data)
    except RealDataError as e:
        why = str(e).split(": ", 1)[-1] if str(e).startswith("--real ") else str(e)
        return None, None, (f"no real data at {shown} ({why}): trained on the synthetic world only, no real-drive "
                            "evaluation")
    return raw, odom, (f"real data from {shown}: KITTI odometry {ODOM_SEQUENCE} frames "
                       f"{ODOM_TRAIN_FRAMES[0]}-{ODOM_TRAIN_FRAMES[1]} in training, raw drive {RAW_DRIVE} evaluated")


def training_set(height: int, width: int, train_frames: int, odom_root: Path | None, cache_all: bool = False,
                 ) -> MixDataset:
    """The one training set: the synthetic world (seed 0, ``WORLD``) plus, with ``odom_root``, the odometry frames
    (grey camera 0, speeds from the GT poses). Odometry frames are decoded into the dataset's cache here, so that
    no run's CPU budget pays for the decoding. ``cache_all`` (the GPU runs) renders every synthetic frame here too
    and keeps them all: at 640x192 a render costs ~25 ms of CPU and a shuffled sample needs three, which would
    starve a GPU; loader workers fork after this, so they share the rendered frames."""
    parts = [{"source": "synthetic", "num_frames": train_frames, "seed": 0, "world": WORLD}]
    if cache_all:
        parts[0]["cache_frames"] = train_frames + 2
    if odom_root is not None:
        parts.append({"source": "kitti_odometry", "data_dir": str(odom_root), "sequences": [ODOM_SEQUENCE],
                      "camera": 0, "frames": list(ODOM_TRAIN_FRAMES)})
    mix = MixDataset(parts, height, width, load_depth_gt=False, augment=True)
    for part in mix.parts:
        if isinstance(part, KittiOdometryDataset) or cache_all:
            for i in range(len(part)):
                part[i]
    return mix


# ------------------------------------------------------------------------------------------- training


@dataclass
class Context:
    """What every run shares: settings, the training set, the evaluation sets and a scratch folder."""

    args: argparse.Namespace
    train: MixDataset
    heldout: SyntheticDataset
    real_frames: list | None
    tmp: Path
    untrained_cache: dict = field(default_factory=dict)


def build_networks(recipe: Recipe, seed: int):
    """Depth net, pose net and FeatureNet (or None) of ``recipe`` as seed ``seed`` initialises them."""
    torch.manual_seed(seed)
    depth_net = build_depth_net(recipe.depth_net, **recipe.depth_kwargs)
    if recipe.init_depth is not None:
        set_initial_depth(depth_net, recipe.init_depth, MIN_DEPTH, MAX_DEPTH)
    pose_net = build_pose_net(recipe.pose_net, **recipe.pose_kwargs)
    extras = ExtraLossConfig(**recipe.extras)
    featurenet = build_featurenet(extras.featurenet_mode, kwargs=recipe.featurenet_kwargs)
    return depth_net, pose_net, featurenet


def evaluate(depth_net, recipe: Recipe, ctx: Context) -> dict:
    """``{"synthetic": ..., "real": ... or None}``, each ``{"median_scaled", "unscaled" (metric recipes) or None,
    "ratio_mean", "ratio_std"}``. The real drive goes through the runtime's torch backend from a bundle, as
    ``real_data`` scores every model."""
    gts, preds = heldout_predictions(depth_net, ctx.heldout)
    med = evaluate_depth(gts, preds, median_scaling=True, crop=None)
    out = {"synthetic": {"median_scaled": med.metrics, "ratio_mean": med.ratio_mean, "ratio_std": med.ratio_std,
                         "unscaled": evaluate_depth(gts, preds, median_scaling=False, crop=None).metrics
                         if recipe.metric else None},
           "real": None}
    if ctx.real_frames is not None:
        path = ctx.tmp / "model.safetensors"
        save_bundle(path, depth_net, BundleMeta(depth_net=recipe.depth_net, height=ctx.args.height,
                                                width=ctx.args.width, min_depth=MIN_DEPTH, max_depth=MAX_DEPTH,
                                                depth_kwargs=recipe.depth_kwargs,
                                                scale_policy="metric" if recipe.metric else "relative"))
        model = torch_model(recipe.label, path, ctx.args.device, ctx.args.threads)
        try:
            row, _ = score_depth_model(ctx.real_frames, model)
        finally:
            if model.close is not None:
                model.close()
        out["real"] = {k: row[k] for k in ("median_scaled", "unscaled", "ratio_mean", "ratio_std")}
    return out


def torch_model(name: str, path: Path, device: str, threads: int) -> DepthModel:
    """A depth row through the runtime's torch backend on ``device``. Opened directly rather than through
    ``create_backend`` (``real_data.backend_model``): the same class the ``torch`` entry point names, but with a
    device, and usable where the package is not installed (the GPU machine runs from the source tree)."""
    from monodepth_training.inference import TorchBackend

    backend = TorchBackend(path, device=device, threads=threads)
    return DepthModel(name, backend.info.scale_policy, lambda rgb, size: backend.infer(rgb, out_size=size),
                      str(path), backend.close)


def run_one(recipe: Recipe, seed: int, ctx: Context, deadline: float | None = None) -> dict:
    """Untrained scores (cached per network and seed), then train for the budget, then trained scores. With a
    step budget (``--budget-steps-from``) a training the budget does not know is an error; ``deadline`` (a
    ``time.perf_counter()`` value) abandons the training (:class:`DeadlineReached`)."""
    args = ctx.args
    budget_steps = None
    if args.steps_by_key is not None:
        if recipe.cost_key() not in args.steps_by_key:
            raise ValueError(f"{recipe.name}: no step budget (the pilot and rate tables never trained it)")
        budget_steps = args.steps_by_key[recipe.cost_key()]["steps"]
    depth_net, pose_net, featurenet = build_networks(recipe, seed)
    device = torch.device(args.device)
    for net in (depth_net, pose_net, featurenet):
        if net is not None:
            net.to(device)
    ukey = (recipe.depth_net, json.dumps(recipe.depth_kwargs, sort_keys=True, default=list), recipe.init_depth,
            recipe.metric, seed)
    if ukey not in ctx.untrained_cache:
        ctx.untrained_cache[ukey] = evaluate(depth_net, recipe, ctx)
    # Evaluating (a bundle check builds a network) draws from torch's RNG, and the augmentation draws from it too:
    # re-seed so that every recipe of this seed trains on the same batches with the same flips and jitter.
    torch.manual_seed(seed)
    loader = DataLoader(ctx.train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        drop_last=True, pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))
    trained = train_for_budget(depth_net, pose_net, loader, budget_cpu_s=args.budget_cpu_s, lr=args.lr,
                               extras=ExtraLossConfig(**recipe.extras), featurenet=featurenet,
                               budget_wall_s=args.budget_wall_s, budget_steps=budget_steps, amp=args.amp,
                               deadline=deadline, **recipe.switches)
    return {"seed": seed, "steps": trained.steps, "cpu_s": round(trained.cpu_s, 1), "budget_kind": trained.budget_kind,
            "amp": trained.amp, "device": args.device,
            "wall_s": round(trained.wall_s, 1), "last_losses": trained.history[-1] if trained.history else
            {"loss": trained.last_loss}, "trained": evaluate(depth_net, recipe, ctx),
            "untrained": ctx.untrained_cache[ukey]}


def complexity(recipe: Recipe, args, cache: dict) -> dict:
    """Params, GFLOPs (train size and 640x192) and ONNX Runtime CPU ms (1 thread, train size) of the depth net;
    measured once per network (``cache``), so two systems sharing a network show the same numbers."""
    key = (recipe.depth_net, json.dumps(recipe.depth_kwargs, sort_keys=True, default=list))
    if key not in cache:
        cache[key] = _complexity(recipe, args)
    return cache[key]


def _complexity(recipe: Recipe, args) -> dict:
    small = measure("depth", recipe.depth_net, recipe.depth_kwargs, args.height, args.width)
    full = measure("depth", recipe.depth_net, recipe.depth_kwargs, 192, 640)
    ms = (depth_latency_ms(recipe.depth_net, recipe.depth_kwargs, args.height, args.width, args.latency_runs)
          if args.latency_runs > 0 else None)
    return {"params_m": round(small["params_m"], 3), "gflops_train_size": round(small["gflops"], 3),
            "gflops_640x192": round(full["gflops"], 2), "cpu_ms_train_size": None if ms is None else round(ms, 2)}


def summarize_runs(runs: list[dict]) -> dict:
    """Per evaluation set: mean +- std over seeds of the trained and untrained metrics, and the untrained check."""
    out = {}
    for where in EVAL_SETS:
        if any(r["trained"][where] is None for r in runs):
            out[where] = None
            continue
        entry = {}
        for kind in ("trained", "untrained"):
            entry[kind] = aggregate([r[kind][where]["median_scaled"] for r in runs])
            if all(r[kind][where]["unscaled"] for r in runs):
                entry[f"{kind}_unscaled"] = aggregate([r[kind][where]["unscaled"] for r in runs])
        t = [r["trained"][where]["median_scaled"]["abs_rel"] for r in runs]
        u = [r["untrained"][where]["median_scaled"]["abs_rel"] for r in runs]
        entry["vs_untrained"] = compare(t, u) | {"beats_untrained": beats_untrained(t, u)}
        out[where] = entry
    return out


# --------------------------------------------------------------------------------------------- output


def fmt(stat: dict | None, digits: int = 3) -> str:
    """"0.316+-0.012" (one seed: "0.316")."""
    if stat is None:
        return "-"
    s = f"{stat['mean']:.{digits}f}"
    return s if stat["std"] is None else f"{s}+-{stat['std']:.{digits}f}"


def accuracy_table(rows: list[dict], where: str) -> str:
    """Table I layout for one evaluation set: method, the paper's abs_rel beside ours, the 7 metrics (mean +- std
    over seeds), the untrained network's abs_rel and whether training beat it by > 2 std (flagged where not)."""
    head = (f"{'method':<44} {'paper (res)':>17} " + " ".join(f"{m:>13}" for m in METRIC_NAMES)
            + f" {'untrained':>13}  {'beats untrained':<16}")
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r["summary"][where]
        paper = r.get("paper")
        paper_s = f"{paper['abs_rel']:.3f} ({paper['resolution']})" if paper else "-"
        if s is None:
            continue
        verdict = s["vs_untrained"]
        flag = "yes" if verdict["beats_untrained"] else "NO  <- flagged"
        flag += "" if verdict["noise_known"] else " (1 seed)"
        lines.append(f"{r['label']:<44} {paper_s:>17} " + " ".join(f"{fmt(s['trained'][m]):>13}" for m in METRIC_NAMES)
                     + f" {fmt(s['untrained']['abs_rel']):>13}  {flag:<16}")
        if "trained_unscaled" in s:
            lines.append(f"{'  (same, unscaled: metres as predicted)':<44} {'':>17} "
                         + " ".join(f"{fmt(s['trained_unscaled'][m]):>13}" for m in METRIC_NAMES)
                         + f" {fmt(s['untrained_unscaled']['abs_rel']):>13}")
    return "\n".join(lines)


def cost_table(rows: list[dict]) -> str:
    head = (f"{'method':<44} {'params M':>9} {'GFLOPs@train':>12} {'GFLOPs@640x192':>14} {'CPU ms':>7} "
            f"{'steps':>11}  network")
    lines = [head, "-" * len(head)]
    for r in rows:
        c = r["complexity"]
        ms = "-" if c["cpu_ms_train_size"] is None else f"{c['cpu_ms_train_size']:.1f}"
        steps = fmt(mean_std([run["steps"] for run in r["runs"]]), 0)
        lines.append(f"{r['label']:<44} {c['params_m']:>9.2f} {c['gflops_train_size']:>12.2f} "
                     f"{c['gflops_640x192']:>14.1f} {ms:>7} {steps:>11}  {r['variant']}")
    return "\n".join(lines)


def ablation_verdict(c: dict) -> str:
    """An ablation against its baseline, in words, from :func:`compare`."""
    return ("n/a: 1 seed, no noise estimate" if not c["noise_known"]
            else "worse" if c["higher"] else "better" if c["lower"] else "within noise")


def ablation_table(baseline: dict, rows: list[dict], where: str) -> str:
    head = (f"{'Monodepth2 variant':<44} {'abs_rel':>13} {'a1':>13} {'vs baseline':>12}  verdict (> 2 std)")
    lines = [head, "-" * len(head)]
    base = [r["trained"][where]["median_scaled"]["abs_rel"] for r in baseline["runs"]]
    for r in [baseline, *rows]:
        s = r["summary"][where]
        if s is None:
            return ""
        vals = [run["trained"][where]["median_scaled"]["abs_rel"] for run in r["runs"]]
        c = compare(vals, base)
        verdict = "-" if r is baseline else ablation_verdict(c)
        label = "baseline (Monodepth2)" if r is baseline else r["label"]
        lines.append(f"{label:<44} {fmt(s['trained']['abs_rel']):>13} {fmt(s['trained']['a1']):>13} "
                     f"{c['diff']:>+12.3f}  {verdict}")
    return "\n".join(lines)


def markdown_table(result: dict) -> str:
    """The summary as a Markdown table (the README's): per system and ablation, the paper's abs_rel, ours (mean +-
    std over seeds) on both evaluation sets with the untrained network's in brackets, seeds, and the verdicts."""
    def cell(summary: dict | None) -> str:
        if summary is None:
            return "-"
        return f"{fmt(summary['trained']['abs_rel'])} ({fmt(summary['untrained']['abs_rel'])})"

    def verdict(summary: dict | None) -> str:
        if summary is None:
            return "-"
        v = summary["vs_untrained"]
        return ("yes" if v["beats_untrained"] else "**no**") + ("" if v["noise_known"] else " (1 seed)")

    lines = ["| system | paper (res) | synthetic abs_rel (untrained) | real drive abs_rel (untrained) | seeds | steps "
             "| beats untrained: synthetic / real |", "|---|---|---|---|---|---|---|"]
    base = result.get("ablation_baseline")
    for r in result["systems"] + [a | {"paper": None} for a in result["ablations"]]:
        paper = r.get("paper")
        label = r["label"] if paper else f"Monodepth2 {r['label']}"
        steps = fmt(mean_std([run["steps"] for run in r["runs"]]), 0)
        if not paper and base is not None:  # an ablation: its verdict is against the Monodepth2 baseline
            marks = []
            for where in EVAL_SETS:
                if r["summary"][where] is None:
                    continue
                c = compare([run["trained"][where]["median_scaled"]["abs_rel"] for run in r["runs"]],
                            [run["trained"][where]["median_scaled"]["abs_rel"] for run in base["runs"]])
                marks.append(ablation_verdict(c))
            verdicts = "vs Monodepth2: " + " / ".join(marks)
        else:
            verdicts = f"{verdict(r['summary']['synthetic'])} / {verdict(r['summary']['real'])}"
        paper_s = f"{paper['abs_rel']:.3f} ({paper['resolution']})" if paper else "-"
        lines.append(f"| {label} | {paper_s} | {cell(r['summary']['synthetic'])} | {cell(r['summary']['real'])} "
                     f"| {len(r['runs'])} | {steps} | {verdicts} |")
    return "\n".join(lines)


def report(result: dict) -> str:
    s = result["settings"]
    seeds = result.get("seeds_run", s["seeds"])
    out = [f"Table I (ours): {s['width']}x{s['height']}, {budget_label(result)} of training per run, "
           f"{seeds} seed(s); mean+-std over seeds (sample std).",
           f"Training data: {result['data']['train']}", result["data"]["real_note"]]
    titles = {"synthetic": f"Held-out synthetic world (seed {HELDOUT_SEED}, {s['heldout_frames']} frames, exact GT, "
                           "80 m, no crop), median-scaled",
              "real": f"Real KITTI raw drive ({result['data'].get('real_frames', 0)} frames, LiDAR GT, Garg crop, "
                      "80 m), median-scaled"}
    for where in EVAL_SETS:
        if all(r["summary"][where] is None for r in result["systems"]):
            continue
        out += ["", titles[where], accuracy_table(result["systems"], where)]
    out += ["", "Cost (depth net; CPU ms = ONNX Runtime, 1 thread, at the training size, on the machine that wrote "
            "the table; steps in the budget):",
            cost_table(result["systems"])]
    if result["ablations"] and result["ablation_baseline"] is None:
        out += ["", "Ablations trained without their Monodepth2 baseline (--skip-baseline): --merge this JSON with "
                "one that has it to compare them."]
    elif result["ablations"]:
        baseline = result["ablation_baseline"]
        for where in EVAL_SETS:
            if baseline["summary"][where] is None:
                continue
            out += ["", f"Monodepth2 ablations, {titles[where]}:",
                    ablation_table(baseline, result["ablations"], where)]
    flagged = [(r["label"], w) for r in result["systems"] for w in EVAL_SETS
               if r["summary"][w] is not None and not r["summary"][w]["vs_untrained"]["beats_untrained"]]
    out += ["", "Flagged (does not beat its untrained network by > 2 std): "
            + ("; ".join(f"{label} on {w}" for label, w in flagged) if flagged else "none")]
    out += ["Paper column: KITTI Eigen test split, monocular, median-scaled, as published (see the JSON for sources);"
            " not comparable to ours in data, size or training time."]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- main

QUICK = {"budget_cpu_s": 1.0, "seeds": 2, "train_frames": 24, "heldout_frames": 6, "latency_runs": 2,
         "real_stride": 13}


def budget_label(result: dict) -> str:
    """"1200 CPU-s (one run at a time, 1 torch thread)" or "100 wall-s on NVIDIA H200 (float16 AMP, ...)"."""
    s = result["settings"]
    if s.get("budget_wall_s") is None:
        return f"{s['budget_cpu_s']:g} CPU-s (one run at a time, {s['threads']} torch thread(s))"
    gpu = result.get("machine", {}).get("gpu") or s["device"]
    return (f"{s['budget_wall_s']:g} wall-s on {gpu} ({'float16 AMP' if s['amp'] else 'float32'}, batch "
            f"{s['batch_size']}, {s['workers']} loader workers; {result.get('parallel_note', 'one run at a time')})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list from {list(SYSTEMS)}")
    ap.add_argument("--ablations", default=",".join(DEFAULT_ABLATIONS),
                    help=f"comma list from {list(ABLATIONS)}, or 'none' (default: the Monodepth2 ideas, "
                    f"{DEFAULT_ABLATIONS}; the others are diagnoses)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 for every trained row (>= 2 for a std)")
    ap.add_argument("--seed-start", type=int, default=0,
                    help="first seed (--seeds N runs seeds S..S+N-1): to split one table over processes")
    ap.add_argument("--budget-cpu-s", type=float, default=1200.0, help="CPU seconds of training per run")
    ap.add_argument("--budget-steps-from", type=Path, default=None,
                    help="a CPU table JSON (the pilot): each training runs for the steps it reached there, in "
                         "float32, so that a GPU repeats the same budget; the settings must match it")
    ap.add_argument("--budget-steps-rate", type=Path, default=None,
                    help="with --budget-steps-from: a shorter CPU table with Monodepth2 and the trainings the "
                         "pilot lacks (their steps = Monodepth2's pilot steps x their measured rate)")
    ap.add_argument("--queue", type=Path, default=None,
                    help="a folder of jobs (todo/*.json: {\"recipe\": name or ablation:name, \"seed\": n}); "
                         "this process claims them one at a time (several processes may share it) instead of "
                         "running --systems/--ablations x --seeds, and rewrites --out after each run")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda[:N]: train and evaluate on a GPU")
    ap.add_argument("--budget-wall-s", type=float, default=None,
                    help="wall seconds of training per run (the budget with --device cuda, required there)")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="float16 autocast + grad scaler on CUDA (default: on with cuda)")
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="start no run that would end later than this many wall seconds after the process started "
                         "(judged by the budget and the slowest evaluation so far); the JSON lists what was skipped")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (0 on the CPU: loading counts)")
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--train-frames", type=int, default=600, help="synthetic training frames")
    ap.add_argument("--heldout-frames", type=int, default=60)
    ap.add_argument("--real-data", type=Path, default=DEFAULT_REAL,
                    help="folder with kitti_raw/ and kitti_odometry/ (absent: synthetic only)")
    ap.add_argument("--real-staged", type=Path, default=None,
                    help="the raw drive's frames as real_data.save_staged_frames wrote them (a machine without "
                         "the drive); needs --odom-root for the training frames")
    ap.add_argument("--odom-root", type=Path, default=None,
                    help="KITTI odometry root (holding sequences/) instead of --real-data's kitti_odometry")
    ap.add_argument("--real-stride", type=int, default=2, help="every n-th frame of the raw drive is scored")
    ap.add_argument("--latency-runs", type=int, default=20, help="ONNX Runtime runs per network (0: no latency)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    ap.add_argument("--quick", action="store_true",
                    help=f"a smoke run: defaults become {QUICK} (flags given explicitly still win)")
    ap.add_argument("--skip-baseline", action="store_true",
                    help="train the --ablations without the Monodepth2 baseline, whose runs another process's JSON "
                    "holds (join them with --merge)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="no training: join the runs of these table1 JSONs (same settings, e.g. one per process "
                         "or seed range) into one table, complexity measured here")
    ap.add_argument("--parallel-note", default=None,
                    help="what else shared the machine during the runs (recorded; the default says one at a time)")
    ap.add_argument("--markdown", action="store_true", help="also print the summary as a Markdown table")
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.quick:  # parse again with the quick defaults, so that flags given explicitly still win
        ap.set_defaults(**QUICK)
        args = ap.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s.strip()]
    args.ablations = [] if args.ablations.strip() in ("", "none") else [a for a in args.ablations.split(",") if a]
    for given, known, what in ((args.systems, SYSTEMS, "systems"), (args.ablations, ABLATIONS, "ablations")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            ap.error(f"unknown {what} {unknown}; choose from {list(known)}")
    if args.seeds < 1 or args.seed_start < 0:
        ap.error("--seeds must be >= 1 and --seed-start >= 0")
    if args.workers < 0:
        ap.error("--workers must be >= 0")
    args.steps_by_key = None
    if args.budget_steps_from is not None:
        steps_budget(ap, args)
    if args.device != "cpu":
        if not args.device.startswith("cuda"):
            ap.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
        if not torch.cuda.is_available():
            ap.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
        if args.steps_by_key is None and (args.budget_wall_s is None or args.budget_wall_s <= 0):
            ap.error("--device cuda needs --budget-wall-s > 0 or --budget-steps-from (CPU seconds do not measure "
                     "GPU work)")
    elif args.budget_wall_s is not None and args.budget_wall_s <= 0:
        ap.error("--budget-wall-s must be > 0")
    args.amp = (args.device != "cpu") if args.amp is None else bool(args.amp and args.device != "cpu")
    if args.steps_by_key is not None:
        args.amp = False  # the pilot's trainings were float32
    if args.real_staged is not None and args.odom_root is None:
        ap.error("--real-staged needs --odom-root (the training frames)")
    return args


# What must match between a step-budget run and the pilot it repeats.
STEP_BUDGET_SAME = ("height", "width", "batch_size", "lr", "train_frames", "heldout_frames", "real_stride")


def steps_budget(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--budget-steps-from``: read the pilot (and rate) tables into ``args.steps_by_key``; the budget is then
    the pilot's CPU seconds, counted in the steps they bought."""
    if args.budget_wall_s is not None or args.amp:
        ap.error("--budget-steps-from repeats float32 CPU trainings: no --budget-wall-s, no --amp")
    try:
        pilot = json.loads(args.budget_steps_from.read_text())
        rate = json.loads(args.budget_steps_rate.read_text()) if args.budget_steps_rate else None
        args.steps_by_key = budget_steps_table(pilot, rate)
    except (OSError, ValueError, KeyError, TypeError) as e:
        ap.error(f"--budget-steps-from: cannot read a step budget: {e}")
    for ref, name in ((pilot, args.budget_steps_from), (rate, args.budget_steps_rate)):
        if ref is None:
            continue
        diff = {k: (ref["settings"].get(k), getattr(args, k)) for k in STEP_BUDGET_SAME
                if ref["settings"].get(k) != getattr(args, k)}
        if diff:
            ap.error(f"--budget-steps-from: {name} ran with other settings (theirs, these): {diff}")
        if ref["settings"].get("budget_wall_s") is not None:
            ap.error(f"--budget-steps-from: {name} is not a CPU-seconds table")
    args.budget_cpu_s = float(pilot["settings"]["budget_cpu_s"])


def recipes_of(args: argparse.Namespace) -> tuple[list[Recipe], list[Recipe], dict[str, Recipe]]:
    """(systems, ablations, the unique trainings by key: a system and an ablation training the same recipe share)."""
    systems = [SYSTEMS[s] for s in args.systems]
    ablations = [ablation_recipe(a) for a in args.ablations]
    unique: dict[str, Recipe] = {}
    baseline = [SYSTEMS["monodepth2"]] if ablations and not args.skip_baseline else []
    for r in systems + baseline + ablations:
        unique.setdefault(r.key(), r)  # the first name wins: FeatDepth before "+ feature-metric"
    return systems, ablations, unique


def machine_info(args: argparse.Namespace) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "torch_threads": args.threads,
            "torch": torch.__version__}
    if args.device != "cpu":
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
        info["cuda"] = torch.version.cuda
    return info


def build_result(args: argparse.Namespace, runs_by_key: dict[str, list[dict]], data: dict, machine: dict,
                 wall_s: float, **extra) -> dict:
    """The JSON of one table: rows of every requested system and ablation from ``runs_by_key``."""
    systems, ablations, _ = recipes_of(args)
    # Rows only for trainings that ran (a deadline may have skipped some); ablations need their baseline.
    systems = [r for r in systems if runs_by_key.get(r.key())]
    has_baseline = bool(runs_by_key.get(SYSTEMS["monodepth2"].key()))
    ablations = [r for r in ablations
                 if runs_by_key.get(r.key()) and (has_baseline or args.skip_baseline)]
    measured: dict = {}

    def row(recipe: Recipe, with_paper: bool) -> dict:
        runs = sorted(runs_by_key[recipe.key()], key=lambda r: r["seed"])
        out = recipe_fields(recipe) | {"runs": runs, "summary": summarize_runs(runs)}
        if with_paper:
            abs_rel, res, source = PAPER[recipe.name]
            out["paper"] = {"abs_rel": abs_rel, "resolution": res, "source": source}
            out["complexity"] = complexity(recipe, args, measured)
        return out

    if args.steps_by_key is not None:
        rule = (f"every (system, seed) trains for exactly the steps that {args.budget_cpu_s:g} CPU-s (one run at a "
                f"time, 1 torch thread) bought the same training in {Path(args.budget_steps_from).name} "
                f"(step_budget), in float32 on {machine.get('gpu', args.device)}")
    elif args.budget_wall_s is None:
        rule = (f"every (system, seed) trains in this one process, one after another, with {args.threads} torch "
                f"thread(s), until the training loop has used {args.budget_cpu_s:g} process CPU-seconds (data "
                "loading included; evaluation and set-up excluded)")
    else:
        rule = (f"every (system, seed) trains until {args.budget_wall_s:g} wall-seconds have passed in its training "
                f"loop, on {machine.get('gpu', args.device)} with float16 AMP={args.amp}, batch {args.batch_size}, "
                f"{args.workers} loader workers per process (evaluation and set-up excluded)")
    stepped = [r for runs in runs_by_key.values() for r in runs if r.get("budget_kind") == "steps"]
    if stepped and args.steps_by_key is None:
        devices = sorted({r.get("device", "cpu") for r in stepped})
        rule += (f"; {len(stepped)} run(s) ({', '.join(devices)}, float32) instead trained for exactly the steps "
                 f"that budget bought the same training on the CPU (step_budget)")
    seeds_run = sorted({r["seed"] for runs in runs_by_key.values() for r in runs})
    step_budget = {v["name"]: {"steps": v["steps"], "how": v["how"]} for v in (args.steps_by_key or {}).values()}
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "steps_by_key"},
        **({"step_budget": step_budget} if step_budget else {}),
        "budget_rule": rule,
        "seeds_run": len(seeds_run),
        "data": data,
        "systems": [row(r, True) for r in systems],
        "ablation_baseline": row(SYSTEMS["monodepth2"], False) if ablations and has_baseline else None,
        "ablations": [row(r, False) | {"ablation": r.name.split(":", 1)[1]} for r in ablations],
        "wall_s": wall_s,
        **extra,
    }


def merge(args: argparse.Namespace) -> dict:
    """One table from the JSONs of several processes (``--merge``): their runs joined per training; the settings
    that change the trainings must agree. Complexity (params, GFLOPs, CPU ms) is measured here."""
    parts = [json.loads(Path(p).read_text()) for p in args.merge]
    # Not the device: a step-budget part (--budget-steps-from) repeats the CPU's trainings on a GPU, in float32.
    same = ("height", "width", "batch_size", "lr", "train_frames", "heldout_frames", "budget_cpu_s",
            "budget_wall_s", "amp", "workers", "real_stride")
    # Tables written before the GPU mode existed have no device/amp/workers: they ran on the CPU, without either.
    cpu_defaults = {"device": "cpu", "amp": False, "workers": 0}
    for part in parts:
        part["settings"] = {**part["settings"],
                            **{k: v for k, v in cpu_defaults.items() if part["settings"].get(k) is None}}
    first = parts[0]["settings"]
    for path, part in zip(args.merge, parts):
        diff = {k: (first.get(k), part["settings"].get(k)) for k in same if part["settings"].get(k) != first.get(k)}
        if diff:
            raise SystemExit(f"table1 --merge: {path} was run with other settings: {diff}")
    runs_by_key: dict[str, list[dict]] = {}
    systems, ablations = [], []
    step_budget: dict = {}
    for part in parts:
        step_budget.update(part.get("step_budget", {}))
        for (key, seed), (_, run) in table_trainings(part).items():
            runs = runs_by_key.setdefault(key, [])
            if all(r["seed"] != seed for r in runs):  # an earlier part has this training: keep that one
                runs.append(run)
        systems += [r["name"] for r in part["systems"] if r["name"] not in systems]
        ablations += [r["ablation"] for r in part["ablations"] if r["ablation"] not in ablations]
    defaults = vars(build_parser().parse_args([]))  # keys added to the settings after a part was written
    merged = argparse.Namespace(**{**defaults, **first, "systems": [s for s in SYSTEMS if s in systems],
                                   # every ablation a part listed, or whose training ran under another name
                                   "ablations": [a for a in ABLATIONS
                                                 if a in ablations or runs_by_key.get(ablation_recipe(a).key())],
                                   "skip_baseline": False, "steps_by_key": None,
                                   "latency_runs": args.latency_runs, "merge": [str(p) for p in args.merge]})
    data = dict(parts[0]["data"])
    machine = dict(parts[0]["machine"])
    machine["merged_on"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    wall = max(p["wall_s"] for p in parts)
    extra = {k: parts[0][k] for k in ("parallel_note",) if parts[0].get(k)}
    if args.parallel_note:
        extra["parallel_note"] = args.parallel_note
    extra["skipped"] = [s for p in parts for s in p.get("skipped", [])]
    if step_budget:
        extra["step_budget"] = step_budget
    machine["parts"] = [{"file": str(path), "device": part["settings"].get("device", "cpu"),
                         "gpu": part["machine"].get("gpu"), "torch": part["machine"].get("torch")}
                        for path, part in zip(args.merge, parts)]
    return build_result(merged, runs_by_key, data, machine, wall, **extra)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        result = merge(args)
    else:
        result = train_table(args)
    print("\n" + report(result))
    if args.markdown:
        print("\n" + markdown_table(result))
    save_result(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


def save_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(result, indent=2, default=list).encode())


def recipe_named(name: str) -> Recipe:
    """A system by name, or an ablation as ``ablation:<name>`` (a queue job's ``recipe``)."""
    if name.startswith("ablation:") and name.split(":", 1)[1] in ABLATIONS:
        return ablation_recipe(name.split(":", 1)[1])
    if name in SYSTEMS:
        return SYSTEMS[name]
    raise ValueError(f"unknown recipe {name!r}: a system of {list(SYSTEMS)} or ablation:<one of {list(ABLATIONS)}>")


def write_queue(folder: Path, jobs: Sequence[tuple[str, int]]) -> None:
    """Jobs ``(recipe name, seed)`` as ``folder/todo/NNN.json``, claimed in this order (:func:`claim_jobs`)."""
    for name, _ in jobs:
        recipe_named(name)  # fail here, not on the device
    todo = folder / "todo"
    todo.mkdir(parents=True, exist_ok=True)
    for i, (name, seed) in enumerate(jobs):
        (todo / f"{i:03d}.json").write_text(json.dumps({"recipe": name, "seed": int(seed)}))


def claim_jobs(folder: Path, worker: str):
    """Yield ``(recipe, seed)`` jobs from ``folder/todo``, each claimed by one process: the claim is an atomic
    rename into ``folder/claimed`` that only one of the processes racing for a file can win."""
    claimed = folder / "claimed"
    claimed.mkdir(parents=True, exist_ok=True)
    while True:
        for path in sorted((folder / "todo").glob("*.json")):
            target = claimed / f"{path.stem}.{worker}.json"
            try:
                os.rename(path, target)
            except FileNotFoundError:  # another process won it
                continue
            job = json.loads(target.read_text())
            yield recipe_named(job["recipe"]), int(job["seed"])
            break
        else:
            return


def train_table(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    if args.real_staged is not None:
        raw_root, odom_root = None, args.odom_root
        real_note = (f"real data staged: KITTI odometry {ODOM_SEQUENCE} frames {ODOM_TRAIN_FRAMES[0]}-"
                     f"{ODOM_TRAIN_FRAMES[1]} from {args.odom_root} in training, raw drive {RAW_DRIVE} evaluated "
                     f"from {args.real_staged.name} (frames pre-shrunk to the network size as the backend would)")
    else:
        raw_root, odom_root, real_note = real_roots(args.real_data)
        if args.odom_root is not None:
            odom_root = args.odom_root
    _, _, unique = recipes_of(args)
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    if args.steps_by_key is not None:
        budget = f"the steps {args.budget_cpu_s:g} CPU-s bought each in {args.budget_steps_from.name}"
    else:
        budget = f"{args.budget_cpu_s:g} CPU-s" if args.budget_wall_s is None else f"{args.budget_wall_s:g} wall-s"
    what = (f"jobs from {args.queue}" if args.queue is not None
            else f"{len(unique)} trainings x {args.seeds} seed(s)")
    print(f"{what} x {budget}, plus evaluation. " + real_note, flush=True)

    t0 = time.perf_counter()
    # With loader workers (the GPU runs) every synthetic frame is rendered once, before the workers fork.
    train = training_set(args.height, args.width, args.train_frames, odom_root,
                         cache_all=args.device != "cpu" or args.workers > 0)
    heldout = SyntheticDataset(args.height, args.width, num_frames=args.heldout_frames, seed=HELDOUT_SEED,
                               world=WORLD, load_depth_gt=True)
    if args.real_staged is not None:  # staged with its own stride (gpu_session.py prepare), not --real-stride
        real_frames = load_staged_frames(args.real_staged)
    else:
        real_frames = load_raw_frames(raw_root, stride=args.real_stride)[0] if raw_root is not None else None
    print(f"set-up {time.perf_counter() - t0:.0f} s: {len(train)} training samples", flush=True)
    data = {"train": f"synthetic world seed 0 ({args.train_frames} frames, {WORLD})"
                     + (f" + KITTI odometry {ODOM_SEQUENCE} frames {ODOM_TRAIN_FRAMES[0]}-"
                        f"{ODOM_TRAIN_FRAMES[1]} (grey camera 0)" if odom_root is not None else ""),
            "train_samples": len(train), "real_used": real_frames is not None, "real_note": real_note,
            "real_frames": len(real_frames) if real_frames is not None else 0}
    extra = {"parallel_note": args.parallel_note} if args.parallel_note else {}
    if args.queue is not None:
        # The rows are whatever this process claims; an ablation's baseline may run in another process.
        args.systems, args.ablations, args.skip_baseline = [], [], True
        jobs = claim_jobs(args.queue, f"{platform.node()}-{os.getpid()}")
    else:
        jobs = ((recipe, seed) for recipe in unique.values() for seed in seeds)
    runs_by_key: dict[str, list[dict]] = {}
    skipped: list[dict] = []
    extra_s: list[float] = []  # each run's wall time beyond its training (evaluation, loader start)
    run_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(args, train, heldout, real_frames, Path(tmp))
        for recipe, seed in jobs:
            elapsed = time.perf_counter() - t0
            reserve = max(extra_s) if extra_s else 30.0  # evaluation after the training
            # A CPU-seconds budget takes at least as many wall seconds.
            budget_s = args.budget_wall_s or (args.budget_cpu_s if args.steps_by_key is None else 0.0)
            need = budget_s + reserve
            if args.queue is not None and run_s:  # step budgets: this process's runs so far say how long one takes
                need = max(need, 0.8 * float(np.mean(run_s)))
            if args.deadline_s is not None and elapsed + need > args.deadline_s:
                skipped.append({"recipe": recipe.name, "seed": seed, "elapsed_s": round(elapsed, 1),
                                "needed_s": round(need, 1)})
                print(f"  {recipe.label} seed {seed}: skipped, {elapsed:.0f} s + ~{need:.0f} s would pass the "
                      f"{args.deadline_s:g} s deadline", flush=True)
                if args.queue is not None:
                    break  # a claimed job that does not fit: stop claiming
                continue
            t_run = time.perf_counter()
            deadline = None if args.deadline_s is None else t0 + args.deadline_s - reserve
            try:
                run = run_one(recipe, seed, ctx, deadline=deadline)
            except DeadlineReached as e:
                skipped.append({"recipe": recipe.name, "seed": seed, "elapsed_s": round(elapsed, 1),
                                "abandoned": str(e)})
                print(f"  {recipe.label} seed {seed}: abandoned, {e}", flush=True)
                break
            run_s.append(time.perf_counter() - t_run)
            extra_s.append(run_s[-1] - run["wall_s"])
            runs_by_key.setdefault(recipe.key(), []).append(run)
            if args.queue is not None:
                group = args.ablations if recipe.name.startswith("ablation:") else args.systems
                name = recipe.name.split(":", 1)[-1]
                if name not in group:
                    group.append(name)
            syn = run["trained"]["synthetic"]["median_scaled"]["abs_rel"]
            real = run["trained"]["real"]
            print(f"  {recipe.label} seed {seed}: {run['steps']} steps in {run['cpu_s']} CPU-s / "
                  f"{run['wall_s']} wall-s; abs_rel synthetic {syn:.3f} (untrained "
                  f"{run['untrained']['synthetic']['median_scaled']['abs_rel']:.3f})"
                  + (f", real {real['median_scaled']['abs_rel']:.3f}" if real else ""), flush=True)
            if args.queue is not None:  # what finished survives a kill at the device call's limit
                save_result(args.out, build_result(args, runs_by_key, data, machine_info(args),
                                                   round(time.perf_counter() - t0, 1), skipped=skipped, **extra))
    return build_result(args, runs_by_key, data, machine_info(args), round(time.perf_counter() - t0, 1),
                        skipped=skipped, **extra)


if __name__ == "__main__":
    sys.exit(main())
