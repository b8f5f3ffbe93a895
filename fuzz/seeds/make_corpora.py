#!/usr/bin/env python3
"""Builds the seed corpora in fuzz/corpus/<target>/ from the captured client
requests in fuzz/seeds/requests/ (real curl, Python http.client and Node
http.request bytes, recorded on a Unix socket) and the edge cases below.

Each target's first bytes are its own framing (see src/fuzzing.rs); the
corpus files carry them. Run from anywhere; existing seed files are
overwritten, files libFuzzer added are left alone.
"""
import json
import pathlib

FUZZ = pathlib.Path(__file__).resolve().parent.parent
REQUESTS = sorted((FUZZ / "seeds" / "requests").glob("*.http"))


def write(target, name, data):
    out = FUZZ / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    (out / f"seed-{name}").write_bytes(data)


captured = {p.stem: p.read_bytes() for p in REQUESTS}

# http_request: [shape, split seed] + stream.
edge = {
    "pipelined": b"GET /v1/tasks HTTP/1.1\r\n\r\nDELETE /v1/tasks/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "chunked-ext-trailer": b"POST /v1/tasks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT",
    "cl-and-te": b"POST / HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "http10-keepalive": b"PUT /v1/tasks/a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.0\r\n\r\n",
    "connection-close": b"DELETE /x HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "cl-plus": b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
    "cl-dup": b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "te-gzip-chunked": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "te-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "expect-bad": b"POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: sprite\n\n",
    "leading-blank-lines": b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "chunk-bare-lf": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello",
    "chunk-huge-size": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
    "absolute-form": b"GET http://sprite/v1/tasks?x=1 HTTP/1.1\r\n\r\n",
    "http2": b"GET / HTTP/2.0\r\n\r\n",
}
for name, data in {**captured, **edge}.items():
    write("http_request", name, b"\x00\x00" + data)
    write("http_request", name + "-split", b"\x02\x2b" + data)
    write("http_request", name + "-small-limits", b"\x81\x07" + data)
write("http_request", "all-captured-pipelined",
      b"\x03\x11" + b"".join(v for k, v in captured.items() if "http10" not in k))

# duration: [form, max lo, max hi] + value. Form 0: a string, 1: JSON.
texts = ["1h", "90s", "30m", "1h 30m", "1.5s", "59m 60s", " 5m ", "5", "0s",
         "500ms", "2h", "1h 1ns", "18446744073709551615s 1000ms",
         "99999999999999999999999h", "59m 59s 999ms 999us 999ns", "1d",
         "1M", "3600000ms", "1hour", "1y", "9999999999y"]
for i, text in enumerate(texts):
    write("duration", f"text-{i:02d}", b"\x00\x00\x00" + text.encode())
jsons = ["3600", "1", "0", "-5", "1.5", "null", "true", '"1h"', '["1h"]',
         "18446744073709551615", "1e3", '"59m 60s"', '"1.0000000001s"']
for i, doc in enumerate(jsons):
    write("duration", f"json-{i:02d}", b"\x01\x00\x00" + doc.encode())
write("duration", "week-max", b"\x00\xff\xff" + b"6days 23h 59m 59s")

# api_request: [method, flags] + target "\n" + body. Methods: 0 GET,
# 1 POST, 2 PUT, 3 DELETE, 4.. others.
methods = {"GET": 0, "POST": 1, "PUT": 2, "DELETE": 3, "PATCH": 4}
for name, data in captured.items():
    head, _, body = data.partition(b"\r\n\r\n")
    line = head.split(b"\r\n")[0].split(b" ")
    if b"chunked" in head:
        continue  # the body is framed; http_request covers it
    write("api_request", name, bytes([methods[line[0].decode()], 1]) + line[1] + b"\n" + body)
