#!/usr/bin/env bash
# Boot test of the image pi-image/build.sh made: boots its root file system and kernel
# (taken from the image's own FAT partition) under qemu-system-aarch64 -M virt, with
# user-mode networking that forwards the DNS and
# dashboard ports to loopback, inside a network namespace of its own with only loopback,
# and checks from the host:
#   blocked names come back blocked (UDP and TCP, DNS over TLS on 853 and HTTPS on 443 with
#   kdig pinning the SPKI pin the console printed, whose certificate fingerprint is the
#   one openssl s_client is shown), an allowed name is not blocked,
#   the dashboard serves its login page and accepts the first-boot password printed on
#   the console, its Settings data shows the certificate the console showed, SSH is off;
#   reports power-on -> first DNS answer and dnsguard's RSS.
#   pi-image/test.sh [IMAGE]      (default: pi-image/out/dnsguard-pi-arm64.img, or its .zst)
# Environment: TEST_DNS_PORT (25353), TEST_WEB_PORT (28080), TEST_SSH_PORT (28022), TEST_DOH_PORT (28443),
# TEST_DOT_PORT (28853),
# BOOT_TIMEOUT seconds until the first DNS answer (180), QEMU_SMP (2), QEMU_MEM_MIB (1024),
# QEMU_APPEND (more kernel options, for experiments).
# Optional big-list step (off unless BIG_LIST is set), after the checks above:
#   BIG_LIST=FILE (a plain-domain list, e.g. ../shared/blocklists/big-1.6m.domains.txt;
#   a relative path is taken from the current directory, else from the source tree)
#   is served over HTTP from the host side (python3 -m http.server on 127.0.0.1 in the
#   test's network namespace; the guest reaches it as 10.0.2.2), added as a URL list
#   through the dashboard API with a logged-in session (POST /api/v1/lists, then
#   "update now": POST /api/v1/lists/update?name=...), and the test waits until names
#   from it are answered blocked over DNS; it reports the time from adding the list to
#   the first blocked answer and dnsguard's VmRSS / VmHWM with the list loaded, and fails
#   when VmRSS is above RSS_LIMIT_MIB. TEST_HTTP_PORT (28000), BIG_LIST_TIMEOUT seconds
#   for the add, the update and the first blocked answer, each (900), RSS_LIMIT_MIB (64),
#   BIG_LIST_SETTLE seconds of memory reports after the list is loaded (30).
#   Then (unless BIG_LIST_RESTART=0) the VM is reset through qemu's monitor and the same
#   is measured after dnsguard starts with the downloaded list (the guest's writes live
#   in qemu's snapshot overlay until qemu exits).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

OUT=${OUT_DIR:-$PI_DIR/out}
img=${1:-$OUT/dnsguard-pi-arm64.img}
DNS_PORT=${TEST_DNS_PORT:-25353}
WEB_PORT=${TEST_WEB_PORT:-28080}
SSH_PORT=${TEST_SSH_PORT:-28022}
DOH_PORT=${TEST_DOH_PORT:-28443}
DOT_PORT=${TEST_DOT_PORT:-28853}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-180}
BLOCKED=doubleclick.net              # blocklists/dnsguard-default.txt
BLOCKED_SUB=stats.g.doubleclick.net  # below a listed domain
EXFIL=oast.fun                       # blocklists/exfil-endpoints.txt
BIG_LIST=${BIG_LIST:-}
HTTP_PORT=${TEST_HTTP_PORT:-28000}
BIG_LIST_TIMEOUT=${BIG_LIST_TIMEOUT:-900}
RSS_LIMIT_MIB=${RSS_LIMIT_MIB:-64}
BIG_LIST_SETTLE=${BIG_LIST_SETTLE:-30}
BIG_LIST_RESTART=${BIG_LIST_RESTART:-1}
BIG_LIST_NAME=big-list-test          # the list's name in the guest's config

for c in qemu-system-aarch64 mdir mcopy dig kdig openssl curl sfdisk; do
    command -v "$c" >/dev/null && continue
    apt_install qemu-system-arm mtools bind9-dnsutils knot-dnsutils openssl curl fdisk
    break
