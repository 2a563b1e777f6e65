"""Policy validation: rejected documents and the messages they produce."""

from __future__ import annotations

import pytest

from outpost_server.policy.errors import PolicyError
from outpost_server.policy.parse import load_policy, parse_go_duration

TAGS = '"tagOwners": {"tag:server": ["alice@example.com"], "tag:client": ["alice@example.com"]}'


def _policy(body: str) -> str:
    return "{" + TAGS + ", " + body + "}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '"acls": [{"action": "accept", "src": ["tag:nope"], "dst": ["*:*"]}]',
            'src=tag not found: "tag:nope"',
        ),
        (
            '"acls": [{"action": "accept", "src": ["*"], "dst": ["tag:nope:22"]}]',
            'dst="tag:nope": tag not found: "tag:nope"',
        ),
        (
            '"acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]',
            'action="deny" is not supported',
        ),
        (
            '"acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:self"]}]',
            'dst="autogroup:self": port range "self": invalid first integer',
        ),
        (
            '"acls": [{"action": "accept", "src": ["autogroup:self"], "dst": ["*:*"]}]',
            '"autogroup:self" not valid on the src side of a rule',
        ),
        (
            '"acls": [{"action": "accept", "src": ["tag:client"], "dst": ["autogroup:self:*"]}]',
            "autogroup:self can only be used with users, groups, or supported autogroups",
        ),
        ('"grants": [{"src": ["*"], "dst": ["*"]}]', "ip and app can not both be empty"),
        (
            '"grants": [{"src": ["*"], "dst": ["autogroup:danger-all"], "ip": ["*"]}]',
            "cannot use autogroup:danger-all as a dst",
        ),
        (
            '"grants": [{"src": ["*"], "dst": ["0.0.0.0/0"], "ip": ["*"]}]',
            'dst "0.0.0.0/0": to allow all IP addresses, use "*" or "autogroup:internet"',
        ),
        (
            '"grants": [{"src": ["*"], "dst": ["tag:server"], "ip": ["tcp:0"]}]',
            "port range \"0\": first port must be >0, or use '*' for wildcard",
        ),
        (
            '"grants": [{"src": ["*"], "dst": ["*"], "app": {"tailscale.com/cap/funnel": [{}]}}]',
            "capability name must not be in the tailscale.com domain",
        ),
        (
            '"ssh": [{"action": "", "src": ["*"], "dst": ["tag:server"], "users": ["root"]}]',
            "action must be specified",
        ),
        (
            '"ssh": [{"action": "accept", "src": ["tag:client"], "dst": ["tag:server"], '
            '"users": []}]',
            "users must be specified",
        ),
        (
            '"ssh": [{"action": "accept", "src": ["tag:client"], "dst": ["tag:server"], '
            '"users": ["*"]}]',
            'user "*" is not valid',
        ),
        (
            '"ssh": [{"action": "check", "checkPeriod": "200h", "src": ["tag:client"], '
            '"dst": ["tag:server"], "users": ["root"]}]',
            "checkPeriod 200h0m0s is above the max (168h)",
        ),
        (
            '"ssh": [{"action": "check", "checkPeriod": "-1m", "src": ["tag:client"], '
            '"dst": ["tag:server"], "users": ["root"]}]',
            "checkPeriod -1m0s must be a positive duration",
        ),
        (
            '"groups": {"group:a": ["group:b"], "group:b": ["alice@example.com"]}',
            'groups["group:a"]: "group:b": group members cannot be recursive',
        ),
        ('"nodeAttrs": [{"target": ["%bogus%"], "attr": ["x"]}]', '"%bogus%": invalid address'),
        (
            '"nodeAttrs": [{"target": ["*"], "ipPool": ["100.100.100.0/24"]}]',
            "IPPool(100.100.100.0/24): network within reserved range",
        ),
    ],
)
def test_invalid_policies_are_rejected_with_the_hosted_message(body: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(_policy(body))
    assert message in str(info.value)


def test_foreign_domain_in_localpart_is_rejected_when_domains_are_known() -> None:
    doc = _policy(
        '"ssh": [{"action": "accept", "src": ["tag:client"], "dst": ["tag:server"], '
        '"users": ["localpart:*@other.org"]}]'
    )
    with pytest.raises(PolicyError, match=r"other\.org is not associated with this Tailnet"):
        load_policy(doc, domains=frozenset({"example.com"}))
    assert load_policy(doc.replace("other.org", "example.com"), domains=frozenset({"example.com"}))


def test_acl_destinations_keep_their_ports() -> None:
    p = load_policy(
        _policy(
            '"acls": [{"action": "accept", "src": ["*"], '
            '"dst": ["tag:server:22,80-90", "10.0.0.0/8:*"]}]'
        )
    )
    (rule,) = p.rules
    assert [(d.alias.value, [(r.first, r.last) for r in d.ports]) for d in rule.dsts] == [
        ("tag:server", [(22, 22), (80, 90)]),
        ("10.0.0.0/8", [(0, 65535)]),
    ]


def test_grant_ip_entries_split_by_protocol() -> None:
    p = load_policy(
        _policy(
            '"grants": [{"src": ["*"], "dst": ["tag:server"], '
            '"ip": ["tcp:80", "udp:53", "tcp:443"]}]'
        )
    )
    assert sorted((r.protos, [(x.first, x.last) for x in r.dsts[0].ports]) for r in p.rules) == [
        ((6,), [(80, 80), (443, 443)]),
        ((17,), [(53, 53)]),
    ]


def test_policy_without_acls_or_grants_allows_everything_but_empty_list_allows_nothing() -> None:
    assert len(load_policy("{}").rules) == 1
    assert load_policy('{"grants": []}').rules == ()


def test_go_durations_parse_like_go() -> None:
    assert parse_go_duration("1h30m") == 5400
    assert parse_go_duration("168h0m1s") == 168 * 3600 + 1
    with pytest.raises(PolicyError, match='time: invalid duration "abc"'):
        parse_go_duration("abc")
