"""Read and write model bundles (see :mod:`monodepth_ros.bundle`) from torch networks.

A bundle is one ``.safetensors`` file: ``depth.<key>`` / ``pose.<key>`` tensors plus the JSON
:class:`~monodepth_ros.bundle.BundleMeta` naming the registered architectures and their constructor
arguments, so :func:`load_bundle` can rebuild the networks without pickle and without the training code's
configuration.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from monodepth_training.networks.registry import build_depth_net, build_pose_net
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from monodepth_ros.bundle import META_KEY, BundleError, BundleMeta, atomic_write_bytes, read_meta

DEPTH_PREFIX = "depth."
POSE_PREFIX = "pose."


def portable_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs fit for a bundle: local file paths (``pretrained_path`` and any ``*_path``) become
    None, since the weights are in the bundle and the path would not exist on another machine; tuples
    become lists (what JSON gives back anyway)."""
    out = {}
    for k, v in kwargs.items():
        if k.endswith("path"):
            v = None
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    return out


def _state_mismatch(own: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str | None:
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    shapes = sorted(f"{k}: bundle {tuple(given[k].shape)} vs net {tuple(own[k].shape)}"
                    for k in set(own) & set(given) if tuple(own[k].shape) != tuple(given[k].shape))
    if not (missing or unexpected or shapes):
        return None

    def head(items: list[str]) -> str:
        return f"{items[:10]}{f' (+{len(items) - 10} more)' if len(items) > 10 else ''}"

    return f"missing keys {head(missing)}, unexpected keys {head(unexpected)}, shape mismatches {head(shapes)}"


def _build(kind: str, name: str, kwargs: dict[str, Any]) -> nn.Module:
    builder = build_depth_net if kind == "depth" else build_pose_net
    try:
        return builder(name, **kwargs)
    except (ValueError, TypeError) as e:
        raise BundleError(f"cannot build {kind} network {name!r} from bundle metadata: {e}") from e


def _check_against_registry(kind: str, name: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    problem = _state_mismatch(_build(kind, name, kwargs).state_dict(), state)
    if problem:
        raise BundleError(f"{kind} network weights do not match {name!r} with {kwargs}: {problem}")


def save_bundle(path: str | os.PathLike, depth_net: nn.Module, meta: BundleMeta, pose_net: nn.Module | None = None,
                ) -> BundleMeta:
    """Write ``depth_net`` (and optionally ``pose_net``) with ``meta`` to one ``.safetensors`` file, atomically.

    ``meta.depth_net`` / ``meta.depth_kwargs`` (and ``pose_net`` / ``pose_kwargs``) must rebuild the given
    networks from the registry; this is checked before writing, so an unloadable bundle is never produced.
    Path-valued kwargs are recorded as None. Without ``pose_net`` the recorded ``pose_net`` is None.
    Returns the metadata actually written.
    """
    meta = copy.deepcopy(meta)
    meta.depth_kwargs = portable_kwargs(meta.depth_kwargs)
    if pose_net is None:
        meta.pose_net, meta.pose_kwargs = None, {}
    elif meta.pose_net is None:
        raise BundleError("a pose network was given but meta.pose_net names no architecture")
    else:
        meta.pose_kwargs = portable_kwargs(meta.pose_kwargs)
    meta.validate()

    # Cloned to contiguous CPU tensors: safetensors refuses views and shared storage.
    depth_state = {k: v.detach().cpu().contiguous().clone() for k, v in depth_net.state_dict().items()}
    _check_against_registry("depth", meta.depth_net, meta.depth_kwargs, depth_state)
    tensors = {DEPTH_PREFIX + k: v for k, v in depth_state.items()}
    if pose_net is not None:
        pose_state = {k: v.detach().cpu().contiguous().clone() for k, v in pose_net.state_dict().items()}
        _check_against_registry("pose", meta.pose_net, meta.pose_kwargs, pose_state)
        tensors.update({POSE_PREFIX + k: v for k, v in pose_state.items()})
    atomic_write_bytes(path, st_save(tensors, metadata={META_KEY: meta.to_json()}))
    return meta


def _load_into(kind: str, name: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    net = _build(kind, name, kwargs)
    problem = _state_mismatch(net.state_dict(), state)
    if problem:
        raise BundleError(f"bundle {kind} weights do not fit {name!r} with {kwargs}: {problem}")
    net.load_state_dict(state, strict=True)
    return net


def load_bundle(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                ) -> tuple[nn.Module, nn.Module | None, BundleMeta]:
    """Rebuild ``(depth_net, pose_net or None, meta)`` from a bundle, networks in eval mode on ``map_location``.

    Raises :class:`BundleError` for a missing, truncated or corrupt file, invalid metadata, an unknown
    architecture, or weights that do not match the recorded architecture (listing the missing/unexpected keys).
    """
    path = Path(path)
    meta = read_meta(path)
    try:
        tensors = st_load(path.read_bytes())
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise BundleError(f"cannot read bundle weights from {path}: {e}") from e
    depth_state = {k.removeprefix(DEPTH_PREFIX): v for k, v in tensors.items() if k.startswith(DEPTH_PREFIX)}
    pose_state = {k.removeprefix(POSE_PREFIX): v for k, v in tensors.items() if k.startswith(POSE_PREFIX)}
    stray = sorted(k for k in tensors if not k.startswith((DEPTH_PREFIX, POSE_PREFIX)))
    if stray:
        raise BundleError(f"{path}: tensors outside the depth./pose. namespaces: {stray[:10]}")
    if not depth_state:
        raise BundleError(f"{path} holds no depth network weights")
    if pose_state and meta.pose_net is None:
        raise BundleError(f"{path} holds pose weights but its metadata names no pose network")
    if meta.pose_net is not None and not pose_state:
        raise BundleError(f"{path} names pose network {meta.pose_net!r} but holds no pose weights")

    depth_net = _load_into("depth", meta.depth_net, meta.depth_kwargs, depth_state).to(map_location).eval()
    pose_net = None
    if meta.pose_net is not None:
        pose_net = _load_into("pose", meta.pose_net, meta.pose_kwargs, pose_state).to(map_location).eval()
    return depth_net, pose_net, meta


def _same_architecture(kind: str, path: os.PathLike | str, net: nn.Module, source: nn.Module) -> None:
    """Both networks were built by the registry, so their recorded kwargs include the defaults."""
    theirs = (source.registry_name, portable_kwargs(source.registry_kwargs))
    own = (net.registry_name, portable_kwargs(net.registry_kwargs))
    if theirs != own:
        raise BundleError(f"init_from {path}: its {kind} network is {theirs[0]!r} {theirs[1]}, but this run builds "
                          f"{own[0]!r} {own[1]}; set model.{kind}_net and model.{kind}_kwargs to match")


def init_from_bundle(path: str | os.PathLike, depth_net: nn.Module, pose_net: nn.Module | None = None) -> list[str]:
    """Start training from a bundle's weights (fine-tuning, e.g. a bundle trained before on a user's own bag).

    ``depth_net`` / ``pose_net`` are registry-built networks; the bundle must name the same architectures with the
    same constructor arguments (defaults included, paths aside: :func:`portable_kwargs`). Its depth weights, and
    its pose weights when both sides have a pose network, are copied in place. Returns notes for the log: what
    was loaded and what starts from scratch (a bundle without a pose network leaves ``pose_net`` as built).
    Raises :class:`BundleError` for an unreadable bundle or an architecture that does not match.
    """
    src_depth, src_pose, meta = load_bundle(path)
    _same_architecture("depth", path, depth_net, src_depth)
    depth_net.load_state_dict(src_depth.state_dict(), strict=True)
    notes = [f"depth network {meta.depth_net!r} from {path}"]
    if pose_net is None:
        return notes
    if src_pose is None:
        return [*notes, "the bundle has no pose network: the pose network starts from scratch"]
    _same_architecture("pose", path, pose_net, src_pose)
    pose_net.load_state_dict(src_pose.state_dict(), strict=True)
    return [*notes, f"pose network {meta.pose_net!r} from {path}"]
