#!/usr/bin/env bash
# The key resolver daemon (tprd) against Unbound, and the resolver's cold and warm costs, in one
# run on the same generated key zone.
#
# Parts (each selectable; `all` runs them in this order):
#   icount  Instructions per cache-hit query, by callgrind: tprd (anchored at the generated
#           key server) and Unbound 1.17 (module-config "iterator", a stub-zone pointing at NSD
#           serving the same records in RFC 3597 form) each answer TYPE65300 for all names of a
#           `tp gen-zone --count 1000` zone from their caches. Each server runs under
#           `valgrind --tool=callgrind --instr-atstart=no`; one dnsperf pass over every name
#           warms its cache (not counted); then, in the same process, an empty window (2 s, no
#           queries) and a window in which dnsperf sends N queries are counted, each from
#           zeroed counters (callgrind_control -z / -i on / -i off / -d). (query window -
#           empty window) / answered = one cache-hit query's user-space cost, all threads.
#           Checked: the upstream saw no query during the window (tpkd's counter for tprd,
#           Unbound's total.num.cachemiss), so every counted query was a cache hit.
#   dnsperf Queries/second of the same cache hits: server on core 0, dnsperf on core 1
#           (tpkd and NSD, idle once the cache is warm, on core 1). Fresh server per round,
#           warmed by one pass, then `dnsperf -l SECONDS`; best and median of the rounds.
#   cold    Cold resolutions in fresh processes (each `tp resolve` process starts with an empty
#           cache): (a) one level: `tp resolve --json --keys-only --anchors state/anchor NAME
#           --repeat 2` for COLD_RUNS different names of the generated zone (the anchor is the
#           zone's own key server: one query); (b) three levels: `tp demo` (root, com.,
#           example.com. key servers on 127.0.0.2-4:5300, DNS on 127.0.0.1:5353, tprd on
#           127.0.0.1:5301) and `tp resolve --json --config DEMO/tprd.toml --repeat 2` for
#           www.example.com and mail.example.com, DEMO_RUNS times each, with DNS and keys only.
#           Median and p90 of the first (cold) run's elapsed_ns, queries and bytes; the second
#           (warm) run's time; cold/warm.
#   zipf    A Zipf(s=1) mix: ZIPF_QUERIES TYPE65300 queries drawn over the ZIPF_COUNT names of a
#           `tp gen-zone --count ZIPF_COUNT` zone (python3, fixed seed), sent once by dnsperf to
#           a freshly started tprd (cold cache at start; tprd core 0, dnsperf and tpkd core 1).
#           Resolutions/second, and the hit ratio: expected 1 - unique/queries, and measured
#           1 - (queries tpkd received)/queries (concurrent misses of one name coalesce).
#
# Usage: server/bench/resolver.sh [icount|dnsperf|cold|zipf|all]...   (default: all)
# Needs: cargo, dig, python3; icount: valgrind (callgrind_control), dnsperf, unbound
# (unbound-control), nsd; dnsperf: dnsperf, unbound, nsd, taskset; zipf: dnsperf, taskset.
# The generated key server must listen on 127.0.0.1:5300 (its trust anchor names that address);
# `cold` also needs 127.0.0.1:5353, 127.0.0.1:5301 and 127.0.0.2-4:5300 free for `tp demo`.
#
# Knobs (environment):
#   BENCH_N          queries in the callgrind window                       (default 2000)
#   BENCH_SECONDS    dnsperf -l per server and round                       (default 10)
#   BENCH_CLIENTS    dnsperf -c                                            (default 8)
#   BENCH_THREADS    dnsperf -T                                            (default 4)
#   BENCH_INFLIGHT   dnsperf -q                                            (default 200)
#   BENCH_ROUNDS     dnsperf rounds, servers interleaved                   (default 3)
#   BENCH_COUNT      names in the generated zone                           (default 1000)
#   COLD_RUNS        fresh processes for the one-level cold resolution     (default 20)
#   DEMO_RUNS        fresh processes per name on the demo hierarchy        (default 20)
#   ZIPF_COUNT       names in the Zipf zone                                (default 10000)
#   ZIPF_QUERIES     queries in the Zipf file                              (default 50000)
#   ZIPF_ROUNDS      Zipf runs, each on a fresh tprd                       (default 1)
#   ZIPF_SEED        seed of the Zipf draw                                 (default 1)
#   BENCH_PORT_BASE  tprd, NSD, Unbound on 127.0.0.1:BASE, BASE+1, BASE+2  (default 15401)
#   BENCH_KEEP=1     keep the work directory (logs, configs, callgrind and dnsperf output)
set -euo pipefail

