"""The backup schedule: APScheduler's persistent job store, catch-up, no overlap, retention.

Time is controlled through the job store, not by sleeping: a run "missed while
the box was off" is a stored next-run time days in the past, exactly what the
job store holds after a power-off. The scheduled job talks to a real server.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

from outpost_appliance.apiclient import AdminClient
from outpost_appliance.scheduler import JOB_ID, make_scheduler, reconcile
from outpost_server.backup import format as fmt
from outpost_server.backup.archive import BackupIdentity, list_backups, write_backup

from .conftest import Running

DAILY = {"enabled": True, "time": "02:30"}


def test_schedule_is_stored_and_survives_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "scheduler.sqlite"
    s1 = make_scheduler(store)
    s1.start(paused=True)
    assert reconcile(s1, DAILY, "/run/x.sock") == "added"
    first = s1.get_job(JOB_ID).next_run_time
    assert (first.hour, first.minute) == (2, 30) and first > datetime.now(UTC)
    assert reconcile(s1, DAILY, "/run/x.sock") == "unchanged"
    s1.shutdown(wait=False)

    s2 = make_scheduler(store)  # a new process on the same job store
    s2.start(paused=True)
    try:
        assert s2.get_job(JOB_ID).next_run_time == first
        assert reconcile(s2, DAILY, "/run/x.sock") == "unchanged"
        assert s2.get_job(JOB_ID).next_run_time == first  # kept, so a missed run is still owed
        assert reconcile(s2, {"enabled": True, "time": "23:05"}, "/run/x.sock") == "changed"
        nxt = s2.get_job(JOB_ID).next_run_time
        assert (nxt.hour, nxt.minute) == (23, 5)
        assert reconcile(s2, {"enabled": False, "time": "23:05"}, "/run/x.sock") == "removed"
        assert s2.get_job(JOB_ID) is None
    finally:
        s2.shutdown(wait=False)


def _power_off(store: Path, how_long: timedelta) -> None:
    """Rewrite the stored job as the store holds it after the box was off for `how_long`.

    Done on the job store directly, with no scheduler thread running: a live
    scheduler would process the overdue job the moment it is stored.
    """
    idle = make_scheduler(store)  # never started: only lends its timezone to the job
    js = SQLAlchemyJobStore(url=f"sqlite:///{store}")
    js.start(idle, "default")
    job = js.lookup_job(JOB_ID)
    assert job is not None
    job._modify(next_run_time=datetime.now(UTC) - how_long)
    js.update_job(job)
    js.shutdown()


async def _wait_runs(outpost: Running, n: int, timeout_s: float = 60) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [r for r in outpost.server.backups.runs if r["scheduled"]]
        if len(runs) >= n and outpost.server.backups._running is None:
            return runs
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {n} scheduled runs, have {outpost.server.backups.runs}")


async def test_runs_missed_while_off_are_caught_up_once(outpost: Running, tmp_path: Path) -> None:
    _, public = fmt.new_recovery_key()
    outpost.server.backups.add_recipient("test", fmt.format_public(public), "")
    socket = str(outpost.server.config.admin_socket)
    store = tmp_path / "scheduler.sqlite"
    s = make_scheduler(store)
    s.start(paused=True)
    reconcile(s, DAILY, socket)
    s.shutdown(wait=True)
    _power_off(store, timedelta(days=3, hours=1))

    s = make_scheduler(store)  # boot: the scheduler starts with three runs owed
    s.start(paused=True)
    assert reconcile(s, DAILY, socket) == "unchanged"
    s.resume()
    try:
        runs = await _wait_runs(outpost, 1)
        await asyncio.sleep(1.0)  # room for a wrong second or third catch-up run to show up
        runs = [r for r in outpost.server.backups.runs if r["scheduled"]]
        assert len(runs) == 1 and runs[0]["ok"] is True, runs
        assert runs[0]["actor"] == "scheduler"
        nxt = s.get_job(JOB_ID).next_run_time
        assert datetime.now(UTC) < nxt <= datetime.now(UTC) + timedelta(days=1)
    finally:
        await asyncio.to_thread(s.shutdown, True)  # the job thread sees its backup finish first
    audit = outpost.server.audit_log.entries()
    created = [e for e in audit if e.action == "backup.created"]
    assert len(created) == 1 and created[0].actor == "scheduler"


_release = threading.Event()
_active: list[int] = []
_peak: list[int] = [0]


def _slow_job() -> None:
    _active.append(1)
    _peak[0] = max(_peak[0], len(_active))
    _release.wait(30)
    _active.pop()


def test_a_run_never_overlaps_the_previous_one(tmp_path: Path) -> None:
    s = make_scheduler(tmp_path / "scheduler.sqlite")
    skipped = threading.Event()
    s.add_listener(lambda _e: skipped.set(), EVENT_JOB_MAX_INSTANCES)
    s.start()
    try:
        _release.clear()
        s.add_job(_slow_job, "interval", seconds=3600, id="slow", next_run_time=datetime.now(UTC))
        deadline = time.monotonic() + 20
        while not _active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _active, "the first run did not start"
        s.modify_job("slow", next_run_time=datetime.now(UTC))  # due again while still running
        assert skipped.wait(20), "the overlapping run was not refused"
        assert _peak[0] == 1
    finally:
        _release.set()
        s.shutdown(wait=True)


async def test_scheduled_backup_applies_retention(outpost: Running, tmp_path: Path) -> None:
    svc = outpost.server.backups
    _, public = fmt.new_recovery_key()
    svc.add_recipient("test", fmt.format_public(public), "")
    client = AdminClient(outpost.server.config.admin_socket)
    await asyncio.to_thread(
        client.put, "/v1/backup/schedule", {"retention": {"daily": 3, "weekly": 0, "monthly": 0}}
    )
    # Ten days of earlier daily backups by this appliance, and one by another appliance.
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    ident = BackupIdentity(svc.appliance_id, "site", "0", "0002", outpost.server.audit_key, {})
    now = int(time.time())
    made = [write_backup(src, svc.local_dir, ident, [public], None, now - d * 86400)[0].name for d in range(1, 11)]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    foreign = BackupIdentity("other", "other", "0", "0002", Ed25519PrivateKey.generate(), {})
    stranger = write_backup(src, svc.local_dir, foreign, [public], None, now - 30 * 86400)[0].name

    job = await asyncio.to_thread(client.post, "/v1/backup/run", {"scheduled": True})
    runs = await _wait_runs(outpost, 1)
    assert runs[-1]["ok"] is True, runs
    done = svc.job(job["id"])
    kept = sorted(p.name for p, _ in list_backups(svc.local_dir))
    # today's new backup + the newest two earlier days; the foreign backup is never touched
    assert sorted(done["result"]["pruned"]) == sorted(made[2:])
    assert kept == sorted([done["result"]["name"], made[0], made[1], stranger])
