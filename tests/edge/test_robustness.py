"""The robustness suite: hostile requests for every operation, on both carriers, and raw-socket
abuse, against a real server and workers, while a well-behaved client keeps reading a run.

- **Requests.** Hypothesis builds each request from a valid one of its operation (real run,
  worker and schedule IDs, so requests reach deep into the handlers) and then breaks it:
  fields replaced by hostile values (NUL and control characters, huge or negative numbers,
  NaN and infinities, 2^70, wrong types, megabyte strings, nesting thousands deep), fields
  dropped or added, whole bodies replaced, the text cut short or made invalid UTF-8, and on
  the session the frame's envelope (``id``, ``op``) broken too. Each goes over plain HTTP
  (with an admin key) or a session: a registered worker's for the worker operations, an
  admin's for the others, so every request gets past authorization to be decoded.
- **Raw sockets**, at the same time: pipelined upgrades, truncated and binary frames,
  invalid UTF-8 frames, frames announcing 64 MiB, abrupt resets mid-request, a body
  announcing a gigabyte, garbage bytes, headers that never end, sessions that never read,
  and hundreds of idle connections held open throughout.
- **A bystander** reads a run with ``get_run`` over its own connection all along.

Counted: every request and raw connection; answers in the 5xx range (a reply the server
does not give within 10 s, a dropped connection and a session closed with 1011 count too);
restarts of the server process or of any actor in it; requests refused yet leaving rows
behind (each refusal is checked against the tables' counts before and after it). The test
prints ``edge: requests N, 5xx 0, server restarts 0, stored half-way 0, bystander p99 X ms``
(in the terminal summary) and fails on any non-zero count, naming the first offenders.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import json
import os
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import psycopg
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from aiki.errors import error_from_reply
from aiki.protocol import (
    OPERATIONS,
    WORKERS,
    ActivateSchedule,
    BeginWait,
    CancelRun,
    ClaimNext,
    ClaimRun,
    CreateKey,
    DeactivateSchedule,
    DeregisterWorker,
    DescribeRun,
    GetRun,
    GetSchedule,
    Heartbeat,
    HistoryUpdate,
    ListKeys,
    ListLimits,
    ListRuns,
    ListSchedules,
    ListVersions,
    ListWorkers,
    OfferSlot,
    PauseRun,
    PauseSchedule,
    RecordHistory,
    RecordTask,
    RegisterWorker,
    ReportProgress,
    Request,
    RequeueRun,
    ResumeRun,
    ResumeSchedule,
    RetryRun,
    RetryRuns,
    RevokeKey,
    ScheduleSpec,
    SendEvent,
    ServedQueue,
    SetLimit,
    Settled,
    StartChild,
    StartRun,
    Subscribe,
    SuspendRun,
    TransitionRun,
    Unsubscribe,
    VersionSpec,
    WaitRun,
    WakeupRun,
    WhoAmI,
)
from aiki.server import ServerConfig

from ._raw import Closed, RawSession, address, client_frame, read_all
from .conftest import Cluster

MAX_BODY_BYTES: int = attrs.fields(ServerConfig).max_body_bytes.default
"""The server's bound on a request body or a session message (refused beyond it)."""

EXAMPLES = int(os.environ.get("AIKI_EDGE_EXAMPLES", "500"))
"""Hostile requests hypothesis makes beyond the sweep (each on one carrier)."""
EXPLORE = os.environ.get("AIKI_EDGE_EXPLORE") == "1"
"""Draw new requests on each run (``AIKI_EDGE_EXPLORE=1``, say with ``AIKI_EDGE_EXAMPLES=
5000``); by default the same ones every run, so the suite's verdict is reproducible."""

IDLE_CONNECTIONS = 300
"""TCP connections held open, silent, throughout (the server's cap is 1000)."""

ANSWER_SECONDS = 10.0
"""A request not answered within this counts as a failure to answer."""

SERVER_ARGS = ["--dispatch-ahead", "1000"]
"""The fuzzing sessions act as a worker that claims the runs it names, not what a stream
brings: no start waits at the gate for its queue's room (it would be unclaimable)."""
WORKFLOW = "edge-fuzz"
WORKER = "edge-fuzz-worker"
INPUT_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}}
VERSION = VersionSpec(workflow=WORKFLOW, version="1", input_schema=INPUT_SCHEMA,
                      event_schemas={"go": {}})  # fmt: skip
