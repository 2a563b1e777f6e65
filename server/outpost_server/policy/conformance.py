"""Run the recorded Tailscale control-plane cases against this engine.

    python -m outpost_server.policy.conformance DIR

walks `DIR/<category>/*.json`, prints one line per failing case (case id,
node, field, expected vs got), one summary line per category and, last,
`N passed, M failed`. Exit status 0 iff nothing failed.

What is compared, per case:

* rejected policies (`error: true`): loading the policy (including running
  its `tests` and `sshTests`) must raise PolicyError whose message contains
  the recorded one;
* otherwise, for every recorded node: the packet filter (rules as a multiset,
  list items within a rule ignoring order), the visible peers with their
  `allowed_ips`, `primary_routes` and `tags`, the SSH policy (rule order kept,
  principal order ignored), the node's own `allowed_ips`, `primary_routes`
  and the policy-derived part of its `cap_map`.

Only the case's `policy` and `topology` are inputs; the recorded `nodes`
section is only ever compared against. Two things the topology does not
carry are filled in by convention, and said so here:

* HA primaries. Of several routers approved for the same subnet the
  hosted service makes the one that registered first primary (Outpost:
  lowest `TopoNode.route_priority`, then the node listed first). Checked on
  the raw captures the cases were reduced from, whose netmaps keep each
  node's `Created` time: earliest registration picks the recorded primary
  in 352 of 352 HA elections; lowest IPv4 or IPv6 is at chance (addresses
  were re-drawn per case when the captures were anonymised) and Tailscale
  node ids are random. A case node may carry that time as `created`
  (RFC 3339); the adapter then ranks nodes by it (`registration_priorities`).
  The reduced cases do not carry it, so nodes get equal priority and the
  listing order (alphabetical) decides: cases whose first-registered router
  is not the alphabetically first one fail on `primary_routes` / `AllowedIPs`
  (82 of them). Re-joined with `Created`, all of them pass.
* Users' roles (autogroup:admin/owner and friends). The topology lists users
  without roles. The adapter assumes the capture tailnet's set-up: the user
  with the lowest id is the owner, every user is an admin. That is a site
  convention of the capture, not derived; it matters only for policies that
  name admin/owner autogroups.

The hosted service also adds account-level capabilities to every node
(`HOSTED_BASELINE_CAPS`: file sharing, admin/owner role markers, the tailnet
display name, auto-update default, ...). They are not policy output; they
are ignored unless the policy's own nodeAttrs produce them.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from outpost_server.policy.compile import CompiledPolicy, compile_for
from outpost_server.policy.errors import PolicyError
from outpost_server.policy.parse import load_policy
from outpost_server.policy.policytests import run_policy_tests
from outpost_server.policy.topology import Topology, TopoNode, TopoUser

HOSTED_BASELINE_CAPS = frozenset(
    {
        "https://tailscale.com/cap/file-sharing",
        "https://tailscale.com/cap/is-admin",
        "https://tailscale.com/cap/is-owner",
        "https://tailscale.com/cap/ssh",
        "https://tailscale.com/cap/tailnet-lock",
        "probe-udp-lifetime",
        "ssh-behavior-v1",
        "ssh-env-vars",
        "store-appc-routes",
        "tailnet-display-name",
        "default-auto-update",
    }
)

_MAX_SHOWN = 160


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


def registration_priorities(nodes: dict[str, Any]) -> dict[str, int]:
    """`route_priority` per node from its registration time, when recorded.

    The hosted service makes the earliest-registered approved router primary.
    A topology node may carry that time as `created` (the netmap's `Created`,
    RFC 3339); nodes get their rank in registration order (0 = first), and a
    node without one ranks after all that have one. Without any, every node
    gets 0 and the listing order decides (see the module docstring).
    """
    stamped: list[tuple[datetime, str]] = []
    for name, n in nodes.items():
        text = n.get("created") if isinstance(n, dict) else None
        if not text:
            continue
        try:
            when = datetime.fromisoformat(_trim_fraction(str(text)))
        except ValueError:
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        stamped.append((when, name))
    if not stamped:
        return {}
    stamped.sort(key=lambda t: t[0])  # stable: equal times keep listing order
    ranks = {name: k for k, (_, name) in enumerate(stamped)}
    last = len(stamped)
    return {name: ranks.get(name, last) for name in nodes}


def _trim_fraction(text: str) -> str:
    """RFC 3339 with nanoseconds and `Z` -> what datetime.fromisoformat reads."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    head, dot, rest = text.partition(".")
    if not dot:
        return text
    digits = rest
    tail = ""
    for k, ch in enumerate(rest):
        if not ch.isdigit():
            digits, tail = rest[:k], rest[k:]
            break
    return f"{head}.{(digits + '000000')[:6]}{tail}"


