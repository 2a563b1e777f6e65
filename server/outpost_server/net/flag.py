"""A slimmer asyncio.Event for objects that live as long as a connection.

`asyncio.Event` allocates a `collections.deque` for its waiters up front:
~760 bytes per event (deque header plus its first 64-slot block), whether or
not anything ever waits. A node's connection holds several (its map
session's wake-up, its response's "closed", the flow-control window), for
hours, mostly with nothing or one task waiting. `Flag` has the same methods
and semantics as `asyncio.Event` (set / clear / is_set / wait; `wait`
returns True; waking every waiter on `set`) and keeps its waiters as
nothing, one future, or a list: 56 bytes when idle.
"""

from __future__ import annotations

import asyncio


class Flag:
    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: asyncio.Future[bool] | list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters = self._waiters
        if waiters is None:
            return
        for fut in waiters if isinstance(waiters, list) else (waiters,):
            if not fut.done():
                fut.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._add(fut)
        try:
            await fut
            return True
        finally:
            self._remove(fut)

    def _add(self, fut: asyncio.Future[bool]) -> None:
        waiters = self._waiters
        if waiters is None:
            self._waiters = fut
        elif isinstance(waiters, list):
            waiters.append(fut)
        else:
            self._waiters = [waiters, fut]

    def _remove(self, fut: asyncio.Future[bool]) -> None:
        waiters = self._waiters
        if waiters is fut:
            self._waiters = None
        elif isinstance(waiters, list):
            waiters.remove(fut)
            if not waiters:
                self._waiters = None

    def __repr__(self) -> str:
        state = "set" if self._value else "unset"
        return f"<Flag {state}>"
