"""``monodepth-replay``: the command line. Exit 0 on success; 2 with a one-line message on bad input (bag, topics,
model, options); 1 with a one-line message when the depth node fails."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monodepth_ros.bag.reader import BagError
from monodepth_ros.evaluation.lidar_gt import DEPTH_CONVENTIONS
from monodepth_ros.evaluation.metrics import MAX_DEPTH_M
from monodepth_ros.replay.config import DEFAULT_MODEL_REL, PROG, NodeFailure, ReplayConfig, ReplayError
from monodepth_ros.replay.report import summary_text
from monodepth_ros.replay.run import run_replay

__all__ = ["build_parser", "config_from_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Replay a rosbag2 (MCAP or sqlite3) through a depth model -- in-process, or through the real "
                    "depth node over DDS -- score it against GT and write an output bag plus a report.",
    )
    p.add_argument("--bag", required=True, type=Path, help="rosbag2 directory (mcap or sqlite3), or a lone .mcap")
    p.add_argument("--out", required=True, type=Path, help="output directory (report, output bag)")
    p.add_argument("--model", type=Path, default=None,
                   help=f"exported model (.onnx); default: the embedded monodepth_ros/{DEFAULT_MODEL_REL}")
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--camera-info-topic", default="/camera/camera_info")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gt-topic", default=None, help="depth GT image topic (32FC1 metres or 16UC1 mm)")
    g.add_argument("--lidar-topic", default=None, help="lidar PointCloud2 topic projected as sparse GT")
    p.add_argument("--extrinsics", type=Path, default=None, help="YAML with the 4x4 T_cam_from_lidar")
    p.add_argument("--lidar-depth", choices=DEPTH_CONVENTIONS, default="camera_z",
                   help="what a lidar GT pixel holds: camera z, the optical-axis depth the node publishes (REP 118; "
                   "default), or lidar_forward, the lidar's x distance that KITTI's reference evaluation and "
                   "monodepth-eval use (pick it to compare with papers' numbers)")
    p.add_argument("--gt-tolerance", type=float, default=None,
                   help="largest GT/image stamp difference, s (default: exact for --gt-topic, 0.05 for lidar)")
    p.add_argument("--through-node", action="store_true", help="play the bag into the real node over DDS")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (--through-node)")
    p.add_argument("--no-median-scaling", action="store_true",
                   help="score depth as is (automatic for models whose scale policy is metric or fixed)")
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt", "torch"))
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--crop", default=None, choices=("garg", "eigen"), help="KITTI evaluation crop (default none)")
    p.add_argument("--cap-m", type=float, default=MAX_DEPTH_M, help="GT beyond this is not scored (m)")
    p.add_argument("--domain-id", type=int, default=None, help="DDS domain for --through-node (default: own)")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra depth node parameter (repeatable), e.g. scale_policy:=ground_plane")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    return ReplayConfig(
        bag=args.bag, out_dir=args.out, model=args.model, image_topic=args.image_topic,
        camera_info_topic=args.camera_info_topic, gt_topic=args.gt_topic, lidar_topic=args.lidar_topic,
        extrinsics=args.extrinsics, lidar_depth=args.lidar_depth, gt_tolerance_s=args.gt_tolerance,
        through_node=args.through_node,
        rate=args.rate, median_scaling=not args.no_median_scaling, backend=args.backend,
        max_frames=args.max_frames, crop=args.crop, cap_m=args.cap_m, domain_id=args.domain_id,
        node_params=list(args.node_param), quiet=args.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``monodepth-replay``. Exit 0 on success; 2 with a one-line message on bad input (bag,
    topics, model, options); 1 with a one-line message when the depth node fails."""
    args = build_parser().parse_args(argv)
    try:
        report = run_replay(config_from_args(args))
    except NodeFailure as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except (BagError, ReplayError, ValueError, FileNotFoundError) as e:
        msg = " ".join(str(e).split())
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(summary_text(report))
    for key, path in report["outputs"].items():
        print(f"{key:>12}: {path}")
    return 0