api = [
    ("POST", "/v1/tasks", '{"name":"agent","expire":"1h"}'),
    ("PUT", "/v1/tasks", '{"name":"my-task","expire":"1h"}'),
    ("PUT", "/v1/tasks/agent", '{"name":"agent","expire":3600}'),
    ("PUT", "/v1/tasks/a", '{"name":"b","expire":"1h"}'),
    ("PUT", "/v1/tasks/a", '{"expire":"1h"} trailing'),
    ("POST", "/v1/tasks", '{"name":"a","name":"b","expire":"1h"}'),
    ("POST", "/v1/tasks", '{"name":"a","expires":"1h"}'),
    ("POST", "/v1/tasks", '{"name":5,"expire":"1h"}'),
    ("POST", "/v1/tasks", '{"name":"agent","expire":0}'),
    ("POST", "/v1/tasks", "[" * 200 + "]" * 200),
    ("GET", "/v1/tasks/a%2Db", ""),
    ("GET", "/v1/tasks/a%2Fb", ""),
    ("GET", "/v1/tasks/%ff", ""),
    ("GET", "/v1/tasks/a%2", ""),
    ("DELETE", "/v1/tasks", ""),
    ("PATCH", "/v1/tasks/agent", ""),
    ("GET", "http://sprite/v1/tasks?x=1", ""),
    ("GET", "/v1/events?since=18446744073709551616", ""),
    ("GET", "/metrics", ""),
    ("POST", "/v1/status", ""),
    ("GET", "*", ""),
    ("GET", "/v1/tasks/" + "x" * 129, ""),
]
for i, (method, target, body) in enumerate(api):
    write("api_request", f"case-{i:02d}", bytes([methods[method], 0]) + target.encode() + b"\n" + body.encode())
write("api_request", "short-max", bytes([1, 2]) + b'/v1/tasks\n{"name":"a","expire":"61s"}')

# reactor: [rules] + steps (src/testing/fuzzing/reactor.rs). Rules byte:
# task limit 1 + b % 6, quota (b / 6) % 4 (0: shared). A step's first byte
# is its kind (low 3 bits) and connection ((b >> 3) % 3: uids 1000, 1001, 0).
CREATE, UPSERT, DELETE, GET, LIST = 0, 1, 2, 3, 4
NAMES = {"a": 0, "b": 1, "agent": 2, "Z9": 3}
EXPIRES = {1: 0, 2: 1, 3: 2, 5: 3, 8: 4, 30: 5, 600: 6, 3600: 7}


def req(conn, kind, name="a", expire=30, pid=None):
    byte = kind | (NAMES[name] << 3)
    if pid is not None:
        byte |= 0x80 | ((pid - 5000) << 5)
    return bytes([0 | (conn << 3), byte, EXPIRES[expire]])


def deliver(conn, length=None, pieces=()):
    # No length: everything queued.
    size = 0xFF if length is None else length - 1
    return bytes([3 | (conn << 3), size, len(pieces)] + [p - 1 for p in pieces])


def clock(kind, quarter_seconds):
    # kind 0: both clocks on by quarter seconds; 2: the wall clock forward
    # by seconds; 3: back by seconds.
    return bytes([5, kind | (quarter_seconds << 2)])


def fault(which):
    return bytes([6, {"lost": 0, "torn": 1, "full": 2, "unreadable": 3}[which]])


def exit_(pid):
    return bytes([6 | ((pid - 5000) << 5), 4])


def hang_up(conn):
    return bytes([6 | (conn << 3), 5])


def raw(conn, data):
    return bytes([7 | (conn << 3), len(data)]) + data


