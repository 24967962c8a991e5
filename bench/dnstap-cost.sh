#!/usr/bin/env bash
# The cost of dnstap (issue #22: capacity per core with dnstap on ≥ 95% of it off):
# dnsguard pinned to CPU 0 and saturated from CPU 1 (../shared/bench/blast), blocked
# and cached names, 1.6 M-domain list, query log on; dnstap off and on (every query
# to a real collector, fstrm_capture, writing to /dev/null), alternating, RUNS times.
#
#   bench/dnstap-cost.sh                 # target/dist/dnsguard, 2 runs, 10 s per mix
#   RUNS=3 SECONDS_PER_MIX=20 bench/dnstap-cost.sh
#
# Needs (Debian): fstrm-bin nsd bind9-dnsutils, and ../shared/bench/gen_queries.py's queries.
set -euo pipefail
source "$(dirname "$0")/common.sh"
secs="${SECONDS_PER_MIX:-10}"
runs="${RUNS:-2}"
work="${WORK:-/tmp/dnsguard-dnstap-cost}"
mkdir -p "$work"
start_upstream
# DNSGUARD=path runs that build instead of building this tree.
[ -n "${DNSGUARD:-}" ] || (cd "$root" && cargo build --profile dist --locked -q)
export BENCH_ADDR=127.0.0.1 BENCH_PORT=5322 BENCH_UPSTREAM=127.0.0.53:5300
export BENCH_BLOCKLIST="$root/../shared/blocklists/big-1.6m.domains.txt" BENCH_WORK="$work"
sock="$work/dnstap.sock"
rm -f "$sock"
fstrm_capture -t protobuf:dnstap.Dnstap -u "$sock" -w /dev/null >"$work/fstrm.log" 2>&1 &
collector=$!
trap 'kill $collector 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "fstrm_capture did not start" >&2; exit 1; }
for r in $(seq "$runs"); do
    order="off on"
    [ $((r % 2)) = 0 ] && order="on off"
    for tap in $order; do
        if [ "$tap" = on ]; then
            export BENCH_EXTRA=$'[dnstap]\ntarget = "unix:'"$sock"$'"'
        else
            export BENCH_EXTRA=""
        fi
        for mix in blocked cached; do
            echo "== run $r, dnstap $tap, $mix"
            "$shared/blast/capacity.sh" "$BENCH_PORT" "$BENCH_QUERIES/$mix.txt" "$secs" -- "$here/dnsguard-bench.sh"
        done
    done
done
