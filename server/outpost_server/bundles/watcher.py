"""Watch udev for removable media and hand each new filesystem to a callback.

`UsbWatcher.handle(action, properties)` holds all the decisions and takes
plain values, so it is tested without udev; `run()` is the thin pyudev loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .media import ALLOWED_FSTYPES


@dataclass(frozen=True, slots=True)
class MediaInserted:
    device: str  # e.g. /dev/sdb1
    fstype: str
    label: str
    serial: str


class UsbWatcher:
    def __init__(
        self,
        on_insert: Callable[[MediaInserted], None],
        *,
        usb_only: bool = True,
        on_remove: Callable[[str], None] | None = None,
    ) -> None:
        self.on_insert = on_insert
        self.on_remove = on_remove
        self.usb_only = usb_only
        self._active: set[str] = set()  # devices already handed over, until removed

    def handle(self, action: str, props: Mapping[str, str]) -> MediaInserted | None:
        """Decide on one udev event; calls `on_insert` for a new, acceptable filesystem."""
        device = props.get("DEVNAME", "")
        if action == "remove":
            if device in self._active:
                self._active.discard(device)
                if self.on_remove is not None:
                    self.on_remove(device)
            return None
        if action not in ("add", "change") or props.get("SUBSYSTEM") != "block" or not device:
            return None
        if self.usb_only and props.get("ID_BUS") != "usb":
            return None  # internal disks are never intake media
        fstype = props.get("ID_FS_TYPE", "")
        if fstype not in ALLOWED_FSTYPES or props.get("ID_FS_USAGE", "filesystem") != "filesystem":
            return None  # partition tables, swap, LUKS, unknown filesystems
        if device in self._active:
            return None  # "change" events repeat for a medium already being read
        self._active.add(device)
        event = MediaInserted(
            device, fstype, props.get("ID_FS_LABEL", ""), props.get("ID_SERIAL", "")
        )
        self.on_insert(event)
        return event

    def run(self, on_listening: Callable[[], None] = lambda: None) -> None:  # pragma: no cover - needs udev
        import pyudev  # type: ignore[import-untyped]  # noqa: PLC0415 - only the live loop needs udev

        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context)
        monitor.filter_by("block")
        # Listen first, then look at what is already there: a stick plugged in between the
        # two is seen twice (handle() ignores the repeat) instead of not at all.
        monitor.start()
        on_listening()
        for device in context.list_devices(subsystem="block"):  # media present at start
            self.handle("add", {str(k): str(v) for k, v in device.properties.items()})
        for device in iter(monitor.poll, None):
            self.handle(device.action or "", {str(k): str(v) for k, v in device.properties.items()})
