#!/usr/bin/env bash
# Runs the latency bench with its peer installed: Redis's redis-server and
# redis-benchmark (Debian's redis-server and redis-tools) are installed
# first when missing and this runs as root with apt-get; otherwise the
# bench skips the Redis rows and says what to install.
#
#   scripts/bench.sh [BENCH OPTIONS]     # e.g. scripts/bench.sh --quick
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]}"
    # An old or missing package list fails the first try.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
  else
    echo "the Redis rows need: ${missing[*]} (e.g. apt-get install ${missing[*]}); running without them" >&2
  fi
fi

exec cargo bench --bench latency -- "$@"
