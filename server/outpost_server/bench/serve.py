"""The server under test, as its own process.

    python -m outpost_server.bench.serve --data-dir D --port P [--group N] [--make-key]

Prints `outpost: ready` and, with --make-key, one line `key: <secret>` (a
reusable enrolment key for the harness). --group N emulates policy-scoped
visibility without the policy engine: nodes see only the nodes in their own
block of N consecutive ids (N-1 peers each). It replaces the fan-out's
visibility callable after construction, in this process only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import socket
import sys
import time
from pathlib import Path

from ..app import OutpostServer
from ..config import ServerConfig


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard one: 10k map sessions are 10k sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def group_visibility(size: int):  # type: ignore[no-untyped-def]
    def visible(viewer: int, node: int) -> bool:
        return (viewer - 1) // size == (node - 1) // size

    return visible


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(args: argparse.Namespace) -> None:
    cfg = ServerConfig(
        data_dir=Path(args.data_dir),
        listen=("127.0.0.1", args.port),
        tls_listen=("127.0.0.1", _free_port(socket.SOCK_STREAM)),
        stun_listen=("127.0.0.1", _free_port(socket.SOCK_DGRAM)),
    )
    server = OutpostServer(cfg)
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    await server.start()
    if args.group:
        # Private attribute on purpose: a bench-only stand-in for the policy engine.
        server.fanout._visible = group_visibility(args.group)
    if args.make_key:
        store = server.store
        user = next(iter(store.users().values()), None) or store.create_user("bench")
        _, secret = store.create_enrolment_key(user_id=user.id, reusable=True)
        print(f"key: {secret}", flush=True)
    print("outpost: ready", flush=True)
    await server._stop.wait()
    t = time.monotonic()
    await server.stop()
    # The reconnect storm's clock starts at SIGTERM; this splits out shutdown.
    print(f"outpost: stopped in {time.monotonic() - t:.2f} s", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--group", type=int, default=0)
    p.add_argument("--make-key", action="store_true")
    raise_nofile()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(p.parse_args()))
