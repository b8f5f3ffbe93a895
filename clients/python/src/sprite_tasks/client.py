"""The HTTP/1.1 client of sprite-tasksd over its Unix socket.

One keep-alive connection per :class:`Client`, opened on first use and
reopened once when the daemon has closed it while idle. Requests on one
client are serialised by a lock, so a client may be shared by threads.
Every call returns the daemon's JSON as a dict (see :mod:`sprite_tasks.types`)
or raises :class:`TaskError` with the daemon's status and sentence.
"""

from __future__ import annotations

import http.client
import json
import os
import socket as _socket
import threading
from typing import Any, Dict, List, Optional, Tuple, Union, cast
from urllib.parse import quote, urlencode

from .types import Status, Task, Usage

DEFAULT_SOCKET = "/.sprite/api.sock"
"""The socket when neither ``socket=`` nor ``SPRITE_API_SOCKET`` says."""

SOCKET_ENV = "SPRITE_API_SOCKET"

HOST = "sprite"
"""The virtual host of every request, as the API documents it."""

REQUEST_TIMEOUT = 10.0
"""Seconds allowed for one request. The daemon answers a change after one
fdatasync, normally in milliseconds; longer means it is stuck or its disk is
failing, and a caller (or a hold due to refresh) should hear about it."""

Duration = Union[int, str]
"""An expiry as the API takes it: whole seconds, or a string such as "5m"."""


def default_socket() -> str:
    """``SPRITE_API_SOCKET`` if set and not empty, else ``/.sprite/api.sock``."""
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


