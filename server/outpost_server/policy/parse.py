"""Policy document -> validated `Policy` value.

`load_policy` accepts HuJSON text, checks every section and returns frozen
dataclasses the compiler can use without re-checking anything. Validation
messages follow the wording of Tailscale's control plane (the conformance
cases record them) so that administrators moving a policy between systems see
familiar errors.

ACLs and grants are normalised to one `Rule` shape: sources, destinations
with ports, protocol numbers, app capabilities and `via` routers. An ACL
`{"src": S, "dst": ["tag:a:22", "10.0.0.0/8:*"], "proto": "tcp"}` is the grant
`{"src": S, "dst": [...], "ip": ["tcp:22", ...]}` except that each ACL
destination carries its own ports.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from outpost_server.policy.alias import AUTOGROUPS, Alias, IPNetwork, parse_alias, parse_prefix
from outpost_server.policy.errors import PolicyError
from outpost_server.policy.hujson import loads


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int


ANY_PORTS = PortRange(0, 65535)

# IANA protocol numbers for the names a policy may use.
PROTOCOLS = {
    "icmp": 1,
    "igmp": 2,
    "ipv4": 4,
    "ip-in-ip": 4,
    "tcp": 6,
    "egp": 8,
    "igp": 9,
    "udp": 17,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "ipv6-icmp": 58,
    "sctp": 132,
}


@dataclass(frozen=True)
class Destination:
    alias: Alias
    ports: tuple[PortRange, ...]


@dataclass(frozen=True)
class Rule:
    """One access rule (from `acls` or `grants`)."""

    srcs: tuple[Alias, ...]
    dsts: tuple[Destination, ...]
    protos: tuple[int, ...]  # empty: the default set (TCP, UDP, ICMP)
    caps: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # app capabilities (grants)
    via: tuple[Alias, ...] = ()
    from_grant: bool = False
    index: int = 0  # position in its section, for stable output


@dataclass(frozen=True)
class SshRule:
    action: str  # "accept" | "check"
    srcs: tuple[Alias, ...]
    dsts: tuple[Alias, ...]
    users: tuple[str, ...]
    check_period: float | None  # seconds; None = default
    check_always: bool
    accept_env: tuple[str, ...]


@dataclass(frozen=True)
class NodeAttr:
    targets: tuple[Alias, ...]
    attrs: tuple[str, ...]
    app: tuple[tuple[str, tuple[Any, ...]], ...]
    ip_pool: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class PolicyTest:
    src: str
    proto: int | None
    accept: tuple[str, ...]
    deny: tuple[str, ...]


@dataclass(frozen=True)
class SshTest:
    src: str
    dsts: tuple[str, ...]
    accept: tuple[str, ...]
    check: tuple[str, ...]
    deny: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    groups: dict[str, tuple[str, ...]]  # group -> user logins
    tag_owners: dict[str, tuple[str, ...]]
    hosts: dict[str, IPNetwork]
    rules: tuple[Rule, ...]
    ssh: tuple[SshRule, ...]
    node_attrs: tuple[NodeAttr, ...]
    auto_routes: tuple[tuple[IPNetwork, tuple[Alias, ...]], ...]
    auto_exit: tuple[Alias, ...]
    tests: tuple[PolicyTest, ...]
    ssh_tests: tuple[SshTest, ...]
    randomize_client_port: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


# --- small field readers -----------------------------------------------------


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{what}: expected a list of strings")
    return list(value)


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PolicyError(f"{what}: expected an object")
    return value


def parse_port_range(text: str) -> tuple[PortRange, ...]:
    """`*`, `22`, `80-443` or a comma list of those."""
    if text == "*":
        return (ANY_PORTS,)
    out: list[PortRange] = []
    for part in text.split(","):
        first_s, dash, last_s = part.partition("-")
        if not first_s.isdigit():
            raise PolicyError(f'port range "{part}": invalid first integer')
        first = int(first_s)
        last = first
        if dash:
            if not last_s.isdigit():
                raise PolicyError(f'port range "{part}": invalid last integer')
            last = int(last_s)
        if first > 65535 or last > 65535:
            raise PolicyError(f'port range "{part}": port out of range')
        if last < first:
            raise PolicyError(f'port range "{part}": last port is less than first')
        out.append(PortRange(first, last))
    return tuple(out)


def parse_proto(value: Any) -> int | None:
    """`proto` of an ACL: a name or an IANA number; None when absent."""
    if value is None or value == "":
        return None
    text = str(value).lower()
    if text in PROTOCOLS:
        return PROTOCOLS[text]
    if text.isdigit() and 0 <= int(text) <= 255:
        return int(text)
    raise PolicyError(f'proto "{value}": unknown protocol')


def split_host_port(text: str) -> tuple[str, str]:
    """`alias:ports` split at the last colon; `[v6]:ports` is accepted too."""
    if text.startswith("["):
        end = text.find("]")
        if end > 0 and text[end + 1 : end + 2] == ":":
            return text[1:end], text[end + 2 :]
    host, colon, ports = text.rpartition(":")
    if not colon:
        raise PolicyError(f'dst="{text}": missing port')
    return host, ports


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds from a Go `time.ParseDuration` string (`1h30m`, `-1m`)."""
    s = text
    sign = 1.0
    if s[:1] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise PolicyError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if not m:
            raise PolicyError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def format_go_duration(seconds: float) -> str:
    """Go's `Duration.String()` for whole seconds (`168h0m1s`, `-1m0s`)."""
    sign = "-" if seconds < 0 else ""
    s = abs(round(seconds))
    if s == 0:
        return "0s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{sign}{h}h{m}m{sec}s"
    if m:
        return f"{sign}{m}m{sec}s"
    return f"{sign}{sec}s"