N=${BENCH_N:-2000}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-8}
THREADS=${BENCH_THREADS:-4}
INFLIGHT=${BENCH_INFLIGHT:-200}
ROUNDS=${BENCH_ROUNDS:-3}
COUNT=${BENCH_COUNT:-1000}
COLD_RUNS=${COLD_RUNS:-20}
DEMO_RUNS=${DEMO_RUNS:-20}
ZIPF_COUNT=${ZIPF_COUNT:-10000}
ZIPF_QUERIES=${ZIPF_QUERIES:-50000}
ZIPF_ROUNDS=${ZIPF_ROUNDS:-1}
ZIPF_SEED=${ZIPF_SEED:-1}
PORT_BASE=${BENCH_PORT_BASE:-15401}
TPRD_PORT=$PORT_BASE
NSD_PORT=$((PORT_BASE + 1))
UNBOUND_PORT=$((PORT_BASE + 2))
ORIGIN=bench.example.
TPKD_ADDR=127.0.0.1:5300
SERVER_CPU=0
CLIENT_CPU=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REL=$ROOT/target/release

die() {
    echo "resolver.sh: error: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

usage() {
    sed -n 's/^# \{0,1\}//; /^Usage:/p' "${BASH_SOURCE[0]}" | head -1 >&2
    echo "parts: icount dnsperf cold zipf all (see the header of ${BASH_SOURCE[0]})" >&2
    exit 2
}

# --- parts --------------------------------------------------------------------------------
PARTS=()
(($# == 0)) && set -- all
for a in "$@"; do
    case $a in
        all) PARTS+=(icount dnsperf cold zipf) ;;
        icount | dnsperf | cold | zipf) PARTS+=("$a") ;;
        -h | --help | help) usage ;;
        *) echo "resolver.sh: unknown part '$a'" >&2; usage ;;
    esac
done
has() {
    local p
    for p in "${PARTS[@]}"; do [[ $p == "$1" ]] && return 0; done
    return 1
}

# --- prerequisites ------------------------------------------------------------------------
export PATH=$PATH:/usr/sbin:/sbin
declare -A HINT=(
    [cargo]="rustup" [dig]="apt-get install bind9-dnsutils" [python3]="apt-get install python3"
    [valgrind]="apt-get install valgrind" [callgrind_control]="apt-get install valgrind"
    [dnsperf]="apt-get install dnsperf" [unbound]="apt-get install unbound"
    [unbound-control]="apt-get install unbound" [unbound-checkconf]="apt-get install unbound"
    [nsd]="apt-get install nsd" [nsd-checkconf]="apt-get install nsd"
    [taskset]="apt-get install util-linux" [nproc]="apt-get install coreutils"
    [ss]="apt-get install iproute2" [pgrep]="apt-get install procps"
)
tools=(cargo dig python3 ss pgrep nproc)
has icount && tools+=(valgrind callgrind_control dnsperf unbound unbound-control unbound-checkconf nsd nsd-checkconf)
has dnsperf && tools+=(dnsperf taskset unbound unbound-control unbound-checkconf nsd nsd-checkconf)
has zipf && tools+=(dnsperf taskset)
missing=()
for t in "${tools[@]}"; do
    command -v "$t" >/dev/null 2>&1 || [[ " ${missing[*]} " == *" $t "* ]] || missing+=("$t")
