"""Backup retention (grandfather-father-son against a fixed clock) and backup settings.

Expected keep-sets are computed here with datetime, independently of the module's helpers,
and the default policy is also checked against a hand-written list.
"""

from __future__ import annotations

import datetime as dt
import json
import stat
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import pytest
from nacl import pwhash

from outpost_server.backup import format as F
from outpost_server.backup.format import BackupError
from outpost_server.backup.retention import Retention, to_prune
from outpost_server.backup.settings import (
    SETTINGS_NAME,
    BackupSettings,
    Schedule,
    load_settings,
    save_settings,
)

UTC = dt.UTC
NOW_DT = dt.datetime(2024, 6, 15, 12, 0, tzinfo=UTC)  # a Saturday, ISO week 2024-W24
NOW = int(NOW_DT.timestamp())
OPS = pwhash.argon2id.OPSLIMIT_MIN
MEM = pwhash.argon2id.MEMLIMIT_MIN
PASSPHRASE = "a long enough passphrase"  # noqa: S105 - a test passphrase


def ts(d: dt.date, hh: int = 2, mm: int = 30) -> int:
    return int(dt.datetime(d.year, d.month, d.day, hh, mm, tzinfo=UTC).timestamp())


def daily_backups(days: int, end: dt.date | None = None) -> list[tuple[str, int]]:
    """One backup at 02:30 UTC on each of `days` days ending at `end` (today), newest first."""
    end = end or NOW_DT.date()
    out = []
    for i in range(days):
        d = end - dt.timedelta(days=i)
        out.append((f"b-{d.isoformat()}", ts(d)))
    return out


def expected_keep(backups: list[tuple[str, int]], policy: Retention, now: int) -> set[str]:
    """Independent model: newest per bucket over the newest N buckets, plus future and newest."""

    def when(t: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, UTC)

    past = [(n, t) for n, t in backups if t <= now]
    keep = {n for n, t in backups if t > now}
    if backups:
        keep.add(max(backups, key=lambda x: (x[1], x[0]))[0])

    def newest_per(bucket: Callable[[dt.datetime], Hashable], count: int) -> set[str]:
        best: dict[Hashable, tuple[int, str]] = {}
        for n, t in past:
            b = bucket(when(t))
            if b not in best or (t, n) > best[b]:
                best[b] = (t, n)
        chosen = sorted(best.values(), reverse=True)[:count]
        return {n for _, n in chosen}

    keep |= newest_per(lambda w: w.date(), policy.daily)
    keep |= newest_per(lambda w: w.isocalendar()[:2], policy.weekly)
    keep |= newest_per(lambda w: (w.year, w.month), policy.monthly)
    return keep


def pruned_in_order(backups: list[tuple[str, int]], keep: set[str]) -> list[str]:
    return [n for n, _ in sorted(backups, key=lambda x: (x[1], x[0])) if n not in keep]


# ------------------------------------------------------------------ retention
def test_default_policy_against_400_days_matches_hand_written_list() -> None:
    backups = daily_backups(400)
    assert backups[-1][0] == "b-2023-05-13" and len({t for _, t in backups}) == 400
    kept_dates = [
        # daily: the 7 newest days (2024-06-09 closes ISO week 23)
        "2024-06-15", "2024-06-14", "2024-06-13", "2024-06-12",
        "2024-06-11", "2024-06-10", "2024-06-09",
        # weekly: newest of ISO weeks 24 and 23 are daily already; weeks 22 and 21 end on Sundays
        "2024-06-02", "2024-05-26",
        # monthly: the last day of each of the 11 earlier months (June's newest is today)
        "2024-05-31", "2024-04-30", "2024-03-31", "2024-02-29", "2024-01-31", "2023-12-31",
        "2023-11-30", "2023-10-31", "2023-09-30", "2023-08-31", "2023-07-31",
    ]  # fmt: skip
    keep = {f"b-{d}" for d in kept_dates}
    pruned = to_prune(backups, Retention(), NOW)
    assert len(pruned) == 400 - 20
    assert set(pruned) == {n for n, _ in backups} - keep
    assert pruned == pruned_in_order(backups, keep)  # oldest first
    assert pruned[0] == "b-2023-05-13" and pruned[-1] == "b-2024-06-08"


