"""A client and server Noise endpoint wired together in memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from outpost_server.keys import PrivateKey
from outpost_server.proto import noise


def pair() -> tuple[noise.Transport, noise.Transport, noise.Accepted, PrivateKey]:
    server, machine = PrivateKey.generate(), PrivateKey.generate()
    init = noise.Initiator(machine, server.public_raw, 109, PrivateKey.generate())
    acc = noise.accept(server, init.initiation(), PrivateKey.generate())
    client = init.finish(acc.response)
    return client, acc.transport, acc, machine


def test_server_learns_the_client_machine_key_and_version() -> None:
    _, _, acc, machine = pair()
    assert acc.peer.raw == machine.public_raw
    assert acc.version == 109


@given(st.lists(st.binary(max_size=9000), max_size=6), st.integers(1, 97))
@settings(max_examples=60)
def test_any_messages_arrive_intact_whatever_the_read_sizes(msgs: list[bytes], step: int) -> None:
    client, server, _, _ = pair()
    wire = b"".join(client.seal(m) for m in msgs)
    got = b"".join(server.feed(wire[i : i + step]) for i in range(0, len(wire), step))
    assert got == b"".join(msgs)
    back = server.seal(got)
    assert client.feed(back) == got


def test_large_writes_are_split_into_records_within_the_limit() -> None:
    client, _, _, _ = pair()
    wire = client.seal(b"x" * 10000)
    offset, sizes = 0, []
    while offset < len(wire):
        length = int.from_bytes(wire[offset + 1 : offset + 3], "big")
        sizes.append(3 + length)
        offset += 3 + length
    assert max(sizes) <= noise.MAX_RECORD_BYTES
    assert len(sizes) == 3
