#!/usr/bin/env bash
# Replays a target's corpora (work, committed seeds, regressions) through
# its built binary and prints, per file of src/, the control-flow edges
# reached out of those instrumented (libFuzzer's -print_coverage; the totals
# include never-taken panic and overflow-check edges, so 100% is not the
# goal), then the functions of src/ never reached.
#
#   fuzz/coverage.sh TARGET        # after scripts/fuzz.sh has built it
#
# -print_coverage needs the sanitizer's symbolizer: the binary read is the
# AddressSanitizer build even for the targets scripts/fuzz.sh fuzzes
# without it (store_crash, reactor); build that one first with
# `cargo fuzz build -a TARGET` (from fuzz/, RUSTC_BOOTSTRAP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
target=$1
bin=fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release/$target
dirs=()
for dir in "fuzz/target/work/$target" "fuzz/corpus/$target" "fuzz/regressions/$target"; do
  [ -d "$dir" ] && dirs+=("$dir")
done
report=$(mktemp)
trap 'rm -f "$report"' EXIT
nice -n "${FUZZ_NICE:-10}" "$bin" -runs=0 -print_coverage=1 "${dirs[@]}" >"$report" 2>&1
src=$(pwd)/src/
awk -v src="$src" '
  /^(UN)?COVERED_FUNC:/ {
    file = $NF; sub(/:[0-9]+$/, "", file)
    if (index(file, src) != 1) next
    file = substr(file, length(src) + 1)
    split($5, e, "/"); hit[file] += e[1]; all[file] += e[2]
    if ($1 == "UNCOVERED_FUNC:") {
      name = $6; for (i = 7; i < NF; i++) name = name " " $i
      missed[file] = missed[file] "\n    " name
    }
  }
  END {
    for (f in all) printf "%-14s %5d/%-5d edges (%d%%)\n", f, hit[f], all[f], all[f] ? 100 * hit[f] / all[f] : 0
    for (f in missed) printf "never reached in %s:%s\n", f, missed[f]
  }' "$report"
