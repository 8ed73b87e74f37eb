#!/usr/bin/env python3
"""D2TLS delay model: a session's setup delay on a constrained device, per route.

    python3 agent/scripts/delay_model.py [--routes agent/scripts/routes.json]
        [--bench docs/benchmarks.md] [--png docs/d2tls-24h.png] [--interval-min 15]

Prints markdown on stdout (inputs, the check against the cgroup-throttled runs recorded in
docs/benchmarks.md, LAN and WAN tables per device class, the 24-hour overhead) and writes the
24-hour plot (needs matplotlib; without it the tables are still printed and the PNG is skipped).

delay = device CPU + device bytes x 8 / link rate + round trips x RTT + peers' CPU, where

* device CPU is priced one of two ways:
  - "instr": every instruction callgrind counted in the device's setup region (routes.json,
    made by agent/scripts/routes.sh) at S M instructions/s;
  - "ops": the public-key operations at an MCU's per-operation cost (CLASSES below, from the
    dissertation's figures quoted in /work/shared/NOTES.md) plus the remaining instructions
    (setup minus the public-key operations' inclusive instructions) at the MCU's clock,
    1 instruction a cycle;
* round trips are counted per route from the protocol and from what the implementation does
  (ROUTES below): server round trips of the agent's handshake and of the device's, and
  agent<->device channel round trips;
* peers' CPU (agent, s_server, link emulator on this host) is fitted once from the unthrottled
  LAN runs of docs/benchmarks.md (run B DTLS, TLS run): median delay minus the modelled round
  trips minus the device's own CPU time.
The device is single-threaded and blocks on each network step, so the terms add.
"""
import argparse
import json
import os
import re
import statistics
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SIGN, VERIFY, ECDH, KEYGEN = "ECDSA_do_sign_ex", "ECDSA_do_verify", "ECDH_compute_key", "EC_KEY_generate_key"
OPS = [SIGN, VERIFY, ECDH, KEYGEN]

# Device classes. Per-operation costs (ms); "mhz" prices the rest of the instructions.
# 80 MHz: the dissertation's CC3200 (Cortex-M4, WolfSSL): ECDSA sign 414 ms (Table 3.3, the
#   signature inside D2TLS's 851 ms). Its other costs are not in our notes: verify = 2.25 x sign
#   (the CC2538 software ratio of Table 3.8, 20.534 / 9.126 s), key generation and ECDH
#   derivation = sign (one scalar multiplication each; an MCU stack keeps no precomputed
#   fixed-base tables). Radio: Wi-Fi, 10 Mbit/s assumed for the device's bytes.
# 32 MHz: the dissertation's CC2538 (Cortex-M3) with its crypto engine: sign 0.34 s, verify
#   0.70 s (Table 3.8); key generation and ECDH derivation = sign (assumed as above). Radio:
#   IEEE 802.15.4, 250 kbit/s (its PHY rate; less in practice).
#   "32sw": the same board with relic in software: sign 9.126 s, verify 20.534 s.
CLASSES = {
    "80": {"name": "80 MHz class (CC3200-like)", "mhz": 80, "rate_bps": 10e6,
           "ms": {SIGN: 414.0, VERIFY: 414.0 * 20.534 / 9.126, ECDH: 414.0, KEYGEN: 414.0}},
    "32": {"name": "32 MHz class (CC2538-like, crypto engine)", "mhz": 32, "rate_bps": 250e3,
           "ms": {SIGN: 340.0, VERIFY: 700.0, ECDH: 340.0, KEYGEN: 340.0}},
    "32sw": {"name": "32 MHz class, software ECC (CC2538 + relic)", "mhz": 32, "rate_bps": 250e3,
             "ms": {SIGN: 9126.0, VERIFY: 20534.0, ECDH: 9126.0, KEYGEN: 9126.0}},
}
# An embedded stack trusts its CA certificate as configured: it does not check the CA's
# self-signature, which OpenSSL 3.0 does while building the chain (3 verifications counted).
MCU_STANDALONE_VERIFICATIONS = 2

