"""A qemu TCG machine for the image tests: serial log, QMP, loopback-only network.

Network safety: user-mode networking with `restrict=on`, so the guest can
reach nothing outside itself (not the host, not the build machine's LAN),
and each host forward is bound to 127.0.0.1. `Machine` refuses anything else.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class Machine:
    def __init__(self, disk: Path, workdir: Path, forwards: dict[int, int], memory_mib: int = 1536):
        """`forwards` maps guest TCP ports to host ports on 127.0.0.1."""
        self.disk = disk
        self.workdir = workdir
        self.forwards = forwards
        self.memory_mib = memory_mib
        self.serial_log = workdir / "serial.log"
        self.qmp_path = workdir / "qmp.sock"
        self._serial = bytearray()
        self._lock = threading.Lock()
        self.started = 0.0
        self.proc: subprocess.Popen[bytes] | None = None
        self._qmp: Any = None

    def command(self) -> list[str]:
        fwd = ",".join(f"hostfwd=tcp:{LOOPBACK}:{h}-:{g}" for g, h in self.forwards.items())
        nic = f"user,model=virtio-net-pci,restrict=on{',' + fwd if fwd else ''}"
        # The guest may only ever reach loopback forwards; never relax this.
        assert "restrict=on" in nic and all(
            f"tcp:{LOOPBACK}:" in part for part in nic.split(",") if part.startswith("hostfwd=")
        )
        vars_copy = self.workdir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        return [
            "qemu-system-x86_64",
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            str(self.memory_mib),
            "-display",
            "none",
            "-vga",
            "std",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
            "-device",
            "virtio-rng-pci",
            "-device",
            "qemu-xhci,id=xhci",
            "-nic",
            nic,
            "-drive",
            f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,file={vars_copy}",
            "-drive",
            f"if=virtio,format=raw,file={self.disk}",
        ]

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.qmp_path.unlink(missing_ok=True)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=open(self.workdir / "qemu.stderr", "wb"),
        )
        threading.Thread(target=self._read_serial, daemon=True).start()
        for _ in range(100):
            if self.qmp_path.exists():
                break
            time.sleep(0.1)
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(self.qmp_path))
        self._qmp = s.makefile("rw")
        self._qmp.readline()  # greeting
        self.qmp("qmp_capabilities")

    def _read_serial(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.serial_log, "wb") as log:
            for chunk in iter(lambda: self.proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
                log.write(chunk)
                log.flush()
                with self._lock:
                    self._serial += chunk

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.qmp("quit")
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # ---------------------------------------------------------------- serial
    def serial_text(self) -> str:
        with self._lock:
            return self._serial.decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of `pattern` in the serial output; AssertionError on timeout."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.serial_text())
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"qemu exited ({self.proc.returncode}) before {pattern!r}")
            time.sleep(0.5)
        raise AssertionError(f"{pattern!r} not on the serial console after {timeout:.0f} s")

    # ------------------------------------------------------------------- QMP
    def qmp(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._qmp.write(json.dumps(msg) + "\n")
        self._qmp.flush()
        while True:
            reply = json.loads(self._qmp.readline())
            if "error" in reply:
                raise AssertionError(f"QMP {command}: {reply['error']}")
            if "return" in reply:
                return reply["return"]

    def screendump(self, path: Path) -> None:
        self.qmp("screendump", filename=str(path))

    def plug_usb_stick(self, image: Path, node: str = "stick") -> None:
        """Hot-plug `image` as a read-only USB mass-storage device."""
        self.qmp(
            "blockdev-add",
            **{
                "node-name": node,
                "driver": "raw",
                "read-only": True,
                "file": {"driver": "file", "filename": str(image), "read-only": True},
            },
        )
        self.qmp("device_add", driver="usb-storage", id=f"{node}-dev", drive=node, bus="xhci.0")
