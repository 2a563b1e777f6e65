"""Restore and restore drills.

A restore never runs beside a live server: it takes the data directory's
server lock, which a running server holds. It unpacks into `.restore/new`
inside the data directory (same filesystem, so the final moves are renames;
the data directory itself may be a mount point and is never renamed), checks
the result as a drill does, migrates the database forward, and only then swaps.

The swap is journalled. `.restore/journal.json` is written (and fsynced)
before the first rename and lists the names being replaced and the names
coming in; `finish_interrupted_restore` replays it idempotently, so a kill -9
or power cut in the middle is completed (never rolled into a mix) the next
time the server or a restore starts. The replaced state is kept in
`.restore/previous` until the next restore.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..durable import fsync_dir
from .archive import OpenedBackup, Progress, _no_progress, extract, read_manifest
from .format import BackupCorrupt, BackupError, BackupSchemaError
from .snapshot import AUDIT_DIR, AUDIT_LOG, DB_NAME, EXCLUDED, counts, schema_revision

RESTORE_DIR = ".restore"
JOURNAL = "journal.json"
PENDING = "pending.json"  # a checked restore waiting for the next server start
LOCK_NAME = "server.lock"

KeyOpener = Callable[[OpenedBackup], bytes]  # manifest -> file key (recovery key or passphrase)


# ------------------------------------------------------------------ the server lock
@contextmanager
def data_dir_lock(data_dir: Path, what: str) -> Iterator[None]:
    """Exclusive lock on the data directory: held by a running server and by a restore."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"{data_dir} is in use by a running Outpost server; stop it before {what} "
                "(systemctl stop outpost-server)"
            ) from None
        yield
    finally:
        os.close(fd)


def acquire_server_lock(data_dir: Path) -> int:
    """For the server: hold the lock for the process lifetime; returns the fd to keep open."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BackupError(f"{data_dir} is already in use by another Outpost server or a restore") from None
    return fd


# ------------------------------------------------------------------ schema
def known_revisions() -> list[str]:
    """Alembic revisions this software knows, oldest first."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - only restores need it

    from ..db.engine import MIGRATIONS_DIR  # noqa: PLC0415

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def check_schema(schema: str, software: str) -> None:
    known = known_revisions()
    if schema not in known:
        raise BackupSchemaError(
            f"the backup's database schema is {schema} (made by Outpost {software}); this software "
            f"knows schemas up to {known[-1]}: restore it with Outpost {software} or newer"
        )


# ------------------------------------------------------------------ checks
@dataclass(slots=True)
class DrillReport:
    backup: str
    backup_id: str
    created: int
    schema_from: str
    schema_to: str
    files: int
    counts: dict[str, int]
    audit_entries: int
    audit_checkpoints: int
    checks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "backup": self.backup,
            "backup_id": self.backup_id,
            "created": self.created,
            "schema_from": self.schema_from,
            "schema_to": self.schema_to,
            "files": self.files,
            "counts": self.counts,
            "audit_entries": self.audit_entries,
            "audit_checkpoints": self.audit_checkpoints,
            "checks": self.checks,
        }


def check_restored(root: Path, ob: OpenedBackup, report: DrillReport) -> None:
    """Integrity, schema migration, counts and the audit chain of an unpacked backup."""
    import sqlite3  # noqa: PLC0415

    db = root / DB_NAME
    con = sqlite3.connect(db)
    try:
        result = con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()
    if result != "ok":
        raise BackupCorrupt(f"restored database fails its integrity check: {result}")
    report.checks.append("database integrity_check: ok")
    got = counts(db)
    for table, n in ob.manifest.counts.items():
        if got.get(table) != n:
            raise BackupCorrupt(f"restored {table}: {got.get(table)} rows, the manifest says {n}")
    report.checks.append("row counts match the manifest: " + ", ".join(f"{k}={v}" for k, v in got.items()))
    report.counts = got

    from ..db.engine import open_database, sqlite_url  # noqa: PLC0415

    open_database(sqlite_url(db)).dispose()  # migrates forward to this software's head
    report.schema_to = schema_revision(db)
    if report.schema_to != report.schema_from:
        report.checks.append(f"database migrated from schema {report.schema_from} to {report.schema_to}")
    if counts(db) != got:
        raise BackupError("migration changed row counts; restore stopped")

    audit = root / AUDIT_DIR
    if (audit / AUDIT_LOG).exists():
        from ..audit.log import AuditLog  # noqa: PLC0415

        key = Ed25519PrivateKey.from_private_bytes((audit / "audit-key.ed25519").read_bytes())
        appliance = (root / "appliance-id").read_text().strip()
        log = AuditLog(audit / AUDIT_LOG, appliance_id=appliance, audit_key=key)
        try:
            v = log.verify()
        finally:
            log.close()
        report.audit_entries = v.entries
        report.audit_checkpoints = v.checkpoints
        report.checks.append(f"audit chain intact: {v.entries} entries, {v.checkpoints} signed checkpoints")
    else:
        report.checks.append("no audit log in this backup")


def _unpack_and_check(
    backup: Path, opener: KeyOpener, dest: Path, progress: Progress, expected_signer: bytes | None
) -> tuple[OpenedBackup, DrillReport]:
    ob = read_manifest(backup, expected_signer)
    m = ob.manifest
    check_schema(m.schema, m.software)
    file_key = opener(ob)
    extract(ob, file_key, dest, progress)
    report = DrillReport(
        backup=backup.name, backup_id=m.id, created=m.created, schema_from=m.schema, schema_to=m.schema,
        files=len(m.files), counts={}, audit_entries=0, audit_checkpoints=0,
    )  # fmt: skip
    report.checks.append(f"{len(m.files)} files decrypted and match the signed manifest")
    progress("checking", 0, 1)
    check_restored(dest, ob, report)
    return ob, report


