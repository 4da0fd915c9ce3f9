"""The replay's output bag: rosbag2 with MCAP storage, written from raw CDR bytes and published atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["OutputBagWriter"]


class OutputBagWriter:
    """Writes the replay's output bag (rosbag2, MCAP storage) from raw CDR bytes; atomic on :meth:`close`.

    The bag is built in a temporary directory next to ``path`` and renamed into place only when complete, so a
    crash never leaves a half-written bag under the final name. ``topics`` maps topic name -> message type.
    """

    def __init__(self, path: str | os.PathLike, topics: dict[str, str], compress: bool = True):
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_parent = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._writer = Writer(self._tmp_parent / self.path.name, version=9, storage_plugin=StoragePlugin.MCAP)
        if compress:
            # MCAP's own zstd chunk compression (what `ros2 bag record --storage-preset-profile zstd_fast` writes);
            # RViz/Foxglove/ros2 bag read it. Organised clouds are ~2 MB/frame at 640x192 and compress well.
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        typestore = get_typestore(Stores.ROS2_KILTED)
        self._conns = {name: self._writer.add_connection(name, msgtype, typestore=typestore)
                       for name, msgtype in topics.items()}
        self.counts = dict.fromkeys(topics, 0)

    def write(self, topic: str, stamp_ns: int, raw: bytes | memoryview) -> None:
        self._writer.write(self._conns[topic], int(stamp_ns), raw)
        self.counts[topic] += 1

    def close(self) -> Path:
        """Finish the bag and move it to ``path`` (replacing an older output bag there)."""
        self._writer.close()
        if self.path.exists():
            old = self._tmp_parent / "previous"
            os.replace(self.path, old)
        os.replace(self._tmp_parent / self.path.name, self.path)
        shutil.rmtree(self._tmp_parent, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - already failing; the temp dir goes away either way
            pass
        shutil.rmtree(self._tmp_parent, ignore_errors=True)

    def __enter__(self) -> OutputBagWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
