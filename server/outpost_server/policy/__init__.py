"""Policy engine: Tailscale policy files (HuJSON) -> per-node network maps.

API
---
    policy = load_policy(text, domains=frozenset({"example.com"}))   # PolicyError
    compiled = compile_for(policy, Topology(users=..., nodes=...))
    run_policy_tests(compiled)              # the policy's `tests`/`sshTests`; PolicyError
    view = compiled.node("laptop")          # NodeView, computed on first use, then cached
    view.packet_filter                      # tuple[FilterRule]   (.to_json() -> tailcfg shape)
    view.visible_peers                      # PeerMap: name -> PeerView(allowed_ips,
                                            #   primary_routes, tags); .indices
    compiled.visible_peers(i)               # the same for node index i, without a NodeView
    view.ssh_policy                         # SSHPolicy           (.to_json() -> tailcfg shape)
    view.self_view                          # SelfView(addresses, allowed_ips,
                                            #   primary_routes, tags, cap_map)

`Topology`, `TopoNode`, `TopoUser` are plain values the coordination server
builds from its own state; nothing here knows about the database or the
conformance case format (`conformance.py` has the adapter for that).

Modules
-------
hujson        HuJSON -> Python values, errors with line/column
alias         classification of alias strings (tag:, group:, autogroup:, hosts, CIDRs)
parse         validation; ACLs and grants normalised to `Rule`
topology      Topology / TopoNode / TopoUser
resolve       aliases -> node sets, route approval (autoApprovers) and HA primaries
compile       packet filters, visible peers, self view
ssh           SSHPolicy per destination node
capmap        self capability map from nodeAttrs
policytests   `tests` and `sshTests`
conformance   runner for the recorded hosted-control-plane cases
"""

from outpost_server.policy.compile import (
    CapGrant,
    CompiledPolicy,
    FilterRule,
    NodeView,
    PeerView,
    SelfView,
    compile_for,
)
from outpost_server.policy.errors import PolicyError
from outpost_server.policy.parse import Policy, load_policy
from outpost_server.policy.policytests import run_policy_tests
from outpost_server.policy.ssh import SSHPolicy, SSHRuleOut
from outpost_server.policy.topology import Topology, TopoNode, TopoUser

__all__ = [
    "CapGrant",
    "CompiledPolicy",
    "FilterRule",
    "NodeView",
    "PeerView",
    "Policy",
    "PolicyError",
    "SSHPolicy",
    "SSHRuleOut",
    "SelfView",
    "TopoNode",
    "TopoUser",
    "Topology",
    "compile_for",
    "load_policy",
    "run_policy_tests",
]
