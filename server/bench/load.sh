#!/usr/bin/env bash
# Zone loading: time until the first correct answer for the zone's last member, and peak RSS,
# of tpkd (first load on a fresh state directory, then a restart on the same one), NSD and Knot,
# on the same generated zone (`tp gen-zone --count N`; NSD and Knot load its RFC 3597 form).
# Each server runs twice in a row (wall-clock times are noisy: both runs are printed); ratios
# are to NSD's best run.
#
# Usage: server/bench/load.sh [N...]   (default: 100000; needs dig, nsd, knotd)
#   LOAD_ZONES   a directory keeping generated zones between runs (default: a fresh temporary
#                directory, removed at exit). `tp gen-zone` issues every member on every core:
#                about 37 s for 100,000 members on 2 vCPU, so about 6 min for 1,000,000.
#   LOAD_BIN     a directory holding tp and tpkd to measure instead of building them
#
# Peak RSS is VmHWM from /proc/PID/status, read once the answer came (for NSD, the largest of
# its processes: the parent loads the zone and forks its server child).
set -euo pipefail

NS=("${@:-100000}")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REL=$(cd "${LOAD_BIN:-$ROOT/target/release}" && pwd)
export PATH=$PATH:/usr/sbin:/sbin
ORIGIN=bench.example.
PORT=15480
TPKD_IP=127.0.8.10
NSD_IP=127.0.8.11
KNOT_IP=127.0.8.12
die() {
    echo "load.sh: error: $*" >&2
    exit 1
}
command -v dig >/dev/null || die "dig is missing (apt-get install bind9-dnsutils)"
command -v nsd >/dev/null || die "nsd is missing (apt-get install nsd)"
command -v knotd >/dev/null || die "knotd is missing (apt-get install knot)"
if [[ -z ${LOAD_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release -p twinpeaks-server >&2) || die "build failed"
fi

WORK=$(mktemp -d /tmp/tp-load.XXXXXX)
ZONES=${LOAD_ZONES:-$WORK/zones}
mkdir -p "$ZONES"
cleanup() {
    rm -rf "$WORK"
}
trap cleanup EXIT

# The largest VmHWM (kB) over a process and its children.
peak_kb() {
    local p max=0 v
    for p in "$1" $(pgrep -P "$1" || true); do
        v=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$p/status" 2>/dev/null || true)
        [[ -n $v ]] && ((v > max)) && max=$v
    done
    echo "$max"
}

# Start "$@" (in directory $dir, log $log), wait for the RFC 3597 answer of $last at $ip;
# prints "milliseconds peak_kB" and stops the server.
run() {
    local ip=$1 last=$2 dir=$3 log=$4
    shift 4
    local t0 t1
    t0=$(date +%s%N)
    (cd "$dir" && exec "$@") >"$log" 2>&1 &
    PID=$!
    until dig +short +time=1 +tries=1 -p $PORT @"$ip" "$last" TYPE65300 2>/dev/null | grep -q '^\\#'; do
        kill -0 "$PID" 2>/dev/null || die "$1 stopped: $(tail -3 "$log")"
        (($(date +%s%N) - t0 < 1800 * 1000000000)) || { kill -TERM "$PID"; die "$1: no answer within 30 min"; }
        sleep 0.02
    done
    t1=$(date +%s%N)
    local kb
    kb=$(peak_kb "$PID")
    kill -TERM "$PID"
    wait "$PID" 2>/dev/null || true
    # Printed once the server is gone: the caller starts the next one when it reads this.
    echo "$(((t1 - t0) / 1000000)) $kb"
}

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/^Mem/ { print $2 }') GiB; $(date -u '+%F %H:%M UTC')"
echo "command: server/bench/load.sh ${NS[*]}"
echo "others on the machine: $(ps -eo comm= | grep -cE '^(rustc|cargo|cc|ld)$' || true) rustc/cargo/cc/ld processes at start"
for N in "${NS[@]}"; do
    Z=$ZONES/$N
    if [[ ! -f $Z/bench.rfc3597.zone ]]; then
        echo "generating $N members (tp gen-zone; not timed)..." >&2
        rm -rf "$Z"
        g0=$(date +%s)
        "$REL/tp" gen-zone --count "$N" --out "$Z" --origin $ORIGIN >/dev/null
        echo "generated in $(($(date +%s) - g0)) s" >&2
    fi
    last=www$((N - 1)).$ORIGIN
    R=$WORK/run.$N
    rm -rf "$R"
    mkdir -p "$R/nsd" "$R/knot/db"
    cat >"$R/nsd/nsd.conf" <<EOF
server:
    ip-address: $NSD_IP@$PORT
    port: $PORT
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$R/nsd"
    pidfile: "$R/nsd/nsd.pid"
    database: ""
    zonelistfile: "$R/nsd/zone.list"
    xfrdfile: "$R/nsd/xfrd.state"
    xfrdir: "$R/nsd"
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "$ORIGIN"
    zonefile: "$Z/bench.rfc3597.zone"
EOF
    cat >"$R/knot/knot.conf" <<EOF
server:
    rundir: "$R/knot"
    pidfile: "$R/knot/knot.pid"
    listen: $KNOT_IP@$PORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: $(nproc)
log:
  - target: stderr
    any: warning
database:
    storage: "$R/knot/db"
zone:
  - domain: $ORIGIN
    storage: "$R/knot"
    file: "$Z/bench.rfc3597.zone"
    zonefile-sync: -1
    journal-content: none
EOF
    declare -A ms kb
    for i in 1 2; do
        # First load: a copy of the generated state, as tp gen-zone left it.
        rm -rf "$R/tpkd"
        mkdir -p "$R/tpkd"
        cp -r "$Z/state" "$R/tpkd/state"
        sed "s|^listen *=.*|listen = [\"$TPKD_IP:$PORT\"]|; s|^zone_file *=.*|zone_file = \"$Z/bench.keys\"|; s|^log *=.*|log = \"warn\"|" \
            "$Z/tpkd.toml" >"$R/tpkd/tpkd.toml"
        read -r "ms[first$i]" "kb[first$i]" < <(run $TPKD_IP "$last" "$R/tpkd" "$R/tpkd.log" "$REL/tpkd" --config tpkd.toml)
        read -r "ms[restart$i]" "kb[restart$i]" < <(run $TPKD_IP "$last" "$R/tpkd" "$R/tpkd.log" "$REL/tpkd" --config tpkd.toml)
        read -r "ms[nsd$i]" "kb[nsd$i]" < <(run $NSD_IP "$last" "$R/nsd" "$R/nsd.log" nsd -d -c "$R/nsd/nsd.conf")
        rm -rf "$R/knot/db" && mkdir -p "$R/knot/db"
        read -r "ms[knot$i]" "kb[knot$i]" < <(run $KNOT_IP "$last" "$R/knot" "$R/knot.log" knotd -c "$R/knot/knot.conf")
    done
    best() { local a=${ms[${1}1]} b=${ms[${1}2]}; echo $((a < b ? a : b)); }
    nsd_ms=$(best nsd)
    nsd_kb=$((kb[nsd1] > kb[nsd2] ? kb[nsd1] : kb[nsd2]))
    echo
    echo "$N members ($(du -m "$Z/bench.keys" | cut -f1) MB zone file in our syntax, $(du -m "$Z/bench.rfc3597.zone" | cut -f1) MB in RFC 3597 form)"
    printf '| %-34s | %9s | %9s | %8s | %12s | %8s | %12s |\n' server "run 1 ms" "run 2 ms" "/ NSD" "peak RSS MB" "/ NSD" "bytes/member"
    printf '|%s|%s|%s|%s|%s|%s|%s|\n' "------------------------------------" "-----------" "-----------" "----------" "--------------" "----------" "--------------"
    for s in first restart nsd knot; do
        case $s in
            first) label="tpkd, first load (fresh state)" ;;
            restart) label="tpkd, restart (same state)" ;;
            nsd) label="NSD $(nsd -v 2>&1 | sed -n 's/^NSD version //p') (baseline)" ;;
            knot) label="Knot $(knotd -V | sed -n 's/.*version //p')" ;;
        esac
        k=$((kb[${s}1] > kb[${s}2] ? kb[${s}1] : kb[${s}2]))
        printf '| %-34s | %9d | %9d | %8s | %12d | %8s | %12d |\n' "$label" "${ms[${s}1]}" "${ms[${s}2]}" \
            "$(awk -v a="$(best $s)" -v b="$nsd_ms" 'BEGIN { printf "%.2fx", a / b }')" $((k / 1024)) \
            "$(awk -v a="$k" -v b="$nsd_kb" 'BEGIN { printf "%.2fx", a / b }')" $((k * 1024 / N))
    done
    unset ms kb
done