def case_topology(case: dict[str, Any]) -> Topology:
    """Convert a recorded case's topology to a Topology (nodes in listing order)."""
    topo = case["topology"]
    users = sorted(topo.get("users") or [], key=lambda u: u["id"])
    tusers = tuple(
        TopoUser(
            id=u["id"],
            name=u["name"],
            email=u.get("email") or "",
            roles=frozenset({"owner", "admin"}) if k == 0 else frozenset({"admin"}),
        )
        for k, u in enumerate(users)
    )
    raw_nodes = topo.get("nodes") or {}
    priority = registration_priorities(raw_nodes)
    nodes = []
    for name, n in raw_nodes.items():
        nodes.append(
            TopoNode(
                name=name,
                ipv4=ipaddress.IPv4Address(n["ipv4"]) if n.get("ipv4") else None,
                ipv6=ipaddress.IPv6Address(n["ipv6"]) if n.get("ipv6") else None,
                user=None if n.get("tags") else n.get("user"),
                tags=tuple(n.get("tags") or ()),
                routable_ips=tuple(_net(r) for r in n.get("routable_ips") or ()),
                approved_routes=tuple(_net(r) for r in n.get("approved_routes") or ()),
                hostname=n.get("hostname") or name,
                route_priority=priority.get(name, 0),
            )
        )
    domains = frozenset(u["email"].rpartition("@")[2] for u in users[:1] if u.get("email"))
    return Topology(tusers, tuple(nodes), domains)


def load_case_policy(case: dict[str, Any], topology: Topology) -> CompiledPolicy:
    """Load, compile and test the policy the way an admin save would."""
    pol = case["policy"]
    text = pol if isinstance(pol, str) else json.dumps(pol)
    policy = load_policy(text, domains=topology.domains or None)
    compiled = compile_for(policy, topology)
    run_policy_tests(compiled)
    return compiled


# --- canonical forms ---------------------------------------------------------


def _canon_rule(rule: dict[str, Any]) -> str:
    out: dict[str, Any] = {"SrcIPs": sorted(rule.get("SrcIPs") or [])}
    if rule.get("DstPorts"):
        out["DstPorts"] = sorted(
            (p["IP"], p["Ports"]["First"], p["Ports"]["Last"]) for p in rule["DstPorts"]
        )
    if rule.get("IPProto"):
        out["IPProto"] = sorted(rule["IPProto"])
    if rule.get("CapGrant"):
        out["CapGrant"] = sorted(
            json.dumps(
                {"Dsts": sorted(g.get("Dsts") or []), "CapMap": g.get("CapMap")}, sort_keys=True
            )
            for g in rule["CapGrant"]
        )
    return json.dumps(out, sort_keys=True)


def canon_filter(rules: list[dict[str, Any]] | None) -> list[str]:
    return sorted(_canon_rule(r) for r in rules or [])


