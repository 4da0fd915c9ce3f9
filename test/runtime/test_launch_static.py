"""Static checks of launch/depth.launch.py, config/depth_node.yaml and launch/rviz/depth.rviz.

launch_ros is not installable here, so the launch file is parsed with ``ast`` (never executed) and checked
against the node's single source of truth, ``monodepth_ros.node_params.PARAMETERS`` / ``TOPICS``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from monodepth_ros.node_params import PARAM_BY_NAME, PARAMETERS, TOPICS, validate_parameter

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "depth.launch.py"
CONFIG = REPO / "config" / "depth_node.yaml"
RVIZ = REPO / "launch" / "rviz" / "depth.rviz"


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    source = LAUNCH.read_text()
    compile(source, str(LAUNCH), "exec")  # syntax only
    return ast.parse(source)


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node):
    return node.value if isinstance(node, ast.Constant) else None


def _launch_args(tree) -> dict[str, ast.Call]:
    return {_const(c.args[0]): c for c in _calls(tree, "DeclareLaunchArgument")}


def _depth_node_call(tree) -> ast.Call:
    nodes = [c for c in _calls(tree, "Node") if _const(_kw(c, "package")) == "monodepth_ros"]
    assert len(nodes) == 1
    return nodes[0]


def _config_params() -> dict:
    doc = yaml.safe_load(CONFIG.read_text())
    assert len(doc) == 1
    return next(iter(doc.values()))["ros__parameters"]


def test_launch_starts_the_declared_console_script(tree):
    call = _depth_node_call(tree)
    assert _const(_kw(call, "executable")) == "depth_node"
    assert "depth_node = monodepth_ros.depth_node:main" in (REPO / "setup.py").read_text()


def test_every_parameter_the_launch_file_passes_is_declared_by_the_node(tree):
    params = _kw(_depth_node_call(tree), "parameters")
    assert isinstance(params, ast.List)
    dict_keys, files = [], []
    for el in params.elts:
        if isinstance(el, ast.Dict):
            dict_keys += [_const(k) for k in el.keys]
        else:
            files.append(el)
    assert dict_keys and set(dict_keys) <= set(PARAM_BY_NAME), set(dict_keys) - set(PARAM_BY_NAME)
    # The parameter file is the launch argument whose default is <share>/config/depth_node.yaml.
    assert len(files) == 1 and getattr(files[0].func, "id", None) == "LaunchConfiguration"
    default = _kw(_launch_args(tree)[_const(files[0].args[0])], "default_value")
    parts = [_const(e) for e in default.args[0].elts if _const(e)]
    assert parts == ["config", CONFIG.name]


def test_every_key_of_the_parameter_file_is_declared_and_valid():
    values = _config_params()
    unknown = set(values) - set(PARAM_BY_NAME)
    assert not unknown, f"config keys the node does not declare: {unknown}"
    current = {p.name: p.default for p in PARAMETERS} | values
    for name, value in values.items():
        default = PARAM_BY_NAME[name].default
        assert type(value) is type(default), f"{name}: {value!r} is not {type(default).__name__}"
        assert validate_parameter(name, value, current) is None
    # Documentation by example: every parameter but the per-deployment model path is in the file.
    assert set(PARAM_BY_NAME) - set(values) == {"model_path"}


def test_parameter_table_has_descriptions_and_consistent_ranges():
    for p in PARAMETERS:
        assert p.description
        assert validate_parameter(p.name, p.default, {q.name: q.default for q in PARAMETERS}) is None
        if p.lo is not None:
            assert isinstance(p.default, int | float) and p.lo < p.hi


def test_launch_arguments_cover_every_substitution_and_remap_only_node_topics(tree):
    declared = set(_launch_args(tree))
    used = {_const(c.args[0]) for c in _calls(tree, "LaunchConfiguration")}
    assert used <= declared, used - declared
    remaps = _kw(_depth_node_call(tree), "remappings")
    sources = {_const(t.elts[0]) for t in remaps.elts}
    assert sources == set(TOPICS)


def test_launch_sets_the_fast_dds_profile_before_starting_nodes(tree):
    calls = _calls(tree, "SetEnvironmentVariable")
    assert len(calls) == 1
    assert _const(calls[0].args[0]) == "FASTDDS_DEFAULT_PROFILES_FILE"
    assert [_const(e) for e in calls[0].args[1].args[0].elts if _const(e)] == ["config", "fastdds.xml"]
    assert (REPO / "config" / "fastdds.xml").is_file()
    ld = _calls(tree, "LaunchDescription")[0].args[0]
    names = [getattr(e, "id", None) or getattr(getattr(e, "value", None), "id", None) for e in ld.elts]
    assert names.index("fastdds_profile") < names.index("depth_node")


def test_rviz_config_shows_cloud_and_depth_image_of_the_default_namespace(tree):
    cfg = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]
    assert cfg["Global Options"]["Fixed Frame"] == "camera_optical_frame"
    topics = {d["Class"]: [] for d in cfg["Displays"]}
    for d in cfg["Displays"]:
        topics[d["Class"]].append(d.get("Topic", {}).get("Value"))
    args = _launch_args(tree)
    ns = _const(_kw(args["namespace"], "default_value"))
    assert f"/{ns}/{_const(_kw(args['points'], 'default_value'))}" in topics["rviz_default_plugins/PointCloud2"]
    assert f"/{ns}/{_const(_kw(args['depth_colored'], 'default_value'))}" in topics["rviz_default_plugins/Image"]
