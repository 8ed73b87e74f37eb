#!/usr/bin/env bash
# Re-signing throughput: a key zone of N members, every one due (the refresh margin is longer
# than the members' windows), re-signed by a running tpkd at its first check: one ECDSA
# signature a member spread over the cores, one store transaction, one zone build. tpkd logs
# the time the whole re-signing took.
#
# Baseline in the same run: Knot signing a zone of N TXT records with ECDSAP256SHA256 (the same
# curve, one RRSIG per record) from cold, as a DNSSEC signer re-signs a zone.
#
# Usage: server/bench/resign.sh [N]     (default N = 100000; needs dig, knotd, keymgr)
set -euo pipefail

N=${1:-100000}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REL=$ROOT/target/release
IP=127.0.7.2
PORT=15472
KPORT=15473
die() {
    echo "resign.sh: error: $*" >&2
    exit 1
}
command -v dig >/dev/null || die "dig is missing (apt-get install bind9-dnsutils)"
KNOTD=$(command -v knotd || echo /usr/sbin/knotd)
[[ -x $KNOTD ]] || die "knotd is missing (apt-get install knot)"
(cd "$ROOT" && cargo build --release -p twinpeaks-server >&2) || die "build failed"

WORK=$(mktemp -d /tmp/tp-resign.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "generating $N members (tp gen-zone; not timed)..." >&2
"$REL/tp" gen-zone --count "$N" --out "$WORK/z" --origin bench.test. >/dev/null
# Every member's window (365 days) ends within the margin (400 days): all due at the first
# check, re-signed with 800-day windows.
cat >"$WORK/z/tpkd.toml" <<EOF
name = "bench.test."
listen = ["$IP:$PORT"]
state_dir = "state"
zone_file = "bench.keys"
log = "info"
enroll_validity_days = 500
resign_margin_secs = 34560000
resign_validity_secs = 69120000
EOF
t0=$(date +%s%N)
"$REL/tpkd" --config "$WORK/z/tpkd.toml" 2>"$WORK/tpkd.log" &
PIDS+=($!)
for _ in $(seq 1 6000); do
    grep -q "members re-signed" "$WORK/tpkd.log" && break
    kill -0 "${PIDS[0]}" 2>/dev/null || die "tpkd stopped: $(tail -3 "$WORK/tpkd.log")"
    sleep 0.1
done
t1=$(date +%s%N)
line=$(grep "members re-signed" "$WORK/tpkd.log") || die "no re-signing within 600 s"
resigned=$(sed -n 's/.*resigned=\([0-9]*\).*/\1/p' <<<"$line")
ms=$(sed -n 's/.* ms=\([0-9]*\).*/\1/p' <<<"$line")
[[ $resigned -eq $N ]] || die "re-signed $resigned of $N"
dig +short -p $PORT @$IP www0.bench.test. TYPE65300 | grep -q . || die "www0 not served after re-signing"

# Knot: the same number of names, one TXT each, signed from cold with ECDSAP256SHA256.
mkdir -p "$WORK/knot/keys"
{
    echo "\$ORIGIN bench.test."
    echo "\$TTL 3600"
    echo "@ IN SOA ns hostmaster 1 7200 3600 1209600 300"
    echo "@ IN NS ns"
    echo "ns IN A $IP"
    for i in $(seq 0 $((N - 1))); do echo "www$i IN TXT \"member $i\""; done
} >"$WORK/knot/bench.test.zone"
cat >"$WORK/knot/knot.conf" <<EOF
server:
    rundir: "$WORK/knot"
    listen: 127.0.7.3@$KPORT
    background-workers: $(nproc)
database:
    storage: "$WORK/knot"
    kasp-db: "$WORK/knot/keys"
policy:
  - id: ecdsa
    algorithm: ecdsap256sha256
    single-type-signing: on
template:
  - id: default
    storage: "$WORK/knot"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: bench.test.
    dnssec-signing: on
    dnssec-policy: ecdsa
log:
  - target: stderr
    any: info
EOF
k0=$(date +%s%N)
"$KNOTD" -c "$WORK/knot/knot.conf" 2>"$WORK/knot.log" &
PIDS+=($!)
for _ in $(seq 1 6000); do
    grep -q "DNSSEC, successfully signed" "$WORK/knot.log" && break
    kill -0 "${PIDS[1]}" 2>/dev/null || die "knotd stopped: $(tail -3 "$WORK/knot.log")"
    sleep 0.1
done
k1=$(date +%s%N)
grep -q "DNSSEC, successfully signed" "$WORK/knot.log" || die "Knot did not sign within 600 s"
knot_ms=$(((k1 - k0) / 1000000))
load_ms=$(((t1 - t0) / 1000000 - ms))

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); $(date -u '+%F %H:%M UTC')"
echo "command: server/bench/resign.sh $N"
printf '| %-58s | %10s | %12s |\n' "what ($N members or records)" "ms" "per second"
printf '|%s|%s|%s|\n' "------------------------------------------------------------" "------------" "--------------"
printf '| %-58s | %10s | %12s |\n' "tpkd: re-sign every member (sign, store, rebuild)" "$ms" "$((N * 1000 / (ms > 0 ? ms : 1)))"
printf '| %-58s | %10s | %12s |\n' "Knot: sign the zone from cold (start to signed, baseline)" "$knot_ms" "$((N * 1000 / (knot_ms > 0 ? knot_ms : 1)))"
printf '| %-58s | %10s | %12s |\n' "tpkd: start and load before it (verify every signature)" "$load_ms" "$((N * 1000 / (load_ms > 0 ? load_ms : 1)))"
echo "tpkd/Knot time ratio: $(awk -v a="$ms" -v b="$knot_ms" 'BEGIN { printf "%.2f", a / b }')"