def canon_peers(peers: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for p in peers:
        out[p["name"]] = {
            "allowed_ips": sorted(p.get("allowed_ips") or []),
            "primary_routes": sorted(p.get("primary_routes") or []),
            "tags": sorted(p.get("tags") or []),
        }
    return out


def canon_ssh(policy: dict[str, Any] | None) -> list[Any]:
    rules = (policy or {}).get("rules") or []
    out = []
    for r in rules:
        out.append(
            {
                "action": r.get("action"),
                "principals": sorted(
                    json.dumps(p, sort_keys=True) for p in r.get("principals") or []
                ),
                "sshUsers": r.get("sshUsers") or {},
                "acceptEnv": r.get("acceptEnv") or [],
            }
        )
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _diff_list(expected: list[str], got: list[str]) -> str:
    e, g = Counter(expected), Counter(got)
    missing = list((e - g).elements())
    extra = list((g - e).elements())
    return f"missing {_short(missing)} extra {_short(extra)}"


# --- checking ----------------------------------------------------------------


def check_case(case: dict[str, Any]) -> list[str]:
    """Return the differences (empty when the case passes)."""
    cid = case.get("id", "?")
    topology = case_topology(case)
    if case.get("error"):
        want = case.get("error_message") or ""
        try:
            load_case_policy(case, topology)
        except PolicyError as e:
            if want in str(e):
                return []
            return [f"{cid}: error: expected {want!r} got {str(e)!r}"[: 2 * _MAX_SHOWN]]
        return [f"{cid}: error: expected rejection {want!r}, policy was accepted"]
    try:
        compiled = load_case_policy(case, topology)
    except PolicyError as e:
        return [f"{cid}: policy rejected: {str(e)[:_MAX_SHOWN]}"]
    problems: list[str] = []
    for name, rec in (case.get("nodes") or {}).items():
        view = compiled.node(name)
        want_pf = canon_filter(rec.get("packet_filter_rules"))
        got_pf = canon_filter([r.to_json() for r in view.packet_filter])
        if want_pf != got_pf:
            problems.append(f"{cid}: {name}: packet_filter: {_diff_list(want_pf, got_pf)}")
        want_peers = canon_peers(rec.get("peers") or [])
        got_peers = {
            p.name: {
                "allowed_ips": sorted(p.allowed_ips),
                "primary_routes": sorted(p.primary_routes),
                "tags": sorted(p.tags),
            }
            for p in view.visible_peers.values()
        }
        if set(want_peers) != set(got_peers):
            problems.append(
                f"{cid}: {name}: peers: missing {sorted(set(want_peers) - set(got_peers))} "
                f"extra {sorted(set(got_peers) - set(want_peers))}"
            )
        for peer in sorted(set(want_peers) & set(got_peers)):
            if want_peers[peer] != got_peers[peer]:
                problems.append(
                    f"{cid}: {name}: peer {peer}: expected {_short(want_peers[peer])} "
                    f"got {_short(got_peers[peer])}"
                )
        want_ssh = canon_ssh(rec.get("ssh_policy"))
        got_ssh = canon_ssh(view.ssh_policy.to_json())
        if want_ssh != got_ssh:
            problems.append(
                f"{cid}: {name}: ssh_policy: expected {_short(want_ssh)} got {_short(got_ssh)}"
            )
        rself = rec.get("self") or {}
        sv = view.self_view
        for key, want, got in (
            ("allowed_ips", sorted(rself.get("allowed_ips") or []), sorted(sv.allowed_ips)),
            (
                "primary_routes",
                sorted(rself.get("primary_routes") or []),
                sorted(sv.primary_routes),
            ),
        ):
            if want != got:
                problems.append(
                    f"{cid}: {name}: self.{key}: expected {_short(want)} got {_short(got)}"
                )
        want_caps = {
            k: v
            for k, v in (rself.get("cap_map") or {}).items()
            if k not in HOSTED_BASELINE_CAPS or k in sv.cap_map
        }
        if want_caps != sv.cap_map:
            problems.append(
                f"{cid}: {name}: self.cap_map: "
                f"expected {_short(want_caps)} got {_short(sv.cap_map)}"
            )
    return problems


def run_conformance(directory: Path, out: TextIO) -> tuple[int, int]:
    passed_total = failed_total = 0
    for cat_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        passed = failed = 0
        for path in sorted(cat_dir.glob("*.json")):
            case = json.loads(path.read_text())
            case.setdefault("id", path.stem)
            try:
                problems = check_case(case)
            except Exception as e:  # a crash is a failure of this case, not of the run
                problems = [f"{case['id']}: crashed: {type(e).__name__}: {e}"[: 2 * _MAX_SHOWN]]
            if problems:
                failed += 1
                for line in problems[:3]:
                    out.write(line + "\n")
                if len(problems) > 3:
                    out.write(f"{case['id']}: ... {len(problems) - 3} more differences\n")
            else:
                passed += 1
        out.write(f"{cat_dir.name}: {passed} passed, {failed} failed\n")
        passed_total += passed
        failed_total += failed
    out.write(f"{passed_total} passed, {failed_total} failed\n")
    return passed_total, failed_total


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m outpost_server.policy.conformance DIR\n")
        return 2
    _, failed = run_conformance(Path(args[0]), sys.stdout)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
