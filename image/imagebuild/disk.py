"""Assemble the GPT disk from a root directory, with no mounts and no loop devices.

    root dir --mkfs.erofs--> root.erofs            (slot A; slot B left empty)
    kernel, initrd, systemd-boot --mtools--> esp.img (FAT, built in user space:
                                                     the build machine's kernel
                                                     may have no vfat at all)
    sfdisk on a sparse file, dd each filesystem to its partition offset.

The data partition stays zeroed: systemd-makefs formats it on first boot
(x-systemd.makefs), so no filesystem UUID or content is shared between devices.
Layout, labels and PARTUUIDs come from outpost_appliance.slots.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from outpost_appliance import slots

from .rootfs import log, run

MIB = 1024 * 1024
GPT_START_MIB = 1  # first partition at 1 MiB: aligned, room for the primary GPT
GPT_TAIL_MIB = 1  # backup GPT at the end
# Fixed identifiers, so two builds of one commit write the same bytes.
DISK_GUID = "6f757470-6f73-7400-8000-000000000001"
ESP_VOLUME_ID = "0c7a0571"  # FAT volume serial, 8 hex digits
_FS_NAMESPACE = uuid.UUID("8f0e4a52-5b0a-4f3c-9a55-6f7574706f73")


def kernel_files(root: Path) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise RuntimeError(f"expected exactly one kernel in {root}/boot, found {kernels}")
    kver = kernels[0].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{kver}"
    if not initrd.is_file():
        raise RuntimeError(f"no initramfs for kernel {kver}")
    return kernels[0], initrd


def make_erofs(root: Path, out: Path, version: str, epoch: int) -> None:
    out.unlink(missing_ok=True)
    fs_uuid = uuid.uuid5(_FS_NAMESPACE, f"root/{version}")
    run(["mkfs.erofs", "-zlz4hc", f"-T{epoch}", f"-U{fs_uuid}", "--quiet", str(out), str(root)])
    limit = slots.ROOT_A.size_mib * MIB
    if out.stat().st_size > limit:
        raise RuntimeError(f"root filesystem is {out.stat().st_size} bytes; a slot holds {limit}")


def make_esp(root: Path, out: Path, work: Path, version: int, epoch: int) -> None:
    """FAT ESP: systemd-boot as the removable-media loader, slot A's kernel and entry."""
    vmlinuz, initrd = kernel_files(root)
    stage = work / "esp"
    shutil.rmtree(stage, ignore_errors=True)
    files = {
        "EFI/BOOT/BOOTX64.EFI": root / "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "EFI/systemd/systemd-bootx64.efi": root / "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        f"{slots.kernel_dir('a')}/vmlinuz": vmlinuz,
        f"{slots.kernel_dir('a')}/initrd.img": initrd,
    }
    texts = {
        "loader/loader.conf": slots.loader_conf(),
        # The factory entry has no boot counter: there is nothing to fall back to.
        f"loader/entries/{slots.LoaderEntry(version, 'a').filename}": slots.entry_text(
            "a", version
        ),
    }
    for rel, src in files.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, stage / rel)
    for rel, text in texts.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_text(text)
    (stage / slots.kernel_dir("b")).mkdir(parents=True)
    for p in sorted(stage.rglob("*"), reverse=True):
        os.utime(p, (epoch, epoch))
    out.unlink(missing_ok=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(epoch)}
    run(
        [
            "mkfs.vfat",
            "-F",
            "32",
            "-n",
            "ESP",
            "-i",
            ESP_VOLUME_ID,
            "--invariant",
            "-C",
            str(out),
            str(slots.ESP.size_mib * 1024),
        ],
        env=env,
        stdout=open(os.devnull, "w"),
    )
    for top in sorted(stage.iterdir()):
        run(["mcopy", "-s", "-p", "-m", "-Q", "-i", str(out), str(top), "::/"], env=env)


def assemble(out: Path, esp: Path, root_fs: Path) -> None:
    total_mib = GPT_START_MIB + sum(p.size_mib for p in slots.LAYOUT) + GPT_TAIL_MIB
    out.unlink(missing_ok=True)
    with open(out, "wb") as f:
        f.truncate(total_mib * MIB)
    lines = ["label: gpt", f"label-id: {DISK_GUID}", "unit: sectors", "first-lba: 2048"]
    start = GPT_START_MIB
    offsets = {}
    for p in slots.LAYOUT:
        offsets[p.label] = start
        lines.append(
            f"start={start * 2048}, size={p.size_mib * 2048}, type={p.type_guid}, "
            f"uuid={p.partuuid}, name={p.label}"
        )
        start += p.size_mib
    run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(out)],
        input="\n".join(lines) + "\n",
        text=True,
    )
    for label, image in ((slots.ESP.label, esp), (slots.ROOT_A.label, root_fs)):
        run(
            [
                "dd",
                f"if={image}",
                f"of={out}",
                "bs=1M",
                f"seek={offsets[label]}",
                "conv=notrunc,sparse",
                "status=none",
            ]
        )
    log(f"disk: {out} ({total_mib} MiB)")
