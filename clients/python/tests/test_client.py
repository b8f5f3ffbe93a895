"""sprite_tasks against the real daemon: each test starts sprite-tasksd on a
socket and database of its own.

The daemon binary is SPRITE_TASKSD (tests/python_client.rs sets it, as part
of the project's test command), else the repository's target/debug build.
The database goes under SPRITE_TEST_DB_DIR when set (a real disk), else a
temporary directory.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from unittest import mock
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, TypeVar, Union

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from sprite_tasks import Client, TaskError, hold, types  # noqa: E402
from sprite_tasks.client import DEFAULT_SOCKET  # noqa: E402
from sprite_tasks.hold import default_interval, default_reason, duration_seconds  # noqa: E402

WAIT = 20.0
"""Seconds to wait for the daemon to start or a state to appear. Generous:
CI machines are busy."""

T = TypeVar("T")


def eventually(probe: Callable[[], T], done: Callable[[T], bool]) -> T:
    """Polls probe until done accepts its value or WAIT passes; the last value."""
    deadline = time.monotonic() + WAIT
    while True:
        value = probe()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(0.01)


def daemon_binary() -> str:
    binary = os.environ.get("SPRITE_TASKSD")
    if binary:
        return binary
    built = HERE.parents[2] / "target" / "debug" / "sprite-tasksd"
    if built.exists():
        return str(built)
    raise RuntimeError(
        "set SPRITE_TASKSD to the sprite-tasksd binary (cargo build; tests/python_client.rs sets it)"
    )


class Daemon:
    """sprite-tasksd on a fresh socket and database; stopped by stop()."""

    def __init__(self, *args: str) -> None:
        self.socket_dir = tempfile.mkdtemp(prefix="st")
        self.db_dir = tempfile.mkdtemp(prefix="db", dir=os.environ.get("SPRITE_TEST_DB_DIR"))
        self.socket = os.path.join(self.socket_dir, "api.sock")
        self.log_path = os.path.join(self.socket_dir, "daemon.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    daemon_binary(),
                    "--socket",
                    self.socket,
                    "--db",
                    os.path.join(self.db_dir, "tasks.redb"),
                    *args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        listening = eventually(self.log, lambda text: "sprite-tasksd listening" in text)
        if "sprite-tasksd listening" not in listening:
            self.stop()
            raise RuntimeError(f"sprite-tasksd did not start; its log:\n{listening}")

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        shutil.rmtree(self.db_dir, ignore_errors=True)


class Sleeper:
    """Another running process to bind holds to; killed by stop()."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
        self.pid = self.process.pid

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class DaemonTest(unittest.TestCase):
    daemon_args: List[str] = []

    def setUp(self) -> None:
        self.daemon = Daemon(*self.daemon_args)
        self.addCleanup(self.daemon.stop)
        self.client = Client(self.daemon.socket)
        self.addCleanup(self.client.close)

    def assertGone(self, name: str) -> None:
        with self.assertRaises(TaskError) as refused:
            self.client.get(name)
        self.assertEqual(refused.exception.status, 404)

    def sleeper(self) -> Sleeper:
        sleeper = Sleeper()
        self.addCleanup(sleeper.stop)
        return sleeper


