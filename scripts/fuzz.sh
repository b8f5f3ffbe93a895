#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after the
# other, one job each, installing cargo-fuzz first if it is missing.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 60 s, every target
#
# The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z
# flags (sanitizer, coverage instrumentation). Found inputs go to a work
# corpus in fuzz/target/work/<target>; the committed seeds in
# fuzz/corpus/<target> and fuzz/regressions/<target> are read, not written.
# Crashes land in fuzz/artifacts/<target>/. Logs: $FUZZ_LOG_DIR (default
# fuzz/target/logs). FUZZ_NICE (default 10) is the niceness of the runs;
# FUZZ_SKIP_BUILD=1 runs the binaries already built.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(http_request duration api_request tasks_model store_crash reactor)
fi
log_dir=${FUZZ_LOG_DIR:-fuzz/target/logs}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# store_crash runs redb (open, recovery, close) several times per input:
# under AddressSanitizer and comparison tracing it manages ~50 inputs a
# second, without them ~1,000. reactor runs the whole core and its
# connections a few dozen turns per input: ~700 under them, several
# thousand without. Both exercise safe Rust only on our side (no `unsafe`
# in store/, server/, conn.rs or testing/; the parser under them is fuzzed
# with ASan by http_request), so they are built without, in a target
# directory of their own so the other builds are not redone.
build_flags() {
  case $1 in
    store_crash | reactor) echo "-s none --no-trace-compares --target-dir target/plain" ;;
    *) echo "" ;;
  esac
}
# libFuzzer flags per target. store_crash and reactor touch thousands of
# features per input (redb; the whole core): the entropic schedule's
# bookkeeping of rare features took a tenth of their time, so they run
# with the older schedule.
run_flags() {
  case $1 in
    store_crash | reactor) echo "-entropic=0" ;;
    *) echo "" ;;
  esac
}
host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir() {
  case $1 in
    store_crash | reactor) echo "fuzz/target/plain/$host/release" ;;
    *) echo "fuzz/target/$host/release" ;;
  esac
}

mkdir -p "$log_dir"
if [ -z "${FUZZ_SKIP_BUILD:-}" ]; then
  echo "building ${targets[*]}"
  for target in "${targets[@]}"; do
    # -a: debug assertions and overflow checks, so arithmetic slips panic.
    # shellcheck disable=SC2046
    (cd fuzz && cargo fuzz build -a $(build_flags "$target") "$target")
  done
fi

status=0
summary=()
for target in "${targets[@]}"; do
  work=fuzz/target/work/$target
  mkdir -p "$work" "fuzz/regressions/$target"
  dict=()
  [ -f "fuzz/dict/$target.dict" ] && dict=("-dict=fuzz/dict/$target.dict")
  log=$log_dir/$target.log
  echo "fuzzing $target for ${seconds}s (log: $log)"
  start=$(date +%s)
  # The binary built above, run directly: editing the sources while a
  # long run is under way does not change what the next target runs.
  mkdir -p "fuzz/artifacts/$target"
  if ! nice -n "${FUZZ_NICE:-10}" "$(bin_dir "$target")/$target" \
      -artifact_prefix="fuzz/artifacts/$target/" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 $(run_flags "$target") "${dict[@]}" \
      "$work" "fuzz/corpus/$target" "fuzz/regressions/$target" >"$log" 2>&1; then
    echo "  $target FAILED: see $log and fuzz/artifacts/$target/"
    status=1
  fi
  wall=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  final=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [^ ]+' || true)
  echo "  $target: ${execs:-?} execs, ${rate:-?} exec/s, ${wall}s wall; ${final:-no stats}"
  summary+=("$(printf '%-14s %12s %8s %6ss  %s' "$target" "${execs:-?}" "${rate:-?}" "$wall" "${final:-no stats}")")
done
echo "summary (target, execs, exec/s, wall, final coverage):"
printf '  %s\n' "${summary[@]}"
exit $status
