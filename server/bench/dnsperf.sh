#!/usr/bin/env bash
# Throughput of tpkd vs stock hickory, NSD and Knot serving the same key zone, in one run.
#
# Each server runs pinned to core 0, dnsperf to core 1, on loopback. All four serve the same
# 1,000 TPKEY records made by `tp gen-zone` (RDATA size printed): tpkd from our key zone, stock
# hickory (tp-dnsd --opaque-keyzone) as opaque RFC 3597 data, NSD and Knot from the RFC 3597
# zone file. Prints queries/second per server and the ratios to stock hickory and to NSD.
#
# Usage: server/bench/dnsperf.sh            (from anywhere; needs dnsperf, nsd, knot, dig)
# Knobs (environment):
#   BENCH_SECONDS   dnsperf -l, per server and round                 (default 10)
#   BENCH_CLIENTS   dnsperf -c, UDP sockets                          (default 8)
#   BENCH_THREADS   dnsperf -T                                       (default 4)
#   BENCH_INFLIGHT  dnsperf -q, outstanding queries                  (default 200)
#   Saturation (tuned against NSD, the fastest here): -c 4 -q 100 -T 1 left dnsperf the limit
#   (~165k q/s); -T 4 on its one core lifted NSD to ~195k with no loss; -q 500 or -c 16 only
#   added loss. tpkd and hickory are server-bound at any of these settings.
#   BENCH_ROUNDS    rounds over all servers, interleaved                (default 3)
#                   The headline is each server's best round: other work on the machine can
#                   only lower a rate, so the best round is the least disturbed one. The
#                   median and every round are printed too.
#   BENCH_SERVERS   subset/order of: tpkd hickory nsd knot          (default all four)
#   BENCH_COUNT     names in the generated zone                      (default 1000)
#   BENCH_PORT_BASE first of four loopback ports                     (default 15301)
#   BENCH_KEEP=1    keep the work directory (logs, configs, dnsperf output)
#   BENCH_BIN       a directory holding tp, tpkd and tp-dnsd to measure instead of building
#                   target/release (e.g. a copy of an earlier build, for a before/after run)
#   BENCH_UDP_WORKERS  tpkd's udp_workers (default 1: one worker on its one core, as NSD's
#                   server-count 1; more than 1 gives each worker its own SO_REUSEPORT socket)
# Exits non-zero, with the server's log, if a server does not come up or answers wrongly.
set -euo pipefail

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-8}
THREADS=${BENCH_THREADS:-4}
INFLIGHT=${BENCH_INFLIGHT:-200}
ROUNDS=${BENCH_ROUNDS:-3}
SERVERS=${BENCH_SERVERS:-"tpkd hickory nsd knot"}
COUNT=${BENCH_COUNT:-1000}
PORT_BASE=${BENCH_PORT_BASE:-15301}
ORIGIN=bench.example.
SERVER_CPU=0
CLIENT_CPU=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REL=${BENCH_BIN:-$ROOT/target/release}

die() {
    echo "dnsperf.sh: error: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

# --- prerequisites ------------------------------------------------------------------------
need() { command -v "$1" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$1" >/dev/null 2>&1; }
missing=()
for tool in cargo dig dnsperf taskset nproc; do need "$tool" || missing+=("$tool"); done
for s in $SERVERS; do
    case $s in
        nsd) need nsd || missing+=(nsd) ;;
        knot) need knotd || missing+=(knotd) ;;
        tpkd | hickory) ;;
        *) die "unknown server '$s' in BENCH_SERVERS (known: tpkd hickory nsd knot)" ;;
    esac
