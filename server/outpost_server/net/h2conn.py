"""An HTTP/2 server connection running over a ts2021 Noise transport.

Theory of operation
-------------------
After the Noise handshake the decrypted byte stream is cleartext HTTP/2 with
prior knowledge; the Tailscale client is the HTTP/2 client. One reader loop
feeds socket bytes through `Transport.feed` (decrypt) into `h2`, and every
byte `h2` wants to send goes through `Transport.seal` to the socket. Writes are
synchronous within one event-loop step, so records never interleave.

Each complete request runs as its own task (a streaming map response stays
open for hours while lite updates and registrations arrive as other streams on
the same connection). Responses respect HTTP/2 flow control: a sender waits on
`_window` until the peer opens its window (initial maps can exceed 64 KiB).

Limits: request bodies over MAX_REQUEST_BODY_BYTES get 413 and a stream reset;
a protocol violation from h2 or a Noise failure ends the connection. Nothing
sent back carries internal state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from ..errors import NoiseError
from ..keys import MachinePublic
from ..proto.noise import Transport
from .flag import Flag

log = logging.getLogger(__name__)

MAX_REQUEST_BODY_BYTES = 1024 * 1024  # Headscale's limit too; register/map bodies are ~4 KiB
MAX_CONCURRENT_STREAMS = 64  # one node needs ~3 (map stream, lite update, register)
READ_CHUNK_BYTES = 64 * 1024
IDLE_TIMEOUT_S = 15 * 60  # a Noise connection with no streams and no bytes is closed


class _OneValue(list):  # type: ignore[type-arg]
    """What h2 keeps per setting is a deque of pending values, current first;
    once nothing is outstanding it holds one value. A one-item list with the
    one deque method h2 uses (`popleft`) is 64 bytes where a deque is ~600:
    tracemalloc put h2's settings at ~11 KiB of every connection, the largest
    single item of a connected node's memory."""

    __slots__ = ()

    def popleft(self) -> object:
        return self.pop(0)


def compact_settings(settings: h2.settings.Settings) -> None:
    """Swap settled deques for `_OneValue`s (h2 appends and pops as before)."""
    values = getattr(settings, "_settings", None)
    if not isinstance(values, dict):  # another h2 layout: leave it alone
        return
    for key, v in values.items():
        if len(v) == 1 and not isinstance(v, _OneValue):
            values[key] = _OneValue(v)


class _ListDeque(list):  # type: ignore[type-arg]
    """A list with `appendleft`, for the deques a connection keeps for hours
    that hold a few items at most: hpack's dynamic tables (a handful of our
    response headers and the client's request headers) and asyncio's
    drain-waiter queue (one waiter at most). An empty deque is ~760 bytes
    (its first 64-slot block is allocated up front), an empty list 56."""

    __slots__ = ()

    def appendleft(self, item: object) -> None:
        self.insert(0, item)

    def popleft(self) -> object:
        return self.pop(0)


def compact_deque(owner: object, attr: str) -> None:
    """Swap `owner.attr` for a `_ListDeque` if it is an empty deque; leave
    anything else alone (another library version, a table in use)."""
    value = getattr(owner, attr, None)
    if type(value) is collections.deque and not value:
        setattr(owner, attr, _ListDeque())


class _FrameDispatch:
    """h2 builds, per connection, a dict of ten bound methods to dispatch
    received frames (~1.1 KiB per connection in tracemalloc); this looks the
    same method up by name when a frame arrives."""

    __slots__ = ("_conn", "_names")

    def __init__(self, conn: object, names: dict[type, str]) -> None:
        self._conn = conn
        self._names = names  # shared by every connection

    def __getitem__(self, frame_type: type) -> Callable[..., Any]:
        method: Callable[..., Any] = getattr(self._conn, self._names[frame_type])
        return method


