#!/usr/bin/env bash
# Cold-cache recursive resolution with DNSSEC validation: dnsguard against unbound in
# one run, alternating (issue #18's recursion benchmark).
#
# A signed hierarchy on loopback: NSD serves the root (127.66.0.2), `bench.`
# (127.66.0.3) and ZONES signed zones `zN.bench.` (127.66.0.4), each with NAMES
# names. Every run starts the resolver afresh (empty cache) and asks every name once,
# CONC queries outstanding (dnsperf). So each answer costs a delegation walk: the
# zone's DS and DNSKEY, its NS and the name, validated up to the root's key.
# Reports queries per second and p50/p99 latency per run, then the median and the
# spread (min–max) per resolver.
#
#   bench/recursion.sh                   # target/dist/dnsguard
#   bench/recursion.sh path/to/dnsguard  # another build
#   ZONES=500 NAMES=4 RUNS=5 CONC=50 bench/recursion.sh
#   ONLY=dnsguard bench/recursion.sh     # one resolver (e.g. to count its upstream queries)
#
# Needs (Debian): nsd ldnsutils unbound dnsperf bind9-dnsutils. Takes about a minute.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(realpath "${1:-$root/target/dist/dnsguard}")"
ZONES="${ZONES:-200}" NAMES="${NAMES:-10}" RUNS="${RUNS:-3}" CONC="${CONC:-20}"
work="${WORK:-/tmp/dnsguard-recursion}"
net=127.66.0
[ -x "$bin" ] || { echo "no dnsguard binary at $bin (cargo build --profile dist)" >&2; exit 1; }

pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap stop_all EXIT
for pid in $(pgrep -f "$work/" || true); do kill "$pid" 2>/dev/null || true; done
rm -rf "$work"
mkdir -p "$work"/{zones,keys,nsd-root,nsd-tld,nsd-leaf,unbound,dnsguard}
cd "$work/keys"

# sign ZONE FILE: signs zones/FILE.zone into FILE.zone.signed; prints the DS record.
sign() {
    local ksk zsk
    ksk=$(ldns-keygen -a ECDSAP256SHA256 -k "$1")
    zsk=$(ldns-keygen -a ECDSAP256SHA256 "$1")
    ldns-signzone -f "../zones/$2.zone.signed" "../zones/$2.zone" "$zsk" "$ksk" >/dev/null
    if [ "$1" = "." ]; then cp "$ksk.key" ../root-anchor.key; fi
    ldns-key2ds -n -2 "$ksk.key"
}
soa() { printf '$TTL 3600\n%s IN SOA ns.%s hostmaster.%s 1 3600 600 86400 300\n' "$1" "$2" "$2"; }

echo "== signing $ZONES zones of $NAMES names (ldns-signzone)"
tld_ds=""
{
    soa bench. bench. bench.
    echo "bench. IN NS ns.bench."
    echo "ns.bench. IN A $net.3"
} >../zones/bench.zone
: >"$work/queries.txt"
for z in $(seq "$ZONES"); do
    {
        soa "z$z.bench." "z$z.bench." "z$z.bench."
        echo "z$z.bench. IN NS ns.z$z.bench."
        echo "ns.z$z.bench. IN A $net.4"
        for n in $(seq "$NAMES"); do echo "w$n.z$z.bench. IN A 192.0.2.$((n % 250 + 1))"; done
    } >"../zones/z$z.bench.zone"
    for n in $(seq "$NAMES"); do echo "w$n.z$z.bench. A"; done >>"$work/queries.txt"
done
# Zones signed in parallel (the DS records collected in order afterwards).
for z in $(seq "$ZONES"); do echo "$z"; done |
    xargs -P "$(nproc)" -I{} bash -c "$(declare -f sign); sign z{}.bench. z{}.bench >z{}.ds"
for z in $(seq "$ZONES"); do
    { echo "z$z.bench. IN NS ns.z$z.bench."; echo "ns.z$z.bench. IN A $net.4"; cat "z$z.ds"; } >>../zones/bench.zone
done
tld_ds=$(sign bench. bench)
{
    soa . root. root.
    echo ". IN NS ns.root."
    echo "ns.root. IN A $net.2"
    echo "bench. IN NS ns.bench."
    echo "ns.bench. IN A $net.3"
    echo "$tld_ds"
} >../zones/root.zone
sign . root >/dev/null
# The queries in random order: consecutive names rarely share a zone.
shuf "$work/queries.txt" -o "$work/queries.txt"

nsd_conf() { # name addr zones...
    local d="$work/$1" addr=$2
    shift 2
    cat >"$d/nsd.conf" <<EOF
server:
  ip-address: $addr
  port: 53
  username: ""
  chroot: ""
  zonesdir: $work/zones
  database: ""
  pidfile: $d/nsd.pid
  zonelistfile: $d/zone.list
  xfrdfile: $d/xfrd.state
  xfrdir: $d
  logfile: $d/nsd.log
  server-count: 1
  do-ip6: no
remote-control:
  control-enable: no
EOF
    for zn in "$@"; do
        printf 'zone:\n  name: "%s"\n  zonefile: %s.zone.signed\n' "$zn" "$([ "$zn" = . ] && echo root || echo "${zn%.}")" >>"$d/nsd.conf"
    done
}
nsd_conf nsd-root "$net.2" .
nsd_conf nsd-tld "$net.3" bench.
leaf=()
for z in $(seq "$ZONES"); do leaf+=("z$z.bench."); done
nsd_conf nsd-leaf "$net.4" "${leaf[@]}"
for n in nsd-root nsd-tld nsd-leaf; do
    nsd -d -c "$work/$n/nsd.conf" >"$work/$n/out.log" 2>&1 &
    pids+=($!)
