#!/usr/bin/env bash
# Instructions per query of tpkd vs stock hickory, NSD and Knot serving the same key zone, by
# callgrind, in one run.
#
# Wall-clock rates on a shared 2-core machine wander; instruction counts do not. Each server
# runs under `valgrind --tool=callgrind` with instrumentation off until it answers (start-up
# and zone loading are not counted: sled's start-up spins for a time-dependent while), then
# counts a window in which dnsperf sends N queries, and, for a baseline, a window of the same
# shape with no queries. (window with N - empty window) / N is what one query costs the
# server in user space, all threads (and, for NSD, which forks its server, all processes).
#
# Usage: server/bench/icount.sh [N]     (default N = 2000; needs valgrind, dnsperf, dig, nsd, knot)
# Knobs (environment):
#   ICOUNT_SERVERS  subset/order of: tpkd tpkd-hickory hickory nsd knot   (default all five;
#                   tpkd-hickory is tpkd with fast_path = false: every query on the hickory path)
#   ICOUNT_NAMES    members (default): each member's TYPE65300, in order; nxdomain: the same
#                   names with "nx-" in front, none of which exists (NXDOMAIN with the SOA)
#   ICOUNT_BIN      a directory holding tp, tpkd and tp-dnsd to measure instead of building
#                   target/release (e.g. a copy of an earlier build, for a before/after run)
set -euo pipefail

N=${1:-2000}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REL=${ICOUNT_BIN:-$ROOT/target/release}
SERVERS=${ICOUNT_SERVERS:-"tpkd tpkd-hickory hickory nsd knot"}
NAMES=${ICOUNT_NAMES:-members}
ORIGIN=bench.example.
export PATH=$PATH:/usr/sbin:/sbin
die() {
    echo "icount.sh: error: $*" >&2
    exit 1
}
for t in valgrind callgrind_control dnsperf dig; do command -v $t >/dev/null || die "$t is missing (apt-get install valgrind dnsperf bind9-dnsutils)"; done
for s in $SERVERS; do
    case $s in
        nsd) command -v nsd >/dev/null || die "nsd is missing (apt-get install nsd)" ;;
        knot) command -v knotd >/dev/null || die "knotd is missing (apt-get install knot)" ;;
        tpkd | tpkd-hickory | hickory) ;;
        *) die "unknown server '$s' in ICOUNT_SERVERS (known: tpkd tpkd-hickory hickory nsd knot)" ;;
    esac
done
if [[ -z ${ICOUNT_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release -p twinpeaks-server >&2) || die "build failed"
fi

WORK=$(mktemp -d /tmp/tp-icount.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$REL/tp" gen-zone --count 1000 --out "$WORK/zone" >/dev/null
PORT=15391
sed -i "s/^listen *=.*/listen = [\"127.0.0.1:$PORT\"]/" "$WORK/zone/tpkd.toml"
{ cat "$WORK/zone/tpkd.toml"; echo "fast_path = false"; } >"$WORK/zone/tpkd-hickory.toml"

# NSD and Knot serve the same records from the RFC 3597 zone file, one worker each (as in
# dnsperf.sh).
mkdir -p "$WORK/nsd" "$WORK/knot/db"
cat >"$WORK/nsd/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$PORT
    port: $PORT
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$WORK/nsd"
    pidfile: "$WORK/nsd/nsd.pid"
    database: ""
    zonelistfile: "$WORK/nsd/zone.list"
    xfrdfile: "$WORK/nsd/xfrd.state"
    xfrdir: "$WORK/nsd"
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "$ORIGIN"
    zonefile: "$WORK/zone/bench.rfc3597.zone"
EOF
cat >"$WORK/knot/knot.conf" <<EOF
server:
    rundir: "$WORK/knot"
    pidfile: "$WORK/knot/knot.pid"
    listen: 127.0.0.1@$PORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$WORK/knot/db"
zone:
  - domain: $ORIGIN
    storage: "$WORK/knot"
    file: "$WORK/zone/bench.rfc3597.zone"
    zonefile-sync: -1
    journal-content: none
EOF

server_cmd() {
    case $1 in
        tpkd) echo "$REL/tpkd --config $WORK/zone/tpkd.toml" ;;
        tpkd-hickory) echo "$REL/tpkd --config $WORK/zone/tpkd-hickory.toml" ;;
        hickory) echo "$REL/tp-dnsd --listen 127.0.0.1:$PORT --opaque-keyzone $ORIGIN=$WORK/zone/bench.keys" ;;
        nsd) echo "nsd -d -c $WORK/nsd/nsd.conf" ;;
        knot) echo "knotd -c $WORK/knot/knot.conf" ;;
    esac
}