# --- sections ----------------------------------------------------------------


class _Parser:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.hosts: dict[str, IPNetwork] = {}
        self.groups: dict[str, tuple[str, ...]] = {}
        self.tag_owners: dict[str, tuple[str, ...]] = {}
        self.domains: frozenset[str] | None = None

    # aliases -----------------------------------------------------------------

    def alias(self, text: str) -> Alias:
        a = parse_alias(text, self.hosts)
        if a.kind == "tag" and a.value not in self.tag_owners:
            raise PolicyError(f'tag not found: "{a.value}"')
        if a.kind == "autogroup" and a.value[len("autogroup:") :] not in AUTOGROUPS:
            raise PolicyError(f'unknown autogroup "{a.value}"')
        if a.kind == "group" and a.value not in self.groups:
            raise PolicyError(f'group not found: "{a.value}"')
        return a

    def src_alias(self, text: str) -> Alias:
        if text == "autogroup:self":
            raise PolicyError('"autogroup:self" not valid on the src side of a rule')
        try:
            a = self.alias(text)
        except PolicyError as e:
            raise PolicyError(f"src={e.message}") from None
        return a

    # top level sections -------------------------------------------------------

    def parse_hosts(self) -> None:
        for name, value in _obj(self.doc.get("hosts"), "hosts").items():
            prefix = parse_prefix(value) if isinstance(value, str) else None
            if prefix is None:
                raise PolicyError(f'hosts["{name}"]: "{value}": invalid address')
            self.hosts[name] = prefix

    def parse_groups(self) -> None:
        raw = _obj(self.doc.get("groups"), "groups")
        nested: list[tuple[str, str]] = []
        for name, members in raw.items():
            if not name.startswith("group:"):
                raise PolicyError(f'groups["{name}"]: group names must start with "group:"')
            ms = _str_list(members, f'groups["{name}"]')
            for m in ms:
                if m.startswith("group:"):
                    nested.append((name, m))
            self.groups[name] = tuple(m for m in ms if not m.startswith("group:"))
        if nested:
            # Groups may not contain groups at all; the hosted service names
            # the last offending entry in key order.
            name, member = sorted(nested)[-1]
            raise PolicyError(f'groups["{name}"]: "{member}": group members cannot be recursive')

    def parse_tag_owners(self) -> None:
        for tag, owners in _obj(self.doc.get("tagOwners"), "tagOwners").items():
            if not tag.startswith("tag:"):
                raise PolicyError(f'tagOwners["{tag}"]: tag names must start with "tag:"')
            self.tag_owners[tag] = tuple(_str_list(owners, f'tagOwners["{tag}"]'))

    def parse_acls(self) -> list[Rule]:
        rules: list[Rule] = []
        acls = self.doc.get("acls") or []
        if not isinstance(acls, list):
            raise PolicyError("acls: expected a list")
        for i, raw_acl in enumerate(acls):
            acl = _obj(raw_acl, "acls[]")
            action = acl.get("action")
            if action != "accept":
                raise PolicyError(f'action="{action}" is not supported')
            srcs = tuple(self.src_alias(s) for s in _str_list(acl.get("src"), "src"))
            proto = parse_proto(acl.get("proto"))
            dsts: list[Destination] = []
            for d in _str_list(acl.get("dst"), "dst"):
                host, ports = split_host_port(d)
                try:
                    pr = parse_port_range(ports)
                except PolicyError as e:
                    raise PolicyError(f'dst="{d}": {e.message}') from None
                try:
                    a = self.alias(host)
                except PolicyError as e:
                    raise PolicyError(f'dst="{host}": {e.message}') from None
                dsts.append(Destination(a, pr))
            self.check_self_sources(srcs, [d.alias for d in dsts], acl=True)
            rules.append(Rule(srcs, tuple(dsts), (proto,) if proto is not None else (), index=i))
        return rules

    def check_self_sources(self, srcs: tuple[Alias, ...], dsts: list[Alias], acl: bool) -> None:
        """autogroup:self as a destination needs sources that are users."""
        if not any(d.value == "autogroup:self" for d in dsts):
            return
        for s in srcs:
            if s.kind in ("user", "group"):
                continue
            if s.kind == "autogroup" and s.value == "autogroup:member":
                continue
            if acl and s.kind == "wildcard":
                continue  # ACLs accept `*` here (it is narrowed to members); grants do not
            raise PolicyError(
                "autogroup:self can only be used with users, groups, or supported autogroups"
            )

    def parse_grant_ip(self, text: str) -> tuple[int | None, tuple[PortRange, ...]]:
        proto_s, colon, ports = text.rpartition(":")
        if not colon:
            proto_s, ports = "", text
        proto = parse_proto(proto_s) if proto_s else None
        pr = parse_port_range(ports)
        for p in pr:
            if p.first == 0 and pr != (ANY_PORTS,):
                raise PolicyError(
                    f"port range \"{ports}\": first port must be >0, or use '*' for wildcard"
                )
        return proto, pr

    def parse_grants(self) -> list[Rule]:
        rules: list[Rule] = []
        grants = self.doc.get("grants") or []
        if not isinstance(grants, list):
            raise PolicyError("grants: expected a list")
        for i, raw_grant in enumerate(grants):
            g = _obj(raw_grant, "grants[]")
            ips = _str_list(g.get("ip"), "ip")
            app = _obj(g.get("app"), "app")
            if not ips and not app:
                raise PolicyError("ip and app can not both be empty")
            srcs = tuple(self.src_alias(s) for s in _str_list(g.get("src"), "src"))
            dst_aliases: list[Alias] = []
            for d in _str_list(g.get("dst"), "dst"):
                if d == "autogroup:danger-all":
                    raise PolicyError("cannot use autogroup:danger-all as a dst")
                a = self.alias(d)
                if (
                    a.kind in ("prefix", "host")
                    and a.prefix is not None
                    and a.prefix.prefixlen == 0
                ):
                    raise PolicyError(
                        f'dst "{d}": to allow all IP addresses, use "*" or "autogroup:internet"'
                    )
                dst_aliases.append(a)
            if app and any(a.value == "autogroup:internet" for a in dst_aliases):
                raise PolicyError("cannot use app grants with autogroup:internet")
            caps: list[tuple[str, tuple[Any, ...]]] = []
            for name, values in app.items():
                bare = name.split("://", 1)[-1]
                if bare.startswith("tailscale.com/cap/") and bare.split("/")[2] not in (
                    "drive",
                    "kubernetes",
                    "webui",
                    "relay",
                    "tsidp",
                    "golink",
                ):
                    raise PolicyError("capability name must not be in the tailscale.com domain")
                if not isinstance(values, list):
                    raise PolicyError(f'app["{name}"]: expected a list')
                caps.append((name, tuple(values)))
            self.check_self_sources(srcs, dst_aliases, acl=False)
            via = tuple(self.alias(v) for v in _str_list(g.get("via"), "via"))
            # One rule per protocol: the filter keeps separate rules per IPProto.
            by_proto: dict[int | None, list[PortRange]] = {}
            for ip in ips:
                proto, pr = self.parse_grant_ip(ip)
                by_proto.setdefault(proto, []).extend(pr)
            if not by_proto:
                rules.append(
                    Rule(
                        srcs,
                        tuple(Destination(a, ()) for a in dst_aliases),
                        (),
                        tuple(caps),
                        via,
                        True,
                        i,
                    )
                )
                continue
            first = True
            for proto, ports in by_proto.items():
                dsts = tuple(Destination(a, tuple(ports)) for a in dst_aliases)
                rules.append(
                    Rule(
                        srcs,
                        dsts,
                        (proto,) if proto is not None else (),
                        tuple(caps) if first else (),
                        via,
                        True,
                        i,
                    )
                )
                first = False
        return rules

    def parse_ssh(self) -> list[SshRule]:
        out: list[SshRule] = []
        for raw in self.doc.get("ssh") or []:
            r = _obj(raw, "ssh[]")
            action = r.get("action")
            if not action:
                raise PolicyError("action must be specified")
            if action not in ("accept", "check"):
                raise PolicyError(f'"{action}" is not a valid action')
            users = r.get("users")
            if not users:
                raise PolicyError("users must be specified")
            users_l = _str_list(users, "users")
            srcs: list[Alias] = []
            for s in _str_list(r.get("src"), "src"):
                if s.startswith("user:*@"):
                    self.check_domain(s[len("user:*@") :], prefix="[ssh] ")
                srcs.append(self.src_alias(s))
            dsts: list[Alias] = []
            for d in _str_list(r.get("dst"), "dst"):
                a = self.alias(d)
                if a.kind in ("host", "prefix", "wildcard", "domain"):
                    raise PolicyError(f'invalid dst "{d}"')
                dsts.append(a)
            for u in users_l:
                if u in {"", "*"}:
                    raise PolicyError(f'user "{u}" is not valid')
                if u.startswith("localpart:"):
                    rest = u[len("localpart:") :]
                    if rest.startswith("*@") and rest[2:]:
                        self.check_domain(rest[2:], prefix="")
            period: float | None = None
            always = False
            cp = r.get("checkPeriod")
            if cp is not None and action == "check":
                if cp == "always":
                    always = True
                else:
                    period = parse_go_duration(str(cp))
                    if period <= 0:
                        raise PolicyError(
                            f"checkPeriod {format_go_duration(period)} must be a positive duration"
                        )
                    if period > 168 * 3600:
                        raise PolicyError(
                            f"checkPeriod {format_go_duration(period)} is above the max (168h)"
                        )
            env = _str_list(r.get("acceptEnv"), "acceptEnv")
            if any(e == "" for e in env):
                raise PolicyError("acceptEnv values cannot be empty")
            out.append(
                SshRule(
                    action, tuple(srcs), tuple(dsts), tuple(users_l), period, always, tuple(env)
                )
            )
        return out

    def check_domain(self, domain: str, prefix: str) -> None:
        """`user:*@domain` / `localpart:*@domain` need a domain of this tailnet."""
        if self.domains is None:
            return
        # The hosted service reports domains that are not in canonical (lower)
        # case under its passkey pseudo-domain; we keep the same message.
        shown = domain if domain == domain.lower() else "PASSKEY"
        if shown == "PASSKEY" or domain not in self.domains:
            raise PolicyError(
                f"{prefix}{shown} is not associated with this Tailnet and cannot be used "
                "in user:*@<domain> expressions"
            )

    def parse_node_attrs(self) -> list[NodeAttr]:
        out: list[NodeAttr] = []
        for raw in self.doc.get("nodeAttrs") or []:
            r = _obj(raw, "nodeAttrs[]")
            targets: list[Alias] = []
            for t in _str_list(r.get("target"), "target"):
                if t == "autogroup:self":
                    # the hosted service fails this with a server error
                    raise PolicyError("internal server error")
                a = self.alias(t)
                targets.append(a)
            pools: list[IPNetwork] = []
            for p in _str_list(r.get("ipPool"), "ipPool"):
                net = parse_prefix(p)
                if net is None:
                    raise PolicyError(f'"{p}": invalid address')
                if net.overlaps(ipaddress.ip_network("100.100.100.0/24")) or net.overlaps(
                    ipaddress.ip_network("100.115.92.0/23")
                ):
                    raise PolicyError(f"IPPool({net}): network within reserved range")
                pools.append(net)
            app = _obj(r.get("app"), "app")
            out.append(
                NodeAttr(
                    tuple(targets),
                    tuple(_str_list(r.get("attr"), "attr")),
                    tuple((k, tuple(v) if isinstance(v, list) else (v,)) for k, v in app.items()),
                    tuple(pools),
                )
            )
        return out

    def parse_auto_approvers(
        self,
    ) -> tuple[tuple[tuple[IPNetwork, tuple[Alias, ...]], ...], tuple[Alias, ...]]:
        aa = _obj(self.doc.get("autoApprovers"), "autoApprovers")
        routes: list[tuple[IPNetwork, tuple[Alias, ...]]] = []
        for prefix_s, approvers in _obj(aa.get("routes"), "autoApprovers.routes").items():
            net = parse_prefix(prefix_s)
            if net is None:
                raise PolicyError(f'autoApprovers.routes: "{prefix_s}": invalid prefix')
            routes.append((net, tuple(self.alias(a) for a in _str_list(approvers, "routes"))))
        exit_ = tuple(self.alias(a) for a in _str_list(aa.get("exitNode"), "exitNode"))
        return tuple(routes), exit_

    def parse_tests(self) -> list[PolicyTest]:
        out: list[PolicyTest] = []
        for raw in self.doc.get("tests") or []:
            t = _obj(raw, "tests[]")
            src = t.get("src")
            proto = t.get("proto")
            try:
                p = parse_proto(proto)
            except PolicyError:
                p = -1
            out.append(
                PolicyTest(
                    src if isinstance(src, str) else "",
                    p,
                    tuple(_str_list(t.get("accept"), "accept")),
                    tuple(_str_list(t.get("deny"), "deny")),
                )
            )
        return out

    def parse_ssh_tests(self) -> list[SshTest]:
        out: list[SshTest] = []
        for raw in self.doc.get("sshTests") or []:
            t = _obj(raw, "sshTests[]")
            dsts = _str_list(t.get("dst"), "dst")
            for d in dsts:
                if d.startswith("autogroup:"):
                    if d == "autogroup:internet":
                        raise PolicyError(f'SSH tests dst contains disallowed element "{d}"')
                elif d.startswith("tag:") and d not in self.tag_owners:
                    raise PolicyError(f'SSH tests dst contains unknown tag "{d}"')
            src = t.get("src")
            out.append(
                SshTest(
                    src if isinstance(src, str) else "",
                    tuple(dsts),
                    tuple(_str_list(t.get("accept"), "accept")),
                    tuple(_str_list(t.get("check"), "check")),
                    tuple(_str_list(t.get("deny"), "deny")),
                )
            )
        return out


