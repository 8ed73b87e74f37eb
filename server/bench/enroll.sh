#!/usr/bin/env bash
# Enrollments per second: N members enrolled into a running tpkd by P concurrent clients, over
# DNS UPDATE + TSIG (`tp enroll`) and, as the baseline in the same run, over the control socket
# (`tp ctl enroll`). Each enrollment is issue + sign + durable store + zone rebuild. The clients
# are processes (one `tp` per enrollment), so the figure includes their start-up.
#
# Usage: server/bench/enroll.sh [N] [P]     (default N = 200, P = 8; needs dig)
set -euo pipefail

N=${1:-200}
P=${2:-8}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REL=$ROOT/target/release
IP=127.0.7.1
die() {
    echo "enroll.sh: error: $*" >&2
    exit 1
}
command -v dig >/dev/null || die "dig is missing (apt-get install bind9-dnsutils)"
(cd "$ROOT" && cargo build --release -p twinpeaks-server >&2) || die "build failed"

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
log = "warn"

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

# Requests made beforehand (not timed): tsig-N and ctl-N at distinct IPs.
mkdir -p "$WORK/req"
for kind in tsig ctl; do
    for i in $(seq 1 "$N"); do
        "$REL/tp" keygen --name "$kind$i.bench.test." --ip "10.$([[ $kind == tsig ]] && echo 1 || echo 2).$((i / 256)).$((i % 256))" \
            --issuer-params "$WORK/state/params" --out "$WORK/req/$kind$i" >/dev/null
    done
done

run() {
    local kind=$1 t0 t1
    t0=$(date +%s%N)
    seq 1 "$N" | xargs -P "$P" -I{} sh -c "$2" >/dev/null
    t1=$(date +%s%N)
    awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", n / ((b - a) / 1e9) }'
}
tsig=$(run tsig "'$REL/tp' enroll --server $IP:$PORT --zone bench.test. --tsig-key bench-key. --tsig-secret-file '$WORK/tsig.secret' --request '$WORK/req/tsig{}.req' --response '$WORK/req/tsig{}.resp'")
ctl=$(run ctl "'$REL/tp' ctl --config '$WORK/tpkd.toml' enroll --request '$WORK/req/ctl{}.req' --response '$WORK/req/ctl{}.resp'")
members=$("$REL/tp" ctl --config "$WORK/tpkd.toml" status | sed -n 's/^members = //p')
[[ $members -eq $((2 * N + 1)) ]] || die "expected $((2 * N + 1)) members, tpkd has $members"

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); $(date -u '+%F %H:%M UTC')"
echo "command: server/bench/enroll.sh $N $P"
printf '| %-44s | %14s |\n' path "enrollments/s"
printf '|%s|%s|\n' "----------------------------------------------" "----------------"
printf '| %-44s | %14s |\n' "DNS UPDATE + TSIG (tp enroll), $P clients" "$tsig"
printf '| %-44s | %14s |\n' "control socket (tp ctl enroll), $P clients" "$ctl"
echo "members served at the end: $members (the key server's own record included)"
