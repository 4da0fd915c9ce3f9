"""One replay run from start to report: open the bag, check its topics, run a mode (in-process or through the
node), score, and write the report files."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict
from pathlib import Path

from monodepth_ros import __version__
from monodepth_ros.bag.msgtypes import CAMERA_INFO_TYPE, COMPRESSED_TYPE, IMAGE_TYPE, POINTCLOUD2_TYPE
from monodepth_ros.bag.reader import BagReader
from monodepth_ros.bag.writer import OutputBagWriter
from monodepth_ros.evaluation.metrics import METRIC_NAMES
from monodepth_ros.replay.config import (
    PROG,
    ReplayConfig,
    ReplayError,
    ReplayRun,
    gt_source,
    model_info,
    node_parameters,
    output_bag_topics,
    output_topics,
    resolve_model,
)
from monodepth_ros.replay.in_process import run_in_process
from monodepth_ros.replay.report import plot_per_frame, write_html, write_json
from monodepth_ros.replay.scoring import Scorer
from monodepth_ros.replay.through_node import run_through_node

__all__ = ["run_replay", "recorded_topics"]


def recorded_topics(cfg: ReplayConfig, gt, image_type: str) -> dict[str, str]:
    """The output bag's topics ``{name: type}``: the inputs, the GT, and the node outputs in ``cfg.record``."""
    out = output_topics(cfg.image_topic)
    skipped = {out[k] for k in out if k != "ns" and k not in cfg.record}
    return {t: typ for t, typ in output_bag_topics(cfg, gt, image_type).items() if t not in skipped}


def run_replay(cfg: ReplayConfig) -> dict:
    """Run one replay; returns the report dict (also written to ``cfg.out_dir/report.json``).

    Raises BagError (unusable bag, missing topic), ReplayError (model, node) or ValueError (bad settings).
    """
    cfg.validate()
    cfg.out_dir = Path(cfg.out_dir)
    model_path = resolve_model(cfg.model)
    try:
        info = model_info(model_path)
    except ReplayError:
        raise
    except Exception as e:  # noqa: BLE001 - ModelLoadError and friends: one clear line
        raise ReplayError(f"cannot use model {model_path}: {e}") from None
    gt = gt_source(cfg)

    with BagReader(cfg.bag) as bag:
        img_t = bag.require_topic(cfg.image_topic, (IMAGE_TYPE, COMPRESSED_TYPE), "image")
        compressed = img_t.msgtype == COMPRESSED_TYPE
        bag.require_topic(cfg.camera_info_topic, (CAMERA_INFO_TYPE,), "camera_info")
        if gt is not None:
            bag.require_topic(gt.topic, (IMAGE_TYPE,) if gt.kind == "depth" else (POINTCLOUD2_TYPE,),
                              "depth GT" if gt.kind == "depth" else "lidar")
        if cfg.through_node and compressed and not cfg.image_topic.endswith("/compressed"):
            raise ReplayError(f"--through-node: the CompressedImage topic {cfg.image_topic} must be named "
                              "<image>/compressed (image_transport naming) for the node to subscribe to it")
        params = node_parameters(cfg, model_path, info, compressed and cfg.through_node)
        # Depth in model units (the applied policy is relative: a relative model by default, or the node told to skip
        # scaling) is scored median-scaled. Any other policy publishes metres, and metres are scored as published:
        # a relative model under ground_plane or fixed is judged on the scale it gets, not rescued by the GT median.
        median_scaling = cfg.median_scaling and params["scale_policy"] == "relative"
        n_frames = min(img_t.count, cfg.max_frames or img_t.count)
        scorer = Scorer(cfg, median_scaling, float(info.max_depth * info.scale), n_frames)
        bag_out = cfg.out_dir / "replay_bag"
        with OutputBagWriter(bag_out, recorded_topics(cfg, gt, img_t.msgtype)) as writer:
            run = ReplayRun(cfg=cfg, bag=bag, gt=gt, model_path=model_path, info=info, params=params,
                            writer=writer, scorer=scorer, n_frames=n_frames, compressed=compressed)
            per_frame, timing = run_through_node(run) if cfg.through_node else run_in_process(run)
            bag_counts = dict(writer.counts)
        bag_summary = {"path": str(bag.path), "duration_s": bag.duration_s,
                       "topics": [asdict(t) for t in bag.topic_list()]}

    result = scorer.result()
    for f in per_frame:
        m = scorer.by_index.get(f["index"])
        f.update({k: (m[k] if m else None) for k in METRIC_NAMES + ["ratio"]})
    n_in = len(per_frame)
    n_depth = sum(not f["dropped"] for f in per_frame)
    report = {
        "tool": PROG,
        "version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 - 3.10
        "mode": "through-node" if cfg.through_node else "in-process",
        "bag": bag_summary,
        "model": {"path": str(model_path), "name": info.name or model_path.name, "height": info.height,
                  "width": info.width, "min_depth": info.min_depth, "max_depth": info.max_depth,
                  "scale_policy": info.scale_policy, "scale": info.scale, "backend": timing.pop("backend")},
        "settings": {"image_topic": cfg.image_topic, "camera_info_topic": cfg.camera_info_topic,
                     "gt": None if gt is None else {"topic": gt.topic, "kind": gt.kind,
                                                     "tolerance_s": gt.tolerance_s,
                                                     "depth_convention": gt.depth_convention
                                                     if gt.kind == "lidar" else None},
                     "extrinsics": str(cfg.extrinsics) if cfg.extrinsics else None, "rate": cfg.rate,
                     "median_scaling": median_scaling, "crop": cfg.crop or "none", "max_depth": cfg.max_depth,
                     "max_frames": cfg.max_frames, "record": list(cfg.record)},
        "metrics": None if result is None else result.metrics,
        "scale": {} if result is None else {"ratio_mean": result.ratio_mean, "ratio_std": result.ratio_std,
                                            "ratio_median": result.ratio_median,
                                            "ratio_std_rel": result.ratio_std_rel},
        "frames": {"input": n_in, "with_depth": n_depth,
                   "with_points": sum(f["has_points"] for f in per_frame),
                   "with_gt": sum(f["gt"] for f in per_frame), "scored": len(scorer.per_image),
                   "dropped": n_in - n_depth, "drop_rate": (n_in - n_depth) / n_in if n_in else None,
                   "pred_pixels_filled": scorer.filled_px, "not_scored": scorer.skipped[:20]},
        "sky": {"gt_sky_pixels": scorer.sky_px, "published_nan": scorer.sky_nan_px,
                "share_masked": scorer.sky_nan_px / scorer.sky_px if scorer.sky_px else None},
        **timing,
        "output_bag_topics": bag_counts,
        "per_frame": per_frame,
    }
    outs = {"bag": str(bag_out), "report_json": str(cfg.out_dir / "report.json"),
            "report_png": str(cfg.out_dir / "report.png"), "report_html": str(cfg.out_dir / "report.html")}
    if scorer.samples:
        from monodepth_ros.visualize import panel_grid

        panel_grid(scorer.samples, cfg.out_dir / "panels.png", min_m=1.0, max_m=cfg.max_depth)
        outs["panels_png"] = str(cfg.out_dir / "panels.png")
    if cfg.through_node:
        outs["node_log"] = report["node"]["log"]
    report["outputs"] = outs
    plot_per_frame(report, outs["report_png"])
    write_html(report, outs["report_html"])
    write_json(report, outs["report_json"])
    return report
