"""h2's per-setting deques, compacted once settled, still behave as h2 expects."""

from __future__ import annotations

import collections
from types import SimpleNamespace

import h2.config
import h2.connection
import h2.events
import h2.settings

from outpost_server.net.h2conn import (
    LeanH2Connection,
    _ListDeque,
    _OneValue,
    compact_deque,
    compact_settings,
)

CODES = h2.settings.SettingCodes


def test_compacted_settings_still_take_and_acknowledge_changes() -> None:
    s = h2.settings.Settings(client=False, initial_values={CODES.MAX_CONCURRENT_STREAMS: 64})
    compact_settings(s)
    assert all(isinstance(v, _OneValue) for v in s._settings.values())
    assert s.max_concurrent_streams == 64 and s.initial_window_size == 65535
    s.initial_window_size = 1 << 20  # pending until acknowledged
    assert s.initial_window_size == 65535
    changed = s.acknowledge()
    assert changed[CODES.INITIAL_WINDOW_SIZE].original_value == 65535
    assert s.initial_window_size == 1 << 20
    compact_settings(s)
    assert isinstance(s._settings[CODES.INITIAL_WINDOW_SIZE], _OneValue)


def test_a_connection_pair_settles_into_compact_settings_and_still_talks() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()

    def pump(a: h2.connection.H2Connection, b: h2.connection.H2Connection) -> list[object]:
        events = b.receive_data(a.data_to_send())
        for e in events:  # what H2ServerConnection._on_event does
            if isinstance(e, h2.events.RemoteSettingsChanged):
                compact_settings(b.remote_settings)
            elif isinstance(e, h2.events.SettingsAcknowledged):
                compact_settings(b.local_settings)
        return events

    for _ in range(3):
        pump(client, server)
        pump(server, client)
    assert all(isinstance(v, _OneValue) for v in server.local_settings._settings.values())
    assert all(isinstance(v, _OneValue) for v in server.remote_settings._settings.values())
    client.send_headers(
        1,
        [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")],
        end_stream=True,
    )
    events = pump(client, server)
    assert any(isinstance(e, h2.events.RequestReceived) for e in events)
    server.send_headers(1, [(":status", "200")])
    server.send_data(1, b"ok", end_stream=True)
    events = pump(server, client)
    assert any(isinstance(e, h2.events.DataReceived) and e.data == b"ok" for e in events)


def test_compacted_hpack_tables_still_index_headers_both_ways() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    for conn in (client, server):
        for coder in (conn.encoder, conn.decoder):
            compact_deque(coder.header_table, "dynamic_entries")
            assert isinstance(coder.header_table.dynamic_entries, _ListDeque)
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    for stream_id in (1, 3, 5):  # repeated headers come from the dynamic tables
        headers = [
            (":method", "POST"),
            (":path", "/machine/map"),
            (":scheme", "http"),
            (":authority", "x"),
            ("user-agent", "tailscaled/1.96"),
        ]
        client.send_headers(stream_id, headers, end_stream=True)
        events = server.receive_data(client.data_to_send())
        got = [e for e in events if isinstance(e, h2.events.RequestReceived)]
        assert [(bytes(k).decode(), bytes(v).decode()) for k, v in got[0].headers] == headers
        server.send_headers(stream_id, [(":status", "200"), ("content-type", "application/json")])
        events = client.receive_data(server.data_to_send())
        assert any(isinstance(e, h2.events.ResponseReceived) for e in events)
    assert len(server.decoder.header_table.dynamic_entries) > 0


def test_compact_deque_leaves_a_deque_in_use_alone() -> None:
    owner = SimpleNamespace(q=collections.deque([1]))
    compact_deque(owner, "q")
    assert type(owner.q) is collections.deque


def test_lean_connection_dispatches_frames_and_forgets_old_closed_streams() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = LeanH2Connection(h2.config.H2Configuration(client_side=False))
    assert not isinstance(server._frame_dispatch_table, dict)
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    for stream_id in range(1, 2 * LeanH2Connection.MAX_CLOSED_STREAMS + 200, 2):
        client.send_headers(stream_id, headers, end_stream=True)
        events = server.receive_data(client.data_to_send())
        assert any(isinstance(e, h2.events.RequestReceived) for e in events)
        server.send_headers(stream_id, [(":status", "200")], end_stream=True)
        client.receive_data(server.data_to_send())
    assert len(server._closed_streams) <= LeanH2Connection.MAX_CLOSED_STREAMS
    # a stream the client resets: later frames on it are a stream error only
    client.send_headers(10_001, headers)
    server.receive_data(client.data_to_send())
    client.reset_stream(10_001)
    server.receive_data(client.data_to_send())
    client.send_headers(10_003, headers, end_stream=True)
    events = server.receive_data(client.data_to_send())
    assert any(isinstance(e, h2.events.RequestReceived) for e in events)
