#!/usr/bin/env bash
# Encrypted DNS, dnsguard against unbound's own DoT and DoH listeners (issue #21):
#
# 1. capacity: `dnsperf -m dot`, and DoH (HTTP/2 GET, 4 connections x 50 streams)
#    from h2load (`dnsperf -m doh` stalls on dnsguard's answers: see
#    docs/PERFORMANCE.md "Encrypted DNS"; DOH_CLIENT=dnsperf to use it anyway),
#    blocked and cached names, 1.6 M-domain list (unbound: `local-zone:
#    always_null` per name, the 0.0.0.0 answer dnsguard gives), dnsguard's query
#    log on; each server pinned to CPU 0, the load generator on CPU 1; the two servers alternate (order flipped every run), RUNS runs; QPS, server
#    cores used and QPS per server core, then median and range per cell;
# 2. handshakes per second, full and resumed (TLS 1.3), from ./handshakes.py;
# 3. memory per idle DoT connection: IDLE_CONNS handshaken, silent connections,
#    VmRSS before and after (./idle_tls.py).
#
# Both servers present the same kind of certificate (a self-signed ECDSA P-256
# one: dnsguard makes its own, unbound gets one made by openssl).
#
#   bench/encrypted.sh                       # target/dist/dnsguard, 3 runs, 10 s per cell
#   DNSGUARD=/tmp/dg-main RUNS=5 SECONDS_PER_MIX=15 IDLE_CONNS=4000 bench/encrypted.sh
#
# Needs (Debian): dnsperf nghttp2-client (h2load) unbound (1.17+, with
# libnghttp2: `unbound -V`) nsd bind9-dnsutils openssl python3, and the queries of
# ../shared/bench/gen_queries.py (made on first use). Results: $WORK/results.tsv.
set -euo pipefail
source "$(dirname "$0")/common.sh"
secs="${SECONDS_PER_MIX:-10}"
runs="${RUNS:-3}"
idle="${IDLE_CONNS:-2000}"
hs_secs="${HANDSHAKE_SECONDS:-5}"
work="${WORK:-/tmp/dnsguard-encrypted}"
list="${LIST:-$root/../shared/blocklists/big-1.6m.domains.txt}"
export DNSGUARD="${DNSGUARD:-$root/target/dist/dnsguard}"
[ -x "$DNSGUARD" ] || { echo "no dnsguard binary at $DNSGUARD (cargo build --profile dist, or set DNSGUARD)" >&2; exit 1; }
mkdir -p "$work"
ulimit -n "$(ulimit -Hn)"  # each idle connection is a descriptor on both sides
start_upstream
cap=$((idle + 64))

