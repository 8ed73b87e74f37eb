# Sourced by bench.sh and tls13_ops.sh: a throw-away P-256 PKI in the current directory
# (ca.pem, server.pem/.key with SAN IP 127.0.0.1, device.pem/.key with clientAuth) and a
# pairing key in $KEY.
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
