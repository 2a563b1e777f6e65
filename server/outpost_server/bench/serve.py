"""The server under test, as its own process.

    python -m outpost_server.bench.serve --data-dir D --port P [--groups K] [--make-key]

Prints `outpost: ready` and, with --make-key, one line `keys: <JSON list>` of
reusable enrolment keys for the harness. Without --groups there is no policy
(allow-all) and one untagged key. With --groups K the server gets a real
policy through the same path as the admin API (`group_policy`): K tags
`tag:g0`..., each node may reach only nodes of its own tag, and key k enrols
into `tag:gk`. The harness spreads nodes over the keys, so a group of about
N/K nodes sees only itself, through the real policy engine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import socket
import sys
import time
from pathlib import Path

from ..app import OutpostServer, exit_now
from ..config import ServerConfig
from .memdump import MEMPROFILE_ENV, dump_snapshot


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard one: 10k map sessions are 10k sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


ACTOR = "bench"


def group_policy(groups: int, ports: str = "*") -> str:
    """K disjoint groups, each allowed to reach itself on `ports`.

    The policy-change scenario swaps `*` for `1-65535`: every node's filter
    changes (the rendered port range differs) while visibility stays.
    """
    tags = [f"tag:g{k}" for k in range(groups)]
    return json.dumps(
        {
            "tagOwners": {t: ["autogroup:admin"] for t in tags},
            "acls": [{"action": "accept", "src": [t], "dst": [f"{t}:{ports}"]} for t in tags],
        },
        indent=1,
    )


def allow_all_policy(ports: str = "*") -> str:
    return json.dumps({"acls": [{"action": "accept", "src": ["*"], "dst": [f"*:{ports}"]}]})


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
    dump_to = os.environ.get(MEMPROFILE_ENV)
    if dump_to:  # python -m outpost_server.bench.memprofile
        seq = iter(range(1_000_000))
        loop.add_signal_handler(
            signal.SIGUSR1, lambda: dump_snapshot(Path(f"{dump_to}.{next(seq)}"))
        )
    await server.start()
    if args.make_key:
        store = server.store
        user = next(iter(store.users().values()), None) or store.create_user("bench")
        secrets = []
        if args.groups:
            text = group_policy(args.groups)
            verdict = server.policy.check(text)
            store.save_policy(text, ACTOR, "bench: disjoint groups")
            server.policy.apply(verdict)
            for k in range(args.groups):
                _, secret = store.create_enrolment_key(
                    user_id=None, tags=[f"tag:g{k}"], reusable=True
                )
                secrets.append(secret)
        else:
            _, secret = store.create_enrolment_key(user_id=user.id, reusable=True)
            secrets.append(secret)
        print(f"keys: {json.dumps(secrets)}", flush=True)
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
    p.add_argument("--groups", type=int, default=0, help="0: no policy (allow-all)")
    p.add_argument("--make-key", action="store_true")
    raise_nofile()
    depth = int(os.environ.get(MEMPROFILE_ENV + "_DEPTH", "0"))
    if os.environ.get(MEMPROFILE_ENV) and depth > 0:  # depth 0: allocator figures only
        import tracemalloc

        tracemalloc.start(depth)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(p.parse_args()))
    exit_now(0)  # as `outpost serve` does
