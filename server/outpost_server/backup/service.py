"""The server's backup service: settings, one backup job at a time, retention, history.

This is the asyncio adapter around the file-level code in archive.py and
snapshot.py. The heavy work runs in a worker thread; everything that must
happen on the server's single writer thread (audit entries, reading the audit
log's length at an entry boundary) happens on the event loop before and after.
Restores are not here: they run with the server stopped (restore.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import __version__
from ..errors import Conflict, NotFound
from .archive import (
    BackupIdentity,
    list_backups,
    remove_stale_temporaries,
    verify_file,
    write_backup,
)
from .failpoint import failpoint
from .format import BackupError
from .restore import known_revisions
from .retention import Retention, to_prune
from .settings import (
    BackupSettings,
    Schedule,
    load_settings,
    load_status,
    save_settings,
    save_status,
)
from .snapshot import (
    AUDIT_DIR,
    AUDIT_LOG,
    DB_NAME,
    SnapshotOptions,
    counts,
    schema_revision,
    snapshot,
)

log = logging.getLogger("outpost.backup")

LOCAL_TARGET = "backups"  # under the data directory, i.e. on the data partition


@dataclass(slots=True)
class Job:
    id: str
    actor: str
    label: str
    target: str
    scheduled: bool
    started: float
    stage: str = "starting"
    done: int = 0
    total: int = 0
    finished: float | None = None
    ok: bool | None = None
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "actor": self.actor,
            "label": self.label,
            "target": self.target,
            "scheduled": self.scheduled,
            "started": self.started,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "finished": self.finished,
            "ok": self.ok,
            "error": self.error,
            "result": self.result,
        }


class BackupService:
    def __init__(
        self,
        data_dir: Path,
        *,
        site: str,
        appliance_id: str,
        signing_key: Ed25519PrivateKey,
        record: Callable[[str, str, dict[str, Any]], None],
        audit_log_path: Path | None = None,
        database_is_sqlite: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.site = site
        self.appliance_id = appliance_id
        self._key = signing_key
        self._record = record
        self._audit_log_path = audit_log_path or data_dir / AUDIT_DIR / AUDIT_LOG
        self._sqlite = database_is_sqlite
        self.settings = load_settings(data_dir)
        self.runs = load_status(data_dir)
        self.jobs: dict[str, Job] = {}
        self._running: Job | None = None
        remove_stale_temporaries(self.local_dir)
        for stale in self.local_dir.glob(".staging-*") if self.local_dir.is_dir() else ():
            shutil.rmtree(stale, ignore_errors=True)  # snapshot of a run a crash cut off

    @property
    def local_dir(self) -> Path:
        return self.data_dir / LOCAL_TARGET

    @property
    def signer(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    # ---------------------------------------------------------------- settings
    def _save(self, actor: str, action: str, new: BackupSettings, **details: Any) -> dict[str, Any]:
        save_settings(self.data_dir, new)
        self.settings = new
        self._record(actor, action, details)
        return new.public_view()

    def add_recipient(self, actor: str, public: str, label: str) -> dict[str, Any]:
        new = self.settings.with_recipient(public, label, int(time.time()))
        added = new.recipients[-1]
        return self._save(actor, "backup.recipient.add", new, key_id=added.id, label=label)

    def remove_recipient(self, actor: str, kid: str) -> dict[str, Any]:
        new = self.settings.without_recipient(kid)
        if not new.recipients and new.passphrase is None:
            raise BackupError("this is the last way to open backups; add another recovery key first")
        return self._save(actor, "backup.recipient.remove", new, key_id=kid)

    def set_passphrase(self, actor: str, passphrase: str, **kdf: int) -> dict[str, Any]:
        return self._save(actor, "backup.passphrase.set", self.settings.with_passphrase(passphrase, **kdf))

    def clear_passphrase(self, actor: str) -> dict[str, Any]:
        if self.settings.passphrase is None:
            raise BackupError("no passphrase is set")
        if not self.settings.recipients:
            raise BackupError("the passphrase is the only way to open backups; add a recovery key first")
        return self._save(actor, "backup.passphrase.clear", replace(self.settings, passphrase=None))

    def set_schedule(self, actor: str, doc: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        try:
            schedule = Schedule(
                enabled=bool(doc.get("enabled", s.schedule.enabled)), time=str(doc.get("time", s.schedule.time))
            )
            ret = doc.get("retention") or {}
            retention = Retention(
                daily=int(ret.get("daily", s.retention.daily)),
                weekly=int(ret.get("weekly", s.retention.weekly)),
                monthly=int(ret.get("monthly", s.retention.monthly)),
            )
        except ValueError as exc:
            raise BackupError(str(exc)) from None
        include_ca = bool(doc.get("include_ca", s.include_ca))
        new = replace(s, schedule=schedule, retention=retention, include_ca=include_ca)
        return self._save(
            actor, "backup.schedule.set", new, time=schedule.time, enabled=schedule.enabled,
            daily=retention.daily, weekly=retention.weekly, monthly=retention.monthly, include_ca=include_ca,
        )  # fmt: skip

    # ---------------------------------------------------------------- listing
    def _target_dir(self, target: str) -> Path:
        if target in ("", "local"):
            return self.local_dir
        p = Path(target)
        if not p.is_absolute() or not p.is_dir():
            raise BackupError(f"backup target {target!r} must be 'local' or an existing absolute directory")
        return p

    def list(self, target: str = "local") -> list[dict[str, Any]]:
        out = []
        for path, r in list_backups(self._target_dir(target)):
            if isinstance(r, BackupError):
                out.append({"name": path.name, "ok": False, "error": str(r), "size": path.stat().st_size})
            else:
                own = r.manifest.signer == self.signer
                out.append({"name": path.name, "ok": True, "size": r.size, "own": own, **r.manifest.summary()})
        return out

    def verify(self, name: str, target: str = "local") -> dict[str, Any]:
        path = self._named(name, target)
        ob = verify_file(path)
        own = ob.manifest.signer == self.signer
        return {"name": name, "ok": True, "own": own, **ob.manifest.summary()}

    def _named(self, name: str, target: str) -> Path:
        if "/" in name or name.startswith("."):
            raise BackupError(f"bad backup name {name!r}")
        path = self._target_dir(target) / name
        if not path.is_file():
            raise NotFound(f"no backup named {name}")
        return path

    def status(self) -> dict[str, Any]:
        return {
            "settings": self.settings.public_view(),
            "running": self._running.view() if self._running else None,
            "runs": self.runs[-10:],
            "local_dir": str(self.local_dir),
        }

    def brief(self) -> dict[str, Any]:
        """For the dashboard: is anyone able to open backups, the last run, is one running."""
        sched = self.settings.schedule
        return {
            "ready": bool(self.settings.recipients) or self.settings.passphrase is not None,
            "last": self.runs[-1] if self.runs else None,
            "last_ok": next((r for r in reversed(self.runs) if r.get("ok")), None),
            "running": self._running is not None,
            "schedule": f"daily {sched.time} UTC" if sched.enabled else "off",
        }

    # ---------------------------------------------------------------- running
    def job(self, job_id: str) -> dict[str, Any]:
        j = self.jobs.get(job_id)
        if j is None:
            raise NotFound(f"no backup job {job_id}")
        return j.view()

    def start(self, actor: str, *, label: str = "", target: str = "local", scheduled: bool = False) -> dict[str, Any]:
        """Start a backup in the background; its progress is `job(id)`."""
        if self._running is not None:
            raise Conflict(f"backup {self._running.id} is already running (started by {self._running.actor})")
        if not self._sqlite:
            raise BackupError("backups of a PostgreSQL database are not supported yet (use pg_dump)")
        if not self.settings.recipients and self.settings.passphrase is None:
            raise BackupError(
                "no recovery key configured: create one offline with `outpost backup keygen` and add "
                "its public key with `outpost backup recipients add`"
            )
        dest = self._target_dir(target)
        job = Job(secrets.token_hex(6), actor, label[:64], target or "local", scheduled, time.time())
        self._running = job
        self.jobs = {k: v for k, v in self.jobs.items() if v.finished is None or time.time() - v.finished < 3600}
        self.jobs[job.id] = job
        # Read the audit log's length here, on the writer's thread: it is at an entry boundary.
        audit_bytes = self._audit_log_path.stat().st_size if self._audit_log_path.exists() else None
        asyncio.get_running_loop().create_task(self._run(job, dest, audit_bytes))
        return job.view()

    async def _run(self, job: Job, dest: Path, audit_bytes: int | None) -> None:
        try:
            path, summary = await asyncio.to_thread(self._make, job, dest, audit_bytes)
            job.result = {"name": path.name, "path": str(path), **summary}
            pruned: list[str] = []
            if job.scheduled and dest == self.local_dir:
                pruned = await asyncio.to_thread(self._prune, dest, False)
                job.result["pruned"] = pruned
            job.ok = True
            self._record(
                job.actor, "backup.created",
                {"name": path.name, "id": summary["id"], "bytes": summary["body_bytes"], "target": job.target,
                 "scheduled": job.scheduled, "pruned": pruned},
            )  # fmt: skip
        except Exception as exc:  # every failure is reported, none kills the server
            job.ok = False
            job.error = str(exc) if isinstance(exc, BackupError | OSError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, BackupError | OSError):
                log.exception("backup %s failed", job.id)
            self._record(job.actor, "backup.failed", {"job": job.id, "error": job.error, "target": job.target})
        finally:
            job.finished = time.time()
            job.stage = "done" if job.ok else "failed"
            self._running = None
            self.runs.append(
                {"job": job.id, "started": job.started, "finished": job.finished, "ok": job.ok,
                 "error": job.error, "actor": job.actor, "scheduled": job.scheduled, "target": job.target,
                 "name": job.result.get("name"), "bytes": job.result.get("body_bytes")}
            )  # fmt: skip
            save_status(self.data_dir, self.runs)

    def _progress(self, job: Job) -> Callable[[str, int, int], None]:
        def update(stage: str, done: int, total: int) -> None:
            job.stage, job.done, job.total = stage, done, total

        return update

    def _make(self, job: Job, dest: Path, audit_bytes: int | None) -> tuple[Path, dict[str, Any]]:
        staging = self.local_dir / f".staging-{job.id}"
        self.local_dir.mkdir(mode=0o700, exist_ok=True)
        try:
            job.stage = "snapshot"
            snapshot(self.data_dir, staging, SnapshotOptions(self.settings.include_ca, audit_bytes))
            failpoint("backup.after-snapshot")
            db = staging / DB_NAME
            identity = BackupIdentity(
                appliance=self.appliance_id,
                site=self.site,
                software=__version__,
                schema=schema_revision(db),
                signing_key=self._key,
                counts=counts(db),
            )
            path, manifest = write_backup(
                staging, dest, identity, self.settings.recipient_keys(), self.settings.kek(), int(time.time()),
                label=job.label, progress=self._progress(job), failpoint=failpoint,
            )  # fmt: skip
            return path, manifest.summary()
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # ---------------------------------------------------------------- restore (staged)
    def prepare_restore(self, actor: str, name: str, recovery_key: str | None, passphrase: str | None) -> dict[str, Any]:
        """Decrypt and check a local backup into the restore area; the next start swaps it in.

        The operator hands over the recovery key (or passphrase) for this one call; it is
        used in memory and never stored.
        """
        from . import format as fmt  # noqa: PLC0415
        from .restore import prepare  # noqa: PLC0415

        path = self._named(name, "local")
        if recovery_key:
            private = fmt.parse_recovery_key_file(recovery_key)
            opener = lambda ob: fmt.open_with_recovery_key(ob.manifest, private)  # noqa: E731
        elif passphrase:
            opener = lambda ob: fmt.open_with_passphrase(ob.manifest, passphrase)  # noqa: E731
        else:
            raise BackupError("a restore needs the recovery key file's text or the passphrase")
        report = prepare(path, opener, self.data_dir, actor=actor)
        return {"backup": name, "actor": actor, "report": report.to_json()}

    def pending_restore(self) -> dict[str, Any] | None:
        from .restore import pending  # noqa: PLC0415

        return pending(self.data_dir)

    def cancel_restore(self) -> bool:
        from .restore import cancel_pending  # noqa: PLC0415

        return cancel_pending(self.data_dir)

    # ---------------------------------------------------------------- retention
    def _prune(self, directory: Path, dry_run: bool) -> list[str]:
        own = [
            (p.name, r.manifest.created)
            for p, r in list_backups(directory)
            if not isinstance(r, BackupError) and r.manifest.signer == self.signer
        ]  # unreadable files and other appliances' backups are never deleted automatically
        names = to_prune(own, self.settings.retention, int(time.time()))
        if not dry_run:
            for n in names:
                (directory / n).unlink(missing_ok=True)
        return names

    async def prune(self, actor: str, dry_run: bool) -> list[str]:
        names = await asyncio.to_thread(self._prune, self.local_dir, dry_run)
        if not dry_run:
            self._record(actor, "backup.pruned", {"names": names})
        return names


def schema_head() -> str:
    return known_revisions()[-1]
