"""The media desk: what the root USB watcher sees, and what it is asked to write.

Theory of operation
-------------------
The server never touches removable media (docs/bundles.md, "who mounts"), and
the console runs unprivileged, so exports to a stick from the console meet in
the middle, here:

* The root watcher (`outpost bundles watch`) polls `POST /v1/media/poll` every
  few seconds with the devices it holds (device, label, serial, filesystem,
  size). The poll is also its heartbeat: without one for `WATCHER_STALE_S`
  the desk says no watcher is running, and the console says so.
* The console asks for an export (`POST /v1/media/exports`: kind, parameters,
  target device). The API builds the signed bundle exactly as for the CLI and
  queues it here for that device (state `queued`).
* The watcher's next poll claims the requests for devices it holds (state
  `writing`), writes each with `media_export.write_and_verify` (read back from
  the medium and verified) and reports the outcome: `verified` or `failed`
  with the reason. A device that disappears fails its queued requests.

* First trust: while no trust store is installed, the watcher also reports
  `trust-store.json` and recovery public keys (`*.pub`, `opr1:`) found at the
  top of a stick as *unverified candidates*. They cannot be checked by
  signature because they ARE the first trust; the wizard shows their
  fingerprints for the administrator to compare with the signing station's
  printout and installs one only after a confirmation.

Everything here lives in memory, on purpose: a request or a candidate is
worth something only while the stick is in the box and the server runs. A
server restart forgets them (the console shows the request as gone and the
administrator asks again); what was written is in the audit log. The desk
holds no key material and builds nothing; it only keeps bytes the API built.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InvalidInput, NotFound

WATCHER_STALE_S = 10.0  # the watcher polls every 2 s; five missed polls mean it is gone
MAX_DEVICES = 16  # USB ports on an appliance, with room for hubs
MAX_EXPORT_REQUESTS = 64  # kept for the console to show; the oldest finished ones go first
MAX_CANDIDATES = 16  # first-trust files per medium set; a stick needs one or two
MAX_TRUST_CANDIDATE_BYTES = 256 * 1024  # a trust store is a few KiB (console's typed-path limit too)
MAX_KEY_CANDIDATE_BYTES = 16 * 1024  # one opr1: line, maybe a comment
MAX_FIELD_CHARS = 128  # device names, labels, serials as udev reports them
TRUST_STORE_NAME = "trust-store.json"
RECOVERY_KEY_SUFFIX = ".pub"
RECOVERY_PREFIX = "opr1:"

QUEUED, WRITING, VERIFIED, FAILED = "queued", "writing", "verified", "failed"


@dataclass(frozen=True, slots=True)
class Device:
    device: str
    label: str = ""
    serial: str = ""
    fstype: str = ""
    size: int | None = None

    def view(self) -> dict[str, Any]:
        return {"device": self.device, "label": self.label, "serial": self.serial,
                "fstype": self.fstype, "size": self.size}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExportRequest:
    id: int
    kind: str  # audit-export, node-inventory, client-enrolment, root-certificate
    device: str
    name: str  # the file name on the medium
    data: bytes
    sha256: str
    public_key: str  # hex: what the read-back copy must verify against ("" for the root cert)
    appliance: str
    summary: str  # what the console shows: "entries 1..40", "3 clients", ...
    requested_by: str
    requested_at: float
    state: str = QUEUED
    message: str = ""
    path: str = ""
    updated_at: float = 0.0

    def view(self, *, with_data: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "device": self.device, "name": self.name,
            "size": len(self.data), "sha256": self.sha256, "summary": self.summary,
            "requested_by": self.requested_by, "state": self.state, "message": self.message,
            "path": self.path,
        }  # fmt: skip
        if with_data:
            import base64  # noqa: PLC0415

            out |= {"data": base64.b64encode(self.data).decode(), "public_key": self.public_key,
                    "appliance": self.appliance}  # fmt: skip
        return out


@dataclass(frozen=True, slots=True)
class Candidate:
    id: int
    kind: str  # "trust-store" or "recovery-key"
    device: str
    label: str
    file: str
    text: str
    fingerprints: tuple[str, ...]  # signer key ids (trust store) or the recovery key id
    detail: str  # thresholds, or the key itself, for the console
    problem: str  # why it cannot be installed ("" when it parses)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "device": self.device, "label": self.label,
                "file": self.file, "fingerprints": list(self.fingerprints), "detail": self.detail,
                "problem": self.problem, "sha256": hashlib.sha256(self.text.encode()).hexdigest()}  # fmt: skip


def _field(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"'{name}' must be text")
    return value[:MAX_FIELD_CHARS]


def parse_devices(items: Any) -> list[Device]:
    if not isinstance(items, list) or len(items) > MAX_DEVICES:
        raise InvalidInput(f"'devices' must be a list of at most {MAX_DEVICES} devices")
    out = []
    for i, d in enumerate(items):
        if not isinstance(d, dict) or not isinstance(d.get("device"), str) or not d["device"]:
            raise InvalidInput(f"devices[{i}] must be an object with a device path")
        size = d.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise InvalidInput(f"devices[{i}].size must be a byte count")
        out.append(Device(_field(d["device"], "device"), _field(d.get("label", ""), "label"),
                          _field(d.get("serial", ""), "serial"), _field(d.get("fstype", ""), "fstype"),
                          size))  # fmt: skip
    return out


def judge_candidate(kind: str, text: str) -> tuple[tuple[str, ...], str, str]:
    """(fingerprints, detail, problem) of a first-trust file, without trusting it."""
    if kind == "trust-store":
        from .trust import TrustStore  # noqa: PLC0415

        try:
            store = TrustStore.loads(text.encode())
        except Exception as exc:  # TrustStoreError and JSON errors: shown, never installed
            return (), "", f"not a valid trust store: {exc}"
        doc = store.to_json()
        kids = tuple(str(s["key_id"]) for s in doc["signers"])
        return kids, f"thresholds {doc['thresholds']}", ""
    from ..backup.format import RECOVERY_SECRET_HEADER, key_id, parse_public  # noqa: PLC0415

    if RECOVERY_SECRET_HEADER in text:
        return (), "", "this is a recovery SECRET key: it must never be on the appliance"
    keys = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(RECOVERY_PREFIX)]
    if len(keys) != 1:
        return (), "", f"expected one line starting with {RECOVERY_PREFIX}, found {len(keys)}"
    try:
        public = parse_public(keys[0])
    except Exception as exc:  # BackupError: shown, never installed
        return (), "", str(exc)
    return (key_id(public),), keys[0], ""


class MediaDesk:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last_poll: float | None = None
        self._devices: dict[str, Device] = {}
        self._requests: dict[int, ExportRequest] = {}
        self._candidates: dict[int, Candidate] = {}
        self._ids = itertools.count(1)
        self._cand_ids = itertools.count(1)

    # ------------------------------------------------------------ the watcher
    def watcher_running(self) -> bool:
        return self._last_poll is not None and self.clock() - self._last_poll < WATCHER_STALE_S

    def poll(self, devices: list[Device]) -> list[ExportRequest]:
        """The watcher's heartbeat: what it holds now; returns the requests it should write."""
        now = self.clock()
        self._last_poll = now
        self._devices = {d.device: d for d in devices}
        claimed = []
        for r in list(self._requests.values()):
            if r.state != QUEUED:
                continue
            if r.device not in self._devices:
                self._requests[r.id] = replace(
                    r, state=FAILED, updated_at=now,
                    message=f"{r.device} was removed before the export was written",
                )  # fmt: skip
                continue
            writing = replace(r, state=WRITING, updated_at=now)
            self._requests[r.id] = writing
            claimed.append(writing)
        for c in list(self._candidates.values()):
            if c.device not in self._devices:
                del self._candidates[c.id]  # the stick is gone: so is what it offered
        return claimed

    def devices(self) -> list[Device]:
        return list(self._devices.values()) if self.watcher_running() else []

    # --------------------------------------------------------------- exports
    def queue(self, request: ExportRequest) -> ExportRequest:
        """Queue a built export for a device the watcher holds (the API checks first)."""
        self._forget_old()
        r = replace(request, id=next(self._ids), requested_at=self.clock(), updated_at=self.clock())
        self._requests[r.id] = r
        return r

    def require_device(self, device: str) -> Device:
        if not self.watcher_running():
            raise InvalidInput(
                "no USB watcher is running (outpost-usb-watch.service): nothing can be written"
            )
        found = self._devices.get(device)
        if found is None:
            raise InvalidInput(f"no removable medium {device} is present; insert one first")
        return found

    def finish(self, request_id: int, *, verified: bool, path: str, message: str) -> ExportRequest:
        r = self.get(request_id)
        if r.state != WRITING:
            raise InvalidInput(f"export request {request_id} is {r.state}, not being written")
        r = replace(r, state=VERIFIED if verified else FAILED, path=path[:255],
                    message=message[:500], updated_at=self.clock())  # fmt: skip
        self._requests[r.id] = r
        return r

    def get(self, request_id: int) -> ExportRequest:
        r = self._requests.get(request_id)
        if r is None:
            raise NotFound(f"no export request {request_id} (the server may have restarted)")
        return r

    def requests(self) -> list[ExportRequest]:
        return sorted(self._requests.values(), key=lambda r: r.id)

    def _forget_old(self) -> None:
        done = [r for r in self.requests() if r.state in (VERIFIED, FAILED)]
        while len(self._requests) >= MAX_EXPORT_REQUESTS and done:
            del self._requests[done.pop(0).id]
        if len(self._requests) >= MAX_EXPORT_REQUESTS:
            raise InvalidInput(f"{MAX_EXPORT_REQUESTS} exports are already waiting for the watcher")

    # ------------------------------------------------------------ first trust
    def offer(self, device: str, label: str, files: list[tuple[str, str]]) -> list[Candidate]:
        """The watcher's first-trust files from one medium; replaces what that medium offered."""
        for c in [c for c in self._candidates.values() if c.device == device]:
            del self._candidates[c.id]
        added = []
        for name, text in files:
            if len(self._candidates) >= MAX_CANDIDATES:
                break
            kind = "trust-store" if name.lower() == TRUST_STORE_NAME else "recovery-key"
            limit = MAX_TRUST_CANDIDATE_BYTES if kind == "trust-store" else MAX_KEY_CANDIDATE_BYTES
            fps: tuple[str, ...]
            if len(text.encode()) > limit:
                fps, detail, problem = (), "", f"larger than {limit} bytes"
            else:
                fps, detail, problem = judge_candidate(kind, text)
            c = Candidate(next(self._cand_ids), kind, device, label, name, text, fps, detail, problem)
            self._candidates[c.id] = c
            added.append(c)
        return added

    def candidates(self) -> list[Candidate]:
        return sorted(self._candidates.values(), key=lambda c: c.id)

    def candidate(self, candidate_id: int) -> Candidate:
        c = self._candidates.get(candidate_id)
        if c is None:
            raise NotFound(f"no first-trust candidate {candidate_id} (was the stick removed?)")
        return c

    def forget(self, candidate_id: int) -> None:
        self._candidates.pop(candidate_id, None)

    def drop_candidates(self, kind: str | None = None) -> None:
        for c in [c for c in self._candidates.values() if kind is None or c.kind == kind]:
            del self._candidates[c.id]