def load_policy(text: str | dict[str, Any], domains: frozenset[str] | None = None) -> Policy:
    """Parse and validate a policy document.

    `domains` are the mail domains that belong to this tailnet (for
    `user:*@domain` and `localpart:*@domain`); None skips that check.
    """
    doc = loads(text) if isinstance(text, str) else json.loads(json.dumps(text))
    if not isinstance(doc, dict):
        raise PolicyError("policy must be a JSON object")
    p = _Parser(doc)
    p.parse_hosts()
    p.parse_groups()
    p.parse_tag_owners()
    p.domains = domains
    rules = p.parse_acls() + p.parse_grants()
    if "acls" not in doc and "grants" not in doc:
        # A policy without either section allows everything (the default
        # policy of a new tailnet); an explicit empty list denies everything.
        star = Alias("wildcard", "*")
        rules = [Rule((star,), (Destination(star, (ANY_PORTS,)),), ())]
    ssh = p.parse_ssh()
    attrs = p.parse_node_attrs()
    auto_routes, auto_exit = p.parse_auto_approvers()
    tests = p.parse_tests()
    ssh_tests = p.parse_ssh_tests()
    return Policy(
        groups=p.groups,
        tag_owners=p.tag_owners,
        hosts=p.hosts,
        rules=tuple(rules),
        ssh=tuple(ssh),
        node_attrs=tuple(attrs),
        auto_routes=auto_routes,
        auto_exit=auto_exit,
        tests=tuple(tests),
        ssh_tests=tuple(ssh_tests),
        randomize_client_port=bool(doc.get("randomizeClientPort")),
        raw=doc,
    )