@pytest.mark.parametrize(
    "policy",
    [
        Retention(),
        Retention(daily=3, weekly=2, monthly=5),
        Retention(daily=0, weekly=0, monthly=24),
        Retention(daily=30, weekly=0, monthly=0),
        Retention(daily=7, weekly=52, monthly=0),
        Retention(daily=1000, weekly=1000, monthly=1000),
        Retention(daily=0, weekly=60, monthly=0),  # weeks of two years with the same number
        Retention(daily=0, weekly=0, monthly=14),  # May and June of two years
    ],
    ids=lambda p: f"{p.daily}-{p.weekly}-{p.monthly}",
)
def test_policies_against_independent_model(policy: Retention) -> None:
    backups = daily_backups(400)
    keep = expected_keep(backups, policy, NOW)
    assert to_prune(backups, policy, NOW) == pruned_in_order(backups, keep)


def test_weekly_buckets_are_iso_weeks_across_new_year() -> None:
    # 2020-12-28 (Mon) .. 2021-01-03 (Sun) is ISO week 2020-W53; 2021-01-04 starts 2021-W01
    days = [dt.date(2020, 12, 27), dt.date(2020, 12, 31), dt.date(2021, 1, 1), dt.date(2021, 1, 3)]
    days.append(dt.date(2021, 1, 4))
    backups = [(d.isoformat(), ts(d)) for d in days]
    now = ts(dt.date(2021, 1, 5))
    pruned = to_prune(backups, Retention(daily=0, weekly=2, monthly=0), now)
    assert pruned == ["2020-12-27", "2020-12-31", "2021-01-01"]
    pruned = to_prune(backups, Retention(daily=0, weekly=3, monthly=0), now)
    assert pruned == ["2020-12-31", "2021-01-01"]


def test_monthly_buckets_are_calendar_months_in_utc() -> None:
    backups = [
        ("jan-31-late", int(dt.datetime(2024, 1, 31, 23, 59, tzinfo=UTC).timestamp())),
        ("feb-01-early", int(dt.datetime(2024, 2, 1, 0, 1, tzinfo=UTC).timestamp())),
        ("jan-15", ts(dt.date(2024, 1, 15))),
        ("dec-31", ts(dt.date(2023, 12, 31))),
    ]
    pruned = to_prune(backups, Retention(daily=0, weekly=0, monthly=2), NOW)
    assert pruned == ["dec-31", "jan-15"]


def test_default_policy_keeps_exactly_7_daily_4_weekly_12_monthly_buckets() -> None:
    backups = daily_backups(400)
    pruned = set(to_prune(backups, Retention(), NOW))
    kept = [dt.datetime.fromtimestamp(t, UTC) for n, t in backups if n not in pruned]
    newest_days = sorted({w.date() for w in kept}, reverse=True)[:7]
    assert newest_days == [NOW_DT.date() - dt.timedelta(days=i) for i in range(7)]
    assert len({w.isocalendar()[:2] for w in kept if w.date() >= dt.date(2024, 5, 20)}) == 4
    assert len({(w.year, w.month) for w in kept}) == 12
    assert min(kept).date() == dt.date(2023, 7, 31)


def test_several_backups_on_one_day_keep_only_the_newest_of_that_day() -> None:
    today, yesterday = NOW_DT.date(), NOW_DT.date() - dt.timedelta(days=1)
    backups = [
        ("t-0100", ts(today, 1, 0)),
        ("t-0230", ts(today, 2, 30)),
        ("t-0500", ts(today, 5, 0)),
        ("y-0230", ts(yesterday, 2, 30)),
        ("y-2359", ts(yesterday, 23, 59)),
        ("y-0000", ts(yesterday, 0, 0)),
    ]
    assert to_prune(backups, Retention(), NOW) == ["y-0000", "y-0230", "t-0100", "t-0230"]


def test_many_per_day_over_a_long_period_keeps_one_per_kept_bucket() -> None:
    backups = []
    for name, t in daily_backups(120):
        backups += [(name + "-early", t - 2 * 3600), (name, t), (name + "-late", t + 8 * 3600)]
    backups = [(n, t) for n, t in backups if t <= NOW]
    pruned = set(to_prune(backups, Retention(), NOW))
    kept = {n for n, _ in backups} - pruned
    assert kept == expected_keep(backups, Retention(), NOW)
    # the newest of a day is the "-late" one where it exists (today's 10:30 is before noon)
    assert all(n.endswith("-late") for n in kept)
    assert "b-2024-06-15-late" in kept and "b-2024-06-15" not in kept


