#!/usr/bin/env bash
# Instructions per query under callgrind: counts that stay the same on a busy
# machine, for comparing two builds. dnsguard (`--profile dist` build, 140k-name list,
# query log on, NSD upstream on loopback) answers 1,000 cache misses to warm up;
# the counters are zeroed, then 20,000 cached and 20,000 blocked queries are
# sent at 3,000 QPS. Prints each busy thread's instructions, naming it by its
# most expensive dnsguard function, and the total per query.
#
#   bench/instructions.sh                   # target/dist/dnsguard
#   bench/instructions.sh path/to/dnsguard  # another build
#   SPLIT=1 bench/instructions.sh ...       # also each phase alone (cached, blocked)
#   PORT=5341 WORK=/tmp/mine bench/instructions.sh ...  # beside another run
#   DNSTAP=1 bench/instructions.sh          # dnstap on, to an fstrm_capture on a Unix socket
#   EXTRA_TOML='...' bench/instructions.sh  # more config
#   ONLY=blocked bench/instructions.sh ...  # 40,000 diverse blocked names only
#   LOG=off bench/instructions.sh ...       # with `[query_log] enabled = false`
#
# Needs (Debian): valgrind dnsperf nsd bind9-dnsutils, and the queries of
# ../shared/bench/gen_queries.py (made on first use). Takes about a minute.
set -euo pipefail
source "$(dirname "$0")/common.sh"
bin="${1:-$root/target/dist/dnsguard}"
work="${WORK:-/tmp/dnsguard-instructions}"
port="${PORT:-5340}"
rm -rf "$work"
mkdir -p "$work"
start_upstream
head -1000 "$BENCH_QUERIES/cached.txt" >"$work/cached1k.txt"
for _ in $(seq 20); do cat "$work/cached1k.txt"; done >"$work/cached20k.txt"
head -20000 "$BENCH_QUERIES/blocked-small.txt" >"$work/blocked20k.txt"
head -40000 "$BENCH_QUERIES/blocked-small.txt" >"$work/blocked40k.txt"
cat >"$work/dnsguard.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
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
listen = "127.0.0.1:${WEB_PORT:-18424}"
${EXTRA_TOML:-}
TOML
[ "${LOG:-on}" = off ] && printf '[query_log]\nenabled = false\n' >>"$work/dnsguard.toml"
cpid=""
if [ -n "${DNSTAP:-}" ]; then
    fstrm_capture -t protobuf:dnstap.Dnstap -u "$work/tap.sock" -w "$work/out.tap" >/dev/null 2>&1 &
    cpid=$!
    for _ in $(seq 100); do [ -S "$work/tap.sock" ] && break; sleep 0.1; done
    printf '[dnstap]\ntarget = "unix:%s"\n' "$work/tap.sock" >>"$work/dnsguard.toml"
fi
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$work/cg.%p" \
    "$bin" serve --config "$work/dnsguard.toml" >"$work/server.log" 2>&1 &
vpid=$!
trap 'kill -TERM $vpid 2>/dev/null || true; wait $vpid 2>/dev/null || true
      [ -z "$cpid" ] || { kill -TERM $cpid 2>/dev/null; wait $cpid 2>/dev/null; } || true' EXIT
ready=""
for _ in $(seq 300); do
    if dig +tries=1 +time=2 @127.0.0.1 -p "$port" localhost A >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.5
done
[ -n "$ready" ] || { tail "$work/server.log"; echo "dnsguard did not start under valgrind" >&2; exit 1; }
dnsperf -s 127.0.0.1 -p "$port" -d "$work/cached1k.txt" -n 1 -Q 500 -t 10 >/dev/null 2>&1
callgrind_control -z "$vpid" >/dev/null
if [ "${ONLY:-}" = blocked ]; then
    dnsperf -s 127.0.0.1 -p "$port" -d "$work/blocked40k.txt" -n 1 -Q 3000 -t 10 >>"$work/dnsperf.log" 2>&1
else
    dnsperf -s 127.0.0.1 -p "$port" -d "$work/cached20k.txt" -n 1 -Q 3000 -t 10 >>"$work/dnsperf.log" 2>&1
    if [ -n "${SPLIT:-}" ]; then
        # A dump zeroes the counters: dump 1 holds the cached phase, dump 2 the blocked one.
        sleep 3
        callgrind_control -d "$vpid" >/dev/null
    fi
    dnsperf -s 127.0.0.1 -p "$port" -d "$work/blocked20k.txt" -n 1 -Q 3000 -t 10 >>"$work/dnsperf.log" 2>&1
fi
sleep 3
callgrind_control -d "$vpid" >/dev/null
sleep 2
# Prints each busy thread of dump $1 and the total over $2 queries.
report() {
    local total=0 f ir fns what
    for f in "$work"/cg.*."$1"-*; do
        ir=$(grep -E '^(summary|totals):' "$f" | head -n 1 | awk '{print $2}')
        [ -n "$ir" ] && [ "$ir" -ge 1000000 ] || continue
        # Threads are told apart by a function only they run (LTO inlines the rest).
        fns=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null | grep -oE 'dnsguard::[A-Za-z_:]+|sled::[a-z_]+|tokio::runtime' || true)
        what="other"
        for pair in "dns::udp::|DNS worker (UDP fast path)" \
            "querylog::wal::|query log: WAL thread (encoder)" \
            "querylog::writer::Writer::run|query log: writer" \
            "querylog::writer::|query log: flusher" "dnsguard::guard::|egress guard" \
            "dnsguard::dnstap::|dnstap writer" \
            "sled::|sled" "tokio::runtime|tokio (slow path, web)"; do
            if grep -q "${pair%%|*}" <<<"$fns"; then what=${pair#*|}; break; fi
        done
        printf '%14d  %s\n' "$ir" "$what"
        total=$((total + ir))
    done
    echo "total: $total instructions, $((total / $2)) per query"
}
grep -h "Queries lost" "$work/dnsperf.log" || true
if [ -n "${SPLIT:-}" ]; then
    echo "cached phase (20,000 queries):"
    report 1 20000
    echo "blocked phase (20,000 queries):"
    report 2 20000
else
    report 1 40000
fi
