#!/usr/bin/env bash
# Build the dnsguard Raspberry Pi image (Pi 3/4, 64-bit) in one command:
#   sudo pi-image/build.sh
# 1. cross-compile dnsguard for aarch64 (pi-image/cross.sh; DNSGUARD_CROSS=auto|rustup|debian)
# 2. the Debian bookworm arm64 root file system with kernel and Pi firmware
#    (pi-image/rootfs-base.sh; cached in pi-image/out/base, rebuilt only when that script changes)
# 3. dnsguard, its config and hardened systemd unit, and the first-boot setup put into a copy
# 4. the SD-card image without loop devices or mounts: FAT (mkfs.vfat + mtools), ext4
#    (mkfs.ext4 -d), MBR (sfdisk), dd; then zstd and sha256.
# Output: pi-image/out/dnsguard-pi-arm64.img (raw, sparse) and .img.zst + .sha256.
# Environment: OUT_DIR (default pi-image/out), ZSTD_LEVEL (default 12), REBUILD_BASE=1.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

OUT=${OUT_DIR:-$PI_DIR/out}
IMG_NAME=dnsguard-pi-arm64
BOOT_MIB=256          # FAT32 boot partition (firmware, kernel, initrd, device trees)
ALIGN_MIB=4           # the first partition starts here
ZSTD_LEVEL=${ZSTD_LEVEL:-12}

need_root "pi-image/build.sh"
apt_install dosfstools mtools fdisk e2fsprogs zstd coreutils
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
t_all=$SECONDS

# --- 1. the binary ----------------------------------------------------------
log "1/4 cross-compiling dnsguard for $TARGET"
t=$SECONDS
"$PI_DIR/cross.sh" build
bin=${CARGO_TARGET_DIR:-$REPO_DIR/target}/$TARGET/dist/dnsguard
aarch64-linux-gnu-strip -o "$OUT/dnsguard" "$bin"
file -b "$OUT/dnsguard" 2>/dev/null | grep -q 'ARM aarch64' || [[ ! -x /usr/bin/file ]] \
    || die "$bin is not an aarch64 binary"
info "stripped binary: $(du -h "$OUT/dnsguard" | cut -f1)"
info "step 1: $((SECONDS - t))s"

# --- 2. the base root file system (cached) ----------------------------------
log "2/4 base root file system"
t=$SECONDS
base=$OUT/base
stamp=$(sha256sum "$PI_DIR/rootfs-base.sh" | cut -c1-16)
if [[ ${REBUILD_BASE:-0} != 1 && -f $base/stamp && $(cat "$base/stamp") == "$stamp" && -d $base/rootfs ]]; then
    info "cached ($base, made $(date -r "$base/stamp" -u +%FT%TZ)); REBUILD_BASE=1 forces a new one"
else
    rm -f "$base/stamp"
    "$PI_DIR/rootfs-base.sh" "$base"
    echo "$stamp" >"$base/stamp"
fi
ensure_binfmt
info "step 2: $((SECONDS - t))s"

# --- 3. dnsguard into a copy of it ------------------------------------------
log "3/4 installing dnsguard into the root file system"
t=$SECONDS
root=$OUT/rootfs
# Nothing of the host may be copied along (rootfs-base.sh unmounts what it and debootstrap mounted).
leftover=$(findmnt -rn -o TARGET | awk -v r="$base/rootfs/" 'index($0, r) == 1')
[[ -z $leftover ]] || die "mounted below $base/rootfs (unmount first): $leftover"
rm -rf "$root"
cp -a "$base/rootfs" "$root"
F=$PI_DIR/files
install -m 0755 "$OUT/dnsguard" "$root/usr/bin/dnsguard"
install -d -m 0755 "$root/usr/share/doc/dnsguard"
install -m 0644 "$REPO_DIR/README.md" "$REPO_DIR/docs/PI-IMAGE.md" "$root/usr/share/doc/dnsguard/"
install -m 0644 "$F/dnsguard.service" "$F/dnsguard-setup.service" "$F/dnsguard-report.service" \
    "$F/dnsguard-tls-banner.service" "$root/etc/systemd/system/"
install -m 0755 "$F/dnsguard-setup" "$F/dnsguard-report" "$root/usr/local/sbin/"
install -D -m 0644 "$F/10-dnsguard.preset" "$root/etc/systemd/system-preset/10-dnsguard.preset"
install -D -m 0644 "$F/10-lan.network" "$root/etc/systemd/network/10-lan.network"
install -D -m 0644 "$F/resolved.conf" "$root/etc/systemd/resolved.conf.d/dnsguard.conf"
install -D -m 0644 "$F/transparent-hugepage.conf" "$root/etc/tmpfiles.d/transparent-hugepage.conf"
install -m 0644 "$F/issue" "$root/etc/issue"
ln -sfn ../run/systemd/resolve/resolv.conf "$root/etc/resolv.conf"
echo dnsguard >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdnsguard\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
cat >"$root/etc/fstab" <<'FSTAB'
# The SD card's two partitions, by label (pi-image/build.sh).
LABEL=RASPIROOT  /              ext4  rw,noatime,errors=remount-ro  0 1
LABEL=RASPIFIRM  /boot/firmware vfat  rw,noatime,umask=0077,nofail  0 2
FSTAB
# SSH: keys only; off until /boot/firmware/ssh turns it on (dnsguard-setup).
install -D -m 0644 /dev/stdin "$root/etc/ssh/sshd_config.d/dnsguard.conf" <<'SSHD'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
SSHD
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"; }
in_root useradd --system --user-group --home-dir /var/lib/dnsguard --no-create-home \
    --shell /usr/sbin/nologin --comment "dnsguard DNS resolver" dnsguard