REGISTRATION = RegisterWorker(
    worker_id=WORKER, versions=(VERSION,), concurrency=4, incarnation="the fuzzing worker"
)
"""The fuzzing worker's registration: each session it reopens is the same process's (its
incarnation), so the ID it holds is taken over, not refused as another live worker's."""


# -- what the server stores ------------------------------------------------------------------

COUNTS = """
SELECT (SELECT count(*) FROM aiki_workflow_versions),
       (SELECT count(*) FROM aiki_runs WHERE schedule_id IS NULL),
       (SELECT count(*) FROM aiki_tasks),
       (SELECT count(*) FROM aiki_task_attempts),
       (SELECT count(*) FROM aiki_waits),
       (SELECT count(*) FROM aiki_events),
       (SELECT count(*) FROM aiki_progress),
       (SELECT count(*) FROM aiki_schedules),
       (SELECT count(*) FROM aiki_workers),
       (SELECT count(*) FROM aiki_api_keys)
"""
"""Rows only a request stores (runs a schedule fires, transitions and the outbox are
also written in the background, so they are left out)."""

TABLES = ("versions", "runs", "tasks", "task attempts", "waits", "events", "progress",
          "schedules", "workers", "api keys")  # fmt: skip


def _grown(before: tuple[int, ...], after: tuple[int, ...]) -> list[str]:
    return [f"{table} {b}->{a}" for table, b, a in zip(TABLES, before, after, strict=True)
            if a > b]  # fmt: skip


# -- hostile values --------------------------------------------------------------------------

DEEP = "\x00deep\x00"
"""Stands for a value nested `deep` levels (spliced into the JSON text: too deep to build)."""

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),  # any code point but surrogates: NUL and control characters too
    st.sampled_from([
        "", "\x00", "a\x00b", "\n", "x\r\nERROR forged line", "\u202e", "\ufeff", "\x7f",
        "x" * 70_000, "💥" * 1000, "-1", "1e308", "NaN", "null", "{}", "[]",
        "' OR 1=1 --", "../../etc/passwd", "%00", "00000000-0000-0000-0000-000000000000",
        "2026-13-45T99:99:99Z", "3000-01-01T00:00:00Z", "0000-01-01T00:00:00Z",
        "* * * * *", "*/0 * * * *", "Mars/Olympus", "^(a+)+$",
    ]),
)  # fmt: skip
HOSTILE_NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, -5, 2**31 - 1, 2**31, 2**53 + 1, 2**63, 2**64, 10**13]),
    st.floats(),  # NaN and the infinities included
    st.sampled_from([1e308, -1e308, 1e13, 2.9, -0.0, 5e-324, 0.001]),
)
HOSTILE_SCALAR = st.one_of(HOSTILE_TEXT, HOSTILE_NUMBER, st.booleans(), st.none())
HOSTILE = st.recursive(
    HOSTILE_SCALAR,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(HOSTILE_TEXT, inner, max_size=5),
    max_leaves=12,
) | st.sampled_from([DEEP, "x" * 3_000_000])  # fmt: skip
DEPTHS = st.sampled_from([65, 300, 1000, 100_000])


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _set(body: object, path: tuple[Any, ...], value: object) -> object:
    """``body`` with ``value`` at ``path`` (the root: ``value`` itself)."""
    if not path:
        return value
    _get(body, path[:-1])[path[-1]] = value
    return body


def _encode(value: object, depth: int) -> bytes:
    """JSON text of ``value``: big integers, NaN and the infinities as Python writes them,
    `DEEP` as ``depth`` nested arrays."""
    text = json.dumps(value, allow_nan=True)
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth).encode()


