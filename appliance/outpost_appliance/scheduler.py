"""`outpost scheduler`: the service that starts scheduled backups.

APScheduler with a persistent SQLite job store (DATA_DIR/scheduler.sqlite), so
the next run time survives restarts; `coalesce` makes any number of runs missed
while the box was off into one catch-up run at start; `max_instances=1` means a
run never overlaps the previous one (the server refuses a second concurrent
backup as well). The schedule itself is site configuration held by the server;
this process reads it through the admin API and reconciles its stored job,
keeping the stored next-run time whenever the schedule did not change (that is
what makes catch-up work across restarts).

The job only asks the server to make the backup; the server does the work,
applies retention and records the result in the audit log and run history.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from .apiclient import AdminClient, ApiError

log = logging.getLogger("outpost.scheduler")

JOB_ID = "daily-backup"
ACTOR = "scheduler"  # who the audit log names for scheduled runs
RECONCILE_INTERVAL_S = 60.0  # how soon a schedule change on the console takes effect
JOB_TIMEOUT_S = 6 * 3600.0  # a backup still running after this is reported as stuck
POLL_S = 2.0


def make_scheduler(jobstore: Path) -> BackgroundScheduler:
    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{jobstore}")},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=UTC,
    )


def trigger_for(schedule: dict[str, Any]) -> CronTrigger:
    hh, mm = str(schedule["time"]).split(":")
    return CronTrigger(hour=int(hh), minute=int(mm), timezone=UTC)


def reconcile(sched: BackgroundScheduler, schedule: dict[str, Any], socket: str) -> str:
    """Make the stored job match the schedule; keep its next-run time when nothing changed."""
    job = sched.get_job(JOB_ID)
    if not schedule.get("enabled", True):
        if job is not None:
            sched.remove_job(JOB_ID)
            return "removed"
        return "disabled"
    trigger = trigger_for(schedule)
    if job is None:
        sched.add_job(scheduled_backup, trigger, id=JOB_ID, args=[socket], name="scheduled backup")
        return "added"
    if str(job.trigger) != str(trigger) or list(job.args) != [socket]:
        sched.modify_job(JOB_ID, args=[socket])
        sched.reschedule_job(JOB_ID, trigger=trigger)
        return "changed"
    return "unchanged"


def scheduled_backup(socket: str) -> dict[str, Any]:
    """The job: ask the server for a scheduled backup and wait for its outcome."""
    import time  # noqa: PLC0415

    client = AdminClient(Path(socket), acting_as=ACTOR)
    job = client.post("/v1/backup/run", {"scheduled": True, "label": "scheduled"})
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while job["finished"] is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"backup {job['id']} still running after {JOB_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
        job = client.get(f"/v1/backup/jobs/{job['id']}")
    if not job["ok"]:
        log.error("scheduled backup failed: %s", job["error"])
    else:
        log.info("scheduled backup written: %s", job["result"].get("name"))
    return dict(job)


def run_scheduler(client: AdminClient, jobstore: Path) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    client = AdminClient(client.socket_path, acting_as=ACTOR)
    jobstore.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from outpost_server.sdnotify import Notifier  # noqa: PLC0415

    notifier = Notifier()
    last_loop = [time.monotonic()]
    # The loop below wakes every RECONCILE_INTERVAL_S; if it has not for three intervals it is stuck.
    notifier.watchdog_thread(lambda: time.monotonic() - last_loop[0] < 3 * RECONCILE_INTERVAL_S)
    sched = make_scheduler(jobstore)
    sched.start(paused=True)  # job store open, nothing runs until the job matches the settings
    notifier.ready("backup schedule loaded")
    socket = str(client.socket_path)
    started = False
    try:
        while not stop.is_set():
            try:
                schedule = client.get("/v1/backup")["settings"]["schedule"]
                change = reconcile(sched, schedule, socket)
                if change != "unchanged":
                    job = sched.get_job(JOB_ID)
                    log.info("schedule %s; next run %s", change, job.next_run_time if job else "none")
                if not started:
                    sched.resume()  # a run missed while the box was off fires now, once
                    started = True
            except ApiError as exc:
                log.warning("server not reachable, schedule unchanged: %s", exc)
                if not started:
                    sched.resume()
                    started = True
            last_loop[0] = time.monotonic()
            stop.wait(RECONCILE_INTERVAL_S)
    finally:
        sched.shutdown(wait=False)
    return 0