# A process and every process it forked (NSD's server child and xfrd).
tree_of() {
    local p
    echo "$1"
    for p in $(pgrep -P "$1" || true); do tree_of "$p"; done
}

# Total instructions of one server run answering $2 queries; prints "instructions answered".
measure() {
    local s=$1 queries=$2 out="$WORK/$1.$2.cg"
    # One output file a process (%p): NSD forks, the others write one.
    (cd "$WORK/zone" && exec valgrind --tool=callgrind --trace-children=yes --instr-atstart=no \
        --callgrind-out-file="$out.%p" $(server_cmd "$s")) \
        >"$WORK/$s.$queries.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do
        dig +time=1 +tries=1 -p $PORT @127.0.0.1 $ORIGIN SOA 2>/dev/null | grep -q NOERROR && break
        kill -0 $pid 2>/dev/null || die "$s exited: $(tail -5 "$WORK/$s.$queries.log")"
        sleep 0.5
    done
    local answered=0
    sleep 1
    local procs p
    procs=$(tree_of $pid)
    for p in $procs; do callgrind_control -i on "$p" >/dev/null 2>&1; done
    if ((queries > 0)); then
        case $NAMES in
            members) head -n "$queries" "$WORK/zone/queries.txt" >"$WORK/q.txt" ;;
            nxdomain) head -n "$queries" "$WORK/zone/queries.txt" | sed 's/^/nx-/' >"$WORK/q.txt" ;;
            *) die "ICOUNT_NAMES is members or nxdomain, not '$NAMES'" ;;
        esac
        while (($(wc -l <"$WORK/q.txt") < queries)); do cat "$WORK/q.txt" "$WORK/q.txt" | head -n "$queries" >"$WORK/q2.txt"; mv "$WORK/q2.txt" "$WORK/q.txt"; done
        dnsperf -s 127.0.0.1 -p $PORT -d "$WORK/q.txt" -n 1 -c 1 -q 20 -t 30 >"$WORK/dnsperf.$s.log" 2>&1
        local done
        done=$(sed -n 's/.*Queries completed: *\([0-9]*\).*/\1/p' "$WORK/dnsperf.$s.log")
        answered=$done
    else
        sleep 2
    fi
    for p in $procs; do callgrind_control -i off "$p" >/dev/null 2>&1; done
    kill -TERM $pid
    wait $pid || true
    local total
    total=$(cat "$out".* 2>/dev/null | sed -n 's/^totals: *//p' | awk '{ t += $1 } END { if (NR) print t }')
    [[ -n $total ]] || die "no callgrind summary for $s"
    echo "$total $answered"
}

echo "names: $NAMES; machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), valgrind $(valgrind --version)"
printf '%-34s %16s %16s %10s %14s\n' server "empty window" "query window" answered "instr/query"
declare -A per
for s in $SERVERS; do
    read -r idle idle_n < <(measure $s 0)
    read -r busy busy_n < <(measure $s "$N")
    per[$s]=$(((busy - idle) / (busy_n - idle_n)))
    printf '%-34s %16d %16d %10d %14d\n' "$s" "$idle" "$busy" "$((busy_n - idle_n))" "${per[$s]}"
done
for b in tpkd-hickory hickory nsd knot; do
    [[ -n ${per[tpkd]:-} && -n ${per[$b]:-} ]] || continue
    awk -v a="${per[tpkd]}" -v b="${per[$b]}" -v n="$b" 'BEGIN { printf "tpkd / %s: %.2f\n", n, a / b }'
done
