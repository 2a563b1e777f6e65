"""One error hierarchy for the whole server.

    OutpostError
    +-- ProtocolError      the peer misbehaved (bad bytes on the wire)
    |   +-- NoiseError         ts2021 handshake / record layer
    |   +-- FramingError       length-prefixed frames (DERP, map frames)
    |   +-- HTTPRequestError   malformed HTTP/1.1 head
    +-- LocalProtocolError the local code misused a protocol object (a bug here)
    +-- DomainError        a well-formed request the domain refuses
        +-- NotFound
        +-- Forbidden
        +-- Conflict
        +-- InvalidInput
        +-- EnrolmentRefused

Errors are mapped to wire errors and HTTP statuses only at the edges
(`net/` and `api/`). Messages must never carry key material or tracebacks: they
may be shown to a remote peer.
"""

from __future__ import annotations


class OutpostError(Exception):
    """Root of every error Outpost raises on purpose."""


class ProtocolError(OutpostError):
    """The remote peer sent something that violates the protocol."""


class NoiseError(ProtocolError):
    """ts2021 Noise handshake or transport record failure."""


class FramingError(ProtocolError):
    """A length-prefixed frame was truncated, oversized or of an unknown type."""


class HTTPRequestError(ProtocolError):
    """An HTTP/1.1 request head was malformed or over its limits."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class LocalProtocolError(OutpostError):
    """Local code used a protocol object wrongly (a bug on our side)."""


class DomainError(OutpostError):
    """A well-formed request that the domain rules refuse."""

    http_status = 400


class InvalidInput(DomainError):
    http_status = 400


class NotFound(DomainError):
    http_status = 404


class Forbidden(DomainError):
    http_status = 403


class Conflict(DomainError):
    http_status = 409


class EnrolmentRefused(DomainError):
    """Registration refused: wrong, used, revoked or expired enrolment key, expired node."""

    http_status = 403
