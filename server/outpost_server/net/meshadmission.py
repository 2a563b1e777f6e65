"""A relay-only appliance learns which node keys it may admit from the control appliance.

`AdmissionFeed` polls `GET https://A/derp/mesh/keys` (TLS verified like the
mesh links; HMAC over a fresh nonce with the site's mesh key; ETag so an
unchanged set costs a 304), keeps the last set it got, and disconnects keys
that left it. If A cannot be reached the last set stays in force: the relay
keeps serving the site's nodes through a control-appliance outage, and says
so in its log; nodes registered meanwhile are admitted once A is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from typing import Final

from ..errors import ProtocolError
from ..keys import NodePublic
from ..relay import Relay
from ..relay.meshauth import MAC_HEADER, MAX_FEED_BYTES, MESH_KEYS_PATH, NONCE_HEADER, decode, mac
from .derpmesh import mesh_ssl_context, parse_mesh_url

log = logging.getLogger(__name__)

POLL_S: Final = 3.0  # a node registered on A can use this relay within a few seconds
TIMEOUT_S: Final = 10.0
MAX_HEAD_BYTES: Final = 16 * 1024


class AdmissionFeed:
    def __init__(
        self, relay: Relay, mesh_key: bytes, url: str, ca_files: Callable[[], list[str]], *, poll_s: float = POLL_S
    ) -> None:
        self.relay = relay
        self.url = url
        self.host, self.port = parse_mesh_url(url)
        self._mesh_key = mesh_key
        self._ca_files = ca_files
        self._poll_s = poll_s
        self.keys: frozenset[NodePublic] = frozenset()
        self.etag = ""
        self.fetched = 0  # successful fetches (200 or 304)
        self.last_error = ""

    def admits(self, key: NodePublic) -> bool:
        return key in self.keys

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
                if self.last_error:
                    log.info("admission feed from %s is back", self.url)
                self.last_error = ""
            except asyncio.CancelledError:
                raise
            except (OSError, ssl.SSLError, TimeoutError, ProtocolError, ValueError) as exc:
                msg = f"{type(exc).__name__}: {exc}"
                if msg != self.last_error:
                    log.warning("admission feed from %s failed (%s); keeping the last %d keys", self.url, msg, len(self.keys))
                self.last_error = msg
            await asyncio.sleep(self._poll_s)

    async def poll_once(self) -> bool:
        """One fetch; True if the key set changed."""
        nonce = os.urandom(16)
        head = (
            f"GET {MESH_KEYS_PATH} HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n"
            f"{NONCE_HEADER}: {nonce.hex()}\r\n{MAC_HEADER}: {mac(self._mesh_key, nonce)}\r\n"
            + (f"If-None-Match: \"{self.etag}\"\r\n" if self.etag else "")
            + "\r\n"
        )
        async with asyncio.timeout(TIMEOUT_S):
            ctx = mesh_ssl_context(self._ca_files)
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=ctx, server_hostname=self.host)
            try:
                writer.write(head.encode())
                raw_head = await reader.readuntil(b"\r\n\r\n")
                if len(raw_head) > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too large")
                status, headers = _parse_head(raw_head)
                if status == 304:
                    self.fetched += 1
                    return False
                if status != 200:
                    raise ProtocolError(f"control appliance answered HTTP {status} (wrong mesh key?)")
                length = int(headers.get("content-length", "-1"))
                if not 0 <= length <= MAX_FEED_BYTES:
                    raise ProtocolError(f"key feed length {length} out of range")
                body = await reader.readexactly(length)
            finally:
                writer.close()
        keys = decode(body)
        etag = headers.get("etag", "").strip('"')
        gone = self.keys - keys
        self.keys, self.etag = keys, etag
        self.fetched += 1
        for k in gone:
            self.relay.disconnect_key(k)  # deleted or expired on the control appliance
        return True


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers
