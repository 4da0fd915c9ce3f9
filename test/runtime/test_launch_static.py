"""Static checks of launch/depth.launch.py, config/depth_node.yaml and launch/rviz/depth.rviz.

launch_ros is not installable here, so the launch file is parsed with ``ast`` and checked against the node's single
source of truth, ``monodepth_ros.node_params.PARAMETERS`` / ``TOPICS``. Its launch-free helpers (which executable,
which overrides, which Fast DDS variables, the RViz remaps) are run for real: the file is executed without its
``launch``/``launch_ros`` imports, and only those helpers are called.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from monodepth_ros import ros_compat
from monodepth_ros.node_params import PARAM_BY_NAME, PARAMETERS, TOPICS, validate_parameter

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "depth.launch.py"
CONFIG = REPO / "config" / "depth_node.yaml"
RVIZ = REPO / "launch" / "rviz" / "depth.rviz"
LAUNCH_PACKAGES = ("launch", "launch_ros")


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    source = LAUNCH.read_text()
    compile(source, str(LAUNCH), "exec")  # syntax only
    return ast.parse(source)


@pytest.fixture(scope="module")
def helpers(tree) -> dict:
    """The launch file's module namespace, executed without its launch/launch_ros imports (nothing is launched:
    generate_launch_description and launch_setup are only defined)."""
    body = [n for n in tree.body if not (isinstance(n, ast.ImportFrom) and n.module.split(".")[0] in LAUNCH_PACKAGES)
            and not (isinstance(n, ast.Import) and any(a.name.split(".")[0] in LAUNCH_PACKAGES for a in n.names))]
    namespace: dict = {"__name__": "depth_launch_helpers"}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(LAUNCH), "exec"), namespace)  # noqa: S102
    return namespace


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node):
    return node.value if isinstance(node, ast.Constant) else None


def _function(tree, name) -> ast.FunctionDef:
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def _launch_args(tree, helpers) -> dict[str, ast.Call]:
    """Declared launch arguments: literal names, plus the OVERRIDE_ARGS comprehension's."""
    args = {}
    for c in _calls(tree, "DeclareLaunchArgument"):
        if _const(c.args[0]) is not None:
            args[_const(c.args[0])] = c
    comps = [n for n in ast.walk(tree) if isinstance(n, ast.ListComp | ast.GeneratorExp)
             and isinstance(n.elt, ast.Call) and getattr(n.elt.func, "id", None) == "DeclareLaunchArgument"]
    assert len(comps) == 1 and getattr(comps[0].generators[0].iter, "id", None) == "OVERRIDE_ARGS"
    for name in helpers["OVERRIDE_ARGS"]:
        assert name not in args, f"{name} declared twice"
        args[name] = comps[0].elt
    return args


def _node_calls(tree, package) -> list[ast.Call]:
    return [c for c in _calls(tree, "Node") if _const(_kw(c, "package")) == package]


def _depth_node_call(tree) -> ast.Call:
    nodes = _node_calls(tree, "monodepth_ros")
    assert len(nodes) == 1
    return nodes[0]


def _config_params() -> dict:
    doc = yaml.safe_load(CONFIG.read_text())
    assert len(doc) == 1
    return next(iter(doc.values()))["ros__parameters"]


def _console_scripts() -> dict[str, str]:
    return dict(re.findall(r'"([\w-]+) = ([\w.]+:main)"', (REPO / "setup.py").read_text()))


def test_managed_argument_chooses_the_plain_or_the_lifecycle_console_script(tree, helpers):
    args = _launch_args(tree, helpers)
    assert _const(_kw(args["managed"], "default_value")) == "false"
    scripts = _console_scripts()
    assert scripts["depth_node"] == "monodepth_ros.depth_node:main"
    assert scripts["depth_node_managed"] == "monodepth_ros.managed_node:main"
    parse_bool, executable_for = helpers["parse_bool"], helpers["executable_for"]
    assert executable_for(parse_bool("managed", "false")) == "depth_node"
    assert executable_for(parse_bool("managed", "False")) == "depth_node"
    assert executable_for(parse_bool("managed", "true")) == "depth_node_managed"
    assert executable_for(parse_bool("managed", "1")) == "depth_node_managed"
    with pytest.raises(ValueError, match="managed"):
        parse_bool("managed", "yes please")
    # The node action takes its executable from that choice, and the docstring says who drives the lifecycle.
    call = _depth_node_call(tree)
    assert getattr(_kw(call, "executable").func, "id", None) == "executable_for"
    doc = ast.get_docstring(tree)
    assert "managed:=true" in doc and "nav2_lifecycle_manager" in doc and "ros2 lifecycle set" in doc


