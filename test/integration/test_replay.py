"""monodepth-replay end to end: in-process scoring equals the evaluation code on the same frames, the real node
over DDS answers >= 90 % of a 10 Hz bag, lidar GT works through the CLI, bad bags exit 2 with one line.

Data: a synthetic-world bag (160x64) and a tiny ONNX depth model built here (a 3x3 conv + sigmoid mapped to
Monodepth2's disparity range), carrying the exporter's metadata so every backend check runs on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from monodepth_ros import replay
from monodepth_ros.backends import (
    OnnxRuntimeBackend,
    create_backend,
    openvino_unavailable_reason,
    tensorrt_unavailable_reason,
)
from monodepth_ros.evaluation.metrics import METRIC_NAMES, evaluate_depth
from monodepth_ros.geometry import backproject, invert_pose
from monodepth_ros.replay import ReplayConfig, run_replay
from monodepth_ros.replay.config import RECORDABLE

pytestmark = pytest.mark.rosdistro  # ROS-facing: `make test-jazzy` runs this module on ROS 2 Jazzy too

W_PX, H_PX = 160, 64
N_FRAMES = 20  # 2 s at the synthetic world's 10 Hz
IMG, INFO, GT = "/camera/image_raw", "/camera/camera_info", "/camera/depth_gt"
OUT_TOPICS = {"/camera/depth": "sensor_msgs/msg/Image", "/camera/depth/camera_info": "sensor_msgs/msg/CameraInfo",
              "/camera/points": "sensor_msgs/msg/PointCloud2", "/camera/depth/colored": "sensor_msgs/msg/Image"}
TS = get_typestore(Stores.ROS2_KILTED)
T_CAM_FROM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.3], [1.0, 0.0, 0.0, -0.2], [0, 0, 0, 1.0]])


def make_tiny_onnx(path: Path, scale_policy: str = "relative", min_depth: float = 0.1, max_depth: float = 100.0,
                   slow_layers: int = 0):
    """A (1,3,H,W) -> (1,1,H,W) disparity model: conv3x3 -> sigmoid -> [1/max_depth, 1/min_depth].

    ``slow_layers`` > 0 first runs that many 48-channel 3x3 convs (~0.1 GFLOP each at 160x64): a model too
    slow for the node to keep up with a fast playback, so that it must drop frames.
    """
    from onnx import helper, numpy_helper
    from tiny_depth_model import save_disparity_graph

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.normal(size=(1, 48 if slow_layers else 3, 3, 3)) * 0.5).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([-1.0], np.float32), "b"),
        numpy_helper.from_array(np.array(1 / min_depth - 1 / max_depth, np.float32), "k"),
        numpy_helper.from_array(np.array(1 / max_depth, np.float32), "o"),
    ]
    nodes, x = [], "rgb"
    for i in range(slow_layers):
        c_in = 3 if i == 0 else 48
        inits.append(numpy_helper.from_array((rng.normal(size=(48, c_in, 3, 3)) * 0.1).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"h{i}"], pads=[1, 1, 1, 1]))
        x = f"h{i}"
    nodes += [helper.make_node("Conv", [x, "w", "b"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["s", "k"], ["m"]),
              helper.make_node("Add", ["m", "o"], ["disp"])]
    meta = {"height": H_PX, "width": W_PX, "min_depth": min_depth, "max_depth": max_depth,
            "scale_policy": scale_policy, "scale": 1.0, "mean": [0.45] * 3, "std": [0.225] * 3,
            "intrinsics_norm": None, "source_sha256": "0" * 64, "depth_net": "tiny_test"}
    return save_disparity_graph(path, nodes, inits, H_PX, W_PX, meta, name="tiny")


@pytest.fixture(scope="module")
def world():
    from monodepth_ros.synthetic.world import SynthConfig, SyntheticWorld

    return SyntheticWorld(SynthConfig(width=W_PX, height=H_PX, seed=1))


@pytest.fixture(scope="module")
def synth_bag(world, tmp_path_factory):
    from monodepth_ros.synthetic.writers import write_bag

    return write_bag(world, tmp_path_factory.mktemp("bag") / "drive", N_FRAMES, storage="mcap")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def in_process_report(synth_bag, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("replay_inproc")
    return run_replay(ReplayConfig(bag=synth_bag, out_dir=out, model=tiny_model, gt_topic=GT, quiet=True)), out


def _bag_counts(bag: Path) -> dict[str, tuple[str, int]]:
    with AnyReader([bag]) as r:
        return {name: (t.msgtype, t.msgcount) for name, t in r.topics.items()}


def _stamps(bag: Path, topic: str) -> set[int]:
    with AnyReader([bag]) as r:
        return {t for _, t, _ in r.messages(connections=[c for c in r.connections if c.topic == topic])}


def test_in_process_metrics_equal_the_evaluation_code_on_the_same_frames(in_process_report, world, tiny_model):
    report, _ = in_process_report
    backend = create_backend(tiny_model)  # what the replay's --backend auto runs
    gts, preds = [], []
    for i in range(N_FRAMES):  # straight from the renderer: independent of the bag reader
        f = world.render(i)
        gts.append(f.depth_m)
        preds.append(backend.infer(f.rgb, out_size=f.depth_m.shape))
    ref = evaluate_depth(gts, preds, median_scaling=True, crop=None)
    assert report["frames"]["scored"] == N_FRAMES and report["settings"]["median_scaling"] is True
    for name in METRIC_NAMES:
        assert report["metrics"][name] == pytest.approx(ref.metrics[name], abs=1e-6, rel=1e-6), name
    assert report["scale"]["ratio_mean"] == pytest.approx(ref.ratio_mean, rel=1e-6)
    assert report["scale"]["ratio_std"] == pytest.approx(ref.ratio_std, rel=1e-6, abs=1e-9)
    per_frame_abs_rel = [f["abs_rel"] for f in report["per_frame"]]
    np.testing.assert_allclose(per_frame_abs_rel, [p["abs_rel"] for p in ref.per_image], rtol=1e-6)


@pytest.mark.skipif(openvino_unavailable_reason() is not None, reason=str(openvino_unavailable_reason()))
@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_cli_backend_choice_runs_that_backend_and_scores_like_onnx_runtime(synth_bag, tiny_model, world, tmp_path,
                                                                          backend, capsys):
    n = 5
    rc = replay.main(["--bag", str(synth_bag), "--model", str(tiny_model), "--gt-topic", GT, "--backend", backend,
                      "--max-frames", str(n), "--quiet", "--out", str(tmp_path / "out")])
    capsys.readouterr()
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model"]["backend"] == backend and report["frames"]["scored"] == n
    ref = OnnxRuntimeBackend(tiny_model)
    gts, preds = [], []
    for i in range(n):
        f = world.render(i)
        gts.append(f.depth_m)
        preds.append(ref.infer(f.rgb, out_size=f.depth_m.shape))
    expected = evaluate_depth(gts, preds, median_scaling=True, crop=None)
    np.testing.assert_allclose([f["abs_rel"] for f in report["per_frame"]],
                               [p["abs_rel"] for p in expected.per_image], rtol=1e-5)


def test_in_process_writes_output_bag_and_reports(in_process_report):
    report, out = in_process_report
    counts = _bag_counts(out / "replay_bag")
    # By default every node output but the clouds (the bulk of a bag) is recorded.
    expected = {IMG: "sensor_msgs/msg/Image", INFO: "sensor_msgs/msg/CameraInfo", GT: "sensor_msgs/msg/Image",
                **{t: typ for t, typ in OUT_TOPICS.items() if t != "/camera/points"}}
    assert counts == {t: (typ, N_FRAMES) for t, typ in expected.items()}
    assert _stamps(out / "replay_bag", "/camera/depth") == _stamps(out / "replay_bag", IMG)
    assert report["settings"]["record"] == ["depth", "depth_info", "colored"]
    assert report["frames"]["with_points"] == N_FRAMES  # the node built them; they were just not written
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["metrics"] == pytest.approx(report["metrics"])
    assert on_disk["frames"]["dropped"] == 0 and on_disk["latency"]["p50"] > 0
    for name in ("report.png", "panels.png"):
        img = cv2.imread(str(out / name))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 400, name
    assert "abs_rel" in (out / "report.html").read_text()


def test_record_chooses_the_node_outputs_in_the_output_bag(synth_bag, tiny_model, tmp_path):
    n = 3
    sizes = {}
    for record in ("depth,points", "depth"):
        out = tmp_path / record.replace(",", "_")
        assert replay.main(["--bag", str(synth_bag), "--model", str(tiny_model), "--gt-topic", GT, "--quiet",
                            "--max-frames", str(n), "--record", record, "--out", str(out)]) == 0
        counts = _bag_counts(out / "replay_bag")
        wanted = {"/camera/" + k for k in record.split(",")}
        assert {t for t in counts if t in OUT_TOPICS} == wanted
        assert all(counts[t][1] == n for t in wanted)
        sizes[record] = sum(f.stat().st_size for f in (out / "replay_bag").rglob("*") if f.is_file())
    assert sizes["depth,points"] > sizes["depth"]


def test_record_rejects_an_unknown_output_in_one_line(synth_bag, tiny_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        replay.main(["--bag", str(synth_bag), "--model", str(tiny_model), "--record", "depth,clouds",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("monodepth-replay: error: argument --record: unknown output 'clouds'")
    with pytest.raises(ValueError, match="--record takes distinct names"):
        ReplayConfig(bag=synth_bag, out_dir=tmp_path, record=("depth", "depth")).validate()


@pytest.mark.ros
def test_through_node_answers_90_percent_of_frames_at_the_recorded_rate(synth_bag, tiny_model, tmp_path,
                                                                        in_process_report, ros_subprocess_env):
    report = run_replay(ReplayConfig(bag=synth_bag, out_dir=tmp_path, model=tiny_model, gt_topic=GT,
                                     through_node=True, domain_id=int(ros_subprocess_env["ROS_DOMAIN_ID"]),
                                     quiet=True, record=RECORDABLE))
    fr = report["frames"]
    assert fr["input"] == N_FRAMES
    assert fr["dropped"] == N_FRAMES - fr["with_depth"] and fr["drop_rate"] == fr["dropped"] / N_FRAMES
    counts = _bag_counts(tmp_path / "replay_bag")
    in_stamps = _stamps(tmp_path / "replay_bag", IMG)
    assert len(in_stamps) == N_FRAMES
    for topic in ("/camera/depth", "/camera/points"):
        got = _stamps(tmp_path / "replay_bag", topic)
        assert got <= in_stamps and len(got) >= 0.9 * N_FRAMES, (topic, len(got))
        assert counts[topic][0] == OUT_TOPICS[topic]
    assert report["rate_hz"]["input"] == pytest.approx(10.0, rel=0.1)
    assert report["rate_hz"]["achieved"] == pytest.approx(10.0, rel=0.2)
    assert 0 < report["latency"]["p50"] <= report["latency"]["p99"] < 1000
    assert report["node"]["exit_code"] == 0
    # The node runs the same model: its depth scores like the in-process backend, frame by frame.
    ref = {f["index"]: f["abs_rel"] for f in in_process_report[0]["per_frame"]}
    for f in report["per_frame"]:
        if f["abs_rel"] is not None:
            assert f["abs_rel"] == pytest.approx(ref[f["index"]], rel=1e-4), f["index"]


def _depth_by_stamp(bag: Path, topic: str = "/camera/depth") -> dict[int, np.ndarray]:
    """The depth images (H, W) of ``topic`` in an output bag, by header stamp (ns)."""
    from monodepth_ros.msgs.image import depth_msg_to_array
    from monodepth_ros.msgs.stamps import stamp_to_ns

    with AnyReader([bag]) as r:
        conns = [c for c in r.connections if c.topic == topic]
        msgs = (r.deserialize(raw, c.msgtype) for c, _, raw in r.messages(connections=conns))
        return {stamp_to_ns(m.header.stamp): depth_msg_to_array(m) for m in msgs}


@pytest.mark.ros
@pytest.mark.parametrize("node_params", [
    [],  # fixed, the model's scale
    ["scale_policy:=relative", "max_depth:=50.0"],
    ["scale_policy:=ground_plane", "ground_smoothing:=0.5", "camera_height_m:=1.5"],
], ids=["auto", "relative", "ground_plane"])
def test_in_process_and_through_node_publish_the_same_depth(world, synth_bag, tmp_path, node_params,
                                                            ros_subprocess_env):
    """Both modes run the one per-frame pipeline with the same node parameters: the same depth, frame by frame
    (the ground-plane state included: its scale moves with each frame of this model)."""
    from tiny_depth_model import make_content_depth_model

    from monodepth_ros.geometry import scale_intrinsics

    h, w = H_PX // 2, W_PX // 2
    model = make_content_depth_model(tmp_path / "content.onnx", h, w,
                                     scale_intrinsics(world.render(0).K, w / W_PX, h / H_PX))
    n = 8
    reports = {}
    for through in (False, True):
        reports[through] = run_replay(ReplayConfig(
            bag=synth_bag, out_dir=tmp_path / f"through_{through}", model=model, gt_topic=GT, through_node=through,
            rate=0.5, max_frames=n, node_params=node_params, domain_id=int(ros_subprocess_env["ROS_DOMAIN_ID"]),
            quiet=True))
    assert reports[True]["frames"]["dropped"] == 0, "a dropped frame would change the ground-plane state"
    ours, node = (_depth_by_stamp(tmp_path / f"through_{t}" / "replay_bag") for t in (False, True))
    assert len(ours) == n and ours.keys() == node.keys()
    for stamp in ours:
        np.testing.assert_allclose(node[stamp], ours[stamp], rtol=1e-5, equal_nan=True, err_msg=str(stamp))
    for name in METRIC_NAMES:
        assert reports[True]["metrics"][name] == pytest.approx(reports[False]["metrics"][name], rel=1e-5), name
    medians = [float(np.nanmedian(d)) for d in ours.values()]
    if "scale_policy:=ground_plane" in node_params:
        assert np.ptp(medians) > 0.01 * np.mean(medians)  # the road's scale moved: state was carried, not reset
        assert not reports[False]["settings"]["median_scaling"]  # metres from the road: scored as published
    if "scale_policy:=relative" in node_params:
        assert reports[False]["settings"]["median_scaling"]  # model units are scored median-scaled
        assert max(medians) < 50.0 / 5  # model units: 5x below metres for this model


@pytest.fixture(scope="module")
def distorted_bag(synth_bag, tmp_path_factory):
    """The synthetic bag with a plumb_bob distortion in its camera_info (the pixels are unchanged: what is
    checked is that both replay modes rectify the same way, not the rectification itself)."""
    out = tmp_path_factory.mktemp("dbag") / "drive_distorted"
    with AnyReader([synth_bag]) as r, Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c.topic: w.add_connection(c.topic, c.msgtype, typestore=TS) for c in r.connections}
        for c, t_ns, raw in r.messages():
            if c.topic == INFO:
                m = r.deserialize(raw, c.msgtype)
                m.d = np.array([0.25, 0.08, 0.001, -0.001, 0.0])  # pincushion: corners have no source
                raw = TS.serialize_cdr(m, c.msgtype)
            w.write(conns[c.topic], t_ns, raw)
    return out


@pytest.mark.ros
def test_both_replay_modes_rectify_a_distorted_camera_like_the_node(distorted_bag, tiny_model, tmp_path,
                                                                   ros_subprocess_env):
    """In-process replay rectifies as the node does: the same depth frame by frame, NaN on the border that
    has no source pixel, and a published camera_info with D = 0."""
    n = 4
    for through in (False, True):
        run_replay(ReplayConfig(bag=distorted_bag, out_dir=tmp_path / f"t{through}", model=tiny_model, gt_topic=GT,
                                through_node=through, rate=0.5, max_frames=n, record=("depth", "depth_info"),
                                domain_id=int(ros_subprocess_env["ROS_DOMAIN_ID"]), quiet=True))
    ours, node = (_depth_by_stamp(tmp_path / f"t{t}" / "replay_bag") for t in (False, True))
    assert len(ours) == n and ours.keys() == node.keys()
    for stamp in ours:
        np.testing.assert_allclose(node[stamp], ours[stamp], rtol=1e-5, equal_nan=True, err_msg=str(stamp))
        assert np.isnan(ours[stamp][0, 0]) and np.isfinite(ours[stamp][H_PX // 2, W_PX // 2])
    for through in (False, True):
        with AnyReader([tmp_path / f"t{through}" / "replay_bag"]) as r:
            conns = [c for c in r.connections if c.topic == "/camera/depth/camera_info"]
            infos = [r.deserialize(raw, c.msgtype) for c, _, raw in r.messages(connections=conns)]
        assert len(infos) == n and all(not np.any(i.d) for i in infos), through


@pytest.mark.ros
def test_through_node_reports_the_frames_a_slow_node_dropped(synth_bag, tmp_path, ros_subprocess_env):
    """Played at 10x the recorded rate (100 Hz) into a node whose model needs tens of ms: the node keeps only
    the latest frame, so it must drop. Every frame reported dropped is exactly one missing from the output bag."""
    slow = make_tiny_onnx(tmp_path / "slow.onnx", slow_layers=12)
    report = run_replay(ReplayConfig(bag=synth_bag, out_dir=tmp_path / "out", model=slow, gt_topic=GT,
                                     through_node=True, rate=10.0, node_params=["threads:=1"],
                                     domain_id=int(ros_subprocess_env["ROS_DOMAIN_ID"]), quiet=True))
    fr = report["frames"]
    assert fr["input"] == N_FRAMES and 0 < fr["dropped"] < N_FRAMES
    assert fr["drop_rate"] == pytest.approx(fr["dropped"] / N_FRAMES)
    answered = {f["stamp_ns"] for f in report["per_frame"] if not f["dropped"]}
    assert _stamps(tmp_path / "out" / "replay_bag", "/camera/depth") == answered
    assert len(answered) == fr["with_depth"] == N_FRAMES - fr["dropped"]
    assert report["rate_hz"]["achieved"] < report["rate_hz"]["input"]


def _image(stamp_ns, arr, encoding):
    h, w = arr.shape[:2]
    T = TS.types
    hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9,
                                                                         nanosec=stamp_ns % 10**9),
                                   frame_id="camera_optical_frame")
    data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
    return T["sensor_msgs/msg/Image"](header=hdr, height=h, width=w, encoding=encoding, is_bigendian=0,
                                      step=data.size // h, data=data)


def test_lidar_gt_replay_scores_the_projected_cloud(world, synth_bag, tiny_model, tmp_path):
    """Bag = the synthetic images + a sparse 'lidar' cloud sampled from the rendered depth, 10 ms off the image
    stamps. Scores must equal the evaluation of the same sparse depth taken straight from the renderer."""
    T = TS.types
    n = 5
    PF = T["sensor_msgs/msg/PointField"]
    fields = [PF(name=nm, offset=4 * i, datatype=7, count=1) for i, nm in enumerate("xyz")]
    T_lidar_from_cam = invert_pose(T_CAM_FROM_LIDAR)
    gts, preds = [], []
    backend = create_backend(tiny_model)  # what the replay's --backend auto runs
    bag = tmp_path / "lidar_bag"
    with AnyReader([synth_bag]) as src, Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c.topic: w.add_connection(c.topic, c.msgtype, typestore=TS) for c in src.connections
                 if c.topic in (IMG, INFO)}
        c_pts = w.add_connection("/points", "sensor_msgs/msg/PointCloud2", typestore=TS)
        for c, t_ns, raw in src.messages(connections=[c for c in src.connections if c.topic in conns]):
            w.write(conns[c.topic], t_ns, raw)
        for i in range(n):
            f = world.render(i)
            mask = np.isfinite(f.depth_m) & (f.depth_m < 80)
            mask[:, 1::2] = False
            sparse = np.where(mask, f.depth_m, 0.0).astype(np.float32)
            pts = backproject(sparse, f.K)[mask] @ T_lidar_from_cam[:3, :3].T + T_lidar_from_cam[:3, 3]
            s = round(f.stamp_s * 1e9) + 10_000_000
            hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=s // 10**9, nanosec=s % 10**9),
                                           frame_id="lidar")
            data = pts.astype("<f4").reshape(-1).view(np.uint8)
            cloud = T["sensor_msgs/msg/PointCloud2"](header=hdr, height=1, width=len(pts), fields=fields,
                                                    is_bigendian=False, point_step=12, row_step=12 * len(pts),
                                                    data=data, is_dense=True)
            w.write(c_pts, s, TS.serialize_cdr(cloud, cloud.__msgtype__))
            gts.append(sparse)
            preds.append(backend.infer(f.rgb, out_size=sparse.shape))
    extr = tmp_path / "T_cam_from_lidar.yaml"
    extr.write_text(yaml.safe_dump({"T_cam_from_lidar": T_CAM_FROM_LIDAR.tolist()}))
    out = tmp_path / "out"
    rc = replay.main(["--bag", str(bag), "--model", str(tiny_model), "--lidar-topic", "/points",
                      "--extrinsics", str(extr), "--max-frames", str(n), "--out", str(out), "--quiet"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    ref = evaluate_depth(gts, preds, median_scaling=True, crop=None)
    assert report["frames"]["scored"] == n and report["settings"]["gt"]["kind"] == "lidar"
    for name in METRIC_NAMES:
        assert report["metrics"][name] == pytest.approx(ref.metrics[name], rel=1e-4, abs=1e-6), name
    assert _bag_counts(out / "replay_bag")["/points"] == ("sensor_msgs/msg/PointCloud2", n)


def test_metric_model_is_scored_without_median_scaling(synth_bag, tmp_path):
    model = make_tiny_onnx(tmp_path / "metric.onnx", scale_policy="metric")
    report = run_replay(ReplayConfig(bag=synth_bag, out_dir=tmp_path / "out", model=model, gt_topic=GT,
                                     max_frames=3, quiet=True))
    assert report["settings"]["median_scaling"] is False
    assert report["frames"]["input"] == 3 and report["scale"]["ratio_mean"] != report["scale"]["ratio_mean"]  # NaN
    assert all(f["ratio"] == 1.0 for f in report["per_frame"])


# ---- bad input: exit code 2, one line, no traceback ------------------------------------------------------------
def test_cli_missing_topic_exits_2_with_one_line_listing_the_topics(synth_bag, tiny_model, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "monodepth_ros.replay", "--bag", str(synth_bag), "--model", str(tiny_model),
         "--image-topic", "/front/image", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("monodepth-replay: error: image topic '/front/image' is not in bag")
    for topic in (IMG, INFO, GT, "/odom"):
        assert topic in lines[0]


@pytest.mark.parametrize("damage", ["truncated", "empty_bag", "gt_missing"])
def test_cli_bad_bags_exit_2_with_one_line(synth_bag, tiny_model, tmp_path, capsys, damage):
    import shutil

    bag = tmp_path / "bag"
    args = []
    if damage == "empty_bag":
        with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
            w.add_connection(IMG, "sensor_msgs/msg/Image", typestore=TS)
        expect = "is empty"
    else:
        shutil.copytree(synth_bag, bag)
        if damage == "truncated":
            f = next(bag.glob("*.mcap"))
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
            expect = "corrupted or truncated"
        else:
            args = ["--gt-topic", "/camera/depth"]
            expect = "depth GT topic '/camera/depth' is not in bag"
    rc = replay.main(["--bag", str(bag), "--model", str(tiny_model), "--out", str(tmp_path / "out"), "--quiet",
                      *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and expect in err, err
    assert "topics in the bag:" in err


def test_missing_default_model_tells_the_user_to_pass_model(synth_bag, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(replay.config, "default_model_path", lambda: tmp_path / "models" / "default.onnx")
    rc = replay.main(["--bag", str(synth_bag), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "pass --model" in err and "default model is not installed" in err


@pytest.fixture(scope="module")
def compressed_bag(synth_bag, tmp_path_factory):
    """The synthetic bag with its images as PNG CompressedImage on <image>/compressed (lossless)."""
    out = tmp_path_factory.mktemp("cbag") / "drive_png"
    CI = TS.types["sensor_msgs/msg/CompressedImage"]
    with AnyReader([synth_bag]) as r, Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for c, t_ns, raw in r.messages():
            topic, msgtype = c.topic, c.msgtype
            if topic == IMG:
                m = r.deserialize(raw, c.msgtype)
                ok, png = cv2.imencode(".png", m.data.reshape(m.height, m.width, 3)[..., ::-1])
                msg = CI(header=m.header, format="rgb8; png compressed bgr8", data=png.reshape(-1))
                topic, msgtype, raw = IMG + "/compressed", CI.__msgtype__, TS.serialize_cdr(msg, CI.__msgtype__)
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=TS)
            w.write(conns[topic], t_ns, raw)
    return out


@pytest.mark.parametrize("through_node", [False, pytest.param(True, marks=pytest.mark.ros)])
def test_compressed_image_topic_scores_like_the_raw_one(compressed_bag, tiny_model, tmp_path, in_process_report,
                                                        ros_subprocess_env, through_node):
    n, rate = 10, 2.0  # through the node at twice the recorded speed (--rate 2)
    report = run_replay(ReplayConfig(bag=compressed_bag, out_dir=tmp_path, model=tiny_model, gt_topic=GT,
                                     image_topic=IMG + "/compressed", through_node=through_node, max_frames=n,
                                     rate=rate, domain_id=int(ros_subprocess_env["ROS_DOMAIN_ID"]), quiet=True))
    assert report["frames"]["input"] == n and report["frames"]["with_points"] >= 0.9 * n
    if through_node:
        assert report["rate_hz"]["input"] == pytest.approx(10.0 * rate, rel=0.15)
    ref = {f["index"]: f["abs_rel"] for f in in_process_report[0]["per_frame"]}
    scored = [f for f in report["per_frame"] if f["abs_rel"] is not None]
    assert len(scored) >= 0.9 * n
    for f in scored:
        assert f["abs_rel"] == pytest.approx(ref[f["index"]], rel=1e-4), f["index"]
    counts = _bag_counts(tmp_path / "replay_bag")
    assert counts[IMG + "/compressed"] == ("sensor_msgs/msg/CompressedImage", n)
    assert counts["/camera/depth"][1] >= 0.9 * n and "/camera/points" not in counts  # clouds: not by default
    if through_node:  # latency is measured on the clouds, which the replay receives even when not recording them
        assert report["latency"]["n"] >= 0.9 * n and report["latency"]["p50"] > 0


def test_in_process_metrics_match_the_evaluation_cli_on_the_same_frames(in_process_report, world, tiny_model,
                                                                       tmp_path, capsys):
    """The same rendered frames written as KITTI (RGB PNG + 16-bit depth-benchmark GT) and scored by
    monodepth-eval: equal up to the GT PNG's 1/256 m quantisation."""
    from monodepth_ros.datasets import kitti
    from monodepth_ros.evaluation import evaluate
    from monodepth_ros.synthetic.writers import write_kitti

    drive = write_kitti(world, tmp_path / "kitti", N_FRAMES)
    split = tmp_path / "all_frames.txt"
    kitti.write_split(split, [kitti.SplitEntry(f"{drive.parent.name}/{drive.name}", i, "l") for i in range(N_FRAMES)])
    rc = evaluate.main(["--model", str(tiny_model), "--data", str(tmp_path / "kitti"), "--split", str(split),
                        "--gt", "improved", "--crop", "none", "--panels", "0", "--out", str(tmp_path / "eval")])
    capsys.readouterr()
    assert rc == 0
    cli = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    report, _ = in_process_report
    assert cli["n_images"] == report["frames"]["scored"] == N_FRAMES
    for name in METRIC_NAMES:
        assert report["metrics"][name] == pytest.approx(cli["metrics"][name], rel=5e-4), name
    np.testing.assert_allclose([f["abs_rel"] for f in report["per_frame"]], [p["abs_rel"] for p in cli["per_image"]],
                               rtol=5e-4)


