#!/usr/bin/env bash
# Enrollments per second into a running tpkd over DNS UPDATE + TSIG: N members enrolled by one
# `tp enroll --requests DIR --parallel P` (one client process, P enrollments in flight, each on
# its own TCP connection, each answer's TSIG checked), so tpkd's group commit can batch them.
# Baseline in the same run: the same path with one enrollment in flight (nothing to batch).
# Each enrollment is proof-of-possession check + extraction + record signature + sealing +
# durable sled write + zone rebuild; tpkd logs each commit's size at debug level.
#
# Usage: server/bench/enroll.sh [N] [P]     (default N = 2000, P = 64; needs dig)
#   ENROLL_BIN  a directory holding tp and tpkd to measure instead of building them (e.g. a copy
#               of an earlier build, for a before/after run)
set -euo pipefail

N=${1:-2000}
P=${2:-64}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REL=$(cd "${ENROLL_BIN:-$ROOT/target/release}" && pwd)
IP=127.0.7.1
die() {
    echo "enroll.sh: error: $*" >&2
    exit 1
}
command -v dig >/dev/null || die "dig is missing (apt-get install bind9-dnsutils)"
if [[ -z ${ENROLL_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release -p twinpeaks-server >&2) || die "build failed"
fi

WORK=$(mktemp -d /tmp/tp-enroll.XXXXXX)
PID=""
cleanup() {
    [[ -z $PID ]] || kill -TERM "$PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=15471
"$REL/tp" kgc-setup --state "$WORK/state" --name bench.test. --root-ip $IP --port $PORT >/dev/null
head -c 32 /dev/urandom | base64 >"$WORK/tsig.secret"
chmod 600 "$WORK/tsig.secret"
cat >"$WORK/zone.keys" <<EOF
\$ORIGIN bench.test.
\$TTL 3600
@ IN SOA ks hostmaster 1 7200 3600 1209600 300
@ IN NS ks
ks IN A $IP
EOF
cat >"$WORK/tpkd.toml" <<EOF
name = "bench.test."
listen = ["$IP:$PORT"]
state_dir = "state"
zone_file = "zone.keys"
log = "warn,twinpeaks_server::keyserver=debug"

[[tsig]]
name = "bench-key."
secret_file = "tsig.secret"
allow = ["*.bench.test."]
EOF
"$REL/tpkd" --config "$WORK/tpkd.toml" 2>"$WORK/tpkd.log" &
PID=$!
for _ in $(seq 1 100); do
    dig +time=1 +tries=1 -p $PORT @$IP bench.test. SOA 2>/dev/null | grep -q NOERROR && break
    sleep 0.1
done

# Requests made beforehand (not timed): par/ and one/ at distinct IPs.
for kind in par one; do
    mkdir -p "$WORK/$kind"
    net=$([[ $kind == par ]] && echo 1 || echo 2)
    for i in $(seq 1 "$N"); do
        echo "$kind$i.bench.test. 10.$net.$((i / 256)).$((i % 256))"
    done | xargs -P 2 -L 1 sh -c '"$0" keygen --name "$3" --ip "$4" --issuer-params "$1" --out "$2/${3%%.*}" >/dev/null' \
        "$REL/tp" "$WORK/state/params" "$WORK/$kind"
done

run() {
    "$REL/tp" enroll --server $IP:$PORT --zone bench.test. --tsig-key bench-key. \
        --tsig-secret-file "$WORK/tsig.secret" --requests "$WORK/$1" --parallel "$2" \
        | sed -n 's/.* in \([0-9.]*\) s (\([0-9]*\)\/s.*/\2/p'
}
# Each commit's size and split (zone build; store transaction + flush), from tpkd's debug lines
# after line $1 of its log.
split() {
    tail -n +"$(($1 + 1))" "$WORK/tpkd.log" | grep ' commit ' | sed 's/\x1b\[[0-9;]*m//g' | awk '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
          n++; w += v["written"]; b += v["build_us"]; s += v["store_us"] }
        END { if (n) printf "%d commits, %.1f enrollments each, build %.2f ms, store + flush %.2f ms a commit", n, w / n, b / n / 1000, s / n / 1000 }'
}
one=$(run one 1)
one_split=$(split 0)
mark=$(wc -l <"$WORK/tpkd.log")
par=$(run par "$P")
par_split=$(split "$mark")
members=$("$REL/tp" ctl --config "$WORK/tpkd.toml" status | sed -n 's/^members = //p')
[[ $members -eq $((2 * N + 1)) ]] || die "expected $((2 * N + 1)) members, tpkd has $members"

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); $(date -u '+%F %H:%M UTC')"
echo "command: server/bench/enroll.sh $N $P"
printf '| %-52s | %14s |\n' path "enrollments/s"
printf '|%s|%s|\n' "------------------------------------------------------" "----------------"
printf '| %-52s | %14s |\n' "UPDATE + TSIG, 1 in flight (baseline, zone 1 → $((N + 1)))" "$one"
printf '| %-52s | %14s |\n' "UPDATE + TSIG, $P in flight (zone $((N + 1)) → $((2 * N + 1)))" "$par"
echo "members served at the end: $members (the key server's own record included)"
echo "1 in flight: $one_split"
echo "$P in flight: $par_split"
echo "crypto per enrollment on the key server (callgrind, docs/crypto.md): extract 2.52 M + sign 1.97 M + seal 0.85 M instructions"
