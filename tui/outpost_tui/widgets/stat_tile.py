"""A bordered dashboard tile: a title, a value, and a line of detail.

`-attention` makes it stand out (something needs the admin); `-unavailable`
marks a figure whose API does not exist yet.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static


class StatTile(Vertical):
    DEFAULT_CSS = """
    StatTile {
        border: solid ansi_white;
        border-title-color: ansi_bright_white;
        border-title-style: bold;
        height: auto;
        min-height: 4;
        padding: 0 1;
    }
    StatTile .value {
        text-style: bold;
        color: ansi_bright_white;
    }
    StatTile .detail {
        color: ansi_white;
    }
    StatTile.-attention {
        border: double ansi_bright_yellow;
        border-title-color: ansi_bright_yellow;
    }
    StatTile.-attention .value {
        color: ansi_bright_yellow;
    }
    StatTile.-bad {
        border: double ansi_bright_red;
        border-title-color: ansi_bright_red;
    }
    StatTile.-bad .value {
        color: ansi_bright_red;
    }
    StatTile.-unavailable {
        border: ascii ansi_white;
    }
    StatTile.-unavailable .value {
        color: ansi_white;
        text-style: italic;
    }
    """

    def __init__(self, title: str, *, id: str, value: str = "-", detail: str = "") -> None:
        super().__init__(id=id)
        self.border_title = title
        self._value = value
        self._detail = detail

    def compose(self) -> ComposeResult:
        yield Static(self._value, classes="value", markup=False)
        yield Static(self._detail, classes="detail", markup=False)

    def set(
        self, value: str, detail: str = "", *, attention: bool = False, bad: bool = False
    ) -> None:
        self.query_one(".value", Static).update(value)
        self.query_one(".detail", Static).update(detail)
        self.set_class(attention, "-attention")
        self.set_class(bad, "-bad")