done
if ((${#missing[@]})); then
    for t in "${missing[@]}"; do echo "resolver.sh: error: $t is missing (${HINT[$t]:-install it})" >&2; done
    die "missing tools: ${missing[*]}"
fi
if has dnsperf || has zipf; then
    (($(nproc) >= 2)) || die "needs 2 cores (server on core $SERVER_CPU, dnsperf on core $CLIENT_CPU); nproc says $(nproc)"
fi

port_busy() { # ip port
    ss -Hlnu "src $1:$2" 2>/dev/null | grep -q . || ss -Hlnt "src $1:$2" 2>/dev/null | grep -q .
}
for p in $TPRD_PORT $NSD_PORT $UNBOUND_PORT; do
    port_busy 127.0.0.1 "$p" && die "127.0.0.1:$p is in use; set BENCH_PORT_BASE"
done
port_busy 127.0.0.1 5300 &&
    die "127.0.0.1:5300 is in use: the generated key server must listen there (its trust anchor, state/anchor, names that address)"
if has cold; then
    for a in 127.0.0.1:5353 127.0.0.1:5301 127.0.0.2:5300 127.0.0.3:5300 127.0.0.4:5300; do
        port_busy "${a%:*}" "${a#*:}" && die "$a is in use; 'tp demo' (part cold) needs it"
    done
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tp-resolver.XXXXXX")
PIDS=()
cleanup() {
    local pid kids=()
    for pid in "${PIDS[@]}"; do
        # tp demo's children (tpkd, tp-dnsd, tprd) too, in case it cannot stop them itself.
        kill -0 "$pid" 2>/dev/null || continue
        kids+=($(pgrep -P "$pid" 2>/dev/null || true))
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}" "${kids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build and zones ----------------------------------------------------------------------
log "building release binaries"
(cd "$ROOT" && cargo build --release -p twinpeaks-server >&2) || die "cargo build --release -p twinpeaks-server failed"
for bin in tp tpkd tprd; do [[ -x $REL/$bin ]] || die "$REL/$bin was not built"; done

gen_zone() { # count dir
    log "generating a key zone of $1 names with tp gen-zone"
    "$REL/tp" gen-zone --count "$1" --out "$2" >"$2.log" 2>&1 || die "tp gen-zone failed: $(cat "$2.log")"
    for f in bench.keys bench.rfc3597.zone tpkd.toml queries.txt state/anchor; do
        [[ -s $2/$f ]] || die "tp gen-zone did not write $2/$f"
    done
    grep -q "listen = \[\"$TPKD_ADDR\"\]" "$2/tpkd.toml" ||
        die "$2/tpkd.toml does not listen on $TPKD_ADDR, the address its anchor names"
    # tprd's settings: anchored at the generated key server, keys only.
    printf 'listen = ["127.0.0.1:%s"]\nanchors = ["state/anchor"]\nlog = "warn"\n' "$TPRD_PORT" >"$2/tprd.toml"
}
ZONE=$WORK/zone
if has icount || has dnsperf || has cold; then gen_zone "$COUNT" "$ZONE"; fi
FIRST_NAME=
[[ -s $ZONE/queries.txt ]] && FIRST_NAME=$(awk 'NF { print $1; exit }' "$ZONE/queries.txt")

# --- processes ----------------------------------------------------------------------------
# start NAME LOG CMD... : runs CMD in the background (from $RUN_DIR), sets PID.
PID=
RUN_DIR=$WORK
start() {
    local name=$1 logf=$2
    shift 2
    (cd "$RUN_DIR" && exec "$@") >"$logf" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    echo "$*" >"$logf.command"
}

fail() { # what log message
    echo "resolver.sh: error: $1: $3" >&2
    if [[ -f $2 ]]; then
        echo "---- command: $(cat "$2.command" 2>/dev/null)" >&2
        echo "---- log of $1 ($2), last lines:" >&2
        tail -20 "$2" >&2 || true
    fi
    exit 1
}

stop() { # pid: SIGTERM, SIGKILL after 10 s; forgotten by the exit trap once reaped
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# wait_up WHAT LOG PID PORT QNAME QTYPE TRIES : until the server at 127.0.0.1:PORT answers at all.
wait_up() {
    local what=$1 logf=$2 pid=$3 port=$4 qname=$5 qtype=$6 tries=${7:-300}
    for _ in $(seq 1 "$tries"); do
        kill -0 "$pid" 2>/dev/null || fail "$what" "$logf" "exited during startup"
        if dig +time=1 +tries=1 -p "$port" @127.0.0.1 "$qname" "$qtype" 2>/dev/null | grep -q -- '->>HEADER<<-'; then
            return 0
        fi
        sleep 0.3
    done
    fail "$what" "$logf" "no answer on 127.0.0.1:$port within $((tries * 3 / 10)) s"
}

TPKD_PID=
start_tpkd() { # zone dir [cpu]
    local cfg=$1/tpkd.toml
    local -a pin=()
    [[ -n ${2:-} ]] && pin=(taskset -c "$2")
    RUN_DIR=$1 start tpkd "$1/tpkd.log" "${pin[@]}" "$REL/tpkd" --config "$cfg"
    TPKD_PID=$PID
    wait_up tpkd "$1/tpkd.log" "$TPKD_PID" 5300 "$ORIGIN" SOA 600
}
tpkd_queries() { # zone dir: requests tpkd received over UDP and TCP
    # An absolute config path: tp ctl resolves the socket path against the config's directory.
    local out
    out=$("$REL/tp" ctl --config "$1/tpkd.toml" status) || die "tp ctl status failed: $out"
    awk -F' = ' '/^queries_(udp|tcp)/ { n += $2 } END { print n + 0 }' <<<"$out"
}

NSD_PID=
start_nsd() { # cpu
    local dir=$WORK/nsd
    mkdir -p "$dir"
    cat >"$dir/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$NSD_PORT
    port: $NSD_PORT
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
    start nsd "$dir/log" taskset -c "$1" nsd -d -c "$dir/nsd.conf"
    NSD_PID=$PID
    wait_up nsd "$dir/log" "$NSD_PID" "$NSD_PORT" "$ORIGIN" SOA
}

UNBOUND_CONF=$WORK/unbound/unbound.conf
write_unbound_conf() {
    local dir=$WORK/unbound
    mkdir -p "$dir"
    cat >"$UNBOUND_CONF" <<EOF
server:
    interface: 127.0.0.1@$UNBOUND_PORT
    port: $UNBOUND_PORT
    do-ip6: no
    do-not-query-localhost: no
    chroot: ""
    username: ""
    directory: "$dir"
    pidfile: "$dir/unbound.pid"
    do-daemonize: no
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
# A Unix socket without TLS: only to read total.num.cachemiss outside the counted windows.
remote-control:
    control-enable: yes
    control-interface: "$dir/unbound.ctl"
stub-zone:
    name: "$ORIGIN"
    stub-addr: 127.0.0.1@$NSD_PORT
EOF
    unbound-checkconf "$UNBOUND_CONF" >&2 || die "unbound-checkconf refused $UNBOUND_CONF"
}
unbound_misses() {
    local out
    out=$(unbound-control -c "$UNBOUND_CONF" stats_noreset) || die "unbound-control stats_noreset failed: $out"
    awk -F= '/^total.num.cachemiss=/ { print $2 }' <<<"$out"
}

# server_cmd S : the server's command line (tprd or unbound), foreground.
server_cmd() {
    case $1 in
        tprd) echo "$REL/tprd --config $ZONE/tprd.toml" ;;
        unbound) echo "unbound -d -c $UNBOUND_CONF" ;;
    esac
}
port_of() { case $1 in tprd) echo "$TPRD_PORT" ;; unbound) echo "$UNBOUND_PORT" ;; esac; }
misses_of() { case $1 in tprd) tpkd_queries "$ZONE" ;; unbound) unbound_misses ;; esac; }
label_of() {
    case $1 in
        tprd) echo "tprd (TwinPeaks key resolver)" ;;
        unbound) echo "Unbound $(unbound -V 2>/dev/null | awk '/^Version/ { print $2; exit }') (iterator, stub -> NSD)" ;;
    esac
}