def _break(data: st.DataObject, body: dict[str, Any]) -> bytes:
    """A hostile variant of a valid request body, as the bytes to send."""
    value: object = json.loads(json.dumps(body))  # a copy the mutations may change
    for _ in range(data.draw(st.integers(0, 3), label="mutations")):
        paths = list(_paths(value))
        path = data.draw(st.sampled_from(paths), label="at")
        kind = data.draw(st.sampled_from(["replace", "replace", "drop", "add"]), label="how")
        if kind == "drop" and path and isinstance(parent := _get(value, path[:-1]), dict):
            del parent[path[-1]]
        elif kind == "add" and isinstance(_get(value, path), dict):
            _get(value, path)[data.draw(HOSTILE_TEXT, label="key")] = data.draw(HOSTILE)
        else:
            value = _set(value, path, data.draw(HOSTILE, label="value"))
    text = _encode(value, data.draw(DEPTHS, label="depth"))
    damage = data.draw(st.sampled_from(["none"] * 8 + ["cut", "utf8", "empty"]), label="text")
    if damage == "cut":
        return text[: data.draw(st.integers(0, max(0, len(text) - 1)), label="cut at")]
    if damage == "utf8":
        at = data.draw(st.integers(0, len(text)), label="bad byte at")
        return text[:at] + b"\xff\xfe\xc0" + text[at:]
    if damage == "empty":
        return b""
    return text


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


# -- the tally -------------------------------------------------------------------------------


@attrs.define
class Tally:
    """What the suite counts (see the module docstring)."""

    requests: int = 0
    failures: list[str] = attrs.Factory(list)
    half_way: list[str] = attrs.Factory(list)
    lock: threading.Lock = attrs.Factory(threading.Lock)

    def request(self) -> None:
        with self.lock:
            self.requests += 1

    def failure(self, what: str) -> None:
        with self.lock:
            self.failures.append(what[:600])


def _quote(raw: bytes) -> str:
    return repr(raw[:300]) + (f" ... ({len(raw)} bytes)" if len(raw) > 300 else "")


# -- the carriers ----------------------------------------------------------------------------


class Http:
    """Operations over one keep-alive HTTP connection (reopened when the server closes it)."""

    def __init__(self, cluster: Cluster) -> None:
        self.host, self.port = address(cluster)
        self.key = cluster.keys["admin"]
        self.conn = self._open()

    def _open(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=ANSWER_SECONDS)

    def post(self, path: str, body: bytes) -> tuple[int, bytes] | None:
        """The status and body answering ``body``, or None if the server gave no answer.

        A request that fails on a kept-alive connection is sent again on a new one, once
        (the server may have closed it after its last answer: a 413, say), as HTTP clients
        do."""
        reused = self.conn.sock is not None
        answer = self._post(path, body)
        if answer is None and reused:
            answer = self._post(path, body)
        return answer

    def _post(self, path: str, body: bytes) -> tuple[int, bytes] | None:
        headers = {"content-type": "application/json", "host": f"{self.host}:{self.port}",
                   "authorization": f"Bearer {self.key}"}  # fmt: skip
        # (an OSError: the server answered 413 and closed before taking it all)
        with contextlib.suppress(OSError):
            self.conn.request("POST", path, body=body, headers=headers)
        try:
            response = self.conn.getresponse()
            answer = (response.status, response.read())
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = self._open()
            return None
        if response.will_close:
            self.conn.close()
            self.conn = self._open()
        return answer

    def call(self, operation: str, body: object) -> Any:
        """A valid request that must succeed: its reply's body."""
        answer = self.post(f"/api/v1/{operation}", json.dumps(body).encode())
        assert answer is not None, operation
        assert answer[0] == 200, (operation, answer)
        return json.loads(answer[1])

    def close(self) -> None:
        self.conn.close()


PROBE = b'{"id": "probe", "op": "list_workers", "body": {}}'
"""A request sent behind a notice (a frame whose ``id`` is null)."""


def _is_notice(frame: bytes) -> bool:
    try:
        value = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and "id" in value and value["id"] is None


