"""Bag reading and writing for the replay evaluation (real rosbags bags in MCAP and sqlite3 storage), and the
lidar -> sparse GT projection. Bags are generated here: the synthetic world, or a few hand-written messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from monodepth_ros.bag.frames import GtSource, iter_frames
from monodepth_ros.bag.reader import BagError, BagReader
from monodepth_ros.bag.writer import OutputBagWriter
from monodepth_ros.evaluation.lidar_gt import load_extrinsics, pointcloud2_to_xyz, validate_rigid
from monodepth_ros.geometry import backproject, invert_pose
from monodepth_ros.msgs.stamps import cdr_header_stamp_ns

pytestmark = pytest.mark.rosdistro  # ROS-facing: `make test-jazzy` runs this module on ROS 2 Jazzy too

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
W_PX, H_PX = 160, 64
N_FRAMES = 6
IMG, INFO, GT = "/camera/image_raw", "/camera/camera_info", "/camera/depth_gt"
K_TEST = np.array([[92.8, 0.0, 80.0], [0.0, 122.88, 32.0], [0.0, 0.0, 1.0]])
# Lidar frame x forward, y left, z up; mounted 0.3 m above and 0.2 m behind the camera.
T_CAM_FROM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.3], [1.0, 0.0, 0.0, -0.2], [0, 0, 0, 1.0]])


@pytest.fixture(scope="module")
def world():
    from monodepth_ros.synthetic.world import SynthConfig, SyntheticWorld

    return SyntheticWorld(SynthConfig(width=W_PX, height=H_PX, seed=3))


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def synth_bag(request, world, tmp_path_factory):
    from monodepth_ros.synthetic.writers import write_bag

    out = tmp_path_factory.mktemp(f"bag_{request.param}") / "drive"
    write_bag(world, out, N_FRAMES, storage=request.param)
    return out


def _storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def _copy(bag: Path, dst: Path) -> Path:
    shutil.copytree(bag, dst)
    return dst


def _header(stamp_ns: int, frame_id: str = "camera_optical_frame"):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)


def _image(stamp_ns, arr: np.ndarray, encoding: str, pad: int = 0):
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8)
    data = np.zeros((h, row.shape[1] + pad), np.uint8)
    data[:, : row.shape[1]] = row
    return T["sensor_msgs/msg/Image"](header=_header(stamp_ns), height=h, width=w, encoding=encoding, is_bigendian=0,
                                      step=data.shape[1], data=data.reshape(-1))


def _info(stamp_ns, K=K_TEST):
    return T["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp_ns), height=H_PX, width=W_PX, distortion_model="plumb_bob", d=np.zeros(5),
        k=np.asarray(K, float).reshape(-1), r=np.eye(3).reshape(-1), p=np.hstack([K, np.zeros((3, 1))]).reshape(-1),
        binning_x=0, binning_y=0, roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                                            width=0, do_rectify=False))


def _cloud(stamp_ns, xyz: np.ndarray, pad_bytes: int = 4):
    """PointCloud2 x, y, z, intensity (float32) + ``pad_bytes`` of padding per point, unorganised."""
    n = len(xyz)
    dt = np.dtype({"names": ["x", "y", "z", "intensity"], "formats": ["<f4"] * 4, "offsets": [0, 4, 8, 12],
                   "itemsize": 16 + pad_bytes})
    pts = np.zeros(n, dtype=dt)
    pts["x"], pts["y"], pts["z"], pts["intensity"] = xyz[:, 0], xyz[:, 1], xyz[:, 2], 1.0
    PF = T["sensor_msgs/msg/PointField"]
    fields = [PF(name=nm, offset=4 * i, datatype=7, count=1) for i, nm in enumerate(("x", "y", "z", "intensity"))]
    return T["sensor_msgs/msg/PointCloud2"](header=_header(stamp_ns, "lidar"), height=1, width=n, fields=fields,
                                            is_bigendian=False, point_step=dt.itemsize, row_step=dt.itemsize * n,
                                            data=pts.view(np.uint8).reshape(-1), is_dense=True)


def write_custom_bag(path: Path, messages: list[tuple[str, int, object]], storage: str = "mcap") -> Path:
    """A bag from (topic, log_time_ns, message) triples; topics get their connection on first use."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {}
        for topic, t_ns, msg in messages:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msg.__msgtype__, typestore=TS)
            w.write(conns[topic], t_ns, TS.serialize_cdr(msg, msg.__msgtype__))
    return path


