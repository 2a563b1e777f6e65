"""Backups against a real server: API, restore onto a fresh appliance, schema checks, crashes.

The crash tests run the server (or the restore command) as a child process and
let it SIGKILL itself at named points (OUTPOST_FAILPOINT), or kill it at random
moments, then check that nothing that looks like a valid backup was left and
that a restore is never left half-applied.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from outpost_appliance.apiclient import AdminClient, ApiError
from outpost_server.backup import format as fmt
from outpost_server.backup.archive import BackupIdentity, list_backups, read_manifest, verify_file, write_backup
from outpost_server.backup.restore import drill, finish_interrupted_restore, known_revisions, restore
from outpost_server.backup.snapshot import counts
from outpost_server.db.engine import MIGRATIONS_DIR
from outpost_server.errors import Conflict

from .conftest import Running, free_port, start_server

OUTPOST = [sys.executable, "-m", "outpost_appliance.cli"]


def recovery(tmp: Path) -> tuple[bytes, str]:
    private, public = fmt.new_recovery_key()
    return private, fmt.format_public(public)


def opener_for(private: bytes):  # type: ignore[no-untyped-def]
    return lambda ob: fmt.open_with_recovery_key(ob.manifest, private)


async def call(client: AdminClient, method: str, path: str, body: object = None) -> object:
    fn = getattr(client, method)
    args = () if body is None and method not in ("post", "put") else (body or {},)
    return await asyncio.to_thread(fn, path, *args)


async def wait_job(client: AdminClient, job: dict) -> dict:  # type: ignore[type-arg]
    for _ in range(600):
        if job["finished"] is not None:
            return job
        await asyncio.sleep(0.1)
        job = await call(client, "get", f"/v1/backup/jobs/{job['id']}")  # type: ignore[assignment]
    raise AssertionError(f"backup job did not finish: {job}")


async def make_backup(client: AdminClient, **body: object) -> dict:  # type: ignore[type-arg]
    job = await call(client, "post", "/v1/backup/run", dict(body))
    return await wait_job(client, job)  # type: ignore[arg-type]


# ---------------------------------------------------------------- API
async def test_backup_is_refused_until_someone_can_open_it(outpost: Running, tmp_path: Path) -> None:
    client = AdminClient(outpost.server.config.admin_socket)
    with pytest.raises(ApiError, match="no recovery key configured"):
        await call(client, "post", "/v1/backup/run", {})
    with pytest.raises(ApiError, match="starts with 'opr1:'"):
        await call(client, "post", "/v1/backup/recipients", {"public": "ssh-ed25519 AAAA"})
    _, public = recovery(tmp_path)
    await call(client, "post", "/v1/backup/recipients", {"public": public, "label": "safe A"})
    with pytest.raises(ApiError, match="already configured"):
        await call(client, "post", "/v1/backup/recipients", {"public": public})
    kid = fmt.key_id(fmt.parse_public(public))
    with pytest.raises(ApiError, match="last way to open backups"):
        await call(client, "delete", f"/v1/backup/recipients/{kid}")
    with pytest.raises(ApiError, match="HH:MM"):
        await call(client, "put", "/v1/backup/schedule", {"time": "25:00"})
    with pytest.raises(ApiError, match="keeps nothing"):
        await call(client, "put", "/v1/backup/schedule", {"retention": {"daily": 0, "weekly": 0, "monthly": 0}})
    st = await call(client, "get", "/v1/backup")
    assert st["settings"]["schedule"] == {"enabled": True, "time": "02:30"}  # type: ignore[index]
    assert st["settings"]["ready"] is True  # type: ignore[index]
    audit = await call(client, "get", "/v1/audit?limit=20")
    assert "backup.recipient.add" in [e["action"] for e in audit["entries"]]  # type: ignore[index]


async def test_second_backup_while_one_runs_is_refused(outpost: Running, tmp_path: Path) -> None:
    _, public = recovery(tmp_path)
    svc = outpost.server.backups
    svc.add_recipient("test", public, "")
    first = svc.start("test")
    with pytest.raises(Conflict, match="already running"):
        svc.start("test")
    client = AdminClient(outpost.server.config.admin_socket)
    done = await wait_job(client, first)
    assert done["ok"] is True, done


async def test_backup_restore_onto_a_fresh_appliance(tmp_path: Path) -> None:
    private, public = recovery(tmp_path)
    source = await start_server(tmp_path / "site")
    client = AdminClient(source.server.config.admin_socket)
    try:
        await call(client, "post", "/v1/users", {"name": "erin"})
        await call(client, "post", "/v1/enrolment-keys", {"user": 1, "reusable": True})
        await call(client, "post", "/v1/policy", {"text": '{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}'})
        await call(client, "post", "/v1/backup/recipients", {"public": public})
        job = await make_backup(client, label="before the flood")
        assert job["ok"] is True, job
        listed = await call(client, "get", "/v1/backup/list")
        assert [b["name"] for b in listed] == [job["result"]["name"]]  # type: ignore[index]
        assert listed[0]["own"] is True and listed[0]["label"] == "before the flood"  # type: ignore[index]
        v = await call(client, "post", f"/v1/backup/verify/{job['result']['name']}", {})
        assert v["ok"] is True  # type: ignore[index]
        appliance, server_key = source.server.appliance_id, source.server_key
        users = {u.name for u in source.store.users().values()}
        keys = len(source.store.enrolment_keys())  # type: ignore[attr-defined]
        policy = source.store.current_policy()
    finally:
        await source.server.stop()
    backup = Path(job["result"]["path"])
    assert (backup.stat().st_mode & 0o777) == 0o600

    fresh = tmp_path / "replacement"  # a new box: nothing in common but the backup file
    report = restore(backup, opener_for(private), fresh)
    assert report.counts["users"] == len(users) and report.counts["policies"] == 1
    assert any("audit chain intact" in c for c in report.checks)
    restored = await start_server(fresh)
    try:
        assert restored.server.appliance_id == appliance
        assert restored.server_key == server_key  # clients trust the same Noise key: no re-enrolment
        assert {u.name for u in restored.store.users().values()} == users
        assert len(restored.store.enrolment_keys()) == keys  # type: ignore[attr-defined]
        cur = restored.store.current_policy()
        assert cur is not None and policy is not None and cur.text == policy.text
        verdict = await call(AdminClient(restored.server.config.admin_socket), "post", "/v1/audit/verify", {})
        assert verdict["ok"] is True  # type: ignore[index]
    finally:
        await restored.server.stop()


async def test_restore_refuses_while_the_server_runs(outpost: Running, tmp_path: Path) -> None:
    private, public = recovery(tmp_path)
    outpost.server.backups.add_recipient("test", public, "")
    job = await wait_job(AdminClient(outpost.server.config.admin_socket), outpost.server.backups.start("test"))
    before = sorted(p.name for p in outpost.server.config.data_dir.iterdir())
    with pytest.raises(fmt.BackupError, match="in use by a running Outpost server"):
        restore(Path(job["result"]["path"]), opener_for(private), outpost.server.config.data_dir)
    assert sorted(p.name for p in outpost.server.config.data_dir.iterdir()) == before


# ---------------------------------------------------------------- schema versions
def _state_at(tmp: Path, revision: str) -> Path:
    """A minimal data directory whose database is at an older `revision`."""
    state = tmp / f"state-{revision}"
    state.mkdir()
    engine = create_engine(f"sqlite:///{state / 'outpost.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()
    con = sqlite3.connect(state / "outpost.db")
    con.execute("INSERT INTO users (name, display_name, created) VALUES ('old', 'old', '2024-01-01 00:00:00')")
    con.commit()
    con.close()
    (state / "appliance-id").write_text("0123456789abcdef\n")
    return state


def _backup_of(state: Path, out: Path, schema: str, public: str) -> Path:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ident = BackupIdentity("0123456789abcdef", "site", "0.0.1", schema, Ed25519PrivateKey.generate(), counts(state / "outpost.db"))
    path, _ = write_backup(state, out, ident, [fmt.parse_public(public)], None, int(time.time()))
    return path


def test_backup_from_an_older_schema_is_migrated_forward(tmp_path: Path) -> None:
    private, public = recovery(tmp_path)
    oldest = known_revisions()[0]
    backup = _backup_of(_state_at(tmp_path, oldest), tmp_path / "out", oldest, public)
    target = tmp_path / "data"
    report = restore(backup, opener_for(private), target)
    assert report.schema_from == oldest and report.schema_to == known_revisions()[-1]
    assert any(f"migrated from schema {oldest}" in c for c in report.checks)
    con = sqlite3.connect(target / "outpost.db")
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == known_revisions()[-1]
    assert con.execute("SELECT name FROM users").fetchall() == [("old",)]
    con.close()


def test_backup_from_a_newer_schema_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    private, public = recovery(tmp_path)
    state = _state_at(tmp_path, known_revisions()[-1])
    con = sqlite3.connect(state / "outpost.db")
    con.execute("UPDATE alembic_version SET version_num = '0099'")
    con.commit()
    con.close()
    backup = _backup_of(state, tmp_path / "out", "0099", public)
    target = tmp_path / "data"
    target.mkdir()
    (target / "marker").write_text("untouched")
    with pytest.raises(fmt.BackupSchemaError, match=r"schema is 0099 \(made by Outpost 0.0.1\).*Outpost 0.0.1 or newer"):
        restore(backup, opener_for(private), target)
    assert (target / "marker").read_text() == "untouched"
    assert not (target / "outpost.db").exists()
    with pytest.raises(fmt.BackupSchemaError):
        drill(backup, opener_for(private))


def test_wrong_recovery_key_restores_nothing(tmp_path: Path) -> None:
    _, public = recovery(tmp_path)
    other, _ = recovery(tmp_path)
    backup = _backup_of(_state_at(tmp_path, known_revisions()[-1]), tmp_path / "out", known_revisions()[-1], public)
    target = tmp_path / "data"
    with pytest.raises(fmt.BackupKeyError, match="not sealed to recovery key"):
        restore(backup, opener_for(other), target)
    assert not (target / "outpost.db").exists()


# ---------------------------------------------------------------- crashes
class Child:
    """`outpost serve` in a child process, optionally with a failpoint armed."""

    def __init__(self, data_dir: Path, failpoint: str | None = None) -> None:
        env = {**os.environ, "OUTPOST_DATA_DIR": str(data_dir)}
        env.pop("OUTPOST_FAILPOINT", None)
        if failpoint:
            env["OUTPOST_FAILPOINT"] = failpoint
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [*OUTPOST, "serve", "--listen", f"127.0.0.1:{free_port()}", "--no-tls", "--no-stun"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "outpost: ready" in line:
                break
        else:
            raise AssertionError(f"server did not start (exit {self.proc.wait()})")
        self.client = AdminClient(data_dir / "admin.sock")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def _valid_backups(directory: Path) -> list[Path]:
    good = []
    for path, r in list_backups(directory):
        assert not isinstance(r, Exception), f"{path.name} is listed but unreadable: {r}"
        verify_file(path)  # anything listed must verify completely
        good.append(path)
    return good


@pytest.mark.parametrize(
    "point", ["backup.after-snapshot", "backup.archiving", "backup.before-fsync", "backup.before-rename"]
)
def test_kill_during_backup_leaves_nothing_that_looks_valid(tmp_path: Path, point: str) -> None:
    data = tmp_path / "data"
    _, public = recovery(tmp_path)
    child = Child(data, failpoint=point)
    child.client.post("/v1/backup/recipients", {"public": public})
    child.client.post("/v1/backup/run", {})
    assert child.proc.wait(60) == -signal.SIGKILL
    assert _valid_backups(data / "backups") == []
    child = Child(data)  # the next start cleans up what the crash left
    try:
        assert [p.name for p in (data / "backups").iterdir()] == []
        job = child.client.post("/v1/backup/run", {})
        while job["finished"] is None:
            time.sleep(0.1)
            job = child.client.get(f"/v1/backup/jobs/{job['id']}")
        assert job["ok"] is True, job
        assert len(_valid_backups(data / "backups")) == 1
    finally:
        child.stop()


def test_kill_at_random_moments_during_backups(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _, public = recovery(tmp_path)
    rng = random.Random(7)
    child = Child(data)
    child.client.post("/v1/backup/recipients", {"public": public})
    child.stop()
    (data / "bulk").mkdir()
    (data / "bulk" / "blob").write_bytes(os.urandom(24 * 1024 * 1024))  # long enough to be hit mid-write
    for _ in range(4):
        child = Child(data)
        child.client.post("/v1/backup/run", {})
        time.sleep(rng.uniform(0.0, 1.5))
        child.proc.kill()
        child.proc.wait(30)
        _valid_backups(data / "backups")  # complete backups verify; partial ones are invisible
    child = Child(data)  # the next start removes what the kills left behind
    try:
        leftovers = [p.name for p in (data / "backups").iterdir() if p.name.startswith(".")]
        assert leftovers == [], leftovers
    finally:
        child.stop()


async def _two_states(tmp_path: Path, public: str) -> tuple[Path, str, Path, str]:
    """A backup of appliance A, and a different appliance B to restore it onto."""
    a = await start_server(tmp_path / "a")
    try:
        a.server.backups.add_recipient("test", public, "")
        a.store.create_user("alice")
        job = await wait_job(AdminClient(a.server.config.admin_socket), a.server.backups.start("test"))
        a_id = a.server.appliance_id
    finally:
        await a.server.stop()
    b = await start_server(tmp_path / "b")
    try:
        b.store.create_user("bob")
        b_id = b.server.appliance_id
    finally:
        await b.server.stop()
    return Path(job["result"]["path"]), a_id, tmp_path / "b", b_id


def _users(data: Path) -> list[str]:
    con = sqlite3.connect(data / "outpost.db")
    try:
        return [r[0] for r in con.execute("SELECT name FROM users ORDER BY name")]
    finally:
        con.close()


@pytest.mark.parametrize("point", ["restore.before-journal", "restore.after-journal", "restore.swapping"])
async def test_kill_during_restore_never_leaves_a_mix(tmp_path: Path, point: str) -> None:
    private, public = recovery(tmp_path)
    backup, a_id, b_dir, b_id = await _two_states(tmp_path, public)
    key_file = tmp_path / "rk"
    key_file.write_text(fmt.recovery_key_file(private))
    proc = subprocess.run(
        [*OUTPOST, "--data-dir", str(b_dir), "backup", "restore", str(backup), "--recovery-key", str(key_file), "--yes"],
        env={**os.environ, "OUTPOST_FAILPOINT": point}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # Whatever the kill left, the next server start sees either all of B or all of A.
    server = await start_server(b_dir)
    try:
        got = (server.server.appliance_id, sorted(u.name for u in server.store.users().values()))
    finally:
        await server.server.stop()
    if point == "restore.before-journal":
        assert got == (b_id, ["bob"])
    else:
        assert got == (a_id, ["alice"])
    assert not (b_dir / ".restore" / "journal.json").exists()
    assert finish_interrupted_restore(b_dir) is False


def test_restore_cli_asks_before_replacing_and_records_itself(tmp_path: Path) -> None:
    private, public = recovery(tmp_path)
    backup = _backup_of(_state_at(tmp_path, known_revisions()[-1]), tmp_path / "out", known_revisions()[-1], public)
    key_file = tmp_path / "rk"
    key_file.write_text(fmt.recovery_key_file(private))
    target = tmp_path / "data"
    proc = subprocess.run(
        [*OUTPOST, "--data-dir", str(target), "backup", "restore", str(backup), "--recovery-key", str(key_file)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "without --yes" in proc.stderr
    assert not (target / "outpost.db").exists()
    proc = subprocess.run(
        [*OUTPOST, "--data-dir", str(target), "backup", "restore", str(backup), "--recovery-key", str(key_file), "--yes"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "database integrity_check: ok" in proc.stdout
    assert _users(target) == ["old"]
    assert read_manifest(backup).manifest.counts["users"] == 1


async def test_passphrase_mode_backup_opens_with_the_passphrase_file(outpost: Running, tmp_path: Path) -> None:
    from nacl import pwhash

    client = AdminClient(outpost.server.config.admin_socket)
    with pytest.raises(ApiError, match="at least 12 characters"):
        await call(client, "put", "/v1/backup/passphrase", {"passphrase": "short"})
    phrase = "correct horse battery staple"
    cheap = {"opslimit": pwhash.argon2id.OPSLIMIT_MIN, "memlimit": pwhash.argon2id.MEMLIMIT_MIN}
    await call(client, "put", "/v1/backup/passphrase", {"passphrase": phrase, **cheap})
    st = await call(client, "get", "/v1/backup")
    assert st["settings"]["passphrase"] is True and "key" not in str(st["settings"])  # type: ignore[index]
    job = await make_backup(client)
    assert job["ok"] is True, job
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text(phrase + "\n")
    bad.write_text("not the passphrase at all\n")
    run = [*OUTPOST, "backup", "drill", job["result"]["path"]]
    ok = subprocess.run([*run, "--passphrase-file", str(good)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "PASSED" in ok.stdout, ok.stderr
    refused = subprocess.run([*run, "--passphrase-file", str(bad)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "wrong passphrase" in refused.stderr
    with pytest.raises(ApiError, match="only way to open backups"):
        await call(client, "delete", "/v1/backup/passphrase")


@pytest.mark.parametrize("fstype", ["ext4", "vfat"])
async def test_export_to_a_usb_stick_reads_back_and_verifies(outpost: Running, tmp_path: Path, fstype: str) -> None:
    import shutil

    mkfs = {"ext4": ["mkfs.ext4", "-q", "-F", "-L", "BACKUP"], "vfat": ["mkfs.vfat", "-n", "BACKUP"]}[fstype]
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("losetup", "blkid", mkfs[0], "mcopy")):
        pytest.skip("needs root, losetup, blkid, mtools and mkfs tools for a loop-backed stick")
    _, public = recovery(tmp_path)
    client = AdminClient(outpost.server.config.admin_socket)
    await call(client, "post", "/v1/backup/recipients", {"public": public})
    job = await make_backup(client)
    image = tmp_path / "stick.img"
    with image.open("wb") as f:
        f.truncate(32 * 1024 * 1024)
    subprocess.run([*mkfs, str(image)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True).stdout.strip()
    try:
        proc = await asyncio.to_thread(
            subprocess.run,
            [*OUTPOST, "--data-dir", str(outpost.server.config.data_dir), "backup", "export", job["result"]["name"], "--to", dev],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "read back and verified" in proc.stdout
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
    # What is on the stick is the backup, byte for byte (read independently with mtools / debugfs).
    name = job["result"]["name"]
    if fstype == "vfat":
        got = subprocess.run(["mcopy", "-i", str(image), f"::/{name}", "-"], capture_output=True, check=True,
                             env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout  # fmt: skip
    else:
        got = subprocess.run(["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True, check=True).stdout
    assert got == Path(job["result"]["path"]).read_bytes()
    audit = await call(client, "get", "/v1/audit?limit=5")
    exported = [e for e in audit["entries"] if e["action"] == "backup.exported"]  # type: ignore[index]
    assert exported and exported[-1]["details"]["verified"] is True


def test_export_refuses_a_damaged_backup(tmp_path: Path) -> None:
    _, public = recovery(tmp_path)
    backup = _backup_of(_state_at(tmp_path, known_revisions()[-1]), tmp_path / "out", known_revisions()[-1], public)
    data = bytearray(backup.read_bytes())
    data[100] ^= 1
    backup.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    dest.mkdir()
    proc = subprocess.run([*OUTPOST, "--data-dir", str(tmp_path / "nodata"), "backup", "export", str(backup), "--to", str(dest)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "body digest" in proc.stderr
    assert list(dest.iterdir()) == []


async def test_restore_prepared_while_running_is_applied_by_the_next_start(tmp_path: Path) -> None:
    """The console's path: no shell, no stopped server; one restart completes it."""
    private, public = recovery(tmp_path)
    data = tmp_path / "data"
    running = await start_server(data)
    client = AdminClient(running.server.config.admin_socket)
    try:
        await call(client, "post", "/v1/users", {"name": "kept"})
        await call(client, "post", "/v1/backup/recipients", {"public": public})
        job = await make_backup(client)
        await call(client, "post", "/v1/users", {"name": "after-the-backup"})
        name = job["result"]["name"]
        with pytest.raises(ApiError, match="not sealed to recovery key"):
            await call(client, "post", "/v1/backup/restore",
                       {"name": name, "recovery_key": fmt.recovery_key_file(fmt.new_recovery_key()[0])})  # fmt: skip
        assert (await call(client, "get", "/v1/backup/restore"))["pending"] is None  # type: ignore[index]
        doc = await call(client, "post", "/v1/backup/restore", {"name": name, "recovery_key": fmt.recovery_key_file(private)})
        assert doc["report"]["counts"]["users"] == 1 and doc["restarting"] is False  # type: ignore[index]
        assert (await call(client, "get", "/v1/backup/restore"))["pending"]["backup"] == name  # type: ignore[index]
        assert {u.name for u in running.store.users().values()} == {"kept", "after-the-backup"}  # live state untouched
    finally:
        await running.server.stop()
    again = await start_server(data)
    try:
        assert {u.name for u in again.store.users().values()} == {"kept"}
        restored = [e for e in again.server.audit_log.entries() if e.action == "backup.restored"]
        assert restored and restored[-1].actor.startswith("cli:")
        assert (await call(AdminClient(again.server.config.admin_socket), "get", "/v1/backup/restore"))["pending"] is None  # type: ignore[index]
    finally:
        await again.server.stop()


async def test_prepared_restore_can_be_cancelled_and_restart_is_requested_on_demand(outpost: Running, tmp_path: Path) -> None:
    private, public = recovery(tmp_path)
    client = AdminClient(outpost.server.config.admin_socket)
    await call(client, "post", "/v1/backup/recipients", {"public": public})
    job = await make_backup(client)
    await call(client, "post", "/v1/backup/restore", {"name": job["result"]["name"], "recovery_key": fmt.recovery_key_file(private)})
    assert (await call(client, "delete", "/v1/backup/restore"))["cancelled"] is True  # type: ignore[index]
    assert not (outpost.server.config.data_dir / ".restore" / "new").exists()
    doc = await call(client, "post", "/v1/backup/restore",
                     {"name": job["result"]["name"], "recovery_key": fmt.recovery_key_file(private), "restart": True})  # fmt: skip
    assert doc["restarting"] is True  # type: ignore[index]
    await asyncio.sleep(1.0)
    assert outpost.server.exit_code == 75 and outpost.server._stop.is_set()
