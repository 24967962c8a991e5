# Sourced by the bench scripts: where things are, and the shared query files.
#   here    this directory          root    the repository
#   shared  ../shared/bench (the harness, query generator and NSD upstream)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/.."
shared="$root/../shared/bench"
export BENCH_QUERIES="${BENCH_QUERIES:-/tmp/dnsguard-bench-queries}"
# The query files of ../shared/bench/gen_queries.py, made on first use.
[ -f "$BENCH_QUERIES/blocked.txt" ] && [ -f "$BENCH_QUERIES/blocked-small.txt" ] ||
    python3 "$shared/gen_queries.py"
# The realistic mix (`--mixes ...,mixed`), as a home network's dashboard shows it: per
# 20 queries 4 blocked (20%), 13 cached (65%), 3 forwarded misses (15%, unique names:
# 2 M lines, so a 10 s run at 150k QPS never asks a miss name twice).
[ -f "$BENCH_QUERIES/mixed.txt" ] ||
    python3 "$here/mix.py" "$BENCH_QUERIES" "$BENCH_QUERIES/mixed.txt" \
        --blocked 4 --cached 13 --miss 3 --prefix r

# Starts the loopback NSD upstream (127.0.0.53:5300) unless it runs already.
# (Its own WORK, not a calling script's: one shared NSD, whatever WORK says.)
start_upstream() {
    env -u WORK "$shared/upstream/upstream.sh" start >/dev/null
}
