#!/usr/bin/env bash
# The project's test command (README, .ci/run): checks the tools the
# integration tests drive (curl, python3, node), installs what is missing
# from Debian's packages when run as root, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the tests need: ${missing[*]}; install them (e.g. apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

# The fuzz targets build on stable too: a target that no longer compiles
# fails here (their corpora are replayed by tests/fuzz_corpus.rs below).
cargo check --manifest-path fuzz/Cargo.toml --locked --bins

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-targets "$@" 2>&1 | tee "$log"
# One closing line for the whole run (the last target is a criterion
# bench, whose own last line is not a test summary).
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "cargo test: %d passed, %d failed\n", passed, failed }' "$log"
