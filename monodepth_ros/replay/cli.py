"""``monodepth-replay``: the command line. Exit codes as in :mod:`monodepth_ros.cli_common`: 0 success; 1 with a
one-line message when the depth node fails; 2 with a one-line message on bad input (bag, topics, model, options);
130 interrupted."""

from __future__ import annotations

import argparse
from pathlib import Path

from monodepth_ros.bag.reader import BagError
from monodepth_ros.cli_common import EXIT_OK, CliParser, run_guarded
from monodepth_ros.evaluation.lidar_gt import DEPTH_CONVENTIONS
from monodepth_ros.evaluation.metrics import MAX_DEPTH_M
from monodepth_ros.replay.config import (
    DEFAULT_MODEL_REL,
    DEFAULT_RECORD,
    PROG,
    RECORDABLE,
    NodeFailure,
    ReplayConfig,
    ReplayError,
)
from monodepth_ros.replay.report import summary_text
from monodepth_ros.replay.run import run_replay

__all__ = ["build_parser", "config_from_args", "main"]


def _record_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in RECORDABLE]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown output {unknown[0]!r}; choose from {','.join(RECORDABLE)}")
    return names


def build_parser() -> CliParser:
    p = CliParser(PROG, "Replay a rosbag2 (MCAP or sqlite3) through a depth model -- in-process, or through the "
                  "real depth node over DDS -- score it against GT and write an output bag plus a report.")
    p.add_argument("--bag", required=True, type=Path, help="rosbag2 directory (mcap or sqlite3), or a lone .mcap")
    p.add_argument("--out", required=True, type=Path, help="output directory (report, output bag)")
    p.add_argument("--model", type=Path, default=None,
                   help=f"the model to run: an exported .onnx, a TensorRT engine with its .json sidecar, or a "
                   f".safetensors bundle (torch backend); default: the embedded monodepth_ros/{DEFAULT_MODEL_REL}")
    p.add_argument("--image-topic", default="/camera/image_raw",
                   help="input image topic: sensor_msgs/Image, or CompressedImage named <image>/compressed")
    p.add_argument("--camera-info-topic", default="/camera/camera_info", help="the camera's CameraInfo topic")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gt-topic", default=None, help="depth GT image topic (32FC1 metres or 16UC1 mm)")
    g.add_argument("--lidar-topic", default=None, help="lidar PointCloud2 topic projected as sparse GT")
    p.add_argument("--extrinsics", type=Path, default=None, help="YAML with the 4x4 T_cam_from_lidar")
    p.add_argument("--lidar-depth", choices=DEPTH_CONVENTIONS, default="camera_z",
                   help="what a lidar GT pixel holds: camera z, the optical-axis depth the node publishes (REP 118), "
                   "or lidar_forward, the lidar's x distance that KITTI's reference evaluation and "
                   "monodepth-eval use (pick it to compare with papers' numbers)")
    p.add_argument("--gt-tolerance", type=float, default=None,
                   help="largest GT/image stamp difference, s (default: exact for --gt-topic, 0.05 for lidar)")
    p.add_argument("--through-node", action="store_true", help="play the bag into the real node over DDS")
    p.add_argument("--rate", type=float, default=1.0,
                   help="--through-node playback speed as a factor of the recorded rate (2 = twice as fast)")
    p.add_argument("--no-median-scaling", action="store_true",
                   help="score depth as is (automatic for models whose scale policy is metric or fixed)")
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "openvino", "tensorrt", "torch"),
                   help="inference backend (auto: TensorRT, else ONNX Runtime CUDA, else OpenVINO if installed, "
                   "else ONNX Runtime CPU)")
    p.add_argument("--max-frames", type=int, default=None,
                   help="replay only the first N image frames (default: all)")
    p.add_argument("--crop", default="none", choices=("garg", "eigen", "none"),
                   help="KITTI evaluation crop: only GT pixels inside it are scored")
    p.add_argument("--max-depth", type=float, default=MAX_DEPTH_M, help="GT beyond this is not scored (m)")
    p.add_argument("--record", type=_record_list, default=",".join(DEFAULT_RECORD),
                   help=f"node outputs written to the output bag, a comma list from {','.join(RECORDABLE)}; "
                   "points (clouds, ~2 MB per 640x192 frame) are the bulk of a bag, so they are left out unless "
                   "listed. The input image, camera_info and GT are always written")
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
        max_frames=args.max_frames, crop=None if args.crop == "none" else args.crop, max_depth=args.max_depth,
        domain_id=args.domain_id, node_params=list(args.node_param), quiet=args.quiet, record=args.record,
    )


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``monodepth-replay``; exit codes as in :mod:`monodepth_ros.cli_common` (1: the depth
    node failed; 2: bad bag, topics, model or options)."""
    args = build_parser().parse_args(argv)

    def replay() -> int:
        report = run_replay(config_from_args(args))
        print(summary_text(report))
        for key, path in report["outputs"].items():
            print(f"{key:>12}: {path}")
        return EXIT_OK

    return run_guarded(PROG, replay, bad_input=(BagError, ReplayError, ValueError, FileNotFoundError),
                       failure=(NodeFailure,))