def test_every_parameter_the_launch_file_passes_is_declared_by_the_node(tree, helpers):
    setup = _function(tree, "launch_setup")
    assign = next(n for n in ast.walk(setup) if isinstance(n, ast.Assign)
                  and getattr(n.targets[0], "id", None) == "parameters")
    first, model = assign.value.elts
    # The parameter file first: the launch argument whose default is <share>/config/depth_node.yaml ...
    assert getattr(first.func, "id", None) == "LaunchConfiguration"
    default = _kw(_launch_args(tree, helpers)[_const(first.args[0])], "default_value")
    assert [_const(e) for e in default.args[0].elts if _const(e)] == ["config", CONFIG.name]
    # ... then model_path, then the overrides that were given (appended last: they win).
    assert [_const(k) for k in model.keys] == ["model_path"]
    assert set(helpers["OVERRIDE_ARGS"]) <= set(PARAM_BY_NAME), set(helpers["OVERRIDE_ARGS"]) - set(PARAM_BY_NAME)
    for wanted in ("rectify", "scan_frame_id", "scale_policy", "camera_height_m"):
        assert wanted in helpers["OVERRIDE_ARGS"]


def test_override_arguments_are_empty_by_default_and_set_only_when_given(tree, helpers):
    args = _launch_args(tree, helpers)
    for name in helpers["OVERRIDE_ARGS"]:
        assert _const(_kw(args[name], "default_value")) == ""
    given = helpers["given_overrides"]
    assert given({name: "" for name in helpers["OVERRIDE_ARGS"]}) == {}  # nothing given: the params file rules
    values = given({"rectify": "off", "scale_policy": "ground_plane", "camera_height_m": "1.2", "decimation": "2",
                    "use_compressed": "true", "fixed_scale": "3", "scan_frame_id": "123", "qos": " "})
    assert values == {"rectify": "off", "scale_policy": "ground_plane", "camera_height_m": 1.2, "decimation": 2,
                      "use_compressed": True, "fixed_scale": 3.0, "scan_frame_id": "123"}
    for name, value in values.items():  # typed as the node declares them
        assert type(value) is type(PARAM_BY_NAME[name].default), name
    with pytest.raises(ValueError, match="camera_height_m"):
        given({"camera_height_m": "high"})


def test_fast_dds_profile_uses_ros_compat_and_keeps_a_users_profile(tree, helpers):
    env_for = helpers["fast_dds_profile_env"]
    dds, rtps = ros_compat.FASTDDS_PROFILE_VAR, ros_compat.FASTRTPS_PROFILE_VAR
    # Fast DDS 2.x (Humble, Jazzy) reads only FASTRTPS_...; 3.x reads FASTDDS_... (and warns on the old name).
    assert env_for({}, "/p.xml", 2) == {dds: "/p.xml", rtps: "/p.xml"}
    assert env_for({}, "/p.xml", 3) == {dds: "/p.xml"}
    assert env_for({}, "/p.xml", None) == ros_compat.profile_env("/p.xml")
    for user in ({rtps: "/mine.xml"}, {dds: "/mine.xml"}, {dds: "/a.xml", rtps: "/b.xml"}):
        assert env_for(user, "/p.xml", 2) == {} and env_for(user, "/p.xml", 3) == {}
    assert env_for({rtps: ""}, "/p.xml", 2) == {dds: "/p.xml", rtps: "/p.xml"}  # set but empty = not set
    # No variable name of its own: ros_compat is the one place that knows them.
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in (dds, rtps)]
    # The profile is the shipped config/fastdds.xml, set before the depth node starts.
    setup = _function(tree, "launch_setup")
    joins = [c for c in _calls(setup, "PathJoinSubstitution") if "fastdds.xml" in ast.unparse(c)]
    assert len(joins) == 1 and [_const(e) for e in joins[0].args[0].elts if _const(e)] == ["config", "fastdds.xml"]
    assert (REPO / "config" / "fastdds.xml").is_file()
    set_env = _calls(setup, "SetEnvironmentVariable")
    appends = [n for n in ast.walk(setup) if isinstance(n, ast.Call) and ast.unparse(n) == "actions.append(depth_node)"]
    assert len(set_env) == 1 and len(appends) == 1 and set_env[0].lineno < appends[0].lineno
    assert _calls(tree, "LaunchDescription")[0].args[0].elts[-1].func.id == "OpaqueFunction"


