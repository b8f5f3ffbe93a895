"""``hold``: the machine held for exactly the block (or function) it wraps.

The Python form of ``sprite-env tasks hold``, with the same rules:

- The task is taken with ``PUT /v1/tasks/NAME`` bound to the calling process
  (``"pid": os.getpid()``), so the daemon releases it the moment this process
  exits, whatever ends it (even ``kill -9``, which runs no ``finally``).
- It is refreshed on a background thread every ``every`` (default: a fifth
  of ``expire``, at most a minute; at least 0.1 s and at most half of
  ``expire``, so a failed refresh is retried before the hold lapses). A
  failed refresh (no daemon, a 503) is logged and retried after
  ``min(every, 5 s)``. A refresh the daemon *refuses* (403: another uid owns
  the task; 409: its hold limit tripped, or another process took the name)
  is logged once and not retried: the block runs on, unheld, and the
  refusal is kept in :attr:`hold.refused`.
- At exit, normal or by an exception (which propagates), refreshing stops
  (a refresh in flight is waited for) and the task is deleted with
  ``DELETE ...?pid=``: a hold releases what it took, never what another
  holder took since. A release that fails is logged; the task then lapses at
  its expiry, or when this process exits.
- A child forked inside the block that leaves it too leaves the hold to its
  parent: only the process that took the hold refreshes and releases it.
- A name held by another running process is not taken: entering raises
  :class:`~sprite_tasks.TaskError` with status 409, naming that process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from typing import Optional, Type, Union

from .client import Client, Duration, TaskError
from .types import Task

log = logging.getLogger("sprite_tasks")

MIN_INTERVAL = 0.1
"""The shortest refresh interval, in seconds: a refresh is one request and
one fsync; more often is load for no safety."""

MAX_DEFAULT_INTERVAL = 60.0
"""The longest default interval: the seed's heartbeat refreshes a 5-minute
expiry every minute."""

MAX_RETRY_DELAY = 5.0
"""The longest wait before retrying a failed refresh, so a daemon restart
costs seconds of margin, not minutes."""

RELEASE_DEADLINE = 5.0
"""Seconds allowed to release the hold at exit: a few attempts, since a
missed release keeps the machine awake until the expiry."""

RELEASE_RETRY = 0.2
"""Pause between release attempts."""

MAX_REASON_BYTES = 256
"""The daemon's limit on a reason."""

MAX_DURATION_TEXT = 64
"""Longer than any duration a person writes; bounds the parser's work."""

# humantime's units (what the daemon parses), in seconds.
_UNITS = {
    **dict.fromkeys(("nsec", "ns"), 1e-9),
    **dict.fromkeys(("usec", "us", "\u00b5s"), 1e-6),
    **dict.fromkeys(("millis", "msec", "ms"), 1e-3),
    **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), 1.0),
    **dict.fromkeys(("minutes", "minute", "mins", "min", "m"), 60.0),
    **dict.fromkeys(("hours", "hour", "hrs", "hr", "h"), 3600.0),
    **dict.fromkeys(("days", "day", "d"), 86400.0),
    **dict.fromkeys(("weeks", "week", "wks", "wk", "w"), 604800.0),
    **dict.fromkeys(("months", "month", "M"), 2630016.0),
    **dict.fromkeys(("years", "year", "y"), 31557600.0),
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([^\d\s.]+)")


