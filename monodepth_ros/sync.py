"""Pairs images with camera_info messages by header stamp (exact, or approximate within a tolerance).

Our own because ``message_filters`` is not available from PyPI. Deliberately small: two bounded queues keyed
by stamp; every arriving message is matched against the *other* queue (nearest stamp within the tolerance, ties
to the older one), so out-of-order arrival on either stream is fine. Entries that never find a partner are
evicted oldest-first once a queue is full, or once they are more than ``max_age_s`` older than the newest stamp
seen on either stream, and are counted as dropped. A pair completed late (older than one already returned) is
still returned: keeping only the newest frame is the caller's policy, not the synchroniser's.

Thread-safety: the caller serialises pushes (the node calls it from its executor thread only).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StampSynchronizer", "SyncStats", "LatestSlot"]


@dataclass
class SyncStats:
    """Counts since construction."""

    pairs: int = 0
    dropped_images: int = 0
    dropped_infos: int = 0


@dataclass
class _Queue:
    stamps: list[int] = field(default_factory=list)  # sorted ascending
    items: list[Any] = field(default_factory=list)

    def insert(self, stamp_ns: int, item: Any) -> None:
        i = bisect.bisect_right(self.stamps, stamp_ns)
        self.stamps.insert(i, stamp_ns)
        self.items.insert(i, item)

    def pop(self, i: int) -> tuple[int, Any]:
        return self.stamps.pop(i), self.items.pop(i)

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> int | None:
        """Index of the entry nearest ``stamp_ns`` within the tolerance (older wins a tie), or None."""
        i = bisect.bisect_left(self.stamps, stamp_ns)
        best, best_dt = None, None
        for j in (i - 1, i):
            if 0 <= j < len(self.stamps):
                dt = abs(self.stamps[j] - stamp_ns)
                if dt <= tolerance_ns and (best_dt is None or dt < best_dt):
                    best, best_dt = j, dt
        return best


class StampSynchronizer:
    """Match two streams (``image`` and ``info``) by stamp.

    Args:
        tolerance_s: largest |stamp difference| accepted as a pair; 0 means exact match only.
        queue_size: unmatched messages kept per stream; older ones are dropped first.
        max_age_s: unmatched messages older than the newest stamp seen by more than this are dropped.
    """

    def __init__(self, tolerance_s: float = 0.0, queue_size: int = 10, max_age_s: float = 1.0):
        if tolerance_s < 0:
            raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.tolerance_ns = int(round(tolerance_s * 1e9))
        self.queue_size = int(queue_size)
        self.max_age_ns = int(round(max_age_s * 1e9))
        self._newest_ns: int | None = None
        self.stats = SyncStats()
        self._images = _Queue()
        self._infos = _Queue()

    @property
    def tolerance_s(self) -> float:
        return self.tolerance_ns * 1e-9

    @tolerance_s.setter
    def tolerance_s(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"tolerance_s must be >= 0, got {value}")
        self.tolerance_ns = int(round(value * 1e9))

    def push_image(self, stamp_ns: int, image: Any) -> tuple[Any, Any] | None:
        """Add an image; returns ``(image, info)`` if it completes a pair, else None."""
        return self._push(stamp_ns, image, mine=self._images, other=self._infos, image_first=True)

    def push_info(self, stamp_ns: int, info: Any) -> tuple[Any, Any] | None:
        """Add a camera_info; returns ``(image, info)`` if it completes a pair, else None."""
        return self._push(stamp_ns, info, mine=self._infos, other=self._images, image_first=False)

    def pending(self) -> tuple[int, int]:
        """Unmatched (images, infos) currently held."""
        return len(self._images.stamps), len(self._infos.stamps)

    def _push(self, stamp_ns: int, item: Any, mine: _Queue, other: _Queue, image_first: bool):
        if self._newest_ns is None or stamp_ns > self._newest_ns:
            self._newest_ns = stamp_ns
            self._evict_older_than(stamp_ns - self.max_age_ns)
        j = other.nearest(stamp_ns, self.tolerance_ns)
        if j is None:
            if stamp_ns < self._newest_ns - self.max_age_ns:
                self._count_drop(image_first, 1)  # arrived already too old to be kept
                return None
            mine.insert(stamp_ns, item)
            self._trim()
            return None
        _, partner = other.pop(j)
        self.stats.pairs += 1
        return (item, partner) if image_first else (partner, item)

    def _evict_older_than(self, stamp_ns: int) -> None:
        for q, is_image in ((self._images, True), (self._infos, False)):
            n = bisect.bisect_left(q.stamps, stamp_ns)
            if n:
                del q.stamps[:n], q.items[:n]
                self._count_drop(is_image, n)

    def _trim(self) -> None:
        for q, is_image in ((self._images, True), (self._infos, False)):
            n = len(q.stamps) - self.queue_size
            if n > 0:
                del q.stamps[:n], q.items[:n]
                self._count_drop(is_image, n)

    def _count_drop(self, is_image: bool, n: int) -> None:
        if is_image:
            self.stats.dropped_images += n
        else:
            self.stats.dropped_infos += n


class LatestSlot:
    """A one-place mailbox between the executor thread and the inference worker: never a backlog.

    ``put`` replaces an item the worker has not taken yet (counted in ``dropped``) and refuses items whose
    stamp is not newer than the last one accepted (counted in ``stale``), so the worker always gets the newest
    frame and never goes back in time. ``take`` blocks until an item arrives or :meth:`close` is called.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._has_item = False
        self._last_stamp_ns: int | None = None
        self._closed = False
        self.dropped = 0
        self.stale = 0

    def put(self, stamp_ns: int, item: Any) -> bool:
        """Offer an item; False if it was refused as stale."""
        with self._cond:
            if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
                self.stale += 1
                return False
            self._last_stamp_ns = stamp_ns
            if self._has_item:
                self.dropped += 1
            self._item, self._has_item = item, True
            self._cond.notify()
            return True

    def take(self, timeout_s: float | None = None) -> Any:
        """The newest item, or None once closed (or when ``timeout_s`` passes with nothing to take)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout_s):
                return None
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
