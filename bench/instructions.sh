#!/usr/bin/env bash
# Instruction count of one hot tools/call (and one ping, a cold call with a never-seen token, the
# call over two shards, ...) through the real pipeline (bench/examples/instructions.rs) under
# valgrind's callgrind, counting only the measured loop
# (--toggle-collect=*measured*) and dividing by N. Fails when a count exceeds its ceiling in
# bench/instructions-ceiling.txt: instruction counts are stable on this noisy machine, wall time is not.
#
#   bash bench/instructions.sh          # N=200; SKIP_BUILD=1 to use an existing release build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/warden-target}"
N=${N:-200}
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
[ "${SKIP_BUILD:-}" = 1 ] || cargo build --release -p bench --example instructions
EXE="$CARGO_TARGET_DIR/release/examples/instructions"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
fail=0
while read -r probe ceiling; do
    case "$probe" in ''|'#'*) continue ;; esac
    valgrind --tool=callgrind --collect-atstart=no '--toggle-collect=*measured*' \
        --callgrind-out-file="$OUT/$probe.out" "$EXE" "$probe" "$N" >"$OUT/$probe.log" 2>&1 \
        || { cat "$OUT/$probe.log"; echo "FAIL: $probe probe did not run"; fail=1; continue; }
    total=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$OUT/$probe.log")
    [ -n "$total" ] || { cat "$OUT/$probe.log"; echo "FAIL: no count for $probe"; fail=1; continue; }
    per=$((total / N))
    if [ "$per" -le "$ceiling" ]; then
        echo "ok: $probe $per instructions per request (ceiling $ceiling; N=$N)"
    else
        echo "FAIL: $probe $per instructions per request exceeds the ceiling $ceiling (N=$N)"
        callgrind_annotate --threshold=80 "$OUT/$probe.out" 2>/dev/null | sed -n '/PROGRAM TOTALS/,$p' | head -n 30
        fail=1
    fi
done <bench/instructions-ceiling.txt
exit "$fail"