def test_newest_is_always_kept_against_old_data() -> None:
    old = daily_backups(200, end=NOW_DT.date() - dt.timedelta(days=500))
    assert max(t for _, t in old) < NOW - 365 * 86400
    pruned = to_prune(old, Retention(daily=0, weekly=0, monthly=1), NOW)
    assert set(pruned) == {n for n, _ in old} - {old[0][0]}
    assert old[0][0] not in pruned


def test_old_data_still_gets_its_daily_allowance() -> None:
    """Buckets are counted among those that have a backup, not back from `now`."""
    old = daily_backups(30, end=NOW_DT.date() - dt.timedelta(days=100))
    pruned = to_prune(old, Retention(daily=7, weekly=0, monthly=0), NOW)
    assert [n for n, _ in old if n not in pruned] == [n for n, _ in old[:7]]


def test_gaps_between_days_do_not_use_up_the_allowance() -> None:
    sparse = [(n, t) for i, (n, t) in enumerate(daily_backups(60)) if i % 10 == 0]  # every 10th day
    pruned = to_prune(sparse, Retention(daily=3, weekly=0, monthly=0), NOW)
    assert [n for n, _ in sparse if n not in pruned] == [n for n, _ in sparse[:3]]


def test_backups_dated_after_now_are_never_pruned() -> None:
    future = [
        ("f-1h", NOW + 3600),
        ("f-3d", NOW + 3 * 86400),
        ("f-400d", NOW + 400 * 86400),
    ]
    past = daily_backups(50)
    pruned = to_prune(past + future, Retention(daily=3, weekly=0, monthly=0), NOW)
    assert not set(pruned) & {n for n, _ in future}
    # the future ones do not use up the daily slots of the past
    kept_past = [n for n, _ in past if n not in pruned]
    assert kept_past == [n for n, _ in past[:3]]
    assert len(pruned) == 47


def test_only_future_backups_are_all_kept() -> None:
    future = [(f"f{i}", NOW + i * 86400) for i in range(1, 30)]
    assert to_prune(future, Retention(daily=1, weekly=0, monthly=0), NOW) == []


def test_backup_at_exactly_now_counts_as_past() -> None:
    backups = [("now", NOW), ("earlier-today", NOW - 3600)]
    assert to_prune(backups, Retention(daily=1, weekly=0, monthly=0), NOW) == ["earlier-today"]


def test_empty_list() -> None:
    assert to_prune([], Retention(), NOW) == []


def test_single_backup_is_kept() -> None:
    assert (
        to_prune([("only", NOW - 10 * 365 * 86400)], Retention(daily=1, weekly=0, monthly=0), NOW)
        == []
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"daily": -1}, "retention daily must be a whole number from 0 to 1000"),
        ({"weekly": -3}, "retention weekly must be a whole number from 0 to 1000"),
        ({"monthly": 1001}, "retention monthly must be a whole number from 0 to 1000"),
        ({"daily": 1.5}, "retention daily must be a whole number"),
        ({"daily": "7"}, "retention daily must be a whole number"),
        ({"daily": 0, "weekly": 0, "monthly": 0}, "retention keeps nothing"),
    ],
)
def test_retention_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Retention(**kwargs)


def test_retention_bounds_accepted() -> None:
    assert Retention(daily=1000, weekly=0, monthly=0).daily == 1000
    assert Retention(daily=0, weekly=0, monthly=1).monthly == 1
    assert (Retention().daily, Retention().weekly, Retention().monthly) == (7, 4, 12)


# ------------------------------------------------------------------ schedule
@pytest.mark.parametrize(
    "bad", ["24:00", "2:30", "ab:cd", "", "02:60", "02:30:00", "0230", " 02:30", "-1:30"]
)
def test_schedule_rejects_bad_times(bad: str) -> None:
    with pytest.raises(BackupError, match=r"schedule time must be HH:MM \(24-hour, UTC\)"):
        Schedule(time=bad)


