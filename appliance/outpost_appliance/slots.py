"""A/B root slots and systemd-boot entries: the appliance's disk, as code.

Theory of operation. The appliance disk is GPT with four partitions:

    1 esp           vfat   systemd-boot, loader entries, one kernel+initrd per slot
    2 root-a        erofs  read-only root, slot A
    3 root-b        erofs  read-only root, slot B
    4 outpost-data  ext4   /var (formatted on first boot): all state

Each slot has one Boot Loader Specification entry on the ESP,
`loader/entries/outpost-<version>-<slot>[+<left>[-<done>]].conf`, pointing at
`/outpost/<slot>/vmlinuz` and the slot's partition by PARTUUID. systemd-boot
sorts entries newest version first, except that an entry with no tries left
("bad") goes to the end; `default outpost-*` then picks the first. So:

* an update writes the *inactive* slot, then (last, atomically) its entry
  named `...+3.conf`: three tries;
* systemd-boot counts a try down on each boot of it (renames the file);
  systemd-bless-boot removes the counter once boot-complete.target is reached
  (outpost-ready.service requires the control server to answer);
* three failed boots leave `...+0-3.conf`: bad, sorted last, and the previous
  slot boots again by itself.

The image build (image/) imports this module for the layout, so the build and
the on-device updater can never disagree about labels, PARTUUIDs or names.
Pure functions here; the few that touch disks take their paths as arguments.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from outpost_server.errors import InvalidInput

SLOTS = ("a", "b")
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"  # EFI system partition
ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # Discoverable Partitions Spec
LINUX_DATA_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # generic: never auto-mounted
# PARTUUIDs are fixed per label (name-based UUIDs), so a kernel command line
# written by the build still names the right partition after an update.
# Two Outpost disks in one machine would clash; the appliance has one.
_PARTUUID_NAMESPACE = uuid.UUID("0b6f2f0e-6d0c-4d55-9d1a-6f7574706f73")

BOOT_TRIES = 3  # boots an updated slot gets before systemd-boot gives up on it
ENTRY_PREFIX = "outpost-"
MAX_VERSION = 10**12  # versions are build times (unix seconds); bounded so names stay short


@dataclass(frozen=True, slots=True)
class Partition:
    number: int
    label: str
    type_guid: str
    size_mib: int

    @property
    def partuuid(self) -> str:
        return str(uuid.uuid5(_PARTUUID_NAMESPACE, self.label))


ESP = Partition(1, "esp", ESP_TYPE, 256)
ROOT_A = Partition(2, "root-a", ROOT_X86_64_TYPE, 1024)
ROOT_B = Partition(3, "root-b", ROOT_X86_64_TYPE, 1024)
DATA = Partition(4, "outpost-data", LINUX_DATA_TYPE, 512)
LAYOUT = (ESP, ROOT_A, ROOT_B, DATA)
ROOT_OF_SLOT = {"a": ROOT_A, "b": ROOT_B}

# Kernel command line shared by every entry. console=ttyS0 last: /dev/console
# (boot messages, the readiness line) is the serial port, tty1 stays the
# console app's. No auto-mounting by partition type, no login prompts.
# panic=10: a kernel panic, or an initramfs that cannot mount the slot's root,
# reboots after 10 s instead of waiting at a prompt forever, so a broken
# updated slot uses up its boot tries and the previous slot boots again.
KERNEL_OPTIONS = (
    "ro rootfstype=erofs panic=10 console=tty0 console=ttyS0,115200 quiet loglevel=3 "
    "systemd.show_status=no systemd.gpt_auto=0 systemd.getty_auto=0 "
    "systemd.firstboot=no fsck.mode=auto"
)


def check_slot(slot: str) -> str:
    if slot not in SLOTS:
        raise InvalidInput(f"slot must be one of {', '.join(SLOTS)}, got {slot!r}")
    return slot


def other_slot(slot: str) -> str:
    return "b" if check_slot(slot) == "a" else "a"


def kernel_dir(slot: str) -> str:
    """The slot's directory on the ESP (kernel and initrd)."""
    return f"outpost/{check_slot(slot)}"


_ENTRY_RE = re.compile(
    r"outpost-(?P<version>[0-9]{1,13})-(?P<slot>[ab])"
    r"(?:\+(?P<left>[0-9]{1,2})(?:-(?P<done>[0-9]{1,2}))?)?\.conf"
)