done
if ((${#missing[@]})); then
    die "missing: ${missing[*]} (Debian: apt-get install dnsperf nsd knot bind9-dnsutils util-linux)"
fi
export PATH=$PATH:/usr/sbin:/sbin
(($(nproc) >= 2)) || die "needs 2 cores (server on core $SERVER_CPU, dnsperf on core $CLIENT_CPU); nproc says $(nproc)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tp-dnsperf.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- build and zone -----------------------------------------------------------------------
if [[ -z ${BENCH_BIN:-} ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -p twinpeaks-server) || die "cargo build --release -p twinpeaks-server failed"
fi
for bin in tp tpkd tp-dnsd; do [[ -x $REL/$bin ]] || die "$REL/$bin was not built"; done

ZONE=$WORK/zone
log "generating a key zone of $COUNT names with tp gen-zone"
"$REL/tp" gen-zone --help >/dev/null 2>&1 ||
    die "'tp gen-zone' is missing from $REL/tp: this benchmark needs it to make the key zone"
"$REL/tp" gen-zone --count "$COUNT" --out "$ZONE" >"$WORK/gen-zone.log" 2>&1 ||
    die "tp gen-zone failed: $(cat "$WORK/gen-zone.log")"
for f in bench.keys bench.rfc3597.zone tpkd.toml queries.txt; do
    [[ -s $ZONE/$f ]] || die "tp gen-zone did not write $ZONE/$f"
done
grep -q '^listen *= *\[' "$ZONE/tpkd.toml" || die "$ZONE/tpkd.toml has no 'listen = [...]' line to point at the benchmark port"
FIRST_NAME=$(awk 'NF { print $1; exit }' "$ZONE/queries.txt")
FIRST_TYPE=$(awk 'NF { print $2; exit }' "$ZONE/queries.txt")
[[ -n $FIRST_NAME && -n $FIRST_TYPE ]] || die "$ZONE/queries.txt has no query line"
RDATA_LEN=$(grep -m1 -o 'TYPE65300 *\\# *[0-9]*' "$ZONE/bench.rfc3597.zone" | awk '{ print $NF }' || true)

# --- servers ------------------------------------------------------------------------------
port_of() {
    case $1 in tpkd) echo $((PORT_BASE)) ;; hickory) echo $((PORT_BASE + 1)) ;;
        nsd) echo $((PORT_BASE + 2)) ;; knot) echo $((PORT_BASE + 3)) ;; esac
}
label_of() {
    case $1 in
        tpkd) echo "tpkd (TwinPeaks key server)" ;;
        hickory) echo "hickory $(hickory_version) stock (tp-dnsd --opaque-keyzone)" ;;
        nsd) echo "NSD $(nsd -v 2>&1 | awk 'NR == 1 { print $NF }')" ;;
        knot) echo "Knot $(knotd -V 2>&1 | awk 'NR == 1 { print $NF }')" ;;
    esac
}
hickory_version() {
    awk '/^name = "hickory-server"/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$ROOT/Cargo.lock"
}

for s in $SERVERS; do
    p=$(port_of "$s")
    if ss -Hlnu "sport = :$p" 2>/dev/null | grep -q . || ss -Hlnt "sport = :$p" 2>/dev/null | grep -q .; then
        die "port $p (for $s) is in use; set BENCH_PORT_BASE"
    fi
done

# Writes the server's config and prints the command line that runs it in the foreground.
prepare() {
    local s=$1 port=$2 dir=$WORK/$1
    mkdir -p "$dir"
    case $s in
        tpkd)
            # Edited in place: the config's relative paths (state, zone) are the generator's.
            sed -i "s/^listen *=.*/listen = [\"127.0.0.1:$port\"]/; /^udp_workers *=/d" "$ZONE/tpkd.toml"
            echo "udp_workers = ${BENCH_UDP_WORKERS:-1}" >>"$ZONE/tpkd.toml"
            echo "$REL/tpkd --config $ZONE/tpkd.toml"
            ;;
        hickory)
            echo "$REL/tp-dnsd --listen 127.0.0.1:$port --opaque-keyzone $ORIGIN=$ZONE/bench.keys"
            ;;
        nsd)
            # One server process: the server gets one core, like the others.
            cat >"$dir/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$port
    port: $port
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$dir"
    pidfile: "$dir/nsd.pid"
    database: ""
    zonelistfile: "$dir/zone.list"
    xfrdfile: "$dir/xfrd.state"
    xfrdir: "$dir"
    logfile: "$dir/nsd-internal.log"
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "$ORIGIN"
    zonefile: "$ZONE/bench.rfc3597.zone"