def test_schedule_refuses_a_trailing_newline() -> None:
    """`$` matches before a final newline; the time must match whole (fullmatch)."""
    with pytest.raises(BackupError, match="schedule time must be HH:MM"):
        Schedule(time="02:30\n")


@pytest.mark.parametrize(
    ("text", "hour", "minute"), [("00:00", 0, 0), ("23:59", 23, 59), ("02:30", 2, 30)]
)
def test_schedule_accepts_valid_times(text: str, hour: int, minute: int) -> None:
    s = Schedule(time=text)
    assert (s.hour, s.minute) == (hour, minute)


# ------------------------------------------------------------------ settings
def new_public() -> str:
    return F.format_public(F.new_recovery_key()[1])


def test_with_recipient_adds_and_does_not_mutate() -> None:
    base = BackupSettings()
    pub = new_public()
    s = base.with_recipient(pub, "safe in office", NOW)
    assert base.recipients == ()
    (r,) = s.recipients
    assert (r.public, r.id, r.label, r.added) == (
        pub,
        F.key_id(F.parse_public(pub)),
        "safe in office",
        NOW,
    )
    assert s.recipient_keys() == [F.parse_public(pub)]


def test_with_recipient_refuses_duplicate_even_if_spelled_differently() -> None:
    pub = new_public()
    s = BackupSettings().with_recipient(pub, "a", NOW)
    kid = s.recipients[0].id
    with pytest.raises(BackupError, match=f"recovery key {kid} is already configured"):
        s.with_recipient(pub, "again", NOW)
    respelled = (
        "  " + F.RECOVERY_PUBLIC_PREFIX + pub[len(F.RECOVERY_PUBLIC_PREFIX) :].upper() + "\n"
    )
    with pytest.raises(BackupError, match="is already configured"):
        s.with_recipient(respelled, "again", NOW)


@pytest.mark.parametrize(
    ("public", "message"),
    [
        ("opr1:zz", "not hexadecimal after the prefix"),
        ("ab" * 32, "a recovery public key starts with 'opr1:'"),
        ("opr2:" + "ab" * 32, "starts with 'opr1:'"),
        ("opr1:" + "ab" * 16, "must be 32 bytes, got 16"),
        ("opr1:" + "ab" * 33, "must be 32 bytes, got 33"),
        ("opr1:", "must be 32 bytes, got 0"),
    ],
)
def test_with_recipient_refuses_malformed_key(public: str, message: str) -> None:
    with pytest.raises(BackupError, match=message):
        BackupSettings().with_recipient(public, "x", NOW)


def test_with_recipient_refuses_long_label() -> None:
    with pytest.raises(BackupError, match="label longer than 64 characters"):
        BackupSettings().with_recipient(new_public(), "x" * 65, NOW)
    assert (
        BackupSettings().with_recipient(new_public(), "x" * 64, NOW).recipients[0].label == "x" * 64
    )


def test_without_recipient() -> None:
    s = (
        BackupSettings()
        .with_recipient(new_public(), "a", NOW)
        .with_recipient(new_public(), "b", NOW)
    )
    a, b = s.recipients
    left = s.without_recipient(a.id)
    assert left.recipients == (b,)
    with pytest.raises(BackupError, match="no recovery key with id 0123456789abcdef"):
        s.without_recipient("0123456789abcdef")
    with pytest.raises(BackupError, match=f"no recovery key with id {a.id}"):
        left.without_recipient(a.id)


def test_with_passphrase_derives_a_reproducible_key() -> None:
    s = BackupSettings().with_passphrase(PASSPHRASE, OPS, MEM)
    kek = s.kek()
    assert kek is not None
    assert (kek.opslimit, kek.memlimit, len(kek.salt)) == (OPS, MEM, pwhash.argon2id.SALTBYTES)
    assert kek.key == F.derive_kek(PASSPHRASE, kek.salt, OPS, MEM).key
    assert kek.key != F.derive_kek(PASSPHRASE + "x", kek.salt, OPS, MEM).key
    assert BackupSettings().kek() is None
    # a fresh salt each time
    assert BackupSettings().with_passphrase(PASSPHRASE, OPS, MEM).kek().salt != kek.salt  # type: ignore[union-attr]


def test_with_passphrase_refuses_short() -> None:
    with pytest.raises(BackupError, match="at least 12 characters"):
        BackupSettings().with_passphrase("short", OPS, MEM)


