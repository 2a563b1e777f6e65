"""The console-safe look: 16 ANSI colours and glyphs the Linux console font has.

tty1 is the Linux virtual console: 16 colours (8 as backgrounds) and a
512-glyph font (ASCII, the CP437 line/block set). So:

* the theme uses only the terminal's own ANSI colours (`ansi=True`), never RGB
  that the console would approximate;
* borders are `solid`/`double`/`ascii` (box drawing from the basic set);
  `round`, `tall`, `wide`, `heavy` and friends use glyphs the font lacks;
* a few Textual widgets draw glyphs the font lacks by default (scrollbar eighth
  blocks, the password bullet, checkbox half blocks): `apply_console_glyphs()`
  and the widgets in `widgets/safe.py` replace them.

`SAFE_GLYPHS` is what tests check every rendered screen against.
"""

from __future__ import annotations

from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.theme import Theme

THEME_NAME = "outpost-console"

# Printable ASCII plus the single/double box-drawing and block glyphs that the
# Linux console's default fonts (CP437-derived) can draw.
SAFE_GLYPHS = frozenset(
    [chr(c) for c in range(0x20, 0x7F)]
    + list("─│┌┐└┘├┤┬┴┼═║╒╓╔╕╖╗╘╙╚╛╜╝╞╟╠╡╢╣╤╥╦╧╨╩╪╫╬")
    + list("█▀▄▌▐░▒▓")
)

CONSOLE_THEME = Theme(
    name=THEME_NAME,
    ansi=True,
    dark=True,
    primary="ansi_cyan",
    secondary="ansi_blue",
    accent="ansi_yellow",
    warning="ansi_yellow",
    error="ansi_red",
    success="ansi_green",
    foreground="ansi_white",
    background="ansi_black",
    surface="ansi_black",
    panel="ansi_blue",
    boost="ansi_black",
    variables={
        "ansi-background": "ansi_black",
        "ansi-foreground": "ansi_white",
        "border": "ansi_cyan",
        "border-blurred": "ansi_white",
        "block-cursor-foreground": "ansi_black",
        "block-cursor-background": "ansi_cyan",
        "block-cursor-text-style": "bold",
        "block-cursor-blurred-foreground": "ansi_black",
        "block-cursor-blurred-background": "ansi_white",
        "block-hover-background": "ansi_blue",
        "input-cursor-background": "ansi_white",
        "input-cursor-foreground": "ansi_black",
        "input-selection-background": "ansi_blue",
        "input-selection-foreground": "ansi_bright_white",
        "screen-selection-background": "ansi_blue",
        "screen-selection-foreground": "ansi_bright_white",
        "footer-background": "ansi_blue",
        "footer-foreground": "ansi_bright_white",
        "footer-key-foreground": "ansi_bright_yellow",
        "footer-key-background": "ansi_blue",
        "footer-description-foreground": "ansi_bright_white",
        "footer-description-background": "ansi_blue",
        "footer-item-background": "ansi_blue",
        "scrollbar": "ansi_blue",
        "scrollbar-hover": "ansi_cyan",
        "scrollbar-active": "ansi_bright_cyan",
        "scrollbar-background": "ansi_black",
        "scrollbar-background-hover": "ansi_black",
        "scrollbar-background-active": "ansi_black",
        "scrollbar-corner-color": "ansi_black",
        "link-color": "ansi_white",
        "link-style": "none",
        "link-style-hover": "bold",
        "link-color-hover": "ansi_bright_white",
        "link-background-hover": "ansi_blue",
    },
)


class ConsoleScrollBarRender(ScrollBarRender):
    """Whole-cell scrollbar thumbs: no 1/8 block glyphs."""

    VERTICAL_BARS = [" "] * 8
    HORIZONTAL_BARS = [" "] * 8


def apply_console_glyphs() -> None:
    """Process-wide switches to glyphs the Linux console can draw."""
    ScrollBar.renderer = ConsoleScrollBarRender