class Session:
    """A session, one request at a time: the fuzzing worker's (a worker key, registered as
    `WORKER`), or an admin's (for every operation but the worker's)."""

    def __init__(self, cluster: Cluster, role: str = "worker") -> None:
        self.cluster = cluster
        self.role = role
        self.raw = self._open()

    def _open(self) -> RawSession:
        raw = RawSession(self.cluster, timeout=ANSWER_SECONDS, role=self.role)
        if self.role == "worker":
            reply = raw.call("register_worker", OPERATIONS.of(REGISTRATION).request.unstructure(
                REGISTRATION))  # fmt: skip
            assert "ok" in reply, reply
        return raw

    def reopen(self) -> None:
        self.raw.close()
        self.raw = self._open()

    def send(self, frame: bytes) -> dict[str, Any] | int | None:
        """The reply to ``frame``, the close code if the server closed the session instead,
        or None if it did neither in time (the session is reopened after either)."""
        try:
            self.raw.sock.sendall(client_frame(0x1, frame))  # any bytes, as a text frame
            if not _is_notice(frame):
                return self.raw.reply()
            # A notice is answered only if refused: a request behind it tells which.
            self.raw.sock.sendall(client_frame(0x1, PROBE))
            reply = self.raw.reply()
            if reply.get("id") == "probe":
                return {"ok": "(a notice: no reply)"}
            self.raw.reply()  # the probe's
            return reply
        except Closed as closed:
            self.reopen()
            return closed.code
        except (TimeoutError, OSError):
            self.reopen()
            return None

    def call(self, operation: str, body: object) -> Any:
        """A valid request that must succeed: its ``ok`` body."""
        reply = self.raw.call(operation, body)
        assert "ok" in reply, (operation, reply)
        return reply["ok"]

    def close(self) -> None:
        self.raw.close()


# -- the valid requests the hostile ones are made from --------------------------------------


def _valid_requests(http: Http, session: Session, admin: Session) -> dict[str, dict[str, Any]]:
    """One valid body per operation, naming a fresh run the fuzzing worker holds, another
    queued run, a schedule, a subscription and a key, so broken requests reach the
    handlers."""
    start = StartRun(workflow=WORKFLOW, version="1", input={"name": "a"})
    held = http.call("start_run", _body(start))["run"]["id"]
    other = http.call("start_run", _body(start))["run"]["id"]
    claimed = session.call("claim_run", _body(ClaimRun(run_id=held, worker_id=WORKER)))
    revision = claimed["run"]["revision"]
    schedule = http.call("activate_schedule", _body(ActivateSchedule(
        workflow=WORKFLOW, version="1", input={"name": "s"},
        spec=ScheduleSpec(every_seconds=86400.0))))["schedule"]["id"]  # fmt: skip
    subscription = admin.call("subscribe", _body(Subscribe(run_ids=(other,))))["subscription"]
    key = http.call("create_key", _body(CreateKey(role="viewer", name="fuzz")))["info"]["prefix"]
    requests: list[Request[Any]] = [
        REGISTRATION,
        DeregisterWorker(worker_id=WORKER),
        start,
        GetRun(run_id=held),
        ListRuns(workflow=WORKFLOW, limit=5),
        WaitRun(run_id=held, statuses=("running",), timeout_seconds=0),
        ClaimRun(run_id=other, worker_id=WORKER),
        RecordTask(run_id=held, revision=revision, address="task:a:0", seq=0, name="a",
                   attempt=1, state="completed", output=1),
        ReportProgress(run_id=held, revision=revision, address="task:b:0", seq=0, task="b",
                       details={"done": 1}),
        RecordHistory(run_id=held, revision=revision, history=HistoryUpdate(
            settled=(Settled(address="task:a:0", seq=0, position=0),))),
        Heartbeat(worker_id=WORKER, run_ids=(held,)),
        BeginWait(run_id=held, revision=revision, kind="event", key="go", seq=0),
        StartChild(parent_id=held, revision=revision, address="child:c", seq=0,
                   workflow=WORKFLOW, version="1", input={"name": "c"}),
        SuspendRun(run_id=held, revision=revision, blocked_on=(("event", "go", 0),)),
        SendEvent(run_id=held, name="go", payload={"n": 1}),
        DescribeRun(run_id=held),
        ListWorkers(),
        ListVersions(workflow=WORKFLOW),
        ListLimits(),
        SetLimit(name="fuzz-limit", per_key=2),
        ClaimNext(worker_id=WORKER, limit=2),
        OfferSlot(worker_id=WORKER, queues=(ServedQueue(workflow=WORKFLOW, version="1"),),
                  wait_seconds=0.01),
        TransitionRun(run_id=held, revision=revision, status="completed", output=2),
        PauseRun(run_id=other),
        ResumeRun(run_id=other),
        WakeupRun(run_id=held),
        CancelRun(run_id=other, reason="fuzz"),
        RequeueRun(run_id=held),
        RetryRun(run_id=other),
        RetryRuns(workflow=WORKFLOW, version="1", limit=5),
        Subscribe(run_ids=(held,)),
        Unsubscribe(subscription=subscription),
        ActivateSchedule(workflow=WORKFLOW, version="1", input={"name": "t"},
                         spec=ScheduleSpec(cron="0 0 1 1 *")),
        GetSchedule(schedule_id=schedule, upcoming=2),
        ListSchedules(workflow=WORKFLOW),
        PauseSchedule(schedule_id=schedule),
        ResumeSchedule(schedule_id=schedule),
        DeactivateSchedule(schedule_id=schedule),
        CreateKey(role="viewer", namespace="default", name="fuzz", expires_in_seconds=3600.0),
        ListKeys(),
        RevokeKey(prefix=key),
        WhoAmI(),
    ]  # fmt: skip
    bodies = {OPERATIONS.of(request).name: _body(request) for request in requests}
    assert set(bodies) == {operation.name for operation in OPERATIONS}, "an operation is missing"
    return bodies