# Routes: (measured route in routes.json, label, mode, server round trips of the agent, of the
# device until its session is ready, channel round trips, device round trips until its first
# data is at the server (half a trip after ready, or in its first flight with 0-RTT)).
# Real network: a TCP connect costs 1 RTT; s_server's DTLS answers the first ClientHello with
# a cookie (HelloVerifyRequest, 1 RTT) in every DTLS handshake, full or abbreviated.
#   DTLS 1.2 full: cookie 1 + full 2 = 3.     TLS 1.2 full: TCP 1 + 2 = 3.
#   TLS 1.3 full: TCP 1 + 1 = 2 (the client's Certificate/CertificateVerify/Finished and its
#   data leave together).  (D)TLS 1.2 resumption: cookie or TCP 1 + 1 = 2.
#   D2TLS TLS 1.3: the agent waits for the NewSessionTicket, sent after the client's Finished:
#   TCP 1 + 1 + 1 = 3.
#   D2TLS over TCP: the device opens its TCP connection when the sign request comes, so it is
#   open when the context comes (the agent's last round trip covers it): the resumption is
#   1 round trip (TLS 1.2 and 1.3), first data 1.5, 0-RTT data 0.5 (with the ClientHello).
#   Channel: delegation -> sign request, signature -> context: 2 round trips.
ROUTES = [
    ("dtls12_standalone", "DTLS 1.2 standalone full handshake", "standalone", 0, 3, 0, 3.5),
    ("dtls12_session_id", "D2TLS DTLS 1.2, session ID", "d2tls", 3, 2, 2, 2.5),
    ("dtls12_ticket", "D2TLS DTLS 1.2, ticket", "d2tls", 3, 2, 2, 2.5),
    ("tls12_standalone", "TLS 1.2 standalone full handshake", "standalone", 0, 3, 0, 3.5),
    ("tls12_session_id", "D2TLS TLS 1.2, session ID", "d2tls", 3, 1, 2, 1.5),
    ("tls12_ticket", "D2TLS TLS 1.2, ticket", "d2tls", 3, 1, 2, 1.5),
    ("tls13_standalone", "TLS 1.3 standalone full handshake", "standalone", 0, 2, 0, 2.5),
    ("tls13_psk_dhe_ke", "D2TLS TLS 1.3 PSK, psk_dhe_ke", "d2tls", 3, 1, 2, 1.5),
    ("tls13_0rtt", "D2TLS TLS 1.3 0-RTT (psk_dhe_ke)", "d2tls", 3, 1, 2, 0.5),
    ("tls13_psk_ke", "D2TLS TLS 1.3 PSK, psk_ke (gnutls-serv; OpenSSL's client still makes a key share)", "d2tls", 3, 1, 2, 1.5),
    ("tls13_psk_ke_0rtt_bare", "D2TLS TLS 1.3 0-RTT, psk_ke without key share*", "d2tls", 3, 1, 2, 0.5),
]
BASELINE = {"dtls12": "dtls12_standalone", "tls12": "tls12_standalone", "tls13": "tls13_standalone"}
# "Started ahead" (built: the device's expect message, docs/d2tls.md §1): the agent runs the
# handshake up to the CertificateRequest before the device asks (2 server round trips: cookie
# or TCP connect, then the first flight; TLS 1.3 likewise), leaving 1 (the client's last
# flight; in TLS 1.3 the NewSessionTicket comes with the server's answer to it).
PRESTART_HIDDEN_AGENT_RTT = 2
LINKS = {"LAN": 1.4, "WAN": 168.0}
CHANNEL_RTT = 1.4