class ClientTest(DaemonTest):
    def test_create_get_list_refresh_put_delete_status_and_usage_round_trip(self) -> None:
        created = self.client.create("agent", "1h", reason="nightly build")
        self.assertEqual(created["name"], "agent")
        self.assertEqual(created["reason"], "nightly build")
        self.assertIsNone(created["pid"])
        self.assertEqual(created["owner"], os.getuid())
        holder = created["holder"]
        assert holder is not None
        self.assertEqual(holder["pid"], os.getpid())

        self.assertEqual(self.client.get("agent"), created)
        self.assertEqual(self.client.list(), [created])

        refreshed = self.client.refresh("agent", 300)
        self.assertEqual(refreshed["started_at"], created["started_at"])
        self.assertLess(refreshed["expires_at"], created["expires_at"])
        self.assertEqual(refreshed["reason"], "nightly build", "a refresh keeps the reason")

        put = self.client.put("build", "30m", reason="the collection form")
        self.assertEqual(put["name"], "build")
        self.assertEqual([task["name"] for task in self.client.list()], ["agent", "build"])

        status = self.client.status()
        self.assertTrue(status["held"])
        self.assertEqual(status["tasks"], 2)
        self.assertEqual([entry["task"] for entry in status["held_by"]], ["agent", "build"])

        self.client.delete("agent")
        self.client.delete("build")
        self.assertGone("agent")
        self.assertEqual(self.client.list(), [])
        status = self.client.status()
        self.assertFalse(status["held"])
        self.assertIsNotNone(status["idle_since"])

        usage = self.client.usage(since="1h", buckets=4)
        self.assertEqual(sorted(row["name"] for row in usage["tasks"]), ["agent", "build"])
        self.assertEqual(len(usage["buckets"]), 4)
        self.assertFalse(usage["held_now"])
        self.assertNotIn("buckets", self.client.usage()["tasks"][0])

    def test_a_taken_name_is_a_409_task_error_with_the_daemons_sentence(self) -> None:
        self.client.create("agent", "1h")
        with self.assertRaises(TaskError) as taken:
            self.client.create("agent", "1h")
        self.assertEqual(taken.exception.status, 409)
        self.assertEqual(
            str(taken.exception),
            'task "agent" already exists; refresh it with PUT /v1/tasks/agent or choose another name',
        )
        self.assertEqual(taken.exception.message, str(taken.exception))

    def test_refusals_carry_their_status(self) -> None:
        with self.assertRaises(TaskError) as too_long:
            self.client.create("agent", "2h")
        self.assertEqual(too_long.exception.status, 400)
        self.assertIn("at most 1h", str(too_long.exception))
        with self.assertRaises(TaskError) as missing:
            self.client.delete("nobody")
        self.assertEqual(missing.exception.status, 404)
        self.client.create("agent", "1h")
        with self.assertRaises(TaskError) as not_bound:
            self.client.delete("agent", pid=os.getpid())
        self.assertEqual(not_bound.exception.status, 409)
        self.client.get("agent")

    def test_names_are_percent_encoded_in_paths(self) -> None:
        self.client.create("a:b@c", "1h")
        self.assertEqual(self.client.get("a:b@c")["name"], "a:b@c")
        with self.assertRaises(TaskError) as refused:
            self.client.get("a/b")
        self.assertEqual(refused.exception.status, 400)

    def test_one_connection_serves_many_calls(self) -> None:
        for _ in range(5):
            self.client.status()
        connection = self.client._connection
        self.assertIsNotNone(connection)
        self.client.list()
        self.assertIs(self.client._connection, connection, "kept alive")

    def test_no_daemon_is_a_connection_error_naming_the_socket(self) -> None:
        missing = os.path.join(self.daemon.socket_dir, "nobody.sock")
        with self.assertRaises(ConnectionError) as refused:
            Client(missing).status()
        self.assertIn(missing, str(refused.exception))
        self.assertIn("SPRITE_API_SOCKET", str(refused.exception))

    def test_the_socket_defaults_to_sprite_api_socket_then_the_documented_path(self) -> None:
        without = {key: value for key, value in os.environ.items() if key != "SPRITE_API_SOCKET"}
        with mock.patch.dict(os.environ, without, clear=True):
            self.assertEqual(Client().socket, DEFAULT_SOCKET)
            self.assertEqual(DEFAULT_SOCKET, "/.sprite/api.sock")
        with mock.patch.dict(os.environ, {"SPRITE_API_SOCKET": self.daemon.socket}):
            with Client() as client:
                self.assertFalse(client.status()["held"])
            with hold("from-env"):
                self.assertEqual(self.client.get("from-env")["pid"], os.getpid())
        self.assertGone("from-env")


class IdleConnectionTest(DaemonTest):
    daemon_args = ["--idle-timeout", "1s"]

    def test_a_connection_the_daemon_closed_while_idle_is_reopened(self) -> None:
        self.client.status()
        connection = self.client._connection
        assert connection is not None and connection.sock is not None
        # The daemon closes the idle connection: its end becomes readable (EOF).
        readable, _, _ = select.select([connection.sock], [], [], WAIT)
        self.assertTrue(readable, "the daemon closed the idle connection")
        self.client.create("after-idle", "1h")
        self.assertIsNot(self.client._connection, connection)
        self.assertEqual(self.client.get("after-idle")["name"], "after-idle")


