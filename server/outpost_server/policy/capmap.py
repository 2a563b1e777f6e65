"""A node's own capability map from `nodeAttrs` (and `randomizeClientPort`).

Each `nodeAttrs` entry whose target covers the node contributes its `attr`
names (value null) and its `app` capabilities (their value lists). Some
attributes stand for a bundle the client expects together (`funnel`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from outpost_server.policy.compile import CompiledPolicy

# Attributes that imply further capabilities on the wire.
ATTR_BUNDLES: dict[str, tuple[str, ...]] = {
    "funnel": (
        "funnel",
        "https://tailscale.com/cap/funnel-ports?ports=443,8443,10000",
        "https://tailscale.com/cap/warn-funnel-no-https",
    ),
}


def target_covers(cp: CompiledPolicy, targets: Any, i: int) -> bool:
    r = cp.r
    for a in targets:
        ns = r.resolve(a)
        if ns.wildcard or i in ns.nodes:
            return True
        if ns.prefixes and r.src_contains_node(ns, i):
            return True
    return False


def self_cap_map(cp: CompiledPolicy, i: int) -> dict[str, Any]:
    caps: dict[str, Any] = {}
    if cp.policy.randomize_client_port:
        caps["randomize-client-port"] = None
    for na in cp.policy.node_attrs:
        if not target_covers(cp, na.targets, i):
            continue
        for attr in na.attrs:
            for name in ATTR_BUNDLES.get(attr, (attr,)):
                caps.setdefault(name, None)
        for name, values in na.app:
            existing = caps.get(name)
            caps[name] = (list(existing) if existing else []) + list(values)
    return caps


def has_attr(cp: CompiledPolicy, i: int, attr: str) -> bool:
    return any(attr in na.attrs and target_covers(cp, na.targets, i) for na in cp.policy.node_attrs)