# ---- reading ---------------------------------------------------------------------------------------------------
def test_iter_frames_returns_rendered_frames_with_camera_info_and_gt(synth_bag, world):
    with BagReader(synth_bag) as bag:
        frames = list(iter_frames(bag, IMG, INFO, GtSource(GT)))
    assert [f.index for f in frames] == list(range(N_FRAMES))
    for f in frames:
        ref = world.render(f.index)
        assert f.stamp_ns == round(ref.stamp_s * 1e9) == f.gt_stamp_ns
        np.testing.assert_array_equal(f.rgb, ref.rgb)
        np.testing.assert_array_equal(f.gt_depth_m, ref.depth_m)  # inf sky stays inf
        np.testing.assert_allclose(f.K, ref.K)
        assert f.frame_id == "camera_optical_frame"
        assert cdr_header_stamp_ns(f.image_raw) == cdr_header_stamp_ns(f.info_raw) == f.stamp_ns


def test_max_frames_stops_early(synth_bag):
    with BagReader(synth_bag) as bag:
        assert len(list(iter_frames(bag, IMG, INFO, max_frames=2))) == 2


def test_gt_is_matched_by_stamp_despite_reordering_and_gaps(tmp_path):
    rgb = np.full((H_PX, W_PX, 3), 50, np.uint8)
    t0 = 1_000_000_000_000
    msgs = []
    for i in range(5):
        s = t0 + i * 100_000_000
        depth = np.full((H_PX, W_PX), 10.0 + i, np.float32)
        if i == 1:  # GT recorded before its image and camera_info
            msgs.append((GT, s - 5, _image(s, depth, "32FC1")))
        msgs += [(INFO, s, _info(s)), (IMG, s + 1, _image(s, rgb, "rgb8"))]
        if i not in (1, 3):  # frame 3 has no GT at all
            msgs.append((GT, s + 2_000_000, _image(s, depth, "32FC1")))
    bag = write_custom_bag(tmp_path / "b", msgs)
    with BagReader(bag) as r:
        frames = list(iter_frames(r, IMG, INFO, GtSource(GT)))
    assert len(frames) == 5
    assert [None if f.gt_depth_m is None else float(f.gt_depth_m[0, 0]) for f in frames] == [10, 11, 12, None, 14]


def test_gt_tolerance_pairs_nearest_stamp(tmp_path):
    rgb = np.zeros((H_PX, W_PX, 3), np.uint8)
    s = 2_000_000_000
    far = np.full((H_PX, W_PX), 7.0, np.float32)
    msgs = [(INFO, s, _info(s)), (IMG, s, _image(s, rgb, "rgb8")), (GT, s, _image(s + 20_000_000, far, "32FC1"))]
    bag = write_custom_bag(tmp_path / "b", msgs)
    with BagReader(bag) as r:
        assert next(iter_frames(r, IMG, INFO, GtSource(GT))).gt_depth_m is None  # exact by default
        f = next(iter_frames(r, IMG, INFO, GtSource(GT, tolerance_s=0.05)))
    assert f.gt_stamp_ns == s + 20_000_000 and float(f.gt_depth_m[0, 0]) == 7.0


# ---- bad bags --------------------------------------------------------------------------------------------------
def _assert_lists_topics(err: BagError):
    text = str(err)
    assert "\n" not in text
    for topic in (IMG, INFO, GT, "/odom"):
        assert topic in text
    assert f"{IMG} (sensor_msgs/msg/Image, {N_FRAMES} msgs)" in text


def test_missing_topic_names_it_and_lists_the_bag_topics(synth_bag):
    with BagReader(synth_bag) as bag, pytest.raises(BagError, match="'/front/image' is not in bag") as ei:
        list(iter_frames(bag, "/front/image", INFO))
    _assert_lists_topics(ei.value)


def test_topic_of_wrong_type_is_rejected(synth_bag):
    with BagReader(synth_bag) as bag, pytest.raises(BagError, match="has type nav_msgs/msg/Odometry") as ei:
        list(iter_frames(bag, IMG, INFO, GtSource("/odom")))
    _assert_lists_topics(ei.value)


