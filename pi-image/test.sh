#!/usr/bin/env bash
# Boot test of the image pi-image/build.sh made: boots its root file system and kernel
# (taken from the image's own FAT partition) under qemu-system-aarch64 -M virt, with
# user-mode networking that forwards the DNS and
# dashboard ports to loopback, inside a network namespace of its own with only loopback,
# and checks from the host:
#   blocked names come back blocked (UDP and TCP), an allowed name is not blocked,
#   the dashboard serves its login page and accepts the first-boot password printed on
#   the console, SSH is off; reports power-on -> first DNS answer and dnsguard's RSS.
#   pi-image/test.sh [IMAGE]      (default: pi-image/out/dnsguard-pi-arm64.img, or its .zst)
# Environment: TEST_DNS_PORT (25353), TEST_WEB_PORT (28080), TEST_SSH_PORT (28022),
# BOOT_TIMEOUT seconds until the first DNS answer (180), QEMU_SMP (2), QEMU_MEM_MIB (1024).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

OUT=${OUT_DIR:-$PI_DIR/out}
img=${1:-$OUT/dnsguard-pi-arm64.img}
DNS_PORT=${TEST_DNS_PORT:-25353}
WEB_PORT=${TEST_WEB_PORT:-28080}
SSH_PORT=${TEST_SSH_PORT:-28022}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-180}
BLOCKED=doubleclick.net              # blocklists/dnsguard-default.txt
BLOCKED_SUB=stats.g.doubleclick.net  # below a listed domain
EXFIL=oast.fun                       # blocklists/exfil-endpoints.txt

for c in qemu-system-aarch64 mdir mcopy dig curl sfdisk; do
    command -v "$c" >/dev/null && continue
    apt_install qemu-system-arm mtools bind9-dnsutils curl fdisk
    break
done
command -v qemu-system-aarch64 >/dev/null || die "qemu-system-aarch64 not found (apt-get install qemu-system-arm)"
for f in "$REPO_DIR/blocklists/dnsguard-default.txt" "$REPO_DIR/blocklists/exfil-endpoints.txt"; do
    [[ -f $f ]] || die "missing $f"
done
grep -qx "$BLOCKED" "$REPO_DIR/blocklists/dnsguard-default.txt" || die "$BLOCKED is no longer in the default blocklist: update test.sh"
grep -qx "$EXFIL" "$REPO_DIR/blocklists/exfil-endpoints.txt" || die "$EXFIL is no longer in the exfil list: update test.sh"

# Isolation: qemu and the host-side queries run in a new network namespace with only a
# loopback interface, so the guest's outbound traffic (its upstream resolvers, NTP) cannot
# leave this machine. (qemu's restrict=on would also do that, but it drops the guest's UDP
# replies to forwarded ports.)
if [[ -z ${DNSGUARD_TEST_NETNS:-} ]]; then
    need_root "pi-image/test.sh (network namespace)"
    command -v unshare >/dev/null || die "unshare not found (util-linux)"
    exec unshare --net -- env DNSGUARD_TEST_NETNS=1 "$0" "$@"
fi
ip link set lo up || die "cannot bring up loopback in the test's network namespace"
ip -o link show | grep -v ' lo:' | grep -q . && die "the test's network namespace has interfaces besides lo"

