"""Flag behaves as asyncio.Event does for our uses, at a fraction of the size."""

from __future__ import annotations

import asyncio
import sys

import pytest

from outpost_server.net.flag import Flag


async def test_set_wakes_every_waiter_and_wait_returns_true() -> None:
    flag = Flag()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert flag.is_set() and await flag.wait() is True
    assert flag._waiters is None


async def test_clear_makes_wait_block_again() -> None:
    flag = Flag()
    flag.set()
    flag.clear()
    assert not flag.is_set()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(flag.wait(), 0.01)
    assert flag._waiters is None  # the cancelled waiter is gone


async def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    flag = Flag()
    a = asyncio.create_task(flag.wait())
    b = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    a.cancel()
    await asyncio.sleep(0)
    flag.set()
    assert await b is True
    assert a.cancelled()


def test_an_idle_flag_is_much_smaller_than_an_event() -> None:
    event = asyncio.Event()
    event_bytes = (
        sys.getsizeof(event) + sys.getsizeof(event.__dict__) + sys.getsizeof(event._waiters)
    )
    assert sys.getsizeof(Flag()) * 8 < event_bytes