class LeanH2Connection(h2.connection.H2Connection):
    """h2's server connection with less state kept per connection.

    MAX_CLOSED_STREAMS: h2 remembers how each closed stream ended, for up to
    65,536 streams (an OrderedDict entry each, ~8 MB at the limit), so that a
    late frame on a stream that was reset is a stream error rather than a
    connection error. Late frames follow a reset closely; a node's connection
    lives for days and opens a stream per lite update, so keep the last 64.
    """

    MAX_CLOSED_STREAMS = 64
    _dispatch_names: dict[type, str] | None = None

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        table = getattr(self, "_frame_dispatch_table", None)
        if not isinstance(table, dict):  # another h2 layout: leave it alone
            return
        names = LeanH2Connection._dispatch_names
        if names is None:
            names = {
                t: m.__name__ for t, m in table.items() if getattr(m, "__self__", None) is self
            }
            if len(names) != len(table):
                return
            LeanH2Connection._dispatch_names = names
        self._frame_dispatch_table = _FrameDispatch(self, names)  # type: ignore[assignment]


class StreamClosed(Exception):
    """The client reset or closed the stream we were writing to."""


@dataclass
class Request:
    stream_id: int
    method: str
    path: str
    headers: list[tuple[str, str]]
    peer: MachinePublic
    version: int  # the client's Noise protocol (capability) version
    body: bytearray = field(default_factory=bytearray)


Handler = Callable[[Request, "Response"], Awaitable[None]]


