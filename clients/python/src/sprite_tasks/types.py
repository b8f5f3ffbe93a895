"""The daemon's JSON answers, as TypedDicts.

Each mirrors a schema of docs/openapi.json (components/schemas), whose
fields the daemon always sends; optional fields are those it sends only
when asked for (a usage report's buckets).
"""

from __future__ import annotations

from typing import List, Optional, TypedDict


class Holder(TypedDict):
    """The process that last created or refreshed a task (null where unknown)."""

    pid: Optional[int]
    uid: Optional[int]
    command: Optional[str]
    parent_pid: Optional[int]
    parent_command: Optional[str]


class Task(TypedDict):
    """A live task: a hold on the machine until ``expires_at``."""

    name: str
    started_at: str
    expires_at: str
    reason: Optional[str]
    pid: Optional[int]
    """The process the hold is bound to (its exit releases it), or None."""
    holder: Optional[Holder]
    owner: Optional[int]
    """The uid that created the task: only it and root may change it."""


class StatusHolder(TypedDict):
    """One of the tasks holding the machine, in a status."""

    task: str
    reason: Optional[str]
    pid: Optional[int]
    command: Optional[str]
    parent_command: Optional[str]


class Tripped(TypedDict):
    """A name its hold limit released, refused (409) until deleted."""

    task: str
    uid: Optional[int]
    tripped_at: str
    held_seconds: float
    limit_seconds: float


class Status(TypedDict):
    """``GET /v1/status``: whether the machine is held, until when, by what."""

    held: bool
    tasks: int
    held_until: Optional[str]
    idle_since: Optional[str]
    held_by: List[StatusHolder]
    tripped: List[Tripped]
    tripped_count: int


class _TaskUsageFields(TypedDict):
    name: str
    uid: Optional[int]
    command: Optional[str]
    parent_command: Optional[str]
    held_seconds: float
    sole_seconds: float
    holds: int
    first_held_at: str
    last_held_at: str
    held_now: bool


class TaskUsage(_TaskUsageFields, total=False):
    """One task name and owner's share of a usage report."""

    buckets: List[float]


class _UsageFields(TypedDict):
    since: str
    until: str
    history_from: str
    held_seconds: float
    held_now: bool
    tasks: List[TaskUsage]


class Usage(_UsageFields, total=False):
    """``GET /v1/usage``: what kept the machine awake over a window."""

    bucket_seconds: float
    buckets: List[float]