def full_settings() -> BackupSettings:
    s = BackupSettings(schedule=Schedule(enabled=False, time="04:15"), retention=Retention(3, 2, 1))
    s = s.with_recipient(new_public(), "office safe", NOW).with_recipient(
        new_public(), "bank", NOW + 1
    )
    s = s.with_passphrase(PASSPHRASE, OPS, MEM)
    from dataclasses import replace  # noqa: PLC0415

    return replace(s, include_ca=False)


def test_json_round_trip() -> None:
    s = full_settings()
    doc = json.loads(json.dumps(s.to_json()))
    back = BackupSettings.from_json(doc)
    assert back == s
    assert back.kek() == s.kek()
    assert back.schedule == Schedule(enabled=False, time="04:15")
    assert back.retention == Retention(3, 2, 1)
    assert back.include_ca is False


def test_from_json_of_empty_document_is_defaults() -> None:
    assert BackupSettings.from_json({}) == BackupSettings()


def test_public_view_never_contains_the_derived_key() -> None:
    s = full_settings()
    kek = s.kek()
    assert kek is not None
    view = s.public_view()
    text = json.dumps(view)
    assert kek.key.hex() not in text
    assert kek.key.hex()[:16] not in text
    assert kek.salt.hex() not in text
    assert view["passphrase"] is True
    assert view["ready"] is True
    assert [r["id"] for r in view["recipients"]] == [r.id for r in s.recipients]
    assert kek.key.hex() not in repr(s)


def test_public_view_ready_only_with_a_way_to_open() -> None:
    assert BackupSettings().public_view()["ready"] is False
    assert BackupSettings().public_view()["passphrase"] is False
    assert BackupSettings().with_recipient(new_public(), "", NOW).public_view()["ready"] is True


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"recipients": [{"public": "opr1:00"}]}, "is malformed"),
        ({"recipients": ["opr1:00"]}, "is malformed"),
        ({"recipients": 5}, "is malformed"),
        ({"schedule": {"time": "25:00"}}, "schedule time must be HH:MM"),
        ({"schedule": {"when": "02:30"}}, "is malformed"),
        ({"schedule": "02:30"}, "is malformed"),
        ({"retention": {"daily": -1}}, "retention daily must be a whole number"),
        ({"retention": {"daily": "7"}}, "retention daily must be a whole number"),
        ({"retention": {"hourly": 1}}, "is malformed"),
        ({"retention": {"daily": 0, "weekly": 0, "monthly": 0}}, "retention keeps nothing"),
    ],
)
def test_from_json_malformed_raises_backup_error(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(BackupError, match=message):
        BackupSettings.from_json(doc)


@pytest.mark.parametrize("doc", [[], None])
def test_from_json_of_non_object_raises_backup_error(doc: Any) -> None:
    """Valid JSON that is not an object is a malformed settings file, not a crash."""
    with pytest.raises(BackupError, match="is malformed"):
        BackupSettings.from_json(doc)


@pytest.mark.parametrize(
    "passphrase",
    ["not-an-object", {"salt": "00"}],
)
def test_from_json_refuses_malformed_passphrase(passphrase: Any) -> None:
    """A damaged passphrase entry is refused at load, not at the next backup."""
    with pytest.raises(BackupError, match="is malformed"):
        BackupSettings.from_json({"passphrase": passphrase})


# ------------------------------------------------------------------ files
def test_save_and_load(tmp_path: Path) -> None:
    s = full_settings()
    save_settings(tmp_path, s)
    path = tmp_path / SETTINGS_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / (SETTINGS_NAME + ".tmp")).exists()
    assert load_settings(tmp_path) == s
    save_settings(tmp_path, s.without_recipient(s.recipients[0].id))  # overwrite in place
    assert load_settings(tmp_path).recipients == s.recipients[1:]


def test_load_missing_is_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path) == BackupSettings()


def test_load_invalid_json_is_backup_error(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_NAME).write_text("{not json")
    with pytest.raises(BackupError, match="cannot read backup settings"):
        load_settings(tmp_path)


def test_load_malformed_document_is_backup_error(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_NAME).write_text(json.dumps({"retention": {"daily": -1}}))
    with pytest.raises(BackupError, match="retention daily must be a whole number"):
        load_settings(tmp_path)
