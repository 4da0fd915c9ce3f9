"""StampSynchronizer: exact and approximate pairing, mismatched stamps, drops and out-of-order arrival;
LatestSlot: the node's latest-frame-only hand-over to the inference worker."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from monodepth_ros.msgs.stamps import stamp_to_ns
from monodepth_ros.sync import LatestSlot, StampSynchronizer

MS = 1_000_000


def feed(sync: StampSynchronizer, events):
    """events: ("img"|"info", stamp_ms). Returns the (image, info) stamp pairs in completion order."""
    out = []
    for kind, t_ms in events:
        push = sync.push_image if kind == "img" else sync.push_info
        pair = push(int(t_ms * MS), (kind, t_ms))
        if pair is not None:
            assert pair[0][0] == "img" and pair[1][0] == "info"
            out.append((pair[0][1], pair[1][1]))
    return out


def test_exact_mode_pairs_equal_stamps_in_either_arrival_order():
    sync = StampSynchronizer(tolerance_s=0.0)
    pairs = feed(sync, [("img", 0), ("info", 0), ("info", 33), ("img", 33)])
    assert pairs == [(0, 0), (33, 33)]


def test_exact_mode_never_pairs_mismatched_stamps():
    sync = StampSynchronizer(tolerance_s=0.0)
    assert feed(sync, [("img", 0), ("info", 1), ("img", 34), ("info", 33)]) == []
    assert sync.pending() == (2, 2)


def test_approximate_mode_pairs_within_tolerance_and_picks_the_nearest():
    sync = StampSynchronizer(tolerance_s=0.005)
    pairs = feed(sync, [("info", 96), ("info", 101), ("img", 100), ("img", 120), ("info", 126)])
    assert pairs == [(100, 101)]  # 96 is farther; 126 is 6 ms from 120 (> 5 ms)
    assert sync.pending() == (1, 2)


def test_dropped_camera_info_does_not_block_later_pairs_and_is_counted():
    sync = StampSynchronizer(tolerance_s=0.0, queue_size=3, max_age_s=10.0)
    events = []
    for t in range(0, 10 * 33, 33):
        events.append(("img", t))
        if t not in (66, 99):  # two camera_infos lost
            events.append(("info", t))
    pairs = feed(sync, events)
    assert [p[0] for p in pairs] == [t for t in range(0, 330, 33) if t not in (66, 99)]
    # The two orphans stay until the queue or the age limit evicts them.
    assert sync.pending() == (2, 0)
    feed(sync, [("img", 400), ("img", 433)])  # queue_size 3 -> the oldest orphan goes
    assert sync.stats.dropped_images == 1


def test_unpaired_messages_older_than_max_age_are_dropped():
    sync = StampSynchronizer(tolerance_s=0.0, max_age_s=0.1)
    feed(sync, [("img", 0), ("img", 50), ("info", 200)])  # 200 ms: both images are now too old
    assert sync.pending() == (0, 1) and sync.stats.dropped_images == 2
    assert feed(sync, [("img", 50)]) == []  # a late arrival that is already too old is dropped at once
    assert sync.stats.dropped_images == 3


def test_out_of_order_messages_still_find_their_partners():
    sync = StampSynchronizer(tolerance_s=0.002)
    events = [("info", 66), ("img", 33), ("info", 0), ("img", 66), ("img", 0), ("info", 33.5)]
    pairs = feed(sync, events)
    assert sorted(pairs) == [(0, 0), (33, 33.5), (66, 66)]
    assert sync.pending() == (0, 0) and sync.stats.pairs == 3


def test_tolerance_can_change_live_and_bad_settings_are_rejected():
    sync = StampSynchronizer(tolerance_s=0.0)
    assert feed(sync, [("img", 0), ("info", 3)]) == []
    sync.tolerance_s = 0.005
    assert feed(sync, [("img", 40), ("info", 43)]) == [(40, 43)]
    with pytest.raises(ValueError, match="tolerance_s"):
        sync.tolerance_s = -1.0
    with pytest.raises(ValueError, match="queue_size"):
        StampSynchronizer(queue_size=0)


def test_stamp_to_ns_combines_seconds_and_nanoseconds():
    assert stamp_to_ns(SimpleNamespace(sec=3, nanosec=250)) == 3_000_000_250


def test_latest_slot_keeps_only_the_newest_item_and_refuses_stale_ones():
    slot = LatestSlot()
    assert slot.put(1, "a") and slot.put(2, "b") and slot.put(3, "c")
    assert slot.take(0) == "c" and slot.dropped == 2
    assert not slot.put(3, "again") and not slot.put(1, "late")  # never back in time
    assert slot.stale == 2 and slot.take(0.01) is None


def test_latest_slot_never_builds_a_backlog_behind_a_slow_consumer():
    slot = LatestSlot()
    taken = []

    def consumer():
        while (item := slot.take()) is not None:
            taken.append(item)
            time.sleep(0.005)  # slower than the producer

    worker = threading.Thread(target=consumer)
    worker.start()
    for i in range(200):
        slot.put(i, i)
        time.sleep(0.0005)
    time.sleep(0.05)
    slot.close()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert taken == sorted(taken) and taken[-1] == 199  # in order, and the last frame is always served
    assert len(taken) + slot.dropped == 200 and slot.dropped > 0
