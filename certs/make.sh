#!/usr/bin/env bash
# Regenerate the committed development certificates (loopback only; never for production):
# a dev CA and a server certificate for localhost / 127.0.0.1 / ::1 signed by it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=Warden dev CA" -keyout dev-ca.key -out dev-ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout localhost.key -out localhost.csr
openssl x509 -req -in localhost.csr -CA dev-ca.pem -CAkey dev-ca.key -CAcreateserial -days 3650 \
  -extfile <(printf "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE") \
  -out localhost.pem
rm -f localhost.csr dev-ca.srl
