#!/usr/bin/env bash
# Instructions per request (issue 23), ours against Redis's: builds the
# release daemon and runs it under callgrind on a temporary socket, its
# database on the build's disk; one client keeps IN_FLIGHT (1 to 64,
# default 64) requests in flight and
# sends REQUESTS (default 20000) creates, then as many GETs, refreshes and
# deletes; after each phase it waits SETTLE seconds (default 2.5) so that
# the checkpoints of that phase are counted with it. Prints instructions
# per request for the event loop (the main thread) and for the rest (the
# checkpoint thread). With redis-server on the PATH it does the same for
# Redis with `appendonly yes` and `appendfsync always`: SET of new keys,
# GET, SET of existing keys, DEL.
#
#   scripts/instructions.sh
#   REQUESTS=5000 PARENT_BYTES=256 scripts/instructions.sh
#   IN_FLIGHT=1 REQUESTS=5000 scripts/instructions.sh
#
# IN_FLIGHT=1 makes every request a reactor turn of its own, as one client
# waiting for each answer does: what a turn costs besides its requests.
#
# PARENT_BYTES (default 120) is the length of the client's parent command
# line, which every task records as its holder's and every answer carries
# (an agent's invocation; the daemon keeps at most 256 bytes of it).
# Instructions are not time: most of a request's CPU time is the kernel's
# (socket wake-ups), which callgrind does not see; `cargo bench --bench
# latency` measures the time. Counts are deterministic to a few per cent
# (the batches a commit groups vary), so they compare commits.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${REQUESTS:-20000}
settle=${SETTLE:-2.5}
parent_bytes=${PARENT_BYTES:-120}
in_flight=${IN_FLIGHT:-64}
# At most 64: the daemon answers 64 pipelined requests of a connection a
# turn (server::MAX_PIPELINED), and the driver writes a whole batch before
# it reads, so a batch far past that would stall both on full buffers.
case $in_flight in
  '' | *[!0-9]*) in_flight=0 ;;
  *) in_flight=$((10#$in_flight)) ;;
esac
if [ "$in_flight" -lt 1 ] || [ "$in_flight" -gt 64 ]; then
  echo "IN_FLIGHT must be a whole number of requests from 1 to 64 (got '${IN_FLIGHT:-}')" >&2
  exit 2
fi

missing=()
for tool in valgrind callgrind_control python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing valgrind python3"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq valgrind python3 >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq valgrind python3 >/dev/null; }
  else
    echo "instructions.sh needs: ${missing[*]} (e.g. apt-get install valgrind python3)" >&2
    exit 1
  fi
fi

cargo build --release --quiet --bin sprite-tasksd
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
daemon=$target_dir/release/sprite-tasksd

socket_dir=$(mktemp -d /tmp/stins.XXXXXX)
mkdir -p "$target_dir/tmp"
db_dir=$(mktemp -d "$target_dir/tmp/instructions.XXXXXX")
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$socket_dir" "$db_dir"
}
trap cleanup EXIT

# The client: pipelines a phase's requests IN_FLIGHT at a time on one connection
# and reads every answer (HTTP with Content-Length, or RESP).
driver=$socket_dir/drive.py
cat >"$driver" <<'PY'
import socket, sys, time
protocol, path, n, phase = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
in_flight = int(sys.argv[5])
s = socket.socket(socket.AF_UNIX)
for _ in range(600):
    try:
        s.connect(path)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit(f"nothing listens on {path}")
buf = b""
def http(method, target, body=b""):
    return (f"{method} {target} HTTP/1.1\r\nHost: sprite\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
def resp(*words):
    out = b"*%d\r\n" % len(words)
    for w in words:
        w = w.encode()
        out += b"$%d\r\n%s\r\n" % (len(w), w)
    return out
def read_http():
    global buf
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        rest += s.recv(65536)
    buf = rest[length:]
    return status
def read_resp():
    global buf
    while b"\r\n" not in buf:
        buf += s.recv(65536)
    line, rest = buf.split(b"\r\n", 1)
    if line.startswith(b"$") and int(line[1:]) >= 0:
        size = int(line[1:]) + 2
        while len(rest) < size:
            rest += s.recv(65536)
        rest = rest[size:]
    buf = rest
    return line
value = '{"expires_ms":1766000000000,"n":1}'
if protocol == "http":
    make = {
        "create": lambda i: (http("POST", "/v1/tasks", b'{"name":"c%d","expire":"1h"}' % i), 201),
        "get": lambda i: (http("GET", "/v1/tasks/c%d" % i), 200),
        "refresh": lambda i: (http("PUT", "/v1/tasks/c%d" % i, b'{"expire":"1h"}'), 200),
        "delete": lambda i: (http("DELETE", "/v1/tasks/c%d" % i), 204),
    }[phase]
    read = read_http
else:
    make = {
        "set": lambda i: (resp("SET", "c%d" % i, value, "EX", "3600"), b"+OK"),
        "get": lambda i: (resp("GET", "c%d" % i), b"$%d" % len(value)),
        "del": lambda i: (resp("DEL", "c%d" % i), b":1"),
    }[phase]
    read = read_resp
for start in range(0, n, in_flight):
    batch = [make(i) for i in range(start, min(start + in_flight, n))]
    s.sendall(b"".join(request for request, _ in batch))
    for _, expected in batch:
        got = read()
        if got != expected:
            sys.exit(f"{phase}: got {got!r}, wanted {expected!r}")
PY

pad=$(printf 'x%.0s' $(seq 1 "$parent_bytes"))
# Runs the driver as the child of a shell whose command line is about
# PARENT_BYTES long: the holder's parent command line.
drive() {
  bash -c 'python3 "$@"; exit $?' "$pad" "$driver" "$@"
}

# Sum of the instructions in each thread's dump of part $2 of $1, as
# "main rest".
totals() {
  python3 - "$1" "$2" <<'PY'
import glob, re, sys
out, part = sys.argv[1], sys.argv[2]
main = rest = 0
for path in sorted(glob.glob(f"{out}.{part}-*")):
    thread = int(path.rsplit("-", 1)[1])
    total = 0
    for line in open(path, errors="replace"):
        m = re.match(r"(?:summary|totals): (\d+)", line)
        if m:
            total = int(m.group(1))
            break
    if thread == 1:
        main += total
    else:
        rest += total
print(main, rest)
PY
}

# Runs a server under callgrind, its phases, and prints a row per phase.
measure() {
  local name=$1 protocol=$2 socket=$3
  shift 3
  local out=$socket_dir/$name.out
  local phases=("$@")
  for _ in $(seq 1 600); do
    [ -S "$socket" ] && break
    sleep 0.1
  done
  [ -S "$socket" ] || { echo "$name did not start" >&2; exit 1; }
  callgrind_control -i on "$server_pid" >/dev/null 2>&1
  callgrind_control -z "$server_pid" >/dev/null 2>&1
  local part=0
  for phase in "${phases[@]}"; do
    local verb=${phase%%:*}
    drive "$protocol" "$socket" "$requests" "$verb" "$in_flight"
    sleep "$settle"
    callgrind_control -d "$server_pid" >/dev/null 2>&1
    part=$((part + 1))
    # The dump is written by the server; wait until every thread's is.
    for _ in $(seq 1 100); do
      compgen -G "$out.$part-*" >/dev/null && break
      sleep 0.1
    done
    sleep 0.5
    read -r main rest < <(totals "$out" "$part")
    python3 -c "import sys; n=$requests; m=$main; r=$rest; print(f'{sys.argv[1]:<8} {sys.argv[2]:<18} {m/n:>10,.0f} {r/n:>12,.0f} {(m+r)/n:>10,.0f}')" "$name" "${phase#*:}"
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

echo "instructions per request, $requests requests a phase, $in_flight in flight on one connection,"
echo "the client's parent command line $parent_bytes bytes"
printf '%-8s %-18s %10s %12s %10s\n' server request "event loop" "other threads" total

valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no \
  --callgrind-out-file="$socket_dir/ours.out" \
  "$daemon" --socket "$socket_dir/api.sock" --db "$db_dir/tasks.redb" \
  --max-tasks 1000000 --max-tasks-per-uid 1000000 >/dev/null 2>"$socket_dir/ours.log" &
server_pid=$!
measure ours http "$socket_dir/api.sock" create:create get:GET refresh:refresh delete:delete

if command -v redis-server >/dev/null 2>&1; then
  mkdir -p "$db_dir/redis"
  valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no \
    --callgrind-out-file="$socket_dir/redis.out" \
    redis-server --port 0 --unixsocket "$socket_dir/redis.sock" --unixsocketperm 700 \
    --appendonly yes --appendfsync always --save "" --daemonize no \
    --loglevel warning --dir "$db_dir/redis" >/dev/null 2>"$socket_dir/redis.log" &
  server_pid=$!
  measure redis resp "$socket_dir/redis.sock" "set:SET (new key)" get:GET "set:SET (existing)" del:DEL
else
  echo "redis-server is not on the PATH: the Redis rows are skipped (apt-get install redis-server)"
fi
echo "event loop: the main thread; other threads: ours the checkpoint into redb, Redis's its background threads."
