#!/usr/bin/env bash
# Make a local CA and server certificates for the demo and the tests.
#
#   conf/make-certs.sh DIR [NAME...]
#
# DIR gets:
#   ca.crt ca.key            a local CA (EC P-256), valid 30 days
#   server-ec.crt/.key       ECDSA P-256 leaf for the names, signed by the CA
#   server-rsa.crt/.key      RSA 2048 leaf for the same names
#   other-ec.crt/.key        ECDSA leaf for other.sluice.test (SNI tests)
# The names default to localhost, 127.0.0.1, *.sluice.test. Nothing is
# overwritten when DIR/ca.crt exists already (delete DIR to start over).
# Needs only the openssl command line tool.
set -euo pipefail
dir=${1:?usage: make-certs.sh DIR [NAME...]}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(localhost 127.0.0.1 "*.sluice.test")
mkdir -p "$dir"
cd "$dir"
[ -f ca.crt ] && exit 0

san=""
for n in "${names[@]}"; do
    if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
san=${san%,}

openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=sluice local CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt 2>/dev/null

leaf() { # name key-kind subject-alt-names
    local name=$1 kind=$2 alt=$3
    if [ "$kind" = rsa ]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$name.key" 2>/dev/null
    else
        openssl ecparam -name prime256v1 -genkey -noout -out "$name.key.tmp" 2>/dev/null
        openssl pkcs8 -topk8 -nocrypt -in "$name.key.tmp" -out "$name.key"
        rm -f "$name.key.tmp"
    fi
    openssl req -new -key "$name.key" -subj "/CN=${names[0]}" -out "$name.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$alt" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -sha256 \
        -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}
leaf server-ec ec "$san"
leaf server-rsa rsa "$san"
leaf other-ec ec "DNS:other.sluice.test"
rm -f ca.srl
chmod 600 ./*.key
echo "make-certs: CA and certificates in $(pwd)"
