#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of every hand-written parser (fuzz/, docs/security.md
# "Fuzzing"): installs cargo-fuzz (pinned) once into $WARDEN_TOOLS, builds the targets on
# the pinned stable toolchain, then runs each target for FUZZ_SECONDS from a scratch copy of
# its committed seed corpus fuzz/corpus/<target>/ (the committed files are never written).
# Fails on a crash (a panic, which includes every differential mismatch the targets assert),
# a hang (one input running over FUZZ_INPUT_TIMEOUT seconds) or running out of memory.
# A failing input is kept in fuzz/artifacts/<target>/ with the command that replays it.
#
#   FUZZ_SECONDS=30        time per target
#   FUZZ_PARALLEL=2        targets run at once (CI's machine has 2 cores)
#   FUZZ_TARGETS="a b"     a subset (default: every target in fuzz/Cargo.toml)
#   FUZZ_INPUT_TIMEOUT=10  seconds one input may take before it counts as a hang
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
CARGO_FUZZ_VERSION=0.13.1
WARDEN_TOOLS="${WARDEN_TOOLS:-/var/tmp/warden-tools}"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
FUZZ_PARALLEL="${FUZZ_PARALLEL:-2}"
FUZZ_INPUT_TIMEOUT="${FUZZ_INPUT_TIMEOUT:-10}"
# Instrumented release builds of its own; kept beside the suite's target dir so CI reuses it.
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-/var/tmp/warden-target}/fuzz}"
triple=$(rustc -vV | sed -n 's/^host: //p')

if ! "$WARDEN_TOOLS/bin/cargo-fuzz" --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION" --root "$WARDEN_TOOLS"
fi
export PATH="$WARDEN_TOOLS/bin:$PATH"

# Not a member of the root workspace, so the suite's fmt and clippy steps do not see it.
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check
(cd fuzz && cargo clippy --locked --bins -- -D warnings)

targets="${FUZZ_TARGETS:-$(cd fuzz && cargo fuzz list)}"
# Stable toolchain: no sanitizer (-Zsanitizer needs nightly; the workspace forbids unsafe
# code, so what is looked for is panics, overflows, hangs and memory blow-ups), with debug
# assertions and overflow checks on (-a). libFuzzer's coverage instrumentation
# (-Cpasses=sancov-module, -Cllvm-args=...) is stable codegen, so no RUSTC_BOOTSTRAP.
echo "building fuzz targets (cargo-fuzz $CARGO_FUZZ_VERSION, $(rustc --version))"
(cd fuzz && cargo fuzz build --sanitizer none --debug-assertions --target-dir "$FUZZ_TARGET_DIR")
bin="$FUZZ_TARGET_DIR/$triple/release"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_one() {
  local t=$1 dir="$work/$1"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp fuzz/corpus/"$t"/* "$dir/corpus/"
  local seeds rc=0
  seeds=$(ls "$dir/corpus" | wc -l)
  timeout --kill-after=10 $((FUZZ_SECONDS + 120)) \
    "$bin/$t" "$dir/corpus" -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_INPUT_TIMEOUT" \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
    >"$dir/log" 2>&1 || rc=$?
  local last execs cov ft found
  last=$(grep -E '^#[0-9]+' "$dir/log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log")
  [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  found=$(ls "$dir/artifacts" | wc -l)
  local verdict=ok
  if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
    verdict=FAILED
    mkdir -p "fuzz/artifacts/$t"
    cp "$dir"/artifacts/* "fuzz/artifacts/$t/" 2>/dev/null || true
    {
      echo "--- $t: exit $rc (libFuzzer's log, abridged):"
      grep -m1 -A6 -E 'panicked at' "$dir/log" || true
      grep -E '^(==[0-9]+== ERROR|SUMMARY|MS:|artifact_prefix)|ALARM|out-of-memory|Timeout' "$dir/log" || true
      if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "the run itself did not end in time"; fi
      for a in "$dir"/artifacts/*; do
        [ -e "$a" ] || continue
        echo "replay: $bin/$t fuzz/artifacts/$t/$(basename "$a")"
      done
    } >"$dir/failure"
  fi
  printf '%-14s %-6s %ss execs=%s cov=%s ft=%s corpus=%s->%s crashes=%s\n' \
    "$t" "$verdict" "$FUZZ_SECONDS" "${execs:-0}" "${cov:-?}" "${ft:-?}" "$seeds" \
    "$(ls "$dir/corpus" | wc -l)" "$found" >"$dir/result"
}

running=0
for t in $targets; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$FUZZ_PARALLEL" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

passed=0
failed=0
for t in $targets; do
  if [ -f "$work/$t/result" ]; then cat "$work/$t/result"; else echo "$t: no result"; fi
  if [ -f "$work/$t/result" ] && [ ! -f "$work/$t/failure" ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
for t in $targets; do
  [ -f "$work/$t/failure" ] && cat "$work/$t/failure"
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