def load_routes(path):
    with open(path) as f:
        data = json.load(f)
    rec = data["routes"]
    # Derived (*), not measured: a client stack that offers psk_ke alone (no key share at all)
    # with 0-RTT, which OpenSSL's client cannot be made to do; bytes as measured with key
    # shares. psk_ke as OpenSSL's client does it (the key share generated, no ECDH derivation)
    # is measured against gnutls-serv (routes.sh).
    def without(src, ops):
        r = json.loads(json.dumps(rec[src]))
        for op in ops:
            r["instructions"] -= r["pk_instructions"][op]
            r["pk_calls"][op] = 0
            r["pk_instructions"][op] = 0
        r["instructions"] -= r["peer_key_check_instructions"]
        r["peer_key_check_instructions"] = 0
        return r
    if "tls13_psk_ke" not in rec:  # routes.json from before the gnutls-serv route
        rec["tls13_psk_ke"] = without("tls13_psk_dhe_ke", [ECDH])
    rec["tls13_psk_ke_0rtt_bare"] = without("tls13_0rtt", [ECDH, KEYGEN])
    return data, rec


def cpu_ms(r, cls, pricing, mips=None, standalone=False):
    """Device CPU of one setup, ms."""
    if pricing == "instr":
        return r["instructions"] / (mips * 1e3)
    c = CLASSES[cls]
    calls = dict(r["pk_calls"])
    if standalone:
        calls[VERIFY] = min(calls[VERIFY], MCU_STANDALONE_VERIFICATIONS)
    rest = r["instructions"] - sum(r["pk_instructions"].values())
    return sum(calls[op] * c["ms"][op] for op in OPS) + rest / (c["mhz"] * 1e3)


def device_bytes(r):
    return r["channel_sent"] + r["channel_received"] + r["server_sent"] + r["server_received"]


def route_delay(route, rec, link_rtt, cls, pricing, mips, peer, prestart=False, data=False):
    """Setup delay in ms (ready, or first data at the server with data=True)."""
    key, _, mode, agent_rtt, dev_rtt, chan_rtt, dev_data_rtt = route
    r = rec[key]
    if prestart and mode == "d2tls":
        agent_rtt -= PRESTART_HIDDEN_AGENT_RTT
    trips = agent_rtt + (dev_data_rtt if data else dev_rtt)
    rate = CLASSES[cls]["rate_bps"] if cls else None
    wire = device_bytes(r) * 8 / rate * 1e3 if rate else 0.0
    return (cpu_ms(r, cls, pricing, mips, standalone=(mode == "standalone"))
            + wire + trips * link_rtt + chan_rtt * CHANNEL_RTT + peer[mode])


# --- the throttled runs recorded in docs/benchmarks.md ------------------------------------
def parse_bench(path):
    """{run: {"cal": {...}, (link,): unthrottled samples, (link, mips): throttled samples}}."""
    runs, run, lines = {}, None, open(path).read().splitlines()
    for line in lines:
        if line.startswith("Raw output, run B"):
            run = "DTLS run B (15:14)"
        elif line.startswith("Run A (DTLS"):
            run = "DTLS run A (14:57)"
        elif line.startswith("TLS / GCM, 15:10"):
            run = "TLS run (15:10)"
        elif m := re.match(r"Raw output, started ahead, (DTLS|TLS) \((\d\d:\d\d)", line):
            run = f"{m.group(1)} started-ahead run ({m.group(2)})"
        elif line.startswith(("Raw output", "### ")):  # a run not checked (TLS 1.3), or the end
            run = None
            run = None
        if not run or not line.startswith("<!--"):
            continue
        nums = lambda s: [int(x) for x in re.findall(r"\d+", s)]
        lists = re.findall(r"\[([^\]]*)\]", line)
        rr = runs.setdefault(run, {})
        m = re.match(r"<!-- calibration setup_cpu_us samples", line)
        if m:
            rr["cal"] = {"d2tls": nums(lists[0]), "standalone": nums(lists[1])}
            continue
        m = re.match(r"<!-- (LAN|WAN)(?: throttled (\d+) MIPS)? pre-started samples us", line)
        if m:
            key = (m.group(1), int(m.group(2))) if m.group(2) else (m.group(1),)
            rr[key]["prestart"] = nums(lists[0])
            continue
        m = re.match(r"<!-- (LAN|WAN) samples us", line)
        if m:
            rr[(m.group(1),)] = {"d2tls": nums(lists[0]), "standalone": nums(lists[1])}
            continue
        m = re.match(r"<!-- (LAN|WAN) throttled (\d+) MIPS \(period (\d+) us.*samples us", line)
        if m:
            rr[(m.group(1), int(m.group(2)))] = {
                "period": int(m.group(3)),
                "d2tls": nums(lists[0]), "standalone": nums(lists[1]),
                "d2tls_cpu": nums(lists[2]), "standalone_cpu": nums(lists[3])}
    return runs