work=$(mktemp -d "${TMPDIR:-/tmp}/dnsguard-pi-test.XXXXXX")
qemu_pid=""
cleanup() {
    if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [[ ! -f $img && -f $img.zst ]]; then
    info "decompressing $img.zst"
    zstd -q -d "$img.zst" -o "$work/image.img" || die "cannot decompress $img.zst"
    img=$work/image.img
fi
[[ -f $img ]] || die "no image at $img: run pi-image/build.sh first"
sha_file=$OUT/dnsguard-pi-arm64.img.zst.sha256
if [[ $img == "$OUT/dnsguard-pi-arm64.img" && -f $sha_file ]]; then
    (cd "$OUT" && sha256sum --quiet -c "$sha_file") || die "the compressed image does not match $sha_file"
fi

for port in "$DNS_PORT" "$WEB_PORT" "$SSH_PORT"; do
    if ss -Htuln "sport = :$port" | grep -q .; then die "port $port is in use on this host: set TEST_DNS_PORT/TEST_WEB_PORT/TEST_SSH_PORT"; fi
done

log "kernel and initrd from the image's FAT partition"
boot_start=$(sfdisk -d "$img" | awk -F'[=,]' '/start=/ {gsub(/ /, "", $2); print $2; exit}')
[[ -n $boot_start ]] || die "cannot read the partition table of $img"
fat="$img@@$((boot_start * 512))"
kernel=$(mdir -b -i "$fat" ::/ | sed -n 's|^::/\(vmlinuz-.*\)$|\1|p' | sort -V | tail -n 1)
initrd=${kernel/vmlinuz-/initrd.img-}
[[ -n $kernel ]] || die "no vmlinuz-* on the image's boot partition"
mcopy -n -i "$fat" "::/$kernel" "$work/vmlinuz" || die "cannot copy $kernel out of the image"
mcopy -n -i "$fat" "::/$initrd" "$work/initrd" || die "cannot copy $initrd out of the image"
info "$kernel, $initrd"

log "booting under qemu-system-aarch64 -M virt (no acceleration; the image is not modified)"
serial=$OUT/test-serial.log
: >"$serial"
fwd="hostfwd=udp:127.0.0.1:$DNS_PORT-:53,hostfwd=tcp:127.0.0.1:$DNS_PORT-:53"
fwd+=",hostfwd=tcp:127.0.0.1:$WEB_PORT-:80,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22"
start=$(date +%s.%N)
qemu-system-aarch64 -M virt -cpu cortex-a72 -smp "${QEMU_SMP:-2}" -m "${QEMU_MEM_MIB:-1024}" \
    -kernel "$work/vmlinuz" -initrd "$work/initrd" \
    -append "root=LABEL=RASPIROOT rw rootwait console=ttyAMA0 net.ifnames=0 dnsguard.report" \
    -drive "if=none,id=hd0,format=raw,file=$img,snapshot=on" -device virtio-blk-pci,drive=hd0 \
    -netdev "user,id=n0,$fwd" -device virtio-net-pci,netdev=n0,romfile= \
    -display none -monitor none -serial "file:$serial" -no-reboot &
qemu_pid=$!
elapsed() { awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN {printf "%.1f", n - s}'; }
alive() { kill -0 "$qemu_pid" 2>/dev/null || { tail -n 40 "$serial" >&2; die "qemu exited (serial log above; all of it in $serial)"; }; }
ask() { dig @127.0.0.1 -p "$DNS_PORT" +time=2 +tries=1 "$@"; }

info "waiting for the first DNS answer (at most ${BOOT_TIMEOUT}s; serial console: $serial)"
first=""
while :; do
    alive
    for proto in +notcp +tcp; do
        if answer=$(ask "$proto" +short "$BLOCKED" A 2>/dev/null) && [[ -n $answer ]]; then
            first=$(elapsed)
            break 2
        fi
    done
    if awk -v e="$(elapsed)" -v t="$BOOT_TIMEOUT" 'BEGIN {exit !(e > t)}'; then
        tail -n 40 "$serial" >&2
        grep -a 'FAILED\|dnsguard' "$serial" | tail -n 20 >&2 || true
        die "no DNS answer on 127.0.0.1:$DNS_PORT within ${BOOT_TIMEOUT}s of power-on (serial log: $serial)"
    fi
    sleep 0.5
done
info "first DNS answer ${first}s after power-on: $BLOCKED A -> $answer (${proto#+})"

fails=0
check() { # description, command...
    local what=$1
    shift
    if "$@"; then echo "   PASS  $what"; else echo "   FAIL  $what"; fails=$((fails + 1)); fi
}
blocked_a() { [[ $(ask "$@" +short A) == 0.0.0.0 ]]; }
blocked_aaaa() { [[ $(ask "$@" +short AAAA) == "::" ]]; }
not_blocked() { # no upstream is reachable in the sandbox: an allowed name gets SERVFAIL, not 0.0.0.0
    local out
    out=$(ask "$1" A) || return 1
    grep -q 'status: SERVFAIL' <<<"$out" && ! grep -q '0\.0\.0\.0' <<<"$out"
}
log "checks"
check "$BLOCKED A over UDP -> 0.0.0.0 (default blocklist)" blocked_a "$BLOCKED"
check "$BLOCKED AAAA over UDP -> ::" blocked_aaaa "$BLOCKED"
check "$BLOCKED A over TCP -> 0.0.0.0" blocked_a +tcp "$BLOCKED"
check "$BLOCKED_SUB (a name below a listed domain) -> 0.0.0.0" blocked_a "$BLOCKED_SUB"
check "$EXFIL (exfil-endpoints list) -> 0.0.0.0" blocked_a "$EXFIL"
check "example.com is not blocked (SERVFAIL: no upstream reachable from the sandbox)" not_blocked example.com

login_page() {
    local page
    page=$(curl -fsS -L --max-time 10 "http://127.0.0.1:$WEB_PORT/") || return 1
    grep -q 'dnsguard · log in' <<<"$page" && grep -q 'action="/login"' <<<"$page"
}
check "dashboard http://<pi>:80/ answers with its login page" login_page
pw=$(grep -a -o 'DNSGUARD_DASHBOARD_PASSWORD=[A-Za-z0-9]*' "$serial" | head -n 1 | cut -d= -f2 || true)
login_ok() {
    [[ -n $pw ]] || { echo "   (no first-boot password on the console)" >&2; return 1; }
    curl -sS --max-time 20 -o /dev/null -D "$work/login.h" --data-urlencode "password=$pw" \
        "http://127.0.0.1:$WEB_PORT/login" || return 1
    grep -qi '^set-cookie:' "$work/login.h"
}
login_wrong() {
    local code
    code=$(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' --data-urlencode "password=wrong-$RANDOM" \
        "http://127.0.0.1:$WEB_PORT/login") || return 1
    [[ $code == 401 ]]
}
check "the first-boot password was printed on the console" test -n "$pw"
check "the dashboard accepts it (session cookie)" login_ok
check "the dashboard refuses a wrong password (401)" login_wrong
ssh_off() { # hostfwd accepts the connection; with sshd off the guest closes it without a banner
    local banner
    banner=$(timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SSH_PORT && head -c 7 <&3" 2>/dev/null || true)
    [[ $banner != SSH-2.0 ]]
}
check "SSH is off (no /boot/firmware/ssh)" ssh_off

log "dnsguard's memory in the guest (dnsguard-report on the console)"
rss="" since=$(wc -l <"$serial")
for _ in $(seq 1 40); do
    alive
    line=$(tail -n +"$((since + 1))" "$serial" | grep -a 'dnsguard-report: .*rss_kib=' | tail -n 1 || true)
    [[ -n $line ]] && break
    sleep 0.5
done
if [[ -n $line ]]; then
    rss=$(sed -n 's/.*rss_kib=\([0-9]*\).*/\1/p' <<<"$line")
    peak=$(sed -n 's/.*peak_rss_kib=\([0-9]*\).*/\1/p' <<<"$line")
    info "$(tr -d '\r' <<<"$line")"
else
    info "no dnsguard-report line on the console within 20s"
fi
# Wait (bounded) for the report's sockets and log lines, and show them.
for _ in $(seq 1 40); do
    grep -aq 'dnsguard-report: log:' "$serial" && break
    alive
    sleep 0.5
done
grep -a 'dnsguard-report: \(socket\|log\):' "$serial" | tr -d '\r' | sed 's/^.*dnsguard-report: /   /' || true
grep -a '\[FAILED\]' "$serial" | tr -d '\r' | sed 's/^/   warning: /' || true

log "result"
printf '   %-34s %s\n' "date:" "$(date -u +%FT%TZ)" \
    "image:" "$img" \
    "power-on -> first DNS answer:" "${first}s (qemu -M virt, TCG, ${QEMU_SMP:-2} vCPUs)" \
    "dnsguard RSS (VmRSS / VmHWM):" "${rss:+$((rss / 1024)) MiB ($rss KiB) / $((peak / 1024)) MiB ($peak KiB)}" \
    "checks failed:" "$fails"
[[ $fails -eq 0 ]] || die "$fails check(s) failed (serial log: $serial)"
echo "   boot test passed"