# Readiness without warming a measured name: tprd refuses SOA (REFUSED is an answer), Unbound
# answers its stub's SOA (a name outside the measured set).
ready_name() { echo "$ORIGIN SOA"; }

# dnsperf_once PORT FILE OUT [dnsperf args...] : one pass over FILE (dnsperf prefixed by the
# command in DP_PIN, e.g. taskset); sets GOT (queries completed) and NOERROR (percent).
DP_PIN=()
GOT=0
NOERROR=0
dnsperf_once() {
    local port=$1 file=$2 out=$3
    shift 3
    "${DP_PIN[@]}" dnsperf -s 127.0.0.1 -p "$port" -d "$file" -n 1 "$@" >"$out" 2>&1 || die "dnsperf failed: $(cat "$out")"
    GOT=$(sed -n 's/.*Queries completed: *\([0-9]*\).*/\1/p' "$out")
    NOERROR=$(awk '/Response codes:.*NOERROR/ { gsub(/[()%]/, "", $5); print $5 }' "$out")
    GOT=${GOT:-0}
    NOERROR=${NOERROR:-0}
}

# warm S PORT LOG [cpu] : one pass over every name; all must be answered NOERROR.
warm() {
    local s=$1 port=$2 logf=$3 want
    DP_PIN=()
    [[ -n ${4:-} ]] && DP_PIN=(taskset -c "$4")
    want=$(grep -c . "$ZONE/queries.txt")
    dnsperf_once "$port" "$ZONE/queries.txt" "$WORK/warm.$s.txt" -c 1 -q 20 -t 30
    DP_PIN=()
    [[ $GOT == "$want" ]] && awk -v n="$NOERROR" 'BEGIN { exit !(n >= 100) }' ||
        fail "$s" "$logf" "warm-up pass: $GOT of $want answered, NOERROR $NOERROR % (see $WORK/warm.$s.txt)"
}

# The answer's RDATA for the first name: every server must give the same bytes.
REF_ANSWER=
check_answer() { # S PORT LOG
    local a
    a=$(dig +short +time=2 +tries=2 -p "$2" @127.0.0.1 "$FIRST_NAME" TYPE65300 2>/dev/null || true)
    [[ -n $a && $a != ";;"* ]] || fail "$1" "$3" "no TYPE65300 answer for $FIRST_NAME"
    if [[ -z $REF_ANSWER ]]; then REF_ANSWER=$a; elif [[ $a != "$REF_ANSWER" ]]; then
        fail "$1" "$3" "answers '$a' for $FIRST_NAME, the other server answered '$REF_ANSWER'"
    fi
}

