#!/usr/bin/env bash
# The project's test command (README, .ci/run): checks the tools the
# integration tests drive (curl, python3 with h11 and openapi-spec-validator,
# node, systemd's
# systemd-socket-activate), installs what is
# missing when run as root, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
# systemd-socket-activate and systemd-analyze (tests/service.rs); neither
# needs systemd running.
command -v systemd-socket-activate >/dev/null 2>&1 || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the tests need: ${missing[*]}; install them (e.g. apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

# Python's h11 is the reference parser of tests/h11_differential.rs. The
# python3 on PATH may not be Debian's (pyenv), so pip is tried first.
if ! python3 -c 'import h11' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing h11"
    python3 -m pip install -q h11 >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-h11 >/dev/null; } \
      || true
  fi
  if ! python3 -c 'import h11' >/dev/null 2>&1; then
    echo "the tests need Python's h11 for python3; install it (e.g. python3 -m pip install h11, or apt-get install python3-h11)" >&2
    exit 1
  fi
fi

# openapi-spec-validator is the standard validator of docs/openapi.json,
# and brings the OpenAPI 3.1 schema validator that tests/openapi.rs judges
# the daemon's live answers with.
if ! python3 -c 'import openapi_spec_validator, openapi_schema_validator' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing openapi-spec-validator"
    python3 -m pip install -q openapi-spec-validator >/dev/null 2>&1 || true
  fi
  if ! python3 -c 'import openapi_spec_validator, openapi_schema_validator' >/dev/null 2>&1; then
    echo "the tests need Python's openapi-spec-validator for python3; install it (python3 -m pip install openapi-spec-validator)" >&2
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