def test_a_bad_node_parameter_is_refused_before_anything_runs(synth_bag, tiny_model, tmp_path, capsys):
    rc = replay.main(["--bag", str(synth_bag), "--model", str(tiny_model), "--through-node", "--quiet",
                      "--node-param", "decimation:=99", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "--node-param: decimation must be in [1, 16], got 99" in err
    assert not (tmp_path / "out" / "replay_bag").exists()


@pytest.mark.ros
@pytest.mark.skipif(tensorrt_unavailable_reason() is None, reason="TensorRT is installed: the node would start")
def test_node_that_cannot_start_is_reported_with_its_own_log_line(synth_bag, tiny_model, tmp_path, capsys,
                                                                  ros_subprocess_env):
    rc = replay.main(["--bag", str(synth_bag), "--model", str(tiny_model), "--through-node", "--quiet",
                      "--backend", "tensorrt", "--domain-id", ros_subprocess_env["ROS_DOMAIN_ID"],
                      "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "the depth node exited with code 2 during start-up" in err and "tensorrt" in err
    assert (tmp_path / "out" / "node.log").is_file() and not (tmp_path / "out" / "replay_bag").exists()


# ---- lidar GT: replay and monodepth-eval agree when they hold the same depth convention ----------------------
REAL_KITTI_RAW = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "kitti_raw"
VELO_TOPIC = "/velodyne_points"


def write_kitti_lidar_bag(data_dir: Path, entries: list, out_bag: Path) -> Path:
    """A rosbag2 (MCAP) of KITTI raw frames as a robot would record them: rgb8 images and camera_info on
    /camera/*, each LiDAR scan as a PointCloud2 (x, y, z, intensity float32, frame ``velodyne``) with the image's
    stamp, 10 Hz. Returns the extrinsics YAML (``T_cam_from_lidar``) written beside the bag.

    camera_info K is :func:`kitti_gt.ros_intrinsics` of the rectified camera, so that replay's lidar GT lands on
    the pixels of the KITTI devkit's (the evaluation's) GT.
    """
    from monodepth_ros.datasets import kitti
    from monodepth_ros.evaluation import kitti_gt

    T_ = TS.types
    Header, Time = T_["std_msgs/msg/Header"], T_["builtin_interfaces/msg/Time"]
    PF = T_["sensor_msgs/msg/PointField"]
    fields = [PF(name=nm, offset=4 * i, datatype=7, count=1) for i, nm in enumerate(("x", "y", "z", "intensity"))]
    calib_dir, cam = kitti.calib_dir_for(data_dir, entries[0]), kitti.side_to_cam(entries[0].side)
    K_devkit, T_cam_from_velo, (H, W) = kitti_gt.kitti_camera_model(calib_dir, cam)
    K = kitti_gt.ros_intrinsics(K_devkit)
    with Writer(out_bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {t: w.add_connection(t, typ, typestore=TS) for t, typ in
                 ((IMG, "sensor_msgs/msg/Image"), (INFO, "sensor_msgs/msg/CameraInfo"),
                  (VELO_TOPIC, "sensor_msgs/msg/PointCloud2"))}
        for i, entry in enumerate(entries):
            s = 1_000_000_000 + i * 100_000_000
            stamp = Time(sec=s // 10**9, nanosec=s % 10**9)
            cam_hdr = Header(stamp=stamp, frame_id="camera_optical_frame")
            img = _image(s, kitti.load_rgb(kitti.image_path(data_dir, entry)), "rgb8")
            info = T_["sensor_msgs/msg/CameraInfo"](
                header=cam_hdr, height=H, width=W, distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1),
                r=np.eye(3).reshape(-1), p=np.hstack([K, np.zeros((3, 1))]).reshape(-1), binning_x=0, binning_y=0,
                roi=T_["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                           do_rectify=False))
            scan = np.fromfile(kitti_gt.velodyne_path(data_dir, entry), dtype="<f4")
            cloud = T_["sensor_msgs/msg/PointCloud2"](
                header=Header(stamp=stamp, frame_id="velodyne"), height=1, width=scan.size // 4, fields=fields,
                is_bigendian=False, point_step=16, row_step=scan.size * 4, data=scan.view(np.uint8), is_dense=True)
            for topic, msg in ((IMG, img), (INFO, info), (VELO_TOPIC, cloud)):
                w.write(conns[topic], s, TS.serialize_cdr(msg, msg.__msgtype__))
    extr = out_bag.parent / f"{out_bag.name}_T_cam_from_lidar.yaml"
    extr.write_text(yaml.safe_dump({"T_cam_from_lidar": T_cam_from_velo.tolist()}))
    return extr


def _replay_and_eval_on_lidar(data_dir: Path, entries: list, model: Path, tmp_path: Path, convention: str,
                              bag: Path, extr: Path) -> tuple[dict, dict]:
    """(replay report, monodepth-eval metrics.json) on the same frames, both with ``--lidar-depth convention``."""
    from monodepth_ros.datasets import kitti
    from monodepth_ros.evaluation import evaluate

    split = tmp_path / "frames.txt"
    kitti.write_split(split, entries)
    rc = evaluate.main(["--model", str(model), "--data", str(data_dir), "--split", str(split), "--gt", "velodyne",
                        "--lidar-depth", convention, "--panels", "0", "--out", str(tmp_path / f"eval_{convention}")])
    assert rc == 0
    out = tmp_path / f"replay_{convention}"
    # --backend onnxruntime: monodepth-eval's backend for an .onnx, so that the two tools see the same depth to
    # 1e-9 (replay's default, auto, may pick OpenVINO or TensorRT, equal only to ~1e-6 or fp16).
    rc = replay.main(["--bag", str(bag), "--model", str(model), "--lidar-topic", VELO_TOPIC, "--extrinsics",
                      str(extr), "--lidar-depth", convention, "--crop", "garg", "--backend", "onnxruntime",
                      "--quiet", "--out", str(out)])
    assert rc == 0
    return (json.loads((out / "report.json").read_text()),
            json.loads((tmp_path / f"eval_{convention}" / "metrics.json").read_text()))


def _assert_same_scores(rep: dict, ev: dict, n: int) -> None:
    assert rep["frames"]["scored"] == ev["n_images"] == n
    assert rep["settings"]["median_scaling"] == ev["median_scaling"]
    for name in METRIC_NAMES:
        assert rep["metrics"][name] == pytest.approx(ev["metrics"][name], rel=1e-9, abs=1e-12), name
    np.testing.assert_allclose([f["abs_rel"] for f in rep["per_frame"]], [p["abs_rel"] for p in ev["per_image"]],
                               rtol=1e-9)


@pytest.fixture(scope="module")
def synthetic_lidar_kitti(world, tmp_path_factory):
    """The synthetic world as a KITTI raw folder with Velodyne scans (sampled from the rendered depth, jittered
    off the pixel centres) and KITTI's real LiDAR lever arm (0.27 m behind the camera, so the two depth
    conventions differ), plus the same frames as a bag with a PointCloud2 topic."""
    from monodepth_ros.datasets import kitti
    from monodepth_ros.evaluation import kitti_gt
    from monodepth_ros.synthetic.writers import write_kitti

    n = 6
    root = tmp_path_factory.mktemp("lidar_kitti")
    data = root / "kitti"
    drive = write_kitti(world, data, n)
    calib_dir = data / "2011_09_26"
    R = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    kitti.write_calib_file(calib_dir / "calib_velo_to_cam.txt", {"R": R, "T": np.array([-0.004, -0.076, -0.27])},
                           calib_time="01-Jan-2011 00:00:00")
    K_devkit, T_cam_from_velo, _ = kitti_gt.kitti_camera_model(calib_dir, 2)
    T_velo_from_cam = invert_pose(T_cam_from_velo)
    rng = np.random.default_rng(5)
    entries = [kitti.SplitEntry(f"{drive.parent.name}/{drive.name}", i, "l") for i in range(n)]
    for i, entry in enumerate(entries):
        depth = world.render(i).depth_m
        keep = np.isfinite(depth) & (depth < 90) & (rng.random(depth.shape) < 0.4)
        v, u = np.nonzero(keep)
        u_dev = u + 1 + rng.uniform(-0.4, 0.4, u.size)  # devkit pixel coordinates: column c is centred at c + 1
        v_dev = v + 1 + rng.uniform(-0.4, 0.4, v.size)
        z = depth[keep].astype(np.float64)
        pts_cam = (np.c_[u_dev, v_dev, np.ones(u.size)] @ np.linalg.inv(K_devkit).T) * z[:, None]
        pts = pts_cam @ T_velo_from_cam[:3, :3].T + T_velo_from_cam[:3, 3]
        scan = np.c_[pts, np.full(len(pts), 0.5)].astype(np.float32)
        path = kitti_gt.velodyne_path(data, entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        scan.tofile(path)
    bag = root / "lidar_bag"
    extr = write_kitti_lidar_bag(data, entries, bag)
    return data, entries, bag, extr


@pytest.mark.parametrize("convention", ["camera_z", "lidar_forward"])
def test_lidar_replay_equals_monodepth_eval_with_the_same_depth_convention(synthetic_lidar_kitti, tmp_path,
                                                                          convention, capsys):
    data, entries, bag, extr = synthetic_lidar_kitti
    model = make_tiny_onnx(tmp_path / "metric.onnx", scale_policy="metric")  # unscaled: the lever arm shows fully
    rep, ev = _replay_and_eval_on_lidar(data, entries, model, tmp_path, convention, bag, extr)
    capsys.readouterr()
    _assert_same_scores(rep, ev, len(entries))
    assert rep["settings"]["gt"]["depth_convention"] == ev["lidar_depth"] == convention


def test_lidar_depth_convention_changes_the_scores_and_each_tool_defaults_to_its_own(synthetic_lidar_kitti,
                                                                                     tmp_path, capsys):
    """Replay defaults to camera z (REP 118), monodepth-eval to the lidar's forward distance (KITTI's reference):
    the same frames score differently, and each report says which depth it used."""
    from monodepth_ros.datasets import kitti
    from monodepth_ros.evaluation import evaluate

    data, entries, bag, extr = synthetic_lidar_kitti
    model = make_tiny_onnx(tmp_path / "metric.onnx", scale_policy="metric")
    split = tmp_path / "frames.txt"
    kitti.write_split(split, entries)
    assert evaluate.main(["--model", str(model), "--data", str(data), "--split", str(split), "--gt", "velodyne",
                          "--panels", "0", "--out", str(tmp_path / "eval")]) == 0
    assert replay.main(["--bag", str(bag), "--model", str(model), "--lidar-topic", VELO_TOPIC, "--extrinsics",
                        str(extr), "--crop", "garg", "--quiet", "--out", str(tmp_path / "replay")]) == 0
    out = capsys.readouterr().out
    assert "lidar GT depth: camera_z" in out and "GT velodyne (lidar_forward)" in out
    ev = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rep = json.loads((tmp_path / "replay" / "report.json").read_text())
    assert ev["lidar_depth"] == "lidar_forward" and rep["settings"]["gt"]["depth_convention"] == "camera_z"
    # x_velo = z_cam + 0.27 m here: the lidar-forward GT is farther, so the same predictions score differently
    # (the tiny model's abs_rel is ~0.96, so the shift is ~0.001; with one convention the two agree to 1e-9).
    assert abs(rep["metrics"]["abs_rel"] - ev["metrics"]["abs_rel"]) > 5e-4
    assert abs(rep["metrics"]["rmse"] - ev["metrics"]["rmse"]) > 0.05


def test_eval_refuses_a_gt_npz_exported_with_the_other_lidar_depth(synthetic_lidar_kitti, tmp_path, capsys):
    from monodepth_ros.datasets import kitti
    from monodepth_ros.evaluation import evaluate, kitti_gt

    data, entries, _, _ = synthetic_lidar_kitti
    split = tmp_path / "frames.txt"
    kitti.write_split(split, entries)
    kitti_gt.export_gt_npz(data, split, tmp_path / "gt.npz", depth_convention="camera_z")
    model = make_tiny_onnx(tmp_path / "metric.onnx", scale_policy="metric")
    rc = evaluate.main(["--model", str(model), "--data", str(data), "--split", str(split), "--gt", "velodyne",
                        "--gt-npz", str(tmp_path / "gt.npz"), "--panels", "0", "--out", str(tmp_path / "eval")])
    assert rc == 2  # bad input: the GT file does not match the options
    assert "holds camera_z velodyne GT but --lidar-depth is lidar_forward" in capsys.readouterr().err


@pytest.mark.skipif(not REAL_KITTI_RAW.is_dir(), reason=f"real KITTI raw drive not found at {REAL_KITTI_RAW} "
                    "(../shared/data/real beside the clone; KITTI's licence keeps it out of the repository)")
@pytest.mark.parametrize("convention", ["camera_z", "lidar_forward"])
def test_lidar_replay_equals_monodepth_eval_on_real_kitti_frames(tmp_path, convention, capsys):
    """Real Velodyne scans and the official calibration (lever arm, R_rect, P_rect offset), the shipped model."""
    from monodepth_ros.datasets import kitti

    drive = next((REAL_KITTI_RAW / "2011_09_26").glob("*_sync"))
    entries = [kitti.SplitEntry(f"2011_09_26/{drive.name}", i, "l") for i in range(0, 78, 13)]  # 6 frames
    bag = tmp_path / "real_bag"
    extr = write_kitti_lidar_bag(REAL_KITTI_RAW, entries, bag)
    rep, ev = _replay_and_eval_on_lidar(REAL_KITTI_RAW, entries, replay.default_model_path(), tmp_path, convention,
                                        bag, extr)
    capsys.readouterr()
    _assert_same_scores(rep, ev, len(entries))
