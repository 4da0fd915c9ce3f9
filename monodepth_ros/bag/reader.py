"""Reading a rosbag2 bag (MCAP or sqlite3, or a lone ``.mcap`` file) with every failure as one :class:`BagError`.

Reading uses ``rosbags``' AnyReader (pure Python, no ROS install needed). Every way a bag can be unusable --
missing, corrupted, truncated, empty, or lacking a topic -- becomes one :class:`BagError` whose message names the
problem and lists the topics that ARE in the bag (type and message count), so a user can fix the command line.
Messages are handed out as their raw CDR bytes (:meth:`BagReader.raw_messages`) and decoded on request.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = [
    "BagError",
    "TopicSummary",
    "BagReader",
    "resolve_bag_path",
    "format_topics",
    "topic_summaries",
]


class BagError(ValueError):
    """A bag cannot be used for replay: missing, corrupted, truncated, empty, or lacking a required topic.

    ``topics`` holds what could be read of the bag's topic list (possibly empty).
    """

    def __init__(self, message: str, topics: list[TopicSummary] | None = None):
        self.topics = list(topics or [])
        if topics is not None:
            message = f"{message}; {format_topics(self.topics)}"
        super().__init__(message)


@dataclass(frozen=True)
class TopicSummary:
    """One topic of a bag: name, ROS 2 message type, number of messages."""

    name: str
    msgtype: str
    count: int


def format_topics(topics: list[TopicSummary]) -> str:
    """One-line topic list for error messages: ``topics in the bag: /a (type, N msgs), ...``."""
    if not topics:
        return "topics in the bag: none"
    return "topics in the bag: " + ", ".join(f"{t.name} ({t.msgtype}, {t.count} msgs)" for t in topics)


def topic_summaries(reader) -> list[TopicSummary]:
    """The topics of an open rosbags ``AnyReader``, sorted by name (a topic with several types: "(mixed types)")."""
    return [TopicSummary(name, info.msgtype or "(mixed types)", int(info.msgcount))
            for name, info in sorted(reader.topics.items())]


def resolve_bag_path(path: str | os.PathLike) -> Path:
    """A rosbag2 directory (with metadata.yaml), one of its storage files, or a lone ``.mcap`` file.

    Returns the bag directory, or the ``.mcap`` file itself when it has no metadata.yaml beside it (e.g. a
    Foxglove recording); :class:`BagReader` reads such a file through a generated metadata.yaml.
    """
    p = Path(path)
    if not p.exists():
        raise BagError(f"bag not found: {p}")
    if p.is_file():
        if (p.parent / "metadata.yaml").is_file():
            return p.parent
        if p.suffix == ".mcap":
            return p
        raise BagError(
            f"{p} is a file, but rosbag2 bags are directories holding metadata.yaml and the .mcap/.db3 storage "
            f"(record with `ros2 bag record`; `ros2 bag reindex` rebuilds a lost metadata.yaml)"
        )
    if not (p / "metadata.yaml").is_file():
        raise BagError(f"{p} is not a rosbag2 bag: metadata.yaml is missing (`ros2 bag reindex` rebuilds it)")
    return p


def _bare_mcap_as_bag(mcap_path: Path, tmp_dir: Path) -> Path:
    """A lone ROS 2 ``.mcap`` file -> a rosbag2 directory in ``tmp_dir``: a symlink + a metadata.yaml written from
    the MCAP summary (topics, types, counts, time span). rosbags reads only bag directories, and this is the
    information ``ros2 bag reindex`` would recover. An MCAP without a summary section (truncated) is an error."""
    from mcap.reader import make_reader

    try:
        with open(mcap_path, "rb") as f:
            summary = make_reader(f).get_summary()
    except Exception as e:  # noqa: BLE001 - the mcap parser's errors on a damaged file
        raise BagError(f"cannot open {mcap_path} (corrupted or truncated?): {_one_line(e)}", []) from None
    if summary is None or summary.statistics is None:
        raise BagError(f"{mcap_path} has no MCAP summary section (truncated, or still being recorded?)", [])
    stats = summary.statistics
    topics = []
    for cid, ch in sorted(summary.channels.items()):
        schema = summary.schemas.get(ch.schema_id)
        topics.append({"message_count": int(stats.channel_message_counts.get(cid, 0)), "topic_metadata": {
            "name": ch.topic, "type": schema.name if schema else "", "serialization_format": ch.message_encoding,
            "offered_qos_profiles": ch.metadata.get("offered_qos_profiles", "")}})
    n = int(stats.message_count)
    meta = {"rosbag2_bagfile_information": {
        "version": 9, "storage_identifier": "mcap", "relative_file_paths": [mcap_path.name],
        "duration": {"nanoseconds": int(stats.message_end_time - stats.message_start_time) if n else 0},
        "starting_time": {"nanoseconds_since_epoch": int(stats.message_start_time) if n else 0},
        "message_count": n, "topics_with_message_count": topics, "compression_format": "", "compression_mode": "",
        "files": [], "custom_data": None, "ros_distro": ""}}
    bag_dir = tmp_dir / mcap_path.stem
    bag_dir.mkdir()
    (bag_dir / mcap_path.name).symlink_to(mcap_path.resolve())
    (bag_dir / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return bag_dir


def _topics_from_metadata(bag_dir: Path) -> list[TopicSummary] | None:
    """Topic list from metadata.yaml alone (works even when the storage file is corrupted), or None."""
    try:
        meta = yaml.safe_load((bag_dir / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return sorted(
            (TopicSummary(t["topic_metadata"]["name"], t["topic_metadata"]["type"], int(t["message_count"]))
             for t in meta.get("topics_with_message_count") or []),
            key=lambda t: t.name,
        )
    except Exception:  # noqa: BLE001 - best effort: the metadata itself may be what is broken
        return None


# Why so broad: rosbags and its storage back ends (MCAP parser, apsw/sqlite3, zstd, YAML) raise many unrelated
# exception types on damaged files (ReaderError, apsw.CorruptError, struct.error, IndexError, ...). Only the
# bag-reading calls sit inside these guards, so anything they raise means "this bag cannot be read".
_BAG_READ_ERRORS = (Exception,)


class BagReader:
    """Context manager over a rosbag2 bag (MCAP or sqlite3) that turns every read failure into BagError."""

    def __init__(self, path: str | os.PathLike):
        self.path = resolve_bag_path(path)  # what messages name: the bag directory, or a lone .mcap file
        self._dir = self.path
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._reader = None
        self.topics: dict[str, TopicSummary] = {}
        self._conns: dict[str, list] = {}

    # -- life cycle -------------------------------------------------------------------------------------------
    def open(self) -> BagReader:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        if self.path.is_file():
            self._tmp = tempfile.TemporaryDirectory(prefix="monodepth-bag-")
            try:
                self._dir = _bare_mcap_as_bag(self.path, Path(self._tmp.name))
            except BaseException:
                self.close()
                raise
        try:
            # The default typestore only serves sqlite3 bags recorded without embedded message definitions.
            reader = AnyReader([self._dir], default_typestore=get_typestore(Stores.ROS2_KILTED))
            reader.open()
        except _BAG_READ_ERRORS as e:
            topics = _topics_from_metadata(self._dir) or []
            self.close()
            raise BagError(f"cannot open bag {self.path} (corrupted or truncated?): {_one_line(e)}", topics) from None
        self._reader = reader
        for conn in reader.connections:
            self._conns.setdefault(conn.topic, []).append(conn)
        self.topics = {t.name: t for t in topic_summaries(reader)}
        if not self.topics or sum(t.count for t in self.topics.values()) == 0:
            topics = self.topic_list()
            self.close()
            raise BagError(f"bag {self.path} is empty: it holds no messages", topics)
        return self

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # noqa: BLE001 - closing a damaged bag must not hide the original error
                pass
            self._reader = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- topics ------------------------------------------------------------------------------------------------
    def topic_list(self) -> list[TopicSummary]:
        return list(self.topics.values())

    def require_topic(self, name: str, types: tuple[str, ...], role: str) -> TopicSummary:
        """The topic ``name`` (one of ``types``, at least one message), or BagError listing the bag's topics."""
        t = self.topics.get(name)
        if t is None:
            raise BagError(f"{role} topic {name!r} is not in bag {self.path}", self.topic_list())
        if t.msgtype not in types:
            raise BagError(f"{role} topic {name!r} has type {t.msgtype}, expected {' or '.join(types)}",
                           self.topic_list())
        if t.count == 0:
            raise BagError(f"{role} topic {name!r} has no messages in bag {self.path}", self.topic_list())
        return t

    @property
    def start_time_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def duration_s(self) -> float:
        return (int(self._reader.end_time) - int(self._reader.start_time)) / 1e9

    # -- messages ----------------------------------------------------------------------------------------------
    def raw_messages(self, topics: list[str]) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log_time_ns, raw CDR bytes) of the given topics in log-time order; damage -> BagError."""
        conns = [c for t in topics for c in self._conns.get(t, [])]
        it = self._reader.messages(connections=conns)
        while True:
            try:
                conn, t_ns, raw = next(it)
            except StopIteration:
                return
            except _BAG_READ_ERRORS as e:
                raise BagError(f"bag {self.path} is damaged (corrupted or truncated?) while reading "
                               f"messages: {_one_line(e)}", self.topic_list()) from None
            yield conn.topic, int(t_ns), bytes(raw)

    def deserialize(self, raw: bytes, topic: str):
        msgtype = self.topics[topic].msgtype
        try:
            return self._reader.deserialize(raw, msgtype)
        except _BAG_READ_ERRORS as e:
            raise BagError(f"a {msgtype} message on {topic} in bag {self.path} cannot be decoded "
                           f"(corrupted?): {_one_line(e)}", self.topic_list()) from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text
