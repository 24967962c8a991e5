#!/usr/bin/env bash
# Capacity per server core, where one dnsperf cannot saturate a fast server: each
# server is pinned to CPU 0 and saturated from CPU 1 by ../shared/bench/blast
# (recvmmsg/sendmmsg), on blocked and on cached names, with the same 1.6 M-domain
# list and the same loopback NSD upstream. dnsguard runs with its query log on.
#
#   bench/capacity.sh            # dnsguard and dnsmasq, 10 s per mix
#   SECONDS_PER_MIX=20 bench/capacity.sh
#
# Needs (Debian): dnsmasq nsd bind9-dnsutils, and the queries of
# ../shared/bench/gen_queries.py (made on first use).
set -euo pipefail
source "$(dirname "$0")/common.sh"
secs="${SECONDS_PER_MIX:-10}"
work="${WORK:-/tmp/dnsguard-capacity}"
list="$root/../shared/blocklists/big-1.6m.domains.txt"
mkdir -p "$work"
start_upstream
# DNSGUARD=path runs that build instead of building this tree.
[ -n "${DNSGUARD:-}" ] || (cd "$root" && cargo build --profile dist --locked -q)

# dnsguard: the bench wrapper's config (forward to the NSD upstream, list, log on).
export BENCH_ADDR=127.0.0.1 BENCH_PORT=5320 BENCH_UPSTREAM=127.0.0.53:5300
export BENCH_BLOCKLIST="$list" BENCH_WORK="$work"
rm -rf "$work/dnsguard-data-5320"

# dnsmasq as Pi-hole's FTL runs it: address=/name/# for every listed name.
dconf="$work/dnsmasq.conf"
if [ ! -f "$work/dnsmasq-address.conf" ]; then
    awk '!/^#/ && NF {print "address=/" $1 "/#"}' "$list" >"$work/dnsmasq-address.conf"
fi
cat >"$dconf" <<CONF
listen-address=127.0.0.1
bind-interfaces
port=5321
no-resolv
no-hosts
server=127.0.0.53#5300
cache-size=10000
user=root
group=root
pid-file=
log-facility=-
conf-file=$work/dnsmasq-address.conf
CONF

for mix in blocked cached; do
    q="$BENCH_QUERIES/$mix.txt"
    echo "== dnsguard, $mix"
    "$shared/blast/capacity.sh" 5320 "$q" "$secs" -- "$here/dnsguard-bench.sh"
    echo "== dnsmasq, $mix"
    "$shared/blast/capacity.sh" 5321 "$q" "$secs" -- dnsmasq -k -C "$dconf"
done
