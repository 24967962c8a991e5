#!/usr/bin/env bash
# Starts dnsguard in the foreground the way ../shared/bench/dnsbench.py expects:
# listening on $BENCH_ADDR:$BENCH_PORT, forwarding to $BENCH_UPSTREAM, blocking $BENCH_BLOCKLIST;
# $BENCH_SERVER_EXTRA (TOML keys) goes into its [server] section (e.g. tls_listen), and
# $BENCH_EXTRA (TOML) is appended to its config (e.g. a [dnstap] section).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${DNSGUARD:-$here/../target/dist/dnsguard}"
cfg="$BENCH_WORK/dnsguard-bench-$BENCH_PORT.toml"
data="$BENCH_WORK/dnsguard-data-$BENCH_PORT"
# Each run starts with an empty query log, as dnsmasq and unbound start without state
# (BENCH_KEEP_DATA=1 keeps it: a log of millions of entries from earlier runs adds
# to startup time and ready RSS).
[ "${BENCH_KEEP_DATA:-0}" = 1 ] || rm -rf "$data"
mkdir -p "$BENCH_WORK"
cat > "$cfg" <<TOML
[server]
listen = ["$BENCH_ADDR:$BENCH_PORT"]
data_dir = "$data"
log = "warn"
${BENCH_SERVER_EXTRA:-}
[resolver]
upstreams = ["$BENCH_UPSTREAM"]
timeout_ms = 2000
[[lists]]
name = "bench"
source = "$BENCH_BLOCKLIST"
[list_updates]
interval_hours = 0
${BENCH_EXTRA:-}
TOML
exec "$bin" serve --config "$cfg"
