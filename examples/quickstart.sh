#!/usr/bin/env bash
# Quick start (until `warden demo` lands): build Warden, start a local token issuer and an
# upstream MCP server on loopback, and run the gateway in front of them on 127.0.0.1:8080.
# Prints a bearer token and the curl lines to try. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/warden-target}"
cargo build --release -p controlplane -p testkit --bins
BIN="$CARGO_TARGET_DIR/release"
for p in 8080 9090; do
  if python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$p))" 2>/dev/null; then :; else
    echo "port $p is in use; stop whatever holds it first" >&2; exit 1; fi
done
work="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
"$BIN/test-issuer" --aud http://127.0.0.1:8080/mcp --sub john.mcclane@orchestrator.lab --scope "mcp:tools" --ttl-secs 3600 >"$work/issuer.json" &
pids+=($!)
"$BIN/echo-upstream" >"$work/upstream.json" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/issuer.json" ] && [ -s "$work/upstream.json" ] && break; sleep 0.1; done
issuer=$(python3 -c "import json;print(json.load(open('$work/issuer.json'))['issuer'])")
token=$(python3 -c "import json;print(json.load(open('$work/issuer.json'))['token'])")
upstream=$(python3 -c "import json;print(json.load(open('$work/upstream.json'))['url'])")
sed -e "s#ISSUER#$issuer#" -e "s#UPSTREAM#$upstream#" examples/quickstart.yaml >"$work/warden.yaml"
cat <<TXT

Warden: http://127.0.0.1:8080/mcp   (admin: http://127.0.0.1:9090/metrics)
A test token (valid 1 h) is in \$TOKEN below. Try:

  export TOKEN=$token
  curl -si http://127.0.0.1:8080/mcp -X POST -H 'content-type: application/json'   # 401 + WWW-Authenticate
  curl -s http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp
  curl -si http://127.0.0.1:8080/mcp -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
       -H 'accept: application/json, text/event-stream' \\
       -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}'
  # then, with the Mcp-Session-Id it returned:
  curl -s http://127.0.0.1:8080/mcp -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
       -H "mcp-session-id: <id>" -d '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"demo_echo","arguments":{"hello":"world"}}}'

TXT
"$BIN/warden" serve -c "$work/warden.yaml"
