"""Assembling the server: state, control, relay, listeners, admin API.

`OutpostServer.run()` is what `outpost serve` calls. It owns the event loop's
long-lived tasks and shuts them down in order on SIGTERM/SIGINT: listeners
first (clients start reconnecting elsewhere or wait), then map sessions, then
the database. Everything a restart needs is in the data directory.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import secrets
import time
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
from dataclasses import asdict
from html import escape
from pathlib import Path
from collections.abc import Callable
from typing import Any, NoReturn

import uvicorn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import __version__
from .api.app import create_app
from .audit import AuditLog
from .backup.restore import acquire_server_lock, complete_pending, finish_interrupted_restore
from .backup.service import BackupService
from .api.context import ApiContext
from .bundles.desk import MediaDesk
from .bundles.service import BundleService
from .ca import OfflineCA
from .ca.local import ca_directory, ensure_tls_events
from .ca.service import ServerCertificates
from .site import SiteService
from .config import ServerConfig
from .errors import OutpostError
from .control.fanout import Fanout
from .control.mapper import DerpSettings
from .control.policystate import PolicyState
from .control.register import Registrar
from .control.service import ControlService, ControlSettings
from .db.engine import open_database, sqlite_url
from .durable import write_atomic
from .gcstats import Collector
from .keys import NodePublic
from .net.derp import serve_derp
from .net.derpmesh import MeshLink, parse_mesh_url
from .net.meshadmission import AdmissionFeed
from .relay import meshauth
from .proto.derp import ServerInfo
from .heap import tune_allocator
from .net.listener import PublicHTTP, serve_tls, tls_context
from .net.stun import start_stun
from .proto.stun import StunCounters
from .relay import Relay
from .sdnotify import Notifier
from .state.model import NodeChange, NodeId
from .state.bundles import BundleLedger
from .state.store import Store, utcnow

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 4096  # a server restart brings every client back at once
CA_CHECK_INTERVAL_S = 3600.0  # leaves renew weeks before expiry; hourly is plenty
# Graceful shutdown tells DERP clients (Health + Restarting frames): come back in
# RECONNECT ms and keep trying for TRY_FOR ms; NOTICE is how long we wait for the frames to go out.
MESH_KEYS_MAX_AGE_S = 10.0  # the admitted-key answer is rebuilt at least this often (expiries)
TRUST_PROVISION_FILE = "trust-store.json"
RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: not a crash, but systemd's Restart=on-failure brings us back
RESTART_DELAY_S = 0.5  # read once at start while no trust store exists
RESTART_RECONNECT_MS = 2000
RESTART_TRY_FOR_MS = 60000
RESTART_NOTICE_S = 0.2


def utcnow_aware() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the appliance owns signals."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def,override]
        yield


def _unix_socket(path: Path) -> socket.socket:
    """A listening unix socket only its owner can connect to."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


