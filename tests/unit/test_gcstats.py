"""The collector policy: thresholds set and restored, freezes, measured pauses."""

from __future__ import annotations

import gc
import weakref

from outpost_server import gcstats


def test_collector_tunes_freezes_and_restores() -> None:
    saved = gc.get_threshold()
    c = gcstats.Collector()
    c.start()
    try:
        assert gc.get_threshold() == (
            gcstats.YOUNG_THRESHOLD,
            gcstats.MIDDLE_THRESHOLD,
            gcstats.OLD_THRESHOLD,
        )
        assert gc.get_freeze_count() > 0  # what start-up built is out of the walks
        gc.collect(0)
        doc = gcstats.stats()
        assert doc["generations"][0]["collections"] >= 1  # the callback measures pauses
        assert doc["frozen_objects"] == gc.get_freeze_count()
    finally:
        c.stop()
    assert gc.get_threshold() == saved
    assert gc.get_freeze_count() == 0


def test_reclaim_collects_cycles_that_were_frozen() -> None:
    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    gcstats.install()
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    gone = weakref.ref(a)
    gc.freeze()
    try:
        del a, b
        gc.collect()
        assert gone() is not None  # frozen: a full collection does not walk it
        before = gcstats.stats()["reclaims"]
        gcstats.reclaim()
        assert gcstats.stats()["reclaims"] == before + 1
        assert gone() is None
    finally:
        gc.unfreeze()


def test_a_round_collects_recent_cycles_and_freezes_the_survivors() -> None:
    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    gcstats.install()
    gc.freeze()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        keep = Node()
        del a, b
        before = gcstats.stats()
        frozen = gc.get_freeze_count()
        gcstats.round_()
        after = gcstats.stats()
        assert gone() is None  # allocated since the last freeze: walked
        assert gc.get_freeze_count() > frozen  # `keep` and friends now frozen
        assert after["rounds"]["count"] == before["rounds"]["count"] + 1
        # a round is not counted as one of CPython's own full collections
        assert after["generations"][2]["collections"] == before["generations"][2]["collections"]
        assert keep.other is None
    finally:
        gc.unfreeze()