EOF
            nsd-checkconf "$dir/nsd.conf" >&2 || die "nsd-checkconf refused $dir/nsd.conf"
            echo "nsd -d -c $dir/nsd.conf"
            ;;
        knot)
            cat >"$dir/knot.conf" <<EOF
server:
    rundir: "$dir"
    pidfile: "$dir/knot.pid"
    listen: 127.0.0.1@$port
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: "$dir/db"
zone:
  - domain: $ORIGIN
    storage: "$dir"
    file: "$ZONE/bench.rfc3597.zone"
    zonefile-sync: -1
    journal-content: none
EOF
            echo "knotd -c $dir/knot.conf"
            ;;
    esac
}

SERVER_PID=
start_server() {
    local s=$1 port=$2 cmd
    cmd=$(prepare "$s" "$port")
    echo "$cmd" >"$WORK/$s/command"
    # shellcheck disable=SC2086 # the command line is ours, split on purpose
    (cd "$ZONE" && exec taskset -c $SERVER_CPU $cmd) >"$WORK/$s/log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local answer=
    for _ in $(seq 1 150); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            fail_server "$s" "exited during startup"
        fi
        answer=$(dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 "$FIRST_NAME" "$FIRST_TYPE" 2>/dev/null || true)
        [[ -n $answer && $answer != ";;"* ]] && break
        answer=
        sleep 0.2
    done
    [[ -n $answer ]] || fail_server "$s" "no answer to '$FIRST_NAME $FIRST_TYPE' on 127.0.0.1:$port within 30 s"
    # Every server must serve the very same bytes, or the comparison means nothing.
    if [[ -z ${REFERENCE_ANSWER:-} ]]; then
        REFERENCE_ANSWER=$answer
        REFERENCE_SERVER=$s
    elif [[ $answer != "$REFERENCE_ANSWER" ]]; then
        fail_server "$s" "answers '$answer' for $FIRST_NAME, $REFERENCE_SERVER answered '$REFERENCE_ANSWER'"
    fi
}

fail_server() {
    echo "dnsperf.sh: error: $1: $2" >&2
    echo "---- command: $(cat "$WORK/$1/command" 2>/dev/null)" >&2
    echo "---- log of $1 ($WORK/$1/log):" >&2
    cat "$WORK/$1/log" >&2 || true
    [[ -f $WORK/$1/nsd-internal.log ]] && cat "$WORK/$1/nsd-internal.log" >&2
    exit 1
}

stop_server() {
    local s=$1
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "warning: $s did not stop within 10 s of SIGTERM; killing it" >&2
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
}