def emu_rtts(run, t):
    """Server round trips on the emulated link per mode. Runs before 2026-12-02 (the named
    runs): the emulator forwarded TCP connects undelayed, and the device connected after the
    context. Started-ahead runs: TCP's handshake costs a round trip (linkemu --connect-rtt),
    the device connects at the sign request (its resumption: 1), the agent's handshake waits
    at the signature (1 left)."""
    if "started-ahead" in run:
        return {"DTLS": {"standalone": 3, "d2tls": 5, "prestart": 3},
                "TLS": {"standalone": 3, "d2tls": 4, "prestart": 2}}[t]
    return {"DTLS": {"standalone": 3, "d2tls": 5}, "TLS": {"standalone": 2, "d2tls": 3}}[t]


def check(runs, rec, out):
    """Predicted vs measured throttled means; returns the peers' CPU fitted per transport."""
    instr = {"DTLS": {"d2tls": rec["dtls12_session_id"]["instructions"],
                      "standalone": rec["dtls12_standalone"]["instructions"]},
             "TLS": {"d2tls": rec["tls12_session_id"]["instructions"],
                     "standalone": rec["tls12_standalone"]["instructions"]}}
    for t in instr:  # the device does the same work when the agent started ahead
        instr[t]["prestart"] = instr[t]["d2tls"]
    peers = {}
    rows, errs_a, errs_b, red_rows = [], [], [], []
    base = {"DTLS": ("DTLS run B (15:14)", runs["DTLS run B (15:14)"]),
            "TLS": ("TLS run (15:10)", runs["TLS run (15:10)"])}
    for t, (name, rb) in base.items():
        peers[t] = {}
        for mode in ("d2tls", "standalone"):
            lan = statistics.median(rb[("LAN",)][mode]) / 1e3
            cpu = statistics.median(rb["cal"][mode]) / 1e3
            chan = 2 * CHANNEL_RTT if mode == "d2tls" else 0
            peers[t][mode] = lan - emu_rtts(name, t)[mode] * LINKS["LAN"] - chan - cpu
        # Started ahead: what is left of the agent's work is less; its fit is kept (an upper bound).
        peers[t]["prestart"] = peers[t]["d2tls"]
    for run, rr in runs.items():
        t = "TLS" if run.startswith("TLS") else "DTLS"
        emu = emu_rtts(run, t)
        for key, s in rr.items():
            if not isinstance(key, tuple) or len(key) != 2:
                continue
            link, mips = key
            share = 1000 / s["period"]
            got = {}
            for mode in ("d2tls", "prestart", "standalone"):
                if mode not in s:
                    continue
                chan = 2 * CHANNEL_RTT if mode != "standalone" else 0
                net = emu[mode] * LINKS[link] + chan + peers[t][mode]
                meas = statistics.mean(s[mode]) / 1e3
                a = net + instr[t][mode] / (mips * 1e3)
                ea = 100 * (a / meas - 1)
                errs_a.append(abs(ea))
                got[mode] = (meas, a)
                if mode + "_cpu" in s:
                    b = net + statistics.mean(s[mode + "_cpu"]) / share / 1e3
                    eb = 100 * (b / meas - 1)
                    errs_b.append(abs(eb))
                    cell_b = f"{b:.1f} ({eb:+.0f} %)"
                else:
                    cell_b = "–"
                label = "d2tls, started ahead" if mode == "prestart" else mode
                rows.append(f"| {run} | {link} | {mips} | {label} | {meas:.1f} | {a:.1f} ({ea:+.0f} %) | {cell_b} |")
            (md, ad), (ms, as_) = got["d2tls"], got["standalone"]
            pre = (f"{100*(got['prestart'][0]/ms-1):+.1f} % | {100*(got['prestart'][1]/as_-1):+.1f} %"
                   if "prestart" in got else "– | –")
            red_rows.append(f"| {run} | {link} | {mips} | {100*(md/ms-1):+.1f} % | {100*(ad/as_-1):+.1f} % | {pre} |")
    out.append("| run | link | MIPS | mode | measured mean, ms | model A: instructions at S, ms (error) | model B: the device's CPU time under the throttle ÷ share, ms (error) |")
    out.append("|---|---|---:|---|---:|---:|---:|")
    out.extend(rows)
    out.append("")
    out.append(f"Mean absolute error: model A {statistics.mean(errs_a):.0f} % over {len(errs_a)} cases, "
               f"model B {statistics.mean(errs_b):.0f} % over {len(errs_b)}; median A {statistics.median(errs_a):.0f} %, "
               f"B {statistics.median(errs_b):.0f} %.")
    out.append("")
    out.append("Changes (D2TLS vs standalone, throttled means; − = D2TLS faster) against model A:")
    out.append("")
    out.append("| run | link | MIPS | measured | model A | started ahead: measured | model A |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    out.extend(red_rows)
    out.append("")
    out.append("Peers' CPU fitted from the unthrottled LAN medians (agent, s_server, emulator; ms): " + "; ".join(
        f"{t} D2TLS {p['d2tls']:.1f}, standalone {p['standalone']:.1f}" for t, p in peers.items()))
    out.append("")
    return peers


def fmt(ms):
    return f"{ms/1e3:,.2f} s" if ms >= 1000 else f"{ms:,.1f} ms"


def tables(rec, peers, out):
    peer = {"d2tls": max(peers["DTLS"]["d2tls"], peers["TLS"]["d2tls"]),
            "standalone": max(peers["DTLS"]["standalone"], peers["TLS"]["standalone"])}
    out.append(f"Peers' CPU used below: D2TLS {peer['d2tls']:.1f} ms, standalone {peer['standalone']:.1f} ms "
               "(the larger of the DTLS and TLS fits).")
    out.append("")
    out.append("| route | server RTTs agent + device (ready / first data) | channel RTTs | device bytes | device PK ops (sign/verify/ECDH/keygen) | x86 setup instructions |")
    out.append("|---|---:|---:|---:|---|---:|")
    for rt in ROUTES:
        key, label, mode, a, d, c, dd = rt
        r = rec[key]
        calls = dict(r["pk_calls"])
        out.append(f"| {label} | {a} + {d} / {a} + {dd:g} | {c} | {device_bytes(r):,} | "
                   f"{'/'.join(str(calls[o]) for o in OPS)} | {r['instructions']:,} |")
    out.append("")
    out.append("\\* derived from the measured 0-RTT row, not measured: without the ECDH derivation, the check "
               "of the server's key share and the key generation (a client that offers psk_ke alone, which "
               "OpenSSL's client cannot be made to do); bytes as measured with key shares. The psk_ke row above it "
               "is measured (gnutls-serv chooses psk_ke; OpenSSL's client still generates its key share). "
               "† started ahead (built: the device's expect message; measured in the throttled runs): the agent's first "
               f"{PRESTART_HIDDEN_AGENT_RTT} server round trips (cookie or TCP connect, then the first flight up to "
               "the CertificateRequest) run before the device asks. Over TCP every D2TLS route has the device "
               "open its connection at the sign request (1 round trip for its resumption).")
    out.append("")
    cols = (("80", "ops", None), ("80", "instr", 80), ("32", "ops", None), ("32", "instr", 32))
    for link, rtt in LINKS.items():
        for what in (("ready",) if link == "LAN" else ("ready", "data")):
            out.append(f"**{link} ({rtt:g} ms server RTT, channel RTT {CHANNEL_RTT} ms), "
                       f"{'session ready on the device' if what == 'ready' else 'first application data at the server'}.** "
                       "Delay and, for D2TLS, its change against the standalone full handshake of the same "
                       "protocol (− = faster).")
            out.append("")
            out.append("| route | 80 MHz class, ops-priced | 80 MIPS, instructions | 32 MHz class, ops-priced | 32 MIPS, instructions |")
            out.append("|---|---:|---:|---:|---:|")
            for pre in (False, True):
                for rt in ROUTES:
                    key, label, mode = rt[:3]
                    if pre and mode == "standalone":
                        continue
                    base = next(x for x in ROUTES if x[0] == BASELINE[key.split("_")[0]])
                    cells = []
                    for cls, pricing, mips in cols:
                        v = route_delay(rt, rec, rtt, cls, pricing, mips, peer, pre, what == "data")
                        b = route_delay(base, rec, rtt, cls, pricing, mips, peer, False, what == "data")
                        cells.append(f"**{fmt(v)}**" if mode == "standalone" else f"{fmt(v)} ({100*(v/b-1):+.1f} %)")
                    out.append(f"| {label}{', started ahead †' if pre else ''} | " + " | ".join(cells) + " |")
            out.append("")
    return peer


def dissertation_check(rec, peer, out):
    """The 80 MHz class priced by ops on the dissertation's own case (DTLS 1.2, LAN)."""
    rt_s = next(x for x in ROUTES if x[0] == "dtls12_standalone")
    rt_d = next(x for x in ROUTES if x[0] == "dtls12_session_id")
    s = route_delay(rt_s, rec, LINKS["LAN"], "80", "ops", None, peer)
    d = route_delay(rt_d, rec, LINKS["LAN"], "80", "ops", None, peer)
    r = rec["dtls12_standalone"]
    s3 = s + (r["pk_calls"][VERIFY] - MCU_STANDALONE_VERIFICATIONS) * CLASSES["80"]["ms"][VERIFY]
    out.append("| DTLS 1.2, LAN, 80 MHz class | dissertation Table 3.3 (CC3200) | model (ops-priced) |")
    out.append("|---|---:|---:|")
    out.append(f"| standalone full handshake | 2,920 ms | {s:,.0f} ms with 2 verifications ({100*(s/2920-1):+.0f} %); {s3:,.0f} ms with OpenSSL's 3 ({100*(s3/2920-1):+.0f} %) |")
    out.append(f"| D2TLS (session ID) | 851 ms, of which signature 414 ms, resumption 57 ms | {d:,.0f} ms ({100*(d/851-1):+.0f} %) |")
    out.append(f"| reduction | −70.9 % | {100*(d/s-1):+.1f} % |")
    resid = 851 - 414 - 57
    out.append(f"| D2TLS with the dissertation's remainder added ({resid} ms: its 851 ms less signature and resumption; "
               f"agent and radio there, {peer['d2tls']:.1f} ms of this host's agent here) | | {d + resid:,.0f} ms: "
               f"{100*((d+resid)/s-1):+.1f} % against the modelled standalone, {100*((d+resid)/2920-1):+.1f} % against 2,920 ms |")
    out.append("")
    sw_s = route_delay(rt_s, rec, LINKS["LAN"], "32sw", "ops", None, peer)
    sw_d = route_delay(rt_d, rec, LINKS["LAN"], "32sw", "ops", None, peer)
    en_s = route_delay(rt_s, rec, LINKS["LAN"], "32", "ops", None, peer)
    en_d = route_delay(rt_d, rec, LINKS["LAN"], "32", "ops", None, peer)
    out.append("### Delay model: the 32 MHz class (Table 3.4's counterpart)")
    out.append("")
    out.append("The dissertation's Table 3.4 (its Cortex-M3 device) is not in our notes: only its reduction, "
               "−73.5 %. The same rows as Table 3.3's, from the model, priced by operations:")
    out.append("")
    out.append("| DTLS 1.2, LAN, 32 MHz class | dissertation Table 3.4 | model, CC2538 crypto engine | model, relic in software |")
    out.append("|---|---:|---:|---:|")
    out.append(f"| standalone full handshake | not in our notes | {fmt(en_s)} | {fmt(sw_s)} |")
    out.append(f"| D2TLS (session ID) | not in our notes | {fmt(en_d)} | {fmt(sw_d)} |")
    sign_en, sign_sw = CLASSES["32"]["ms"][SIGN], CLASSES["32sw"]["ms"][SIGN]
    out.append(f"| of which the device's signature | | {fmt(sign_en)} | {fmt(sign_sw)} |")
    out.append(f"| reduction | −73.5 % | {100*(en_d/en_s-1):+.1f} % | {100*(sw_d/sw_s-1):+.1f} % |")
    out.append(f"| D2TLS with Table 3.3's remainder added ({resid} ms, its agent and radio) | | {fmt(en_d + resid)}: "
               f"{100*((en_d+resid)/en_s-1):+.1f} % | {fmt(sw_d + resid)}: {100*((sw_d+resid)/sw_s-1):+.1f} % |")
    for pre_label, key in (("TLS 1.2, session ID", "tls12_session_id"), ("TLS 1.3, psk_dhe_ke", "tls13_psk_dhe_ke")):
        rt = next(x for x in ROUTES if x[0] == key)
        base = next(x for x in ROUTES if x[0] == BASELINE[key.split("_")[0]])
        cells = []
        for cls in ("32", "32sw"):
            v = route_delay(rt, rec, LINKS["LAN"], cls, "ops", None, peer)
            b = route_delay(base, rec, LINKS["LAN"], cls, "ops", None, peer)
            cells.append(f"{fmt(v)} vs {fmt(b)}: {100*(v/b-1):+.1f} %")
        out.append(f"| D2TLS {pre_label} vs its standalone | | " + " | ".join(cells) + " |")
    out.append("")
    return s, d


# --- 24 hours ------------------------------------------------------------------------------
# Own resumption: after a delegation the device keeps the context and resumes by itself until
# the context's lifetime L (2 h: OpenSSL's default session and ticket lifetime) runs out; the
# standalone does the same with its own session. A resumption costs the setup without the
# signature and without the channel's work (dtls12: setup - sign - resume = the channel part).
LIFETIME_S = 7200
RESUME_12 = 354_865  # inclusive instructions of `resume`, DTLS run B (docs/benchmarks.md)


def own_resumption(rec, key):
    r = dict(rec[key])
    chan = rec["dtls12_session_id"]["instructions"] - rec["dtls12_session_id"]["pk_instructions"][SIGN] - RESUME_12
    if key.endswith("standalone"):
        proto = key.split("_")[0]
        d2 = {"dtls12": "dtls12_session_id", "tls12": "tls12_session_id", "tls13": "tls13_psk_dhe_ke"}[proto]
        r = dict(rec[d2])
    calls = dict(r["pk_calls"]); calls[SIGN] = 0
    pki = dict(r["pk_instructions"]); pki[SIGN] = 0
    return {"instructions": r["instructions"] - r["pk_instructions"][SIGN] - chan, "pk_calls": calls,
            "pk_instructions": pki, "channel_sent": 0, "channel_received": 0,
            "server_sent": r["server_sent"], "server_received": r["server_received"]}


def day(rec, out, png, interval_min):
    intervals = [("5 min", 300), ("15 min", 900), ("1 h", 3600), ("2 h", 7200), ("6 h", 21600)]
    keys = [r[0] for r in ROUTES if r[0] not in ("tls13_0rtt", "tls13_psk_ke")]
    label = {r[0]: r[1] for r in ROUTES}
    for cls in ("80", "32"):
        c = CLASSES[cls]
        out.append(f"**{c['name']}**, device CPU per 24 h (ops-priced), s — fresh setup every session / "
                   f"with own resumption (L = {LIFETIME_S // 3600} h); device bytes per 24 h, kB (fresh).")
        out.append("")
        out.append("| route | " + " | ".join(i[0] for i in intervals) + " | bytes/24 h at 15 min |")
        out.append("|---|" + "---:|" * (len(intervals) + 1))
        for key in keys:
            st = key.endswith("standalone")
            full = cpu_ms(rec[key], cls, "ops", standalone=st) / 1e3
            res = cpu_ms(own_resumption(rec, key), cls, "ops") / 1e3
            cells = []
            for _, t in intervals:
                n = 86400 // t
                nf = max(1, 86400 // max(t, LIFETIME_S))
                cells.append(f"{n*full:,.1f} / {nf*full + (n-nf)*res:,.1f}")
            out.append(f"| {label[key]} | " + " | ".join(cells) + f" | {96*device_bytes(rec[key])/1e3:,.1f} |")
        out.append("")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        out.append(f"(matplotlib not importable: {png} not written; `pip install matplotlib`.)")
        return
    t = interval_min * 60
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4))
    lines = [  # (route, own resumption?, colour, style)
        ("dtls12_standalone", False, "tab:red", "-"),
        ("tls13_standalone", False, "tab:purple", "-"),
        ("dtls12_standalone", True, "tab:red", ":"),
        ("tls13_psk_dhe_ke", False, "tab:green", "-"),
        ("dtls12_session_id", False, "tab:blue", "-"),
        ("tls13_psk_ke_0rtt_bare", False, "tab:olive", "--"),
        ("dtls12_session_id", True, "tab:blue", ":"),
    ]
    for ax, cls in zip(axes, ("80", "32")):
        for key, own, colour, style in lines:
            st = key.endswith("standalone")
            full = cpu_ms(rec[key], cls, "ops", standalone=st) / 1e3
            res = cpu_ms(own_resumption(rec, key), cls, "ops") / 1e3
            xs, ys, acc, last_full = [0], [0], 0.0, None
            for i in range(86400 // t):
                now = i * t
                if not own or last_full is None or now - last_full >= LIFETIME_S:
                    acc += full
                    last_full = now
                else:
                    acc += res
                xs.append((i + 1) * t / 3600); ys.append(acc)
            name = label[key] + (f" + own resumption (L = {LIFETIME_S // 3600} h)" if own else "")
            ax.step(xs, ys, where="post", color=colour, linestyle=style, label=f"{name}: {acc:,.0f} s")
        ax.set_title(f"{CLASSES[cls]['name']}, a session every {interval_min} min", fontsize=10)
        ax.set_xlabel("hours")
        ax.set_ylabel("device CPU for session setups, cumulative (s)")
        ax.set_xlim(0, 24)
        ax.set_ylim(0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("D2TLS vs standalone: the device's setup CPU over 24 h (delay_model.py, ops-priced)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    out.append(f"Plot: {os.path.relpath(png, ROOT)} (a session every {interval_min} min, fresh setup each).")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--routes", default=os.path.join(ROOT, "agent/scripts/routes.json"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "docs/benchmarks.md"))
    ap.add_argument("--png", default=os.path.join(ROOT, "docs/d2tls-24h.png"))
    ap.add_argument("--interval-min", type=int, default=15)
    a = ap.parse_args()
    meta, rec = load_routes(a.routes)
    out = [f"Output of `agent/scripts/delay_model.py` (inputs: {os.path.relpath(a.routes, ROOT)}, measured {meta['measured']}, {meta['openssl']}; throttled runs: {os.path.relpath(a.bench, ROOT)}).", ""]
    out.append("### Delay model: the check against the cgroup-throttled runs")
    out.append("")
    peers = check(parse_bench(a.bench), rec, out)
    out.append("### Delay model: the dissertation's case (Table 3.3)")
    out.append("")
    out.append("### Delay model: routes on LAN and WAN")
    out.append("")
    peer = tables(rec, peers, out)
    # the dissertation's case goes before the routes, with the peers' CPU the tables use
    idx = out.index("### Delay model: the dissertation's case (Table 3.3)") + 2
    extra = []
    dissertation_check(rec, peer, extra)
    out[idx:idx] = extra
    out.append("### Delay model: 24 hours (Fig. 3.10/3.11 recomputed)")
    out.append("")
    day(rec, out, a.png, a.interval_min)
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
