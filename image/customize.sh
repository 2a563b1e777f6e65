#!/bin/sh
# Turn a Debian root (mmdebstrap output, copied) into the Outpost root.
# usage: customize.sh ROOT WHEELHOUSE IMAGE_VERSION SOURCE_DATE_EPOCH
# Runs as root on the build machine; everything inside ROOT via chroot.
set -eu
root=$1 wheelhouse=$2 version=$3 epoch=$4
here=$(cd "$(dirname "$0")" && pwd)
in_root() { chroot "$root" "$@"; }

# --- our files: units, scripts, firewall, journald/timesyncd/logind settings
tar -C "$here/overlay" --owner=0 --group=0 --mtime="@$epoch" -cf - . | tar -C "$root" -xf -

# --- the service user (fixed ids; /etc is read-only on the appliance)
in_root systemd-sysusers

# --- Outpost and every Python dependency from the wheelhouse, with no network
# at all (a network namespace of its own, and --no-index): the image never
# fetches anything, not even here.
mkdir -p "$root/tmp/wheelhouse"
cp "$wheelhouse"/*.whl "$root/tmp/wheelhouse/"
in_root python3 -m venv /opt/outpost/venv
unshare --net chroot "$root" /opt/outpost/venv/bin/pip install --quiet --no-index \
    --no-cache-dir --disable-pip-version-check --find-links /tmp/wheelhouse outpost
in_root /opt/outpost/venv/bin/pip uninstall --quiet --yes pip setuptools 2>/dev/null || true
(cd "$root/tmp/wheelhouse" && sha256sum -- *.whl) > "$root/usr/lib/outpost/wheels.sha256"
rm -rf "$root/tmp/wheelhouse"
# Bytecode now: the root is read-only at run time. Hash-checked .pyc files
# carry no timestamps, so two builds write the same bytes.
find "$root/opt/outpost/venv" -name __pycache__ -type d -prune -exec rm -rf {} +
in_root /opt/outpost/venv/bin/python -m compileall -q -j 1 \
    --invalidation-mode unchecked-hash /opt/outpost/venv/lib
in_root /opt/outpost/venv/bin/python -c 'import outpost_server, outpost_appliance, outpost_tui'

# --- units
in_root systemctl enable systemd-networkd.service systemd-timesyncd.service nftables.service \
    outpost-firstboot.service outpost-server.service outpost-console.service outpost-ready.service
# Units whose command is not in this build's outpost are left disabled (and
# listed in /usr/lib/outpost/units-disabled) rather than failing at every boot.
: > "$root/usr/lib/outpost/units-disabled"
for pair in "outpost-usb-watch.service:bundles watch" "outpost-scheduler.service:scheduler"; do
    unit=${pair%%:*} cmd=${pair#*:}
    # shellcheck disable=SC2086  # cmd is two words on purpose
    if in_root /opt/outpost/venv/bin/outpost $cmd --help >/dev/null 2>&1; then
        in_root systemctl enable "$unit"
    else
        echo "$unit: 'outpost $cmd' is not in this build" >> "$root/usr/lib/outpost/units-disabled"
    fi
done
in_root systemctl disable getty@tty1.service
# Slow or meaningless on a read-only, offline appliance.
in_root systemctl mask e2scrub_reap.service e2scrub_all.timer apt-daily.timer \
    apt-daily-upgrade.timer dpkg-db-backup.timer systemd-networkd-wait-online.service \
    systemd-firstboot.service systemd-machine-id-commit.service

# --- read-only root: /var is the data partition, formatted on first boot
cat > "$root/etc/fstab" <<FSTAB
# / is the slot's EROFS partition, named on the kernel command line.
PARTLABEL=outpost-data /var ext4 defaults,noatime,nosuid,nodev,x-systemd.makefs,x-systemd.growfs 0 2
PARTLABEL=esp /efi vfat umask=0077,noexec,nosuid,nodev,noauto,x-systemd.automount,x-systemd.idle-timeout=30 0 2
tmpfs /tmp tmpfs mode=1777,nosuid,nodev,size=256M 0 0
FSTAB
mkdir -p "$root/efi"
rm -rf "$root/etc/systemd/network"
ln -s /var/lib/outpost-os/network "$root/etc/systemd/network"

# --- nothing secret, nothing per-device, nothing from the build machine
: > "$root/etc/machine-id"            # transient until... always: /etc is read-only
rm -f "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed"
rm -f "$root/etc/resolv.conf" "$root/etc/apt/sources.list" "$root/etc/apt/sources.list.d/"*
rm -rf "$root/etc/ssh" "$root/root/.cache" "$root/var/cache/apt/"* "$root/var/lib/apt/lists/"*
echo outpost > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\toutpost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
in_root passwd --lock root >/dev/null

# --- identity and time
cat >> "$root/usr/lib/os-release" <<OSR
IMAGE_ID=outpost
IMAGE_VERSION=$version
OSR
# timesyncd's floor for the clock when nothing better is known (no RTC, no NTP).
touch "$root/usr/lib/clock-epoch"
touch -d "@$epoch" "$root/usr/lib/clock-epoch"
in_root dpkg-query -W -f '${Package} ${Version}\n' > "$root/usr/lib/outpost/packages.txt"