machine_line() {
    echo "Machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(uname -sr)"
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_BEFORE%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    echo "warning: load average is $LOAD_BEFORE before the run; wall-clock figures (dnsperf, cold, zipf) will be low and noisy; instruction counts are not affected" >&2
fi
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
best() { tr ' ' '\n' | grep . | sort -g | tail -1; }

declare -A ICOUNT QPS CPU
SERVERS="tprd unbound"

# --- icount ---------------------------------------------------------------------------------
cg_totals() { # dump file
    local t
    t=$(sed -n 's/^totals: *//p' "$1")
    [[ -n $t ]] || die "no 'totals:' line in callgrind dump $1"
    echo "$t"
}
icount_part() {
    log "icount: tpkd on $TPKD_ADDR, NSD on 127.0.0.1:$NSD_PORT (upstreams, not counted)"
    start_tpkd "$ZONE"
    local tpkd_pid=$TPKD_PID
    start_nsd "$CLIENT_CPU"
    local nsd_pid=$NSD_PID
    write_unbound_conf
    head -n "$N" "$ZONE/queries.txt" >"$WORK/q.txt"
    while (($(wc -l <"$WORK/q.txt") < N)); do cat "$WORK/q.txt" "$WORK/q.txt" | head -n "$N" >"$WORK/q2.txt"; mv "$WORK/q2.txt" "$WORK/q.txt"; done
    echo
    echo "== Instructions per cache-hit query (callgrind, user space, all threads) =="
    echo "Command: server/bench/resolver.sh icount (BENCH_N=$N); $(valgrind --version)"
    machine_line
    echo "Zone:    $COUNT names under $ORIGIN (tp gen-zone), TYPE65300 for each; caches warmed by one pass over all names, then an empty window (2 s) and a window of $N queries (dnsperf -c 1 -q 20), in the same process"
    printf '%-44s %14s %14s %9s %12s %14s\n' server "empty window" "query window" answered "upstream Δ" "instr/query"
    local s
    for s in $SERVERS; do
        local port out logf pid
        port=$(port_of "$s")
        out=$WORK/cg.$s
        logf=$WORK/$s.callgrind.log
        log "icount: $s under callgrind on 127.0.0.1:$port"
        # shellcheck disable=SC2046 # our own command line, split on purpose
        RUN_DIR=$ZONE start "$s" "$logf" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" $(server_cmd "$s")
        pid=$PID
        read -r qn qt <<<"$(ready_name "$s")"
        wait_up "$s" "$logf" "$pid" "$port" "$qn" "$qt" 600
        warm "$s" "$port" "$logf"
        check_answer "$s" "$port" "$logf"
        local before after idle busy answered noerror
        before=$(misses_of "$s")
        sleep 1
        callgrind_control -z "$pid" >/dev/null
        callgrind_control -i on "$pid" >/dev/null
        sleep 2
        callgrind_control -i off "$pid" >/dev/null
        callgrind_control -d "$pid" >/dev/null
        callgrind_control -z "$pid" >/dev/null
        callgrind_control -i on "$pid" >/dev/null
        dnsperf_once "$port" "$WORK/q.txt" "$WORK/dnsperf.cg.$s.txt" -c 1 -q 20 -t 30
        answered=$GOT
        noerror=$NOERROR
        callgrind_control -i off "$pid" >/dev/null
        callgrind_control -d "$pid" >/dev/null
        after=$(misses_of "$s")
        stop "$pid"
        [[ -s $out.1 && -s $out.2 ]] || fail "$s" "$logf" "callgrind did not write the dumps $out.1 and $out.2"
        idle=$(cg_totals "$out.1")
        busy=$(cg_totals "$out.2")
        ((answered > 0)) || fail "$s" "$logf" "no query answered in the counted window"
        awk -v n="$noerror" 'BEGIN { exit !(n >= 99.9) }' || fail "$s" "$logf" "only $noerror % NOERROR in the counted window"
        ((after == before)) ||
            echo "warning: $s: its upstream saw $((after - before)) queries during the counted window: not all were cache hits" >&2
        ICOUNT[$s]=$(((busy - idle) / answered))
        printf '%-44s %14d %14d %9d %12d %14d\n' "$(label_of "$s")" "$idle" "$busy" "$answered" "$((after - before))" "${ICOUNT[$s]}"
    done
    awk -v a="${ICOUNT[tprd]}" -v b="${ICOUNT[unbound]}" 'BEGIN { printf "tprd / Unbound (instructions per cache-hit query): %.2f\n", a / b }'
    stop "$nsd_pid"
    stop "$tpkd_pid"
}

# --- dnsperf --------------------------------------------------------------------------------
dnsperf_part() {
    log "dnsperf: tpkd and NSD (upstreams) on core $CLIENT_CPU"
    start_tpkd "$ZONE" "$CLIENT_CPU"
    local tpkd_pid=$TPKD_PID
    start_nsd "$CLIENT_CPU"
    local nsd_pid=$NSD_PID
    write_unbound_conf
    local round s
    for round in $(seq 1 "$ROUNDS"); do
        for s in $SERVERS; do
            local port logf pid
            port=$(port_of "$s")
            logf=$WORK/$s.$round.log
            log "dnsperf round $round/$ROUNDS: $s on 127.0.0.1:$port (core $SERVER_CPU), dnsperf on core $CLIENT_CPU; load $(cut -d' ' -f1 /proc/loadavg)"
            # shellcheck disable=SC2046
            RUN_DIR=$ZONE start "$s" "$logf" taskset -c $SERVER_CPU $(server_cmd "$s")
            pid=$PID
            read -r qn qt <<<"$(ready_name "$s")"
            wait_up "$s" "$logf" "$pid" "$port" "$qn" "$qt"
            warm "$s" "$port" "$logf" "$CLIENT_CPU"
            check_answer "$s" "$port" "$logf"
            local before after out=$WORK/dnsperf.$s.$round.txt
            before=$(misses_of "$s")
            local TIMEFORMAT='%R %U %S'
            { time taskset -c $CLIENT_CPU dnsperf -s 127.0.0.1 -p "$port" -d "$ZONE/queries.txt" \
                -l "$SECONDS_PER_RUN" -c "$CLIENTS" -T "$THREADS" -q "$INFLIGHT" -Q 500000 >"$out" 2>&1; } 2>"$out.cpu" ||
                fail "$s" "$logf" "dnsperf failed: $(cat "$out")"
            after=$(misses_of "$s")
            stop "$pid"
            local qps lost noerror client_cpu
            client_cpu=$(awk '{ printf "%.0f", 100 * ($2 + $3) / $1 }' "$out.cpu")
            qps=$(awk '/Queries per second:/ { print $4 }' "$out")
            lost=$(awk '/Queries lost:/ { gsub(/[()%]/, "", $4); print $4 }' "$out")
            noerror=$(awk '/Response codes:.*NOERROR/ { gsub(/[()%]/, "", $5); print $5 }' "$out")
            [[ -n $qps ]] || fail "$s" "$logf" "no 'Queries per second' in $out"
            echo "   $s: $qps q/s, lost $lost %, NOERROR ${noerror:-0} %, dnsperf CPU $client_cpu %, upstream queries during the run: $((after - before))" >&2
            awk -v n="${noerror:-0}" 'BEGIN { exit !(n >= 99.9) }' || fail "$s" "$logf" "only ${noerror:-0} % NOERROR (see $out)"
            QPS[$s]="${QPS[$s]:-} $qps"
            CPU[$s]="${CPU[$s]:-} $client_cpu"
        done
    done
    stop "$nsd_pid"
    stop "$tpkd_pid"
}

summary_table() {
    echo
    echo "== tprd vs Unbound answering the same TYPE65300 records from their caches =="
    echo "Command: server/bench/resolver.sh ${PARTS[*]} (BENCH_N=$N BENCH_SECONDS=$SECONDS_PER_RUN BENCH_CLIENTS=$CLIENTS BENCH_THREADS=$THREADS BENCH_INFLIGHT=$INFLIGHT BENCH_ROUNDS=$ROUNDS)"
    machine_line
    echo "Date:    $(date -u '+%Y-%m-%d %H:%M UTC'); load average before: $LOAD_BEFORE, now: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "Zone:    $COUNT names under $ORIGIN (tp gen-zone); q/s: server on core $SERVER_CPU, dnsperf on core $CLIENT_CPU: dnsperf -l $SECONDS_PER_RUN -c $CLIENTS -T $THREADS -q $INFLIGHT -Q 500000"
    echo
    printf '| %-44s | %11s | %9s | %9s | %11s | %s\n' "Server" "instr/query" "best q/s" "median" "dnsperf CPU" "rounds (k q/s) |"
    printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' $(seq 1 46))" "-------------" "-----------" "-----------" "-------------" "----------------"
    local s
    int_or_dash() { awk -v v="$1" 'BEGIN { if (v == "" || v == "-") print "-"; else printf "%.0f", v }'; }
    for s in $SERVERS; do
        local b m c rounds
        b=$(echo "${QPS[$s]:-}" | best)
        m=$(echo "${QPS[$s]:-}" | median)
        c=$(echo "${CPU[$s]:-}" | median)
        rounds=$(echo "${QPS[$s]:-}" | awk '{ for (i = 1; i <= NF; i++) printf "%s%.1f", (i > 1 ? " " : ""), $i / 1000 }')
        printf '| %-44s | %11s | %9s | %9s | %11s | %s |\n' "$(label_of "$s")" "${ICOUNT[$s]:--}" \
            "$(int_or_dash "$b")" "$(int_or_dash "$m")" "$([[ $c == - ]] && echo - || echo "$c %")" "${rounds:--}"
    done
    echo
    if [[ -n ${ICOUNT[tprd]:-} && -n ${ICOUNT[unbound]:-} ]]; then
        awk -v a="${ICOUNT[tprd]}" -v b="${ICOUNT[unbound]}" 'BEGIN { printf "tprd / Unbound, instructions per cache-hit query: %.2fx\n", a / b }'
    fi
    if [[ -n ${QPS[tprd]:-} && -n ${QPS[unbound]:-} ]]; then
        awk -v a="$(echo "${QPS[tprd]}" | best)" -v b="$(echo "${QPS[unbound]}" | best)" 'BEGIN { printf "tprd / Unbound, best q/s: %.2fx\n", a / b }'
        for s in $SERVERS; do
            awk -v c="$(echo "${CPU[$s]}" | median)" 'BEGIN { exit !(c >= 95) }' &&
                echo "note: dnsperf used $(echo "${CPU[$s]}" | median) % of core $CLIENT_CPU against $s: the client was the limit, so its q/s is a lower bound (and the q/s ratio says little; the instruction counts do not have this limit)"
        done
    fi
}

# --- cold -----------------------------------------------------------------------------------
# stats.py: median and p90 (nearest rank) of columns of a whitespace table.
cat >"$WORK/stats.py" <<'EOF'
import json, math, sys

def pct(v, p):
    v = sorted(v)
    if not v:
        return float("nan")
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]

