"""Aliases: the names a policy uses for sets of nodes and addresses.

An alias is what appears in `src`, `dst`, `target`, `via` and `autoApprovers`:
`*`, `autogroup:member`, `tag:web`, `group:ops`, `alice@example.com`,
`user:*@example.com`, a `hosts` name, an IP address or a CIDR prefix. Parsing
an alias only classifies it; whether it is allowed in a given position is the
business of the section that uses it (see `parse.py`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from outpost_server.policy.errors import PolicyError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

AliasKind = Literal["wildcard", "autogroup", "tag", "group", "user", "domain", "host", "prefix"]

# Autogroups the engine understands. `nonroot` is an SSH user, not an alias,
# and is handled in ssh.py.
AUTOGROUPS = frozenset(
    {
        "member",
        "tagged",
        "self",
        "internet",
        "danger-all",
        "admin",
        "owner",
        "it-admin",
        "network-admin",
        "billing-admin",
        "auditor",
        "shared",
    }
)


@dataclass(frozen=True)
class Alias:
    kind: AliasKind
    # the name without its prefix: "web" for tag:web is kept whole ("tag:web")
    # because tags and groups are looked up by their full spelling.
    value: str
    prefix: IPNetwork | None = None  # for kind == "prefix" (a host alias resolves to this too)

    def __str__(self) -> str:
        return self.value


def parse_prefix(text: str) -> IPNetwork | None:
    """An IP address or CIDR prefix, or None when `text` is neither."""
    try:
        if "/" in text:
            return ipaddress.ip_network(text, strict=False)
        return ipaddress.ip_network(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_alias(text: str, hosts: dict[str, IPNetwork]) -> Alias:
    """Classify one alias string; raise PolicyError for things that are no alias."""
    if text == "*":
        return Alias("wildcard", text)
    if text.startswith("autogroup:"):
        return Alias("autogroup", text)
    if text.startswith("tag:"):
        return Alias("tag", text)
    if text.startswith("group:"):
        return Alias("group", text)
    if text.startswith("user:*@"):
        return Alias("domain", text[len("user:*@") :])
    if "@" in text:
        return Alias("user", text[5:] if text.startswith("user:") else text)
    if text in hosts:
        return Alias("host", text, hosts[text])
    prefix = parse_prefix(text)
    if prefix is not None:
        return Alias("prefix", text, prefix)
    raise PolicyError(f'"{text}": invalid address')
