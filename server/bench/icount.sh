#!/usr/bin/env bash
# Instructions per query of tpkd vs stock hickory serving the same key zone, by callgrind.
#
# Wall-clock rates on a shared 2-core machine wander; instruction counts do not. Each server
# runs under `valgrind --tool=callgrind` with instrumentation off until it answers (start-up
# and zone loading are not counted: sled's start-up spins for a time-dependent while), then
# counts a window in which dnsperf sends N queries, and, for a baseline, a window of the same
# shape with no queries. (window with N - empty window) / N is what one query costs the
# server in user space, all threads.
#
# Usage: server/bench/icount.sh [N]     (default N = 2000; needs valgrind, dnsperf, dig)
set -euo pipefail

N=${1:-2000}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REL=$ROOT/target/release
ORIGIN=bench.example.
die() {
    echo "icount.sh: error: $*" >&2
    exit 1
}
for t in valgrind dnsperf dig; do command -v $t >/dev/null || die "$t is missing (apt-get install valgrind dnsperf bind9-dnsutils)"; done
(cd "$ROOT" && cargo build --release -p twinpeaks-server >&2) || die "build failed"

WORK=$(mktemp -d /tmp/tp-icount.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$REL/tp" gen-zone --count 1000 --out "$WORK/zone" >/dev/null
PORT=15391
sed -i "s/^listen *=.*/listen = [\"127.0.0.1:$PORT\"]/" "$WORK/zone/tpkd.toml"

server_cmd() {
    case $1 in
        tpkd) echo "$REL/tpkd --config $WORK/zone/tpkd.toml" ;;
        hickory) echo "$REL/tp-dnsd --listen 127.0.0.1:$PORT --opaque-keyzone $ORIGIN=$WORK/zone/bench.keys" ;;
    esac
}

# Total instructions of one server run answering $2 queries; prints "instructions answered".
measure() {
    local s=$1 queries=$2 out="$WORK/$1.$2.cg"
    (cd "$WORK/zone" && exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" $(server_cmd "$s")) \
        >"$WORK/$s.$queries.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do
        dig +time=1 +tries=1 -p $PORT @127.0.0.1 $ORIGIN SOA 2>/dev/null | grep -q NOERROR && break
        kill -0 $pid 2>/dev/null || die "$s exited: $(tail -5 "$WORK/$s.$queries.log")"
        sleep 0.5
    done
    local answered=0
    sleep 1
    callgrind_control -i on $pid >/dev/null
    if ((queries > 0)); then
        head -n "$queries" "$WORK/zone/queries.txt" >"$WORK/q.txt"
        while (($(wc -l <"$WORK/q.txt") < queries)); do cat "$WORK/q.txt" "$WORK/q.txt" | head -n "$queries" >"$WORK/q2.txt"; mv "$WORK/q2.txt" "$WORK/q.txt"; done
        dnsperf -s 127.0.0.1 -p $PORT -d "$WORK/q.txt" -n 1 -c 1 -q 20 -t 30 >"$WORK/dnsperf.$s.log" 2>&1
        local done
        done=$(sed -n 's/.*Queries completed: *\([0-9]*\).*/\1/p' "$WORK/dnsperf.$s.log")
        answered=$done
    else
        sleep 2
    fi
    callgrind_control -i off $pid >/dev/null
    kill -TERM $pid
    wait $pid || true
    local total
    total=$(sed -n 's/^totals: *//p' "$out")
    [[ -n $total ]] || die "no callgrind summary for $s"
    echo "$total $answered"
}

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), valgrind $(valgrind --version)"
printf '%-34s %16s %16s %10s %14s\n' server "empty window" "query window" answered "instr/query"
declare -A per
for s in tpkd hickory; do
    read -r idle idle_n < <(measure $s 0)
    read -r busy busy_n < <(measure $s "$N")
    per[$s]=$(((busy - idle) / (busy_n - idle_n)))
    printf '%-34s %16d %16d %10d %14d\n' "$s" "$idle" "$busy" "$((busy_n - idle_n))" "${per[$s]}"
done
awk -v a="${per[tpkd]}" -v b="${per[hickory]}" 'BEGIN { printf "tpkd / stock hickory: %.3f\n", a / b }'
