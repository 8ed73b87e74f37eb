#!/usr/bin/env bash
# D2TLS device-side figures, D2TLS and the standalone full handshake measured in the same run:
# CPU instructions (callgrind), public-key operations (callgrind call counts), bytes sent and
# received, peak heap (massif), and setup delay over emulated LAN and WAN links.
#
#   agent/scripts/bench.sh [RUNS]        (RUNS: delay samples per case, default 7)
#   TRANSPORT=tls SUITE=gcm agent/scripts/bench.sh   (default: dtls, ccm8)
#   TRANSPORT=tls13 SUITE=gcm agent/scripts/bench.sh (TLS 1.3: s_server -tls1_3, resumption by
#                                                      its ticket, psk_dhe_ke)
#   DEVICE_MIPS="64 32" agent/scripts/bench.sh 7      (also measure with the device CPU throttled)
#   PRESTART=1 agent/scripts/bench.sh                  (also D2TLS with its handshake started ahead)
#
# PRESTART=1: a third series in each delay case, D2TLS whose agent started the handshake ahead:
# each such run ends with `--next-session-in-ms 0` (an Expect: "I will ask again soon"), the
# agent runs the next delegation's handshake up to the signature at once, and the next run
# finds it waiting. It has its own device ID (sensor-2) and its own s_server (s_server serves
# one client at a time, and a handshake held for the next run would stall the other series).
# CONNECT_RTT=1 (default): TCP links delay a connection's first bytes by TCP's handshake, one
# round trip, as a real path does (runs before 2026-12-02 had CONNECT_RTT=0: a TCP connect cost
# nothing on the emulated link).
#
# DEVICE_MIPS: for each speed S (M instructions/s), the delay cases are run again with only the
# device process in a CPU cgroup whose quota/period makes it execute its own setup code at S M
# instructions per second; the agent, the server and the link emulator stay unthrottled. The
# host's rate for that code is calibrated in the same run: callgrind instructions of the setup
# region / the device's own CPU time for it (setup_cpu_us, unthrottled, loopback, median of
# RUNS). Quota 1000 us (the kernel's minimum), period = 1000 us x host rate / S. Needs root and
# a writable cgroup v1 `cpu` controller or cgroup v2 with `cpu`; the group is removed at exit.
#
# Needs: openssl (CLI), valgrind, python3. Loopback only. Prints a report on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${1:-7}
TRANSPORT=${TRANSPORT:-dtls}
SUITE=${SUITE:-ccm8}
DEVICE_MIPS=${DEVICE_MIPS:-}
THR_RUNS=${THR_RUNS:-$((3 * RUNS))}
PRESTART=${PRESTART:-}
CONNECT_RTT=${CONNECT_RTT:-1}
for m in $DEVICE_MIPS; do
    [[ "$m" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "DEVICE_MIPS: \`$m' is not a number" >&2; exit 2; }
done
case "$SUITE" in ccm8) CIPHER=ECDHE-ECDSA-AES128-CCM8 ;; gcm) CIPHER=ECDHE-ECDSA-AES128-GCM-SHA256 ;;
    *) echo "SUITE must be ccm8 or gcm" >&2; exit 2 ;; esac
# s_server's options: (D)TLS 1.2 by session ID with the suite; TLS 1.3 resumes by ticket only.
SS_OPTS=(-no_ticket -cipher "$CIPHER")
case "$TRANSPORT" in dtls) PROTO=-dtls1_2; LINK=udp ;; tls) PROTO=-tls1_2; LINK=tcp ;;
    tls13) PROTO=-tls1_3; LINK=tcp; SS_OPTS=(); [ "$SUITE" = gcm ] && CIPHER=TLS_AES_128_GCM_SHA256 || CIPHER=TLS_AES_128_CCM_8_SHA256 ;;
    *) echo "TRANSPORT must be dtls, tls or tls13" >&2; exit 2 ;; esac