done
# wait_for ADDR PORT NAME: until it answers NAME (bounded).
wait_for() {
    for _ in $(seq 100); do
        dig +tries=1 +time=1 -p "$2" "@$1" "$3" A >/dev/null 2>&1 && return 0
    done
    echo "$1:$2 did not answer $3" >&2
    return 1
}
wait_for "$net.2" 53 . && wait_for "$net.3" 53 bench. && wait_for "$net.4" 53 "w1.z$ZONES.bench."

printf '.\t3600000\tIN\tNS\tns.root.\nns.root.\t3600000\tIN\tA\t%s\n' "$net.2" >"$work/unbound/root.hints"
cat >"$work/unbound/unbound.conf" <<EOF
server:
  interface: $net.5@53
  do-not-query-localhost: no
  root-hints: "$work/unbound/root.hints"
  trust-anchor-file: "$work/root-anchor.key"
  username: ""
  chroot: ""
  directory: "$work/unbound"
  pidfile: "$work/unbound/unbound.pid"
  logfile: "$work/unbound/unbound.log"
  use-syslog: no
  access-control: 127.0.0.0/8 allow
  do-ip6: no
  num-threads: 1
remote-control:
  control-enable: no
EOF
cat >"$work/dnsguard/dnsguard.toml" <<EOF
[server]
listen = ["$net.6:53"]
data_dir = "$work/dnsguard/data"
log = "warn,hickory_resolver::recursor=error"
[resolver]
mode = "recursive"
root_hints = ["$net.2"]
trust_anchor_file = "$work/root-anchor.key"
dnssec = true
recursor_allow_servers = ["127.0.0.0/8"]
timeout_ms = 4000
EOF

# run_one NAME: starts NAME afresh, checks it validates, asks every name once;
# prints "qps p50_ms p99_ms answered".
run_one() {
    local addr
    rm -rf "$work/dnsguard/data"
    if [ "$1" = dnsguard ]; then
        addr=$net.6
        "$bin" serve --config "$work/dnsguard/dnsguard.toml" >"$work/dnsguard/out.log" 2>&1 &
    else
        addr=$net.5
        unbound -d -c "$work/unbound/unbound.conf" >"$work/unbound/out.log" 2>&1 &
    fi
    local pid=$!
    # Ready and validating: the root's own SOA with AD (cached, so it barely warms).
    for _ in $(seq 100); do
        dig +tries=1 +time=1 +dnssec "@$addr" . SOA 2>/dev/null | grep -q 'flags:.* ad' && break
    done
    dig +dnssec "@$addr" . SOA | grep -q 'flags:.* ad' || { echo "$1 does not validate" >&2; kill $pid; return 1; }
    dnsperf -s "$addr" -d "$work/queries.txt" -n 1 -q "$CONC" -t 10 -v >"$work/$1.out" 2>&1 || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    python3 - "$work/$1.out" <<'PY'
import re, sys
lat, noerror = [], 0
qps = "0"
for line in open(sys.argv[1]):
    m = re.match(r"^> (\S+) .* ([0-9.]+)$", line)
    if m:
        noerror += m.group(1) == "NOERROR"
        lat.append(float(m.group(2)) * 1000)
    m = re.search(r"Queries per second:\s+([0-9.]+)", line)
    if m:
        qps = m.group(1)
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(f"{float(qps):.0f} {pct(0.5):.2f} {pct(0.99):.2f} {noerror}")
PY
}

total=$(wc -l <"$work/queries.txt")
echo "== $total names in $ZONES zones, cold cache each run, $CONC outstanding, $RUNS runs alternating"
printf '%-4s %-9s %8s %8s %8s %9s\n' run resolver qps p50_ms p99_ms noerror
: >"$work/results"
for r in $(seq "$RUNS"); do
    order="dnsguard unbound"
    [ $((r % 2)) = 0 ] && order="unbound dnsguard"
    [ -n "${ONLY:-}" ] && order=$ONLY
    for s in $order; do
        read -r qps p50 p99 ok < <(run_one "$s")
        printf '%-4s %-9s %8s %8s %8s %5s/%s\n' "$r" "$s" "$qps" "$p50" "$p99" "$ok" "$total"
        echo "$s $qps $p50 $p99 $ok" >>"$work/results"
    done
done
echo "== median (min–max) over $RUNS runs"
python3 - "$work/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    s, *v = line.split()
    rows.setdefault(s, []).append([float(x) for x in v])
for s, runs in rows.items():
    cols = list(zip(*runs))
    f = lambda i: f"{statistics.median(cols[i]):.2f} ({min(cols[i]):.2f}–{max(cols[i]):.2f})"
    print(f"{s:9s} qps {f(0)}  p50 ms {f(1)}  p99 ms {f(2)}")
PY