def _audit_value(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str | bytes):
        return v
    if isinstance(v, dict):
        return {str(k): _audit_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [_audit_value(x) for x in v]
    return str(v)


def exit_now(code: int) -> NoReturn:
    """End the process after a completed `OutpostServer.stop()`: flush logs
    and standard streams, then exit without the interpreter's teardown (it
    frees every object one by one: 17 s after a stop at 10k nodes, which a
    restart's clients wait through). Nothing durable is left open by then."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


class OutpostServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config.validate()
        self._stop = asyncio.Event()
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._stun_transport: asyncio.BaseTransport | None = None
        self._mesh_keys_cache: tuple[int, float, str, bytes] | None = None
        self.exit_code = 0

    # ---------------------------------------------------------------- build
    async def start(self) -> None:
        cfg = self.config
        tune_allocator()  # heap.py: big temporaries must not leave holes between connections
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(cfg.data_dir, 0o700)
        # One server per data directory, and never beside a restore (which takes the same lock).
        self._lock_fd = acquire_server_lock(cfg.data_dir)
        restored = finish_interrupted_restore(cfg.data_dir)  # a restore cut off mid-swap is completed
        staged_restore = complete_pending(cfg.data_dir)  # one prepared from the console: swap it in now
        engine = open_database(cfg.database_url or sqlite_url(cfg.data_dir / "outpost.db"))
        self.engine = engine
        self.store = store = Store(engine)
        noise_key = store.server_key("noise")
        legacy_key = store.server_key("legacy")
        derp_key = store.server_key("derp")

        public_host = cfg.public_host
        listen_names = [cfg.listen[0], *([cfg.tls_listen[0]] if cfg.tls_listen else [])]
        tls_names = sorted({public_host, *listen_names, *cfg.addresses})
        self.audit_log = self._open_audit(cfg.data_dir / "audit")
        self.record("server", "server.start", {"version": __version__, "listen": list(map(str, cfg.listen))})
        if restored:
            self.record("server", "backup.restore.completed", {"note": "finished a restore interrupted mid-swap"})
        if staged_restore is not None:
            rep = staged_restore.get("report") or {}
            self.record(
                str(staged_restore.get("actor") or "server"), "backup.restored",
                {"backup": staged_restore.get("backup"), "backup_id": rep.get("backup_id"),
                 "schema_from": rep.get("schema_from"), "schema_to": rep.get("schema_to"), "counts": rep.get("counts")},
            )  # fmt: skip
        self.backups = BackupService(
            cfg.data_dir,
            site=cfg.site_name,
            appliance_id=self.appliance_id,
            signing_key=self.audit_key,
            record=self.record,
            database_is_sqlite=engine.dialect.name == "sqlite",
        )
        self.tls, ca_events = ensure_tls_events(cfg.data_dir / "tls", cfg.site_name, tls_names, utcnow_aware())
        self._record_ca(ca_events)

        derp = DerpSettings(
            region_id=cfg.derp_region_id,
            region_code=cfg.site_name[:16] or "outpost",
            region_name=f"Outpost {cfg.site_name}",
            host=public_host,
            derp_port=cfg.tls_listen[1] if cfg.tls_listen else 443,
            stun_port=cfg.stun_listen[1] if cfg.stun_listen else -1,
            can_port80=cfg.listen[1] == 80,
            peers=tuple(
                (*parse_mesh_url(u), cfg.stun_listen[1] if cfg.stun_listen else -1) for u in cfg.mesh_with
            ),
        )
        self.registrar = Registrar(store, cfg.effective_server_url)
        self.policy = PolicyState(store)
        self.fanout = Fanout(store, self.policy)
        self.fanout.on_offline.append(self._schedule_ephemeral_gc)
        self.control = ControlService(
            store,
            self.registrar,
            self.fanout,
            ControlSettings(base_domain=cfg.base_domain, derp=derp),
            self.policy,
        )

        self.relay = relay = Relay(
            derp_key,
            admission=self._admit,
            mesh_key=cfg.mesh_key,
            server_info=ServerInfo(
                token_bucket_bytes_per_second=cfg.derp_rate_bytes_per_s,
                token_bucket_bytes_burst=cfg.derp_rate_burst_bytes,
            ),
        )
        store.subscribe(self._relay_on_change)
        self.stun_counters = StunCounters()

        async def derp_upgrade(
            r: asyncio.StreamReader, w: asyncio.StreamWriter, initial: bytes, fast: bool
        ) -> None:
            await serve_derp(relay, r, w, initial=initial, fast_start=fast)

        self.public = PublicHTTP(
            noise_key=noise_key,
            legacy_key=legacy_key,
            control_handler=self.control.handle,
            derp_upgrade=derp_upgrade,
            pending_page=self._pending_page,
            crl=self._crl,
            mesh_keys=self._mesh_keys if cfg.mesh_key is not None else None,
        )
        host, port = cfg.listen
        self._servers.append(
            await asyncio.start_server(
                self.public.serve_connection, host, port, reuse_address=True, backlog=LISTEN_BACKLOG
            )
        )
        self._tls_names = tls_names
        self._ssl_ctx = None
        if cfg.tls_listen:
            ctx = self._ssl_ctx = tls_context(str(self.tls.leaf_chain), str(self.tls.leaf_key))
            th, tp = cfg.tls_listen
            self._servers.append(
                await asyncio.start_server(
                    functools.partial(serve_tls, ctx, self.public.counters, self.public.serve_connection),
                    th, tp, reuse_address=True, backlog=LISTEN_BACKLOG,
                )  # fmt: skip
            )
        self.certs = ServerCertificates(
            cfg.data_dir / "tls", cfg.site_name, tls_names, self.tls, self._ssl_ctx,
            clock=utcnow_aware,
        )
        if cfg.stun_listen:
            sh, sp = cfg.stun_listen
            self._stun_transport = await start_stun(sh, sp, self.stun_counters)

        self.bundles = BundleService(
            store, BundleLedger(store), self.appliance_id, self.policy, self.record,
            signing_key=self.audit_key, ca=self.certs,
        )  # fmt: skip
        self._provision_trust(cfg.data_dir / TRUST_PROVISION_FILE)
        api_ctx = ApiContext(
            store=store,
            registrar=self.registrar,
            fanout=self.fanout,
            control=self.control,
            server_url=cfg.effective_server_url,
            listener_counters=self.public.counters,
            relay_stats=self._relay_stats,
            audit_sink=self.record,
            audit_chain=self.audit_log,
            backups=self.backups,
            request_restart=self.request_restart,
            bundles=self.bundles,
            media=MediaDesk(),
            root_pem=lambda: (cfg.data_dir / "tls" / "root.pem").read_bytes(),
            certs=self.certs,
            data_dir=cfg.data_dir,
            site=SiteService(
                cfg.data_dir,
                running_site_name=cfg.site_name,
                running_server_url=cfg.effective_server_url,
                listen_names=listen_names,
                from_command_line=cfg.site_from_command_line,
                certs=self.certs,
                has_users=lambda: bool(store.users()),
            ),
        )
        sock = _unix_socket(cfg.admin_socket)
        uv = _EmbeddedUvicorn(
            uvicorn.Config(create_app(api_ctx), log_level="warning", lifespan="off", access_log=False)
        )
        self._uvicorn = uv
        self._tasks.append(asyncio.create_task(uv.serve(sockets=[sock])))
        self._tasks.append(asyncio.create_task(self._ca_maintenance()))
        # Start-up is done: freeze what it built and keep full collections
        # (pauses every session feels) rare and measured (gcstats.py).
        self._collector = Collector()
        self._collector.start()
        self._tasks.append(asyncio.create_task(self._collector.run(), name="gc"))
        self.mesh_links = []
        self.admission_feed = None
        if cfg.mesh_key is not None and cfg.admission_from:
            roots = [str(cfg.data_dir / "tls" / "root.pem"), *map(str, cfg.mesh_ca_files)]
            feed = self.admission_feed = AdmissionFeed(relay, cfg.mesh_key, cfg.admission_from, lambda: roots)
            relay.set_admission(lambda k: self._admit(k) or feed.admits(k))
            self._tasks.append(asyncio.create_task(feed.run(), name="admission-feed"))
        if cfg.mesh_key is not None:
            tls_dir = cfg.data_dir / "tls"
            extra = [str(p) for p in cfg.mesh_ca_files]
            for url in cfg.mesh_with:
                link = MeshLink(relay, derp_key, cfg.mesh_key, url, lambda: [str(tls_dir / "root.pem"), *extra])
                self.mesh_links.append(link)
                self._tasks.append(asyncio.create_task(link.run(), name=f"mesh-{url}"))
        log.info(
            "outpost serving %s (tls %s, stun %s), admin socket %s",
            cfg.listen, cfg.tls_listen, cfg.stun_listen, cfg.admin_socket,
        )

    def _provision_trust(self, path: Path) -> None:
        """First boot: a trust-store.json put on the data partition by whoever set the box up
        (physical presence, SPEC.md §7) becomes the first trust store; never replaces one."""
        if not path.exists() or self.bundles.trust() is not None:
            return
        try:
            self.bundles.init_trust(path.read_bytes(), "provisioning")
        except (OutpostError, OSError, ValueError) as exc:
            log.error("trust store in %s not installed: %s", path, exc)
            return
        path.rename(path.with_name(path.name + ".installed"))
        log.info("first trust store installed from %s", path)

    # ------------------------------------------------------------ relay glue
    def _mesh_keys(self, head: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
        """GET /derp/mesh/keys for a relay-only peer: the registered, unexpired node keys."""
        proof = (head.header(meshauth.NONCE_HEADER), head.header(meshauth.MAC_HEADER))
        if not meshauth.check(self.config.mesh_key, *proof):
            return 403, b'{"error":"mesh key proof missing or wrong"}', []
        now_m = time.monotonic()
        cached = self._mesh_keys_cache
        if cached is None or cached[0] != self.store.node_changes or now_m - cached[1] > MESH_KEYS_MAX_AGE_S:
            now = utcnow()
            keys = [n.node_key for n in self.store.nodes().values() if not n.is_expired(now)]
            etag, body = meshauth.encode(keys)
            cached = self._mesh_keys_cache = (self.store.node_changes, now_m, etag, body)
        _, _, etag, body = cached
        if (head.header("if-none-match") or "").strip('"') == etag:
            return 304, b"", [("ETag", f'"{etag}"')]
        return 200, body, [("ETag", f'"{etag}"')]

    def _admit(self, key: NodePublic) -> bool:
        """Only node keys currently registered and not expired may use the relay."""
        node = self.store.node_by_key(key)
        return node is not None and not node.is_expired(utcnow())

    def _relay_on_change(self, change: NodeChange) -> None:
        before = change.before
        if before is None:
            return
        now_node = self.store.nodes().get(change.node_id)
        if now_node is None or now_node.node_key != before.node_key or now_node.is_expired(utcnow()):
            self.relay.disconnect_key(before.node_key)

    # ---------------------------------------------------------------- audit
    def _open_audit(self, directory: Path) -> AuditLog:
        """The appliance's audit chain, with its signing key and appliance id."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        log_path = directory / "audit.log"
        # Nothing was ever signed or addressed with the identity below while
        # the log is empty: only then may a torn file be replaced.
        unused = not log_path.exists() or log_path.stat().st_size == 0
        raw = _identity_file(
            directory / "audit-key.ed25519",
            lambda b: len(b) == AUDIT_KEY_BYTES,
            f"an Ed25519 private key ({AUDIT_KEY_BYTES} bytes)",
            lambda: Ed25519PrivateKey.generate().private_bytes_raw(),
            unused,
        )
        key = self.audit_key = Ed25519PrivateKey.from_private_bytes(raw)
        self.appliance_id = _identity_file(
            self.config.data_dir / "appliance-id",
            lambda b: APPLIANCE_ID_RE.fullmatch(b.decode("ascii", "replace").strip()) is not None,
            "an appliance id",
            lambda: (secrets.token_hex(8) + "\n").encode(),
            unused,
        ).decode().strip()
        log_ = AuditLog(log_path, appliance_id=self.appliance_id, audit_key=key)
        if log_.recovered_tail_bytes:
            log_.append(
                "server",
                "audit.recovered",
                {"discarded_bytes": log_.recovered_tail_bytes},
                int(time.time()),
            )
        return log_

    def record(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """Append one audit entry; values are reduced to the types the chain stores."""
        self.audit_log.append(actor, action, _audit_value(details), int(time.time()))

    def _record_ca(self, events: list[Any]) -> None:
        for e in events:
            log.info("CA: %s %s serial %s", e.action, e.subject, e.serial)
            self.record(e.actor, e.action, {"subject": e.subject, "serial": str(e.serial), "detail": e.detail})

    def _crl(self) -> bytes | None:
        ca_dir = ca_directory(self.config.data_dir / "tls")
        if not OfflineCA.exists(ca_dir):
            return None
        return OfflineCA.open(ca_dir).crl_bytes("der")

    async def _ca_maintenance(self) -> None:
        """Renew the TLS leaf well before expiry; new handshakes use the new one,
        existing connections keep theirs (no client notices). `self.certs` owns
        the reload, shared with an admin's "renew now" (POST /v1/certs/renew)."""
        while True:
            await asyncio.sleep(CA_CHECK_INTERVAL_S)
            try:
                self._record_ca(await self.certs.maintain())
            except Exception:
                log.exception("CA maintenance failed; will retry")

    def _schedule_ephemeral_gc(self, node_id: NodeId) -> None:
        node = self.store.nodes().get(node_id)
        if node is not None and node.ephemeral:
            loop = asyncio.get_running_loop()
            loop.call_later(self.config.ephemeral_grace_s, self._reap_ephemeral, node_id)

    def _reap_ephemeral(self, node_id: NodeId) -> None:
        """Delete an ephemeral node still offline after its grace period."""
        node = self.store.nodes().get(node_id)
        if node is None or not node.ephemeral or self.fanout.is_online(node_id):
            return
        self.store.delete_node(node_id)
        log.info("ephemeral node %s removed after %ss offline", node.given_name, self.config.ephemeral_grace_s)

    def _relay_stats(self) -> dict[str, Any]:
        return {"derp": asdict(self.relay.stats()), "stun": asdict(self.stun_counters.snapshot())}

    def _pending_page(self, auth_id: str) -> str | None:
        p = self.registrar.pending.get(auth_id)
        if p is None:
            return None
        return (
            f"Outpost: the device {escape(p.hostname)} is waiting for approval.\n\n"
            f"Ask the site administrator to approve it on the console, or run:\n\n"
            f"    outpost nodes approve {escape(auth_id)} --user <name>\n"
        )

    # ------------------------------------------------------------ lifecycle
    def request_stop(self) -> None:
        self._stop.set()

    def request_restart(self) -> None:
        """Stop with RESTART_EXIT_CODE: the service manager starts the server again (the unit
        restarts on failure), which completes a restore prepared from the console."""
        self.exit_code = RESTART_EXIT_CODE
        asyncio.get_running_loop().call_later(RESTART_DELAY_S, self.request_stop)  # let the reply go out

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        print("outpost: ready", flush=True)
        # systemd (Type=notify): ready only now that every listener is bound;
        # the watchdog pings stop if this loop wedges, and systemd restarts us.
        notifier = Notifier()
        cfg = self.config
        host, port = cfg.listen
        notifier.ready(f"serving {cfg.effective_server_url} (control {host}:{port})")
        self._tasks.append(asyncio.create_task(notifier.watchdog_loop()))
        await self._stop.wait()
        notifier.stopping()
        await self.stop()

    async def stop(self) -> None:
        relay = getattr(self, "relay", None)
        if relay is not None and relay.announce_restart(RESTART_RECONNECT_MS, RESTART_TRY_FOR_MS, "server restarting"):
            await asyncio.sleep(RESTART_NOTICE_S)  # let the writers send Health + Restarting
        for link in getattr(self, "mesh_links", []):
            link.stop()
        audit = getattr(self, "audit_log", None)
        if audit is not None:
            with contextlib.suppress(Exception):
                self.record("server", "server.stop", {})
                audit.checkpoint(int(time.time()))
                audit.close()
        for s in self._servers:
            s.close()
        if self._stun_transport is not None:
            self._stun_transport.close()
        fanout = getattr(self, "fanout", None)  # stop() also cleans up a failed start
        if fanout is not None:
            fanout.close_all("server shutting down")
        public = getattr(self, "public", None)
        if public is not None:
            public.close_all()
        uv = getattr(self, "_uvicorn", None)
        if uv is not None:
            uv.should_exit = True
        await asyncio.sleep(0)
        for t in self._tasks[1:]:  # background loops: nothing to finish
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 5)
        for s in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 2)
        if uv is not None:
            with contextlib.suppress(FileNotFoundError):
                self.config.admin_socket.unlink()
        collector = getattr(self, "_collector", None)
        if collector is not None:
            collector.stop()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.dispose()
        lock_fd = getattr(self, "_lock_fd", None)
        if lock_fd is not None:
            os.close(lock_fd)  # releases the data-directory lock
            self._lock_fd = None


AUDIT_KEY_BYTES = 32
# Made as 16 hex digits; sites (and the image test) may have set their own.
APPLIANCE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _identity_file(
    path: Path,
    valid: Callable[[bytes], bool],
    what: str,
    make: Callable[[], bytes],
    replaceable: bool,
) -> bytes:
    """Read (or make, durably, on first start) one of the appliance's identity
    files. A file a power cut tore before it reached the disk (empty or cut
    short: earlier versions did not fsync it) is replaced while nothing has
    used it yet; after that it is an error that names the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = None
    if raw is not None and not valid(raw):
        if not replaceable:
            raise OutpostError(
                f"{path}: holds {len(raw)} bytes, not {what}, and the audit log already "
                "has entries made with it; restore this file from a backup (docs/backups.md)"
            )
        log.warning("%s: %d bytes, not %s (torn by a power cut?): making a new one", path, len(raw), what)
        raw = None
    if raw is None:
        raw = make()
        write_atomic(path, raw, 0o600)
    return raw
