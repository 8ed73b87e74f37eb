#!/usr/bin/env bash
# D2TLS device-side figures, D2TLS and the standalone full handshake measured in the same run:
# CPU instructions (callgrind), public-key operations (callgrind call counts), bytes sent and
# received, peak heap (massif), and setup delay over emulated LAN and WAN links.
#
#   agent/scripts/bench.sh [RUNS]        (RUNS: delay samples per case, default 7)
#   TRANSPORT=tls SUITE=gcm agent/scripts/bench.sh   (default: dtls, ccm8)
#
# Needs: openssl (CLI), valgrind, python3. Loopback only. Prints a report on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${1:-7}
TRANSPORT=${TRANSPORT:-dtls}
SUITE=${SUITE:-ccm8}
case "$SUITE" in ccm8) CIPHER=ECDHE-ECDSA-AES128-CCM8 ;; gcm) CIPHER=ECDHE-ECDSA-AES128-GCM-SHA256 ;;
    *) echo "SUITE must be ccm8 or gcm" >&2; exit 2 ;; esac
case "$TRANSPORT" in dtls) PROTO=-dtls1_2; LINK=udp ;; tls) PROTO=-tls1_2; LINK=tcp ;;
    *) echo "TRANSPORT must be dtls or tls" >&2; exit 2 ;; esac
