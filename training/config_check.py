"""Up-front check of a ``monodepth-train`` config for misspelt keys, before anything is built.

jsonargparse reports an unknown ``model.*`` / ``trainer.*`` key only after a full usage dump and without a
suggestion, and cannot see inside ``data.train`` / ``data.val`` (free dicts), where a typo surfaced only when the
dataset was built, after the model. Here every key is checked against what will receive it:

- the top-level sections against the subcommand's (``seed_everything``, ``trainer``, ``model``, ``data`` and the
  ``Trainer.<subcommand>`` arguments such as ``ckpt_path``);
- ``model.*``, ``data.*`` and ``trainer.*`` against the signatures of MonoDepthModule, DepthDataModule and
  Lightning's Trainer;
- ``data.train`` / ``data.val`` against the chosen source's constructor (and its base class's, where it passes
  ``**kwargs`` on), each part of a ``mix`` source likewise, and the source name against the known ones.

:func:`check_config` is pure (a merged config dict in, problem strings out); :func:`config_from_args` rebuilds that
dict from the command line the way jsonargparse merges it (``--config`` files in order, then ``--a.b value``
overrides), so a typo on the command line is caught like one in the YAML. Both are conservative: what they cannot
read is left to jsonargparse, which still reports it.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

SECTIONS = ("seed_everything", "trainer", "model", "data")
# Accepted at the top of a config without being settings (LightningCLI's own options).
_SILENT_TOP = {"config", "print_config"}
# A mix part's own key beside its source's arguments (see datasets/mix.py).
_MIX_PART_KEYS = {"repeat"}


def init_keys(cls: type) -> set[str]:
    """Keyword arguments ``cls(...)`` accepts by name: its ``__init__``'s, and where that passes ``**kwargs`` on,
    its base classes' in method-resolution order (what ``super().__init__(**kwargs)`` reaches)."""
    keys: set[str] = set()
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            break
        params = inspect.signature(init).parameters.values()
        keys |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return keys


def _subcommand_keys(subcommand: str) -> set[str]:
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    skip = LightningCLI.subcommands().get(subcommand, set())
    method = getattr(L.Trainer, subcommand, None)
    args = set(inspect.signature(method).parameters) - {"self"} - set(skip) if method else set()
    return set(SECTIONS) | args


def _unknown(path: str, key: str, valid: Iterable[str], where: str) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    prefix, what = (f"{path}.", "key") if path else ("", "section")
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    return f"unknown {what} {prefix}{key}{hint}\n  valid {what}s in {where}: {', '.join(valid)}"


def _check_keys(section: dict, path: str, valid: set[str], where: str) -> list[str]:
    return [_unknown(path, str(k), valid, where) for k in section if k not in valid]


def _source_class(source: str) -> type | None:
    from monodepth_training.datasets import SOURCES

    try:
        return SOURCES[source]()
    except ImportError:  # a source whose dependencies are missing: building it will say so
        return None