def drill(
    backup: Path,
    opener: KeyOpener,
    scratch_parent: Path | None = None,
    progress: Progress = _no_progress,
    expected_signer: bytes | None = None,
) -> DrillReport:
    """Restore into a scratch directory, check everything, remove it; the live state is untouched."""
    with tempfile.TemporaryDirectory(prefix="outpost-drill-", dir=scratch_parent) as tmp:
        _, report = _unpack_and_check(backup, opener, Path(tmp) / "state", progress, expected_signer)
        return report


# ------------------------------------------------------------------ restore
def restore(
    backup: Path,
    opener: KeyOpener,
    data_dir: Path,
    progress: Progress = _no_progress,
    failpoint: Callable[[str], None] = lambda _n: None,
    expected_signer: bytes | None = None,
) -> DrillReport:
    """Replace the state in `data_dir` with the backup's; the server must be stopped."""
    with data_dir_lock(data_dir, "restoring"):
        finish_interrupted_restore(data_dir)
        work = data_dir / RESTORE_DIR
        work.mkdir(mode=0o700, exist_ok=True)
        new = work / "new"
        if new.exists():
            shutil.rmtree(new)  # scratch of a restore that died before its journal: never applied
        _, report = _unpack_and_check(backup, opener, new, progress, expected_signer)
        failpoint("restore.before-journal")
        _swap_in(data_dir, work, failpoint)
        previous = work / "previous"
        report.checks.append(f"state swapped in; the replaced state is kept in {previous}")
        return report


def prepare(
    backup: Path,
    opener: KeyOpener,
    data_dir: Path,
    progress: Progress = _no_progress,
    expected_signer: bytes | None = None,
    actor: str = "",
) -> DrillReport:
    """While the server runs: unpack and check a backup into `.restore/new` and mark it pending.

    Nothing live is touched. The next server start swaps it in (`complete_pending`) before
    it opens anything, so the console can restore with one restart and no shell.
    """
    work = data_dir / RESTORE_DIR
    work.mkdir(mode=0o700, exist_ok=True)
    (work / PENDING).unlink(missing_ok=True)
    new = work / "new"
    if new.exists():
        shutil.rmtree(new)
    try:
        _, report = _unpack_and_check(backup, opener, new, progress, expected_signer)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    tmp = work / (PENDING + ".tmp")
    tmp.write_text(json.dumps({"backup": backup.name, "actor": actor, "report": report.to_json()}))
    os.rename(tmp, work / PENDING)
    fsync_dir(work)
    return report


def pending(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / RESTORE_DIR / PENDING
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def cancel_pending(data_dir: Path) -> bool:
    work = data_dir / RESTORE_DIR
    had = (work / PENDING).exists()
    (work / PENDING).unlink(missing_ok=True)
    shutil.rmtree(work / "new", ignore_errors=True)
    return had


def complete_pending(data_dir: Path) -> dict[str, Any] | None:
    """At server start, with the data-directory lock held: swap in a prepared restore."""
    work = data_dir / RESTORE_DIR
    doc = pending(data_dir)
    if doc is None or not (work / "new").is_dir():
        (work / PENDING).unlink(missing_ok=True)
        return None
    _swap_in(data_dir, work, lambda _n: None)
    (work / PENDING).unlink(missing_ok=True)
    fsync_dir(work)
    return doc


def _swap_in(data_dir: Path, work: Path, failpoint: Callable[[str], None]) -> None:
    new, previous = work / "new", work / "previous"
    if previous.exists():
        shutil.rmtree(previous)
    previous.mkdir(mode=0o700)
    replaced = sorted(
        p.name for p in data_dir.iterdir() if p.name not in EXCLUDED and p.name not in (RESTORE_DIR, LOCK_NAME)
    )
    replaced += [n for n in (f"{DB_NAME}-wal", f"{DB_NAME}-shm") if (data_dir / n).exists()]
    incoming = sorted(p.name for p in new.iterdir())
    _write_journal(work, {"replaced": replaced, "incoming": incoming})
    failpoint("restore.after-journal")
    _replay(data_dir, work, failpoint)


def _write_journal(work: Path, doc: dict[str, list[str]]) -> None:
    tmp = work / (JOURNAL + ".tmp")
    with tmp.open("w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, work / JOURNAL)
    fsync_dir(work)


def _replay(data_dir: Path, work: Path, failpoint: Callable[[str], None] = lambda _n: None) -> None:
    """Idempotent: move every replaced name out, then every incoming name in, then drop the journal."""
    doc = json.loads((work / JOURNAL).read_text())
    new, previous = work / "new", work / "previous"
    previous.mkdir(mode=0o700, exist_ok=True)
    incoming = set(doc["incoming"])
    for name in doc["replaced"]:
        if name in incoming and not (new / name).exists():
            continue  # the incoming copy is already in place; this name is done
        src = data_dir / name
        if src.exists() or src.is_symlink():
            os.rename(src, previous / name)
        failpoint("restore.swapping")
    for name in doc["incoming"]:
        if (new / name).exists():
            os.rename(new / name, data_dir / name)
        failpoint("restore.swapping")
    fsync_dir(data_dir)
    (work / JOURNAL).unlink()
    fsync_dir(work)
    shutil.rmtree(new, ignore_errors=True)


def finish_interrupted_restore(data_dir: Path) -> bool:
    """Complete a restore that was cut off after its journal; True if there was one."""
    work = data_dir / RESTORE_DIR
    if not (work / JOURNAL).exists():
        return False
    _replay(data_dir, work)
    return True
