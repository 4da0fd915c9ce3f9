"""Rolling rate, latency percentiles and the per-kind log throttle used by the depth node's diagnostics."""

from __future__ import annotations

import math

import pytest

from monodepth_ros.diagnostics import LatencyWindow, RateMeter, Throttle, stamp_latency_s


def test_rate_meter_measures_recent_rate_and_forgets_old_events():
    meter = RateMeter(window_s=2.0)
    for i in range(31):
        meter.tick(10.0 + i / 30.0)  # 30 Hz for one second
    assert meter.rate_hz(11.0) == pytest.approx(30.0)
    assert meter.rate_hz(20.0) == 0.0  # nothing in the last two seconds
    assert meter.total == 31


def test_latency_window_percentiles_in_milliseconds_over_the_last_samples():
    win = LatencyWindow(size=100)
    assert math.isnan(win.percentile_ms(50))
    for _ in range(100):
        win.add(1.0)  # pushed out by the next 100
    for i in range(100):
        win.add((i + 1) / 1000.0)
    assert len(win) == 100
    assert win.percentile_ms(50) == pytest.approx(50.5)
    assert win.percentile_ms(99) == pytest.approx(99.01)


def test_throttle_is_per_kind_and_counts_suppressed_lines():
    th = Throttle(period_s=5.0)
    assert th.allow("image", 0.0) == (True, 0)
    assert th.allow("camera_info", 0.1) == (True, 0)  # another kind is not silenced
    assert th.allow("image", 1.0) == (False, 0)
    assert th.allow("image", 2.0) == (False, 0)
    assert th.allow("image", 5.0) == (True, 2)
    th.period_s = 0.0
    assert th.allow("image", 5.0) == (True, 0)


def test_stamp_latency_only_on_the_same_clock():
    now = 1_800_000_000 * 10**9
    assert stamp_latency_s(now, now - 25_000_000) == pytest.approx(0.025)
    assert stamp_latency_s(now, now + 10_000_000) == pytest.approx(-0.01)  # jitter between hosts: still a latency
    assert stamp_latency_s(now, 1_317_000_000 * 10**9) is None  # a bag recorded in 2011
    assert stamp_latency_s(now, now + 5 * 10**9) is None  # a stamp from the future: another clock
    assert stamp_latency_s(120 * 10**9, 119 * 10**9) == pytest.approx(1.0)  # sim time with use_sim_time
