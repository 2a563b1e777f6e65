"""Timing of the policy engine on a synthetic tailnet.

    python -m outpost_server.policy.bench --nodes 10000 --rules 300

builds a tailnet of `--nodes` nodes (about four in five owned by users, five
devices a user, the rest tagged; a few subnet routers, HA pairs and exit
nodes) and a policy of `--rules` ACL/grant rules between groups, users, tags,
autogroups, subnets and `autogroup:self`, then prints how long loading,
compiling and computing every node's packet filter and visible peers take,
plus the peer-set sizes. The figures are informational: nothing asserts on
them.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
import time
from typing import Any

from outpost_server.policy.compile import compile_for
from outpost_server.policy.parse import load_policy
from outpost_server.policy.topology import Topology, TopoNode, TopoUser

_V4_BASE = int(ipaddress.IPv4Address("100.64.0.1"))
_V6_BASE = int(ipaddress.IPv6Address("fd7a:115c:a1e0::1"))


def build(n_nodes: int, n_rules: int, seed: int = 1) -> tuple[str, Topology]:
    """A synthetic (policy text, topology) pair."""
    rnd = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not secrets
    n_tagged = max(1, n_nodes // 5)
    n_user_nodes = n_nodes - n_tagged
    n_users = max(1, n_user_nodes // 5)
    n_tags = max(1, n_tagged // 20)
    n_groups = max(1, n_users // 20)
    domain = "example.com"
    users = tuple(
        TopoUser(
            id=k + 1,
            name=f"user{k}",
            email=f"user{k}@{domain}",
            roles=frozenset({"owner", "admin"}) if k == 0 else frozenset(),
        )
        for k in range(n_users)
    )
    tags = [f"tag:t{k}" for k in range(n_tags)]
    nodes: list[TopoNode] = []
    for k in range(n_nodes):
        v4 = ipaddress.IPv4Address(_V4_BASE + k)
        v6 = ipaddress.IPv6Address(_V6_BASE + k)
        if k < n_user_nodes:
            nodes.append(TopoNode(f"n{k}", v4, v6, user=f"user{k % n_users}", hostname=f"n{k}"))
            continue
        t = k - n_user_nodes
        tag = tags[t % n_tags]
        routes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
        if t % 97 == 0:  # subnet routers, in HA pairs (t and t + 97 * n_tags ...)
            routes = (ipaddress.ip_network(f"10.{(t // 97) % 200}.0.0/16"),)
        elif t % 211 == 5:  # exit nodes
            routes = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
        nodes.append(
            TopoNode(
                f"n{k}",
                v4,
                v6,
                tags=(tag,),
                routable_ips=routes,
                approved_routes=routes,
                hostname=f"n{k}",
            )
        )
    groups = {
        f"group:g{g}": [f"user{u}@{domain}" for u in rnd.sample(range(n_users), min(50, n_users))]
        for g in range(n_groups)
    }
    acls: list[dict[str, Any]] = []
    grants: list[dict[str, Any]] = []
    for r in range(n_rules):
        kind = r % 10
        tag = rnd.choice(tags)
        group = rnd.choice(list(groups))
        if kind in (0, 1, 2):
            acls.append({"action": "accept", "src": [group], "dst": [f"{tag}:22,443"]})
        elif kind == 3:
            acls.append({"action": "accept", "src": [rnd.choice(tags)], "dst": [f"{tag}:5432"]})
        elif kind == 4:
            u = rnd.randrange(n_users)
            acls.append({"action": "accept", "src": [f"user{u}@{domain}"], "dst": [f"{tag}:*"]})
        elif kind == 5:
            grants.append({"src": [group], "dst": [rnd.choice(list(groups))], "ip": ["tcp:80"]})
        elif kind == 6:
            net = f"10.{rnd.randrange(200) % max(1, (n_tagged // 97) + 1)}.0.0/16"
            acls.append({"action": "accept", "src": [group], "dst": [f"{net}:*"]})
        elif kind == 7:
            grants.append(
                {"src": [rnd.choice(tags)], "dst": [tag], "app": {"example.com/cap/x": [{}]}}
            )
        elif kind == 8:
            acls.append({"action": "accept", "src": [group, tag], "dst": [f"{tag}:8080-8090"]})
        else:
            acls.append({"action": "accept", "src": [group], "dst": [f"{rnd.choice(tags)}:443"]})
    # a few fixed shapes: self, exit, everyone to a service, a subnet as
    # source, a node address, a `via` route
    acls.append({"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]})
    acls.append({"action": "accept", "src": ["group:g0"], "dst": ["autogroup:internet:*"]})
    acls.append({"action": "accept", "src": ["*"], "dst": [f"{tags[-1]}:443"]})
    acls.append({"action": "accept", "src": ["10.0.0.0/16"], "dst": [f"{tags[len(tags) // 2]}:22"]})
    acls.append({"action": "accept", "src": ["group:g0"], "dst": [f"{nodes[5].ipv4}:22"]})
    grants.append(
        {"src": [f"group:g{n_groups - 1}"], "dst": ["10.1.0.0/16"], "ip": ["*"], "via": [tags[0]]}
    )
    policy = {
        "groups": groups,
        "tagOwners": {t: [f"user0@{domain}"] for t in tags},
        "autoApprovers": {"routes": {"10.0.0.0/8": [tags[0]]}, "exitNode": [tags[0]]},
        "acls": acls,
        "grants": grants,
        "ssh": [
            {
                "action": "accept",
                "src": ["autogroup:member"],
                "dst": ["autogroup:self"],
                "users": ["autogroup:nonroot"],
            },
            {
                "action": "check",
                "src": [rnd.choice(list(groups))],
                "dst": [rnd.choice(tags)],
                "users": ["root"],
            },
        ],
    }
    return json.dumps(policy), Topology(users, tuple(nodes), frozenset({domain}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m outpost_server.policy.bench")
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--rules", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ssh", action="store_true", help="also time SSH policies and self views")
    args = ap.parse_args(argv)

    out = sys.stdout
    clock: list[tuple[float, float]] = [(time.perf_counter(), time.process_time())]

    def lap(label: str, extra: str = "") -> None:
        clock.append((time.perf_counter(), time.process_time()))
        (w0, c0), (w1, c1) = clock[-2], clock[-1]
        out.write(f"{label:<26} {w1 - w0:8.3f} s wall {c1 - c0:8.3f} s cpu{extra}\n")

    text, topology = build(args.nodes, args.rules, args.seed)
    lap("build synthetic tailnet")
    policy = load_policy(text, domains=topology.domains)
    lap("load policy")
    start = clock[-1]
    compiled = compile_for(policy, topology)
    lap("compile")
    n_rules = 0
    for k in range(len(topology.nodes)):
        n_rules += len(compiled.packet_filter(k))
    lap("packet filters (all)", f"   ({n_rules} FilterRules)")
    sizes = [len(compiled.visible_peers(k)) for k in range(len(topology.nodes))]
    lap("visible peers (all)")
    (w0, c0), (w1, c1) = start, clock[-1]
    out.write(f"{'compile+filters+peers':<26} {w1 - w0:8.3f} s wall {c1 - c0:8.3f} s cpu\n")
    sizes.sort()
    out.write(
        f"nodes {len(topology.nodes)}, policy rules {len(policy.rules)}; peers per node: "
        f"min {sizes[0]} median {sizes[len(sizes) // 2]} max {sizes[-1]} total {sum(sizes)}\n"
    )
    if args.ssh:
        for n in topology.nodes:
            compiled.node(n.name)
        lap("full NodeViews (all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