def test_two_cameras_in_two_namespaces_do_not_collide(tree, helpers):
    """Node name, topics and RViz of ``namespace:=left`` and ``namespace:=right`` launches are all distinct."""
    depth_node = _depth_node_call(tree)
    (rviz,) = _node_calls(tree, "rviz2")
    for call in (depth_node, rviz):  # both in the namespace: /left/depth_node, /left/rviz2
        assert ast.unparse(_kw(call, "namespace")) == "LaunchConfiguration('namespace')"
        assert isinstance(_kw(call, "name"), ast.Constant)
    resolve, remaps = helpers["resolve_topic"], helpers["rviz_remaps"]
    args = _launch_args(tree, helpers)
    defaults = {a: _const(_kw(args[a], "default_value")) for a in set(helpers["RVIZ_TOPICS"].values())}
    for topic in TOPICS:
        assert resolve("left", topic) != resolve("right", topic)
    assert resolve("left", "/shared/image") == "/shared/image" and resolve("", "scan") == "/scan"
    # RViz shows the default namespace's topics as written in depth.rviz; other namespaces are remapped onto them.
    assert remaps("camera", defaults) == []
    left, right = dict(remaps("left", defaults)), dict(remaps("/right", defaults))
    assert left == {"/camera/points": "/left/points", "/camera/depth/colored": "/left/depth/colored",
                    "/camera/image_raw": "/left/image_raw", "/camera/scan": "/left/scan"}
    assert not set(left.values()) & set(right.values())
    moved = dict(remaps("left", dict(defaults, image="/cams/left/image_raw")))
    assert moved["/camera/image_raw"] == "/cams/left/image_raw"
    assert "fixed_frame" in args and "-f" in ast.unparse(_function(tree, "launch_setup"))


def test_launch_arguments_cover_every_substitution_and_remap_only_node_topics(tree, helpers):
    declared = set(_launch_args(tree, helpers))
    used = {_const(c.args[0]) for c in _calls(tree, "LaunchConfiguration")} - {None}
    used |= {_const(c.args[0]) for c in _calls(_function(tree, "launch_setup"), "arg")} - {None}
    assert used <= declared, used - declared
    remaps = _kw(_depth_node_call(tree), "remappings")
    sources = {_const(t.elts[0]) for t in remaps.elts}
    assert sources == set(TOPICS)


def test_rviz_config_shows_cloud_depth_image_and_a_documented_scan_of_the_default_namespace(tree, helpers):
    cfg = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]
    assert cfg["Global Options"]["Fixed Frame"] == "camera_optical_frame"
    topics = {d["Class"]: [] for d in cfg["Displays"]}
    for d in cfg["Displays"]:
        topics[d["Class"]].append(d.get("Topic", {}).get("Value"))
    args = _launch_args(tree, helpers)
    ns = _const(_kw(args["namespace"], "default_value"))
    assert f"/{ns}/{_const(_kw(args['points'], 'default_value'))}" in topics["rviz_default_plugins/PointCloud2"]
    assert f"/{ns}/{_const(_kw(args['depth_colored'], 'default_value'))}" in topics["rviz_default_plugins/Image"]
    assert topics["rviz_default_plugins/LaserScan"] == [f"/{ns}/{_const(_kw(args['scan'], 'default_value'))}"]
    (scan,) = [d for d in cfg["Displays"] if d["Class"] == "rviz_default_plugins/LaserScan"]
    assert scan["Enabled"] is False and "scan_frame_id" in RVIZ.read_text()
    assert "LaserScan display" in ast.get_docstring(tree)  # why it is off, in the launch file's docstring
    # Every display topic is one the launch file knows how to follow into another namespace.
    shown = {t for ts in topics.values() for t in ts if t}
    assert shown == set(helpers["RVIZ_TOPICS"])


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
