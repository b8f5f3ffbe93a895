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
