"""Tailnet address allocation: 100.64.0.0/10 and fd7a:115c:a1e0::/48.

Addresses are allocated once and stored with the node, so they are stable
across restarts. The IPv6 address carries the same offset as the IPv4 one,
which keeps the pair easy to read in tables and logs.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

CGNAT_V4 = IPv4Network("100.64.0.0/10")
TAILNET_V6 = IPv6Network("fd7a:115c:a1e0::/48")
# Reserved inside the CGNAT range by Tailscale clients: 100.100.100.0/24 holds
# the quad-100 service address, 100.115.92.0/23 is ChromeOS's ARC range.
RESERVED_V4 = (IPv4Network("100.100.100.0/24"), IPv4Network("100.115.92.0/23"))

from ..errors import Conflict  # noqa: E402


class AddressAllocator:
    def __init__(self, used_v4: Iterable[IPv4Address] = ()) -> None:
        self._used = {int(a) - int(CGNAT_V4.network_address) for a in used_v4}
        self._cursor = 1

    def _ok(self, offset: int) -> bool:
        if offset in self._used or offset <= 0 or offset >= CGNAT_V4.num_addresses - 1:
            return False
        addr = CGNAT_V4.network_address + offset
        return not any(addr in net for net in RESERVED_V4)

    def allocate(self) -> tuple[IPv4Address, IPv6Address]:
        size = CGNAT_V4.num_addresses
        for _ in range(size):
            if self._ok(self._cursor):
                offset = self._cursor
                self._used.add(offset)
                self._cursor = offset + 1
                return (
                    CGNAT_V4.network_address + offset,
                    TAILNET_V6.network_address + offset,
                )
            self._cursor = self._cursor + 1 if self._cursor + 1 < size else 1
        raise Conflict("the tailnet address range is exhausted")

    def release(self, addr: IPv4Address) -> None:
        self._used.discard(int(addr) - int(CGNAT_V4.network_address))