def med(v):
    v = sorted(v)
    n = len(v)
    return float("nan") if n == 0 else (v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2)

rows = []
for path in sys.argv[2:]:
    d = json.load(open(path))
    r = d["runs"]
    rows.append((r[0]["elapsed_ns"] / 1000, r[0]["queries"], r[0]["bytes_out"] + r[0]["bytes_in"],
                 r[1]["elapsed_ns"] / 1000 if len(r) > 1 else None, r[0]["cache"], len(d["chain"]), len(d["pairs"])))
label = sys.argv[1]
cold = [x[0] for x in rows]
q = [x[1] for x in rows]
b = [x[2] for x in rows]
warm = [x[3] for x in rows if x[3] is not None]
misses = sum(1 for x in rows if x[4] == "miss")
mw = med(warm)
ratio = "-" if not warm else (f"{med(cold) / mw:,.0f}x" if mw > 0 else "-")
wtxt = "-" if not warm else f"{mw:.2f}"
proc = [float(open(p + ".ms").read()) for p in sys.argv[2:]]
print(f"| {label:<66} | {len(rows):4d} | {med(cold):9,.0f} | {pct(cold, 90):9,.0f} | {med(q):3g} / {pct(q, 90):<3g} | {med(b):5,.0f} / {pct(b, 90):<5,.0f} | {wtxt:>7} | {ratio:>10} | {med(proc):10.1f} |")
if misses != len(rows):
    print(f"warning: {label}: only {misses} of {len(rows)} first runs were cache misses", file=sys.stderr)