@dataclass(frozen=True, slots=True)
class LoaderEntry:
    version: int
    slot: str
    tries_left: int | None = None  # None: no counting (blessed, or the factory entry)
    tries_done: int | None = None

    @classmethod
    def parse(cls, filename: str) -> LoaderEntry | None:
        """The entry a file name describes, or None for files that are not ours."""
        m = _ENTRY_RE.fullmatch(filename)
        if m is None:
            return None
        left = m["left"]
        done = m["done"]
        return cls(
            int(m["version"]),
            m["slot"],
            None if left is None else int(left),
            None if done is None else int(done),
        )

    @property
    def filename(self) -> str:
        counter = ""
        if self.tries_left is not None:
            counter = f"+{self.tries_left}"
            if self.tries_done is not None:
                counter += f"-{self.tries_done}"
        return f"{ENTRY_PREFIX}{self.version}-{self.slot}{counter}.conf"

    @property
    def bad(self) -> bool:
        return self.tries_left == 0

    @property
    def in_trial(self) -> bool:
        return self.tries_left is not None and self.tries_left > 0


def entry_text(slot: str, version: int, title: str = "Outpost") -> str:
    """The Boot Loader Specification type #1 entry for `slot`."""
    root = ROOT_OF_SLOT[check_slot(slot)]
    d = kernel_dir(slot)
    return (
        f"title {title} ({slot.upper()})\n"
        f"version {version}\n"
        f"linux /{d}/vmlinuz\n"
        f"initrd /{d}/initrd.img\n"
        f"options root=PARTUUID={root.partuuid} outpost.slot={slot} {KERNEL_OPTIONS}\n"
    )


def loader_conf() -> str:
    """loader.conf: newest good entry first; no command-line editing at the boot menu
    (`init=/bin/sh` would be a root shell for anyone at the keyboard)."""
    return "default outpost-*\ntimeout 1\nconsole-mode keep\neditor no\n"


def boot_order(entries: Iterable[LoaderEntry]) -> list[LoaderEntry]:
    """The order systemd-boot lists our entries in: bad ones last, then newest first."""
    return sorted(entries, key=lambda e: (e.bad, -e.version, e.slot))


def booted_slot(cmdline: str) -> str | None:
    """The slot named on a kernel command line (`outpost.slot=a`)."""
    for word in cmdline.split():
        if word.startswith("outpost.slot="):
            slot = word.partition("=")[2]
            return slot if slot in SLOTS else None
    return None


@dataclass(frozen=True, slots=True)
class UpdatePlan:
    target_slot: str
    new_entry: LoaderEntry
    remove: tuple[str, ...]  # entry files of the target slot that the new one replaces


def plan_update(existing: Iterable[str], booted: str, version: int) -> UpdatePlan:
    """Where an update to `version` goes: the slot not booted, under a counting entry.

    Refuses a version not newer than the booted one (a downgrade would sort
    below the running entry and never boot), and refuses to overwrite the
    running slot.
    """
    check_slot(booted)
    if not 0 < version <= MAX_VERSION:
        raise InvalidInput(f"update version must be in 1..{MAX_VERSION}, got {version}")
    parsed = [e for e in (LoaderEntry.parse(n) for n in existing) if e is not None]
    running = [e for e in parsed if e.slot == booted]
    if running and version <= max(e.version for e in running):
        raise InvalidInput(
            f"update version {version} is not newer than the running version "
            f"{max(e.version for e in running)}"
        )
    target = other_slot(booted)
    return UpdatePlan(
        target_slot=target,
        new_entry=LoaderEntry(version, target, BOOT_TRIES),
        remove=tuple(sorted(e.filename for e in parsed if e.slot == target)),
    )


@dataclass(frozen=True, slots=True)
class SlotReport:
    booted: str | None
    default: LoaderEntry | None  # what the next boot picks
    fell_back_from: LoaderEntry | None  # a newer entry that ran out of tries


def assess(existing: Iterable[str], booted: str | None) -> SlotReport:
    """What the boot loader will do next, and whether an update was abandoned."""
    parsed = [e for e in (LoaderEntry.parse(n) for n in existing) if e is not None]
    order = boot_order(parsed)
    newest = max(parsed, key=lambda e: e.version, default=None)
    return SlotReport(
        booted=booted,
        default=order[0] if order else None,
        fell_back_from=newest if newest is not None and newest.bad else None,
    )
