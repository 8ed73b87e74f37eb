#!/usr/bin/env bash
# Public-key operations of the device per TLS 1.3 session: callgrind call counts of
# ECDSA_do_sign_ex, ECDSA_do_verify, ECDH_compute_key and EC_KEY_generate_key (OpenSSL 3.0's
# providers reach the last two for every P-256 key share and derivation) in the whole device
# process, which has none outside its sessions (boot: key and certificate load, channel:
# HKDF and AES-GCM only). "first" = a process with one connection (delegation, the one
# signature, the resumption); "further" = the difference a second connection on the held
# context makes. (bench.sh counts inside --toggle-collect regions; with toggling, callgrind
# counted one ECDH of a held resumption twice, so this script counts whole processes.)
# Cases: psk_dhe_ke and 0-RTT against `openssl s_server -tls1_3`, psk_ke against gnutls-serv
# (OpenSSL 3.0's s_server never chooses psk_ke), TLS 1.2 by ticket and the device's own full
# TLS 1.3 handshake (standalone) for comparison.
#
#   agent/scripts/tls13_ops.sh        (needs openssl, gnutls-serv, valgrind; loopback only)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
cargo build -p d2tls --bins >&2
T=$ROOT/target/debug
. "$ROOT/agent/scripts/common.sh"
in_workdir
d2tls_pki "D2TLS Ops CA"
start_agent "$T" "handshake_timeout_secs = 60"

device_toml() { # server transport extra-line
    printf 'device_id = "sensor-1"\nagent = "127.0.0.1:%s"\npairing_key = "%s"\ncertificate = "device.pem"\nprivate_key = "device.key"\nca_file = "ca.pem"\nserver = "%s"\nserver_name = "127.0.0.1"\ntransport = "%s"\nsuite = "gcm"\ntimeout_secs = 90\n%s\n' \
        "$AP" "$KEY" "$1" "$2" "$3"
}
VG=(valgrind --tool=callgrind --cache-sim=no)
OPS="ECDSA_do_sign_ex ECDSA_do_verify ECDH_compute_key EC_KEY_generate_key"
count() { # callgrind file -> "sign | verify | ecdh | keygen"
    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$ROOT/agent/scripts" python3 -c 'import sys, callgrind
_, calls, _ = callgrind.read(sys.argv[1], sys.argv[2:])
print(" | ".join(str(calls[n]) for n in sys.argv[2:]))' "$1" $OPS
}
vg() { # config [device args...] -> ops of the whole process
    "${VG[@]}" --callgrind-out-file=cg.out "$T/d2tls-device" -c "$@" --log-level error > dev.out 2> dev.err
    grep -q '^session ' dev.out || { echo "device failed: $*" >&2; cat dev.out dev.err >&2; exit 1; }
    count cg.out
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$(grep '^session ' dev.out | tail -1)"; }
run() { # label config further(yes|no) [device args...]
    local label=$1 cfg=$2 further=$3; shift 3
    local first; first=$(vg "$cfg" "$@")
    echo "| $label | first | $(field kex) | $(field early_data) | $first |"
    if [ "$further" = yes ]; then
        local two; two=$(vg "$cfg" --connections 2 "$@")
        python3 -c 'import sys; a=sys.argv[1].split("|"); b=sys.argv[2].split("|"); print("| %s | further | %s | %s | %s |" % (sys.argv[3], sys.argv[4], sys.argv[5], " | ".join(str(int(y)-int(x)) for x, y in zip(a, b))))' \
            "$first" "$two" "$label" "$(field kex)" "$(field early_data)"
    fi
}
echo "# D2TLS TLS 1.3: the device's public-key operations ($(date -u +%Y-%m-%dT%H:%MZ))"
echo "openssl: $(openssl version); $(gnutls-serv --version | head -1); valgrind: $(valgrind --version)"
echo
echo "| case | session | kex | early data | ECDSA signatures | ECDSA verifications | ECDH derivations | EC key generations |"
echo "|---|---|---|---|---:|---:|---:|---:|"
s_server -tls1_3
device_toml "$S" tls13 "" > d13.toml
run "TLS 1.3 psk_dhe_ke (s_server -tls1_3)" d13.toml yes
run "TLS 1.3 full handshake on the device (standalone)" d13.toml no --standalone
s_server -tls1_3 -early_data
device_toml "$S" tls13 "" > d13e.toml
run "TLS 1.3 0-RTT (s_server -tls1_3 -early_data)" d13e.toml no --send ping
GP=$(free_port)
gnutls-serv --port "$GP" --x509certfile server.pem --x509keyfile server.key --x509cafile ca.pem \
    --require-client-cert --verify-client-cert \
    --priority 'NORMAL:-VERS-ALL:+VERS-TLS1.3:+PSK:-ECDHE-PSK:-DHE-PSK' > gnutls.log 2>&1 &
PIDS+=($!)
wait_for gnutls.log "Server listening"
device_toml "127.0.0.1:$GP" tls13 'tls13_kex = "psk_ke"' > d13k.toml
run "TLS 1.3 psk_ke (gnutls-serv, PSK before ECDHE-PSK)" d13k.toml yes
s_server -tls1_2
device_toml "$S" tls "" > d12.toml
run "TLS 1.2 ticket (s_server -tls1_2)" d12.toml yes
