"""`outpost`: the appliance's command line.

`outpost serve` runs the server; `outpost up` runs it and prints the line a
client needs to join. Every other subcommand is a client of the admin API on
the unix socket and never touches the database or protocol code directly.

Destructive commands ask for confirmation on a terminal (`--yes` skips it).
Every listing has `--json` for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from .apiclient import AdminClient, ApiError

DEFAULT_DATA_DIR = "./data"


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("OUTPOST_DATA_DIR") or DEFAULT_DATA_DIR).resolve()


def _socket(args: argparse.Namespace) -> Path:
    if args.admin_socket:
        return Path(args.admin_socket)
    if os.environ.get("OUTPOST_ADMIN_SOCKET"):
        return Path(os.environ["OUTPOST_ADMIN_SOCKET"])
    return _data_dir(args) / "admin.sock"


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(_fmt(r.get(k))) for k, _ in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(cols)]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(cols, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    return str(v)


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _confirm(args: argparse.Namespace, what: str) -> bool:
    if args.yes or not sys.stdin.isatty():
        return True
    answer = input(f"{what} This cannot be undone. Type 'yes' to continue: ")
    return answer.strip().lower() == "yes"


# ------------------------------------------------------------------- serve / up
def _server_config(args: argparse.Namespace) -> Any:
    from outpost_server.config import ServerConfig, parse_hostport, read_mesh_key

    from outpost_server.site import resolve_start

    mesh_with = tuple(u.strip() for item in (args.mesh_with or []) for u in item.split(",") if u.strip())
    data_dir = _data_dir(args)
    # Options the command line leaves out come from DATA_DIR/site.json (the first-boot wizard).
    site = resolve_start(
        data_dir,
        site_name=args.site_name,
        server_url=args.server_url,
        default_server_url=args.default_server_url or "",
    )
    return ServerConfig(
        mesh_key=read_mesh_key(Path(args.mesh_key_file)) if args.mesh_key_file else None,
        mesh_with=mesh_with,
        mesh_ca_files=tuple(Path(f) for f in (args.mesh_ca or [])),
        admission_from=args.admission_from or "",
        derp_rate_bytes_per_s=args.derp_rate_limit,
        derp_rate_burst_bytes=args.derp_rate_burst,
        data_dir=data_dir,
        listen=parse_hostport(args.listen, "--listen"),
        tls_listen=None if args.no_tls else parse_hostport(args.tls_listen, "--tls-listen"),
        stun_listen=None if args.no_stun else parse_hostport(args.stun_listen, "--stun-listen"),
        server_url=site.server_url,
        base_domain=args.base_domain,
        site_name=site.site_name,
        addresses=site.addresses,
        site_from_command_line=site.from_command_line,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from outpost_server.app import OutpostServer, exit_now
    from outpost_server.errors import InvalidInput, OutpostError
    from outpost_server.logs import setup_logging

    setup_logging(args.log_level)
    try:
        cfg = _server_config(args)
    except InvalidInput as exc:  # a bad option or a bad DATA_DIR/site.json: say which
        print(f"outpost serve: {exc}", file=sys.stderr)
        return 2
    server = OutpostServer(cfg)
    try:
        asyncio.run(server.run())
    except OutpostError as exc:  # state on disk it will not start from: say which
        print(f"outpost serve: {exc}", file=sys.stderr)
        return 2
    # 75: restart requested (e.g. to complete a restore). stop() closed the
    # database and the audit log; leave without tearing the heap down object
    # by object, which at 10k nodes took longer than the stop itself.
    exit_now(server.exit_code)


def cmd_up(args: argparse.Namespace) -> int:
    """Run the appliance on its embedded defaults and print how to join it."""
    from outpost_server.app import OutpostServer
    from outpost_server.logs import setup_logging

    setup_logging(args.log_level)
    cfg = _server_config(args)

    async def main() -> None:
        server = OutpostServer(cfg)
        task = asyncio.create_task(server.run())
        client = AdminClient(cfg.admin_socket)
        for _ in range(200):
            if task.done():
                await task
                return
            try:
                await asyncio.to_thread(client.get, "/v1/status")
                break
            except (ApiError, OSError):
                await asyncio.sleep(0.05)
        user = args.user
        users = await asyncio.to_thread(client.get, "/v1/users")
        if not any(u["name"] == user for u in users):
            await asyncio.to_thread(client.post, "/v1/users", {"name": user})
        key = await asyncio.to_thread(
            client.post,
            "/v1/enrolment-keys",
            {"user": user, "reusable": True, "expires_in": "24h", "description": "outpost up"},
        )
        print(
            "\nOutpost is running. Data: {d}\n"
            "Admin socket: {s}\n"
            "TLS root (give it to clients, e.g. SSL_CERT_FILE): {r}\n\n"
            "Join a client (key reusable for 24 h, owned by '{u}'):\n\n"
            "    tailscale up --login-server={url} --authkey={k}\n\n"
            "Press Ctrl-C to stop.".format(
                d=cfg.data_dir, s=cfg.admin_socket, r=server.tls.root_cert,
                u=user, url=cfg.effective_server_url, k=key["key"],
            ),
            flush=True,
        )
        await task

    asyncio.run(main())
    return 0


# ------------------------------------------------------------------ API clients
def cmd_status(args: argparse.Namespace, c: AdminClient) -> int:
    s = c.get("/v1/status")
    _out(
        args, s,
        f"Outpost {s['version']} at {s['server_url']}\n"
        f"nodes: {s['nodes_online']} online / {s['nodes_total']} total, "
        f"pending approvals: {s['pending_registrations']}, users: {s['users']}",
    )
    return 0


def cmd_users(args: argparse.Namespace, c: AdminClient) -> int:
    if args.action == "list":
        rows = c.get("/v1/users")
        _out(args, rows, _table(rows, [("id", "ID"), ("name", "NAME"), ("display_name", "DISPLAY NAME"), ("created", "CREATED")]))
    elif args.action == "create":
        u = c.post("/v1/users", {"name": args.name, "display_name": args.display_name})
        _out(args, u, f"created user {u['name']} (id {u['id']})")
    elif args.action == "delete":
        if not _confirm(args, f"Delete user {args.name!r} and its enrolment keys?"):
            return 1
        u = c.delete(f"/v1/users/{args.name}")
        _out(args, u, f"deleted user {u['name']}")
    return 0


def cmd_keys(args: argparse.Namespace, c: AdminClient) -> int:
    if args.action == "list":
        rows = c.get("/v1/enrolment-keys")
        _out(args, rows, _table(rows, [("id", "ID"), ("prefix", "KEY"), ("user", "USER"), ("tags", "TAGS"), ("reusable", "REUSABLE"), ("ephemeral", "EPHEMERAL"), ("uses", "USES"), ("expires", "EXPIRES"), ("state", "STATE")]))
    elif args.action == "create":
        tags = [t for t in (args.tags or "").split(",") if t]
        k = c.post(
            "/v1/enrolment-keys",
            {
                "user": args.user,
                "reusable": args.reusable,
                "ephemeral": args.ephemeral,
                "tags": tags,
                "expires_in": args.expires,
                "description": args.description or "",
            },
        )
        _out(args, k, f"{k['key']}\n\n(shown once: store it now; id {k['id']}, state {k['state']})")
    elif args.action == "revoke":
        k = c.delete(f"/v1/enrolment-keys/{args.id}")
        _out(args, k, f"revoked enrolment key {k['prefix']} (id {k['id']})")
    return 0


def cmd_nodes(args: argparse.Namespace, c: AdminClient) -> int:
    a = args.action
    if a == "list":
        rows = c.get("/v1/nodes")
        _out(args, rows, _table(rows, [("id", "ID"), ("name", "NAME"), ("ipv4", "IPV4"), ("ipv6", "IPV6"), ("user", "USER"), ("tags", "TAGS"), ("online", "ONLINE"), ("expired", "EXPIRED"), ("client_version", "VERSION"), ("last_seen", "LAST SEEN")]))
    elif a == "show":
        n = c.get(f"/v1/nodes/{args.id}")
        _out(args, n, "\n".join(f"{k:>15}: {_fmt(v)}" for k, v in n.items()))
    elif a == "delete":
        n = c.get(f"/v1/nodes/{args.id}")
        if not _confirm(args, f"Delete node {n['name']} ({n['ipv4']})? It must enrol again to rejoin."):
            return 1
        r = c.delete(f"/v1/nodes/{args.id}")
        _out(args, r, f"deleted node {r['name']}")
    elif a == "rename":
        n = c.post(f"/v1/nodes/{args.id}/rename", {"name": args.name})
        _out(args, n, f"node {n['id']} is now {n['fqdn']}")
    elif a == "tag":
        tags = [t.strip() for t in (args.tags or "").split(",") if t.strip()]
        n = c.post(f"/v1/nodes/{args.id}/tags", {"tags": tags})
        _out(args, n, f"node {n['name']} tags: {', '.join(n['tags']) or '(none; owned by ' + str(n['user']) + ')'}")
    elif a == "expire":
        n = c.get(f"/v1/nodes/{args.id}")
        if not _confirm(args, f"Expire node {n['name']}? It must log in again."):
            return 1
        n = c.post(f"/v1/nodes/{args.id}/expire", {})
        _out(args, n, f"node {n['name']} expired")
    elif a == "pending":
        rows = c.get("/v1/nodes/pending")
        _out(args, rows, _table(rows, [("auth_id", "AUTH ID"), ("hostname", "HOSTNAME"), ("requested_tags", "TAGS"), ("reauth_of", "RE-AUTH OF"), ("created", "WAITING SINCE")]))
    elif a == "approve":
        tags = [t for t in (args.tags or "").split(",") if t]
        n = c.post(f"/v1/nodes/pending/{args.auth_id}/approve", {"user": args.user, "tags": tags})
        _out(args, n, f"approved: node {n['name']} ({n['ipv4']})")
    elif a == "reject":
        r = c.post(f"/v1/nodes/pending/{args.auth_id}/reject", {})
        _out(args, r, f"rejected {args.auth_id}")
    elif a == "routes":
        r = c.get(f"/v1/nodes/{args.id}/routes")
        _out(args, r, "\n".join(f"{k:>10}: {_fmt(r[k])}" for k in ("name", "advertised", "approved", "serving")))
    elif a == "approve-routes":
        routes = [x for x in args.routes.split(",") if x]
        r = c.post(f"/v1/nodes/{args.id}/routes", {"routes": routes})
        _out(args, r, f"node {r['id']}: approved routes {_fmt(r['approved'])}")
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    if args.action == "conformance":
        from outpost_server.policy.conformance import main as conformance_main

        return conformance_main([args.directory])
    c = AdminClient(_socket(args))
    a = args.action
    if a == "get":
        p = c.get("/v1/policy")
        if args.json:
            print(json.dumps(p, indent=2))
        else:
            print(p["text"] if p["text"] is not None else f"# {p['note']}")
    elif a in ("set", "check", "test"):
        text = Path(args.file).read_text(encoding="utf-8")
        if a == "set":
            r = c.post("/v1/policy", {"text": text, "comment": args.comment or ""})
            _out(args, r, f"policy version {r['id']} is now in force")
        else:
            r = c.post("/v1/policy/check", {"text": text})
            _out(args, r, f"{args.file}: {r['message']}")
    elif a == "history":
        rows = c.get("/v1/policy/history")
        _out(args, rows, _table(rows, [("id", "VERSION"), ("created", "CREATED"), ("author", "AUTHOR"), ("current", "CURRENT"), ("comment", "COMMENT")]))
    elif a == "diff":
        r = c.get(f"/v1/policy/diff/{args.a}/{args.b}")
        _out(args, r, r["diff"] or "(no differences)")
    elif a == "rollback":
        if not _confirm(args, f"Put policy version {args.version} back in force?"):
            return 1
        r = c.post(f"/v1/policy/rollback/{args.version}", {})
        _out(args, r, f"policy version {r['id']} (a copy of {args.version}) is now in force")
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="outpost", description="Outpost coordination server and admin tool.")
    p.add_argument("--data-dir", help=f"state directory (env OUTPOST_DATA_DIR, default {DEFAULT_DATA_DIR})")
    p.add_argument("--admin-socket", help="admin API socket (default DATA_DIR/admin.sock)")
    sub = p.add_subparsers(dest="cmd", required=True)

    def json_flag(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    for name, helptext in (("serve", "run the server in the foreground"), ("up", "run the server and print a join command")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--listen", default="127.0.0.1:8080", help="plain HTTP control listener (default %(default)s)")
        sp.add_argument("--tls-listen", default="127.0.0.1:8443", help="HTTPS/DERP listener (default %(default)s)")
        sp.add_argument("--no-tls", action="store_true", help="no HTTPS/DERP listener")
        sp.add_argument("--stun-listen", default="127.0.0.1:3478", help="STUN UDP listener (default %(default)s)")
        sp.add_argument("--no-stun", action="store_true", help="no STUN listener")
        sp.add_argument("--server-url",
                        help="URL clients use as --login-server (default: DATA_DIR/site.json, "
                        "else --default-server-url, else from --listen)")  # fmt: skip
        sp.add_argument("--default-server-url", metavar="URL",
                        help="login URL used only when neither --server-url nor site.json gives one")  # fmt: skip
        sp.add_argument("--base-domain", default="outpost.internal", help="MagicDNS base domain (default %(default)s)")
        sp.add_argument("--site-name",
                        help="site name shown in the DERP map and certificates "
                        "(default: DATA_DIR/site.json, else 'outpost')")  # fmt: skip
        sp.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        sp.add_argument("--mesh-key-file", help="shared DERP mesh key (64 hex digits) for meshing with other relays")
        sp.add_argument("--mesh-with", action="append", metavar="URL",
                        help="another relay of this site, https://HOST:PORT (repeatable or comma-separated)")  # fmt: skip
        sp.add_argument("--mesh-ca", action="append", metavar="FILE",
                        help="root certificate of another relay (its DATA_DIR/tls/root.pem); repeatable")  # fmt: skip
        sp.add_argument("--admission-from", metavar="URL",
                        help="relay-only appliance: admit the node keys registered on this control "
                        "appliance, https://HOST:PORT (needs --mesh-key-file)")  # fmt: skip
        sp.add_argument("--derp-rate-limit", type=int, default=0, metavar="BYTES_PER_S",
                        help="per-client send rate announced to clients in ServerInfo (0 = none)")  # fmt: skip
        sp.add_argument("--derp-rate-burst", type=int, default=0, metavar="BYTES",
                        help="burst for --derp-rate-limit")  # fmt: skip
        if name == "up":
            sp.add_argument("--user", default="admin", help="owner of the printed enrolment key (default %(default)s)")

    sp = sub.add_parser("status", help="server status")
    json_flag(sp)

    users = sub.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    json_flag(users.add_parser("list", help="list users"))
    sp = users.add_parser("create", help="create a user")
    sp.add_argument("name")
    sp.add_argument("--display-name")
    json_flag(sp)
    sp = users.add_parser("delete", help="delete a user (it must own no nodes)")
    sp.add_argument("name")
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    json_flag(sp)

    keys = sub.add_parser("keys", help="manage enrolment keys").add_subparsers(dest="action", required=True)
    json_flag(keys.add_parser("list", help="list enrolment keys (secrets are never shown again)"))
    sp = keys.add_parser("create", help="create an enrolment key (printed once)")
    sp.add_argument("--user", help="owner of nodes enrolled with this key")
    sp.add_argument("--tags", help="comma-separated tags (tagged nodes have no user owner)")
    sp.add_argument("--reusable", action="store_true", help="allow more than one enrolment")
    sp.add_argument("--ephemeral", action="store_true", help="nodes are removed when they log out")
    sp.add_argument("--expires", default="1h", help="lifetime, e.g. 30m, 12h, 7d (default %(default)s)")
    sp.add_argument("--description")
    json_flag(sp)
    sp = keys.add_parser("revoke", help="revoke an enrolment key")
    sp.add_argument("id", type=int)
    json_flag(sp)

    nodes = sub.add_parser("nodes", help="manage nodes").add_subparsers(dest="action", required=True)
    json_flag(nodes.add_parser("list", help="list nodes"))
    for action, helptext in (("show", "show one node"), ("delete", "delete a node"), ("expire", "expire a node's key now")):
        sp = nodes.add_parser(action, help=helptext)
        sp.add_argument("id", type=int)
        if action != "show":
            sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        json_flag(sp)
    sp = nodes.add_parser("rename", help="rename a node (its MagicDNS name)")
    sp.add_argument("id", type=int)
    sp.add_argument("name")
    json_flag(sp)
    sp = nodes.add_parser("tag", help="set a node's tags (replaces them; --tags '' removes all)")
    sp.add_argument("id", type=int)
    sp.add_argument("--tags", required=True, help="comma-separated, e.g. tag:server,tag:prod")
    json_flag(sp)
    json_flag(nodes.add_parser("pending", help="interactive logins waiting for approval"))
    sp = nodes.add_parser("approve", help="approve a pending interactive login")
    sp.add_argument("auth_id")
    sp.add_argument("--user", help="owner of the node")
    sp.add_argument("--tags", help="comma-separated tags instead of a user owner")
    json_flag(sp)
    sp = nodes.add_parser("reject", help="reject a pending interactive login")
    sp.add_argument("auth_id")
    json_flag(sp)
    sp = nodes.add_parser("routes", help="routes a node advertises, and which are approved")
    sp.add_argument("id", type=int)
    json_flag(sp)
    sp = nodes.add_parser("approve-routes", help="set the approved routes of a node")
    sp.add_argument("id", type=int)
    sp.add_argument("--routes", required=True, help="comma-separated prefixes ('' approves none)")
    json_flag(sp)

    pol = sub.add_parser("policy", help="the tailnet policy (ACLs, grants, SSH)").add_subparsers(dest="action", required=True)
    json_flag(pol.add_parser("get", help="print the policy in force"))
    sp = pol.add_parser("set", help="validate, test and put a policy file in force")
    sp.add_argument("file")
    sp.add_argument("--comment", help="note kept in the history")
    json_flag(sp)
    for action, helptext in (("check", "validate a policy file without storing it"), ("test", "run a policy file's tests/sshTests against the live tailnet")):
        sp = pol.add_parser(action, help=helptext)
        sp.add_argument("file")
        json_flag(sp)
    json_flag(pol.add_parser("history", help="list stored policy versions"))
    sp = pol.add_parser("diff", help="differences between two versions")
    sp.add_argument("a", type=int)
    sp.add_argument("b", type=int)
    json_flag(sp)
    sp = pol.add_parser("rollback", help="put an earlier version back in force (as a new version)")
    sp.add_argument("version", type=int)
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    json_flag(sp)
    sp = pol.add_parser("conformance", help="check the policy engine against recorded cases")
    sp.add_argument("directory")

    # Subcommand groups that live in their own modules: each defines
    # add_commands(subparsers) and sets `func(args, client) -> int` on its parsers.
    for module in _command_modules():
        module.add_commands(sub)
    return p


def _command_modules() -> list[Any]:
    import importlib

    mods = []
    for name in COMMAND_MODULES:
        try:
            mods.append(importlib.import_module(f"outpost_appliance.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"outpost_appliance.{name}":
                raise
    return mods


COMMAND_MODULES = ("cli_ca", "cli_bundles", "cli_audit", "cli_backup", "cli_console", "cli_system")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "serve":
            return cmd_serve(args)
        if args.cmd == "up":
            return cmd_up(args)
        if args.cmd == "policy":
            return cmd_policy(args)
        client = AdminClient(_socket(args))
        if hasattr(args, "func"):
            return int(args.func(args, client))
        handler = {"status": cmd_status, "users": cmd_users, "keys": cmd_keys, "nodes": cmd_nodes}[args.cmd]
        return handler(args, client)
    except ApiError as exc:
        print(f"outpost: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `outpost policy get | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
