"""The depth node's parameters: names, defaults, ranges and validation, with no ROS import.

One source of truth for the node (which declares them), the launch-file test, and in-process replay (which runs
the same per-frame pipeline with the same values as ``--through-node``, see :mod:`monodepth_ros.pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from monodepth_ros.rectify import RECTIFY_MODES
from monodepth_ros.scale_policy import GROUND_METHODS, POLICIES

__all__ = ["PARAMETERS", "PARAM_BY_NAME", "TOPICS", "ParamSpec", "defaults", "validate_parameter",
           "coerce_value", "parse_overrides"]


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. ``lo``/``hi`` give a validated range (numbers), ``choices`` an allowed set."""

    name: str
    default: object
    description: str
    read_only: bool = False
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None


# The single source of truth for the node's parameters (the launch-file test checks against it too).
PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("model_path", "", "Exported depth model (.onnx, or .engine with its sidecar). Restart to change.",
              read_only=True),
    ParamSpec("backend", "auto", "Inference backend; auto = TensorRT > ORT CUDA > OpenVINO > ORT CPU. Restart to "
              "change.", read_only=True, choices=("auto", "onnxruntime", "openvino", "tensorrt", "torch")),
    ParamSpec("engine_cache_dir", "~/.cache/monodepth_ros", "Folder for the TensorRT engines the node builds "
              "itself (first start, new TensorRT, GPU or model); never the model's folder. Restart to change.",
              read_only=True),
    ParamSpec("threads", 0, "Intra-op inference threads, 0 = library default. Restart to change.",
              read_only=True, lo=0, hi=64),
    ParamSpec("use_compressed", False, "Subscribe to image/compressed (CompressedImage) instead of image.",
              read_only=True),
    ParamSpec("qos", "sensor_data", "Subscription QoS: sensor_data (best effort, depth 5) or reliable.",
              read_only=True, choices=("sensor_data", "reliable")),
    ParamSpec("rectify", "auto", "auto: rectify frames whose camera_info has a non-zero D (plumb_bob, "
              "rational_polynomial, equidistant) before inference; off: the input is already rectified (e.g. "
              "image_rect; K = P's 3x3, warns once if D is non-zero). Either way the rectified geometry is "
              "published.", choices=RECTIFY_MODES),
    ParamSpec("output_resolution", "input", "Depth/cloud size: input (camera) or model resolution.",
              choices=("input", "model")),
    ParamSpec("scale_policy", "auto", "auto (the model's own scale; refuses a relative model), metric, fixed "
              "(fixed_scale), ground_plane (road + camera_height_m), or relative (model units, not metres).",
              choices=POLICIES),
    ParamSpec("fixed_scale", 0.0, "Calibrated factor for scale_policy fixed (> 0), and ground_plane's scale until "
              "the road is first found; 0 = none.", lo=0.0, hi=10000.0),
    ParamSpec("camera_height_m", 1.65, "Camera height above the road (ground_plane policy), metres.",
              lo=0.05, hi=10.0),
    ParamSpec("ground_region_top", 0.6, "Top of the road region (ground_plane), fraction of image height.",
              lo=0.3, hi=0.95),
    ParamSpec("ground_smoothing", 0.2, "EMA weight of each new ground-plane scale estimate.", lo=0.01, hi=1.0),
    ParamSpec("ground_method", "mount", "ground_plane: road normal from the mount (camera_pitch_deg/roll) "
              "or fitted to the depth.", choices=GROUND_METHODS),
    ParamSpec("camera_pitch_deg", 0.0, "ground_plane mount: camera pitch, degrees, positive = looking down.",
              lo=-45.0, hi=45.0),
    ParamSpec("camera_roll_deg", 0.0, "ground_plane mount: camera roll about the optical axis, degrees.",
              lo=-45.0, hi=45.0),
    ParamSpec("ground_max_tilt_deg", 15.0, "ground_plane fit: largest road-normal tilt from the camera's up axis.",
              lo=1.0, hi=45.0),
    ParamSpec("min_depth", 0.1, "Depth below this becomes NaN, metres (model units for relative).",
              lo=0.0, hi=1000.0),
    ParamSpec("max_depth", 80.0, "Depth above this (and sky) becomes NaN, metres (model units for relative).",
              lo=0.01, hi=10000.0),
    ParamSpec("validity_threshold", 0.5, "Depth becomes NaN where the model's validity output (probability of a "
              "surface, 0 = sky) is below this; 0 = no masking. No effect for a model without that output.",
              lo=0.0, hi=1.0),
    ParamSpec("decimation", 1, "Point cloud keeps every n-th row and column.", lo=1, hi=16),
    ParamSpec("cloud_rgb", True, "Add packed rgb to the point cloud."),
    ParamSpec("publish_colored", True, "Publish depth/colored (rgb8 visualisation)."),
    ParamSpec("colored_min_m", 1.0, "Nearest depth of the depth/colored colour range, metres.", lo=0.01, hi=1000.0),
    ParamSpec("colored_max_m", 80.0, "Farthest depth of the depth/colored colour range, metres.",
              lo=0.1, hi=10000.0),
    ParamSpec("scan_height", 1, "scan: rows around the optical centre row flattened into the LaserScan "
              "(nearest range per direction).", lo=1, hi=4096),
    ParamSpec("scan_range_min", 0.1, "scan: nearer ranges are not used, metres (also the message's range_min).",
              lo=0.0, hi=1000.0),
    ParamSpec("scan_range_max", 80.0, "scan: farther ranges are not used, metres (also the message's range_max).",
              lo=0.01, hi=10000.0),
    ParamSpec("scan_frame_id", "", "scan: frame_id of the LaserScan; empty = the camera's (optical) frame. "
              "RViz and Nav2 expect a frame with x forward: name one that TF places there."),
    ParamSpec("sync_tolerance_s", 0.0, "Largest image/camera_info stamp difference paired; 0 = exact.",
              lo=0.0, hi=1.0),
    ParamSpec("sync_queue_size", 10, "Unmatched messages kept per stream by the synchroniser.",
              read_only=True, lo=1, hi=100),
    ParamSpec("camera_info_timeout_s", 2.0, "Warn when no camera_info arrived for this long, seconds.",
              lo=0.1, hi=60.0),
    ParamSpec("diagnostics_period_s", 1.0, "Period of /diagnostics messages, seconds.", read_only=True,
              lo=0.1, hi=10.0),
    ParamSpec("log_throttle_s", 5.0, "At most one log line per problem kind per this many seconds.",
              lo=0.0, hi=600.0),
)
PARAM_BY_NAME = {p.name: p for p in PARAMETERS}
# Relative topic names (remap targets); image/compressed follows the resolved `image`.
TOPICS = ("image", "camera_info", "depth", "depth/camera_info", "points", "depth/colored", "depth/confidence",
          "scan")




