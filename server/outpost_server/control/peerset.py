"""A compact set of node ids, for what each map session remembers.

Every session keeps the ids of the peers it was sent (`MapSession.known_peers`).
As a Python `set` that costs 16-32 bytes per peer in the hash table alone: on a
full mesh of 1,000 nodes that is 32 KiB per session, the largest item of a
connected node's memory (tracemalloc, bench/memprofile.py), and it grows with
the tailnet (N² in total). Node ids are small, dense integers handed out in
order by the database, so a bitmap over the id range takes one bit per id:
125 bytes for 1,000 nodes. Where ids are sparse (a few peers among many ids,
say after years of ephemeral churn) a sorted array of 8-byte ids is smaller;
the set keeps whichever of the two is smaller, within a factor of two so that
alternating adds do not convert back and forth.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, MutableSet
from collections.abc import Set as AbstractSet
from typing import cast

from ..state.model import NodeId

_ID_BYTES = 8  # one int64 per id in the sorted form
_SLACK_BYTES = 64  # below this either form is fine: do not convert
# For each byte value, the positions of its set bits (iteration without a
# Python-level loop per bit).
_BIT_OFFSETS: tuple[tuple[int, ...], ...] = tuple(
    tuple(b for b in range(8) if byte >> b & 1) for byte in range(256)
)


class PeerSet(MutableSet[NodeId]):
    """Ints in a bitmap over [base, base + 8·len(bits)) or a sorted array."""

    __slots__ = ("_base", "_bits", "_ids", "_len")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self._bits: bytearray | None = None
        self._base = 0
        self._ids: array[int] | None = array("q")
        self._len = 0
        self._rebuild(set(ids))

    # ------------------------------------------------------------- the forms
    def _rebuild(self, values: set[int]) -> None:
        """Store `values` in the smaller form."""
        self._len = len(values)
        if not values:
            self._bits, self._ids, self._base = None, array("q"), 0
            return
        lo, hi = min(values), max(values)
        if (hi - lo) // 8 + 1 <= _ID_BYTES * len(values):
            base = lo - lo % 8
            bits = bytearray((hi - base) // 8 + 1)
            for v in values:
                off = v - base
                bits[off >> 3] |= 1 << (off & 7)
            self._bits, self._ids, self._base = bits, None, base
        else:
            self._bits, self._ids, self._base = None, array("q", sorted(values)), 0

    def _size(self) -> int:
        return len(self._bits) if self._bits is not None else _ID_BYTES * self._len

    def _maybe_convert(self) -> None:
        """O(1): convert only when the other form would be under half the size."""
        size = self._size()
        if size <= _SLACK_BYTES:
            if self._len == 0 and self._bits is not None:
                self._rebuild(set())
            return
        if self._bits is not None:
            convert = size > 2 * _ID_BYTES * self._len
        else:
            assert self._ids is not None
            convert = size > 2 * ((self._ids[-1] - self._ids[0]) // 8 + 1)
        if convert:
            self._rebuild(set(self._list()))

    # ---------------------------------------------------------- set protocol
    def __contains__(self, value: object) -> bool:
        bits = self._bits
        if bits is not None:
            if not isinstance(value, int):
                return False
            off = value - self._base
            return 0 <= off < len(bits) << 3 and bool(bits[off >> 3] >> (off & 7) & 1)
        if not isinstance(value, int):
            return False
        ids = self._ids
        assert ids is not None
        i = bisect_left(ids, value)
        return i < len(ids) and ids[i] == value

    def __iter__(self) -> Iterator[NodeId]:
        """Ascending order, over a snapshot (the set may change meanwhile)."""
        return cast(Iterator[NodeId], iter(self._list()))

    def _list(self) -> list[int]:
        if self._bits is None:
            assert self._ids is not None
            return self._ids.tolist()
        base = self._base
        return [
            base + (i << 3) + b
            for i, byte in enumerate(self._bits)
            if byte
            for b in _BIT_OFFSETS[byte]
        ]

    def __sub__(self, other: AbstractSet[object]) -> set[NodeId]:
        """A plain set (what callers iterate), not another PeerSet to build."""
        return cast(set[NodeId], {v for v in self._list() if v not in other})

    def __len__(self) -> int:
        return self._len

    def add(self, value: NodeId) -> None:
        if value in self:
            return
        if self._bits is not None:
            off = value - self._base
            grown = (
                len(self._bits) + (-off + 7) // 8
                if off < 0
                else max(len(self._bits), (off >> 3) + 1)
            )
            if grown > _SLACK_BYTES and grown > 2 * _ID_BYTES * (self._len + 1):
                # far outside the bitmap: never allocate the gap, go sorted
                self._rebuild({*self._list(), value})
                return
        self._len += 1
        if self._bits is not None:
            if off < 0:  # grow to the left, by whole bytes
                pad = (-off + 7) // 8
                self._bits[0:0] = bytes(pad)
                self._base -= 8 * pad
                off = value - self._base
            if (off >> 3) >= len(self._bits):
                self._bits.extend(bytes((off >> 3) - len(self._bits) + 1))
            self._bits[off >> 3] |= 1 << (off & 7)
        else:
            assert self._ids is not None
            self._ids.insert(bisect_left(self._ids, value), value)
        self._maybe_convert()

    def discard(self, value: NodeId) -> None:
        if value not in self:
            return
        self._len -= 1
        if self._bits is not None:
            off = value - self._base
            self._bits[off >> 3] &= ~(1 << (off & 7)) & 0xFF
        else:
            assert self._ids is not None
            del self._ids[bisect_left(self._ids, value)]
        self._maybe_convert()

    def clear(self) -> None:
        self._rebuild(set())

    def difference_update(self, values: Iterable[NodeId]) -> None:
        for v in values:
            self.discard(v)

    def update(self, values: Iterable[NodeId]) -> None:
        for v in values:
            self.add(v)

    def __repr__(self) -> str:
        return f"PeerSet({sorted(self)!r})"

    def nbytes(self) -> int:
        """Bytes held by the id storage (for tests and memory reports)."""
        return self._size()