done
command -v qemu-system-aarch64 >/dev/null || die "qemu-system-aarch64 not found (apt-get install qemu-system-arm)"
for f in "$REPO_DIR/blocklists/dnsguard-default.txt" "$REPO_DIR/blocklists/exfil-endpoints.txt"; do
    [[ -f $f ]] || die "missing $f"
done
grep -qx "$BLOCKED" "$REPO_DIR/blocklists/dnsguard-default.txt" || die "$BLOCKED is no longer in the default blocklist: update test.sh"
grep -qx "$EXFIL" "$REPO_DIR/blocklists/exfil-endpoints.txt" || die "$EXFIL is no longer in the exfil list: update test.sh"
if [[ -n $BIG_LIST ]]; then
    # Absolute before the namespace re-exec; relative: from here, else from the source tree.
    if [[ $BIG_LIST != /* && ! -e $BIG_LIST && -e $REPO_DIR/$BIG_LIST ]]; then BIG_LIST=$REPO_DIR/$BIG_LIST; fi
    [[ -f $BIG_LIST && -r $BIG_LIST ]] || die "BIG_LIST=$BIG_LIST: no such readable file"
    BIG_LIST=$(cd "$(dirname "$BIG_LIST")" && pwd)/$(basename "$BIG_LIST")
    export BIG_LIST
    command -v python3 >/dev/null || die "BIG_LIST needs python3 (its http.server serves the list to the guest)"
    [[ $RSS_LIMIT_MIB =~ ^[0-9]+$ && $BIG_LIST_TIMEOUT =~ ^[0-9]+$ && $BIG_LIST_SETTLE =~ ^[1-9][0-9]*$ && $BIG_LIST_SETTLE -le 600 ]] \
        || die "RSS_LIMIT_MIB, BIG_LIST_TIMEOUT and BIG_LIST_SETTLE (1-600) must be whole numbers"
    [[ $BIG_LIST_RESTART == [01] ]] || die "BIG_LIST_RESTART must be 0 or 1"
fi

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
qemu_pid="" http_pid="" add_pid=""
cleanup() {
    local p
    for p in "$add_pid" "$http_pid" "$qemu_pid"; do
        if [[ -n $p ]] && kill -0 "$p" 2>/dev/null; then
            kill "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
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

for port in "$DNS_PORT" "$WEB_PORT" "$SSH_PORT" "$DOH_PORT" "$DOT_PORT" ${BIG_LIST:+"$HTTP_PORT"}; do
    if ss -Htuln "sport = :$port" | grep -q .; then die "port $port is in use on this host: set TEST_DNS_PORT/TEST_WEB_PORT/TEST_SSH_PORT/TEST_DOH_PORT/TEST_DOT_PORT/TEST_HTTP_PORT"; fi
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
fwd+=",hostfwd=tcp:127.0.0.1:$DOH_PORT-:443,hostfwd=tcp:127.0.0.1:$DOT_PORT-:853"
# Without BIG_LIST: no monitor, and a reboot ends qemu. The big-list step's restart
# resets the VM through a monitor socket instead.
vm_control=(-monitor none -no-reboot)
if [[ -n $BIG_LIST && $BIG_LIST_RESTART == 1 ]]; then vm_control=(-monitor "unix:$work/monitor.sock,server=on,wait=off"); fi
start=$(date +%s.%N)
qemu-system-aarch64 -M virt -cpu cortex-a72 -smp "${QEMU_SMP:-2}" -m "${QEMU_MEM_MIB:-1024}" \
    -kernel "$work/vmlinuz" -initrd "$work/initrd" \
    -append "root=LABEL=RASPIROOT rw rootwait console=ttyAMA0 net.ifnames=0 dnsguard.report${QEMU_APPEND:+ $QEMU_APPEND}" \
    -drive "if=none,id=hd0,format=raw,file=$img,snapshot=on" -device virtio-blk-pci,drive=hd0 \
    -netdev "user,id=n0,$fwd" -device virtio-net-pci,netdev=n0,romfile= \
    -display none "${vm_control[@]}" -serial "file:$serial" &
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
# The certificate is the one the image made at first boot: dig does not verify it
# without +tls-ca, so this checks the DoH listener, not the trust.
blocked_doh() { [[ $(dig @127.0.0.1 -p "$DOH_PORT" +https +time=5 +tries=1 +short "$BLOCKED" A) == 0.0.0.0 ]]; }
check "$BLOCKED A over DNS over HTTPS (port 443) -> 0.0.0.0" blocked_doh
# The certificate's identity as the console showed it (dnsguard-tls-banner.service), and
# what the encrypted listeners present: kdig pins the console's SPKI pin, so a wrong
# certificate fails the query; openssl s_client reads the served certificate.
for _ in $(seq 1 120); do
    grep -aq 'DNSGUARD_TLS_SPKI_PIN=' "$serial" && break
    alive
    sleep 0.5
done
pin=$(grep -a -o 'DNSGUARD_TLS_SPKI_PIN=[A-Za-z0-9+/=]*' "$serial" | head -n 1 | cut -d= -f2- || true)
console_fp=$(grep -a -o 'certificate SHA-256: [0-9A-F:]*' "$serial" | head -n 1 | cut -d' ' -f3 || true)
check "the certificate's SHA-256 and SPKI pin were printed on the console" test -n "$pin" -a -n "$console_fp"
served_fp() { # port: the SHA-256 fingerprint of the certificate served there
    openssl s_client -connect "127.0.0.1:$1" </dev/null 2>/dev/null \
        | openssl x509 -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2
}
same_fp() { [[ -n $console_fp && $(served_fp "$1") == "$console_fp" ]]; }
check "DNS over TLS (port 853) serves the certificate the console showed" same_fp "$DOT_PORT"
check "DNS over HTTPS (port 443) serves the same certificate" same_fp "$DOH_PORT"
kdig_pinned() { # port, +tls or +https: the blocked name's A record, with the console's pin
    [[ -n $pin ]] || return 1
    [[ $(kdig @127.0.0.1 -p "$1" "$2" "+tls-pin=$pin" +timeout=5 +retry=0 +short "$BLOCKED" A) == 0.0.0.0 ]]
}
check "$BLOCKED A over DNS over TLS (kdig +tls, pinned) -> 0.0.0.0" kdig_pinned "$DOT_PORT" +tls
check "$BLOCKED A over DNS over HTTPS (kdig +https, pinned) -> 0.0.0.0" kdig_pinned "$DOH_PORT" +https
curl_doh() { # curl resolves through the DoH URL: it then tries the blocked name's 0.0.0.0
    local out
    out=$(curl -sv --max-time 10 --doh-url "https://127.0.0.1:$DOH_PORT/dns-query" --doh-insecure \
        -o /dev/null "http://$BLOCKED:$WEB_PORT/" 2>&1 || true)
    grep -q "Trying 0\.0\.0\.0:$WEB_PORT" <<<"$out"
}
check "$BLOCKED through curl --doh-url https://<pi>:443/dns-query -> 0.0.0.0" curl_doh
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
    curl -sS --max-time 20 -o /dev/null -D "$work/login.h" -c "$work/session" --data-urlencode "password=$pw" \
        "http://127.0.0.1:$WEB_PORT/login" || return 1
    grep -qi '^set-cookie:' "$work/login.h"
}
dashboard_fp() { # the Settings page's certificate (GET /api/v1/encrypted, logged in) is the console's
    local json
    [[ -n $console_fp && -n $pin && -s $work/session ]] || return 1
    json=$(curl -fsS --max-time 20 -b "$work/session" "http://127.0.0.1:$WEB_PORT/api/v1/encrypted") || return 1
    grep -qiF "\"sha256\":\"$console_fp\"" <<<"$json" && grep -qF "\"spki_pin\":\"$pin\"" <<<"$json"
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
check "the dashboard's Settings page shows the console's certificate SHA-256 and SPKI pin" dashboard_fp
ssh_off() { # hostfwd accepts the connection; with sshd off the guest closes it without a banner
    local banner
    banner=$(timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SSH_PORT && head -c 7 <&3" 2>/dev/null || true)
    [[ $banner != SSH-2.0 ]]
}
check "SSH is off (no /boot/firmware/ssh)" ssh_off

log "dnsguard's memory in the guest (dnsguard-report on the console)"
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$2"; } # NAME LINE: NAME=digits from a report line
mib() { if [[ -n $1 ]]; then awk -v k="$1" 'BEGIN {printf "%.1f MiB (%d KiB)", k / 1024, k}'; else echo "?"; fi; }
rss="" since=$(wc -l <"$serial")
for _ in $(seq 1 40); do
    alive
    line=$(tail -n +"$((since + 1))" "$serial" | grep -a 'dnsguard-report: .*rss_kib=' | tail -n 1 || true)
    [[ -n $line ]] && break
    sleep 0.5
done
if [[ -n $line ]]; then
    rss=$(field rss_kib "$line") peak=$(field peak_rss_kib "$line")
    anon=$(field anon_kib "$line") file=$(field file_kib "$line")
    info "$(tr -d '\r' <<<"$line" | sed 's/^.*dnsguard-report: //')"
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
background_niced() { grep -aq 'dnsguard-report: threads:.* querylog-wal=5' "$serial"; }
check "background threads at nice 5 (setpriority allowed by the unit's system call filter)" background_niced
# The report's first line (before its first memory line) gives the THP mode.
thp_madvise() { grep -aq 'dnsguard-report: thp_mode=madvise' "$serial"; }
check "transparent huge pages: madvise, not always (/etc/tmpfiles.d/transparent-hugepage.conf)" thp_madvise

# --- optional: the big list (BIG_LIST=FILE) -------------------------------------
big_result=()
if [[ -n $BIG_LIST ]]; then
    log "big list: $(basename "$BIG_LIST") through the dashboard API (BIG_LIST)"
    big_entries_file=$(grep -cv '^[[:space:]]*\(#.*\)\?$' "$BIG_LIST" || true)
    info "$BIG_LIST: $big_entries_file rule lines, $(du -h "$BIG_LIST" | cut -f1)"
    # Names to wait for: the list's last and middle rule lines, which must not be in the bundled lists.
    probes=()
    for n in "$(grep -v '^[[:space:]]*\(#.*\)\?$' "$BIG_LIST" | tail -n 1)" \
        "$(grep -v '^[[:space:]]*\(#.*\)\?$' "$BIG_LIST" | sed -n "$(((big_entries_file + 1) / 2))p")"; do
        [[ $n =~ ^[A-Za-z0-9_.-]+\.[A-Za-z0-9-]+$ ]] || die "BIG_LIST: '$n' is not a plain domain line: BIG_LIST must be a plain-domain list"
        grep -qxF "$n" "$REPO_DIR"/blocklists/*.txt && die "BIG_LIST: probe name $n is also in a bundled list; use another list"
        probes+=("$n")
    done
    info "probe names: ${probes[*]}"
    for n in "${probes[@]}"; do check "$n is not blocked before the list is added" not_blocked "$n"; done

    # The list over HTTP from the host side: the guest's 10.0.2.2 is this namespace's loopback.
    mkdir -p "$work/http"
    big_file=$(basename "$BIG_LIST")
    ln -s "$BIG_LIST" "$work/http/$big_file"
    python3 -m http.server --bind 127.0.0.1 --directory "$work/http" "$HTTP_PORT" >"$work/http.log" 2>&1 &
    http_pid=$!
    for _ in $(seq 1 40); do
        curl -fsS -o /dev/null --max-time 2 -I "http://127.0.0.1:$HTTP_PORT/$big_file" 2>/dev/null && break
        kill -0 "$http_pid" 2>/dev/null || { cat "$work/http.log" >&2; die "python3 -m http.server exited"; }
        sleep 0.5
    done
    curl -fsS -o /dev/null --max-time 2 -I "http://127.0.0.1:$HTTP_PORT/$big_file" \
        || die "python3 -m http.server does not serve $big_file on 127.0.0.1:$HTTP_PORT within 20s"
    url="http://10.0.2.2:$HTTP_PORT/$big_file"
    info "serving $url (host side: 127.0.0.1:$HTTP_PORT)"

    # A dashboard session (cookie jar) and its CSRF token, as the browser gets them.
    jar=$work/cookies
    code=$(curl -sS --max-time 20 -c "$jar" -o /dev/null -w '%{http_code}' --data-urlencode "password=$pw" \
        "http://127.0.0.1:$WEB_PORT/login") || code=000
    [[ $code == 303 ]] || die "big list: dashboard login answered HTTP $code, not 303"
    csrf=$(curl -fsS --max-time 20 -b "$jar" "http://127.0.0.1:$WEB_PORT/api/v1/session" \
        | sed -n 's/.*"csrf":"\([0-9a-f]*\)".*/\1/p') || true
    [[ -n $csrf ]] || die "big list: no CSRF token from /api/v1/session"
    api() { # METHOD PATH [JSON]: prints the body, then the HTTP status on a line of its own
        local args=(-sS --max-time "$BIG_LIST_TIMEOUT" -b "$jar" -X "$1" -H "X-CSRF-Token: $csrf" -w '\n%{http_code}')
        [[ -n ${3:-} ]] && args+=(-H 'Content-Type: application/json' --data "$3")
        curl "${args[@]}" "http://127.0.0.1:$WEB_PORT$2"
    }

    # dnsguard's memory just before (its last report line).
    pre=$(grep -a 'dnsguard-report: .*rss_kib=' "$serial" | tail -n 1 | tr -d '\r' || true)
    pre_rss=$(field rss_kib "$pre") pre_anon=$(field anon_kib "$pre") pre_file=$(field file_kib "$pre")
    info "before adding: ${pre#*dnsguard-report: }"

    # Add it (the server downloads it, compiles the filter, applies it, then answers):
    # the request runs in the background while DNS is polled for the first blocked answer.
    big_since=$(wc -l <"$serial")
    t_add=$(date +%s.%N)
    since_add() { awk -v s="$t_add" -v n="$(date +%s.%N)" 'BEGIN {printf "%.1f", n - s}'; }
    api POST /api/v1/lists "{\"name\":\"$BIG_LIST_NAME\",\"source\":\"$url\"}" >"$work/add.out" 2>&1 &
    add_pid=$!
    info "POST /api/v1/lists {\"name\":\"$BIG_LIST_NAME\",\"source\":\"$url\"}; waiting (at most ${BIG_LIST_TIMEOUT}s) for ${probes[0]} to be blocked"
    t_blocked=""
    while :; do
        alive
        if blocked_a "${probes[0]}" 2>/dev/null; then t_blocked=$(since_add); break; fi
        if ! kill -0 "$add_pid" 2>/dev/null && [[ $(tail -n 1 "$work/add.out") != 200 ]]; then
            cat "$work/add.out" >&2
            die "big list: POST /api/v1/lists failed (above); the list is not blocking"
        fi
        if awk -v e="$(since_add)" -v t="$BIG_LIST_TIMEOUT" 'BEGIN {exit !(e > t)}'; then
            grep -a 'dnsguard-report: log:' "$serial" | tail -n 8 >&2 || true
            die "big list: ${probes[0]} not answered blocked within ${BIG_LIST_TIMEOUT}s of adding the list"
        fi
        sleep 0.5
    done
    info "first blocked answer ${t_blocked}s after the list was added: ${probes[0]} A -> 0.0.0.0"
    add_ok=0
    if wait "$add_pid"; then add_ok=1; fi
    add_pid=""
    t_add_done=$(since_add)
    add_body=$(sed '$d' "$work/add.out" | tr -d '\n')
    add_added() { [[ $add_ok == 1 && $(tail -n 1 "$work/add.out") == 200 ]] && grep -q '"ok":true' <<<"$add_body" && grep -q '"warning":null' <<<"$add_body"; }
    check "POST /api/v1/lists adds the URL list, downloaded without a warning (${t_add_done}s): $add_body" add_added

    # "Update now", as the Lists page's button does (unchanged file: a conditional GET).
    t=$(date +%s.%N)
    api POST "/api/v1/lists/update?name=$BIG_LIST_NAME" >"$work/update.out" 2>&1 || true
    t_update_end=$(date +%s.%N)
    t_update=$(awk -v s="$t" -v n="$t_update_end" 'BEGIN {printf "%.1f", n - s}')
    update_body=$(sed '$d' "$work/update.out" | tr -d '\n')
    update_ok() { [[ $(tail -n 1 "$work/update.out") == 200 ]] && grep -q "\"$BIG_LIST_NAME\":\"\\(NotModified\\|New\\)" <<<"$update_body"; }
    check "POST /api/v1/lists/update?name=$BIG_LIST_NAME (update now, ${t_update}s): $update_body" update_ok

    lists_json=$(curl -fsS --max-time 60 -b "$jar" "http://127.0.0.1:$WEB_PORT/api/v1/lists" || true)
    big_entries=$(python3 -c '
import json, sys
for l in json.loads(sys.stdin.read() or "[]"):
    if l.get("name") == sys.argv[1]:
        print(l.get("entries", 0), l.get("invalid", 0))
' "$BIG_LIST_NAME" <<<"$lists_json" || true)
    entries_ok() { [[ -n $big_entries ]] && ((${big_entries% *} * 100 >= big_entries_file * 99)); }
    check "GET /api/v1/lists: $BIG_LIST_NAME has ${big_entries% *} entries, ${big_entries#* } invalid (file: $big_entries_file lines)" entries_ok
    for n in "${probes[@]}"; do
        check "$n A over UDP -> 0.0.0.0 ($BIG_LIST_NAME)" blocked_a "$n"
        check "$n A over TCP -> 0.0.0.0" blocked_a +tcp "$n"
    done
    check "$BLOCKED still blocked (default blocklist)" blocked_a "$BLOCKED"

    # The dnsguard-report lines (every 5 s) the console shows in the next
    # BIG_LIST_SETTLE seconds.
    settle_reports() {
        local from
        from=$(wc -l <"$serial")
        for _ in $(seq 1 "$((BIG_LIST_SETTLE * 2))"); do alive; sleep 0.5; done
        tail -n +"$((from + 1))" "$serial" | grep -a 'dnsguard-report: .*rss_kib=' | tr -d '\r' || true
    }

    # Memory with the list loaded: the dnsguard-report lines (every 5 s) of the next
    # BIG_LIST_SETTLE seconds (dnsguard's malloc_trim runs every 10 s); the last one
    # counts; the highest VmRSS in the window is shown too.
    info "dnsguard's memory with the list loaded (dnsguard-report, next ${BIG_LIST_SETTLE}s)"
    big_lines=$(settle_reports)
    [[ -n $big_lines ]] || die "big list: no dnsguard-report line on the console within ${BIG_LIST_SETTLE}s"
    printf '%s\n' "$big_lines" | sed 's/^.*dnsguard-report: /   /'
    last=$(tail -n 1 <<<"$big_lines")
    big_rss=$(field rss_kib "$last") big_peak=$(field peak_rss_kib "$last")
    big_anon=$(field anon_kib "$last") big_file=$(field file_kib "$last")
    big_max=$(while read -r l; do field rss_kib "$l"; done <<<"$big_lines" | sort -n | tail -n 1)
    # The service's log lines about the list (the report prints the last ones once a minute).
    for _ in $(seq 1 140); do
        tail -n +"$((big_since + 1))" "$serial" | grep -aq "dnsguard-report: log: .*$BIG_LIST_NAME" && break
        alive
        sleep 0.5
    done
    tail -n +"$((big_since + 1))" "$serial" | grep -a 'dnsguard-report: log:' | tr -d '\r' \
        | grep -a "$BIG_LIST_NAME\|filter compiled\|list update\|config" | sort -u | sed 's/^.*dnsguard-report: /   /' || true
    rss_ok() { ((big_rss <= RSS_LIMIT_MIB * 1024)); }
    check "dnsguard VmRSS with $BIG_LIST_NAME loaded $(mib "$big_rss") <= $RSS_LIMIT_MIB MiB" rss_ok
    big_result=(
        "big list:" "$(basename "$BIG_LIST"), ${big_entries% *} entries in the guest (${big_entries#* } invalid)"
        "list added -> first blocked answer:" "${t_blocked}s (POST /api/v1/lists returned after ${t_add_done}s; update now ${t_update}s)"
        "RSS just before adding it:" "$(mib "$pre_rss") (anon $(mib "$pre_anon"), file-backed $(mib "$pre_file"))"
        "RSS, big list (VmRSS / VmHWM):" "$(mib "$big_rss") / $(mib "$big_peak"); limit $RSS_LIMIT_MIB MiB"
        "  of VmRSS: anon / file-backed:" "$(mib "$big_anon") / $(mib "$big_file"); highest VmRSS in the ${BIG_LIST_SETTLE}s: $(mib "$big_max")"
    )

    # After a restart: dnsguard reads the downloaded copy at start (and its start-up
    # update gets "not modified"), which is how a Pi runs after its next reboot.
    if [[ $BIG_LIST_RESTART == 1 ]]; then
        log "big list: after a restart of the guest (the list read from disk at start)"
        # The guest cannot be told to sync: its kernel writes dirty data back within about
        # 35 s (dirty_expire 30 s, the flusher every 5 s; ext4 commits every 5 s). Wait that
        # out after the last change, then reset the VM: the snapshot overlay keeps the
        # guest's writes for as long as this qemu runs.
        while awk -v s="$t_update_end" -v n="$(date +%s.%N)" 'BEGIN {exit !(n - s < 45)}'; do alive; sleep 1; done
        restart_from=$(wc -l <"$serial")
        python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
time.sleep(0.3)
s.sendall(b"system_reset\n")
time.sleep(0.5)
' "$work/monitor.sock" || die "big list: cannot reset the VM through qemu's monitor ($work/monitor.sock)"
        start=$(date +%s.%N)
        info "VM reset; waiting (at most ${BOOT_TIMEOUT}s) for ${probes[0]} to be answered blocked"
        restart_first=""
        while :; do
            alive
            if blocked_a "${probes[0]}" 2>/dev/null; then restart_first=$(elapsed); break; fi
            if awk -v e="$(elapsed)" -v t="$BOOT_TIMEOUT" 'BEGIN {exit !(e > t)}'; then
                tail -n +"$((restart_from + 1))" "$serial" | tail -n 40 >&2
                die "big list: ${probes[0]} not answered blocked within ${BOOT_TIMEOUT}s of the reset"
            fi
            sleep 0.5
        done
        info "${probes[0]} answered blocked ${restart_first}s after the reset"
        check "after the restart: ${probes[1]} A -> 0.0.0.0 (list read from disk)" blocked_a "${probes[1]}"
        check "after the restart: $BLOCKED A -> 0.0.0.0" blocked_a "$BLOCKED"
        info "dnsguard's memory after the restart (dnsguard-report, next ${BIG_LIST_SETTLE}s)"
        r_lines=$(settle_reports)
        [[ -n $r_lines ]] || die "big list: no dnsguard-report line on the console within ${BIG_LIST_SETTLE}s of the restart"
        printf '%s\n' "$r_lines" | sed 's/^.*dnsguard-report: /   /'
        tail -n +"$((restart_from + 1))" "$serial" | grep -a 'dnsguard-report: log:' | tr -d '\r' \
            | grep -a "$BIG_LIST_NAME\|filter compiled\|list update\|ready" | sort -u | sed 's/^.*dnsguard-report: /   /' || true
        last=$(tail -n 1 <<<"$r_lines")
        r_rss=$(field rss_kib "$last") r_peak=$(field peak_rss_kib "$last")
        r_anon=$(field anon_kib "$last") r_file=$(field file_kib "$last")
        r_ok() { ((r_rss <= RSS_LIMIT_MIB * 1024)); }
        check "dnsguard VmRSS after the restart with $BIG_LIST_NAME $(mib "$r_rss") <= $RSS_LIMIT_MIB MiB" r_ok
        big_result+=(
            "after a restart: reset -> blocked:" "${restart_first}s (the list compiled from disk at start)"
            "RSS after restart (VmRSS / VmHWM):" "$(mib "$r_rss") / $(mib "$r_peak"); limit $RSS_LIMIT_MIB MiB"
            "  of VmRSS: anon / file-backed:" "$(mib "$r_anon") / $(mib "$r_file")"
        )
    fi
fi

log "result"
printf '   %-34s %s\n' "date:" "$(date -u +%FT%TZ)" \
    "image:" "$img" \
    "power-on -> first DNS answer:" "${first}s (qemu -M virt, TCG, ${QEMU_SMP:-2} vCPUs)" \
    "dnsguard RSS (VmRSS / VmHWM):" "${rss:+$(mib "$rss") / $(mib "$peak")}" \
    "  of VmRSS: anon / file-backed:" "${anon:+$(mib "$anon") / $(mib "$file")}" \
    "${big_result[@]}" \
    "checks failed:" "$fails"
[[ $fails -eq 0 ]] || die "$fails check(s) failed (serial log: $serial)"
echo "   boot test passed"
