#!/usr/bin/env bash
# The bench's figures at 64 clients checked with other people's load
# clients (issue 23): `oha` against our daemon, `redis-benchmark` against
# Redis with `appendfsync always`, both event-loop clients. Builds the
# release daemon, starts it and redis-server on temporary sockets (their
# files on the build's disk), and runs, ROUNDS times (default 2), each tool
# for DURATION seconds (default 3) at CLIENTS connections (default 64): GETs of one
# live key, then durable writes (our PUT /v1/tasks/NAME, an upsert that
# refreshes it; Redis's SET of one key). Prints each side's rate, p50 and
# server CPU per request (utime + stime of /proc/PID/stat, all threads,
# over the requests the tool reports).
#
#   scripts/cross-check.sh
#   CLIENTS=8 DURATION=5 ROUNDS=3 scripts/cross-check.sh
#
# The two tools are not the same client: oha (tokio) asks for write
# readiness too, so each request the daemon reads wakes oha's thread
# again; redis-benchmark waits only for reads. `cargo bench --bench
# latency` drives both servers with one loop; this checks that its
# figures are not an artefact of that loop. It installs nothing: oha is
# `cargo install oha --locked`, redis-benchmark is in Debian's
# redis-tools.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-2}
seconds=${DURATION:-3}
clients=${CLIENTS:-64}
for value in "$rounds" "$seconds" "$clients"; do
  case $value in
    '' | *[!0-9]* | 0)
      echo "ROUNDS, DURATION and CLIENTS are whole numbers above 0 (got '$value')" >&2
      exit 2
      ;;
  esac
done

missing=()
for tool in oha redis-server redis-benchmark redis-cli curl python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "cross-check.sh needs: ${missing[*]} (oha: cargo install oha --locked;" \
    "the rest: apt-get install redis-server redis-tools curl python3)" >&2
  exit 1
fi

cargo build --release --quiet --bin sprite-tasksd
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
daemon=$target_dir/release/sprite-tasksd
socket_dir=$(mktemp -d)
# On the build's disk, as the latency bench's, so fdatasync is real.
mkdir -p "$target_dir/tmp"
data_dir=$(mktemp -d -p "$target_dir/tmp")
daemon_pid=
redis_pid=
cleanup() {
  for pid in "$daemon_pid" "$redis_pid"; do
    if [ -n "$pid" ]; then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$socket_dir" "$data_dir"
}
trap cleanup EXIT

RUST_LOG=warn "$daemon" --socket "$socket_dir/api.sock" --db "$data_dir/tasks.redb" \
  </dev/null >/dev/null &
daemon_pid=$!
mkdir "$data_dir/redis"
redis-server --port 0 --unixsocket "$socket_dir/redis.sock" --unixsocketperm 700 \
  --appendonly yes --appendfsync always --save "" --daemonize no --loglevel warning \
  --dir "$data_dir/redis" </dev/null >/dev/null &
redis_pid=$!
url=http://sprite/v1/tasks/cross-check
value='{"expires_ms":1766000000000,"n":1}'
# Both answer before the runs: the task exists (an upsert, 200) and
# redis-benchmark's key (literally key:__rand_int__ without -r) is set.
ready=
for _ in $(seq 300); do
  if [ -S "$socket_dir/api.sock" ] &&
    [ "$(redis-cli -s "$socket_dir/redis.sock" PING 2>/dev/null)" = PONG ]; then
    ready=yes
    break
  fi
  sleep 0.05
done
[ -n "$ready" ] || { echo "the daemon or redis-server did not start" >&2; exit 1; }
status=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$socket_dir/api.sock" \
  -X PUT -d '{"expire":"1h"}' "$url" || true)
[ "$status" = 200 ] || { echo "PUT $url answered '$status', not 200" >&2; exit 1; }
answer=$(redis-cli -s "$socket_dir/redis.sock" SET key:__rand_int__ "$value" EX 3600)
[ "$answer" = OK ] || { echo "redis SET answered '$answer'" >&2; exit 1; }
oha_args=(--no-tui -c "$clients" -z "${seconds}s" --output-format json
  --unix-socket "$socket_dir/api.sock")

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Prints one row from a tool's output ($1: oha or redis-benchmark), the
# server's ticks before and after, and the request count for Redis.
row() {
  python3 -c '
import json, os, sys
tool, label, before, after, output = sys.argv[1:6]
hz = os.sysconf("SC_CLK_TCK")
if tool == "oha":
    report = json.loads(output)
    codes = report["statusCodeDistribution"]
    requests = sum(codes.values())
    bad = {code: n for code, n in codes.items() if code != "200"}
    if bad:
        sys.exit(f"{label}: answers other than 200: {bad}")
    # Requests still in flight when the run ends are aborted, not errors.
    errors = {e: n for e, n in report.get("errorDistribution", {}).items()
              if "deadline" not in e}
    if errors or requests == 0:
        sys.exit(f"{label}: {requests} answers, errors {errors}")
    rate = report["summary"]["requestsPerSec"]
    p50 = report["latencyPercentiles"]["p50"] * 1e6
else:
    line = next((l for l in output.splitlines() if l.startswith("\"")
                 and not l.startswith("\"test\"")), None)
    if line is None:
        sys.exit(f"{label}: no figures in the redis-benchmark output: {output!r}")
    fields = [f.strip("\"") for f in line.split(",")]
    requests = int(sys.argv[6])
    rate, p50 = float(fields[1]), float(fields[4]) * 1000
cpu = (int(after) - int(before)) / hz / requests * 1e6
print(f"{label:<34} {rate:>10,.0f} {p50:>9.0f} {cpu:>12.1f}")
' "$@"
}

echo "$clients connections, ${seconds} s a run; daemon pid $daemon_pid, redis-server pid $redis_pid"
printf '%-34s %10s %9s %12s\n' "client / server / request" "per s" "p50 µs" "CPU µs/req"
for round in $(seq "$rounds"); do
  for kind in get write; do
    before=$(ticks "$daemon_pid")
    if [ "$kind" = get ]; then
      output=$(oha "${oha_args[@]}" "$url")
    else
      output=$(oha "${oha_args[@]}" -m PUT -d '{"expire":"1h"}' "$url")
    fi
    after=$(ticks "$daemon_pid")
    row oha "oha / ours / $([ "$kind" = get ] && echo GET || echo PUT)" "$before" "$after" "$output"
    # About as many requests as oha's run, for a run of similar length.
    requests=$(python3 -c 'import json,sys; print(max(1000, sum(json.loads(sys.argv[1])["statusCodeDistribution"].values())))' "$output")
    test=$([ "$kind" = get ] && echo get || echo set)
    before=$(ticks "$redis_pid")
    output=$(redis-benchmark -s "$socket_dir/redis.sock" -t "$test" -d ${#value} \
      -c "$clients" -n "$requests" --csv) ||
      { echo "redis-benchmark failed" >&2; exit 1; }
    after=$(ticks "$redis_pid")
    row redis-benchmark "redis-benchmark / Redis / ${test^^}" "$before" "$after" "$output" "$requests"
  done
  [ "$round" -lt "$rounds" ] && echo
done
echo "CPU: the server's utime + stime over the run, all threads, per request the tool reports."
