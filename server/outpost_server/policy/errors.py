"""The policy engine's error type.

One class, a subclass of the shared `InvalidInput`, so the API layer maps a
rejected policy to HTTP 400 without knowing about the policy package. The
message text follows what Tailscale's control plane says for the same mistake,
because administrators paste these policies between systems and search for the
messages.
"""

from __future__ import annotations

from outpost_server.errors import InvalidInput


class PolicyError(InvalidInput):
    """A policy document was rejected (syntax, validation or failing tests)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.message = message
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line is not None and column is not None else ""
        super().__init__(where + message)
