"""The Debian archive to build from: read from this machine's apt configuration.

The build never names a mirror itself. The host's apt sources (deb822
`.sources` files and one-line `.list` files) are parsed, and the entries that
serve the requested suite and its `-updates`/`-security` companions from the
Debian archive are handed to mmdebstrap as a deb822 file. Everything else the
host has configured (third-party repositories) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class SourcesError(RuntimeError):
    """No usable Debian source is configured on this machine."""


@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_deb822(text: str) -> list[Source]:
    out: list[Source] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append(
                Source(
                    uri,
                    tuple(fields.get("suites", "").split()),
                    tuple(fields.get("components", "").split()),
                )
            )
    return out


def parse_one_line(text: str) -> list[Source]:
    out: list[Source] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            out.append(Source(words[0], (words[1],), tuple(words[2:])))
    return out


def host_sources() -> list[Source]:
    found: list[Source] = []
    if APT_SOURCES.is_file():
        found += parse_one_line(APT_SOURCES.read_text())
    if APT_SOURCES_DIR.is_dir():
        for path in sorted(APT_SOURCES_DIR.iterdir()):
            if path.suffix == ".sources":
                found += parse_deb822(path.read_text())
            elif path.suffix == ".list":
                found += parse_one_line(path.read_text())
    return found


def debian_sources(suite: str, sources: list[Source] | None = None) -> str:
    """A deb822 sources text with only the host's Debian entries for `suite`."""
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    stanzas = []
    for s in host_sources() if sources is None else sources:
        suites = [x for x in s.suites if x in wanted]
        if not suites or "main" not in s.components:
            continue
        stanzas.append(
            f"Types: deb\nURIs: {s.uri}\nSuites: {' '.join(suites)}\n"
            f"Components: main\nSigned-By: {DEBIAN_KEYRING}\n"
        )
    if not any(suite in s.split("Suites: ", 1)[1].split("\n", 1)[0].split() for s in stanzas):
        raise SourcesError(
            f"no apt source for Debian {suite} (main) in {APT_SOURCES} or {APT_SOURCES_DIR}; "
            "the image is built from the archive this machine's apt uses"
        )
    return "\n".join(stanzas)
