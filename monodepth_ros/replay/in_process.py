"""In-process replay: the inference backend and the node's per-frame pipeline (:mod:`monodepth_ros.pipeline`) run
on every frame of the bag, one after the other, with the node parameters of the run. Nothing is dropped; the
output bag holds what the node would publish for each frame."""

from __future__ import annotations

import time
from collections.abc import Collection
from types import SimpleNamespace

from monodepth_ros.bag.frames import BagFrame, iter_frames
from monodepth_ros.pipeline import (
    FrameOutput,
    FrameParams,
    FrameRejected,
    frame_cloud,
    frame_colored,
    prepare_camera,
    process_frame,
    scale_policy_from_params,
)
from monodepth_ros.rectify import Calibration, Rectifier, published_camera_info
from monodepth_ros.replay.config import ReplayRun, output_topics
from monodepth_ros.replay.report import percentiles_ms, progress, rate_hz

__all__ = ["run_in_process", "serialize_outputs"]


def serialize_outputs(frame: BagFrame, out: FrameOutput, params: FrameParams,
                      keys: Collection[str], calib: Calibration | None = None) -> dict[str, bytes]:
    """The outputs ``keys`` (from depth, depth_info, points, colored) of one frame as the node builds them,
    CDR-serialised; the others are not built. ``calib``: the frame's calibration; a distorted camera's
    camera_info is published in its rectified geometry (D = 0), as the node does."""
    from builtin_interfaces.msg import Time
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from monodepth_ros.msgs.camera_info import rescaled_camera_info
    from monodepth_ros.msgs.image import depth_to_image_msg, rgb_to_image_msg
    from monodepth_ros.msgs.pointcloud import make_pointcloud2

    header = Header(stamp=Time(sec=frame.stamp_ns // 1_000_000_000, nanosec=frame.stamp_ns % 1_000_000_000),
                    frame_id=frame.frame_id)
    info = frame.info_msg  # a rosbags message: give the rclpy builder the fields it reads, with an rclpy header
    info = SimpleNamespace(header=header, width=info.width, height=info.height,
                           distortion_model=info.distortion_model, d=info.d, r=info.r, p=info.p)
    if calib is not None:
        info = published_camera_info(info, calib)
    build = {
        "depth": lambda: depth_to_image_msg(out.depth, header),
        "depth_info": lambda: rescaled_camera_info(info, out.K, out.depth.shape),
        "points": lambda: make_pointcloud2(header, *frame_cloud(out, params)),
        "colored": lambda: rgb_to_image_msg(frame_colored(out, params), header),
    }
    return {key: serialize_message(build[key]()) for key in keys}


def run_in_process(run: ReplayRun) -> tuple[list[dict], dict]:
    """Replay every frame in this process. Returns (per-frame records, timing section of the report)."""
    from monodepth_ros.backends import create_backend

    cfg = run.cfg
    backend = create_backend(run.model_path, kind=cfg.backend)
    params = FrameParams.from_params(run.params)
    policy = scale_policy_from_params(run.params, run.info.scale, run.info.scale_policy)
    topics = output_topics(cfg.image_topic)
    # What the node would publish to a recorder subscribed to cfg.record (depth/colored only when enabled).
    keys = [k for k in cfg.record if k != "colored" or run.params["publish_colored"]]
    per_frame, frame_s = [], []
    problems: dict[str, int] = {}
    rectifier = Rectifier()
    try:
        frames = iter_frames(run.bag, cfg.image_topic, cfg.camera_info_topic, run.gt, cfg.max_frames)
        for frame in progress(frames, run.n_frames, "replay (in-process)", cfg.quiet):
            t0 = time.perf_counter()
            calib = Calibration.from_camera_info(frame.info_msg, image_size=(frame.rgb.shape[1], frame.rgb.shape[0]))
            try:  # the node's steps: rectify a distorted camera, infer, then the per-frame pipeline
                camera, _ = prepare_camera(frame.rgb, calib, run.params["rectify"], rectifier)
                disp, valid = backend.infer_outputs(camera.rgb)  # valid: None for a model without it
                out = process_frame(camera, disp, params, policy, valid)
            except FrameRejected as e:  # the node would skip it too (and say so in its log)
                out = None
                problems[e.kind] = problems.get(e.kind, 0) + 1
            frame_s.append(time.perf_counter() - t0)
            run.writer.write(cfg.image_topic, frame.stamp_ns, frame.image_raw)
            run.writer.write(cfg.camera_info_topic, frame.stamp_ns, frame.info_raw)
            if frame.gt_raw is not None:
                run.writer.write(run.gt.topic, frame.stamp_ns, frame.gt_raw)
            if out is not None:
                for kind, _ in out.problems:
                    problems[kind] = problems.get(kind, 0) + 1
                for key, raw in serialize_outputs(frame, out, params, keys, calib).items():
                    run.writer.write(topics[key], frame.stamp_ns, raw)
            run.scorer.score(frame, None if out is None else out.depth)
            per_frame.append({"index": frame.index, "stamp_ns": frame.stamp_ns, "latency_ms": frame_s[-1] * 1e3,
                              "dropped": out is None, "has_points": out is not None,
                              "gt": frame.gt_depth_m is not None})
    finally:
        backend.close()
    lat = percentiles_ms(frame_s)
    lat["what"] = "backend inference + per-frame pipeline (scale, depth, cloud not serialised), in-process"
    timing = {
        "latency": lat,
        "rate_hz": {"input": rate_hz([f["stamp_ns"] for f in per_frame]),
                    "achieved": len(frame_s) / sum(frame_s) if frame_s else None,
                    "what": "input = recorded image rate; achieved = 1 / mean time per frame"},
        "problems": problems,
        "backend": getattr(backend, "name", type(backend).__name__),
    }
    return per_frame, timing