# Prints "qps lost_percent noerror_percent client_cpu_percent" from one dnsperf run.
measure() {
    local s=$1 port=$2 round=$3 out=$WORK/$1/dnsperf.$3.txt
    # dnsperf's own CPU time tells whether the client, not the server, was the limit.
    local TIMEFORMAT='%R %U %S'
    { time taskset -c $CLIENT_CPU dnsperf -s 127.0.0.1 -p "$port" -d "$ZONE/queries.txt" \
        -l "$SECONDS_PER_RUN" -c "$CLIENTS" -T "$THREADS" -q "$INFLIGHT" -Q 500000 >"$out" 2>&1; } 2>"$out.cpu" ||
        fail_server "$s" "dnsperf failed: $(cat "$out")"
    local qps lost noerror client_cpu
    client_cpu=$(awk '{ printf "%.0f", 100 * ($2 + $3) / $1 }' "$out.cpu")
    qps=$(awk '/Queries per second:/ { print $4 }' "$out")
    lost=$(awk '/Queries lost:/ { gsub(/[()%]/, "", $4); print $4 }' "$out")
    noerror=$(awk '/Response codes:.*NOERROR/ { gsub(/[()%]/, "", $5); print $5 }' "$out")
    [[ -n $qps ]] || fail_server "$s" "no 'Queries per second' in dnsperf output: $(cat "$out")"
    echo "$qps ${lost:-?} ${noerror:-0} ${client_cpu:-?}"
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Other work on the machine skews every figure: record the load so a reader can judge.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# (During the run the load is ours: dnsperf's threads and the server.)
if awk -v l="${LOAD_BEFORE%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    echo "warning: load average is $LOAD_BEFORE before the run; figures will be low and noisy" >&2
fi
declare -A QPS CPU
for round in $(seq 1 "$ROUNDS"); do
    for s in $SERVERS; do
        port=$(port_of "$s")
        log "round $round/$ROUNDS: $s on 127.0.0.1:$port (core $SERVER_CPU), dnsperf on core $CLIENT_CPU; load $(cut -d' ' -f1 /proc/loadavg)"
        start_server "$s" "$port"
        result=$(measure "$s" "$port" "$round") || exit 1
        read -r qps lost noerror client_cpu <<<"$result"
        stop_server "$s"
        echo "   $s: $qps q/s, lost $lost %, NOERROR $noerror %, dnsperf CPU $client_cpu %" >&2
        awk -v n="$noerror" 'BEGIN { exit !(n >= 99.9) }' ||
            fail_server "$s" "only $noerror % of answers were NOERROR (see $WORK/$s/dnsperf.$round.txt)"
        QPS[$s]="${QPS[$s]:-} $qps"
        CPU[$s]="${CPU[$s]:-} $client_cpu"
    done
done

# --- report -------------------------------------------------------------------------------
dashes() { printf -- '-%.0s' $(seq 1 "$1"); }
declare -A BEST
for s in $SERVERS; do BEST[$s]=$(echo "${QPS[$s]}" | tr ' ' '\n' | grep . | sort -g | tail -1); done
ratio() { [[ -n ${BEST[$2]:-} ]] && awk -v a="$1" -v b="${BEST[$2]}" 'BEGIN { printf "%.2fx", a / b }' || echo "-"; }

echo
echo "Command: server/bench/dnsperf.sh (BENCH_SECONDS=$SECONDS_PER_RUN BENCH_CLIENTS=$CLIENTS BENCH_THREADS=$THREADS BENCH_INFLIGHT=$INFLIGHT BENCH_ROUNDS=$ROUNDS)"
echo "Machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(uname -sr)"
echo "Date:    $(date -u '+%Y-%m-%d %H:%M UTC'); load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "Zone:    $COUNT names under $ORIGIN, TYPE65300 RDATA of ${RDATA_LEN:-?} bytes; server on core $SERVER_CPU, dnsperf on core $CLIENT_CPU"
echo "dnsperf: taskset -c $CLIENT_CPU dnsperf -s 127.0.0.1 -p PORT -d queries.txt -l $SECONDS_PER_RUN -c $CLIENTS -T $THREADS -q $INFLIGHT -Q 500000"
echo
printf '| %-48s | %9s | %10s | %7s | %7s | %11s | %s\n' "Server" "best q/s" "vs hickory" "vs NSD" "median" "dnsperf CPU" "rounds (k q/s) |"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' "$(dashes 50)" "$(dashes 10)-" "$(dashes 11)-" "$(dashes 8)-" "$(dashes 8)-" "$(dashes 12)-" "$(dashes 16)"
for s in $SERVERS; do
    rounds=$(echo "${QPS[$s]}" | awk '{ for (i = 1; i <= NF; i++) printf "%s%.1f", (i > 1 ? " " : ""), $i / 1000 }')
    printf '| %-48s | %9.0f | %10s | %7s | %7.0f | %10s%% | %s |\n' "$(label_of "$s")" "${BEST[$s]}" \
        "$(ratio "${BEST[$s]}" hickory)" "$(ratio "${BEST[$s]}" nsd)" "$(echo "${QPS[$s]}" | median)" \
        "$(echo "${CPU[$s]}" | median)" "$rounds"
done
if [[ -n ${BEST[tpkd]:-} && -n ${BEST[hickory]:-} ]]; then
    echo
    awk -v a="${BEST[tpkd]}" -v b="${BEST[hickory]}" 'BEGIN {
        printf "Goal tpkd >= 1.0x stock hickory: %.2fx -> %s\n", a / b, (a >= b ? "met" : "NOT met") }'
fi
