"""Metadata of exported depth models (ONNX and TensorRT engines), readable and checkable without torch.

Output convention, decided once for every exported format: the graph's output ``disp`` (1, 1, H, W) is the
Monodepth2 *scaled disparity* in 1/model-units, in [1/max_depth, 1/min_depth]; ``depth = scale / disp``
(metres when ``scale_policy`` is ``fixed`` or ``metric``; relative units, to be median-scaled, when it is
``relative``). The input ``rgb`` (1, 3, H, W) float32 is RGB in [0, 1]; mean/std normalisation is inside.
Optionally a second output ``valid`` (1, 1, H, W) float32 in [0, 1], named by the metadata's ``validity_output``:
the network's probability that the pixel shows a surface (1) rather than sky / no surface (0). Without it
(``validity_output`` None, every model exported before it existed) nothing is masked as sky; other extra outputs
of a graph are ignored.

Where the metadata lives:
- ONNX: model ``metadata_props`` key ``monodepth_ros`` (JSON of :class:`ModelMeta`) AND a sidecar
  ``<model>.onnx.json`` with the same JSON (for people and tools). The embedded copy is authoritative; a sidecar
  that disagrees with it is an error, because one of the two files was replaced.
- TensorRT engines cannot carry metadata, so the sidecar ``<model>.engine.json`` is required; it adds a
  ``tensorrt`` block (TensorRT version, GPU name, compute capability) used to decide whether to rebuild.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from monodepth_ros.backends.base import ModelInfo
from monodepth_ros.bundle import SCALE_POLICIES, BundleMeta, atomic_write_bytes

META_KEY = "monodepth_ros"
MODEL_FORMAT = "monodepth_ros.model"
MODEL_FORMAT_VERSION = 1
INPUT_NAME = "rgb"
OUTPUT_NAME = "disp"
VALIDITY_OUTPUT_NAME = "valid"
OUTPUT_CONVENTION = "depth = scale / disp"
PRECISIONS = ("fp32", "fp16", "int8")
# "grey": the graph takes the luma of its RGB input first, so a mono8 camera (fed as three equal channels) and a
# colour camera give the same depth for the same scene; "rgb": colour matters.
INPUT_COLORS = ("rgb", "grey")


class ModelLoadError(ValueError):
    """An exported model cannot be used: missing, corrupt or truncated, or its metadata is absent, invalid or
    does not match the graph."""


@dataclass
class ModelMeta:
    """Everything a backend needs to feed an exported model and interpret its output."""

    height: int
    width: int
    min_depth: float
    max_depth: float
    scale_policy: str
    scale: float
    mean: list[float]
    std: list[float]
    intrinsics_norm: list[list[float]] | None
    source_sha256: str
    depth_net: str = ""
    input: str = INPUT_NAME
    output: str = OUTPUT_NAME
    output_convention: str = OUTPUT_CONVENTION
    opset: int = 0
    precision: str = "fp32"
    input_color: str = "rgb"
    validity_output: str | None = None  # VALIDITY_OUTPUT_NAME when the graph has the validity output
    quantization: dict[str, Any] | None = None  # the INT8 recipe that was kept, with its accuracy report
    producer: dict[str, str] = field(default_factory=dict)  # library versions that wrote the file
    tensorrt: dict[str, Any] | None = None  # engines only: version, device_name, compute_capability, ...
    format: str = MODEL_FORMAT
    format_version: int = MODEL_FORMAT_VERSION

    def validate(self, where: str = "model metadata") -> ModelMeta:
        """Raise :class:`ModelLoadError` naming the first bad field."""
        if self.format != MODEL_FORMAT:
            raise ModelLoadError(f"{where}: format is {self.format!r}, expected {MODEL_FORMAT!r}")
        if not isinstance(self.format_version, int) or self.format_version > MODEL_FORMAT_VERSION:
            raise ModelLoadError(f"{where}: format_version {self.format_version} newer than {MODEL_FORMAT_VERSION}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 16:
                raise ModelLoadError(f"{where}: {name} must be an integer >= 16, got {v!r}")
        if not (0 < self.min_depth < self.max_depth):
            raise ModelLoadError(f"{where}: need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if self.scale_policy not in SCALE_POLICIES:
            raise ModelLoadError(f"{where}: scale_policy must be one of {SCALE_POLICIES}, got {self.scale_policy!r}")
        if not (isinstance(self.scale, int | float) and self.scale > 0):
            raise ModelLoadError(f"{where}: scale must be positive, got {self.scale!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelLoadError(f"{where}: mean and std need 3 entries, std positive")
        if self.input != INPUT_NAME or self.output != OUTPUT_NAME:
            raise ModelLoadError(
                f"{where}: input/output must be {INPUT_NAME!r}/{OUTPUT_NAME!r}, got {self.input!r}/{self.output!r}"
            )
        if self.precision not in PRECISIONS:
            raise ModelLoadError(f"{where}: precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.input_color not in INPUT_COLORS:
            raise ModelLoadError(f"{where}: input_color must be one of {INPUT_COLORS}, got {self.input_color!r}")
        if self.validity_output not in (None, VALIDITY_OUTPUT_NAME):
            raise ModelLoadError(
                f"{where}: validity_output must be null or {VALIDITY_OUTPUT_NAME!r}, got {self.validity_output!r}"
            )
        return self

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.height, self.width)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (1, 1, self.height, self.width)

    @property
    def read_outputs(self) -> tuple[str, ...]:
        """The graph outputs a backend reads, in the order ``DepthBackend._run`` returns them: the disparity,
        then the validity when the model has it. Each has :attr:`output_shape`."""
        return (self.output,) if self.validity_output is None else (self.output, self.validity_output)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "model metadata") -> ModelMeta:
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, TypeError) as e:
            raise ModelLoadError(f"{where} is not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{where} must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ModelLoadError(f"{where} has unknown fields {sorted(unknown)}")
        try:
            meta = cls(**raw)
        except TypeError as e:
            raise ModelLoadError(f"{where} is incomplete: {e}") from e
        return meta.validate(where)

    def to_model_info(self, name: str = "") -> ModelInfo:
        return ModelInfo(
            height=self.height,
            width=self.width,
            min_depth=float(self.min_depth),
            max_depth=float(self.max_depth),
            scale_policy=self.scale_policy,
            scale=float(self.scale),
            name=name,
            source_sha256=self.source_sha256,
            has_validity=self.validity_output is not None,
        )


def model_meta_from_bundle(
    bundle: BundleMeta, source_sha256: str = "", *, opset: int = 0, producer: dict[str, str] | None = None
) -> ModelMeta:
    """The one conversion bundle metadata -> model metadata (fp32, as the bundle's network computes it).

    ``source_sha256``: hash of the bundle file ("" when not computed); ``opset`` and ``producer`` are what the
    exporter adds. Not validated here: the exporter validates what it embeds. ``.to_model_info(name)`` gives a
    backend's :class:`ModelInfo`.
    """
    return ModelMeta(
        height=bundle.height, width=bundle.width, min_depth=float(bundle.min_depth),
        max_depth=float(bundle.max_depth), scale_policy=bundle.scale_policy, scale=float(bundle.scale),
        mean=[float(v) for v in bundle.mean], std=[float(v) for v in bundle.std],
        intrinsics_norm=bundle.intrinsics_norm, source_sha256=source_sha256,
        depth_net=bundle.depth_net, opset=int(opset), precision="fp32", producer=dict(producer or {}),
        input_color=str(bundle.depth_kwargs.get("input_color", "rgb")),
        validity_output=VALIDITY_OUTPUT_NAME if bundle.depth_kwargs.get("validity_head") else None,
    )


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (``model.engine`` -> ``model.engine.json``)."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def write_sidecar(model_path: str | os.PathLike, meta: ModelMeta) -> Path:
    """Write ``meta`` atomically next to ``model_path``; returns the sidecar path."""
    out = sidecar_path(model_path)
    atomic_write_bytes(out, (json.dumps(json.loads(meta.to_json()), indent=2, sort_keys=True) + "\n").encode())
    return out


def read_sidecar(model_path: str | os.PathLike) -> ModelMeta | None:
    """The sidecar's metadata, or None when there is no sidecar."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    return ModelMeta.from_json(path.read_text(encoding="utf-8"), where=f"sidecar {path}")


def check_sidecar_agrees(model_path: str | os.PathLike, embedded: ModelMeta) -> None:
    """A sidecar, if present, must say the same as the embedded metadata (else one file was swapped)."""
    side = read_sidecar(model_path)
    if side is None:
        return
    a, b = asdict(embedded), asdict(side)
    diff = sorted(k for k in a if a[k] != b[k])
    if diff:
        raise ModelLoadError(
            f"sidecar {sidecar_path(model_path)} disagrees with the metadata embedded in {model_path} "
            f"on {diff}: one of the two files was replaced; re-export the model"
        )


def _check_dims(kind: str, name: str, got: list | tuple, want: tuple[int, ...], model_path) -> None:
    # ORT reports symbolic dims as strings (or None): a dynamic axis is a mismatch for a static export.
    got_t = tuple(got)
    if got_t != want:
        raise ModelLoadError(
            f"{model_path}: {kind} {name!r} has shape {list(got_t)} but the metadata says {list(want)} "
            f"(static (1, C, {want[2]}, {want[3]}) expected): metadata and graph do not match"
        )


def check_io_against_meta(
    meta: ModelMeta,
    inputs: list[tuple[str, list | tuple]],
    outputs: list[tuple[str, list | tuple]],
    model_path: str | os.PathLike = "model",
) -> None:
    """Compare a graph's (name, shape) inputs and outputs with the metadata; raise ModelLoadError on mismatch.

    The graph must have ``meta.output`` and, when the metadata names one, ``meta.validity_output``, both
    (1, 1, H, W); other outputs are tolerated."""
    if [n for n, _ in inputs] != [meta.input]:
        raise ModelLoadError(
            f"{model_path}: graph inputs {[n for n, _ in inputs]} do not match the metadata input {meta.input!r}"
        )
    names = [n for n, _ in outputs]
    for key, name in zip(("output", "validity_output"), meta.read_outputs):
        if name not in names:
            raise ModelLoadError(f"{model_path}: graph outputs {names} lack the metadata {key} {name!r}: metadata "
                                 "and graph do not match")
    _check_dims("input", meta.input, inputs[0][1], meta.input_shape, model_path)
    for name in meta.read_outputs:
        _check_dims("output", name, dict(outputs)[name], meta.output_shape, model_path)


def check_model_file(path: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> Path:
    """The path must be an existing, non-empty file (with one of ``suffixes`` if given)."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model file not found: {p}")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"model file is empty: {p}")
    if suffixes and p.suffix.lower() not in suffixes:
        raise ModelLoadError(f"{p}: expected a file ending in {' or '.join(suffixes)}")
    return p


def read_onnx_model_meta(path: str | os.PathLike) -> ModelMeta:
    """Read and validate the metadata embedded in an ONNX file (via ONNX Runtime: no torch, no onnx package)."""
    import onnxruntime as ort

    p = check_model_file(path, (".onnx",))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises InvalidProtobuf / Fail / InvalidGraph for corrupt or truncated files
        raise ModelLoadError(f"cannot load ONNX model {p} (corrupt or truncated?): {e}") from e
    return meta_from_session(sess, p)


def meta_from_session(sess, path: str | os.PathLike) -> ModelMeta:
    """Embedded metadata of an open ORT session, validated against its inputs/outputs and the sidecar."""
    props = sess.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise ModelLoadError(
            f"{path} has no '{META_KEY}' metadata: not exported by monodepth-export (re-export the bundle)"
        )
    meta = ModelMeta.from_json(props[META_KEY], where=f"metadata of {path}")
    check_io_against_meta(
        meta,
        [(i.name, i.shape) for i in sess.get_inputs()],
        [(o.name, o.shape) for o in sess.get_outputs()],
        path,
    )
    check_sidecar_agrees(path, meta)
    return meta


def read_onnx_meta(path: str | os.PathLike) -> ModelInfo:
    """ModelInfo of an exported ONNX model (the agreed interface); see :func:`read_onnx_model_meta`."""
    return read_onnx_model_meta(path).to_model_info(name=Path(path).name)
