"""Minimal HTTP/1.1 request-head parsing for the public listener. Sans-IO.

Theory of operation
-------------------
The public port serves a handful of small, body-less requests (`GET /key`,
`POST /ts2021` with `Content-Length: 0`, `GET /derp`, `/generate_204`, DERP
probes) and then, for the two upgrade paths, hands the raw stream to another
protocol. So we only need the request head: `parse_head(buffer)` returns the
request and how many bytes it used once `\\r\\n\\r\\n` has arrived, `None` while
more bytes are needed, and raises HTTPRequestError for anything malformed or
over the limits. Every byte after the head belongs to the next protocol (DERP
fast-start sends its ClientInfo right behind the head).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from ..errors import HTTPRequestError

MAX_REQUEST_HEAD_BYTES = 16 * 1024  # generous for X-Tailscale-Handshake (136 chars) + Go defaults
MAX_HEADER_COUNT = 64
MAX_REQUEST_BODY_BYTES = 64 * 1024  # bodies are not expected on this listener
_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT"})

REASONS = {
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: tuple[tuple[str, str], ...]  # names lower-cased, order kept

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def content_length(self) -> int:
        raw = self.header("content-length")
        if raw is None:
            return 0
        if not raw.isdigit():
            raise HTTPRequestError("invalid Content-Length")
        return int(raw)


def parse_head(buffer: bytes | bytearray) -> tuple[RequestHead, int] | None:
    end = bytes(buffer[: MAX_REQUEST_HEAD_BYTES + 4]).find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_REQUEST_HEAD_BYTES:
            raise HTTPRequestError("request head too large", status=431)
        return None
    try:
        text = bytes(buffer[:end]).decode("ascii")
    except UnicodeDecodeError:
        raise HTTPRequestError("request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise HTTPRequestError("malformed request line")
    method, target, _ = parts
    if method not in _METHODS:
        raise HTTPRequestError("unsupported method", status=405)
    if not target.startswith("/"):
        raise HTTPRequestError("request target must be a path")
    if len(lines) - 1 > MAX_HEADER_COUNT:
        raise HTTPRequestError("too many header fields", status=431)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise HTTPRequestError("malformed header field")
        headers.append((name.lower(), value.strip()))
    split = urlsplit(target)
    return (
        RequestHead(
            method=method,
            target=target,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=tuple(headers),
        ),
        end + 4,
    )


def response(
    status: int,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    *,
    content_type: str | None = "text/plain; charset=utf-8",
    close: bool = True,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    hdrs = list(headers or [])
    if content_type and body:
        hdrs.append(("Content-Type", content_type))
    if status not in (101, 204):
        hdrs.append(("Content-Length", str(len(body))))
    if close and status != 101:
        hdrs.append(("Connection", "close"))
    lines += [f"{k}: {v}" for k, v in hdrs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body
