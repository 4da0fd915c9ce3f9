"""Fit a depth network's validity head (sky vs surface) with its trunk frozen: ``monodepth-fit-validity``.

    monodepth-fit-validity --model runs/x/bundles/last.safetensors --out runs/x/bundles/last_valid.safetensors \
        [--config config/train/x.yaml] [--steps 2500] [--report runs/x/validity.json]

What the head learns from (:func:`fit_validity_head`):
- **the synthetic world's sky**, exact labels for free (depth = inf), from several worlds, with the brightness of
  each frame scaled by up to 2.2x and clipped, so an over-exposed sky and an over-exposed wall both occur and
  "bright" alone does not mean "sky";
- **the camera's own frames** (``--config``: the training config's ``data.train``, the frames the depth net learnt
  from), where only the rows well below the horizon are labelled, as surfaces: a level camera never sees sky
  there. They show the head the real camera's road, grass and car roofs as surfaces (the only real-world labels
  it gets; their effect alone was not measured). Surface pixels weigh ``surface_weight`` times a sky pixel,
  because deleting a surface is worse than a phantom wall (weight 1 behaves like a higher threshold: held-out
  synthetic recall 0.74 instead of 0.54, surfaces lost 0.04 % instead of 0.01 %).

Nothing else changes: the trunk's weights (and so the published depth) are exactly those of the input bundle.
The held-out synthetic world (seed 1000) gives the report: sky recall and precision, and the share of surfaces
marked invalid, at the node's default threshold (:func:`monodepth_ros.evaluation.validity.sky_scores`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from monodepth_training.bundle_io import load_bundle, save_bundle
from monodepth_training.networks.validity import VALID_KEY, has_validity_head, validity_head_of
from torch import nn

from monodepth_ros.bundle import BundleError, atomic_write_bytes
from monodepth_ros.cli_common import EXIT_OK, CliParser, fail, run_guarded
from monodepth_ros.evaluation.validity import sky_scores

HELDOUT_SEED = 1000


@dataclass(frozen=True)
class ValidityFitConfig:
    """Settings of :func:`fit_validity_head` (the defaults made the shipped default model's head)."""

    steps: int = 2500
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    synthetic_seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    synthetic_frames: int = 50  # per world, every ``synthetic_stride``-th frame
    synthetic_stride: int = 8
    jittered_copies: int = 2  # brightness-scaled copies of each synthetic frame, besides the original
    brightness: tuple[float, float] = (0.6, 2.2)  # log-uniform factor, then clipped to [0, 1]
    camera_frames: int = 350  # at most this many frames of the camera's own source (evenly spread)
    horizon_margin: float = 0.06  # rows below cy + margin * H are surfaces on the camera's own frames
    surface_weight: float = 2.0
    threshold: float = 0.5  # the node's default validity_threshold: the report is at this threshold
    heldout_frames: int = 40

    def validate(self) -> ValidityFitConfig:
        for name in ("steps", "batch_size", "synthetic_frames", "synthetic_stride", "heldout_frames"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.jittered_copies < 0 or self.camera_frames < 0:
            raise ValueError("jittered_copies and camera_frames must be >= 0")
        if not self.synthetic_seeds or HELDOUT_SEED in self.synthetic_seeds:
            raise ValueError(f"synthetic_seeds must be non-empty and exclude the held-out seed {HELDOUT_SEED}")
        if not (self.lr > 0 and 0 < self.brightness[0] <= self.brightness[1]):
            raise ValueError("lr must be positive and brightness a (low, high) range of positive factors")
        if not 0.0 < self.threshold < 1.0 or self.surface_weight <= 0 or not 0 <= self.horizon_margin < 0.5:
            raise ValueError("need 0 < threshold < 1, surface_weight > 0 and 0 <= horizon_margin < 0.5")
        return self


# ---------------------------------------------------------------------------------------------------------------
# Labelled frames


def synthetic_sky_frames(height: int, width: int, seeds: Sequence[int], frames_per_world: int, stride: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Frames of synthetic worlds with their exact sky: rgb (N, H, W, 3) uint8 and sky (N, H, W) bool (depth inf).
    N = len(seeds) * frames_per_world: frames 0, stride, 2 * stride ... of each world."""
    from monodepth_ros.synthetic import SynthConfig, SyntheticWorld

    rgbs, labels = [], []
    for seed in seeds:
        world = SyntheticWorld(SynthConfig(width=width, height=height, seed=int(seed)))
        for i in range(0, frames_per_world * stride, stride):
            frame = world.render(i)
            rgbs.append(frame.rgb)
            labels.append(~np.isfinite(frame.depth_m))
    return np.stack(rgbs), np.stack(labels)


def below_horizon_labels(cy: float, height: int, width: int, margin: float) -> np.ndarray:
    """Weak validity targets (height, width) float32 for a level camera whose principal point row is ``cy`` (pixels,
    at that size): 1 (surface) on rows below ``cy + margin * height``, -1 (unlabelled) above."""
    labels = np.full((height, width), -1.0, np.float32)
    first = int(math.ceil(float(cy) + margin * height))
    labels[max(first, 0):] = 1.0
    return labels


def camera_frames(spec: dict, height: int, width: int, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_frames`` frames (evenly spread) of a training source ``spec`` (a config's ``data.train``) at
    height x width: rgb (N, H, W, 3) uint8 and each frame's principal point row cy (N,) in pixels."""
    from monodepth_training.datasets import build_dataset

    ds = build_dataset(spec, height=height, width=width, frame_offsets=(0,), augment=False)
    n = len(ds)
    if n == 0 or max_frames == 0:
        return np.zeros((0, height, width, 3), np.uint8), np.zeros((0,), np.float32)
    picks = np.unique(np.linspace(0, n - 1, min(max_frames, n)).round().astype(int))
    rgbs, cys = [], []
    for i in picks:
        sample = ds[int(i)]
        rgbs.append((sample["color"][0].permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8))
        cys.append(float(sample["K"][1, 2]))
    return np.stack(rgbs), np.asarray(cys, np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Fitting


def _to_input(rgb: np.ndarray, gain: np.ndarray | None = None) -> torch.Tensor:
    """rgb (N, H, W, 3) uint8 [, gain (N,)] -> network input (N, 3, H, W) float32 in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0
    if gain is not None:
        x = (x * torch.from_numpy(gain.astype(np.float32))[:, None, None, None]).clamp_(0.0, 1.0)
    return x


def head_features(depth_net: nn.Module, x: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Input (N, 3, H, W) -> the feature the validity head reads (N, C, h, w), trunk in eval mode, no grad."""
    head = validity_head_of(depth_net)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    try:
        with torch.inference_mode():
            for i in range(0, x.shape[0], chunk):
                depth_net(x[i:i + chunk])
    finally:
        hook.remove()
    return torch.cat(captured).clone()


def fit_validity_head(depth_net: nn.Module, synth_rgb: np.ndarray, synth_sky: np.ndarray, cam_rgb: np.ndarray,
                      cam_labels: np.ndarray, cfg: ValidityFitConfig,
                      log: Callable[[str], None] = print) -> list[float]:
    """Train ``depth_net``'s validity head in place; every other weight stays as it is (checked).

    synth_rgb (Ns, H, W, 3) uint8 with synth_sky (Ns, H, W) bool; cam_rgb (Nc, H, W, 3) uint8 with cam_labels
    (Nc, H, W) float32 validity targets (1 surface, -1 unlabelled; Nc may be 0). The head's target is the validity:
    1 on surfaces, 0 on the sky. The trunk's features are computed once (each synthetic frame plus
    ``cfg.jittered_copies`` brightness-scaled copies); the head then trains on random batches with a BCE on its
    logits, surfaces weighted ``cfg.surface_weight``. Returns the loss of every 100th step.
    """
    cfg.validate()
    head = validity_head_of(depth_net)
    depth_net.eval()
    trunk_before = {k: v.clone() for k, v in depth_net.state_dict().items() if not k.startswith("decoder.validity.")}
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    feats, labels = [], []
    lo, hi = np.log(cfg.brightness[0]), np.log(cfg.brightness[1])
    for copy_i in range(1 + cfg.jittered_copies):
        gain = None if copy_i == 0 else np.exp(rng.uniform(lo, hi, len(synth_rgb)))
        feats.append(head_features(depth_net, _to_input(synth_rgb, gain)))
        labels.append(torch.from_numpy((~np.asarray(synth_sky, bool)).astype(np.float32)))
    if len(cam_rgb):
        feats.append(head_features(depth_net, _to_input(cam_rgb)))
        labels.append(torch.from_numpy(cam_labels))
    X, Y = torch.cat(feats), torch.cat(labels)
    log(f"validity head: {len(X)} labelled frames ({len(synth_rgb)} synthetic x {1 + cfg.jittered_copies}, "
        f"{len(cam_rgb)} of the camera's own), features in {time.time() - t0:.0f} s")
    for p in depth_net.parameters():
        p.requires_grad_(False)
    params = list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    head.train()
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    history = []
    for step in range(cfg.steps):
        idx = torch.from_numpy(rng.integers(0, len(X), cfg.batch_size))
        logits = head.forward_logits(X[idx])[:, 0]
        y = Y[idx]
        m = y >= 0
        w = torch.where(y[m] > 0.5, cfg.surface_weight, 1.0)
        loss = nn.functional.binary_cross_entropy_with_logits(logits[m], y[m], weight=w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            history.append(round(float(loss.detach()), 5))
    head.eval()
    for p in depth_net.parameters():
        p.requires_grad_(True)
    after = depth_net.state_dict()
    changed = [k for k, v in trunk_before.items() if not torch.equal(v, after[k])]
    if changed:  # BatchNorm running stats would move in train mode: the trunk must stay in eval mode
        raise RuntimeError(f"fitting the validity head changed trunk weights {changed[:5]}")
    log(f"validity head: {cfg.steps} steps in {time.time() - t0:.0f} s, loss {history[0]} -> {history[-1]}")
    return history


def heldout_validity(depth_net: nn.Module, height: int, width: int, n_frames: int, threshold: float,
                     seed: int = HELDOUT_SEED) -> dict:
    """:func:`sky_scores` of the network's ``("valid", 0)`` on ``n_frames`` of a held-out synthetic world."""
    rgb, sky = synthetic_sky_frames(height, width, [seed], n_frames, 5)
    with torch.inference_mode():
        prob = torch.cat([depth_net(_to_input(rgb[i:i + 16]))[VALID_KEY] for i in range(0, len(rgb), 16)])
    return sky_scores(prob[:, 0].numpy(), sky, threshold)


def add_validity_head(bundle: Path, out: Path, spec: dict | None, cfg: ValidityFitConfig,
                      log: Callable[[str], None] = print) -> dict:
    """Load ``bundle``, give its depth network a fitted validity head, write ``out`` (the pose network and every
    trunk weight unchanged). ``spec``: the camera's own training source (None: synthetic only). Returns the
    report (config, held-out scores, loss history)."""
    from monodepth_training.networks.registry import build_depth_net

    src, pose_net, meta = load_bundle(bundle)
    kwargs = {**meta.depth_kwargs, "validity_head": True}
    try:
        depth_net = build_depth_net(meta.depth_net, **kwargs)
    except TypeError as e:
        raise BundleError(f"depth network {meta.depth_net!r} cannot take a validity head: {e}") from None
    validity_head_of(depth_net)  # a clear error for an architecture without support
    missing = depth_net.load_state_dict(src.state_dict(), strict=False)
    if missing.unexpected_keys or any(not k.startswith("decoder.validity.") for k in missing.missing_keys):
        raise BundleError(f"{bundle}: weights do not fit {meta.depth_net!r}: {missing}")
    if has_validity_head(src):
        log(f"{bundle} already has a validity head: it is fitted again")
    synth_rgb, synth_sky = synthetic_sky_frames(meta.height, meta.width, cfg.synthetic_seeds, cfg.synthetic_frames,
                                                cfg.synthetic_stride)
    cam_rgb = np.zeros((0, meta.height, meta.width, 3), np.uint8)
    cam_labels = np.zeros((0, meta.height, meta.width), np.float32)
    if spec is not None and cfg.camera_frames > 0:
        cam_rgb, cys = camera_frames(spec, meta.height, meta.width, cfg.camera_frames)
        if len(cam_rgb):
            cam_labels = np.stack([below_horizon_labels(cy, meta.height, meta.width, cfg.horizon_margin)
                                   for cy in cys])
    history = fit_validity_head(depth_net, synth_rgb, synth_sky, cam_rgb, cam_labels, cfg, log)
    scores = heldout_validity(depth_net, meta.height, meta.width, cfg.heldout_frames, cfg.threshold)
    out_meta = copy.deepcopy(meta)
    out_meta.depth_kwargs = kwargs
    save_bundle(out, depth_net, out_meta, pose_net)
    report = {"bundle": str(bundle), "out": str(out), "config": asdict(cfg), "camera_frames": int(len(cam_rgb)),
              "heldout_synthetic": scores, "loss_every_100_steps": history}
    log(f"held-out synthetic world (seed {HELDOUT_SEED}, {cfg.heldout_frames} frames, threshold {cfg.threshold}): "
        f"sky recall {scores['recall']:.3f}, precision {scores['precision']:.3f}, "
        f"surfaces marked invalid {100 * scores['surface_invalid']:.2f} %")
    return report


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _train_source(config: Path) -> dict:
    import yaml

    try:
        cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
        spec = cfg["data"]["train"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise ValueError(f"--config {config}: cannot read data.train from it ({e})") from None
    if not isinstance(spec, dict) or "source" not in spec:
        raise ValueError(f"--config {config}: data.train must be a source spec with a 'source' key")
    return spec


PROG = "monodepth-fit-validity"


def build_parser() -> CliParser:
    d = ValidityFitConfig()
    p = CliParser(PROG, __doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path, help="input bundle (.safetensors)")
    p.add_argument("--out", required=True, type=Path, help="output bundle (.safetensors), written atomically")
    p.add_argument("--config", type=Path, default=None,
                   help="a training config whose data.train is the camera's own frames (unset: synthetic only)")
    p.add_argument("--steps", type=int, default=d.steps, help="head training steps")
    p.add_argument("--camera-frames", type=int, default=d.camera_frames,
                   help="at most this many of the camera's own frames")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--report", type=Path, default=None, help="write the report as JSON here")
    return p


def _fit(args: argparse.Namespace) -> int:
    if args.threads < 1:
        return fail(PROG, "--threads must be >= 1")
    if args.model.suffix != ".safetensors" or args.out.suffix != ".safetensors":
        return fail(PROG, "--model and --out must be .safetensors bundles")
    torch.set_num_threads(args.threads)
    cfg = ValidityFitConfig(steps=args.steps, camera_frames=args.camera_frames).validate()
    spec = _train_source(args.config) if args.config is not None else None
    report = add_validity_head(args.model, args.out, spec, cfg)
    if args.report is not None:
        atomic_write_bytes(args.report, (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {args.out}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(PROG, lambda: _fit(args), bad_input=(ValueError, BundleError, FileNotFoundError))


__all__ = ["ValidityFitConfig", "add_validity_head", "below_horizon_labels", "camera_frames", "fit_validity_head",
           "head_features", "heldout_validity", "synthetic_sky_frames", "main"]
