#!/usr/bin/env bash
# Client-side instructions per TLS 1.3 connection set-up, by callgrind: TwinPeaks raw public
# keys (RFC 7250) against a certificate chain with a stapled OCSP response, rustls 0.23 + ring
# on both ends, loopback TCP, in one run.
#
# The bench plugin/benches/tls.rs, in its `icount KIND K` mode, starts a three-level key-server
# hierarchy, a DNS server and the TLS servers on a tokio runtime of their own threads, makes one
# connection of KIND outside the counted function (one-time initialisation), then K connections
# inside `icount_client_loop` on the main thread (a current-thread runtime: the client's whole
# work, resolution included, runs there). valgrind counts only inside that function
# (`--collect-atstart=no --toggle-collect=tls::icount_client_loop`), per thread
# (`--separate-threads=yes`): the main thread's count is the client's, and the script checks
# that no other thread (the servers) was counted. Each kind runs for K connections and for 0
# (an empty loop); (count(K) - count(0)) / K is one connection's user-space instructions.
#
# Kinds:
#   rpk       A warm: resolve from the cache + tls::client_config for the resolved key + TCP
#             connect + handshake (what twinpeaks::tls::connect does)
#   rpk-cold  A cold: the same with a fresh resolver per connection (3 key queries and the
#             A/AAAA lookup; the resolvers are built before the loop)
#   rpk-hs    the RPK handshake alone (client config built once, no resolution)
#   cert      B: TCP connect + handshake with leaf + intermediate (P-256) and a stapled OCSP
#             response, WebPkiServerVerifier over a RootCertStore (client config built once)
#
# Usage: server/bench/tls.sh [K]      (default K = 100; needs valgrind)
# Knobs: TLS_KINDS="rpk rpk-cold rpk-hs cert" (the kinds to run), BENCH_KEEP=1 (keep the
# callgrind files and logs).
set -euo pipefail

K=${1:-100}
KINDS=${TLS_KINDS:-rpk rpk-cold rpk-hs cert}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOGGLE='tls::icount_client_loop'

die() {
    echo "tls.sh: error: $*" >&2
    exit 1
}
command -v valgrind >/dev/null || die "valgrind is missing (apt-get install valgrind)"
[[ $K =~ ^[1-9][0-9]*$ ]] || die "K must be a positive integer (got '$K')"

START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
cd "$ROOT"
BUILD=$(cargo bench -p twinpeaks --bench tls --no-run 2>&1) || {
    echo "$BUILD" >&2
    die "build failed"
}
BIN=$(echo "$BUILD" | sed -n 's/.*Executable benches\/tls.rs (\(.*\))/\1/p' | tail -1)
[[ -n $BIN && -x $ROOT/$BIN ]] || [[ -n $BIN && -x $BIN ]] || die "no bench executable in: $BUILD"
[[ -x $BIN ]] || BIN=$ROOT/$BIN

WORK=$(mktemp -d /tmp/tp-tls-icount.XXXXXX)
if [[ ${BENCH_KEEP:-0} == 1 ]]; then
    echo "== keeping $WORK" >&2
else
    trap 'rm -rf "$WORK"' EXIT
fi

# Instructions counted in the main thread for `icount KIND N`; fails if another thread counted.
count() {
    local kind=$1 n=$2 out="$WORK/$1.$2.cg"
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect="$TOGGLE" \
        --separate-threads=yes --callgrind-out-file="$out" \
        "$BIN" icount "$kind" "$n" >"$WORK/$kind.$n.log" 2>&1 ||
        die "$kind $n: $(tail -5 "$WORK/$kind.$n.log")"
    grep -q "icount .*: $n connections" "$WORK/$kind.$n.log" || die "$kind $n: $(tail -5 "$WORK/$kind.$n.log")"
    local main="" f t others=0
    for f in "$out"-*; do
        t=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$f")
        t=${t:-0}
        if [[ $f == "$out-01" ]]; then main=$t; else others=$((others + t)); fi
    done
    [[ -n $main ]] || die "$kind $n: no callgrind file for the main thread"
    ((others == 0)) || die "$kind $n: other threads counted $others instructions (toggle not per thread?)"
    echo "$main"
}

declare -A PER
for kind in $KINDS; do
    echo "== $kind: $K connections and 0, under callgrind" >&2
    full=$(count "$kind" "$K")
    empty=$(count "$kind" 0)
    PER[$kind]=$(((full - empty) / K))
    bytes=$(sed -n 's/.* (\([0-9]*\) per connection.*/\1/p' "$WORK/$kind.$K.log")
    echo "   $kind: $full - $empty = $((full - empty)) instructions for $K connections; $bytes handshake bytes each" >&2
done

CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
RUSTLS=$(sed -n '/^name = "rustls"$/{n;s/version = "\(.*\)"/\1/p}' "$ROOT/Cargo.lock" | head -1)
echo
echo "# Client instructions per TLS 1.3 connection set-up (callgrind, user space, client thread)"
echo
echo "machine: $CPU, $(nproc) CPUs; $(uname -sr); $(valgrind --version); rustls $RUSTLS + ring"
echo "date: $START to $(date -u '+%H:%M:%S UTC')"
echo "command: server/bench/tls.sh $K   (valgrind --tool=callgrind --collect-atstart=no --toggle-collect=$TOGGLE --separate-threads=yes; (K - 0) / K)"
echo
echo "| kind | instructions / connection |"
echo "|---|---:|"
group() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
label() {
    case $1 in
        rpk) echo "**A warm**: resolve (cache hit) + client config + TCP connect + RPK handshake" ;;
        rpk-cold) echo "**A cold**: resolve (empty cache, 3 key queries + A/AAAA) + client config + TCP connect + RPK handshake" ;;
        rpk-hs) echo "A: TCP connect + RPK handshake alone (config built once)" ;;
        cert) echo "**B**: TCP connect + handshake, chain + OCSP, WebPkiServerVerifier (config built once)" ;;
    esac
}
for kind in $KINDS; do
    printf '| %s | %s |\n' "$(label "$kind")" "$(group "${PER[$kind]}")"
done
if [[ -n ${PER[cert]:-} ]]; then
    echo
    for kind in rpk rpk-cold rpk-hs; do
        [[ -n ${PER[$kind]:-} ]] || continue
        awk -v a="${PER[$kind]}" -v b="${PER[cert]}" -v k="$kind" 'BEGIN { printf "%s / cert = %.3f\n", k, a / b }'
    done
fi
