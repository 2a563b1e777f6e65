"""Pure pieces of the console: the highlighter and the dashboard tiles' thresholds."""

from __future__ import annotations

from rich.text import Text

from outpost_tui.highlight import COMMENT, KEY, NUMBER, REMOVED, STRING, hujson, unified_diff
from outpost_tui.screens.audit import details_summary, entry_matches
from outpost_tui.screens.bundles import details as bundle_details
from outpost_tui.screens.dashboard import audit_tile, certs_tile, disk_tile
from outpost_tui.theme import SAFE_GLYPHS


def styles_of(text: Text) -> dict[str, set[str]]:
    """Each styled piece of text mapped to the styles it was drawn with."""
    out: dict[str, set[str]] = {}
    for span in text.spans:
        out.setdefault(text.plain[span.start : span.end], set()).add(str(span.style))
    return out


def test_hujson_colours_comments_keys_strings_and_numbers() -> None:
    src = '{\n  // admins\n  "acls": [{"src": ["group:a"], "port": 22}], /* x */\n}\n'
    text = hujson(src)
    assert text.plain == src
    got = styles_of(text)
    assert got["// admins"] == {COMMENT} and got["/* x */"] == {COMMENT}
    assert got['"acls"'] == {KEY} and got['"src"'] == {KEY} and got['"port"'] == {KEY}
    assert got['"group:a"'] == {STRING}
    assert got["22"] == {NUMBER}


def test_hujson_never_fails_and_draws_only_console_glyphs() -> None:
    for src in ('"unterminated', "/* open", '{"a": "caf\u00e9 \u2713"}\t', "", "\\\\\"\n'"):
        text = hujson(src)
        assert all(c in SAFE_GLYPHS or c == "\n" for c in text.plain), src
    assert hujson('{"k": "caf\u00e9"}').plain == '{"k": "caf?"}'
    assert hujson("\t1").plain == "    1"


def test_diff_lines_are_coloured_by_kind() -> None:
    text = unified_diff("--- version 1\n+++ version 2\n@@ -1 +1 @@\n-old\n+new\n same\n")
    got = styles_of(text)
    assert got["-old\n"] == {REMOVED}
    assert "+new\n" in got and "--- version 1\n" in got
    assert " same\n" not in got  # context lines stay plain


def test_certificate_tile_needs_attention_below_14_days_and_is_bad_when_expired() -> None:
    ok = certs_tile({"leaf_days_left": 200, "root_days_left": 7000})
    assert ok.value == "server: 200 days left" and not ok.attention and not ok.bad
    low = certs_tile({"leaf_days_left": 13, "root_days_left": 7000})
    assert low.attention and not low.bad and "renewal is failing" in low.detail
    assert not certs_tile({"leaf_days_left": 14, "root_days_left": 7000}).attention
    gone = certs_tile({"leaf_days_left": -1, "root_days_left": 7000})
    assert gone.bad and "EXPIRED" in gone.value
    assert certs_tile({"error": "state.json: bad"}).bad


def test_audit_tile_reports_the_last_verification_and_a_broken_chain_is_bad() -> None:
    never = audit_tile({"entries": 9, "last_checkpoint_seq": None, "verified": None})
    assert never.value == "not verified yet" and not never.bad
    good = audit_tile(
        {
            "entries": 9,
            "last_checkpoint_seq": 8,
            "verified": {"ok": True, "last_seq": 9, "at": None},
        }
    )
    assert good.value == "intact up to entry 9" and "checkpoint at 8" in good.detail
    broken = audit_tile(
        {"entries": 9, "verified": {"ok": False, "first_bad_seq": 4, "error": "entry 4: edited"}}
    )
    assert broken.bad and broken.value == "BROKEN at entry 4"


def test_disk_tile_thresholds() -> None:
    gib = 1024**3

    def tile(used: int, free: int) -> tuple[str, bool, bool]:
        t = disk_tile({"total": used + free, "used": used, "free": free, "path": "/d"})
        return t.value, t.attention, t.bad

    assert tile(50 * gib, 50 * gib) == ("50% used", False, False)
    assert tile(90 * gib, 10 * gib) == ("90% used", False, False)
    assert tile(91 * gib, 9 * gib) == ("91% used", True, False)
    assert tile(98 * gib, 2 * gib) == ("98% used", False, True)


def test_audit_filter_matches_every_word_over_actor_action_and_details() -> None:
    e = {"actor": "console:root", "action": "user.create", "details": {"user": "alice"}}
    assert entry_matches(e, "") and entry_matches(e, "ALICE create")
    assert entry_matches(e, "console user.create")
    assert not entry_matches(e, "alice delete")
    assert details_summary({"a": "x" * 100}).endswith("...")
    assert details_summary({"routes": ["10.0.0.0/8"]}) == 'routes=["10.0.0.0/8"]'


def test_a_ca_material_bundle_shows_the_issuing_ca_and_where_its_key_comes_from() -> None:
    b = {
        "id": 4, "status": "staged", "kind": "ca-material", "seq": 1, "file": "ca.opb",
        "medium_label": "USB", "signers": ["a", "b"], "sha256": "ab" * 32,
        "preview": {"ca_material": {
            "subject": "CN=Outpost issuing CA (alpha) 2030-03-01", "serial": "7f17",
            "not_before": "2030-02-28T12:00:00Z", "not_after": "2035-03-01T12:00:00Z",
            "key_source": "pending request", "replaces": "66a5",
        }},
    }  # fmt: skip
    text = bundle_details(b)
    assert "New issuing CA: CN=Outpost issuing CA (alpha) 2030-03-01, serial 7f17" in text
    assert "Valid 2030-02-28T12:00:00Z to 2035-03-01T12:00:00Z" in text
    assert "Key: pending request; replaces issuing CA 66a5" in text
