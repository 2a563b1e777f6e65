#!/usr/bin/env python3
"""Build the Outpost appliance image (see docs/image.md).

    build.py image     wheelhouse -> root -> root.erofs + esp.img -> outpost.img
    build.py rootfs    only the root directory (what `make test` checks); prints its path
    build.py update --key K.key --appliance ID --seq N
                       a software update: root.erofs, vmlinuz, initrd.img, system-update.json
                       and a system-update bundle signed with each --key (outpost-sign)

Needs root (file ownership in the root, chroot), mmdebstrap, erofs-utils,
dosfstools, mtools and fdisk; `make image` installs them with apt. Outputs go
to --out (default image/build/), caches to --cache (default .cache/image/).
The image version is the commit time (SOURCE_DATE_EPOCH), so every build of
one commit carries the same version and timestamps.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "appliance"), str(REPO / "server")]

from imagebuild import disk, rootfs  # noqa: E402

TOOLS = ("mmdebstrap", "mkfs.erofs", "mkfs.vfat", "mcopy", "sfdisk", "unshare")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def commit_epoch() -> int:
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    out = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        raise SystemExit("build.py: cannot read the commit time; set SOURCE_DATE_EPOCH")
    return int(out.stdout.strip())


def preflight(need_disk: bool) -> None:
    if os.geteuid() != 0:
        raise SystemExit("build.py: must run as root (chroot, file ownership in the root)")
    needed = TOOLS if need_disk else ("mmdebstrap", "unshare")
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"build.py: missing tools {missing}; `make image-deps` installs them")


def build_root(args: argparse.Namespace, epoch: int, timings: dict[str, float]) -> Path:
    args.cache.mkdir(parents=True, exist_ok=True)
    # One build at a time per cache: `make test` and `make image` may run together.
    lock = open(args.cache / ".lock", "w")  # noqa: SIM115 - held until the process exits
    fcntl.flock(lock, fcntl.LOCK_EX)
    t = time.monotonic()
    wheelhouse = rootfs.build_wheelhouse(args.cache, [args.pip], epoch)
    timings["wheelhouse_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    base = rootfs.build_base(args.cache, epoch)
    timings["base_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    root = rootfs.build_root(args.cache, base, wheelhouse, str(epoch), epoch)
    timings["root_s"] = round(time.monotonic() - t, 1)
    return root


def cmd_rootfs(args: argparse.Namespace) -> int:
    preflight(need_disk=False)
    root = build_root(args, commit_epoch(), {})
    print(root)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    preflight(need_disk=True)
    started = time.monotonic()
    epoch = commit_epoch()
    timings: dict[str, float] = {}
    root = build_root(args, epoch, timings)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    disk.make_erofs(root, out / "root.erofs", str(epoch), epoch)
    vmlinuz, initrd = disk.kernel_files(root)
    shutil.copyfile(vmlinuz, out / "vmlinuz")
    shutil.copyfile(initrd, out / "initrd.img")
    disk.make_esp(root, out / "esp.img", out, epoch, epoch)
    disk.assemble(out / "outpost.img", out / "esp.img", out / "root.erofs")
    timings["disk_s"] = round(time.monotonic() - t, 1)
    timings["total_s"] = round(time.monotonic() - started, 1)
    img = out / "outpost.img"
    info = {
        "version": epoch,
        "root": str(root),
        "timings": timings,
        "image_bytes": img.stat().st_size,
        "image_allocated_bytes": img.stat().st_blocks * 512,
        "root_erofs_bytes": (out / "root.erofs").stat().st_size,
        "sha256": {
            name: file_sha256(out / name)
            for name in ("outpost.img", "root.erofs", "esp.img", "vmlinuz", "initrd.img")
        },
    }
    (out / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
    rootfs.log(
        f"done in {timings['total_s']} s: {img} "
        f"({info['image_bytes'] // 2**20} MiB, {info['image_allocated_bytes'] // 2**20} MiB "
        f"allocated; root {info['root_erofs_bytes'] // 2**20} MiB)"
    )
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    """The three files of a software update and a signed `system-update` bundle for them.

    Bundles name one appliance and carry a per-appliance sequence (SPEC.md §4),
    so a release makes the files once and a bundle per appliance. Signing goes
    through `outpost-sign` (create, then sign once per key): the same tool and
    steps a release signer uses by hand. No key is ever stored in the repository.
    """
    preflight(need_disk=True)
    for key in args.key:
        if not key.is_file():
            raise SystemExit(f"build.py: signing key {key} does not exist")
    epoch = commit_epoch()
    version = args.version or epoch
    root = build_root(args, epoch, {})
    out: Path = args.update_out or args.out / "update"
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.opb"):
        stale.unlink()  # one bundle per output folder: the stick must not offer two
    disk.make_erofs(root, out / "root.erofs", str(epoch), epoch)
    vmlinuz, initrd = disk.kernel_files(root)
    shutil.copyfile(vmlinuz, out / "vmlinuz")
    shutil.copyfile(initrd, out / "initrd.img")
    doc = update_document(out, version)
    (out / "system-update.json").write_text(json.dumps(doc, indent=1) + "\n")
    bundle = out / f"outpost-update-{version}.opb"
    sign = [sys.executable, "-m", "outpost_appliance.sign"]
    paths = [str(REPO / "appliance"), str(REPO / "server")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    subprocess.run(
        [*sign, "create", "system-update", "--appliance", args.appliance, "--seq", str(args.seq),
         "--expires", args.expires, "--payload", f"system-update.json={out / 'system-update.json'}",
         "--out", str(bundle)],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for key in args.key:
        subprocess.run([*sign, "sign", "--key", str(key), str(bundle)], check=True, env=env,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    rootfs.log(
        f"update version {version} for appliance {args.appliance} (seq {args.seq}) in {out}: "
        f"{bundle.name}, root.erofs, vmlinuz, initrd.img; copy all four to the stick's top folder"
    )
    print(bundle)
    return 0


def update_document(folder: Path, version: int) -> dict[str, object]:
    """system-update.json for the three files in `folder` (format: outpost_appliance.sysupdate)."""
    from outpost_appliance import sysupdate  # noqa: PLC0415 - build.py puts appliance/ on the path

    files = {}
    for role, name in (("root", "root.erofs"), ("kernel", "vmlinuz"), ("initrd", "initrd.img")):
        path = folder / name
        files[role] = {"name": name, "size": path.stat().st_size, "sha256": file_sha256(path)}
    doc = {"format": sysupdate.UPDATE_FORMAT, "version": version, "files": files}
    sysupdate.parse_update(json.dumps(doc).encode())  # the installer's own checks (size limits)
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=HERE / "build", help="output directory")
    p.add_argument("--cache", type=Path, default=REPO / ".cache" / "image", help="cache directory")
    p.add_argument(
        "--pip",
        default=str(REPO / ".venv" / "bin" / "pip"),
        help="pip used to build the wheelhouse (default: the project venv's)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("image", help="build the disk image").set_defaults(func=cmd_image)
    sub.add_parser("rootfs", help="build the root directory only").set_defaults(func=cmd_rootfs)
    up = sub.add_parser("update", help="a signed software update (system-update bundle)")
    up.add_argument("--key", type=Path, action="append", required=True,
                    help="signer private key (outpost-sign keygen); repeat for M-of-N")  # fmt: skip
    up.add_argument("--appliance", required=True, help="the target appliance id")
    up.add_argument("--seq", type=int, required=True,
                    help="bundle sequence, above the appliance's last system-update")  # fmt: skip
    up.add_argument("--version", type=int, default=0,
                    help="update version (default: the commit time, as the image's)")  # fmt: skip
    up.add_argument("--expires", default="30d", help="bundle validity (default %(default)s)")
    up.add_argument("--update-out", type=Path, help="output folder (default: OUT/update)")
    up.set_defaults(func=cmd_update)
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    args.cache = args.cache.resolve()
    try:
        return int(args.func(args))
    except subprocess.CalledProcessError as exc:
        print(f"build.py: {exc.cmd[0]} failed with status {exc.returncode}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
