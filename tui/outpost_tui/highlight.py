"""Colouring for text the console shows verbatim: HuJSON policies and unified diffs.

Pure functions from a string to rich `Text`, tested directly. The input is the
admin's own file, so it may hold characters the Linux console font cannot draw
(see theme.SAFE_GLYPHS): those are shown as `?`, tabs as spaces. Colours are
the 16 ANSI ones only.

The HuJSON scanner is a highlighter, not a parser: it never fails, whatever
the text, and leaves validation to the server (which reports line and column).
"""

from __future__ import annotations

import re

from rich.text import Text

from .theme import SAFE_GLYPHS

TAB_SPACES = 4

COMMENT = "bright_black"
KEY = "bold cyan"
STRING = "green"
NUMBER = "magenta"
LITERAL = "yellow"  # true, false, null
PUNCT = "white"

ADDED = "bright_green"
REMOVED = "bright_red"
HUNK = "cyan"
FILES = "bold bright_white"

_TOKEN = re.compile(
    r"""
    (?P<line_comment>//[^\n]*)
  | (?P<block_comment>/\*.*?(?:\*/|\Z))
  | (?P<string>"(?:[^"\\\n]|\\.)*(?:"|$))
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<literal>\b(?:true|false|null)\b)
  | (?P<punct>[{}\[\]:,])
    """,
    re.VERBOSE | re.DOTALL | re.MULTILINE,
)
_KEY_FOLLOWS = re.compile(r"\s*:")


def console_safe(text: str) -> str:
    """Tabs as spaces, and `?` for anything the console font cannot draw."""
    text = text.expandtabs(TAB_SPACES)
    return "".join(c if c in SAFE_GLYPHS or c == "\n" else "?" for c in text)


def hujson(text: str) -> Text:
    """A policy file with comments, keys, strings, numbers and literals coloured."""
    safe = console_safe(text)
    out = Text(no_wrap=True, overflow="ignore")
    pos = 0
    for m in _TOKEN.finditer(safe):
        if m.start() > pos:
            out.append(safe[pos : m.start()])
        kind = m.lastgroup
        token = m.group()
        if kind in ("line_comment", "block_comment"):
            style = COMMENT
        elif kind == "string":
            style = KEY if _KEY_FOLLOWS.match(safe, m.end()) else STRING
        elif kind == "number":
            style = NUMBER
        elif kind == "literal":
            style = LITERAL
        else:
            style = PUNCT
        out.append(token, style=style)
        pos = m.end()
    out.append(safe[pos:])
    return out


def unified_diff(text: str) -> Text:
    """A unified diff with added lines green, removed lines red, hunk heads cyan."""
    out = Text(no_wrap=True, overflow="ignore")
    for line in console_safe(text).splitlines():
        if line.startswith(("+++", "---")):
            style = FILES
        elif line.startswith("+"):
            style = ADDED
        elif line.startswith("-"):
            style = REMOVED
        elif line.startswith("@@"):
            style = HUNK
        else:
            style = ""
        out.append(line + "\n", style=style)
    return out
