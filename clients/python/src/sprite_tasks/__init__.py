"""Python client of the Sprite Tasks API (sprite-tasksd).

    from sprite_tasks import hold

    with hold("agent"):
        run_the_agent()          # the machine stays awake until the block ends

:class:`Client` speaks the API (``create``, ``refresh``, ``put``, ``delete``,
``get``, ``list``, ``status``, ``usage``) and returns the daemon's JSON as
dicts (:mod:`sprite_tasks.types`); a refusal raises :class:`TaskError`
with the status and the daemon's sentence. :class:`hold` is a context
manager and decorator. The whole API is described by the daemon's OpenAPI
document (``GET /v1/openapi.json``). The standard library only.
"""

from .client import DEFAULT_SOCKET, Client, Duration, TaskError, default_socket
from .hold import hold
from .types import Holder, Status, StatusHolder, Task, TaskUsage, Tripped, Usage

__all__ = [
    "DEFAULT_SOCKET",
    "Client",
    "Duration",
    "Holder",
    "Status",
    "StatusHolder",
    "Task",
    "TaskError",
    "TaskUsage",
    "Tripped",
    "Usage",
    "default_socket",
    "hold",
]

__version__ = "0.1.0"
