#!/usr/bin/env bash
# Instructions per DoT and DoH query under callgrind (issue #21): counts that stay
# the same on a busy machine, for comparing builds. dnsguard (140k-name list, query
# log on, NSD upstream on loopback) is warmed over UDP with the 1,000 cached names;
# then, the counters zeroed before each phase and dumped after it, it answers
# QUERIES (10,000) queries per phase over one connection each:
#   DoT cached, DoT blocked  (dnsperf -m dot -c 1)
#   DoH cached, DoH blocked  (h2load, HTTP/2 GET /dns-query?dns=..., 1 connection x 10 streams)
# Prints the whole process's instructions per answered query for each phase (the
# one TLS handshake per phase included: about 1% of a phase).
#
#   bench/encrypted-instructions.sh                   # target/dist/dnsguard
#   bench/encrypted-instructions.sh path/to/dnsguard  # another build
#   PORT=5360 WORK=/tmp/mine bench/encrypted-instructions.sh ...  # beside another run
#
# Needs (Debian): valgrind dnsperf nghttp2-client nsd bind9-dnsutils.
set -euo pipefail
source "$(dirname "$0")/common.sh"
bin="${1:-$root/target/dist/dnsguard}"
work="${WORK:-/tmp/dnsguard-enc-instructions}"
port="${PORT:-5350}"
dot=$((port + 1))
doh=$((port + 2))
n="${QUERIES:-10000}"
rm -rf "$work"
mkdir -p "$work"
start_upstream
head -1000 "$BENCH_QUERIES/cached.txt" >"$work/cached1k.txt"
for _ in $(seq $((n / 1000))); do cat "$work/cached1k.txt"; done >"$work/cached.txt"
head -"$n" "$BENCH_QUERIES/blocked-small.txt" >"$work/blocked.txt"
for mix in cached blocked; do
    python3 - "$work/$mix.txt" "$work/$mix.uris" "$doh" <<'PY'
import base64, struct, sys
out = open(sys.argv[2], "w")
for line in open(sys.argv[1]):
    name, qtype = line.split()[:2]
    wire = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    q = struct.pack(">HHHHHH", 0, 0x0100, 1, 0, 0, 0) + wire + struct.pack(">HH", {"A": 1, "AAAA": 28}.get(qtype, 1), 1)
    out.write(f"https://127.0.0.1:{sys.argv[3]}/dns-query?dns=" + base64.urlsafe_b64encode(q).decode().rstrip("=") + "\n")
PY
done
cat >"$work/dnsguard.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
tls_listen = ["127.0.0.1:$dot"]
https_listen = ["127.0.0.1:$doh"]
data_dir = "$work/data"
log = "warn"
[resolver]
upstreams = ["127.0.0.53:5300"]
timeout_ms = 5000
[[lists]]
name = "bench"
source = "$root/../shared/blocklists/small-140k.domains.txt"
[list_updates]
interval_hours = 0
[web]
listen = "127.0.0.1:${WEB_PORT:-18434}"
TOML
valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" \
    "$bin" serve --config "$work/dnsguard.toml" >"$work/server.log" 2>&1 &
vpid=$!
# valgrind may take a while over SIGTERM: then SIGKILL.
stop() {
    kill -TERM "$vpid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$vpid" 2>/dev/null || return 0; sleep 0.2; done
    kill -KILL "$vpid" 2>/dev/null || true
}
trap 'stop; wait $vpid 2>/dev/null || true' EXIT
ready=""
for _ in $(seq 300); do
    if dig +tries=1 +time=2 @127.0.0.1 -p "$port" localhost A >/dev/null 2>&1 &&
        dig +tls +tries=1 +time=2 @127.0.0.1 -p "$dot" localhost A >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.5
done
[ -n "$ready" ] || { tail "$work/server.log"; echo "dnsguard did not start under valgrind" >&2; exit 1; }
dnsperf -s 127.0.0.1 -p "$port" -d "$work/cached1k.txt" -n 1 -Q 500 -t 10 >/dev/null 2>&1
dumps=0
# phase NAME CMD...: zero, run the client (it prints the answered count last), dump.
phase() {
    local name=$1 answered total f
    shift
    callgrind_control -z "$vpid" >/dev/null
    answered=$("$@" | tail -n 1)
    sleep 2
    callgrind_control -d "$vpid" >/dev/null
    dumps=$((dumps + 1))
    f="$work/cg.$vpid.$dumps"
    for _ in $(seq 50); do [ -s "$f" ] && break; sleep 0.2; done
    total=$(grep -E '^(summary|totals):' "$f" | head -n 1 | awk '{print $2}')
    printf '%-12s %8d answered  %14d instructions  %8d per query\n' \
        "$name" "$answered" "$total" $((total / (answered > 0 ? answered : 1)))
}
dot_run() {
    dnsperf -m dot -s 127.0.0.1 -p "$dot" -d "$1" -n 1 -c 1 -q 20 -Q 1500 -t 10 2>&1 |
        tee -a "$work/clients.log" | awk '/Queries completed:/ {print $3}'
}
doh_run() {
    h2load -n "$n" -c 1 -m 10 -t 1 -H 'accept: application/dns-message' -i "$1" 2>&1 |
        tee -a "$work/clients.log" | awk '/^requests:/ {print $8}'
}
echo "# $(date -u +%FT%TZ) $bin, $n queries per phase, load $(cut -d' ' -f1-3 /proc/loadavg)"
phase "DoT cached" dot_run "$work/cached.txt"
phase "DoT blocked" dot_run "$work/blocked.txt"
phase "DoH cached" doh_run "$work/cached.uris"
phase "DoH blocked" doh_run "$work/blocked.uris"
