"""Certificate names and the issuing CA's name constraints (pure)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outpost_server.ca.names import (
    DEFAULT_PERMITTED_DNS,
    NameConstraints,
    parse_name,
    parse_names,
)
from outpost_server.errors import InvalidInput


def test_names_are_normalised_deduplicated_and_sorted() -> None:
    got = parse_names(["10.0.0.2", "Outpost.Site.Internal.", "10.0.0.2", "::1", "a.lan"])
    assert [str(n) for n in got] == ["a.lan", "outpost.site.internal", "10.0.0.2", "::1"]


@pytest.mark.parametrize(
    "bad",
    ["", "*.site.internal", "0.0.0.0", "::", "bad_name.lan", "-x.lan", "a" * 64 + ".lan", "a..b"],  # noqa: S104
)
def test_bad_names_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_name(bad)


def test_empty_name_list_is_refused() -> None:
    with pytest.raises(InvalidInput, match="at least one"):
        parse_names([])


def test_defaults_permit_private_space_only() -> None:
    c = NameConstraints.build()
    for ok in [
        "outpost.internal",
        "x.home.arpa",
        "localhost",
        "10.1.2.3",
        "192.168.1.1",
        "198.18.0.1",
        "fd00::1",
    ]:
        assert c.permits(parse_name(ok)), ok
    for bad in [
        "www.example.com",
        "evilinternal",
        "internal.example.com",
        "8.8.8.8",
        "2001:db8::1",
    ]:
        assert not c.permits(parse_name(bad)), bad


def test_site_names_outside_defaults_are_added_exactly() -> None:
    c = NameConstraints.build(names=parse_names(["outpost.corp.example", "203.0.113.7"]))
    assert "outpost.corp.example" in c.dns
    assert ipaddress.ip_network("203.0.113.7/32") in c.ip
    assert c.permits(parse_name("api.outpost.corp.example"))
    assert not c.permits(parse_name("corp.example"))
    assert not c.permits(parse_name("203.0.113.8"))


def test_operator_lists_replace_defaults() -> None:
    c = NameConstraints.build(permit_dns=["site.lan"], permit_ip=["10.20.0.0/16"])
    assert c.dns == ("site.lan",)
    assert not c.permits(parse_name("10.21.0.1"))
    with pytest.raises(InvalidInput, match="outside the issuing CA's name constraints"):
        c.check([parse_name("10.21.0.1")])
    with pytest.raises(InvalidInput, match="not an IP range"):
        NameConstraints.build(permit_ip=["10.0.0.0/33"])


def test_constraints_round_trip_json() -> None:
    c = NameConstraints.build(names=parse_names(["203.0.113.7"]))
    assert NameConstraints.from_json(c.to_json()) == c


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(st.lists(_label, min_size=1, max_size=4), st.sampled_from(DEFAULT_PERMITTED_DNS))
def test_any_host_under_a_permitted_domain_is_permitted(labels: list[str], domain: str) -> None:
    name = parse_name(".".join([*labels, domain]))
    assert NameConstraints.build().permits(name)


@given(_label)
def test_suffix_without_dot_boundary_is_not_permitted(prefix: str) -> None:
    assert not NameConstraints.build().permits(parse_name(prefix + "xinternal"))