install -d -m 0750 "$root/etc/dnsguard"
install -m 0640 "$F/dnsguard.toml" "$root/etc/dnsguard/dnsguard.toml"
install -d -m 0700 "$root/var/lib/dnsguard"
in_root chown -R dnsguard:dnsguard /etc/dnsguard /var/lib/dnsguard
# The config must parse (the aarch64 binary, through qemu-user).
timeout 120 chroot "$root" /usr/bin/dnsguard config check /etc/dnsguard/dnsguard.toml >&2 \
    || die "dnsguard config check failed on the image's /etc/dnsguard/dnsguard.toml"
in_root systemctl enable dnsguard.service dnsguard-setup.service dnsguard-report.service dnsguard-tls-banner.service \
    systemd-networkd.service systemd-resolved.service systemd-timesyncd.service 2>/dev/null
in_root systemctl disable ssh.service ssh.socket 2>/dev/null || true
ssh_state=$(in_root systemctl is-enabled ssh.service 2>/dev/null || true)  # exits 1 when disabled
[[ $ssh_state == disabled ]] || die "ssh.service is '$ssh_state', not disabled"
# No real-time clock on a Pi: systemd starts the clock no earlier than this file's time.
install -d "$root/var/lib/systemd/timesync"
touch "$root/var/lib/systemd/timesync/clock"
info "step 3: $((SECONDS - t))s"

# --- 4. the SD-card image ---------------------------------------------------
log "4/4 assembling the SD-card image (no loop devices, no mounts)"
t=$SECONDS
boot_img=$OUT/boot.vfat root_img=$OUT/root.ext4 img=$OUT/$IMG_NAME.img
rm -f "$boot_img" "$root_img" "$img" "$img.zst" "$img.zst.sha256"
mkfs.vfat -F 32 -n RASPIFIRM -C "$boot_img" $((BOOT_MIB * 1024)) >/dev/null
mcopy -s -p -m -i "$boot_img" "$root"/boot/firmware/* ::/ || die "mcopy into the FAT image failed"
find "$root/boot/firmware" -mindepth 1 -delete   # the mount point stays, empty
used_mib=$(du -sxm "$root" | cut -f1)
root_mib=$(((used_mib * 5 / 4 + 400 + 3) / 4 * 4))  # 25% + 400 MiB free; first boot grows it to the card
mkfs.ext4 -q -F -L RASPIROOT -d "$root" "$root_img" "${root_mib}M" || die "mkfs.ext4 -d failed"
total_mib=$((ALIGN_MIB + BOOT_MIB + root_mib))
truncate -s "${total_mib}M" "$img"
sfdisk -q "$img" <<PARTS || die "sfdisk failed"
label: dos
start=${ALIGN_MIB}MiB, size=${BOOT_MIB}MiB, type=c, bootable
start=$((ALIGN_MIB + BOOT_MIB))MiB, type=83
PARTS
dd if="$boot_img" of="$img" bs=1M seek="$ALIGN_MIB" conv=notrunc,sparse status=none
dd if="$root_img" of="$img" bs=1M seek="$((ALIGN_MIB + BOOT_MIB))" conv=notrunc,sparse status=none
rm -f "$boot_img" "$root_img"
info "raw image: $total_mib MiB (root file system ${used_mib} MiB used)"
zstd -q -T0 "-$ZSTD_LEVEL" "$img" -o "$img.zst" || die "zstd failed"
(cd "$OUT" && sha256sum "$IMG_NAME.img.zst" >"$IMG_NAME.img.zst.sha256")
info "step 4: $((SECONDS - t))s"

log "done in $((SECONDS - t_all))s"
printf '   %-28s %s\n' "image (raw):" "$img ($(du -h --apparent-size "$img" | cut -f1))" \
    "image (zstd -$ZSTD_LEVEL):" "$img.zst ($(du -h "$img.zst" | cut -f1), $(stat -c %s "$img.zst") bytes)" \
    "sha256:" "$(cut -d' ' -f1 "$OUT/$IMG_NAME.img.zst.sha256")" \
    "kernel:" "$(cat "$base/kernel-version")" \
    "flash:" "zstdcat $img.zst | sudo dd of=/dev/sdX bs=4M conv=fsync status=progress"