def validate_parameter(name: str, value, current: dict) -> str | None:
    """Reason why ``name = value`` is invalid given the other ``current`` values, or None if it is fine."""
    spec = PARAM_BY_NAME.get(name)
    if spec is None:
        return None  # not ours (e.g. use_sim_time)
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {list(spec.choices)}, got {value!r}"
    if spec.lo is not None and not (spec.lo <= value <= spec.hi):
        return f"{name} must be in [{spec.lo}, {spec.hi}], got {value!r}"
    if name == "engine_cache_dir" and not str(value).strip():
        return "engine_cache_dir must name a folder (default ~/.cache/monodepth_ros)"
    merged = dict(current, **{name: value})
    if merged["min_depth"] >= merged["max_depth"]:
        return f"min_depth ({merged['min_depth']}) must be below max_depth ({merged['max_depth']})"
    if merged["colored_min_m"] >= merged["colored_max_m"]:
        return f"colored_min_m ({merged['colored_min_m']}) must be below colored_max_m ({merged['colored_max_m']})"
    if merged["scan_range_min"] >= merged["scan_range_max"]:
        return (f"scan_range_min ({merged['scan_range_min']}) must be below scan_range_max "
                f"({merged['scan_range_max']})")
    return None


def defaults() -> dict:
    """Every parameter's default value: ``{name: value}``."""
    return {p.name: p.default for p in PARAMETERS}


def coerce_value(name: str, value):
    """``value`` as the type of parameter ``name``'s default (an int given for a double becomes a float, as
    the node accepts it). Raises ValueError naming the parameter when the type does not fit."""
    spec = PARAM_BY_NAME.get(name)
    if spec is None:
        raise ValueError(f"unknown depth node parameter {name!r}; known: {', '.join(sorted(PARAM_BY_NAME))}")
    if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(spec.default):
        raise ValueError(f"{name} must be {type(spec.default).__name__}, got {value!r}")
    return value


def parse_overrides(items: list[str], base: dict | None = None) -> dict:
    """``["name:=value", ...]`` (the ``-p`` syntax of ``--ros-args``, values read as YAML like ROS does) applied
    over ``base`` (default: :func:`defaults`), each coerced and validated. Raises ValueError naming the item."""
    values = dict(defaults() if base is None else base)
    for item in items:
        name, sep, text = item.partition(":=")
        if not sep or not name:
            raise ValueError(f"node parameter {item!r} is not NAME:=VALUE")
        value = coerce_value(name, yaml.safe_load(text) if text else "")
        reason = validate_parameter(name, value, values)
        if reason:
            raise ValueError(reason)
        values[name] = value
    return values
