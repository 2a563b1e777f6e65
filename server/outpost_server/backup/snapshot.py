"""A consistent copy of the appliance's state, taken while the server runs.

The database is copied with SQLite's online backup API (a transactionally
consistent copy, readers and the writer keep going). The audit log is copied
up to a length the caller read at an entry boundary, so appends that race the
copy are simply not in it. Everything else in the data directory (keys, CA
material, trust store, configuration) is copied as is, except what is live or
local to this box: sockets, the scheduler's job store, the backups themselves
and restore scratch space.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

from .format import BackupError

DB_NAME = "outpost.db"
AUDIT_DIR = "audit"
AUDIT_LOG = "audit.log"
# Top-level names in the data directory that are never part of a backup.
EXCLUDED = frozenset(
    {
        "admin.sock",
        "server.lock",
        "backups",  # the local backup target lives on the data partition
        ".restore",  # restore scratch and the previous state kept after a restore
        "scheduler.sqlite",  # this box's job store: next-run times are not site state
        "scheduler.sqlite-journal",
        "backup-status.json",  # this box's run history
        f"{DB_NAME}-wal",
        f"{DB_NAME}-shm",
        f"{DB_NAME}-journal",
    }
)
CA_DIR = "tls"
COPY_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class SnapshotOptions:
    include_ca: bool = True
    audit_log_bytes: int | None = None  # None: the whole file (server stopped)


def snapshot(data_dir: Path, dest: Path, options: SnapshotOptions) -> list[Path]:
    """Copy the state under `data_dir` into the empty directory `dest`; returns the files copied."""
    dest.mkdir(mode=0o700, parents=True, exist_ok=False)
    db = data_dir / DB_NAME
    if not db.is_file():
        raise BackupError(f"no database at {db}: is this an Outpost data directory?")
    copy_database(db, dest / DB_NAME)
    for entry in sorted(data_dir.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name in EXCLUDED or name == DB_NAME or name.endswith(".tmp"):
            continue
        if name == CA_DIR and not options.include_ca:
            continue
        if name == AUDIT_DIR:
            _copy_audit(entry, dest / AUDIT_DIR, options.audit_log_bytes)
        else:
            _copy_tree(entry, dest / name)
    return sorted(p for p in dest.rglob("*") if p.is_file())


def copy_database(src: Path, dst: Path) -> None:
    """SQLite online backup: a consistent copy while another process writes."""
    try:
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
        try:
            target = sqlite3.connect(dst)
            try:
                source.backup(target, pages=1024)  # in steps: the writer is never locked out for long
                target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise BackupError(f"database copy failed: {exc}") from None


def _copy_audit(src: Path, dst: Path, log_bytes: int | None) -> None:
    dst.mkdir(mode=0o700)
    for entry in sorted(src.iterdir(), key=lambda p: p.name):
        if entry.name == AUDIT_LOG:
            _copy_prefix(entry, dst / AUDIT_LOG, log_bytes)
        else:
            _copy_tree(entry, dst / entry.name)


def _copy_prefix(src: Path, dst: Path, limit: int | None) -> None:
    remaining = limit if limit is not None else src.stat().st_size
    with src.open("rb") as fi, _create(dst) as fo:
        while remaining > 0:
            chunk = fi.read(min(COPY_CHUNK_BYTES, remaining))
            if not chunk:
                raise BackupError(f"{src} is shorter than the {limit} bytes recorded for the snapshot")
            fo.write(chunk)
            remaining -= len(chunk)


def _create(path: Path):  # type: ignore[no-untyped-def]
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _copy_tree(src: Path, dst: Path) -> None:
    st = src.lstat()
    if stat.S_ISDIR(st.st_mode):
        dst.mkdir(mode=0o700)
        for entry in sorted(src.iterdir(), key=lambda p: p.name):
            _copy_tree(entry, dst / entry.name)
    elif stat.S_ISREG(st.st_mode):
        with src.open("rb") as fi, _create(dst) as fo:
            shutil.copyfileobj(fi, fo, COPY_CHUNK_BYTES)
    # sockets, symlinks, fifos: not state; skipped


def counts(db_path: Path) -> dict[str, int]:
    """Row counts a drill compares against the manifest (tables present in every schema)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        out: dict[str, int] = {}
        for table in ("users", "nodes", "enrolment_keys", "policies"):
            try:
                out[table] = int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 - fixed names
            except sqlite3.OperationalError:
                out[table] = 0  # an older schema without this table
        return out
    finally:
        con.close()


def schema_revision(db_path: Path) -> str:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"database has no schema version: {exc}") from None
    finally:
        con.close()
    if row is None:
        raise BackupError("database has no schema version")
    return str(row[0])
