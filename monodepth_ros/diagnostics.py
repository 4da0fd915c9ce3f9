"""Rolling statistics for the depth node's diagnostics: event rates, latency percentiles, problem counters,
and a per-kind log throttle. Plain Python (no rclpy) so they are unit-testable; all times are seconds from a
monotonic clock passed in by the caller.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

__all__ = ["RateMeter", "LatencyWindow", "Throttle"]


class RateMeter:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = float(window_s)
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.total = 0

    def tick(self, now_s: float) -> None:
        with self._lock:
            self._times.append(now_s)
            self.total += 1
            self._expire(now_s)

    def rate_hz(self, now_s: float) -> float:
        with self._lock:
            self._expire(now_s)
            n = len(self._times)
            if n < 2:
                return 0.0
            # Rate over the span the window actually covers, so a meter younger than window_s is not biased low.
            span = max(now_s - self._times[0], self._times[-1] - self._times[0])
            return (n - 1) / span if span > 0 else 0.0

    def _expire(self, now_s: float) -> None:
        while self._times and self._times[0] < now_s - self.window_s:
            self._times.popleft()


class LatencyWindow:
    """The last ``size`` latency samples (seconds) and their percentiles."""

    def __init__(self, size: int = 300):
        self._samples: deque[float] = deque(maxlen=int(size))
        self._lock = threading.Lock()

    def add(self, latency_s: float) -> None:
        with self._lock:
            self._samples.append(float(latency_s))

    def percentile_ms(self, q: float) -> float:
        """q-th percentile in milliseconds (NaN when empty)."""
        with self._lock:
            if not self._samples:
                return float("nan")
            return float(np.percentile(np.fromiter(self._samples, float), q) * 1e3)

    def __len__(self) -> int:
        return len(self._samples)


class Throttle:
    """At most one log line per ``kind`` every ``period_s``; reports how many were suppressed in between.

    Why not rclpy's ``throttle_duration_sec``: it throttles per call site, and the node reports every problem
    kind through one helper, so one noisy kind would silence all the others.
    """

    def __init__(self, period_s: float = 5.0):
        self.period_s = float(period_s)
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, kind: str, now_s: float) -> tuple[bool, int]:
        """``(should_log, suppressed_since_last_log)`` for one occurrence of ``kind`` at ``now_s``."""
        with self._lock:
            last = self._last.get(kind)
            if last is None or now_s - last >= self.period_s:
                self._last[kind] = now_s
                return True, self._suppressed.pop(kind, 0)
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False, 0


def stamp_latency_s(now_ns: int, stamp_ns: int, max_s: float = 10.0, tolerance_s: float = 0.05) -> float | None:
    """Latency ``now - stamp`` in seconds when it is plausible on this clock, i.e. in ``[-tolerance_s, max_s]``.

    None when the stamp is from another clock: a bag's recorded stamps, or a simulator's time while the node runs
    without ``use_sim_time``. Averaging those would report days of "latency" (a replayed bag gave 479024426 s).
    The small negative tolerance absorbs clock jitter between the camera's host and this one.
    """
    latency = (int(now_ns) - int(stamp_ns)) * 1e-9
    return latency if -tolerance_s <= latency <= max_s else None
