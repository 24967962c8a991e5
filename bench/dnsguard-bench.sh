#!/usr/bin/env bash
# Starts dnsguard in the foreground the way ../shared/bench/dnsbench.py expects:
# listening on $BENCH_ADDR:$BENCH_PORT, forwarding to $BENCH_UPSTREAM, blocking $BENCH_BLOCKLIST.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${DNSGUARD:-$here/../target/release/dnsguard}"
cfg="$BENCH_WORK/dnsguard-bench-$BENCH_PORT.toml"
mkdir -p "$BENCH_WORK"
cat > "$cfg" <<TOML
[server]
listen = ["$BENCH_ADDR:$BENCH_PORT"]
data_dir = "$BENCH_WORK/dnsguard-data-$BENCH_PORT"
log = "warn"
[resolver]
upstreams = ["$BENCH_UPSTREAM"]
timeout_ms = 2000
[[lists]]
name = "bench"
source = "$BENCH_BLOCKLIST"
[list_updates]
interval_hours = 0
TOML
exec "$bin" serve --config "$cfg"
