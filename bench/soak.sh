#!/usr/bin/env bash
# Soak: dnsguard (query log on, 1.6 M-domain list) under a mixed load at a fixed
# rate for a bounded time, on loopback. Mix per 20 queries: 8 blocked, 8 cached,
# 3 forwarded to the NSD upstream (unique names), 1 tunnel-like name (flagged);
# SOAK_MIX=realistic takes #24's realistic mix instead (4 blocked, 13 cached, 3
# misses: 20% / 65% / 15%).
# First a 10 s saturation run of the same mix measures the maximum; the soak then
# runs at SOAK_LOAD percent of it (default 80) for SOAK_MINUTES (default 10), or
# at SOAK_QPS queries per second when that is set (#24's RSS target: 20,000).
# Prints dnsperf's result (lost queries, rcodes), the kernel's UDP receive-buffer
# drops during the soak, the RSS curve (every 10 s, also in
# $WORK/soak-rss.csv) and the query log's dropped-entry and write-error counts.
#
#   bench/soak.sh
#   SOAK_MINUTES=2 bench/soak.sh
#
# Needs (Debian): dnsperf nsd bind9-dnsutils python3.
set -euo pipefail
source "$(dirname "$0")/common.sh"
minutes="${SOAK_MINUTES:-10}"
load="${SOAK_LOAD:-80}"
work="${WORK:-/tmp/dnsguard-soak}"
mkdir -p "$work"
start_upstream
# DNSGUARD=path runs that build instead of building this tree.
[ -n "${DNSGUARD:-}" ] || (cd "$root" && cargo build --profile dist --locked -q)

mix="$work/mix.txt"
case "${SOAK_MIX:-soak}" in
realistic) python3 "$here/mix.py" "$BENCH_QUERIES" "$mix" --blocked 4 --cached 13 --miss 3 --prefix t ;;
*) python3 "$here/mix.py" "$BENCH_QUERIES" "$mix" --blocked 8 --cached 8 --miss 3 --tunnel 1 --prefix s ;;
esac

export BENCH_ADDR=127.0.0.1 BENCH_PORT=5330 BENCH_UPSTREAM=127.0.0.53:5300
export BENCH_BLOCKLIST="$root/../shared/blocklists/big-1.6m.domains.txt" BENCH_WORK="$work"
rm -rf "$work/dnsguard-data-5330"
setsid "$here/dnsguard-bench.sh" >"$work/dnsguard.log" 2>&1 &
pid=$!
trap 'kill -TERM -- -$pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 150); do
    dig +tries=1 +time=1 @127.0.0.1 -p 5330 doubleclick.net A 2>/dev/null | grep -q "0.0.0.0" && break
    sleep 0.2
done
server=$(pgrep -P "$pid" dnsguard || echo "$pid")
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$server/status"; }

echo "== saturation (10 s, same mix)"
max=$(dnsperf -s 127.0.0.1 -p 5330 -d "$mix" -c 4 -q 200 -l 10 2>&1 |
    awk '/Queries per second/ {print int($4)}')
rate=${SOAK_QPS:-$((max * load / 100))}
echo "max ${max} QPS -> soak at ${rate} QPS for ${minutes} min"

echo "seconds,rss_mb" >"$work/soak-rss.csv"
(
    t=0
    while kill -0 "$server" 2>/dev/null; do
        echo "$t,$(rss)" >>"$work/soak-rss.csv"
        sleep 10
        t=$((t + 10))
    done
) &
sampler=$!
# Datagrams the kernel dropped from full receive buffers (any UDP socket here:
# dnsguard's, dnsperf's, NSD's), to tell them from queries dnsguard lost.
rcvbuf_errors() { awk '/^Udp:/ {if (!n) {for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; n = 1} else print $c}' /proc/net/snmp; }
drops_before=$(rcvbuf_errors)
timeout $((minutes * 60 + 60)) dnsperf -s 127.0.0.1 -p 5330 -d "$mix" -c 4 -q 500 \
    -Q "$rate" -l $((minutes * 60)) 2>&1 | sed -n '/Statistics/,$p' | head -30
kill "$sampler" 2>/dev/null || true
echo "== UDP receive-buffer drops during the soak (kernel, all sockets): $(($(rcvbuf_errors) - drops_before))"
echo "== RSS (MB) every 10 s"
tail -n +2 "$work/soak-rss.csv" | cut -d, -f2 | tr '\n' ' '
echo
echo "== query log"
"$root/target/dist/dnsguard" stats --config "$work/dnsguard-bench-5330.toml" \
    --since "$((minutes + 2))m" --format json |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print({k: s.get(k) for k in ("total", "log_dropped", "log_write_errors", "log_last_error")})'