def _body(request: Request[Any]) -> dict[str, Any]:
    return OPERATIONS.of(request).request.unstructure(request)  # type: ignore[no-any-return]


def _bounded_wait(operation: str, body: bytes) -> bytes:
    """A wait_run that would wait is cut to 0.2 s (the suite must not idle; a timeout out
    of bounds is left as it is, to be refused)."""
    if operation != "wait_run":
        return body
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(value, dict):
        return body
    timeout = value.get("timeout_seconds", 30.0)
    if type(timeout) in (int, float) and 0.2 < timeout <= 60:
        value["timeout_seconds"] = 0.2
    return json.dumps(value, allow_nan=True).encode()


# -- the attackers beside the requests -------------------------------------------------------


def _upgrade(host: str, port: int, api_key: str, extra: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET /api/v1/session HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            b"Authorization: Bearer %s\r\n\r\n"
            % (host.encode(), port, key, api_key.encode())) + extra  # fmt: skip


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (no FIN): the peer vanished."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def _raw_attacks(
    host: str, port: int, api_key: str
) -> list[tuple[str, Callable[[socket.socket], bytes]]]:
    """Each attack sends its bytes on a fresh connection (with a key, as a peer that has
    one: past authentication) and returns what came back."""
    upgrade = _upgrade(host, port, api_key)
    bearer = b"Authorization: Bearer %s\r\n" % api_key.encode()

    def opened(sock: socket.socket) -> None:
        sock.sendall(upgrade)
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"upgrade not answered: {response!r}")
            response += chunk

    def pipelined(sock: socket.socket) -> bytes:
        sock.sendall(_upgrade(host, port, api_key, b"X"))
        return read_all(sock)

    def truncated(sock: socket.socket) -> bytes:
        opened(sock)
        sock.sendall(client_frame(0x1, b'{"id":1,', announced=1000))
        _reset(sock)
        return b""

    def binary(sock: socket.socket) -> bytes:
        opened(sock)
        sock.sendall(client_frame(0x2, b"\x00\x01\x02"))
        return read_all(sock)

    def bad_utf8(sock: socket.socket) -> bytes:
        opened(sock)
        sock.sendall(client_frame(0x1, b'{"id":1,"op":"\xff\xfe"}'))
        return read_all(sock)

    def announced_64_mib(sock: socket.socket) -> bytes:
        opened(sock)
        sock.sendall(client_frame(0x1, b"x" * 1000, announced=64 * 2**20))
        return read_all(sock)

    def reset_mid_request(sock: socket.socket) -> bytes:
        sock.sendall(b"POST /api/v1/get_run HTTP/1.1\r\nHost: %s:%d\r\n%s"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"run"
                     % (host.encode(), port, bearer))  # fmt: skip
        _reset(sock)
        return b""

    def gigabyte_body(sock: socket.socket) -> bytes:
        sock.sendall(b"POST /api/v1/start_run HTTP/1.1\r\nHost: %s:%d\r\n%s"
                     b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{"
                     % (host.encode(), port, bearer))  # fmt: skip
        return read_all(sock)

    def garbage(sock: socket.socket) -> bytes:
        sock.sendall(os.urandom(512) + b"\r\n\r\n")
        return read_all(sock)

    def endless_headers(sock: socket.socket) -> bytes:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: %s:%d\r\n" % (host.encode(), port)
                     + b"X-Pad: " + b"a" * 100_000 + b"\r\n")  # fmt: skip
        return read_all(sock)

    return [("pipelined upgrade", pipelined), ("truncated frame", truncated),
            ("binary frame", binary), ("invalid UTF-8 frame", bad_utf8),
            ("frame announcing 64 MiB", announced_64_mib),
            ("reset mid-request", reset_mid_request), ("gigabyte body", gigabyte_body),
            ("garbage", garbage), ("endless headers", endless_headers)]  # fmt: skip


