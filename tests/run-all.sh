#!/usr/bin/env bash
# The whole test suite, from a clean clone on a fresh machine: installs what it needs,
# then format check, clippy (-D warnings), unused dependencies (cargo-machete), every Rust
# test, the MCP conformance suites through Warden, the mixed-era clients, the end-to-end, Kubernetes,
# fuzzing, audit-under-load and failover checks. The README's second command; .ci/run calls this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Reuse one target dir outside the clone so CI does not rebuild aws-lc-rs from cold each time.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/warden-target}"
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
rustc --version
cargo --version
command -v node >/dev/null || { echo "node is required (for the MCP conformance suite)"; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required (free-port helper)"; exit 1; }
# Debian packages the tests use: curl, headless Chromium (the console), prometheus (promtool for the
# metrics exposition; the server scrapes a loaded demo for the Grafana dashboard's queries),
# nginx (the load balancer in front of replicas).
# PostgreSQL (state store).
need=()
command -v curl >/dev/null || need+=(curl)
command -v chromium >/dev/null || need+=(chromium)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || need+=(prometheus)
command -v nginx >/dev/null || need+=(nginx)
# PostgreSQL server binaries for the state store's tests (testkit::postgres runs initdb itself;
# Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# openssl (the soak's CA and certificate renewals) and prlimit (util-linux; the soak's file-size limit).
command -v openssl >/dev/null || need+=(openssl)
command -v prlimit >/dev/null || need+=(util-linux)
# valgrind (callgrind: the instruction-count ceiling of the hot path).
command -v valgrind >/dev/null || need+=(valgrind)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

step "npm packages for the conformance suite (pinned in tests/conformance/package-lock.json)"
(cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error)

step "npm packages for the console test: puppeteer-core (drives Debian's chromium; never downloads a browser) and uPlot (pinned in tests/console/package-lock.json)"
(cd tests/console && npm ci --no-audit --no-fund --loglevel=error)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "unused dependencies (cargo-machete, pinned; installed once into \$WARDEN_TOOLS)"
WARDEN_TOOLS="${WARDEN_TOOLS:-/var/tmp/warden-tools}"
if [ ! -x "$WARDEN_TOOLS/bin/cargo-machete" ]; then
  cargo install --locked cargo-machete@0.9.2 --root "$WARDEN_TOOLS"
fi
"$WARDEN_TOOLS/bin/cargo-machete"

step "cargo test"
cargo test --workspace --no-fail-fast

step "instruction counts (issue 12): one hot tools/call, one ping, the call with 1,000 more rules and with 1,000 more tools, a cold call (a token never seen before: verify, policy, mint) and the call over two shards, through the real pipeline under callgrind; fails above the ceilings in bench/instructions-ceiling.txt"
bash bench/instructions.sh

step "MCP conformance suites (0.1.16 and 0.2.0-alpha.12; revisions 2025-11-25 and 2026-07-28, and bridged across eras) against the upstream fixture directly and through Warden; fails when a scenario passing directly fails through Warden unless listed in tests/conformance/warden-known-gaps-*.txt, and when a listed one passes (20-90 s)"
cargo build -p controlplane --bin warden
WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" OUT="$CARGO_TARGET_DIR/conformance-results" bash tests/conformance/through-warden.sh

step "mixed eras: a 2025-11-25 client (@modelcontextprotocol/sdk) and 2026-07-28 clients (@modelcontextprotocol/client; Python mcp) through one authenticated Warden to a 2025-11-25 and a 2026-07-28 upstream: both catalogs, results, identical denial text, MRTR, bridged elicitation, -32020 bad input, delegation tokens (sub, act, 5 s), audit revisions, list_changed after a policy reload; known gaps in tests/eras/known-gaps.txt (20-60 s)"
WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" bash tests/eras/run.sh

step "end-to-end: TypeScript and Python MCP SDK clients (OAuth: DCR and pre-registered) against warden demo"
WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" bash tests/e2e/run.sh

step "federated login and client registration: TypeScript and Python MCP SDK clients sign in through Warden's authorization server federated to two local oidc-provider IdPs (pre-registered, DCR, CIMD over https with the dev CA), list and call tools; delegation tokens carry the federated sub; the conformance suite's authorization scenarios (no client id, DCR, CIMD) with no warnings; one IdP stopped mid-test (login page says which, the other unaffected, issued tokens still accepted); ~60 s"
WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" bash tests/idp/run.sh

step "end-to-end through a balancer: the TypeScript and Python MCP SDK clients sign in (embedded authorization server, DCR and pre-registered) and call a tool through nginx round-robin over two warden replicas sharing one PostgreSQL state database and one session key ring"
cargo build -p testkit --bins
WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" bash tests/e2e/replicas.sh

step "Kubernetes: helm lint/template of deploy/helm/warden, kubernetes-validate (1.30 schemas), security/probe/mount checks, plain manifests up to date, warden validate of the rendered config"
WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" bash tests/k8s/run.sh

step "fuzzing: every hand-written parser (HTTP/1.1 head and chunked framing, JSON-RPC and the tools/call rewrite, JWT, JWKS, SSE, sealed session ids, OpenAPI bridge) for FUZZ_SECONDS each under cargo-fuzz (pinned, stable toolchain); fails on a crash, hang or differential mismatch"
bash tests/fuzz/run.sh

step "audit trail under load: k6 mixed allowed/denied/unauthenticated calls against warden demo; records == requests, chain verifies, no token leaks"
WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" bash tests/load-audit/run.sh

step "policy shadow under load: the same k6 load with a stricter candidate policy in shadow; every disagreement counted exactly (metric and audit record), live decisions unchanged, CPU per call printed"
SHADOW=1 DURATION=5s WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" bash tests/load-audit/run.sh

step "operator console under load: k6 mixed allowed/denied/failing calls against warden demo; headless Chromium checks topology, charts, denies apart from errors, a denied and an allowed delegation chain (screenshots in target/console-test/); a real Prometheus answers every Grafana panel query with data; the chain verifies"
WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" bash tests/console/run.sh

step "failover under load: k6 tools/call through nginx round-robin over three warden replicas (one key ring), one replica SIGTERMed and restarted mid-load; no failed call, upstream executions == successes, audit records over all replicas == successes, every chain verifies, exit 0"
cargo build -p testkit --bins
WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" bash tests/failover/run.sh

step "chaos soak: k6 mixed load (allowed/denied/unauthenticated/malformed/oversize, both MCP eras) through nginx over three TLS replicas sharing PostgreSQL, while 14 faults run (upstream kill/slow/garbage/drop, JWKS rotate/unavailable/garbage, issuer stopped, external token endpoint 503/garbage/hang, policy+config reloads, TLS renewal, audit file-size limit, audit sink stalled, replica SIGKILL); invariants from the verifying upstream, the audit files and /proc; fails on any violation; report in target/soak-report.md"
WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" REPORT="$PWD/target/soak-report.md" bash tests/soak/run.sh