class TaskError(Exception):
    """The daemon refused a request: ``status`` is the HTTP status (400, 403,
    404, 409, 503, 507, ...) and ``str()`` is the daemon's sentence, which
    says what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"TaskError({self.status!r}, {self.message!r})"


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection to a Unix socket, with ``Host: sprite``."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(HOST, timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


# Errors that mean a kept-alive connection was closed by the daemon (its
# idle timeout) before it read the request: the request was not served.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Client:
    """A client of the daemon at ``socket`` (default: :func:`default_socket`).

    Usable as a context manager, which closes its connection at exit.
    """

    def __init__(self, socket: Optional[str] = None, timeout: float = REQUEST_TIMEOUT) -> None:
        self.socket: str = socket if socket is not None else default_socket()
        self.timeout = timeout
        self._connection: Optional[_UnixHTTPConnection] = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client(socket={self.socket!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; the next call opens another."""
        with self._lock:
            self._drop()

    # The API.

    def create(
        self,
        name: str,
        expire: Duration,
        *,
        reason: Optional[str] = None,
        pid: Optional[int] = None,
        max_held_for: Optional[Duration] = None,
    ) -> Task:
        """``POST /v1/tasks``: holds the machine for ``expire``. 409 if the
        name is live (or tripped by its hold limit)."""
        body = _task_body(expire, reason, pid, max_held_for)
        body["name"] = name
        return cast(Task, self._call("POST", "/v1/tasks", body))

    def refresh(
        self,
        name: str,
        expire: Duration,
        *,
        reason: Optional[str] = None,
        pid: Optional[int] = None,
        max_held_for: Optional[Duration] = None,
    ) -> Task:
        """``PUT /v1/tasks/NAME``: refreshes the task's expiry to ``expire``
        from now, or creates it when missing. A refresh without ``reason`` or
        ``pid`` keeps the task's. 403 if another uid owns it, 409 if it is
        bound to another running process than ``pid``."""
        body = _task_body(expire, reason, pid, max_held_for)
        return cast(Task, self._call("PUT", _task_path(name), body))

    def put(
        self,
        name: str,
        expire: Duration,
        *,
        reason: Optional[str] = None,
        pid: Optional[int] = None,
        max_held_for: Optional[Duration] = None,
    ) -> Task:
        """``PUT /v1/tasks`` with the name in the body: the API's other
        upsert form, the same as :meth:`refresh`."""
        body = _task_body(expire, reason, pid, max_held_for)
        body["name"] = name
        return cast(Task, self._call("PUT", "/v1/tasks", body))

    def delete(self, name: str, *, pid: Optional[int] = None) -> None:
        """``DELETE /v1/tasks/NAME``: releases the hold (and re-arms a name its
        hold limit tripped). With ``pid``, only while the task is bound to
        that process (409 otherwise). 404 if it is not live."""
        path = _task_path(name)
        if pid is not None:
            path += "?" + urlencode({"pid": pid})
        self._call("DELETE", path)

    def get(self, name: str) -> Task:
        """``GET /v1/tasks/NAME``; 404 if it is not live."""
        return cast(Task, self._call("GET", _task_path(name)))

    def list(self) -> List[Task]:
        """``GET /v1/tasks``: every live task, ordered by name."""
        answer = cast(Dict[str, Any], self._call("GET", "/v1/tasks"))
        return cast(List[Task], answer["tasks"])

    def status(self) -> Status:
        """``GET /v1/status``: held or idle, until when, and by which tasks."""
        return cast(Status, self._call("GET", "/v1/status"))

    def usage(
        self,
        since: Optional[str] = None,
        until: Optional[str] = None,
        buckets: Optional[int] = None,
    ) -> Usage:
        """``GET /v1/usage``: what kept the machine awake over a window.
        ``since`` and ``until`` are RFC 3339 times or spans back from now
        ("24h", "7d"); the default window is the last 24 hours."""
        query = {
            key: value
            for key, value in (("since", since), ("until", until), ("buckets", buckets))
            if value is not None
        }
        path = "/v1/usage" + ("?" + urlencode(query) if query else "")
        return cast(Usage, self._call("GET", path))

    # The transport.

    def _call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        """One request: the decoded JSON answer (None for 204), or TaskError."""
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        with self._lock:
            status, payload = self._exchange(method, path, data, headers)
        if status >= 400:
            raise TaskError(status, _error_sentence(status, payload))
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError as e:
            raise TaskError(status, f"the daemon's answer is not JSON ({e})") from e

    def _exchange(
        self, method: str, path: str, data: Optional[bytes], headers: Dict[str, str]
    ) -> Tuple[int, bytes]:
        for attempt in (1, 2):
            reused = self._connection is not None
            if self._connection is None:
                self._connection = _UnixHTTPConnection(self.socket, self.timeout)
            connection = self._connection
            try:
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except _STALE as e:
                self._drop()
                if reused and attempt == 1:
                    continue
                raise ConnectionError(f"sprite-tasksd at {self.socket} closed the connection: {e}") from e
            except (FileNotFoundError, ConnectionRefusedError) as e:
                self._drop()
                raise ConnectionError(
                    f"cannot reach sprite-tasksd at {self.socket} ({e.strerror}); is it running? "
                    f"(socket= or {SOCKET_ENV} choose the socket)"
                ) from e
            except BaseException:
                self._drop()
                raise
            if response.will_close:
                self._drop()
            return response.status, payload
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _task_path(name: str) -> str:
    return "/v1/tasks/" + quote(name, safe="")


def _task_body(
    expire: Duration,
    reason: Optional[str],
    pid: Optional[int],
    max_held_for: Optional[Duration],
) -> Dict[str, Any]:
    body: Dict[str, Any] = {"expire": expire}
    if reason is not None:
        body["reason"] = reason
    if pid is not None:
        body["pid"] = pid
    if max_held_for is not None:
        body["max_held_for"] = max_held_for
    return body


def _error_sentence(status: int, payload: bytes) -> str:
    """The daemon's ``{"error": sentence}``, or the raw text of another body."""
    try:
        sentence = json.loads(payload)["error"]
        if isinstance(sentence, str):
            return sentence
    except (ValueError, KeyError, TypeError):
        pass
    text = payload.decode("utf-8", "replace").strip()
    return text or f"HTTP status {status}"
