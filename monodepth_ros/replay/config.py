"""What one replay run is: its settings (:class:`ReplayConfig`), the model and GT it uses, the output topic names,
and the depth node parameters that both modes run with (:func:`node_parameters`), so that in-process replay and
``--through-node`` compute the same depth for the same bag and settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from monodepth_ros.bag.frames import GtSource
from monodepth_ros.bag.msgtypes import CAMERA_INFO_TYPE, IMAGE_TYPE, POINTCLOUD2_TYPE
from monodepth_ros.evaluation.lidar_gt import DEPTH_CONVENTIONS
from monodepth_ros.evaluation.metrics import MAX_DEPTH_M

__all__ = ["PROG", "RECORDABLE", "DEFAULT_RECORD", "ReplayConfig", "ReplayError", "NodeFailure", "default_model_path",
           "output_topics", "raw_image_topic", "output_bag_topics", "resolve_model", "model_info", "gt_source",
           "node_parameters", "ReplayRun"]

PROG = "monodepth-replay"
DEFAULT_MODEL_REL = Path("models") / "default.onnx"
# The node's outputs a replay can write to its output bag (keys of output_topics). Clouds are the bulk of a bag
# (an organised cloud is ~2 MB per 640x192 frame), so they are left out unless asked for.
RECORDABLE = ("depth", "depth_info", "points", "colored")
DEFAULT_RECORD = ("depth", "depth_info", "colored")


class ReplayError(RuntimeError):
    """The replay cannot run (bad model, node failed to start, ...); the message says what to do."""


class NodeFailure(ReplayError):
    """The depth node process failed (start-up, crash, no output): a run-time failure, exit code 1."""


def default_model_path() -> Path:
    """The embedded default model shipped inside the package: ``monodepth_ros/models/default.onnx``."""
    return Path(__file__).resolve().parents[1] / DEFAULT_MODEL_REL


@dataclass
class ReplayConfig:
    """Everything one replay run needs (the CLI fills it; tests and the demo may build it directly)."""

    bag: Path
    out_dir: Path
    model: Path | None = None
    image_topic: str = "/camera/image_raw"
    camera_info_topic: str = "/camera/camera_info"
    gt_topic: str | None = None
    lidar_topic: str | None = None
    extrinsics: Path | None = None
    # What a lidar GT pixel holds: camera z (REP 118, what the node publishes) or the lidar's forward distance
    # (KITTI's reference evaluation); see lidar_gt.lidar_depth_map.
    lidar_depth: str = "camera_z"
    gt_tolerance_s: float | None = None  # None: exact stamps for depth GT, 0.05 s for lidar
    through_node: bool = False
    rate: float = 1.0
    median_scaling: bool = True
    backend: str = "auto"
    max_frames: int | None = None
    crop: str | None = None  # None: no crop
    max_depth: float = MAX_DEPTH_M  # GT beyond this is not scored (m)
    domain_id: int | None = None
    node_params: list[str] = field(default_factory=list)
    startup_timeout_s: float = 90.0
    quiet: bool = False
    record: tuple[str, ...] = DEFAULT_RECORD  # node outputs written to the output bag, from RECORDABLE

    def validate(self) -> ReplayConfig:
        if self.rate <= 0:
            raise ValueError(f"--rate must be > 0, got {self.rate}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.gt_topic and self.lidar_topic:
            raise ValueError("give either --gt-topic or --lidar-topic, not both")
        if self.lidar_topic and not self.extrinsics:
            raise ValueError("--lidar-topic needs --extrinsics FILE (YAML with the 4x4 T_cam_from_lidar)")
        if self.lidar_depth not in DEPTH_CONVENTIONS:
            raise ValueError(f"--lidar-depth must be one of {DEPTH_CONVENTIONS}, got {self.lidar_depth!r}")
        if self.domain_id is not None and not 0 <= self.domain_id <= 101:
            raise ValueError(f"--domain-id must be in 0..101, got {self.domain_id}")
        if self.crop not in (None, "garg", "eigen"):
            raise ValueError(f"--crop must be garg, eigen or none, got {self.crop!r}")
        if self.max_depth <= 0:
            raise ValueError(f"--max-depth must be > 0, got {self.max_depth}")
        unknown = [k for k in self.record if k not in RECORDABLE]
        if unknown or len(set(self.record)) != len(self.record):
            raise ValueError(f"--record takes distinct names from {','.join(RECORDABLE)}, got {','.join(self.record)}")
        return self


def output_topics(image_topic: str) -> dict[str, str]:
    """Where the node's outputs live for a camera whose image topic is ``image_topic``.

    The node runs in the image topic's namespace (``/camera/image_raw`` -> ``/camera``), so its relative
    outputs become ``/camera/depth``, ``/camera/points``, ...; in-process mode writes the same names.
    A compressed stream ``<image>/compressed`` counts as ``<image>`` (image_transport naming).
    """
    image_topic = raw_image_topic(image_topic)
    ns = image_topic.rsplit("/", 1)[0] if image_topic.count("/") > 1 else ""
    return {"depth": f"{ns}/depth", "depth_info": f"{ns}/depth/camera_info", "points": f"{ns}/points",
            "colored": f"{ns}/depth/colored", "ns": ns or "/"}


def output_bag_topics(cfg: ReplayConfig, gt: GtSource | None, image_type: str) -> dict[str, str]:
    t = output_topics(cfg.image_topic)
    topics = {cfg.image_topic: image_type, cfg.camera_info_topic: CAMERA_INFO_TYPE, t["depth"]: IMAGE_TYPE,
              t["depth_info"]: CAMERA_INFO_TYPE, t["points"]: POINTCLOUD2_TYPE, t["colored"]: IMAGE_TYPE}
    if gt is not None:
        topics[gt.topic] = IMAGE_TYPE if gt.kind == "depth" else POINTCLOUD2_TYPE
    return topics


def raw_image_topic(image_topic: str) -> str:
    return image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic


# ---- model -----------------------------------------------------------------------------------------------------
def resolve_model(model: Path | None) -> Path:
    if model is None:
        p = default_model_path()
        if not p.is_file():
            raise ReplayError(f"no --model given and the embedded default model is not installed ({p}); "
                              "pass --model PATH (an exported .onnx)")
        return p
    p = Path(model)
    if not p.is_file():
        raise ReplayError(f"model file not found: {p}")
    return p


def model_info(path: Path):
    """ModelInfo from the model's metadata, without running it (the node loads the model itself)."""
    from monodepth_ros.backends import read_onnx_meta, read_sidecar

    if path.suffix.lower() == ".onnx":
        return read_onnx_meta(path)
    if path.suffix.lower() == ".safetensors":  # a training bundle, run with --backend torch
        from monodepth_ros.backends.model_meta import model_meta_from_bundle
        from monodepth_ros.bundle import read_meta

        return model_meta_from_bundle(read_meta(path)).to_model_info(name=path.name)
    side = read_sidecar(path)
    if side is None:
        raise ReplayError(f"{path}: no metadata (expected an .onnx, or an engine with its .json sidecar)")
    return side.to_model_info(name=path.name)


