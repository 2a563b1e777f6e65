"""Tailscale SSH: the `SSHPolicy` a node receives.

For a destination node, every `ssh` rule whose `dst` covers it yields one or
more `SSHRule`s:

* principals are the source nodes' addresses (`{"nodeIP": ...}`), one entry
  per address; `autogroup:self` narrows them to the destination owner's
  devices;
* `sshUsers` maps each listed local user to itself, `autogroup:nonroot` to
  `"*": "="`, and `root` to `""` (denied) unless root is listed;
* `localpart:*@domain` adds, per source user whose login is in that domain, a
  rule mapping the login's local part to itself, and it also lets every
  source node log in to itself (this is what the hosted control plane sends);
* `check` rules become `holdAndDelegate` actions and are sent before
  `accept` rules, since the first matching rule wins on the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from outpost_server.policy.parse import SshRule

if TYPE_CHECKING:
    from outpost_server.policy.compile import CompiledPolicy

HOLD_URL = "https://unused/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER"
ACCEPT_ACTION: dict[str, Any] = {
    "accept": True,
    "allowAgentForwarding": True,
    "allowLocalPortForwarding": True,
    "allowRemotePortForwarding": True,
}


@dataclass(frozen=True)
class SSHRuleOut:
    principals: tuple[str, ...]  # node IPs
    ssh_users: tuple[tuple[str, str], ...]
    check: bool
    accept_env: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "principals": [{"nodeIP": ip} for ip in self.principals],
            "sshUsers": dict(self.ssh_users),
            "action": {"holdAndDelegate": HOLD_URL} if self.check else dict(ACCEPT_ACTION),
        }
        if self.accept_env:
            out["acceptEnv"] = list(self.accept_env)
        return out


@dataclass(frozen=True)
class SSHPolicy:
    rules: tuple[SSHRuleOut, ...]

    def to_json(self) -> dict[str, Any]:
        return {"rules": [r.to_json() for r in self.rules]}


def localpart_domain(user: str) -> str | None:
    """The domain of a well-formed `localpart:*@domain`, else None."""
    if not user.startswith("localpart:*@"):
        return None
    domain = user[len("localpart:*@") :]
    if not domain or "*" in domain or "@" in domain:
        return None
    return domain


def _ssh_users(users: list[str]) -> tuple[tuple[str, str], ...]:
    mapping: dict[str, str] = {}
    for u in users:
        if localpart_domain(u) is not None:
            continue
        if u == "autogroup:nonroot":
            mapping["*"] = "="
        else:
            mapping[u] = u
    mapping.setdefault("root", "")
    return tuple(sorted(mapping.items()))


def _principal_nodes(cp: CompiledPolicy, rule: SshRule) -> list[int]:
    """Source nodes, in a stable order; a node appears once per matching tag
    for `autogroup:tagged` (the hosted service expands it tag by tag)."""
    r = cp.r
    out: list[int] = []
    seen: set[int] = set()
    for a in rule.srcs:
        if a.kind == "autogroup" and a.value == "autogroup:tagged":
            for tag in r.nodes_by_tag:
                out.extend(r.nodes_by_tag.get(tag, []))
            continue
        ns = r.resolve(a)
        for j in range(len(r.nodes)):
            if j in seen:
                continue
            if j in ns.nodes or (ns.prefixes and r.src_contains_node(ns, j)):
                out.append(j)
    # drop the duplicates that come from listing a node under several aliases,
    # but keep the per-tag repetition of autogroup:tagged
    result: list[int] = []
    counted: dict[int, int] = {}
    tagged_counts: dict[int, int] = {}
    for a in rule.srcs:
        if a.kind == "autogroup" and a.value == "autogroup:tagged":
            for tag in r.nodes_by_tag:
                for j in r.nodes_by_tag.get(tag, []):
                    tagged_counts[j] = tagged_counts.get(j, 0) + 1
    for j in out:
        counted[j] = counted.get(j, 0) + 1
        if counted[j] <= max(1, tagged_counts.get(j, 0)):
            result.append(j)
    return result


def _dst_covers(cp: CompiledPolicy, rule: SshRule, i: int) -> tuple[bool, bool]:
    """(covered as a plain destination, covered through autogroup:self)."""
    r = cp.r
    node = r.nodes[i]
    plain = False
    self_ = False
    for a in rule.dsts:
        if a.kind == "autogroup" and a.value == "autogroup:self":
            if not node.is_tagged and node.user is not None:
                self_ = True
        elif i in r.resolve(a).nodes:
            plain = True
    return plain, self_


def _ips(cp: CompiledPolicy, nodes: list[int]) -> tuple[str, ...]:
    text = cp.r.addr_text
    return tuple(t for j in nodes for t in text[j])


@dataclass
class _Prepared:
    """The viewer-independent part of one `ssh` rule."""

    lp_domains: list[str]
    base_users: tuple[tuple[str, str], ...]
    sources: list[int]
    source_set: frozenset[int]
    by_user: dict[str, list[int]]  # user-owned sources per owner, in order
    plain_ips: tuple[str, ...]


def _prepare(cp: CompiledPolicy) -> list[_Prepared]:
    cached = cp.ssh_prepared
    if cached is not None:
        return cached
    r = cp.r
    out: list[_Prepared] = []
    for rule in cp.policy.ssh:
        users = [u.strip() for u in rule.users]
        sources = _principal_nodes(cp, rule)
        by_user: dict[str, list[int]] = {}
        for j in sources:
            n = r.nodes[j]
            if not n.is_tagged and n.user is not None:
                by_user.setdefault(n.user, []).append(j)
        out.append(
            _Prepared(
                lp_domains=[d for d in (localpart_domain(u) for u in users) if d is not None],
                base_users=_ssh_users(users),
                sources=sources,
                source_set=frozenset(sources),
                by_user=by_user,
                plain_ips=_ips(cp, sources),
            )
        )
    cp.ssh_prepared = out
    return out


def ssh_policy_for(cp: CompiledPolicy, i: int) -> SSHPolicy:
    r = cp.r
    node = r.nodes[i]
    checks: list[SSHRuleOut] = []
    accepts: list[SSHRuleOut] = []
    for rule, prep in zip(cp.policy.ssh, _prepare(cp), strict=True):
        lp_domains = prep.lp_domains
        base_users = prep.base_users
        plain, self_ = _dst_covers(cp, rule, i)
        if not plain and not self_ and not (lp_domains and i in prep.source_set):
            continue
        sources = prep.sources
        out = checks if rule.action == "check" else accepts
        if not lp_domains:
            # the common case: one rule per covering, principals precomputed
            if plain and sources:
                out.append(
                    SSHRuleOut(prep.plain_ips, base_users, rule.action == "check", rule.accept_env)
                )
            mine = prep.by_user.get(node.user or "", []) if self_ else []
            if mine:
                out.append(
                    SSHRuleOut(_ips(cp, mine), base_users, rule.action == "check", rule.accept_env)
                )
            continue
        groups: list[list[int]] = []
        if plain:
            groups.append(sources)
        if self_:
            groups.append(list(prep.by_user.get(node.user or "", [])))
        if lp_domains and not plain and not self_ and i in prep.source_set:
            # localpart rules let each source node log in to itself
            groups.append([i])
        for principals in groups:
            if not principals:
                continue
            # split per source user so each gets its own local-part mapping
            by_owner: dict[str, list[int]] = {}
            for j in principals:
                owner = None if r.nodes[j].is_tagged else r.nodes[j].user
                by_owner.setdefault(owner if owner is not None else f"\0{j}", []).append(j)
            for key, js in by_owner.items():
                out.append(
                    SSHRuleOut(_ips(cp, js), base_users, rule.action == "check", rule.accept_env)
                )
                if key.startswith("\0"):
                    continue
                email = r.user_email.get(key, "")
                local, _, dom = email.rpartition("@")
                if local and dom in lp_domains:
                    out.append(
                        SSHRuleOut(
                            _ips(cp, js), ((local, local),), rule.action == "check", rule.accept_env
                        )
                    )
    return SSHPolicy(tuple(checks + accepts))
