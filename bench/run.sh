#!/usr/bin/env bash
# One run, one machine: dnsguard side by side with dnsmasq and unbound on the same
# 1.6 M-domain blocklist and the same loopback authoritative upstream, through the
# shared harness (../shared/bench/dnsbench.py), through four query mixes: blocked
# names, cached names, cache misses forwarded upstream, and a realistic mix of the
# three (`mixed`: 20% blocked, 65% cached, 15% misses; see common.sh). Prints QPS,
# QPS per server core, p50/p99 at a fixed rate, startup time to the first blocked
# answer, and RSS, with ratios against dnsmasq.
#
#   bench/run.sh                 # full comparison (about 13 minutes)
#   bench/run.sh --duration 5    # any extra dnsbench.py compare options
#
# Needs (Debian): dnsperf dnsmasq unbound nsd bind9-dnsutils knot-dnsutils.
set -euo pipefail
source "$(dirname "$0")/common.sh"
export WORK="${WORK:-/tmp/dnsbench}"
(cd "$root" && cargo build --profile dist --locked)
python3 "$shared/dnsbench.py" compare --list big \
    --server "dnsguard|5310|$here/dnsguard-bench.sh" \
    --baselines dnsmasq-address,unbound --modes pinned \
    --mixes blocked,cached,miss,mixed "$@"
