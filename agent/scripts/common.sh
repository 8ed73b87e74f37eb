# Sourced by bench.sh, tls13_ops.sh and routes.sh: a working directory, loopback helpers, a
# throw-away P-256 PKI, the agent and stock s_servers (their PIDs go to PIDS, which the exit
# trap stops).

# A temporary working directory for the run (W), removed at exit with the processes in PIDS.
# (bench.sh has its own: it also removes its CPU cgroup.)
in_workdir() {
    W=$(mktemp -d)
    PIDS=()
    trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"' EXIT
    cd "$W"
    umask 077   # configs hold pairing keys: the binaries refuse secrets others can read
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # file pattern
    for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

# A throw-away P-256 PKI in the current directory (ca.pem, server.pem/.key with SAN IP
# 127.0.0.1, device.pem/.key with clientAuth) and a pairing key in $KEY.
d2tls_pki() { # CA common name
    local EC=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes) n subj
    openssl req -x509 "${EC[@]}" -keyout ca.key -out ca.pem -subj "/CN=$1" -days 2 2>/dev/null
    for n in server device; do
        subj=$([ $n = server ] && echo "/CN=localhost" || echo "/CN=sensor-1/O=D2TLS Devices")
        openssl req "${EC[@]}" -keyout $n.key -out $n.csr -subj "$subj" 2>/dev/null
        [ $n = server ] && echo "subjectAltName=IP:127.0.0.1,DNS:localhost" > $n.ext || echo "extendedKeyUsage=clientAuth" > $n.ext
        openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2 -extfile $n.ext 2>/dev/null
    done
    KEY=$(openssl rand -hex 32)
}

# The agent on a free port for device sensor-1 (agent.toml; more config lines in $2); sets AP.
start_agent() { # binary-dir [config lines]
    AP=$(free_port)
    printf 'listen = "127.0.0.1:%s"\nca_file = "ca.pem"\n%s[[device]]\nid = "sensor-1"\npairing_key = "%s"\n' \
        "$AP" "${2:+$2
}" "$KEY" > agent.toml
    "$1/d2tls-agent" -c agent.toml --log-level warn > agent.out 2> agent.log &
    PIDS+=($!)
    wait_for agent.out listening
}

# A stock s_server on a free port, stdin held open by a FIFO (s_server ends at end of input),
# in the caller's shell so that its cleanup stops it; sets S (its address).
SS_N=0
s_server() { # options...
    local p; p=$(free_port); SS_N=$((SS_N + 1))
    mkfifo "ss$SS_N.in"
    openssl s_server -accept 127.0.0.1:$p -cert server.pem -key server.key -CAfile ca.pem \
        -Verify 1 "$@" < "ss$SS_N.in" > "ss$SS_N.log" 2>&1 &
    PIDS+=($!)
    exec {fd}> "ss$SS_N.in"
    wait_for "ss$SS_N.log" ACCEPT
    S=127.0.0.1:$p
}