class Response:
    """What a handler writes to. Also the hook for 'the client went away'."""

    def __init__(self, conn: H2ServerConnection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.started = False
        self.ended = False
        self.closed = Flag()
        self._close_callbacks: list[Callable[[], None]] = []

    def on_close(self, cb: Callable[[], None]) -> None:
        self._close_callbacks.append(cb)
        if self.closed.is_set():
            cb()

    def _mark_closed(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            for cb in self._close_callbacks:
                cb()

    async def start(self, status: int, content_type: str | None = None) -> None:
        if self.closed.is_set():
            raise StreamClosed
        headers = [(":status", str(status))]
        if content_type:
            headers.append(("content-type", content_type))
        self._conn.h2.send_headers(self.stream_id, headers)
        self.started = True
        self._conn.flush()

    async def write(self, data: bytes) -> None:
        await self._conn.send_data(self, data)

    async def end(self) -> None:
        if self.ended or self.closed.is_set():
            return
        self.ended = True
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._conn.h2.end_stream(self.stream_id)
            self._conn.flush()

    async def respond(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        await self.start(status, content_type if body else None)
        if body:
            await self.write(body)
        await self.end()


class H2ServerConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transport: Transport,
        peer: MachinePublic,
        version: int,
        handler: Handler,
        *,
        initial: bytes = b"",
    ) -> None:
        self._initial = initial  # bytes that came with the upgrade request
        self._reader = reader
        self._writer = writer
        self._transport = transport
        self.peer = peer
        self.version = version
        self._handler = handler
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = LeanH2Connection(config=config)
        for coder in (self.h2.encoder, self.h2.decoder):
            compact_deque(getattr(coder, "header_table", None), "dynamic_entries")
        # asyncio's StreamReaderProtocol: waiters for drain(), one at most here.
        compact_deque(getattr(writer, "_protocol", None), "_drain_waiters")
        self._requests: dict[int, Request] = {}
        self._responses: dict[int, Response] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._window = Flag()
        self._dead = False
        self._last_rx = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def _check_idle(self) -> None:
        """End the connection after IDLE_TIMEOUT_S without a byte from the
        client unless a stream is open; one timer per connection, re-armed."""
        loop = asyncio.get_running_loop()
        due = self._last_rx + IDLE_TIMEOUT_S
        if self._responses:
            delay: float = IDLE_TIMEOUT_S
        elif loop.time() >= due:
            self._reader.feed_eof()  # the read loop ends as if the client had closed
            return
        else:
            delay = due - loop.time()
        self._idle_timer = loop.call_later(delay, self._check_idle)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self._dead:
            self._writer.write(self._transport.seal(data))

    async def run(self) -> None:
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
            },
        )
        self.h2.initiate_connection()
        self.flush()
        try:
            initial, self._initial = self._initial, b""
            if initial:
                self._receive(initial)
            del initial
            loop = asyncio.get_running_loop()
            self._last_rx = loop.time()
            self._idle_timer = loop.call_later(IDLE_TIMEOUT_S, self._check_idle)
            while not self._dead:
                # No wait_for per read: it costs a task, a future and a timer
                # for every idle connection (see _check_idle).
                data = await self._reader.read(READ_CHUNK_BYTES)
                if not data:
                    break
                self._last_rx = loop.time()
                self._receive(data)
                await self._writer.drain()
        except NoiseError as exc:
            log.info("noise connection from %s ended: %s", self.peer.short(), exc)
        except h2.exceptions.ProtocolError as exc:
            log.info("HTTP/2 protocol error from %s: %s", self.peer.short(), exc)
            with contextlib.suppress(Exception):
                self.h2.close_connection(error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR)
                self.flush()
        except (ConnectionError, OSError):
            pass
        finally:
            self._dead = True
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            for resp in list(self._responses.values()):
                resp._mark_closed()
            self._window.set()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                self._writer.close()

    def _receive(self, raw: bytes) -> None:
        plain = self._transport.feed(raw)
        if not plain:
            return
        for event in self.h2.receive_data(plain):
            self._on_event(event)
        self.flush()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            hdrs = [(str(k), str(v)) for k, v in event.headers or []]
            pseudo = dict(h for h in hdrs if h[0].startswith(":"))
            req = Request(
                stream_id=event.stream_id,
                method=pseudo.get(":method", ""),
                path=pseudo.get(":path", ""),
                headers=[h for h in hdrs if not h[0].startswith(":")],
                peer=self.peer,
                version=self.version,
            )
            self._requests[event.stream_id] = req
            self._responses[event.stream_id] = Response(self, event.stream_id)
            if event.stream_ended is not None:
                self._dispatch(event.stream_id)
        elif isinstance(event, h2.events.DataReceived):
            req = self._requests.get(event.stream_id)
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if req is None:
                return
            if len(req.body) + len(event.data) > MAX_REQUEST_BODY_BYTES:
                self._refuse_oversized(event.stream_id)
                return
            req.body += event.data
            if event.stream_ended is not None:
                self._dispatch(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            if event.stream_id in self._requests:
                self._dispatch(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._requests.pop(event.stream_id, None)
            resp = self._responses.pop(event.stream_id, None)
            if resp is not None:
                resp._mark_closed()
            self._window.set()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window.set()
            if isinstance(event, h2.events.RemoteSettingsChanged):
                compact_settings(self.h2.remote_settings)
        elif isinstance(event, h2.events.SettingsAcknowledged):
            compact_settings(self.h2.local_settings)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._dead = True

    def _refuse_oversized(self, stream_id: int) -> None:
        self._requests.pop(stream_id, None)
        resp = self._responses.pop(stream_id, None)
        log.info("request body from %s over %d bytes refused", self.peer.short(), MAX_REQUEST_BODY_BYTES)
        with contextlib.suppress(h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            body = b"request body too large\n"
            self.h2.send_headers(
                stream_id, [(":status", "413"), ("content-type", "text/plain; charset=utf-8")]
            )
            self.h2.send_data(stream_id, body)
            self.h2.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
        if resp is not None:
            resp._mark_closed()

    def _dispatch(self, stream_id: int) -> None:
        req = self._requests.pop(stream_id, None)
        resp = self._responses.get(stream_id)
        if req is None or resp is None:
            return
        task = asyncio.create_task(self._run_handler(req, resp))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_handler(self, req: Request, resp: Response) -> None:
        try:
            await self._handler(req, resp)
            if not resp.started and not resp.closed.is_set():
                await resp.respond(500, b"no response\n")
            await resp.end()
        except StreamClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler for %s %s failed", req.method, req.path)
            with contextlib.suppress(Exception):
                if not resp.started:
                    await resp.respond(500, b"internal error\n")
                else:
                    self.h2.reset_stream(resp.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                    self.flush()
        finally:
            self._responses.pop(resp.stream_id, None)

    async def send_data(self, resp: Response, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if resp.closed.is_set() or self._dead:
                raise StreamClosed
            try:
                window = self.h2.local_flow_control_window(resp.stream_id)
            except h2.exceptions.StreamClosedError:
                resp._mark_closed()
                raise StreamClosed from None
            if window <= 0:
                self._window.clear()
                await self._window.wait()
                continue
            size = min(window, self.h2.max_outbound_frame_size, len(view))
            try:
                self.h2.send_data(resp.stream_id, bytes(view[:size]))
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                resp._mark_closed()
                raise StreamClosed from None
            view = view[size:]
            self.flush()
        try:
            await self._writer.drain()
        except (ConnectionError, OSError):
            self._dead = True
            resp._mark_closed()
            raise StreamClosed from None
