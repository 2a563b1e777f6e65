"""The public listeners (plain HTTP and TLS): one dispatcher for both.

Every connection starts as HTTP/1.1. We read one request head (bounded by
MAX_REQUEST_HEAD_BYTES and HEAD_TIMEOUT_S) and either answer it and close, or
hand the stream to another protocol:

    POST /ts2021  Upgrade: tailscale-control-protocol -> Noise, then HTTP/2
    GET  /derp    Upgrade: DERP                        -> the DERP relay
    GET  /key?v=N                                      -> the server's Noise key
    /generate_204, /derp/probe, /derp/latency-check    -> relay health probes
    /register/<id>                                     -> "ask your admin" page
    /health                                            -> liveness

A malformed ts2021 initiation gets a Noise error frame (type 3) after the 101
so the client logs a readable `server error: "..."`, then the connection is
closed; nothing else on the server is affected.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..errors import HTTPRequestError, NoiseError
from ..keys import PrivateKey
from ..proto import http1, noise
from ..relay.meshauth import MESH_KEYS_PATH
from .h2conn import H2ServerConnection, Handler

log = logging.getLogger(__name__)

HEAD_TIMEOUT_S = 10.0  # a client must send its request head within this
UPGRADE_TS2021 = "tailscale-control-protocol"
CHALLENGE_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # derper ServeNoContent's accepted set
NO_CACHE = "no-cache, no-store, must-revalidate, no-transform, max-age=0"

DerpUpgrade = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes, bool], Awaitable[None]]


@dataclass
class ListenerCounters:
    connections: int = 0
    bad_requests: int = 0
    bad_handshakes: int = 0
    noise_sessions: int = 0
    tls_handshake_failures: int = 0
    tls_untrusted_root: int = 0  # clients that refused our certificate (no Outpost root)


@dataclass
class PublicHTTP:
    noise_key: PrivateKey
    legacy_key: PrivateKey
    control_handler: Handler
    derp_upgrade: DerpUpgrade | None = None
    pending_page: Callable[[str], str | None] = lambda _id: None
    crl: Callable[[], bytes | None] = lambda: None
    # GET /derp/mesh/keys for a relay-only peer: (request head) -> (status, body, headers)
    mesh_keys: Callable[[http1.RequestHead], tuple[int, bytes, list[tuple[str, str]]]] | None = None
    counters: ListenerCounters = field(default_factory=ListenerCounters)
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    def close_all(self) -> None:
        """Drop every open client connection (shutdown); clients reconnect."""
        for writer in list(self._open):
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        self._open.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # shutdown
        except Exception:
            log.exception("public connection failed")
        finally:
            self._open.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[http1.RequestHead, bytes] | None:
        buf = bytearray()
        while True:
            parsed = http1.parse_head(buf)
            if parsed is not None:
                head, used = parsed
                return head, bytes(buf[used:])
            chunk = await reader.read(4096)
            if not chunk:
                return None
            buf += chunk

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            got = await asyncio.wait_for(self._read_head(reader), HEAD_TIMEOUT_S)
        except TimeoutError:
            return
        except HTTPRequestError as exc:
            self.counters.bad_requests += 1
            writer.write(http1.response(exc.status, f"{exc}\n".encode()))
            await writer.drain()
            return
        if got is None:
            return
        head, rest = got
        path = head.path
        upgrade = (head.header("upgrade") or "").lower()
        if path == "/ts2021":
            conn = await self._ts2021(head, rest, reader, writer)
            if conn is not None:
                # The connection lives for hours: this frame must not keep its
                # request head and handshake alive meanwhile.
                del head, got, rest
                await conn.run()
                return
        elif path == "/derp" and upgrade in ("derp", "websocket") and self.derp_upgrade is not None:
            fast = head.header("derp-fast-start") == "1"
            await self.derp_upgrade(reader, writer, rest, fast)
        elif path == "/derp":
            writer.write(http1.response(426, b"DERP requires connection upgrade\n"))
        elif path == "/key" and head.method == "GET":
            body = json.dumps(
                {
                    "legacyPublicKey": "mkey:" + self.legacy_key.public_raw.hex(),
                    "publicKey": "mkey:" + self.noise_key.public_raw.hex(),
                }
            ).encode()
            writer.write(http1.response(200, body, content_type="application/json"))
        elif path in ("/derp/probe", "/derp/latency-check"):
            if head.method in ("GET", "HEAD"):
                writer.write(http1.response(200, headers=[("Access-Control-Allow-Origin", "*")]))
            else:
                writer.write(http1.response(405, b"bogus probe method\n"))
        elif path == "/generate_204":
            headers = [("Cache-Control", NO_CACHE)]
            challenge = head.header("x-tailscale-challenge")
            if challenge and CHALLENGE_RE.match(challenge):
                headers.append(("X-Tailscale-Response", f"response {challenge}"))
            writer.write(http1.response(204, headers=headers))
        elif path == "/ca/crl" and head.method == "GET":
            crl = self.crl()
            if crl is None:
                writer.write(http1.response(404, b"no certificate authority\n"))
            else:
                writer.write(http1.response(200, crl, content_type="application/pkix-crl"))
        elif path == MESH_KEYS_PATH and head.method == "GET" and self.mesh_keys is not None:
            status, body, headers = self.mesh_keys(head)
            writer.write(http1.response(status, body, headers, content_type="application/json"))
        elif path == "/health":
            writer.write(http1.response(200, b"ok\n"))
        elif path.startswith("/register/"):
            page = self.pending_page(path.rsplit("/", 1)[-1])
            if page is None:
                writer.write(http1.response(404, b"unknown or expired registration\n"))
            else:
                writer.write(http1.response(200, page.encode()))
        else:
            writer.write(http1.response(404, b"not found\n"))
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()

    async def _ts2021(
        self, head: http1.RequestHead, rest: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> H2ServerConnection | None:
        """The upgrade and handshake; returns the connection to run, or None
        when the client was refused (the answer is already written)."""
        upgrade = head.header("upgrade") or ""
        if not upgrade:
            self.counters.bad_requests += 1
            writer.write(http1.response(400, b"missing Upgrade header\n"))
            return None
        if upgrade.lower() != UPGRADE_TS2021:
            self.counters.bad_requests += 1
            writer.write(http1.response(400, b"unknown next protocol\n"))
            return None
        raw = head.header("x-tailscale-handshake")
        if raw is None:
            self.counters.bad_requests += 1
            writer.write(http1.response(400, b"missing X-Tailscale-Handshake header\n"))
            return None
        try:
            init = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            self.counters.bad_requests += 1
            writer.write(http1.response(400, b"X-Tailscale-Handshake is not base64\n"))
            return None
        switching = (
            "HTTP/1.1 101 Switching Protocols\r\n"
            f"Upgrade: {UPGRADE_TS2021}\r\n"
            "Connection: upgrade\r\n\r\n"
        ).encode()
        try:
            accepted = noise.accept(self.noise_key, init, PrivateKey.generate("noise-ephemeral"))
        except NoiseError as exc:
            self.counters.bad_handshakes += 1
            log.info("ts2021 handshake refused: %s", exc)
            writer.write(switching + noise.error_frame(str(exc)))
            return None
        writer.write(switching + accepted.response)
        await writer.drain()
        self.counters.noise_sessions += 1
        return H2ServerConnection(
            reader,
            writer,
            accepted.transport,
            accepted.peer,
            accepted.version,
            self.control_handler,
            initial=rest,
        )


TLS_HANDSHAKE_TIMEOUT_S = 15.0  # a TLS client that has not finished by then is not a client


async def serve_tls(
    ctx: ssl.SSLContext,
    counters: ListenerCounters,
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """TLS on an accepted TCP connection, then the usual dispatcher.

    The handshake is done here rather than by `start_server(ssl=...)` because
    asyncio drops handshake failures silently; an operator whose clients lack
    the Outpost root needs to see that, with the address and the reason.
    """
    peer = writer.get_extra_info("peername")
    where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
    try:
        await writer.start_tls(ctx, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S)
    except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
        counters.tls_handshake_failures += 1
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        hint = ""
        text = str(exc).lower()
        if isinstance(exc, ssl.SSLError) and ("unknown ca" in text or "bad certificate" in text):
            counters.tls_untrusted_root += 1
            hint = " (the client does not trust the Outpost root: give it DATA_DIR/tls/root.pem)"
        log.warning("TLS handshake from %s failed: %s%s", where, reason, hint)
        writer.transport.abort()
        return
    await serve(reader, writer)


def tls_context(chain: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(chain, key)
    ctx.set_alpn_protocols(["http/1.1"])  # DERP and ts2021 are HTTP/1.1 upgrades
    return ctx