cd "$ROOT"
cargo build --release -p d2tls --bins --example linkemu >&2
T=$ROOT/target/release
EMU=$T/examples/linkemu
W=$(mktemp -d)
PIDS=()
cleanup() {
    exec 3>&- || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
cd "$W"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # file pattern
    for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

# Throw-away PKI (P-256).
EC=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${EC[@]}" -keyout ca.key -out ca.pem -subj "/CN=D2TLS Bench CA" -days 2 2>/dev/null
for n in server device; do
    subj=$([ $n = server ] && echo "/CN=localhost" || echo "/CN=sensor-1/O=D2TLS Devices")
    openssl req "${EC[@]}" -keyout $n.key -out $n.csr -subj "$subj" 2>/dev/null
    [ $n = server ] && echo "subjectAltName=IP:127.0.0.1,DNS:localhost" > $n.ext || echo "extendedKeyUsage=clientAuth" > $n.ext
    openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2 -extfile $n.ext 2>/dev/null
done
KEY=$(openssl rand -hex 32)

SP=$(free_port); AP=$(free_port)
mkfifo sserver.in
openssl s_server $PROTO -accept 127.0.0.1:$SP -cert server.pem -key server.key -CAfile ca.pem \
    -Verify 1 -no_ticket -cipher $CIPHER -quiet < sserver.in > sserver.log 2>&1 &
PIDS+=($!)
exec 3>sserver.in   # keeps s_server's stdin open

cat > agent.toml <<EOF
listen = "127.0.0.1:$AP"
ca_file = "ca.pem"
[[device]]
id = "sensor-1"
pairing_key = "$KEY"
EOF
"$T/d2tls-agent" -c agent.toml --log-level warn > agent.out 2> agent.log &
PIDS+=($!)
wait_for agent.out listening

device_toml() { # agent_addr server_addr
    cat <<EOF
device_id = "sensor-1"
agent = "$1"
pairing_key = "$KEY"
certificate = "device.pem"
private_key = "device.key"
ca_file = "ca.pem"
server = "$2"
server_name = "127.0.0.1"
transport = "$TRANSPORT"
suite = "$SUITE"
EOF
}
device_toml 127.0.0.1:$AP 127.0.0.1:$SP > device.toml
DEV=("$T/d2tls-device" -c device.toml --log-level error)

echo "# D2TLS device-side benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
echo "machine: nproc=$(nproc); $(lscpu | grep -E 'Model name' | sed 's/  */ /g')"
echo "openssl: $(openssl version); valgrind: $(valgrind --version)"
echo "case: $TRANSPORT 1.2, $CIPHER, P-256, client certificate required (openssl s_server $PROTO -Verify 1 -no_ticket)"
echo

# --- instructions and public-key operations ----------------------------------------------
VG=(valgrind --tool=callgrind --cache-sim=no)
"${VG[@]}" --callgrind-out-file=cg.d2tls --toggle-collect='*device_io::link_from*' \
    --toggle-collect='*device_io::delegate_and_resume*' "${DEV[@]}" > out.d2tls 2>vg.d2tls
"${VG[@]}" --callgrind-out-file=cg.full --toggle-collect='*device_io::full_handshake*' \
    "${DEV[@]}" --standalone > out.full 2>vg.full
"${VG[@]}" --callgrind-out-file=cg.d2tls.all "${DEV[@]}" > /dev/null 2>&1
"${VG[@]}" --callgrind-out-file=cg.full.all "${DEV[@]}" --standalone > /dev/null 2>&1
valgrind --tool=massif --massif-out-file=ms.d2tls "${DEV[@]}" > /dev/null 2>&1
valgrind --tool=massif --massif-out-file=ms.full "${DEV[@]}" --standalone > /dev/null 2>&1
grep -q "reused=true" out.d2tls || { echo "D2TLS run did not resume" >&2; cat out.d2tls vg.d2tls >&2; exit 1; }

python3 - "$W" <<'PY'
import re, sys, os
w = sys.argv[1]
def total(f):
    for line in open(os.path.join(w, f)):
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
def calls(f, names):
    """Calls to each function, and the inclusive instructions of those calls."""
    idname, counts, incl, cur = {}, {n: 0 for n in names}, {n: 0 for n in names}, None
    after_calls = False
    for line in open(os.path.join(w, f)):
        if after_calls:
            after_calls = False
            parts = line.split()
            if cur in incl and len(parts) >= 2:
                incl[cur] += int(parts[1])
            continue
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(2):
                idname[m.group(1)] = m.group(2).strip()
            cur = idname.get(m.group(1)) if line.startswith("cfn=") else None
            continue
        if line.startswith("calls="):
            after_calls = True
            if cur in counts:
                counts[cur] += int(line.split("=")[1].split()[0])
    return counts, incl
def peak(f):
    best = 0
    heap = extra = 0
    for line in open(os.path.join(w, f)):
        if line.startswith("mem_heap_B="): heap = int(line.split("=")[1])
        if line.startswith("mem_heap_extra_B="):
            extra = int(line.split("=")[1]); best = max(best, heap + extra)
    return best
def kv(f):
    text = open(os.path.join(w, f)).read()
    return dict(re.findall(r"(\w+)=(\S+)", text.splitlines()[0]))
ops = ["ECDSA_do_sign_ex", "ECDSA_do_verify", "ECDH_compute_key", "EC_KEY_generate_key"]
d, s = total("cg.d2tls"), total("cg.full")
da, sa = total("cg.d2tls.all"), total("cg.full.all")
od, _ = calls("cg.d2tls", ops)
os_, _ = calls("cg.full", ops)
_, rin = calls("cg.d2tls", ["d2tls::device_io::resume"])
r = rin["d2tls::device_io::resume"]
kd, ks = kv("out.d2tls"), kv("out.full")
pd, ps = peak("ms.d2tls"), peak("ms.full")
print("| figure (device side) | D2TLS | standalone | D2TLS / standalone |")
print("|---|---:|---:|---:|")
print(f"| instructions, session setup only (callgrind, toggle-collect) | {d:,} | {s:,} | {100*d/s:.1f} % |")
print(f"| instructions, whole process (start, config, setup, exit) | {da:,} | {sa:,} | {100*da/sa:.1f} % |")
for n, label in zip(ops, ["ECDSA signatures", "ECDSA verifications", "ECDH derivations", "EC key generations"]):
    print(f"| {label} ({n} calls) | {od[n]} | {os_[n]} | |")
cd_ = int(kd["channel_sent"]) + int(kd["channel_received"])
bd = int(kd["server_sent"]) + int(kd["server_received"])
bs = int(ks["server_sent"]) + int(ks["server_received"])
print(f"| bytes sent to agent / received from agent (channel) | {kd['channel_sent']} / {kd['channel_received']} | – | |")
print(f"| bytes sent to server / received from server (UDP or TCP payload) | {kd['server_sent']} / {kd['server_received']} | {ks['server_sent']} / {ks['server_received']} | |")
print(f"| bytes in all, device | {cd_ + bd:,} | {bs:,} | {100*(cd_+bd)/bs:.1f} % |")
hd, hs = int(kd["heap_setup_peak"]), int(ks["heap_setup_peak"])
print(f"| peak heap during setup, above boot (counting allocator: Rust + OpenSSL) | {hd:,} B | {hs:,} B | {100*hd/hs:.1f} % |")
print(f"| heap in use at setup start (boot: OpenSSL init, TLS context, logging) | {int(kd['heap_start']):,} B | {int(ks['heap_start']):,} B | |")
print(f"| peak heap, whole process (massif, heap + allocator overhead) | {pd:,} B | {ps:,} B | {100*pd/ps:.1f} % |")
print(f"| instructions of the resumption alone (inclusive `resume`) | {r:,} | | |")
print()
# 24-hour session-overhead model (dissertation Fig. 3.10/3.11): a session re-established every
# T; either always from scratch, or resumed by the device itself while the server keeps the
# session (lifetime L = 2 h, OpenSSL's default) with a fresh full setup every L.
bd_all = cd_ + bd
print("| re-establish every | sessions/24 h | device instr. D2TLS | standalone | ratio | device bytes D2TLS | standalone | D2TLS + own resumption (L=2 h) | standalone + own resumption (L=2 h) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for label, t in [("5 min", 300), ("15 min", 900), ("1 h", 3600), ("2 h", 7200), ("6 h", 21600)]:
    n = 86400 // t
    full = max(1, 86400 // max(t, 7200))
    di, si = n * d, n * s
    dres, sres = full * d + (n - full) * r, full * s + (n - full) * r
    print(f"| {label} | {n} | {di/1e6:,.1f} M | {si/1e6:,.1f} M | {100*di/si:.1f} % | {n*bd_all/1e3:,.1f} kB | {n*bs/1e3:,.1f} kB | {dres/1e6:,.1f} M | {sres/1e6:,.1f} M |")
print()
print(f"Per-session device instructions: D2TLS {d:,}, standalone {s:,}, own resumption {r:,}.")
with open(os.path.join(w, "instr.env"), "w") as f:
    f.write(f"D_INSTR={d}\nS_INSTR={s}\n")
PY
echo

# --- delay over emulated links -----------------------------------------------------------
# Server path: UDP (DTLS) or TCP (TLS) link with the given one-way delay in front of s_server (the agent and the
# device both reach the server through it). Device <-> agent: TCP link with LAN delay.
. ./instr.env
delay_case() { # name one_way_ms
    local LP CP
    LP=$(free_port); CP=$(free_port)
    "$EMU" $LINK 127.0.0.1:$LP 127.0.0.1:$SP "$2" > emu1.out 2>/dev/null & PIDS+=($!); local E1=$!
    "$EMU" tcp 127.0.0.1:$CP 127.0.0.1:$AP 0.7 > emu2.out 2>/dev/null & PIDS+=($!); local E2=$!
    wait_for emu1.out listening; wait_for emu2.out listening
    device_toml 127.0.0.1:$CP 127.0.0.1:$LP > delay.toml
    : > d.us; : > s.us
    # s_server serves one client at a time: a short pause lets it return to accept().
    for _ in $(seq "$RUNS"); do
        "$T/d2tls-device" -c delay.toml --log-level error | grep -o 'setup_us=[0-9]*' | cut -d= -f2 >> d.us
        sleep 0.2
    done
    for _ in $(seq "$RUNS"); do
        "$T/d2tls-device" -c delay.toml --log-level error --standalone | grep -o 'setup_us=[0-9]*' | cut -d= -f2 >> s.us
        sleep 0.2
    done
    kill $E1 $E2 2>/dev/null || true
    python3 - "$1" "$2" "$D_INSTR" "$S_INSTR" <<'PY'
import sys, statistics
name, ow, di, si = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = [int(x) for x in open("d.us")]; s = [int(x) for x in open("s.us")]
md, ms = statistics.median(d) / 1000, statistics.median(s) / 1000
print(f"<!-- {name} samples us: D2TLS {d}; standalone {s} -->")
print(f"| {name}: server RTT {2*ow:g} ms, device-agent RTT 1.4 ms | {md:.1f} ms | {ms:.1f} ms | {100*(1-md/ms):+.1f} % |")
# The same network times with the device's own instructions run at 64 M instructions/s
# (a Cortex-M4 class MCU at 64 MHz, 1 instruction/cycle): what a constrained device adds.
f = 64e6
mdm, msm = md + 1000 * di / f, ms + 1000 * si / f
print(f"| {name}, device CPU modelled at 64 MIPS | {mdm:.1f} ms | {msm:.1f} ms | {100*(1-mdm/msm):+.1f} % |")
PY
}
echo "| setup delay, median of $RUNS (device: start of setup to session ready) | D2TLS | standalone | reduction |"
echo "|---|---:|---:|---:|"
delay_case LAN 0.7
delay_case WAN 84
