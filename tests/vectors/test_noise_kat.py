"""Known-answer test for the ts2021 Noise layer.

Source of the vectors: shared/docs/reference/control-protocol.md §2.7, generated
by Tailscale's own control/controlbase Go code (handshake.go, conn.go,
messages.go at tailscale/tailscale de9ec7ee2562) with deterministic keys:
private key = clamp(SHA-256(seed)).
"""

import base64
import hashlib

from outpost_server.keys import PrivateKey
from outpost_server.proto import noise


def key(seed: str) -> PrivateKey:
    return PrivateKey(hashlib.sha256(seed.encode()).digest())


CONTROL_PUB = "de9cd0c19f8f38993508153f51a82726de935bfb06b64918c3e4badbbd19bb10"
MACHINE_PUB = "cd7487f7e71297fd364ae18032d54a6ea7510ba38dc26616dfdae729179a686d"
INIT = bytes.fromhex(
    "0091010060f01e3feed2953d4221feddad1b6baa06ee321666eb0e170d33428905b0057d4e0b45cb4068461826"
    "ac02e2f3166d862c7565d487a972408835bc26aa1d765c623995d67347681de21fde9086b35f202a8ce26423a6"
    "0b48885f45f44eb5207660"
)
HEADER = (
    "AJEBAGDwHj/u0pU9QiH+3a0ba6oG7jIWZusOFw0zQokFsAV9TgtFy0BoRhgmrALi8xZthix1ZdSHqXJAiDW8Jqod"
    "dlxiOZXWc0doHeIf3pCGs18gKoziZCOmC0iIX0X0TrUgdmA="
)
RESPONSE = bytes.fromhex(
    "02003098ce40bd9d69d7950579450cfcb9844f328d214b045f825a96bf70f9ae37b37d1efa601f33bb26a04fea"
    "0dd83c5809e8"
)
C2S_HELLO = bytes.fromhex("040015cf797113c61380630edb2a463f2b9173e8e8a81465")
C2S_AGAIN = bytes.fromhex("0400157c17fdef4042858515ea076d6117135abb8176ea63")
S2C_WORLD = bytes.fromhex("0400151ec3b8e7d6b906582a1cd56726be1d335f4d6615b2")
HANDSHAKE_HASH = "b9029088547f4f3bed275a8a491d5ea8e3e8feeebe15284095f7d584d8d75871"


def test_kat_private_keys_clamp_to_the_published_publics() -> None:
    assert key("control-static").public_raw.hex() == CONTROL_PUB
    assert key("machine-static").public_raw.hex() == MACHINE_PUB


def test_kat_header_is_base64_of_the_initiation() -> None:
    assert base64.b64decode(HEADER) == INIT


def test_server_accepts_the_go_initiation_and_answers_byte_for_byte() -> None:
    acc = noise.accept(key("control-static"), INIT, key("server-ephemeral"))
    assert acc.version == 145
    assert acc.peer.raw.hex() == MACHINE_PUB
    assert acc.response == RESPONSE
    assert acc.handshake_hash.hex() == HANDSHAKE_HASH
    # Client records use nonces 0 and 1: the second one proves the big-endian counter.
    assert acc.transport.feed(C2S_HELLO + C2S_AGAIN) == b"helloagain"
    assert acc.transport.seal(b"world") == S2C_WORLD


def test_initiator_produces_the_go_initiation() -> None:
    init = noise.Initiator(
        key("machine-static"), bytes.fromhex(CONTROL_PUB), 145, key("client-ephemeral")
    )
    assert init.initiation() == INIT
    transport = init.finish(RESPONSE)
    assert transport.seal(b"hello") + transport.seal(b"again") == C2S_HELLO + C2S_AGAIN
    assert transport.feed(S2C_WORLD) == b"world"