class HoldTest(DaemonTest):
    def test_the_hold_lasts_exactly_the_with_block_bound_to_this_process(self) -> None:
        with hold("agent", socket=self.daemon.socket) as held:
            task = self.client.get("agent")
            self.assertEqual(task["pid"], os.getpid())
            self.assertEqual(held.task, task)
            self.assertTrue(self.client.status()["held"])
            self.assertEqual(task["reason"], default_reason(), "this program's command line")
        self.assertGone("agent")
        self.assertFalse(self.client.status()["held"])

    def test_the_hold_is_released_when_the_block_raises_and_the_exception_propagates(self) -> None:
        with self.assertRaises(KeyError):
            with hold("agent", socket=self.daemon.socket, reason="failing work"):
                self.assertEqual(self.client.get("agent")["reason"], "failing work")
                raise KeyError("the work failed")
        self.assertGone("agent")

    def test_a_name_held_by_another_running_process_is_a_409_and_the_block_never_runs(self) -> None:
        other = self.sleeper()
        self.client.refresh("agent", "1h", pid=other.pid)
        ran = []
        with self.assertRaises(TaskError) as taken:
            with hold("agent", socket=self.daemon.socket):
                ran.append(True)
        self.assertEqual(taken.exception.status, 409)
        self.assertIn(str(other.pid), str(taken.exception))
        self.assertEqual(ran, [])
        self.assertEqual(self.client.get("agent")["pid"], other.pid, "the other hold is untouched")

    def test_as_a_decorator_each_call_holds_for_its_duration(self) -> None:
        @hold("worker", socket=self.daemon.socket)
        def work(x: int) -> Optional[int]:
            return self.client.get("worker")["pid"] and x * 2

        self.assertEqual(work(2), 4)
        self.assertGone("worker")
        self.assertEqual(work(3), 6)
        self.assertGone("worker")

        @hold("failing", socket=self.daemon.socket)
        def fail() -> None:
            raise ValueError("no")

        with self.assertRaises(ValueError):
            fail()
        self.assertGone("failing")

    def test_the_hold_is_refreshed_while_the_block_runs(self) -> None:
        with hold("agent", expire="2s", every=0.2, socket=self.daemon.socket) as held:
            first = self.client.get("agent")["expires_at"]
            later = eventually(lambda: self.client.get("agent")["expires_at"], lambda at: at > first)
            self.assertGreater(later, first, "refreshed within the wait")
            self.assertIsNone(held.refused)
        self.assertGone("agent")

    def test_a_refused_refresh_stops_refreshing_and_never_releases_anothers_hold(self) -> None:
        other = self.sleeper()
        with self.assertLogs("sprite_tasks", "WARNING") as logged:
            with hold("agent", expire="2s", every=0.1, socket=self.daemon.socket) as held:
                # Another process takes the name while the block runs.
                self.client.delete("agent")
                self.client.refresh("agent", "1h", pid=other.pid)
                refused = eventually(lambda: held.refused, lambda refusal: refusal is not None)
                assert refused is not None
                self.assertEqual(refused.status, 409)
        self.assertIn("no longer refreshing it", "\n".join(logged.output))
        task = self.client.get("agent")
        self.assertEqual(task["pid"], other.pid, "the release left the other holder's task")

    def test_a_child_forked_in_the_block_leaves_the_parents_hold_alone(self) -> None:
        with hold("agent", socket=self.daemon.socket) as held:
            child = os.fork()
            if child == 0:
                try:
                    held.__exit__(None, None, None)
                finally:
                    os._exit(0)
            _, status = os.waitpid(child, 0)
            self.assertEqual(status, 0)
            self.assertEqual(self.client.get("agent")["pid"], os.getpid())
        self.assertGone("agent")

    def test_a_hold_object_holds_once_at_a_time(self) -> None:
        held = hold("agent", socket=self.daemon.socket)
        with held:
            with self.assertRaises(RuntimeError):
                held.__enter__()
        self.assertGone("agent")
        with held:
            self.assertEqual(self.client.get("agent")["pid"], os.getpid())
        self.assertGone("agent")


class TypesTest(unittest.TestCase):
    def test_the_typed_dicts_have_the_fields_of_the_openapi_schemas(self) -> None:
        document = json.loads((HERE.parents[2] / "docs" / "openapi.json").read_text())
        schemas = document["components"]["schemas"]

        def items(schema: str, field: str) -> Any:
            return schemas[schema]["properties"][field]["items"]

        pairs: List[Tuple[Any, Any]] = [
            (types.Task, schemas["Task"]),
            (types.Holder, schemas["Holder"]),
            (types.Status, schemas["Status"]),
            (types.StatusHolder, items("Status", "held_by")),
            (types.Tripped, items("Status", "tripped")),
            (types.Usage, schemas["Usage"]),
            (types.TaskUsage, items("Usage", "tasks")),
        ]
        for typed, schema in pairs:
            self.assertEqual(set(typed.__annotations__), set(schema["properties"]), typed.__name__)
            self.assertEqual(set(typed.__required_keys__), set(schema["required"]), typed.__name__)


class RulesTest(unittest.TestCase):
    def test_durations_are_read_as_the_daemon_reads_them(self) -> None:
        readings: List[Tuple[Union[int, str], float]] = [
            (300, 300.0),
            ("90s", 90.0),
            ("5m", 300.0),
            ("1h 30m", 5400.0),
            ("1h30m", 5400.0),
            ("1.5s", 1.5),
            ("500ms", 0.5),
            ("2d", 172800.0),
        ]
        for text, seconds in readings:
            self.assertEqual(duration_seconds(text), seconds, text)
        bad_values: List[Any] = ["5", "", "soon", "5 M3", "m", "1h 5", True, None, "9" * 100]
        for bad in bad_values:
            with self.assertRaises(ValueError, msg=repr(bad)):
                duration_seconds(bad)

    def test_the_refresh_interval_follows_sprite_env_tasks_hold(self) -> None:
        self.assertEqual(hold("a").every, 60.0)
        self.assertEqual(hold("a", expire="10s").every, 2.0)
        self.assertEqual(hold("a", expire=1).every, 0.2)
        self.assertEqual(default_interval(3600), 60.0)
        self.assertEqual(hold("a", expire="1m", every="30s").every, 30.0)
        too_often_or_too_rare: List[Tuple[str, Union[float, str]]] = [
            ("10s", 6),
            ("10s", "6s"),
            ("10s", 0.01),
        ]
        for expire, every in too_often_or_too_rare:
            with self.assertRaises(ValueError):
                hold("a", expire=expire, every=every)
        bad_expiries: List[Any] = ["soon", 0, 1.5, "0s"]
        for bad in bad_expiries:
            with self.assertRaises(ValueError):
                hold("a", expire=bad)


if __name__ == "__main__":
    unittest.main()
