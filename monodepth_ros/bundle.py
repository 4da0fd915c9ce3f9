"""The model bundle: one self-describing ``.safetensors`` file that the trainer writes and export and the
node consume. No pickle anywhere.

Layout:
- tensors ``depth.<state_dict key>`` (depth network) and ``pose.<state_dict key>`` (pose network, optional);
- safetensors metadata key ``monodepth_ros`` holding the JSON :class:`BundleMeta`.

This module needs only NumPy and safetensors (no torch), so the runtime can inspect a bundle on a robot.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "monodepth_ros.bundle"
FORMAT_VERSION = 1
META_KEY = "monodepth_ros"
SCALE_POLICIES = ("relative", "fixed", "metric")


class BundleError(ValueError):
    """A bundle file is missing, corrupt, or its metadata is invalid."""


@dataclass
class BundleMeta:
    """What a consumer needs to rebuild and run the model.

    ``scale_policy``: ``relative`` = monocular, up to an unknown scale (median scaling in evaluation);
    ``fixed`` = multiply depth by ``scale`` (e.g. stereo-trained, KITTI x5.4 convention);
    ``metric`` = depth is already in metres (velocity supervision), ``scale`` is normally 1.
    ``intrinsics_norm``: 3x3 normalised intrinsics of the training camera, if a single camera was used.
    """

    depth_net: str
    height: int
    width: int
    min_depth: float = 0.1
    max_depth: float = 100.0
    depth_kwargs: dict[str, Any] = field(default_factory=dict)
    pose_net: str | None = None
    pose_kwargs: dict[str, Any] = field(default_factory=dict)
    scale_policy: str = "relative"
    scale: float = 1.0
    mean: list[float] = field(default_factory=lambda: [0.45, 0.45, 0.45])
    std: list[float] = field(default_factory=lambda: [0.225, 0.225, 0.225])
    intrinsics_norm: list[list[float]] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def validate(self) -> BundleMeta:
        if self.format != FORMAT:
            raise BundleError(f"not a monodepth_ros bundle (format={self.format!r})")
        if self.format_version > FORMAT_VERSION:
            raise BundleError(f"bundle format_version {self.format_version} is newer than supported {FORMAT_VERSION}")
        if not (isinstance(self.height, int) and isinstance(self.width, int)) or self.height < 16 or self.width < 16:
            raise BundleError(f"bad input size {self.height}x{self.width}")
        if self.height % 32 or self.width % 32:
            raise BundleError(f"input size {self.width}x{self.height} must be a multiple of 32")
        if not (0 < self.min_depth < self.max_depth):
            raise BundleError(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if self.scale_policy not in SCALE_POLICIES:
            raise BundleError(f"scale_policy must be one of {SCALE_POLICIES}, got {self.scale_policy!r}")
        if not (self.scale > 0):
            raise BundleError(f"scale must be positive, got {self.scale}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise BundleError("mean and std must have 3 entries, std positive")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BundleMeta:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise BundleError(f"bundle metadata is not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            raise BundleError("bundle metadata must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise BundleError(f"unknown bundle metadata fields: {sorted(unknown)}")
        try:
            return cls(**raw).validate()
        except TypeError as e:
            raise BundleError(f"bundle metadata incomplete: {e}") from e


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_meta(path: str | os.PathLike) -> BundleMeta:
    """Read and validate a bundle's metadata without loading its weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"bundle not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise BundleError(f"cannot read bundle {path}: {e}") from e
    if META_KEY not in meta:
        raise BundleError(f"{path} has no '{META_KEY}' metadata: not a monodepth_ros bundle")
    return BundleMeta.from_json(meta[META_KEY])


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