print(f"   ({label}: chain of {rows[0][5]} key server(s), {rows[0][6]} key(s))", file=sys.stderr)
EOF

cold_header() {
    printf '| %-66s | %4s | %9s | %9s | %9s | %13s | %7s | %10s | %10s |\n' "resolution (fresh process each)" runs "cold µs" "p90 µs" "queries" "bytes" "warm µs" "cold/warm" "process ms"
    printf '| %-66s | %4s | %9s | %9s | %9s | %13s | %7s | %10s | %10s |\n' "" "" median p90 "med / p90" "med / p90" median "" median
    printf '|%s|------|-----------|-----------|-----------|---------------|---------|------------|------------|\n' "$(printf -- '-%.0s' $(seq 1 68))"
}
# timed_resolve OUT ARGS... : tp resolve ARGS > OUT, and the process's wall time in OUT.ms.
timed_resolve() {
    local out=$1 t0 t1
    shift
    t0=$(date +%s%N)
    "$REL/tp" resolve "$@" >"$out" 2>"$out.err" || die "tp resolve $* failed: $(cat "$out.err")"
    t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e6 }' >"$out.ms"
}

cold_part() {
    echo
    echo "== Cold and warm resolutions, each in a fresh 'tp resolve' process (release) =="
    machine_line
    echo "Date:    $(date -u '+%Y-%m-%d %H:%M UTC'); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "Times: the resolver's own Report.elapsed (elapsed_ns) of run 1 (cold: empty cache) and run 2 (--repeat 2: from the cache); queries and bytes (sent + received): to key servers, run 1."
    cold_header
    log "cold: one level, tpkd for $ORIGIN on $TPKD_ADDR"
    start_tpkd "$ZONE"
    local tpkd_pid=$TPKD_PID i files=()
    mkdir -p "$WORK/cold1"
    for i in $(seq 1 "$COLD_RUNS"); do
        local name
        name=$(awk -v n=$((i * 47 % COUNT + 1)) 'NR == n { print $1 }' "$ZONE/queries.txt")
        timed_resolve "$WORK/cold1/$i.json" --json --keys-only --anchors "$ZONE/state/anchor" --repeat 2 "$name"
        files+=("$WORK/cold1/$i.json")
    done
    python3 "$WORK/stats.py" "one level: wwwN.$ORIGIN (anchor: $ORIGIN), keys only" "${files[@]}"
    stop "$tpkd_pid"

    log "cold: three levels, tp demo (root, com., example.com.; DNS; tprd)"
    local demo=$WORK/demo dlog=$WORK/demo.log
    RUN_DIR=$ROOT start "tp demo" "$dlog" "$REL/tp" demo --zones "$ROOT/zones" --state "$demo"
    local demo_pid=$PID
    for _ in $(seq 1 300); do
        grep -q 'self-check:' "$dlog" 2>/dev/null && break
        kill -0 "$demo_pid" 2>/dev/null || fail "tp demo" "$dlog" "exited before it was up"
        sleep 0.2
    done
    grep -q 'self-check:' "$dlog" || fail "tp demo" "$dlog" "not up within 60 s"
    [[ -s $demo/tprd.toml ]] || fail "tp demo" "$dlog" "did not write $demo/tprd.toml"
    local name mode
    for name in www.example.com mail.example.com; do
        for mode in dns keys; do
            files=()
            mkdir -p "$WORK/cold3.$name.$mode"
            local -a extra=()
            [[ $mode == keys ]] && extra=(--keys-only)
            for i in $(seq 1 "$DEMO_RUNS"); do
                local f=$WORK/cold3.$name.$mode/$i.json
                timed_resolve "$f" --json --config "$demo/tprd.toml" "${extra[@]}" --repeat 2 "$name"
                files+=("$f")
            done
            python3 "$WORK/stats.py" "three levels: $name, $([[ $mode == dns ]] && echo 'keys + DNS (A/AAAA)' || echo 'keys only')" "${files[@]}"
        done
    done
    stop "$demo_pid"
    echo "warm: run 2 of the same process, answered from its cache; the in-process figure without the process around it is plugin/benches/resolver.rs (cargo bench -p twinpeaks --bench resolver). process ms: the whole tp resolve process (start, anchors read and checked, both runs, exit), wall clock."
}

