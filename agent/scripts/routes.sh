#!/usr/bin/env bash
# The device's inputs to the delay model (agent/scripts/delay_model.py), one row per route:
# setup instructions (callgrind, --toggle-collect on the setup region as in bench.sh:
# `device_io::delegate_and_resume` for D2TLS, `device_io::full_handshake` standalone), the
# inclusive instructions and calls of the public-key operations inside it (ECDSA_do_sign_ex,
# ECDSA_do_verify, ECDH_compute_key, EC_KEY_generate_key; and EVP_PKEY_public_check, OpenSSL's
# check of the peer's key share, a scalar multiplication by the group order), and the device's
# bytes per session
# (its own counters: channel to the agent, connection to the server; one plain run).
# Routes: DTLS 1.2 and TLS 1.2 by session ID (s_server -no_ticket) and by ticket (s_server),
# TLS 1.3 psk_dhe_ke (s_server -tls1_3), TLS 1.3 0-RTT (s_server -tls1_3 -early_data, a
# 5-byte first line), TLS 1.3 psk_ke (gnutls-serv with priorities that choose it: OpenSSL
# 3.0's server never does while the client offers psk_dhe_ke, which OpenSSL's client always
# does), and the device's own full handshake in DTLS 1.2, TLS 1.2, TLS 1.3.
# Loopback, no delay, no throttle: instructions and bytes only (no wall-clock figure).
#
#   agent/scripts/routes.sh > agent/scripts/routes.json   (needs openssl, gnutls-serv, valgrind, python3)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
cargo build --release -p d2tls --features measure --bins >&2
T=$ROOT/target/release
. "$ROOT/agent/scripts/common.sh"
in_workdir
d2tls_pki "D2TLS Routes CA"
start_agent "$T"
device_toml() { # server transport suite
    printf 'device_id = "sensor-1"\nagent = "127.0.0.1:%s"\npairing_key = "%s"\ncertificate = "device.pem"\nprivate_key = "device.key"\nca_file = "ca.pem"\nserver = "%s"\nserver_name = "127.0.0.1"\ntransport = "%s"\nsuite = "%s"\ntimeout_secs = 90\n' \
        "$AP" "$KEY" "$1" "$2" "$3"
}
VG=(valgrind --tool=callgrind --cache-sim=no)
OPS="ECDSA_do_sign_ex ECDSA_do_verify ECDH_compute_key EC_KEY_generate_key"
route() { # name config region [device args...]: one plain run (bytes), one callgrind run
    local name=$1 cfg=$2 region=$3; shift 3
    "$T/d2tls-device" -c "$cfg" --log-level error "$@" > "$name.out" 2> "$name.err" \
        || { echo "device failed ($name)" >&2; cat "$name.out" "$name.err" >&2; exit 1; }
    sleep 0.2
    "${VG[@]}" --callgrind-out-file="$name.cg" --toggle-collect="*device_io::$region*" \
        "$T/d2tls-device" -c "$cfg" --log-level error "$@" > "$name.vg.out" 2> "$name.vg.err" \
        || { echo "device under callgrind failed ($name)" >&2; cat "$name.vg.err" >&2; exit 1; }
    sleep 0.2
    echo "$name" >> routes.list
}
: > routes.list
s_server -dtls1_2 -no_ticket -cipher ECDHE-ECDSA-AES128-CCM8
device_toml "$S" dtls ccm8 > dtls.toml
route dtls12_session_id dtls.toml delegate_and_resume
route dtls12_standalone dtls.toml full_handshake --standalone
s_server -dtls1_2 -cipher ECDHE-ECDSA-AES128-CCM8
device_toml "$S" dtls ccm8 > dtlst.toml
route dtls12_ticket dtlst.toml delegate_and_resume
s_server -tls1_2 -no_ticket -cipher ECDHE-ECDSA-AES128-GCM-SHA256
device_toml "$S" tls gcm > tls.toml
route tls12_session_id tls.toml delegate_and_resume
route tls12_standalone tls.toml full_handshake --standalone
s_server -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256
device_toml "$S" tls gcm > tlst.toml
route tls12_ticket tlst.toml delegate_and_resume
s_server -tls1_3
device_toml "$S" tls13 gcm > t13.toml
route tls13_psk_dhe_ke t13.toml delegate_and_resume
route tls13_standalone t13.toml full_handshake --standalone
s_server -tls1_3 -early_data
device_toml "$S" tls13 gcm > t13e.toml
route tls13_0rtt t13e.toml delegate_and_resume --send ping
# gnutls-serv listens on every address (it has no listen-address option); loopback is used.
G=$(free_port)
gnutls-serv --port "$G" --echo --x509certfile server.pem --x509keyfile server.key \
    --x509cafile ca.pem --require-client-cert --verify-client-cert \
    --priority "NORMAL:-VERS-ALL:+VERS-TLS1.3:+PSK:-ECDHE-PSK:-DHE-PSK" > gs.log 2>&1 &
PIDS+=($!)
wait_for gs.log "Server listening on IPv4"
{ device_toml "127.0.0.1:$G" tls13 gcm; echo 'tls13_kex = "psk_ke"'; } > t13k.toml
route tls13_psk_ke t13k.toml delegate_and_resume

PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$ROOT/agent/scripts" python3 - "$OPS EVP_PKEY_public_check" <<'PY'
import json, re, sys, datetime, subprocess
import callgrind
ops = sys.argv[1].split()
out = {
    "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
    "command": "agent/scripts/routes.sh",
    "openssl": subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip(),
    "routes": {},
}
for name in open("routes.list").read().split():
    line = next(l for l in open(f"{name}.out") if l.startswith("session "))
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    if name == "tls13_psk_ke" and kv["kex"] != "psk_ke":
        sys.exit(f"{name}: the server chose {kv['kex']}, not psk_ke")
    total, calls, incl = callgrind.read(f"{name}.cg", ops)
    out["routes"][name] = {
        "instructions": total,
        "pk_calls": {n: calls[n] for n in ops[:4]},
        "pk_instructions": {n: incl[n] for n in ops[:4]},
        "peer_key_check_calls": calls[ops[4]], "peer_key_check_instructions": incl[ops[4]],
        "channel_sent": int(kv["channel_sent"]), "channel_received": int(kv["channel_received"]),
        "server_sent": int(kv["server_sent"]), "server_received": int(kv["server_received"]),
        "resumed_by": kv["resumed_by"], "kex": kv["kex"], "early_data": kv["early_data"],
        "version": kv["version"], "cipher": kv["cipher"],
    }
print(json.dumps(out, indent=1))
PY
