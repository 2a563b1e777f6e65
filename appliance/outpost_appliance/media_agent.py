"""The root watcher's side of the media desk (server: outpost_server/bundles/desk.py).

`outpost bundles watch` owns the removable devices; the console, unprivileged,
cannot write to them. This agent, running inside the watcher:

* tells the server which media it holds (device, label, serial, filesystem,
  size), every `POLL_INTERVAL_S` seconds, which doubles as its heartbeat;
* takes the export requests the server queued for those devices, writes
  each with `media_export.write_and_verify` (fsync, read back from the
  medium, the kind's own verification) and reports path, sha256 and the
  outcome;
* while no trust store is installed, reports `trust-store.json` and
  recovery public keys (`*.pub`) at the top of a new medium as first-trust
  candidates: text only, bounded, never interpreted here.

Device I/O is serialised by one lock, so an intake read and an export write
never touch a stick at the same time.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable
from typing import Any

from outpost_server.bundles.desk import (
    MAX_CANDIDATES,
    MAX_TRUST_CANDIDATE_BYTES,
    RECOVERY_KEY_SUFFIX,
    TRUST_STORE_NAME,
)
from outpost_server.bundles.media import MediaError
from outpost_server.bundles.removable import is_block_device, read_top_level
from outpost_server.bundles.watcher import MediaInserted

from .apiclient import AdminClient, ApiError
from .media_export import readback_check, write_and_verify

POLL_INTERVAL_S = 2.0  # how soon a console request starts; desk.WATCHER_STALE_S is 5 polls


def is_first_trust_file(name: str) -> bool:
    low = name.lower()
    return low == TRUST_STORE_NAME or (low.endswith(RECOVERY_KEY_SUFFIX) and not low.startswith("."))


def device_size(device: str) -> int | None:
    if not is_block_device(device):
        return None  # a directory standing in for a medium (tests, development)
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        return None
    finally:
        os.close(fd)


class MediaAgent:
    def __init__(self, client: AdminClient, say: Callable[[str], None] = print) -> None:
        self.client = client
        self.say = say
        self.io_lock = threading.Lock()
        self._held: dict[str, dict[str, Any]] = {}
        self._state = threading.Lock()

    # ------------------------------------------------------------- udev side
    def inserted(self, event: MediaInserted) -> None:
        report = {"device": event.device, "label": event.label, "serial": event.serial,
                  "fstype": event.fstype, "size": device_size(event.device)}  # fmt: skip
        with self._state:
            self._held[event.device] = report
        try:
            self.poll_once()  # the console sees the medium now, not at the next tick
            if not self.client.get("/v1/bundles/trust")["installed"]:
                self.offer_first_trust(event)
        except (ApiError, OSError) as exc:
            self.say(f"medium {event.device}: could not tell the server: {exc}")

    def removed(self, device: str) -> None:
        with self._state:
            self._held.pop(device, None)
        try:
            self.poll_once()
        except (ApiError, OSError) as exc:
            self.say(f"medium {device} removed; could not tell the server: {exc}")

    def offer_first_trust(self, event: MediaInserted) -> None:
        try:
            with self.io_lock:
                files, skipped = read_top_level(
                    event.device, event.fstype, is_first_trust_file,
                    MAX_TRUST_CANDIDATE_BYTES, MAX_CANDIDATES,
                )  # fmt: skip
        except (MediaError, OSError) as exc:
            self.say(f"medium {event.device}: first-trust files not read: {exc}")
            return
        for s in skipped:
            self.say(f"medium {event.device}: {s.name} not offered: {s.reason}")
        texts = []
        for name, data in files:
            try:
                texts.append({"name": name, "text": data.decode("utf-8")})
            except UnicodeDecodeError:
                self.say(f"medium {event.device}: {name} not offered: not UTF-8 text")
        if texts:
            r = self.client.post("/v1/media/candidates",
                                 {"device": event.device, "label": event.label, "files": texts})  # fmt: skip
            self.say(f"medium {event.device}: {r['accepted']} first-trust file(s) offered "
                     "to the setup wizard (unverified: compare fingerprints)")  # fmt: skip

    # ------------------------------------------------------------ server side
    def poll_once(self) -> int:
        """Report the media held; write what the server queued for them. Returns how many."""
        with self._state:
            devices = list(self._held.values())
        r = self.client.post("/v1/media/poll", {"devices": devices})
        for job in r["exports"]:
            self.write(job)
        return len(r["exports"])

    def write(self, job: dict[str, Any]) -> None:
        data = base64.b64decode(job["data"])
        check = readback_check(job["kind"], job.get("public_key", ""), job.get("appliance", ""))
        self.say(f"export #{job['id']} ({job['kind']}): writing {job['name']} to {job['device']}")
        try:
            with self.io_lock:
                done = write_and_verify(job["device"], job["name"], data, check, userspace=True)
        except (MediaError, OSError) as exc:
            result = {"verified": False, "path": "", "problem": f"not written: {exc}"}
        except Exception as exc:  # one bad stick must not stop the watcher service
            result = {"verified": False, "path": "", "problem": f"not written ({type(exc).__name__}): {exc}"}
        else:
            result = {"verified": not done.problem, "path": done.path, "problem": done.problem,
                      "how": done.how}  # fmt: skip
        how = result.pop("how", "")
        self.client.post(f"/v1/media/exports/{int(job['id'])}/result", result)
        self.say(f"export #{job['id']}: " + (f"written to {result['path']} ({how}), read back and verified"
                                              if result["verified"] else f"FAILED: {result['problem']}"))  # fmt: skip

    def run(self, stop: threading.Event, interval_s: float = POLL_INTERVAL_S) -> None:
        """The poll loop (a thread beside the udev loop); an unreachable server is retried."""
        while not stop.is_set():
            try:
                self.poll_once()
            except (ApiError, OSError) as exc:
                self.say(f"media desk: {exc}")
            stop.wait(interval_s)