reactor = {
    "create-list-expire": b"\x03" + req(0, CREATE, "a", 2) + deliver(0)
    + req(1, LIST) + deliver(1) + clock(0, 12) + req(1, LIST) + deliver(1),
    "three-uids-collide": b"\x03" + req(0, CREATE, "a") + req(1, CREATE, "a")
    + req(2, UPSERT, "a") + deliver(0) + deliver(1) + deliver(2)
    + req(1, DELETE, "a") + req(2, DELETE, "a") + deliver(1) + deliver(2),
    "owned-quota": bytes([2 + 6 * 1]) + req(0, CREATE, "a") + req(0, CREATE, "b")
    + deliver(0) + req(1, DELETE, "a") + req(2, UPSERT, "b") + deliver(1) + deliver(2),
    "limit": b"\x01" + req(0, CREATE, "a") + req(0, CREATE, "b") + req(1, CREATE, "Z9")
    + deliver(0) + deliver(1),
    "bound-exit": b"\x03" + req(0, CREATE, "agent", 600, pid=5000) + deliver(0)
    + exit_(5000) + req(1, GET, "agent") + deliver(1)
    + req(0, CREATE, "b", 600, pid=5000) + deliver(0),
    "pieces-pipelined": b"\x03" + req(0, CREATE, "a") + req(0, UPSERT, "a", 5)
    + req(0, GET, "a") + req(0, DELETE, "a") + deliver(0, None, (1, 7, 30, 2, 64, 13, 9)),
    "slow-head-timeout": b"\x03" + req(1, CREATE, "b") + deliver(1, 20)
    + clock(0, 63) + clock(0, 63) + deliver(1),
    "lost-commit": b"\x03" + fault("lost") + req(0, CREATE, "a") + deliver(0)
    + req(0, LIST) + deliver(0) + clock(0, 4) + req(0, CREATE, "a") + deliver(0),
    "torn-commit": b"\x03" + fault("torn") + req(0, CREATE, "a") + deliver(0)
    + req(1, GET, "a") + deliver(1),
    "full-log": b"\x03" + fault("full") + req(0, CREATE, "a") + req(1, CREATE, "b")
    + deliver(0) + deliver(1) + req(0, CREATE, "a") + deliver(0),
    "unreadable-after-lost": b"\x03" + req(2, CREATE, "Z9", 3) + deliver(2)
    + fault("lost") + fault("unreadable") + fault("unreadable")
    + req(0, CREATE, "a") + deliver(0) + req(0, CREATE, "b") + deliver(0)
    + clock(0, 4) + clock(0, 4) + req(0, LIST) + deliver(0),
    "expiry-fails": b"\x03" + req(0, CREATE, "a", 1) + deliver(0) + fault("lost")
    + clock(0, 8) + clock(0, 8) + req(1, LIST) + deliver(1),
    "wall-forward": b"\x03" + req(0, CREATE, "a", 30) + req(0, CREATE, "b", 600)
    + deliver(0) + clock(2, 40) + req(1, LIST) + deliver(1),
    "wall-back": b"\x03" + req(0, CREATE, "a", 30) + deliver(0) + clock(3, 50)
    + req(1, GET, "a") + deliver(1) + clock(0, 63) + clock(0, 63) + req(1, LIST) + deliver(1),
    "wall-back-fails": b"\x03" + req(0, CREATE, "a", 30) + deliver(0) + fault("torn")
    + clock(3, 20) + req(0, UPSERT, "a", 8) + deliver(0),
    "hang-up-mid-request": b"\x03" + req(0, CREATE, "a") + deliver(0, 30) + hang_up(0)
    + req(1, LIST) + deliver(1),
    "raw-garbage": b"\x03" + raw(0, b"GET /v1/tasks HTTP/1.1\r\nHost: s\r\n\r\n") + deliver(0)
    + raw(1, b"\x00\xff junk\r\n\r\n") + deliver(1),
    "raw-stream": b"\x03" + raw(2, b"GET /v1/events HTTP/1.1\r\nHost: s\r\n\r\n") + deliver(2)
    + req(0, CREATE, "a") + deliver(0) + clock(0, 20),
    "raw-head-metrics": b"\x03" + raw(1, b"HEAD /v1/tasks HTTP/1.1\r\nHost: s\r\n\r\n") + deliver(1)
    + raw(1, b"GET /metrics HTTP/1.0\r\n\r\n") + deliver(1),
    "expiry-at-the-deadline": b"\x03" + req(0, CREATE, "a", 2) + deliver(0)
    + clock(0, 8) + req(1, GET, "a") + req(1, LIST) + deliver(1),
    "deadline-during-retry-wait": b"\x03" + req(0, CREATE, "a", 2) + deliver(0)
    + clock(0, 6) + fault("full") + req(1, CREATE, "b") + deliver(1)
    + clock(0, 2) + req(1, LIST) + deliver(1),
    "batch-of-three": b"\x05" + req(0, CREATE, "a") + req(0, CREATE, "b")
    + req(0, CREATE, "Z9") + deliver(0),
    "one-byte-pieces": b"\x03" + req(1, CREATE, "b") + req(1, GET, "b")
    + deliver(1, None, (5, 1, 1, 1, 20, 1, 40, 1)),
}
for name, data in reactor.items():
    write("reactor", name, data)
