"""Site settings: validation, the file, and command line / site.json / default precedence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from outpost_appliance.cli import _server_config, build_parser
from outpost_server.errors import InvalidInput
from outpost_server.site import (
    SiteSettings,
    check_addresses,
    check_server_url,
    check_site_name,
    load_site,
    resolve_start,
    save_site,
    site_path,
    updated,
)


@pytest.mark.parametrize(
    "url", ["http://10.1.2.3", "https://outpost.lan:8443/", "http://[fd00::1]:80"]
)
def test_login_urls_that_clients_can_use_are_accepted(url: str) -> None:
    assert check_server_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://10.1.2.3", "must start with http:// or https://"),
        ("10.1.2.3", "must start with http:// or https://"),
        ("http://", "has no host"),
        ("http://10.1.2.3/login", "no path"),
        ("http://user@10.1.2.3", "no path, user"),
        ("http://bad_host!", "not a valid host name"),
        ("http://0.0.0.0", "unspecified address"),
        ("http://10.1.2.3:99999", "login URL"),
        ("", "empty"),
    ],
)
def test_bad_login_urls_say_what_is_wrong(url: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        check_server_url(url)


def test_addresses_are_normalised_deduplicated_and_numbered_in_errors() -> None:
    assert check_addresses(["Outpost.LAN.", "10.0.0.1", "outpost.lan", " "]) == (
        "outpost.lan",
        "10.0.0.1",
    )
    with pytest.raises(InvalidInput, match=r"address #2 \('no such!'\)"):
        check_addresses(["10.0.0.1", "no such!"])


@pytest.mark.parametrize("name", ["", "has space", "-lead", "x" * 33, "caf\u00e9"])
def test_site_names_outside_the_allowed_set_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="site name"):
        check_site_name(name)


def test_saved_settings_read_back_identically_and_the_file_is_owner_only(tmp_path: Path) -> None:
    s = SiteSettings(site_name="plant7", server_url="http://10.1.2.3", addresses=("outpost.lan",))
    save_site(tmp_path, s)
    assert load_site(tmp_path) == s
    assert site_path(tmp_path).stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_bad_file_is_refused_naming_the_file_and_the_field(tmp_path: Path) -> None:
    assert load_site(tmp_path) is None
    site_path(tmp_path).write_text("{not json")
    with pytest.raises(InvalidInput, match=r"site\.json: not valid JSON"):
        load_site(tmp_path)
    site_path(tmp_path).write_text(json.dumps({"server_url": "gopher://x"}))
    with pytest.raises(InvalidInput, match=r"site\.json: login URL 'gopher://x'"):
        load_site(tmp_path)


def test_command_line_wins_then_site_file_then_defaults(tmp_path: Path) -> None:
    plain = resolve_start(
        tmp_path, site_name=None, server_url=None, default_server_url="http://10.9.9.9"
    )
    assert (plain.site_name, plain.server_url, plain.from_command_line) == (
        "outpost",
        "http://10.9.9.9",
        (),
    )
    save_site(
        tmp_path,
        SiteSettings(site_name="plant7", server_url="http://10.1.2.3", addresses=("a.lan",)),
    )
    saved = resolve_start(
        tmp_path, site_name=None, server_url=None, default_server_url="http://10.9.9.9"
    )
    assert (saved.site_name, saved.server_url, saved.addresses) == (
        "plant7",
        "http://10.1.2.3",
        ("a.lan",),
    )
    cli = resolve_start(tmp_path, site_name=None, server_url="http://192.168.0.1")
    assert (cli.site_name, cli.server_url, cli.from_command_line) == (
        "plant7",
        "http://192.168.0.1",
        ("server_url",),
    )


def test_an_update_changes_only_the_fields_given_and_refuses_unknown_ones() -> None:
    start = SiteSettings(site_name="a", server_url="http://10.0.0.1")
    new = updated(start, {"addresses": "x.lan, 10.0.0.2"}, "console:op", "now")
    assert (new.site_name, new.server_url, new.addresses) == (
        "a",
        "http://10.0.0.1",
        ("x.lan", "10.0.0.2"),
    )
    assert (new.updated_by, new.updated_at) == ("console:op", "now")
    with pytest.raises(InvalidInput, match="unknown field"):
        updated(start, {"setup_completed_at": "yesterday"}, "x", "now")


def test_outpost_serve_takes_what_its_command_line_leaves_out_from_site_json(
    tmp_path: Path,
) -> None:
    save_site(
        tmp_path,
        SiteSettings(site_name="plant7", server_url="http://10.1.2.3", addresses=("a.lan",)),
    )
    args = build_parser().parse_args(
        ["--data-dir", str(tmp_path), "serve", "--default-server-url", "http://10.9.9.9"]
    )
    cfg = _server_config(args)
    assert (cfg.site_name, cfg.server_url, cfg.addresses) == (
        "plant7",
        "http://10.1.2.3",
        ("a.lan",),
    )
    args = build_parser().parse_args(
        ["--data-dir", str(tmp_path), "serve", "--server-url", "http://10.5.5.5"]
    )
    cfg = _server_config(args)
    assert (cfg.server_url, cfg.site_from_command_line) == ("http://10.5.5.5", ("server_url",))