cd "$ROOT"
# The device's figures (CPU time, page faults, heap) come from the probes of feature `measure`.
cargo build --release -p d2tls --features measure --bins >&2
cargo build --release -p d2tls-linkemu >&2
T=$ROOT/target/release
EMU=$T/linkemu
W=$(mktemp -d)
PIDS=()
CG=""        # the device's CPU cgroup (DEVICE_MIPS), removed at exit
cleanup() {
    exec 3>&- || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$CG" ] && [ -d "$CG" ]; then
        for _ in $(seq 50); do rmdir "$CG" 2>/dev/null && break; sleep 0.1; done
        [ -d "$CG" ] && echo "could not remove cgroup $CG" >&2
    fi
    if [ -n "${KEEP:-}" ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
cd "$W"
umask 077   # configs hold pairing keys: the binaries refuse secrets others can read

. "$ROOT/agent/scripts/common.sh"

# --- the device's CPU cgroup (DEVICE_MIPS) --------------------------------------------------
# cg_create: makes $CG (v1: .../cpu/d2tls-device-PID, v2: /sys/fs/cgroup/d2tls-device-PID) and
# sets CG_PROCS (where a PID joins it). cg_limit QUOTA_US PERIOD_US sets the throttle.
cg_create() {
    local base v2=/sys/fs/cgroup
    for base in /sys/fs/cgroup/cpu /sys/fs/cgroup/cpu,cpuacct; do
        if [ -w "$base/cpu.cfs_quota_us" ] || { [ -f "$base/cpu.cfs_quota_us" ] && [ -w "$base" ]; }; then
            CG=$base/d2tls-device-$$
            mkdir "$CG" 2>/dev/null && [ -w "$CG/cpu.cfs_quota_us" ] && { CG_V=1; CG_PROCS=$CG/tasks; return 0; }
            rmdir "$CG" 2>/dev/null; CG=""
        fi
    done
    if [ "$(stat -fc %T $v2 2>/dev/null)" = cgroup2fs ] && grep -qw cpu $v2/cgroup.controllers 2>/dev/null; then
        grep -qw cpu $v2/cgroup.subtree_control || echo +cpu > $v2/cgroup.subtree_control 2>/dev/null || true
        CG=$v2/d2tls-device-$$
        mkdir "$CG" 2>/dev/null && [ -w "$CG/cpu.max" ] && { CG_V=2; CG_PROCS=$CG/cgroup.procs; return 0; }
        rmdir "$CG" 2>/dev/null; CG=""
    fi
    echo "DEVICE_MIPS needs a writable CPU cgroup: cgroup v1 /sys/fs/cgroup/cpu (cpu.cfs_quota_us)" \
        "or cgroup v2 /sys/fs/cgroup with the cpu controller (cpu.max), and the right to create a" \
        "group there (root). Neither was usable here (uid $(id -u))." >&2
    return 1
}
cg_limit() { # quota_us period_us
    if [ "$CG_V" = 1 ]; then
        echo -1 > "$CG/cpu.cfs_quota_us"; echo "$2" > "$CG/cpu.cfs_period_us"; echo "$1" > "$CG/cpu.cfs_quota_us"
    else
        echo "$1 $2" > "$CG/cpu.max"
    fi
}
cg_stat() { # nr_throttled throttled_us (v1: throttled_time ns; v2: throttled_usec)
    awk '/^nr_throttled /{n=$2} /^throttled_time /{t=int($2/1000)} /^throttled_usec /{t=$2} END{print n+0, t+0}' "$CG/cpu.stat"
}
if [ -n "$DEVICE_MIPS" ]; then cg_create; fi

# Throw-away PKI (P-256).
d2tls_pki "D2TLS Bench CA"

SP=$(free_port)
mkfifo sserver.in
openssl s_server $PROTO -accept 127.0.0.1:$SP -cert server.pem -key server.key -CAfile ca.pem \
    -Verify 1 "${SS_OPTS[@]}" -quiet < sserver.in > sserver.log 2>&1 &
PIDS+=($!)
exec 3>sserver.in   # keeps s_server's stdin open

if [ -n "$PRESTART" ]; then
    SP2=$(free_port)
    mkfifo sserver2.in
    openssl s_server $PROTO -accept 127.0.0.1:$SP2 -cert server.pem -key server.key -CAfile ca.pem \
        -Verify 1 "${SS_OPTS[@]}" -quiet < sserver2.in > sserver2.log 2>&1 &
    PIDS+=($!)
    exec 4>sserver2.in
    start_agent "$T" "$(printf '[[device]]\nid = "sensor-2"\npairing_key = "%s"' "$KEY")"
else
    start_agent "$T"
fi

device_toml() { # agent_addr server_addr [device_id]
    cat <<EOF
device_id = "${3:-sensor-1}"
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
echo "case: $TRANSPORT, $CIPHER, P-256, client certificate required (openssl s_server $PROTO -Verify 1 ${SS_OPTS[*]})"
echo

# --- instructions and public-key operations ----------------------------------------------
VG=(valgrind --tool=callgrind --cache-sim=no)
# D2TLS session setup = the delegation and the resumption; the agent channel is opened once at
# boot (link_from) and kept across sessions: its cost is counted apart (cg.link).
"${VG[@]}" --callgrind-out-file=cg.d2tls --toggle-collect='*device_io::delegate_and_resume*' \
    "${DEV[@]}" > out.d2tls 2>vg.d2tls
"${VG[@]}" --callgrind-out-file=cg.link --toggle-collect='*device_io::link_from*' \
    "${DEV[@]}" > /dev/null 2>&1
"${VG[@]}" --callgrind-out-file=cg.full --toggle-collect='*device_io::full_handshake*' \
    "${DEV[@]}" --standalone > out.full 2>vg.full
"${VG[@]}" --callgrind-out-file=cg.d2tls.all "${DEV[@]}" > /dev/null 2>&1
"${VG[@]}" --callgrind-out-file=cg.full.all "${DEV[@]}" --standalone > /dev/null 2>&1
valgrind --tool=massif --massif-out-file=ms.d2tls "${DEV[@]}" > /dev/null 2>&1
valgrind --tool=massif --massif-out-file=ms.full "${DEV[@]}" --standalone > /dev/null 2>&1
grep -q "reused=true" out.d2tls || { echo "D2TLS run did not resume" >&2; cat out.d2tls vg.d2tls >&2; exit 1; }

PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$ROOT/agent/scripts" python3 - "$W" <<'PY'
import re, sys, os
import callgrind
w = sys.argv[1]
def total(f):
    return callgrind.read(os.path.join(w, f))[0]
def calls(f, names):
    """Calls to each function, and the inclusive instructions of those calls."""
    return callgrind.read(os.path.join(w, f), names)[1:]
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
lk = total("cg.link")
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
print(f"| instructions, agent channel establishment (once per boot, again only on a reconnect; not in the setup above) | {lk:,} | – | |")
print(f"| instructions, whole process (start, config, setup, exit) | {da:,} | {sa:,} | {100*da/sa:.1f} % |")
for n, label in zip(ops, ["ECDSA signatures", "ECDSA verifications", "ECDH derivations", "EC key generations"]):
    print(f"| {label} ({n} calls) | {od[n]} | {os_[n]} | |")
cd_ = int(kd["channel_sent"]) + int(kd["channel_received"])
bd = int(kd["server_sent"]) + int(kd["server_received"])
bs = int(ks["server_sent"]) + int(ks["server_received"])
print(f"| bytes sent to agent / received from agent (channel, per session: delegation messages) | {kd['channel_sent']} / {kd['channel_received']} | – | |")
print(f"| bytes sent to agent / received from agent (channel hello and ready, once per boot) | {kd['channel_boot_sent']} / {kd['channel_boot_received']} | – | |")
print(f"| bytes sent to server / received from server (UDP or TCP payload) | {kd['server_sent']} / {kd['server_received']} | {ks['server_sent']} / {ks['server_received']} | |")
print(f"| bytes in all per session, device | {cd_ + bd:,} | {bs:,} | {100*(cd_+bd)/bs:.1f} % |")
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

# --- calibration of the device CPU throttle (DEVICE_MIPS) --------------------------------
# The device's own CPU time (user + system, CLOCK_PROCESS_CPUTIME_ID) for the setup region,
# unthrottled, straight to the agent and the server on loopback: the host's rate for that code
# is callgrind's instructions of the region / that time.
. ./instr.env
setup_of() { # out_file field -> value of field= in the device's session line
    grep -o "$2=[0-9]*" "$1" | head -1 | cut -d= -f2
}
if [ -n "$DEVICE_MIPS" ]; then
    : > cal.d; : > cal.s
    for _ in $(seq "$RUNS"); do
        "${DEV[@]}" > o.d; setup_of o.d setup_cpu_us >> cal.d; sleep 0.2
        "${DEV[@]}" --standalone > o.s; setup_of o.s setup_cpu_us >> cal.s; sleep 0.2
    done
    python3 - "$D_INSTR" "$S_INSTR" "$DEVICE_MIPS" "$CG" <<'PY' > throttle.txt
import sys, statistics
di, si, speeds, cg = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(), sys.argv[4]
cd = [int(x) for x in open("cal.d")]; cs = [int(x) for x in open("cal.s")]
md, ms = statistics.median(cd), statistics.median(cs)
rd, rs = di / md, si / ms            # instructions per microsecond = M instructions/s
rate = (di + si) / (md + ms)          # pooled: one throttle for both modes
print(f"<!-- calibration setup_cpu_us samples: D2TLS {cd}; standalone {cs} -->")
print("| calibration (unthrottled, loopback, median of %d) | D2TLS | standalone | pooled |" % len(cd))
print("|---|---:|---:|---:|")
print(f"| setup instructions (callgrind, as above) | {di:,} | {si:,} | {di+si:,} |")
print(f"| setup CPU time, user + system (device, CLOCK_PROCESS_CPUTIME_ID) | {md:,.0f} us | {ms:,.0f} us | {md+ms:,.0f} us |")
print(f"| host rate for this code | {rd:,.0f} MIPS | {rs:,.0f} MIPS | **{rate:,.0f} MIPS** |")
print()
print("| device speed | CPU share | cgroup quota / period | device instr. per quota | effective D2TLS / standalone |")
print("|---|---:|---:|---:|---:|")
with open("throttle.env", "w") as env:
    for sp in speeds:
        f = float(sp) / rate
        if f >= 1:
            sys.exit(f"DEVICE_MIPS={sp}: the host runs this code at only {rate:.0f} MIPS")
        period = round(1000 / f)
        if period > 1_000_000:
            sys.exit(f"DEVICE_MIPS={sp}: period {period} us is over the kernel's 1 s maximum")
        share = 1000 / period
        print(f"| {sp} MIPS | {100*share:.2f} % | 1000 us / {period:,} us | {rate*1000/1e6:.2f} M | {rd*share:.0f} / {rs*share:.0f} MIPS |")
        env.write(f"{sp} {period}\n")
print()
print(f"Throttle: {cg}. Within each period the device may run 1 ms of host CPU "
      f"(~{rate*1000/1e6:.1f} M of its instructions) at full speed, then waits for the next period: "
      "a CPU burst is delayed by up to one period, and a region shorter than one quota may run unthrottled.")
PY
    cat throttle.txt
    echo
fi

# --- delay over emulated links -----------------------------------------------------------
# Server path: UDP (DTLS) or TCP (TLS) link with the given one-way delay in front of s_server (the agent and the
# device both reach the server through it). Device <-> agent: TCP link with LAN delay.
# Each case runs D2TLS and the standalone alternately, RUNS times each, first unthrottled, then
# for each DEVICE_MIPS speed with the device (only) in the throttled cgroup.
# Throttled runs: the device sleeps one period after boot (its quota refills), then spins a
# random 0-999 us of CPU, so that each setup starts at a random point of the throttle's
# period and quota; the mean over the runs then stands for a throttle without the quota's
# 1 ms bursts (the median of such quantised samples need not).
samples() { # file_prefix config runs [prefix command...]: D2TLS and standalone setups, alternating
    local f=$1 cfg=$2 n=$3; shift 3
    : > "$f.d"; : > "$f.s"; : > "$f.dc"; : > "$f.sc"; : > "$f.p"; : > "$f.pc"
    # PRESTART: a first run whose Expect starts the first measured run's handshake ahead.
    if [ -n "$PRESTART" ]; then
        "$@" "$T/d2tls-device" -c prestart.toml --log-level error "${PRE[@]}" --next-session-in-ms 0 > o.p
        sleep 2   # the agent's handshake reaches the signature (WAN: 2 server round trips)
    fi
    # s_server serves one client at a time: a short pause lets it return to accept().
    local i next
    for i in $(seq "$n"); do
        if [ -n "$PRESTART" ]; then
            # The last run announces nothing: no handshake is left waiting at s_server when
            # the case's links are stopped (s_server, one client at a time, would wait for it).
            next=(--next-session-in-ms 0); [ "$i" = "$n" ] && next=()
            "$@" "$T/d2tls-device" -c prestart.toml --log-level error "${PRE[@]}" --burn-us $((BURN ? RANDOM % 1000 : 0)) "${next[@]}" > o.p
            grep -q "reused=true" o.p || { echo "pre-started D2TLS run did not resume" >&2; cat o.p >&2; exit 1; }
            setup_of o.p setup_us >> "$f.p"; setup_of o.p setup_cpu_us >> "$f.pc"
            sleep 0.2
        fi
        "$@" "$T/d2tls-device" -c "$cfg" --log-level error "${PRE[@]}" --burn-us $((BURN ? RANDOM % 1000 : 0)) > o.d
        grep -q "reused=true" o.d || { echo "D2TLS run did not resume" >&2; cat o.d >&2; exit 1; }
        setup_of o.d setup_us >> "$f.d"; setup_of o.d setup_cpu_us >> "$f.dc"
        sleep 0.2
        "$@" "$T/d2tls-device" -c "$cfg" --log-level error --standalone "${PRE[@]}" --burn-us $((BURN ? RANDOM % 1000 : 0)) > o.s
        setup_of o.s setup_us >> "$f.s"; setup_of o.s setup_cpu_us >> "$f.sc"
        sleep 0.2
    done
}
in_cgroup() { # command... : runs it inside the device's cgroup
    sh -c 'echo $$ > "$0" && exec "$@"' "$CG_PROCS" "$@"
}
delay_case() { # name one_way_ms
    local LP CP mips period
    LP=$(free_port); CP=$(free_port)
    local RTT=(); [ "$LINK" = tcp ] && [ "$CONNECT_RTT" = 1 ] && RTT=(--connect-rtt)
    "$EMU" $LINK 127.0.0.1:$LP 127.0.0.1:$SP "$2" "${RTT[@]}" > emu1.out 2>/dev/null & PIDS+=($!); local E1=$!
    "$EMU" tcp 127.0.0.1:$CP 127.0.0.1:$AP 0.7 > emu2.out 2>/dev/null & PIDS+=($!); local E2=$!
    wait_for emu1.out listening; wait_for emu2.out listening
    device_toml 127.0.0.1:$CP 127.0.0.1:$LP > delay.toml
    local E3=
    if [ -n "$PRESTART" ]; then
        local LP2; LP2=$(free_port)
        "$EMU" $LINK 127.0.0.1:$LP2 127.0.0.1:$SP2 "$2" "${RTT[@]}" > emu3.out 2>/dev/null & PIDS+=($!); E3=$!
        wait_for emu3.out listening
        device_toml 127.0.0.1:$CP 127.0.0.1:$LP2 sensor-2 > prestart.toml
    fi
    PRE=(); BURN=0
    samples raw delay.toml "$RUNS"
    : > thr.list
    if [ -n "$DEVICE_MIPS" ]; then
        while read -r mips period; do
            cg_limit 1000 "$period"
            read -r n0 t0 < <(cg_stat)
            PRE=(--settle-ms $((period / 1000 + 20))); BURN=1
            samples "thr$mips" delay.toml "$THR_RUNS" in_cgroup
            read -r n1 t1 < <(cg_stat)
            echo "$mips $period $((n1 - n0)) $((t1 - t0))" >> thr.list
        done < throttle.env
    fi
    kill $E1 $E2 $E3 2>/dev/null || true
    python3 - "$1" "$2" "$D_INSTR" "$S_INSTR" "${DEVICE_MIPS:-64}" <<'PY'
import sys, statistics, random
name, ow, di, si = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
speeds = sys.argv[5].split()
def load(f): return [int(x) for x in open(f)]
d, s = load("raw.d"), load("raw.s")
md, ms = statistics.median(d) / 1000, statistics.median(s) / 1000
print(f"<!-- {name} samples us: D2TLS {d}; standalone {s} -->")
print(f"| {name}: server RTT {2*ow:g} ms, device-agent RTT 1.4 ms | {md:.1f} ms | {ms:.1f} ms | {100*(1-md/ms):+.1f} % |")
p = load("raw.p")
if p:
    mp = statistics.median(p) / 1000
    print(f"<!-- {name} pre-started samples us: {p} -->")
    print(f"| {name}, D2TLS with its handshake started ahead (PRESTART) | {mp:.1f} ms | {ms:.1f} ms | {100*(1-mp/ms):+.1f} % |")
# The same network times with the device's own instructions run at S M instructions/s
# (e.g. a Cortex-M4 class MCU at 64 MHz, 1 instruction/cycle): what a constrained device adds.
for sp in speeds:
    f = float(sp) * 1e6
    mdm, msm = md + 1000 * di / f, ms + 1000 * si / f
    print(f"| {name}, device CPU modelled at {sp} MIPS | {mdm:.1f} ms | {msm:.1f} ms | {100*(1-mdm/msm):+.1f} % |")
# Measured: the device process throttled in its cgroup (thr.list: speed period throttled-periods us).
for line in open("thr.list"):
    sp, period, nthr, tthr = line.split()
    d, s = load(f"thr{sp}.d"), load(f"thr{sp}.s")
    dc, sc = load(f"thr{sp}.dc"), load(f"thr{sp}.sc")
    md, ms = statistics.median(d) / 1000, statistics.median(s) / 1000
    ad, as_ = statistics.mean(d) / 1000, statistics.mean(s) / 1000
    # Effective device speed: setup instructions / (device CPU time under the throttle / share).
    share = 1000 / int(period)
    ed = di / (statistics.median(dc) / share)
    es = si / (statistics.median(sc) / share)
    print(f"<!-- {name} throttled {sp} MIPS (period {period} us; {nthr} throttled periods, {int(tthr)/1e3:.0f} ms throttled, boot included) samples us: D2TLS {d}; standalone {s}; device CPU us: D2TLS {dc}; standalone {sc} -->")
    # 95 % bootstrap interval of the reduction of the means (5000 resamples, fixed seed).
    rnd = random.Random(1)
    boot = sorted(100 * (1 - statistics.mean(rnd.choices(d, k=len(d))) / statistics.mean(rnd.choices(s, k=len(s))))
                  for _ in range(5000))
    lo, hi = boot[125], boot[4874]
    print(f"| **{name}, device throttled to {sp} MIPS (measured, mean of {len(d)})** | **{ad:.1f} ms** (median {md:.1f}) | **{as_:.1f} ms** (median {ms:.1f}) | **{100*(1-ad/as_):+.1f} %** [{lo:+.0f}, {hi:+.0f}] (medians {100*(1-md/ms):+.1f} %) |")
    print(f"<!-- {name} throttled {sp} MIPS: device CPU in setup, median: D2TLS {statistics.median(dc):.0f} us, standalone {statistics.median(sc):.0f} us; effective speed D2TLS {ed:.0f} MIPS, standalone {es:.0f} MIPS -->")
    p = load(f"thr{sp}.p")
    if p:
        ap, mp = statistics.mean(p) / 1000, statistics.median(p) / 1000
        boot = sorted(100 * (1 - statistics.mean(rnd.choices(p, k=len(p))) / statistics.mean(rnd.choices(s, k=len(s))))
                      for _ in range(5000))
        print(f"<!-- {name} throttled {sp} MIPS pre-started samples us: {p} -->")
        print(f"| **{name}, D2TLS started ahead, device throttled to {sp} MIPS (measured, mean of {len(p)})** | **{ap:.1f} ms** (median {mp:.1f}) | **{as_:.1f} ms** (median {ms:.1f}) | **{100*(1-ap/as_):+.1f} %** [{boot[125]:+.0f}, {boot[4874]:+.0f}] (medians {100*(1-mp/ms):+.1f} %) |")
PY
}
echo "| setup delay, median of $RUNS (device: start of setup to session ready) | D2TLS | standalone | reduction |"
echo "|---|---:|---:|---:|"
delay_case LAN 0.7
delay_case WAN 84
