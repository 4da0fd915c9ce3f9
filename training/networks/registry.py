"""Name -> network registry, so configs and model bundles refer to architectures by name.

``DEPTH_NETS`` / ``POSE_NETS`` map a name to ``(constructor, default kwargs)``. Architectures register with
the :func:`register_depth_net` / :func:`register_pose_net` decorators in their own module. Monodepth2 is
registered at import; the modules listed in ``ARCHITECTURE_MODULES`` are imported on the first lookup, so a
bundle or config naming e.g. "packnet" builds in a fresh process without the caller importing that module.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from monodepth_training.geometry import depth_to_sigmoid
from torch import nn

Constructor = Callable[..., nn.Module]
DEPTH_NETS: dict[str, tuple[Constructor, dict[str, Any]]] = {}
POSE_NETS: dict[str, tuple[Constructor, dict[str, Any]]] = {}

# Modules under monodepth_training.networks that register architectures when imported (loaded lazily: they
# are heavier than Monodepth2 and import this module themselves). Add a new architecture's module here.
ARCHITECTURE_MODULES = ("packnet", "ddv", "diffnet", "sfmlearner", "rtmonodepth")
_modules_loaded = False


def _load_architecture_modules() -> None:
    global _modules_loaded
    if _modules_loaded:
        return
    for name in ARCHITECTURE_MODULES:
        full = f"monodepth_training.networks.{name}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as e:
            if e.name != full:  # the module exists but one of its own imports is missing: a real error
                raise
    _modules_loaded = True  # only after success, so a broken module keeps raising instead of vanishing


def _signature_defaults(ctor: Constructor) -> dict[str, Any]:
    params = inspect.signature(ctor).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _register(table: dict, kind: str, name: str, defaults: dict[str, Any]):
    def decorator(ctor: Constructor) -> Constructor:
        if name in table and table[name][0] is not ctor:
            raise ValueError(f"{kind} network {name!r} is already registered")
        table[name] = (ctor, {**_signature_defaults(ctor), **defaults})
        return ctor

    return decorator


def register_depth_net(name: str, **defaults: Any):
    """Class/function decorator: make a depth network buildable as ``build_depth_net(name, ...)``.

    The network's forward must take rgb01 (B, 3, H, W) in [0, 1] and return {("disp", s): sigmoid}.
    ``defaults`` override the constructor's own keyword defaults.
    """
    return _register(DEPTH_NETS, "depth", name, defaults)


def register_pose_net(name: str, **defaults: Any):
    """Decorator: make a pose network buildable as ``build_pose_net(name, ...)``.

    forward(rgb01_a, rgb01_b) must return (axisangle (B, 3), translation (B, 3)) of ``T_b_from_a``.
    """
    return _register(POSE_NETS, "pose", name, defaults)


def _build(table: dict, kind: str, name: str, kwargs: dict[str, Any]) -> nn.Module:
    _load_architecture_modules()
    if name not in table:
        raise ValueError(f"unknown {kind} network {name!r}; registered: {sorted(table)}")
    ctor, defaults = table[name]
    unknown = sorted(set(kwargs) - set(inspect.signature(ctor).parameters))
    if unknown:
        raise TypeError(f"{kind} network {name!r} got unknown arguments {unknown}; accepted: {sorted(defaults)}")
    merged = {**defaults, **kwargs}
    net = ctor(**merged)
    # Remember how the net was built so a bundle can record it (see monodepth_training.bundle_io).
    net.registry_name = name
    net.registry_kwargs = merged
    return net


def build_depth_net(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered depth network; ``kwargs`` override its defaults."""
    return _build(DEPTH_NETS, "depth", name, kwargs)


def build_pose_net(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered pose network; ``kwargs`` override its defaults."""
    return _build(POSE_NETS, "pose", name, kwargs)


def set_initial_depth(depth_net: nn.Module, depth: float, min_depth: float, max_depth: float) -> None:
    """Make an untrained depth network start out predicting ``depth`` everywhere (model units).

    Sets the bias of each conv in front of a disparity sigmoid to the logit of the sigmoid value that
    ``sigmoid_to_disp`` maps to ``depth``; the small random weights of those convs keep the rest as is. Without
    it the sigmoids start at 0.5, i.e. at depth ~2 * min_depth, the very bottom of the range: trained from
    scratch, the depth then shrinks further (scale is free in monocular training and shrinking depth is easier
    than growing the 0.01-scaled pose translation), the nearest pixels saturate at ``min_depth`` and, with
    auto-masking, stop receiving gradient. Networks opt in with a ``disparity_head_biases()`` method.
    """
    heads = getattr(depth_net, "disparity_head_biases", None)
    if heads is None:
        name = getattr(depth_net, "registry_name", type(depth_net).__name__)
        raise ValueError(f"depth network {name!r} has no sigmoid disparity heads to initialise (init_depth)")
    sigma = depth_to_sigmoid(depth, min_depth, max_depth)
    logit = math.log(sigma / (1.0 - sigma))
    with torch.no_grad():
        for bias in heads():
            bias.fill_(logit)


def list_models() -> dict[str, list[str]]:
    """Registered names: ``{"depth": [...], "pose": [...]}``."""
    _load_architecture_modules()
    return {"depth": sorted(DEPTH_NETS), "pose": sorted(POSE_NETS)}


# Monodepth2 is registered eagerly: it is the default and every other part of the project uses it.
from monodepth_training.networks.monodepth2 import Monodepth2DepthNet, Monodepth2PoseNet  # noqa: E402

register_depth_net("monodepth2", num_layers=18, pretrained_path=None, scales=(0, 1, 2, 3))(Monodepth2DepthNet)
register_pose_net("monodepth2_pose", num_layers=18, pretrained_path=None)(Monodepth2PoseNet)