def _server_error(answer: bytes) -> bool:
    """Whether raw bytes answered are an HTTP 5xx."""
    return re.match(rb"HTTP/1\.[01] 5\d\d", answer) is not None


class Attackers:
    """Raw-socket attacks on a loop, and the connections held open throughout: silent TCP
    connections, idle sessions and sessions that asked for a lot and never read."""

    def __init__(self, cluster: Cluster, tally: Tally) -> None:
        self.cluster = cluster
        self.tally = tally
        self.stop = threading.Event()
        self.held: list[socket.socket] = []
        self.sessions: list[RawSession] = []

    def hold(self) -> None:
        host, port = address(self.cluster)
        for _ in range(IDLE_CONNECTIONS):
            self.held.append(socket.create_connection((host, port), timeout=ANSWER_SECONDS))
            self.tally.request()
        for _ in range(20):
            self.sessions.append(RawSession(self.cluster, role="viewer"))
            self.tally.request()
        for _ in range(3):
            stuck = RawSession(self.cluster, receive_buffer=2048, role="viewer")
            for _ in range(30):
                stuck.send("list_runs", {"limit": 200})
                self.tally.request()
            self.sessions.append(stuck)

    def attack(self) -> None:
        host, port = address(self.cluster)
        attacks = _raw_attacks(host, port, self.cluster.keys["viewer"])
        while not self.stop.is_set():
            for name, attack in attacks:
                self.tally.request()
                try:
                    with socket.create_connection((host, port), timeout=ANSWER_SECONDS) as sock:
                        answer = attack(sock)
                except OSError as exc:
                    self.tally.failure(f"raw {name}: {exc!r}")
                    continue
                if _server_error(answer):
                    self.tally.failure(f"raw {name}: {_quote(answer)}")

    def release(self) -> None:
        for sock in self.held:
            sock.close()
        for session in self.sessions:
            session.close()


