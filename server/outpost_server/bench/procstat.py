"""The server under test as a child process, and its CPU and memory from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
READY_TIMEOUT_S = 60.0  # start-up includes TLS material on a fresh data dir
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float  # user + system seconds since the process started
    rss_bytes: int


def sample(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat") as f:
        # The command name may contain spaces; fields after its ')' are fixed.
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    with open(f"/proc/{pid}/statm") as f:
        rss_pages = int(f.read().split()[1])
    return ProcSample((utime + stime) / CLOCK_TICKS, rss_pages * PAGE_BYTES)


class ServerProcess:
    """`python -m outpost_server.bench.serve` on loopback; restartable on the same port."""

    def __init__(self, data_dir: Path, port: int, groups: int = 0) -> None:
        self.data_dir = data_dir
        self.port = port
        self.groups = groups
        self.proc: asyncio.subprocess.Process | None = None
        self.keys: list[str] = []
        self.stop_log: list[str] = []  # "outpost: stopped in X s" lines, one per stop

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, make_key: bool = False) -> None:
        args = [
            sys.executable,
            "-m",
            "outpost_server.bench.serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
        ]
        if self.groups:
            args += ["--groups", str(self.groups)]
        if make_key:
            args.append("--make-key")
        self.proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None

        async def ready() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("bench server exited during start-up")
                if line.startswith("keys: "):
                    self.keys = json.loads(line[6:])
                if line.startswith("outpost: ready"):
                    return

        await asyncio.wait_for(ready(), READY_TIMEOUT_S)

    def sample(self) -> ProcSample:
        return sample(self.pid)

    async def admin(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        """One request to the server's admin API on its Unix socket (HTTP/1.1)."""
        payload = b"" if body is None else json.dumps(body).encode()
        reader, writer = await asyncio.open_unix_connection(str(self.data_dir / "admin.sock"))
        try:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: outpost\r\nConnection: close\r\n"
                f"X-Outpost-Actor: bench\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            )
            writer.write(head.encode() + payload)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0
        return status, raw.partition(b"\r\n\r\n")[2]

    def terminate(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()

    async def stop(self) -> None:
        if self.proc is None:
            return
        self.terminate()
        t = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
            self.stop_log.append(f"killed after {STOP_TIMEOUT_S:.0f} s without exiting on SIGTERM")
        if self.proc.stdout is not None:
            rest = (await self.proc.stdout.read()).decode()
            self.stop_log += [ln for ln in rest.splitlines() if "stopped in" in ln]
        self.stop_log.append(
            f"process exit {asyncio.get_running_loop().time() - t:.2f} s after SIGTERM"
        )