def check_source(spec: Any, path: str, in_mix: bool = False) -> list[str]:
    """Problems in one dataset spec (``{"source": ..., <that source's arguments>}``) found at ``path``."""
    from monodepth_training.datasets import SOURCES
    from monodepth_training.datasets.base import MonoDataset

    if not isinstance(spec, dict):
        return [f"{path} must be a mapping with a 'source' key (one of {', '.join(sorted(SOURCES))}), got {spec!r}"]
    source = spec.get("source")
    if source is None:
        return [f"{path} has no 'source' key; valid sources: {', '.join(sorted(SOURCES))}"]
    if source not in SOURCES:
        close = difflib.get_close_matches(str(source), sorted(SOURCES), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return [f"unknown source {path}.source={source!r}{hint}\n  valid sources: {', '.join(sorted(SOURCES))}"]
    if in_mix and source == "mix":
        return [f"{path}: a mix cannot contain another mix"]
    cls = _source_class(source)
    if cls is None:
        return []
    valid = init_keys(cls) | {"source"} | (_MIX_PART_KEYS if in_mix else set())
    if source == "mix":  # the rest of a mix's arguments reach every part: what every source takes
        valid |= init_keys(MonoDataset)
    problems = _check_keys(spec, path, valid, f"{path} (source {source!r})")
    if source == "mix" and isinstance(spec.get("parts"), list):
        for i, part in enumerate(spec["parts"]):
            problems += check_source(part, f"{path}.parts[{i}]", in_mix=True)
    return problems


def check_config(cfg: dict[str, Any], subcommand: str = "fit") -> list[str]:
    """Unknown keys (and dataset sources) in a merged ``monodepth-train <subcommand>`` config, each as a short
    message naming the key's full path, the nearest valid key and the valid keys. Empty when all is known."""
    import lightning as L
    from monodepth_training.data import DepthDataModule
    from monodepth_training.module import MonoDepthModule

    if not isinstance(cfg, dict):
        return [f"a config must be a mapping of sections ({', '.join(SECTIONS)}), got {type(cfg).__name__}"]
    top = _subcommand_keys(subcommand)
    problems = [_unknown("", str(k), top, f"a {subcommand} config") for k in cfg if k not in top | _SILENT_TOP]
    for name, cls in (("model", MonoDepthModule), ("data", DepthDataModule), ("trainer", L.Trainer)):
        section = cfg.get(name)
        if isinstance(section, dict):
            problems += _check_keys(section, name, init_keys(cls), f"{name} ({cls.__name__})")
    data = cfg.get("data")
    if isinstance(data, dict):
        for split in ("train", "val"):
            if data.get(split) is not None or (split == "train" and split in data):
                problems += check_source(data[split], f"data.{split}")
    return problems


# --- the command line -> the config it amounts to ----------------------------------------------------------------

def _parse(value: str | None) -> Any:
    """A command-line value as jsonargparse reads it: YAML (JSON included), else the string itself."""
    try:
        return yaml.safe_load(value) if value is not None else None
    except yaml.YAMLError:
        return value


def _load(value: str | None) -> Any:
    """A ``--config`` (or a ``--model`` / ``--data`` / ``--trainer``) value: a YAML file's content, else the value
    read as YAML. ``None`` when the file cannot be read (jsonargparse will say why)."""
    if value is None:
        return None
    try:
        path = Path(value).expanduser()
        if path.is_file():
            return yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return _parse(value)


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    """Merge a config into ``dst`` like jsonargparse: sections key by key, the values inside them (a whole
    ``data.train`` dict, say) replaced."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            dst[key].update(copy.deepcopy(value))
        else:
            dst[key] = copy.deepcopy(value)


def _set(cfg: dict[str, Any], dotted: str, raw: str | None, append: bool) -> None:
    keys = dotted.split(".")
    if len(keys) == 1:
        _merge(cfg, {keys[0]: _load(raw) if keys[0] in ("model", "data", "trainer") else _parse(raw)})
        return
    value = _parse(raw)
    node = cfg
    for key in keys[:-1]:
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            return  # e.g. --trainer.callbacks.path: an argument of the last callback, not checked here
    if append and isinstance(node.get(keys[-1]), list):
        node[keys[-1]].append(value)
    else:
        node[keys[-1]] = value


def config_from_args(argv: Sequence[str], subcommands: Iterable[str]) -> tuple[str, dict[str, Any]] | None:
    """(subcommand, config) that ``argv`` (without the program name) amounts to; ``None`` when there is nothing
    to check (no subcommand, ``--help``) or the arguments are not plain strings."""
    subcommands = set(subcommands)
    argv = list(argv)
    if not all(isinstance(a, str) for a in argv):
        return None
    sub: str | None = None
    cfg: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if sub is None and token in subcommands:
            sub = token
            continue
        if not token.startswith("-") or token == "-":
            continue  # a stray positional: jsonargparse reports it
        if token in ("-h", "--help"):
            return None
        name, eq, raw = token.partition("=")
        if not eq:
            raw = None
            if i < len(argv) and not argv[i].startswith("--") and argv[i] not in subcommands:
                raw, i = argv[i], i + 1
        key = name.lstrip("-")
        append = key.endswith("+")
        key = key.rstrip("+")
        if key in ("c", "config"):
            loaded = _load(raw)
            if isinstance(loaded, dict) and sub is None:  # a top-level config: `fit: {...}`
                loaded = loaded.get(next(iter(subcommands & set(argv)), ""), None)
            if isinstance(loaded, dict):
                _merge(cfg, loaded)
        elif sub is not None and key != "print_config" and key:
            _set(cfg, key, raw, append)
    return (sub, cfg) if sub is not None else None


def format_problems(problems: list[str], prog: str = "monodepth-train fit") -> str:
    """The message printed for ``problems``: ``PROG: error: ...`` naming the (first) problem, the valid keys, and
    where to look further."""
    if len(problems) == 1:
        head, *rest = problems[0].splitlines()
        lines = [f"{prog}: error: {head}", *rest]
    else:
        lines = [f"{prog}: error: {len(problems)} problems in the config:"]
        lines += [f"  {line}" for problem in problems for line in problem.splitlines()]
    lines.append(f"  (nothing was built or run; see {prog} --help)")
    return "\n".join(lines)
