"""Drive a full-screen program under tmux as a person would: keys in, screen out.

Each :class:`TmuxPane` runs its own tmux server (``tmux -L <name>``), so the
test never touches anyone else's sessions and ends exactly the server it
started (``kill-server`` on that socket). The program runs in the root
namespace: the console only opens the admin unix socket, which is reachable
from any network namespace (netns) because it is a filesystem object.

``render_png`` turns a pane captured with its colours (``capture-pane -e``)
into a PNG in the Linux console's palette, the same way
tests/tui/make_screenshots.py renders Pilot screens (SVG, then rsvg-convert).
"""

from __future__ import annotations

import io
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

TMUX_TIMEOUT_S = 10.0
# A person pauses between keys that move focus and what they type next; Textual
# moves focus on its next message-loop turn, so a machine-speed burst could land
# the next text in the field just left.
KEY_PAUSE_S = 0.4
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class TmuxPane:
    def __init__(self, name: str, width: int = 100, height: int = 30) -> None:
        self.name = name
        self.width = width
        self.height = height
        self.tmux = shutil.which("tmux") or "tmux"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.tmux, "-L", self.name, *args],
            capture_output=True,
            text=True,
            timeout=TMUX_TIMEOUT_S,
            check=check,
        )

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        command = "exec env -i " + " ".join(
            [*(shlex.quote(f"{k}={v}") for k, v in env.items()), *map(shlex.quote, argv)]
        )
        self._run(
            "-f", "/dev/null", "new-session", "-d", "-s", self.name,
            "-x", str(self.width), "-y", str(self.height), "-c", str(cwd), command,
        )  # fmt: skip
        # keep the pane after the program exits, so its last words can be read
        self._run("set-option", "-t", self.name, "remain-on-exit", "on")

    def send(self, *keys: str) -> None:
        """tmux key names ("Enter", "Tab", "F3", "C-u"), one at a time, as a person types."""
        for key in keys:
            self._run("send-keys", "-t", self.name, key)
            time.sleep(KEY_PAUSE_S)

    def type(self, text: str) -> None:
        """Literal text into the focused field."""
        self._run("send-keys", "-t", self.name, "-l", text)
        time.sleep(KEY_PAUSE_S)

    def capture(self, colours: bool = False) -> str:
        args = ["capture-pane", "-p", "-t", self.name]
        if colours:
            args.insert(1, "-e")
        return self._run(*args).stdout

    def wait_for(self, *needles: str, timeout: float = 30.0) -> str:
        """The screen once every needle shows (line breaks and box sides ignored)."""
        end = time.monotonic() + timeout
        text = ""
        while time.monotonic() < end:
            text = self.capture()
            if all(n in flat(text) for n in needles):
                return text
            time.sleep(0.3)
        missing = [n for n in needles if n not in flat(text)]
        raise AssertionError(f"tmux pane {self.name}: not on screen: {missing}\n{text}")

    def kill(self) -> None:
        self._run("kill-server", check=False)


def flat(screen: str) -> str:
    """The screen's words in order: box sides and line breaks become single spaces."""
    return " ".join(re.sub(r"[│┃║]", " ", screen).split())


def render_png(ansi_screen: str, out: Path, width: int, height: int, title: str) -> Path:
    """A pane captured with colours, as PNG (or SVG when rsvg-convert is missing)."""
    from rich.console import Console  # noqa: PLC0415 - only screenshots need rich here
    from rich.text import Text  # noqa: PLC0415

    from tests.tui.make_screenshots import VGA  # noqa: PLC0415

    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="standard",
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    lines = ansi_screen.rstrip("\n").split("\n")[:height]
    for line in lines:
        console.print(Text.from_ansi(line), no_wrap=True, overflow="crop", end="\n")
    svg = out.with_suffix(".svg")
    svg.write_text(console.export_svg(title=title, theme=VGA))
    if shutil.which("rsvg-convert"):
        subprocess.run(["rsvg-convert", "-o", str(out), str(svg)], check=True, timeout=60)
        svg.unlink()
        return out
    return svg