@pytest.mark.parametrize("damage", ["truncated_half", "truncated_tail", "header_bytes", "zero_length"])
def test_damaged_storage_file_gives_bag_error_with_topics(synth_bag, tmp_path, damage):
    bag = _copy(synth_bag, tmp_path / "bag")
    f = _storage_file(bag)
    data = bytearray(f.read_bytes())
    if damage == "truncated_half":
        data = data[: len(data) // 2]
    elif damage == "truncated_tail":  # the last tenth: MCAP loses its summary, SQLite its last pages
        data = data[: len(data) * 9 // 10]
    elif damage == "header_bytes":  # MCAP magic + header record / SQLite header page
        for i in range(8, 400):
            data[i] ^= 0x5A
    else:
        data = bytearray()
    f.write_bytes(bytes(data))
    with pytest.raises(BagError, match=r"corrupted or truncated") as ei:
        with BagReader(bag) as r:
            list(iter_frames(r, IMG, INFO, GtSource(GT)))
    _assert_lists_topics(ei.value)  # listed from metadata.yaml even though the storage is unreadable


def test_bag_yielding_fewer_messages_than_its_metadata_is_reported(synth_bag, tmp_path):
    # What a damaged index looks like from outside: metadata.yaml promises more messages than storage holds.
    bag = _copy(synth_bag, tmp_path / "bag")
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    for t in meta["rosbag2_bagfile_information"]["topics_with_message_count"]:
        if t["topic_metadata"]["name"] == IMG:
            t["message_count"] += 3
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    with BagReader(bag) as r, pytest.raises(BagError, match=rf"fewer messages.*{IMG}: {N_FRAMES} of {N_FRAMES + 3}"):
        list(iter_frames(r, IMG, INFO))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_empty_bags_are_reported_as_empty(tmp_path, storage):
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(tmp_path / "no_topics", version=9, storage_plugin=plugin):
        pass
    with pytest.raises(BagError, match="is empty.*topics in the bag: none"):
        BagReader(tmp_path / "no_topics").open()
    with Writer(tmp_path / "no_messages", version=9, storage_plugin=plugin) as w:
        w.add_connection(IMG, "sensor_msgs/msg/Image", typestore=TS)
    with pytest.raises(BagError, match=rf"is empty.*{IMG} \(sensor_msgs/msg/Image, 0 msgs\)"):
        BagReader(tmp_path / "no_messages").open()


def test_paths_that_are_not_bags_are_named(tmp_path):
    with pytest.raises(BagError, match="bag not found"):
        BagReader(tmp_path / "nope")
    (tmp_path / "dir").mkdir()
    with pytest.raises(BagError, match="metadata.yaml is missing"):
        BagReader(tmp_path / "dir")


def test_storage_file_path_resolves_to_its_bag(synth_bag):
    with BagReader(_storage_file(synth_bag)) as bag:
        assert bag.path == synth_bag and bag.topics[IMG].count == N_FRAMES


# ---- writing ---------------------------------------------------------------------------------------------------
def test_output_bag_is_readable_with_expected_topics_types_and_stamps(synth_bag, tmp_path):
    from rosbags.highlevel import AnyReader

    out = tmp_path / "out" / "replay_bag"
    topics = {IMG: "sensor_msgs/msg/Image", INFO: "sensor_msgs/msg/CameraInfo",
              "/camera/points": "sensor_msgs/msg/PointCloud2"}
    with BagReader(synth_bag) as bag, OutputBagWriter(out, topics) as w:
        stamps = []
        for f in iter_frames(bag, IMG, INFO):
            w.write(IMG, f.stamp_ns, f.image_raw)
            w.write(INFO, f.stamp_ns, f.info_raw)
            w.write("/camera/points", f.stamp_ns, TS.serialize_cdr(_cloud(f.stamp_ns, np.ones((3, 3))),
                                                                   "sensor_msgs/msg/PointCloud2"))
            stamps.append(f.stamp_ns)
    assert [p.name for p in out.parent.iterdir()] == ["replay_bag"]  # temp folder gone
    with AnyReader([out]) as r:
        assert {n: (t.msgtype, t.msgcount) for n, t in r.topics.items()} == {
            n: (typ, N_FRAMES) for n, typ in topics.items()}
        got = [(c.topic, t, r.deserialize(raw, c.msgtype)) for c, t, raw in r.messages()]
    assert sorted({t for _, t, _ in got}) == stamps
    for topic, t_ns, msg in got:
        assert cdr_header_stamp_ns(TS.serialize_cdr(msg, msg.__msgtype__)) == t_ns, topic
    # The MCAP reference reader (what Foxglove uses) decodes it too, zstd chunks included.
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(_storage_file(out), "rb") as f:
        decoded = [(ch.topic, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec) for _, ch, _, msg in
                   make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages()]
    assert sorted(decoded) == sorted((t, s) for t in topics for s in stamps)


def test_failed_output_bag_leaves_nothing_behind(tmp_path):
    out = tmp_path / "o" / "replay_bag"
    with pytest.raises(RuntimeError), OutputBagWriter(out, {IMG: "sensor_msgs/msg/Image"}):
        raise RuntimeError("boom")
    assert list(out.parent.iterdir()) == []


# ---- lidar GT ----------------------------------------------------------------------------------------------------
def test_lidar_points_land_on_analytic_pixels_nearest_wins():
    from monodepth_ros.evaluation.lidar_gt import lidar_to_depth

    K = np.array([[100.0, 0, 50.0], [0, 100.0, 20.0], [0, 0, 1]])
    T_id = np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]])  # lidar x fwd -> camera z
    pts = np.array([
        [10.0, 0.0, 0.0],     # on the optical axis -> (50, 20), 10 m
        [10.0, -1.0, 0.5],    # x_cam = 1, y_cam = -0.5 -> (60, 15)
        [20.0, -2.0, 1.0],    # same ray as above, farther: loses
        [5.0, 2.0, 0.0],      # x_cam = -2 -> u = 50 - 40 = 10, v = 20
        [-5.0, 0.0, 0.0],     # behind the camera
        [1.0, -10.0, 0.0],    # outside the image (u = 1050)
    ])
    depth = lidar_to_depth(pts, T_id, K, 40, 100)
    assert depth[20, 50] == 10.0 and depth[15, 60] == 10.0 and depth[20, 10] == 5.0
    assert np.count_nonzero(depth) == 3
    # A translation of the lidar 1 m behind the camera adds 1 m of depth everywhere.
    T_back = T_id.copy()
    T_back[2, 3] = -1.0
    assert lidar_to_depth(pts[:1], T_back, K, 40, 100)[20, 50] == 9.0


