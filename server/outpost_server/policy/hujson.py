"""HuJSON: JSON plus `//` and `/* */` comments and trailing commas.

Tailscale policy files are written in HuJSON. This is a small recursive
descent parser straight to Python values (dict, list, str, int, float, bool,
None); errors carry the 1-based line and column of the offending character so
an administrator can find the mistake in a long policy file.
"""

from __future__ import annotations

from typing import Any

from outpost_server.policy.errors import PolicyError

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_MAX_DEPTH = 200  # policies are shallow; this keeps hostile input from exhausting the stack


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str, pos: int | None = None) -> PolicyError:
        at = self.pos if pos is None else pos
        line = self.text.count("\n", 0, at) + 1
        column = at - (self.text.rfind("\n", 0, at) + 1) + 1
        return PolicyError(message, line, column)

    def skip(self) -> None:
        """Skip whitespace and comments."""
        text = self.text
        n = len(text)
        while self.pos < n:
            c = text[self.pos]
            if c in " \t\r\n\ufeff":
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated block comment")
                self.pos = end + 2
            else:
                return

    def value(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise self.error("nesting too deep")
        self.skip()
        if self.pos >= len(self.text):
            raise self.error("unexpected end of input")
        c = self.text[self.pos]
        if c == "{":
            return self.obj(depth)
        if c == "[":
            return self.arr(depth)
        if c == '"':
            return self.string()
        if c == "-" or c.isdigit():
            return self.number()
        for word, val in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return val
        raise self.error(f"invalid character {c!r} looking for beginning of value")

    def obj(self, depth: int) -> dict[str, Any]:
        self.pos += 1
        out: dict[str, Any] = {}
        while True:
            self.skip()
            if self.pos >= len(self.text):
                raise self.error("unexpected end of input in object")
            if self.text[self.pos] == "}":
                self.pos += 1
                return out
            if self.text[self.pos] != '"':
                raise self.error(
                    f"invalid character {self.text[self.pos]!r} looking for beginning of object key"
                )
            key = self.string()
            self.skip()
            if self.pos >= len(self.text) or self.text[self.pos] != ":":
                raise self.error("expected ':' after object key")
            self.pos += 1
            out[key] = self.value(depth + 1)
            self.skip()
            if self.pos >= len(self.text):
                raise self.error("unexpected end of input in object")
            c = self.text[self.pos]
            if c == ",":
                self.pos += 1
            elif c != "}":
                raise self.error(f"invalid character {c!r} after object key:value pair")

    def arr(self, depth: int) -> list[Any]:
        self.pos += 1
        out: list[Any] = []
        while True:
            self.skip()
            if self.pos >= len(self.text):
                raise self.error("unexpected end of input in array")
            if self.text[self.pos] == "]":
                self.pos += 1
                return out
            out.append(self.value(depth + 1))
            self.skip()
            if self.pos >= len(self.text):
                raise self.error("unexpected end of input in array")
            c = self.text[self.pos]
            if c == ",":
                self.pos += 1
            elif c != "]":
                raise self.error(f"invalid character {c!r} after array element")

    def string(self) -> str:
        start = self.pos
        self.pos += 1
        text = self.text
        parts: list[str] = []
        while True:
            if self.pos >= len(text):
                raise self.error("unterminated string", start)
            c = text[self.pos]
            if c == '"':
                self.pos += 1
                return "".join(parts)
            if c == "\\":
                if self.pos + 1 >= len(text):
                    raise self.error("unterminated string", start)
                e = text[self.pos + 1]
                if e in _ESCAPES:
                    parts.append(_ESCAPES[e])
                    self.pos += 2
                elif e == "u":
                    parts.append(self.unicode_escape())
                else:
                    raise self.error(f"invalid escape character {e!r} in string")
            elif ord(c) < 0x20:
                raise self.error("invalid control character in string")
            else:
                parts.append(c)
                self.pos += 1

    def unicode_escape(self) -> str:
        code = self.hex4(self.pos + 2)
        self.pos += 6
        if 0xD800 <= code < 0xDC00 and self.text.startswith("\\u", self.pos):
            low = self.hex4(self.pos + 2)
            if 0xDC00 <= low < 0xE000:
                self.pos += 6
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
        if 0xD800 <= code < 0xE000:
            return (
                "\ufffd"  # a lone surrogate cannot be a Python str character; JSON decoders agree
            )
        return chr(code)

    def hex4(self, at: int) -> int:
        digits = self.text[at : at + 4]
        if len(digits) != 4 or any(ch not in "0123456789abcdefABCDEF" for ch in digits):
            raise self.error("invalid \\u escape in string", at - 2)
        return int(digits, 16)

    def number(self) -> int | float:
        text = self.text
        start = self.pos
        i = start
        if text[i] == "-":
            i += 1
        if i >= len(text) or not text[i].isdigit():
            raise self.error("invalid number", start)
        if text[i] == "0":
            i += 1
        else:
            while i < len(text) and text[i].isdigit():
                i += 1
        is_float = False
        if i < len(text) and text[i] == ".":
            i += 1
            if i >= len(text) or not text[i].isdigit():
                raise self.error("invalid number: digit expected after '.'", i)
            while i < len(text) and text[i].isdigit():
                i += 1
            is_float = True
        if i < len(text) and text[i] in "eE":
            i += 1
            if i < len(text) and text[i] in "+-":
                i += 1
            if i >= len(text) or not text[i].isdigit():
                raise self.error("invalid number: digit expected in exponent", i)
            while i < len(text) and text[i].isdigit():
                i += 1
            is_float = True
        self.pos = i
        literal = text[start:i]
        return float(literal) if is_float else int(literal)


def loads(text: str) -> Any:
    """Parse a HuJSON document; raise PolicyError with line/column on bad syntax."""
    parser = _Parser(text)
    value = parser.value(0)
    parser.skip()
    if parser.pos != len(text):
        raise parser.error(f"invalid character {text[parser.pos]!r} after top-level value")
    return value