# dnsguard: the bench wrapper's config plus the encrypted listeners; connection
# bounds and idle timeout raised so that the idle-connection count fits.
dg_udp=5360 dg_dot=5361 dg_doh=5362
export BENCH_ADDR=127.0.0.1 BENCH_PORT=$dg_udp BENCH_UPSTREAM=127.0.0.53:5300
export BENCH_BLOCKLIST="$list" BENCH_WORK="$work"
export BENCH_SERVER_EXTRA="tls_listen = [\"127.0.0.1:$dg_dot\"]
https_listen = [\"127.0.0.1:$dg_doh\"]
tcp_idle_timeout_secs = 300
tcp_max_connections = $cap
tcp_max_connections_per_client = $cap"
export BENCH_EXTRA=$'[web]\nenabled = false'

# unbound: one thread, the list as always_null local zones, forwarding to the
# same NSD upstream, DoT and DoH (HTTP/2) with a P-256 certificate.
ub_udp=5365 ub_dot=5366 ub_doh=5367
[ -f "$work/unbound.key" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -days 30 -subj /CN=unbound -addext subjectAltName=DNS:localhost \
    -keyout "$work/unbound.key" -out "$work/unbound.pem" 2>/dev/null
zones="$work/unbound-localzones.conf"
[ -f "$zones" ] && [ "$(cat "$zones.source" 2>/dev/null)" = "$list" ] ||
    { awk '!/^#/ && NF {print "local-zone: \"" $1 ".\" always_null"}' "$list" >"$zones" && echo "$list" >"$zones.source"; }
cat >"$work/unbound.conf" <<CONF
server:
  interface: 127.0.0.1@$ub_udp
  interface: 127.0.0.1@$ub_dot
  interface: 127.0.0.1@$ub_doh
  port: $ub_udp
  tls-port: $ub_dot
  https-port: $ub_doh
  tls-service-key: "$work/unbound.key"
  tls-service-pem: "$work/unbound.pem"
  http-endpoint: "/dns-query"
  do-ip6: no
  num-threads: 1
  # unbound shortens the idle timeout of all TCP connections once half its slots
  # are in use: twice the idle connections keep them open.
  incoming-num-tcp: $((2 * cap))
  tcp-idle-timeout: 300000
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  module-config: "iterator"
  include: "$zones"
forward-zone:
  name: "."
  forward-addr: 127.0.0.53@5300
CONF

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# start NAME UDP_PORT CMD...: pinned to CPU 0 in its own session; waits (bounded)
# until a blocked name is answered 0.0.0.0, i.e. the list is loaded.
blocked_probe=$(awk '!/^#/ && NF {print $1; exit}' "$list")
start() {
    local name=$1 port=$2
    shift 2
    setsid taskset -c 0 "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    eval "pid_$name=$!"
    local t0=$SECONDS
    until [ "$(dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" "$blocked_probe" A 2>/dev/null)" = 0.0.0.0 ]; do
        [ $((SECONDS - t0)) -lt 600 ] || { tail "$work/$name.log"; echo "$name did not start" >&2; exit 1; }
        sleep 0.5
    done
    echo "# $name ready in $((SECONDS - t0)) s, RSS $(awk '/VmRSS/ {print $2}' /proc/$!/status) kB"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); dnsguard $DNSGUARD; $(unbound -V | head -1)"
start dnsguard $dg_udp "$here/dnsguard-bench.sh"
start unbound $ub_udp unbound -d -c "$work/unbound.conf"
# Warm both caches with the cached names (and the upstream's), over UDP.
for port in $dg_udp $ub_udp; do
    taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$BENCH_QUERIES/cached.txt" -n 1 -Q 2000 -t 5 >/dev/null
done

# h2load's request lists: GET /dns-query?dns=... for the first 10,000 names of each
# query file (ID 0, RD, as RFC 8484 asks), the port filled in per server.
for mix in blocked cached; do
    python3 - "$BENCH_QUERIES/$mix.txt" "$work/doh-$mix.uris" <<'PY'
import base64, struct, sys
out = open(sys.argv[2], "w")
for n, line in enumerate(open(sys.argv[1])):
    if n == 10000:
        break
    name, qtype = line.split()[:2]
    wire = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    q = struct.pack(">HHHHHH", 0, 0x0100, 1, 0, 0, 0) + wire + struct.pack(">HH", {"A": 1, "AAAA": 28}.get(qtype, 1), 1)
    out.write("https://127.0.0.1:PORT/dns-query?dns=" + base64.urlsafe_b64encode(q).decode().rstrip("=") + "\n")
PY
done

# load SERVER MODE MIX RUN: one saturation run, one result row.
tck=$(getconf CLK_TCK)
results="$work/results.tsv"
printf 'run\tserver\tmode\tmix\tqps\tcores\tqps_per_core\tlost\n' >"$results"
load() {
    local server=$1 mode=$2 mix=$3 run=$4 pid port out c0 c1
    eval "pid=\$pid_$server"
    if [ "$server" = dnsguard ]; then port=$([ "$mode" = dot ] && echo $dg_dot || echo $dg_doh)
    else port=$([ "$mode" = dot ] && echo $ub_dot || echo $ub_doh); fi
    local qps lost cores
    c0=$(cpu_ticks "$pid")
    if [ "$mode" = doh ] && [ "${DOH_CLIENT:-h2load}" = h2load ]; then
        sed "s/PORT/$port/" "$work/doh-$mix.uris" >"$work/doh-$mix-$port.uris"
        out=$(timeout $((secs + 30)) taskset -c 1 h2load -D "$secs" -c 4 -m 50 -t 1 \
            -H 'accept: application/dns-message' -i "$work/doh-$mix-$port.uris" 2>&1) || true
        c1=$(cpu_ticks "$pid")
        qps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
        lost=$(awk '/^requests:/ {print $4 - $8}' <<<"$out")
    else
        out=$(timeout $((secs + 30)) taskset -c 1 dnsperf -m "$mode" -s 127.0.0.1 -p "$port" \
            -O doh-method=POST -d "$BENCH_QUERIES/$mix.txt" -l "$secs" -c 4 -q 200 -t 5 2>&1) || true
        c1=$(cpu_ticks "$pid")
        qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
        lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
    fi
    [ -n "$qps" ] || { echo "$out" | tail -5 >&2; qps=0; }
    cores=$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v s="$secs" 'BEGIN {printf "%.2f", (b - a) / t / s}')
    printf '%s\t%s\t%s\t%s\t%.0f\t%s\t%.0f\t%s\n' "$run" "$server" "$mode" "$mix" "$qps" "$cores" \
        "$(awk -v q="$qps" -v c="$cores" 'BEGIN {print (c > 0 ? q / c : 0)}')" "${lost:-?}" | tee -a "$results"
}

echo "== 1. capacity ($secs s each; DoT: dnsperf -c 4 -q 200; DoH: ${DOH_CLIENT:-h2load} -c 4 -m 50)"
for r in $(seq "$runs"); do
    order="dnsguard unbound"
    [ $((r % 2)) = 0 ] && order="unbound dnsguard"
    for mode in dot doh; do
        for mix in blocked cached; do
            for server in $order; do load "$server" "$mode" "$mix" "$r"; done
        done
    done
done
python3 - "$results" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
cells = {}
for r in rows:
    cells.setdefault((r["mode"], r["mix"], r["server"]), []).append(r)
print("mode  mix      server     QPS median [min-max]        QPS/core median [min-max]   ratio dnsguard/unbound (QPS, QPS/core)")
for mode in ("dot", "doh"):
    for mix in ("blocked", "cached"):
        med = {}
        for server in ("dnsguard", "unbound"):
            rs = cells.get((mode, mix, server), [])
            if not rs:
                continue
            q = [float(x["qps"]) for x in rs]
            c = [float(x["qps_per_core"]) for x in rs]
            med[server] = (statistics.median(q), statistics.median(c))
            print(f"{mode:5} {mix:8} {server:9} {med[server][0]:8.0f} [{min(q):.0f}-{max(q):.0f}]"
                  f"   {med[server][1]:8.0f} [{min(c):.0f}-{max(c):.0f}]")
        if len(med) == 2 and med["unbound"][0] > 0 and med["unbound"][1] > 0:
            print(f"{'':24} ratio {med['dnsguard'][0] / med['unbound'][0]:.2f}, "
                  f"{med['dnsguard'][1] / med['unbound'][1]:.2f}")
PY

echo "== 2. handshakes (TLS 1.3, one query per connection, $hs_secs s each; client on CPU 1)"
for r in $(seq "$runs"); do
    order="dnsguard unbound"
    [ $((r % 2)) = 0 ] && order="unbound dnsguard"
    for mode in new reuse; do
        for server in $order; do
            eval "pid=\$pid_$server"
            port=$([ "$server" = dnsguard ] && echo $dg_dot || echo $ub_dot)
            echo "run=$r server=$server $(taskset -c 1 python3 "$here/handshakes.py" "$port" "$hs_secs" "$mode" "$pid")"
        done
    done
done

echo "== 3. memory per idle DoT connection ($idle connections)"
for server in dnsguard unbound; do
    eval "pid=\$pid_$server"
    port=$([ "$server" = dnsguard ] && echo $dg_dot || echo $ub_dot)
    echo "server=$server $(taskset -c 1 python3 "$here/idle_tls.py" "$port" "$pid" "$idle")"
done