def test_lidar_cloud_reprojects_to_rendered_depth(world):
    from monodepth_ros.evaluation.lidar_gt import lidar_to_depth

    f = world.render(2)
    mask = np.isfinite(f.depth_m) & (f.depth_m < 80)
    mask[:, 1::3] = False  # sparse, like a lidar
    mask[1::2, :] = False
    pts_cam = backproject(np.where(mask, f.depth_m, 0.0), f.K)[mask]
    T_lidar_from_cam = invert_pose(T_CAM_FROM_LIDAR)
    pts_lidar = pts_cam @ T_lidar_from_cam[:3, :3].T + T_lidar_from_cam[:3, 3]
    msg = _cloud(0, np.vstack([pts_lidar, [[np.nan, 0, 0]]]))  # a NaN return is skipped
    xyz = pointcloud2_to_xyz(TS.deserialize_cdr(TS.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__))
    assert xyz.shape == pts_lidar.shape
    depth = lidar_to_depth(xyz, T_CAM_FROM_LIDAR, f.K, H_PX, W_PX)
    assert np.array_equal(depth > 0, mask)
    np.testing.assert_allclose(depth[mask], f.depth_m[mask], rtol=1e-5)


def test_extrinsics_file_is_validated(tmp_path):
    good = tmp_path / "T.yaml"
    good.write_text(yaml.safe_dump({"T_cam_from_lidar": T_CAM_FROM_LIDAR.tolist()}))
    np.testing.assert_array_equal(load_extrinsics(good), T_CAM_FROM_LIDAR)
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump(T_CAM_FROM_LIDAR.ravel().tolist()))
    np.testing.assert_array_equal(load_extrinsics(flat), T_CAM_FROM_LIDAR)
    bad = tmp_path / "bad.yaml"
    scaled = T_CAM_FROM_LIDAR.copy()
    scaled[:3, :3] *= 2.0
    bad.write_text(yaml.safe_dump({"T_cam_from_lidar": scaled.tolist()}))
    with pytest.raises(ValueError, match="not a proper rotation"):
        load_extrinsics(bad)
    (tmp_path / "nokey.yaml").write_text("T: 1\n")
    with pytest.raises(ValueError, match="no 'T_cam_from_lidar' key"):
        load_extrinsics(tmp_path / "nokey.yaml")
    with pytest.raises(ValueError, match="4x4"):
        validate_rigid(np.eye(3))


def test_lone_mcap_file_without_metadata_is_read(tmp_path, world):
    """A bare .mcap (as Foxglove records) has no metadata.yaml; it is read through its MCAP summary."""
    from monodepth_ros.synthetic.writers import write_bag

    lone = tmp_path / "recording.mcap"
    shutil.move(_storage_file(write_bag(world, tmp_path / "b", N_FRAMES, storage="mcap")), lone)
    shutil.rmtree(tmp_path / "b")
    with BagReader(lone) as bag:
        assert bag.path == lone and bag.topics[IMG].count == N_FRAMES
        frames = list(iter_frames(bag, IMG, INFO, GtSource(GT)))
    assert len(frames) == N_FRAMES
    np.testing.assert_array_equal(frames[-1].rgb, world.render(N_FRAMES - 1).rgb)
    assert [p.name for p in tmp_path.iterdir()] == ["recording.mcap"]  # nothing left beside it
    lone.write_bytes(lone.read_bytes()[: lone.stat().st_size // 2])
    with pytest.raises(BagError, match="recording.mcap.*(corrupted or truncated|no MCAP summary)"):
        BagReader(lone).open()
