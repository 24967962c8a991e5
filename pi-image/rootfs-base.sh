#!/usr/bin/env bash
# Stage 1 of build.sh: the Debian arm64 root file system without dnsguard (kernel, Pi
# firmware, systemd, networkd/resolved/timesyncd, OpenSSH). Slow (debootstrap's second
# stage and the initramfs run under qemu-user emulation), so build.sh caches its result
# and reruns this only when this file changes.
#   pi-image/rootfs-base.sh OUT_DIR      -> OUT_DIR/rootfs (downloads cached in OUT_DIR/../cache)
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Everything but the kernel/firmware is small; --no-install-recommends keeps it so.
PACKAGES=(
    systemd-sysv udev kmod dbus systemd-timesyncd systemd-resolved
    linux-image-arm64 raspi-firmware initramfs-tools zstd
    openssh-server ca-certificates iproute2 iputils-ping procps less
    cloud-guest-utils fdisk e2fsprogs dosfstools
)

out=${1:?usage: $0 OUT_DIR}
need_root "building the root file system"
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache=$(cd "$out/.." && pwd)/cache
root=$out/rootfs
mkdir -p "$cache/debootstrap" "$cache/apt"
apt_install debootstrap debian-archive-keyring
ensure_binfmt

# Everything mounted at or below the root file system, deepest first: our bind mounts,
# and a /proc that debootstrap's second stage or a package script mounted there and left
# (one was still mounted after a cold build, and `du` walked the host's processes).
mounts_below() { findmnt -rn -o TARGET | awk -v r="$root/" 'index($0, r) == 1' | sort -r; }
cleanup() {
    local m
    for _ in 1 2 3; do
        while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(mounts_below)
        [[ -z $(mounts_below) ]] && return 0
    done
    return 1
}
trap cleanup EXIT
bind() { mkdir -p "$2"; mount --bind "$1" "$2"; }
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

# A build killed half-way may have left the host's /dev or /proc mounted in there.
cleanup || die "still mounted below $root: $(mounts_below | tr '\n' ' ')"
rm -rf "$root"
log "debootstrap --arch=arm64 --variant=minbase $SUITE (second stage under qemu-user)"
SECONDS=0
debootstrap --arch=arm64 --variant=minbase --components=main,non-free-firmware \
    --cache-dir="$cache/debootstrap" "$SUITE" "$root" "$MIRROR" >"$out/debootstrap.log" 2>&1 \
    || { tail -n 30 "$out/debootstrap.log" >&2; die "debootstrap failed (full log: $out/debootstrap.log)"; }
info "debootstrap: ${SECONDS}s"

cat >"$root/etc/apt/sources.list" <<SRC
deb $MIRROR $SUITE main non-free-firmware
deb $MIRROR $SUITE-updates main non-free-firmware
deb $SECURITY_MIRROR $SUITE-security main non-free-firmware
SRC
# No service may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
# raspi-firmware's hooks write cmdline.txt with this root= (the ext4 label build.sh uses).
mkdir -p "$root/etc/default"
echo 'ROOTPART=LABEL=RASPIROOT' >"$root/etc/default/raspi-firmware"

bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
bind /dev/pts "$root/dev/pts"
bind "$cache/apt" "$root/var/cache/apt/archives"

log "apt-get install (kernel, raspi-firmware, systemd, openssh) with the initramfs deferred"
SECONDS=0
in_root apt-get update -qq || die "apt-get update inside the root file system failed"
# INITRD=No: the kernel's hook skips the initramfs; it is built once below (each build
# under emulation takes minutes).
in_root env INITRD=No apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${PACKAGES[@]}" >"$out/apt.log" 2>&1 \
    || { tail -n 30 "$out/apt.log" >&2; die "apt-get install failed (full log: $out/apt.log)"; }
info "apt-get install: ${SECONDS}s"

log "update-initramfs (once)"
SECONDS=0
kver=$(basename "$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -type d | sort -V | tail -n 1)")
[[ -n $kver ]] || die "no kernel modules in the root file system"
in_root update-initramfs -c -k "$kver" >"$out/initramfs.log" 2>&1 \
    || { tail -n 30 "$out/initramfs.log" >&2; die "update-initramfs failed"; }
info "initramfs for $kver: ${SECONDS}s"
for f in "vmlinuz-$kver" "initrd.img-$kver" config.txt cmdline.txt; do
    [[ -s $root/boot/firmware/$f ]] || die "raspi-firmware did not put $f in /boot/firmware"
done
ls "$root"/boot/firmware/bcm27*-rpi-*.dtb >/dev/null 2>&1 || die "no Raspberry Pi device trees in /boot/firmware"

log "trimming"
# Unmount first: the package cache is bind-mounted and must survive for the next build,
# and nothing of the host (/proc, /dev) may be copied into the image or deleted by a trim.
cleanup || die "still mounted below $root: $(mounts_below | tr '\n' ' ')"
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root/usr/sbin/policy-rc.d" "$root"/var/log/*.log \
    "$root"/var/cache/debconf/*-old "$root"/usr/share/doc/*/changelog* "$root"/usr/share/man/*
# Made at first boot instead: SSH host keys (when SSH is turned on), the machine id.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo "$kver" >"$out/kernel-version"
du -sxh "$root" >&2
