"""The screen list, with the number key that opens each; the current one lit."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

# (key, mode name, label). The App binds the keys; this only shows them.
NAV_ITEMS: tuple[tuple[str, str, str], ...] = (
    ("1", "dashboard", "Dashboard"),
    ("2", "nodes", "Nodes"),
    ("3", "users", "Users"),
    ("4", "keys", "Keys"),
    ("5", "policy", "Policy"),
    ("6", "bundles", "USB"),
    ("7", "backups", "Backup"),
    ("8", "audit", "Audit"),
    ("9", "certificates", "Certs"),
)


class NavBar(Static):
    DEFAULT_CSS = """
    NavBar {
        height: 1;
        padding: 0 1;
        background: ansi_black;
        color: ansi_white;
    }
    """

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def on_mount(self) -> None:
        parts: list[Content] = []
        for key, mode, label in NAV_ITEMS:
            if mode == self.current:
                parts.append(Content.styled(f"{key} {label}", "bold ansi_black on ansi_cyan"))
            else:
                parts.append(
                    Content.assemble((key, "bold ansi_bright_yellow"), " ", label).stylize(
                        f"@click=app.switch_mode('{mode}')"
                    )
                )
        self.update(Content(" ").join(parts))