def duration_seconds(value: Union[Duration, float]) -> float:
    """Seconds in an expiry or interval: a number of seconds, or a string such
    as "90s", "5m", "1h 30m" or "1.5s" (units as the daemon reads them,
    case-sensitive).

    Raises ValueError for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or len(value) > MAX_DURATION_TEXT:
        raise ValueError(f"{value!r} is not a duration")
    total, at = 0.0, 0
    text = value.rstrip()
    while at < len(text):
        part = _PART.match(text, at)
        if part is None or part.group(2) not in _UNITS:
            break
        total += float(part.group(1)) * _UNITS[part.group(2)]
        at = part.end()
    if at == 0 or at < len(text):
        raise ValueError(
            f"{value!r} is not a duration such as 90s, 5m, 1h or 1h 30m (units are case-sensitive)"
        )
    return total


def default_interval(expire_seconds: float) -> float:
    """A fifth of the expiry (four missed refreshes of margin), at most a
    minute, at least :data:`MIN_INTERVAL`."""
    return min(max(expire_seconds / 5, MIN_INTERVAL), MAX_DEFAULT_INTERVAL)


def default_reason() -> str:
    """This program's command line, as a reason the daemon accepts: control
    characters replaced by '?', cut to 256 bytes."""
    program = os.path.basename(sys.executable) or "python"
    words = [program] + [arg for arg in sys.argv if arg]
    text = "".join(c if c.isprintable() else "?" for c in " ".join(words))
    encoded = text.encode("utf-8")[:MAX_REASON_BYTES]
    return encoded.decode("utf-8", "ignore") or "python"


class hold(contextlib.ContextDecorator):
    """Holds the machine for exactly the ``with`` block (or each call of the
    function it decorates): the task ``name``, bound to this process,
    refreshed every ``every`` and released at exit, exception or not.

    ``expire`` is the expiry of each refresh (seconds, or "5m"); ``every`` the
    refresh interval (seconds, or a duration string; default a fifth of
    ``expire``, at most a minute); ``reason`` what the task is for (default:
    this program's command line); ``socket`` the daemon's socket (default
    ``SPRITE_API_SOCKET``, else ``/.sprite/api.sock``).

    ``with hold(...) as held:`` gives this object: :attr:`task` is the task
    as last taken or refreshed, :attr:`refused` the refusal that stopped the
    refreshes, if any. Entering raises :class:`TaskError` when the daemon
    refuses the hold (409: the name is held by another running process) and
    ``ConnectionError`` when no daemon answers; the block does not run then.
    Raises ValueError at once for an expiry or interval that breaks the rules.

    One object is one hold at a time: entering it again while it is held is
    a RuntimeError (as a decorator, each call gets a fresh hold).
    """

    def __init__(
        self,
        name: str,
        expire: Duration = "5m",
        every: Optional[Union[float, str]] = None,
        reason: Optional[str] = None,
        socket: Optional[str] = None,
    ) -> None:
        expire_seconds = duration_seconds(expire)
        if isinstance(expire, float) or expire_seconds < 1:
            raise ValueError(
                f"expire {expire!r} must be at least 1 second: whole seconds, or a string such as \"5m\""
            )
        if every is None:
            interval = default_interval(expire_seconds)
        else:
            interval = duration_seconds(every)
            if interval < MIN_INTERVAL:
                raise ValueError(
                    f"every {every!r} is too often; the shortest refresh interval is {MIN_INTERVAL} s"
                )
            if interval > expire_seconds / 2:
                raise ValueError(
                    f"every {every!r} is not well below expire {expire!r}: refresh at most every "
                    f"{expire_seconds / 2:g} s (half the expiry) so a failed refresh can be retried "
                    "before the hold lapses"
                )
        self.name = name
        self.expire = expire
        self.every: float = interval
        self.reason: str = reason if reason is not None else default_reason()
        self.socket = socket
        self.task: Optional[Task] = None
        self.refused: Optional[TaskError] = None
        self._pid: Optional[int] = None
        self._stop = threading.Event()
        self._refresher: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        return f"hold({self.name!r}, expire={self.expire!r}, every={self.every!r})"

    def _recreate_cm(self) -> hold:
        # ContextDecorator's hook: each call of a decorated function holds
        # with an object of its own.
        return hold(self.name, self.expire, self.every, self.reason, self.socket)

    def __enter__(self) -> hold:
        if self._pid is not None:
            raise RuntimeError(f"{self!r} is already held; a hold object holds once at a time")
        pid = os.getpid()
        with Client(self.socket) as client:
            self.task = client.refresh(self.name, self.expire, reason=self.reason, pid=pid)
        self._pid = pid
        self.refused = None
        self._stop.clear()
        self._refresher = threading.Thread(
            target=self._refresh_loop, name=f"sprite_tasks.hold({self.name})", daemon=True
        )
        self._refresher.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: object,
    ) -> None:
        if self._pid is not None and self._pid != os.getpid():
            # A child forked inside the block: the hold is its parent's, to
            # keep and to release (the refresher did not fork with it).
            return
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
            self._refresher = None
        pid, self._pid = self._pid, None
        if pid is not None:
            self._release(pid)

    def _refresh_loop(self) -> None:
        pid = self._pid
        next_at = time.monotonic() + self.every
        failing = False
        with Client(self.socket) as client:
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                try:
                    self.task = client.refresh(self.name, self.expire, reason=self.reason, pid=pid)
                except TaskError as e:
                    if e.status in (403, 409):
                        self.refused = e
                        log.warning(
                            "refreshing task %r was refused: %s; no longer refreshing it "
                            "(the code keeps running, unheld)",
                            self.name,
                            e,
                        )
                        return
                    failing = True
                    self._report_failure(e)
                    next_at = time.monotonic() + min(self.every, MAX_RETRY_DELAY)
                except OSError as e:
                    failing = True
                    self._report_failure(e)
                    next_at = time.monotonic() + min(self.every, MAX_RETRY_DELAY)
                else:
                    if failing:
                        log.warning("task %r refreshed again", self.name)
                    failing = False
                    next_at = time.monotonic() + self.every

    def _report_failure(self, error: Exception) -> None:
        log.warning(
            "refreshing task %r failed: %s; retrying in %g s",
            self.name,
            error,
            min(self.every, MAX_RETRY_DELAY),
        )

    def _release(self, pid: int) -> None:
        """Deletes the task while it is bound to ``pid``: gone already (404)
        or taken by another holder since (409) is fine."""
        deadline = time.monotonic() + RELEASE_DEADLINE
        with Client(self.socket) as client:
            while True:
                try:
                    client.delete(self.name, pid=pid)
                    return
                except TaskError as e:
                    if e.status in (404, 409):
                        return
                    error: Exception = e
                except OSError as e:
                    error = e
                if time.monotonic() + RELEASE_RETRY >= deadline:
                    log.warning(
                        "could not delete task %r: %s; it lapses at its expiry, or when this process exits",
                        self.name,
                        error,
                    )
                    return
                time.sleep(RELEASE_RETRY)