class Bystander:
    """A well-behaved client reading one run over its own connection, timing each read."""

    def __init__(self, cluster: Cluster, run_id: str) -> None:
        self.http = Http(cluster)
        self.body = json.dumps({"run_id": run_id}).encode()
        self.took: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def read(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            answer = self.http.post("/api/v1/get_run", self.body)
            self.took.append(time.perf_counter() - started)
            if answer is None or answer[0] != 200:
                self.errors.append(repr(answer)[:300])
            self.stop.wait(0.01)

    def p99_ms(self) -> float:
        took = sorted(self.took)
        return took[min(len(took) - 1, int(len(took) * 0.99))] * 1000


# -- the suite -------------------------------------------------------------------------------


def _actor_restarts(cluster: Cluster) -> float:
    scrape = urllib.request.Request(f"{cluster.url}/metrics", headers=cluster.headers("admin"))
    with urllib.request.urlopen(scrape, timeout=ANSWER_SECONDS) as response:
        text = response.read().decode()
    found = re.findall(r"^aiki_actor_restarts(?:_total)?\{[^}]*\} (\S+)$", text, re.MULTILINE)
    return sum(float(value) for value in found)


def _refused(answer: dict[str, Any] | int | tuple[int, bytes] | None) -> bool:
    """Whether an answer refuses its request (nothing may have been stored)."""
    if isinstance(answer, tuple):
        return answer[0] >= 400
    if isinstance(answer, dict):
        return "error" in answer
    return True  # a close, or no answer


def _may_fail_connection(
    carrier: str, sent: bytes, answer: dict[str, Any] | int | tuple[int, bytes] | None
) -> bool:
    """Whether the answer may be the connection's end rather than a reply: a message over
    the size limit, or a text frame that is not UTF-8 (RFC 6455 fails the connection; the
    server's close frame may be lost in the reset of a peer still sending)."""
    if len(sent) > MAX_BODY_BYTES:
        return answer is None or isinstance(answer, int)
    if carrier == "http" or not isinstance(answer, int) or answer == 1011:
        return False
    try:
        sent.decode()
    except UnicodeDecodeError:
        return True
    return False


def _status(answer: dict[str, Any] | int | tuple[int, bytes] | None) -> int:
    """The HTTP status an answer stands for (a session's close codes: 1011 is 500)."""
    if answer is None:
        return 599
    if isinstance(answer, tuple):
        return answer[0]
    if isinstance(answer, int):
        return 500 if answer in (1006, 1011) else 400
    if "error" not in answer:
        return 200
    error = answer["error"]
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return 599
    return error_from_reply(error["code"], str(error.get("message"))).http_status


KILLERS: tuple[object, ...] = (
    "\x00", "a\x00b", "x\nERROR forged line", "\u202e", "", "x" * 70_000, -5, -1, 0, 2**31,
    2**70, 1e308, -1e308, 1e13, 2.9, float("nan"), float("inf"), True, None, {}, [], DEEP,
    "3000-01-01T00:00:00Z",
)  # fmt: skip
"""The values the sweep puts in every field of every operation's request, one at a time."""


def _sweep_cases(valid: Callable[[], dict[str, Any]]) -> Iterator[bytes]:
    """A valid body (``valid()``, fresh for each case) with each of its fields (nested ones
    too) set to each of `KILLERS`, and with each field dropped."""
    for path in list(_paths(valid()))[1:]:
        for killer in (*KILLERS, _DROP):
            value: Any = json.loads(json.dumps(valid()))
            parent = _get(value, path[:-1])
            if killer is _DROP:
                del parent[path[-1]]
            else:
                parent[path[-1]] = killer
            yield _encode(value, 1000)


_DROP = object()


@attrs.define
class Fuzzer:
    """Sends hostile requests one at a time and judges each answer (see `Tally`)."""

    cluster: Cluster
    tally: Tally
    http: Http
    session: Session
    admin: Session
    database: psycopg.Connection[Any]
    bodies: dict[str, dict[str, Any]] = attrs.Factory(dict)
    age: int = 0

    def valid(self, operation: str) -> dict[str, Any]:
        """A valid body of ``operation``, against runs made afresh every 60 requests."""
        if not self.bodies or self.age >= 60:
            self.session.reopen()
            self.admin.reopen()  # (its subscriptions end with it)
            self.bodies, self.age = _valid_requests(self.http, self.session, self.admin), 0
        self.age += 1
        return self.bodies[operation]

    def operations(self) -> list[str]:
        """Every operation's name."""
        self.valid("get_run")  # (makes the valid bodies)
        return sorted(self.bodies)

    def counts(self) -> tuple[int, ...]:
        row = self.database.execute(COUNTS).fetchone()
        assert row is not None
        return tuple(row)

    def send(self, operation: str, carrier: str, body: bytes, frame: bytes | None = None) -> None:
        """Send ``body`` on ``carrier`` (``frame``: a session frame around it, with ``DEEP``
        where the body goes) and count what comes back."""
        body = _bounded_wait(operation, body)
        before = self.counts()
        answer: dict[str, Any] | int | tuple[int, bytes] | None
        if carrier == "http":
            sent = body
            answer = self.http.post(f"/api/v1/{operation}", body)
        else:
            if frame is None:
                frame = json.dumps({"id": 1, "op": operation, "body": DEEP}).encode()
            sent = frame.replace(json.dumps(DEEP).encode(), body or b"null", 1)
            declared = OPERATIONS.named(operation)
            worker = declared is not None and declared.callers == WORKERS
            answer = (self.session if worker else self.admin).send(sent)
        self.tally.request()
        said = f"{carrier} {operation} {_quote(sent)} -> {answer!r}"
        if _status(answer) >= 500 and not _may_fail_connection(carrier, sent, answer):
            self.tally.failure(said)
        if _refused(answer) and (grown := _grown(before, self.counts())):
            self.tally.half_way.append(f"{said}: {', '.join(grown)}"[:600])
        if operation in ("register_worker", "deregister_worker") and not _refused(answer):
            self.session.reopen()  # registered as `WORKER` again

    def sweep(self) -> None:
        """Every field of every operation set to each of `KILLERS` in turn (alternately
        over HTTP and the session)."""
        for operation in self.operations():
            cases = _sweep_cases(functools.partial(self.valid, operation))
            for index, body in enumerate(cases):
                self.send(operation, ("http", "session")[index % 2], body)

    def explore(self) -> None:
        """Hypothesis's requests: several fields broken at once, whole bodies replaced,
        text cut or made invalid UTF-8, frame envelopes broken."""
        names = self.operations()

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not EXPLORE,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(data=st.data())
        def hostile_request(data: st.DataObject) -> None:
            operation = data.draw(st.sampled_from(names), label="operation")
            body = _break(data, self.valid(operation))
            carrier = data.draw(st.sampled_from(["http", "session", "session frame"]),
                                label="on")  # fmt: skip
            frame = None
            if carrier == "session frame":  # the envelope broken too
                envelope: dict[str, object] = {"id": 1, "op": operation, "body": DEEP}
                key = data.draw(st.sampled_from(["id", "op", "body", "extra"]), label="field")
                envelope[key] = data.draw(HOSTILE, label="envelope")
                frame = json.dumps(envelope, allow_nan=True).encode()
            self.send(operation, carrier, body, frame)

        hostile_request()


def test_the_edge_holds(cluster: Cluster, edge_lines: list[str]) -> None:
    """Hostile requests for every operation on both carriers, raw-socket abuse and idle
    connections, at once: no 5xx, no restart, nothing stored by a refused request, and the
    bystander keeps being answered."""
    pid = cluster.server.pid
    restarts = _actor_restarts(cluster)
    logged_before = cluster.server.log.stat().st_size
    tally = Tally()
    http = Http(cluster)
    session = Session(cluster)  # (registers the version the requests start)
    admin = Session(cluster, role="admin")
    start = _body(StartRun(workflow=WORKFLOW, version="1", input={"name": "bystander"}))
    bystander = Bystander(cluster, http.call("start_run", start)["run"]["id"])
    attackers = Attackers(cluster, tally)
    threads = [threading.Thread(target=bystander.read, daemon=True),
               threading.Thread(target=attackers.attack, daemon=True)]  # fmt: skip
    with psycopg.connect(cluster.database_url, autocommit=True) as database:
        fuzzer = Fuzzer(cluster, tally, http, session, admin, database)
        try:
            attackers.hold()
            for thread in threads:
                thread.start()
            fuzzer.sweep()
            fuzzer.explore()
        finally:
            bystander.stop.set()
            attackers.stop.set()
            for thread in threads:
                thread.join(timeout=60)
            attackers.release()
            session.close()
            admin.close()
            http.close()

    alive = cluster.server.process.poll() is None and cluster.server.pid == pid
    server_restarts = (0 if alive else 1) + int(_actor_restarts(cluster) - restarts)
    line = (f"edge: requests {tally.requests}, 5xx {len(tally.failures)}, "
            f"server restarts {server_restarts}, stored half-way {len(tally.half_way)}, "
            f"bystander p99 {bystander.p99_ms():.0f} ms")  # fmt: skip
    edge_lines.append(line)
    print(line)
    assert tally.failures == [], "\n".join(tally.failures[:5])
    assert server_restarts == 0, cluster.server.log_tail()
    assert tally.half_way == [], "\n".join(tally.half_way[:5])
    with cluster.server.log.open(errors="replace") as log:  # no unexpected error, no trace
        log.seek(logged_before)
        assert [line for line in log if " ERROR " in line] == []
    assert bystander.errors == [], bystander.errors[:5]
    assert len(bystander.took) > 100