def gt_source(cfg: ReplayConfig) -> GtSource | None:
    if cfg.gt_topic:
        return GtSource(cfg.gt_topic, "depth", cfg.gt_tolerance_s if cfg.gt_tolerance_s is not None else 0.0)
    if cfg.lidar_topic:
        from monodepth_ros.evaluation.lidar_gt import load_extrinsics

        try:
            T = load_extrinsics(cfg.extrinsics)
        except ValueError as e:
            raise ReplayError(str(e)) from None
        return GtSource(cfg.lidar_topic, "lidar", cfg.gt_tolerance_s if cfg.gt_tolerance_s is not None else 0.05,
                        T_cam_from_lidar=T, depth_convention=cfg.lidar_depth)
    return None


def node_parameters(cfg: ReplayConfig, model_path: Path, info, compressed: bool = False) -> dict:
    """The depth node parameters of this replay, ``{name: value}``: the node's defaults, the replay's own
    settings, then ``cfg.node_params`` (``NAME:=VALUE``, validated as the node does). Through-node passes them
    to the node process as ``-p``; in-process runs :mod:`monodepth_ros.pipeline` with them.

    The replay's own settings: the model's full range as min/max depth, so the node masks nothing a valid
    model output can produce (scoring needs a number at every pixel); ``validity_threshold`` stays the node's
    (a model with a validity output masks sky as the robot would; a masked pixel with GT is scored as the
    model's far limit, see :func:`monodepth_ros.replay.scoring.pred_at_gt_resolution`; ``--node-param
    validity_threshold:=0`` scores the raw depth); output at the input resolution;
    reliable QoS, so that drops are the node's, not DDS's; and for a relative model ``scale_policy:=relative``
    (scored median-scaled), since the node's default refuses to publish its unknown scale as metres. Raises
    ReplayError for a bad or unsafe ``--node-param`` (e.g. ``scale_policy:=metric`` with a relative model).
    """
    from monodepth_ros.node_params import parse_overrides
    from monodepth_ros.scale_policy import choose_scale_policy

    lo = max(0.0, float(info.min_depth * info.scale) * 0.999)
    hi = min(10000.0, float(info.max_depth * info.scale) * 1.001)
    own = [f"model_path:={model_path}", f"backend:={cfg.backend}", "qos:=reliable", "output_resolution:=input",
           f"min_depth:={lo:.6f}", f"max_depth:={hi:.6f}"]
    if compressed:  # the node then subscribes <image>/compressed
        own.append("use_compressed:=true")
    if info.scale_policy == "relative":
        own.append("scale_policy:=relative")
    try:
        params = parse_overrides(own + list(cfg.node_params))
        choose_scale_policy(params["scale_policy"], params["fixed_scale"], info.scale_policy)
    except ValueError as e:
        raise ReplayError(f"--node-param: {e}") from None
    return params


@dataclass(frozen=True)
class ReplayRun:
    """What a mode needs for one run: the settings, the open bag, the GT source, the model (path and metadata),
    the node parameters, the output-bag writer, the scorer, and the number of frames expected."""

    cfg: ReplayConfig
    bag: object  # monodepth_ros.bag.reader.BagReader, open
    gt: GtSource | None
    model_path: Path
    info: object  # monodepth_ros.backends.ModelInfo
    params: dict
    writer: object  # monodepth_ros.bag.writer.OutputBagWriter
    scorer: object  # monodepth_ros.replay.scoring.Scorer
    n_frames: int
    compressed: bool = False
