"""The runtime (``monodepth_ros/``) stays importable on Python 3.10: ROS 2 Humble on Ubuntu 22.04 and JetPack 6
ship 3.10. Every module parses with the 3.10 grammar and uses no standard-library name added in 3.11 or later.
(The trainer, ``training/``, may use 3.11: it runs in the project's venv.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "monodepth_ros"

# Standard-library names that Python 3.10 does not have: module -> names (the version that added them).
NEWER_NAMES: dict[str, dict[str, str]] = {
    "datetime": {"UTC": "3.11"},
    "typing": {"Self": "3.11", "LiteralString": "3.11", "Never": "3.11", "assert_never": "3.11",
               "assert_type": "3.11", "reveal_type": "3.11", "Required": "3.11", "NotRequired": "3.11",
               "TypeVarTuple": "3.11", "Unpack": "3.11", "dataclass_transform": "3.11", "override": "3.12",
               "TypeAliasType": "3.12", "ReadOnly": "3.13", "TypeIs": "3.13"},
    "enum": {"StrEnum": "3.11", "ReprEnum": "3.11", "EnumCheck": "3.11", "FlagBoundary": "3.11", "verify": "3.11",
             "member": "3.11", "nonmember": "3.11", "global_enum": "3.11"},
    "asyncio": {"TaskGroup": "3.11", "timeout": "3.11", "timeout_at": "3.11", "Runner": "3.11", "Barrier": "3.11"},
    "contextlib": {"chdir": "3.11"},
    "hashlib": {"file_digest": "3.11"},
    "operator": {"call": "3.11"},
    "itertools": {"batched": "3.12"},
    "inspect": {"markcoroutinefunction": "3.12"},
}
NEWER_MODULES = {"tomllib": "3.11", "wsgiref.types": "3.11"}
NEWER_BUILTINS = {"ExceptionGroup": "3.11", "BaseExceptionGroup": "3.11"}


def newer_than_310(source: str, filename: str = "<src>") -> list[str]:
    """Uses of syntax or standard-library names newer than Python 3.10 in ``source``, one line each."""
    try:
        tree = ast.parse(source, filename, feature_version=(3, 10))
    except SyntaxError as e:
        return [f"{filename}:{e.lineno}: 3.10 syntax error: {e.msg}"]
    found = []
    aliases: dict[str, str] = {}  # local name -> standard module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in NEWER_MODULES:
                    found.append(f"{filename}:{node.lineno}: import {a.name} ({NEWER_MODULES[a.name]}+)")
                if a.name in NEWER_NAMES:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in NEWER_MODULES:
                found.append(f"{filename}:{node.lineno}: from {node.module} ({NEWER_MODULES[node.module]}+)")
            for a in node.names:
                if a.name in NEWER_NAMES.get(node.module, {}):
                    found.append(f"{filename}:{node.lineno}: from {node.module} import {a.name} "
                                 f"({NEWER_NAMES[node.module][a.name]}+)")
        elif type(node).__name__ in ("TryStar", "TypeAlias", "TypeVar", "ParamSpec", "TypeVarTuple"):
            found.append(f"{filename}:{node.lineno}: {type(node).__name__} syntax (3.11+)")
        elif isinstance(node, ast.Name) and node.id in NEWER_BUILTINS:
            found.append(f"{filename}:{node.lineno}: builtin {node.id} ({NEWER_BUILTINS[node.id]}+)")
    for node in ast.walk(tree):  # module.NAME, once every alias is known
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = aliases[node.value.id]
            if node.attr in NEWER_NAMES[module]:
                found.append(f"{filename}:{node.lineno}: {module}.{node.attr} ({NEWER_NAMES[module][node.attr]}+)")
    return sorted(set(found))


def test_checker_finds_311_syntax_and_names():
    src = ("import datetime as _dt\nimport tomllib\nfrom typing import Self\nfrom enum import StrEnum\n"
           "import asyncio\nx = _dt.datetime.now(_dt.UTC)\ng = asyncio.TaskGroup\n"
           "try:\n    pass\nexcept* ValueError:\n    pass\n")
    (err,) = newer_than_310(src)
    assert "3.10 syntax error" in err and "Exception groups" in err
    found = newer_than_310(src.split("try:")[0] + "e = ExceptionGroup\n")
    for what in ("import tomllib", "typing import Self", "enum import StrEnum", "datetime.UTC", "asyncio.TaskGroup",
                 "builtin ExceptionGroup"):
        assert any(what in f for f in found), (what, found)
    ok = ("import datetime as _dt\nfrom datetime import datetime, timezone\nx = _dt.datetime.now(_dt.timezone.utc)\n"
          "match x:\n    case _:\n        pass\n")
    assert newer_than_310(ok) == []


MODULES = sorted(RUNTIME.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(RUNTIME.parent)) for p in MODULES])
def test_runtime_module_is_python_310_compatible(path):
    assert newer_than_310(path.read_text(encoding="utf-8"), str(path.relative_to(RUNTIME.parent))) == []
