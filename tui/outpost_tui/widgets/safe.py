"""Stock widgets with glyphs the Linux console font can draw."""

from __future__ import annotations

from rich.text import Text
from textual.content import Content
from textual.widgets import Checkbox, Input


class SafeInput(Input):
    """An Input whose password mask is '*' (the console font has no bullet)."""

    @property
    def _value(self) -> Text:
        if self.password:
            return Text("*" * len(self.value), no_wrap=True, overflow="ignore", end="")
        return super()._value


class SafeCheckbox(Checkbox):
    """A checkbox drawn as [X] / [ ] instead of half blocks.

    The stock one shows its state only by colour (a dim or bright X), which the
    console may not render distinctly; here an unticked box is empty.
    """

    BUTTON_LEFT = "["
    BUTTON_INNER = "X"
    BUTTON_RIGHT = "]"

    @property
    def _button(self) -> Content:
        style = self.get_visual_style("toggle--button")
        return Content.assemble("[", ("X" if self.value else " ", style), "]")