# --- zipf -----------------------------------------------------------------------------------
zipf_part() {
    local Z=$WORK/zone.zipf
    gen_zone "$ZIPF_COUNT" "$Z"
    log "zipf: $ZIPF_QUERIES queries, Zipf(s=1) over $ZIPF_COUNT names, seed $ZIPF_SEED"
    local unique
    unique=$(python3 - "$Z/queries.txt" "$Z/zipf.txt" "$ZIPF_QUERIES" "$ZIPF_SEED" <<'EOF'
import itertools, random, sys
names = [l.split()[0] for l in open(sys.argv[1]) if l.strip()]
n, seed = int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
order = names[:]
rng.shuffle(order)  # popularity rank independent of the name's index
cum = list(itertools.accumulate(1.0 / k for k in range(1, len(order) + 1)))
draw = rng.choices(order, cum_weights=cum, k=n)
with open(sys.argv[2], "w") as f:
    for name in draw:
        f.write(f"{name} TYPE65300\n")
print(len(set(draw)))
EOF
    ) || die "python3 could not write the Zipf query file"
    start_tpkd "$Z" "$CLIENT_CPU"
    local tpkd_pid=$TPKD_PID round
    local -a rates=()
    echo
    echo "== Zipf mix: a freshly started tprd (empty cache) answering a Zipf(s=1) stream =="
    machine_line
    echo "Date:    $(date -u '+%Y-%m-%d %H:%M UTC'); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "Zone:    $ZIPF_COUNT names under $ORIGIN; $ZIPF_QUERIES TYPE65300 queries, Zipf(s=1) (seed $ZIPF_SEED), $unique unique names; tprd on core $SERVER_CPU, dnsperf and tpkd on core $CLIENT_CPU; dnsperf -n 1 -c $CLIENTS -T $THREADS -q $INFLIGHT"
    printf '| %5s | %13s | %9s | %8s | %9s | %11s | %14s | %14s |\n' round "resolutions/s" "run s" "lost %" "NOERROR %" "avg latency" "hit (expected)" "hit (measured)"
    printf '|-------|---------------|-----------|----------|-----------|-------------|----------------|----------------|\n'
    for round in $(seq 1 "$ZIPF_ROUNDS"); do
        local logf=$WORK/tprd.zipf.$round.log pid
        printf 'listen = ["127.0.0.1:%s"]\nanchors = ["state/anchor"]\nlog = "warn"\n' "$TPRD_PORT" >"$Z/tprd.toml"
        RUN_DIR=$Z start tprd "$logf" taskset -c $SERVER_CPU "$REL/tprd" --config "$Z/tprd.toml"
        pid=$PID
        wait_up tprd "$logf" "$pid" "$TPRD_PORT" "$ORIGIN" SOA
        local before after out=$WORK/dnsperf.zipf.$round.txt
        before=$(tpkd_queries "$Z")
        taskset -c $CLIENT_CPU dnsperf -s 127.0.0.1 -p "$TPRD_PORT" -d "$Z/zipf.txt" -n 1 \
            -c "$CLIENTS" -T "$THREADS" -q "$INFLIGHT" -t 10 >"$out" 2>&1 || fail tprd "$logf" "dnsperf failed: $(cat "$out")"
        after=$(tpkd_queries "$Z")
        stop "$pid"
        local qps runtime lost noerror lat
        qps=$(awk '/Queries per second:/ { print $4 }' "$out")
        runtime=$(awk '/Run time \(s\):/ { print $4 }' "$out")
        lost=$(awk '/Queries lost:/ { gsub(/[()%]/, "", $4); print $4 }' "$out")
        noerror=$(awk '/Response codes:.*NOERROR/ { gsub(/[()%]/, "", $5); print $5 }' "$out")
        lat=$(awk '/Average Latency/ { print $4 * 1000 " ms" }' "$out")
        [[ -n $qps ]] || fail tprd "$logf" "no 'Queries per second' in $out"
        rates+=("$qps")
        awk -v r="$round" -v q="$qps" -v t="$runtime" -v l="$lost" -v e="${noerror:-0}" -v lat="$lat" \
            -v u="$unique" -v n="$ZIPF_QUERIES" -v m="$((after - before))" 'BEGIN {
            printf "| %5d | %13.0f | %9.2f | %8s | %9s | %11s | %14.3f | %14.3f |\n", r, q, t, l, e, lat, 1 - u / n, 1 - m / n }'
        echo "   round $round: tpkd received $((after - before)) queries (misses that reached the key server; $unique unique names)" >&2
    done
    echo "hit (expected) = 1 - unique names / queries; hit (measured) = 1 - queries tpkd received / queries (a miss that reached the key server; concurrent misses of one name share one walk)"
    ((${#rates[@]} > 1)) && echo "best: $(printf '%s\n' "${rates[@]}" | best | xargs printf '%.0f') resolutions/s; median $(echo "${rates[*]}" | median | xargs printf '%.0f')"
    stop "$tpkd_pid"
}

for p in "${PARTS[@]}"; do
    case $p in
        icount) icount_part ;;
        dnsperf) dnsperf_part ;;
        cold) cold_part ;;
        zipf) zipf_part ;;
    esac
done
if has icount || has dnsperf; then summary_table; fi
