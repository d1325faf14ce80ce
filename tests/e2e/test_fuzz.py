"""Property-based fuzzing of the running gateway: whatever a client sends, it gets an answer.

A real fleet of `resofleet` processes (`up` over the in-process bus, or `agent` plus
`gateway` over RabbitMQ) serves one emulated server. One connection, with a viewer token,
sends frames that hypothesis draws: random text, random JSON, deep nesting, huge numbers,
long strings, binary frames, and requests of every type with wrong, missing, extreme or
plausible values in every field. The property: every frame is answered with one JSON
message of a known type (an `error` with a documented code, never `internal`; a bulk
request, one per matched server and then `bulk_done`), or, for a
frame over the 64 KiB limit, closed with 1009; the connection otherwise stays open. A
second, healthy client pings all along and keeps its latency, and the gateway logs no
traceback.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from resofleet.contracts import ErrorCode
from resofleet.gateway.tokens import new_secret
from tests.support.timing import AT_ONCE

from .test_commands import START_TIMEOUT, clean_env, resofleet

#: Frames hypothesis sends to each fleet.
EXAMPLES = 300
#: Seconds the fuzzing client waits for the answer to one frame: a console command's
#: deadline (10 s) plus the gateway's margin.
ANSWER_TIMEOUT = 15.0
#: Seconds between the healthy client's pings.
PING_INTERVAL = 0.02
#: The largest frame the gateway reads (64 KiB); bigger ones are closed with 1009.
MAX_FRAME = 64 * 1024
SERVER = "fz-1"
LISTENING = re.compile(r"^resofleet: gateway listening on (ws://\S+/ws)")

#: Every message type a client may send except `subscribe`: the fuzzing connection
#: subscribes to no server, so that every frame it receives is an answer.
TYPES = ["command", "get_status", "get_worlds", "get_servers", "get_output", "container", "ping", "auth"]
#: What a gateway may send; anything else is a bug.
REPLY_TYPES = {
    "error", "pong", "command_response", "bans_update", "status_update", "worlds_update",
    "servers_update", "output_history", "subscribed", "container_response", "authenticated",
    "bulk_done",
}
CODES = {code.value for code in ErrorCode}

scalars = (
    st.none() | st.booleans() | st.floats() | st.text(max_size=40)
    | st.integers() | st.integers(min_value=2**53 - 2, max_value=2**80)
    | st.integers(min_value=-(2**80), max_value=-(2**53) + 2)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
plausible = {
    "command": st.sampled_from(["worlds", "users", "status", "version", "listbans", "focus 0",
                                "kick Mira", "shutdown", "", " ", "users\nshutdown", "x" * 5000]),
    "server": st.sampled_from([SERVER, "nope", "Bad Id", "*", "", "fz-1\n"]),
    "world": st.sampled_from([0, 1, 99, -1, 2**70, "Harbor Lounge", "No Such World", ""]),
    "id": st.sampled_from([0, -1, 2**63, 2**70, "x", "", "x" * 200, 1.5]),
    "since": st.sampled_from([0, 1, -1, 2**63, 2**70, 1.5]),
    "epoch": st.sampled_from(["", "0" * 12, "x" * 1000]),
    "limit": st.sampled_from([0, 1, 100_000, 100_001, 2**70]),
    "action": st.sampled_from(["start", "stop", "restart", "explode", ""]),
    "token": st.sampled_from(["", "x", "a.b.c", "x" * 10_000]),
    "servers": st.sampled_from(["*", [], [SERVER], ["Bad Id"], [SERVER] * 2000]),
    "batch": st.sampled_from([True, False, 1, "yes"]),
}
requests = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={name: strategy | values for name, strategy in plausible.items()},
)
long_text = st.integers(min_value=60_000, max_value=70_000).map(lambda n: json.dumps({"type": "command", "command": "y" * n}))
deep = st.integers(min_value=1, max_value=20_000).flatmap(
    lambda depth: st.sampled_from(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth])
)
frames = st.one_of(
    requests.map(json.dumps),
    values.map(lambda v: json.dumps(v, allow_nan=True)),
    st.text(max_size=200),
    deep,
    long_text,
    st.binary(max_size=64),
)


@dataclass
class Fleet:
    url: str
    viewer: str
    admin: str
    gateway_log: Path
    rtts: list[float] = field(default_factory=list)
    unanswered: int = 0


def _issue(env: dict[str, str], cwd: Path, role: str) -> str:
    done = subprocess.run(
        [*resofleet(), "token", "issue", "--role", role, "--ttl", "1h"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=START_TIMEOUT, check=True,
    )
    return done.stdout.strip()


def _listening(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if match := LISTENING.match(line.strip()):
            return match.group(1)
    raise AssertionError(f"the gateway did not say where it listens (exit {process.poll()})")


def _ping_loop(fleet: Fleet, stop: threading.Event) -> None:
    """The healthy client: a ping every PING_INTERVAL, its round trips recorded."""
    with connect(fleet.url, additional_headers={"Authorization": f"Bearer {fleet.admin}"}) as ws:
        ws.send(json.dumps({"type": "subscribe", "servers": []}))
        ws.recv(timeout=ANSWER_TIMEOUT)
        n = 0
        while not stop.wait(PING_INTERVAL):
            n += 1
            started = time.perf_counter()
            ws.send(json.dumps({"type": "ping", "id": n}))
            try:
                while json.loads(ws.recv(timeout=ANSWER_TIMEOUT)).get("id") != n:
                    pass
            except TimeoutError:
                fleet.unanswered += 1
                continue
            fleet.rtts.append(time.perf_counter() - started)


@pytest.fixture(scope="module", params=["local", "amqp"])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A fleet of `resofleet` processes with one emulated server, and a healthy client."""
    if request.param == "amqp":
        amqp_url = request.getfixturevalue("amqp_url")
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    secret = new_secret()
    config = tmp / "fleet.toml"
    bus = ""
    if request.param == "amqp":
        bus = f'[bus]\nurl = "{amqp_url}"\nprefix = "fuzz-{uuid.uuid4().hex[:8]}."\n'
    config.write_text(
        bus
        + "[gateway.limits]\ncommand_rate = 100000.0\ncommand_burst = 100000\n"
        + '[agent]\nname = "fuzz-host"\n'
        + f'[[servers]]\nid = "{SERVER}"\nruntime = "emulator"\n'
    )
    env = clean_env(
        RESOFLEET_SECRET=secret, RESOFLEET_CONFIG=str(config), RESOFLEET_AUDIT_DIR=str(tmp / "audit"),
    )
    gateway_log = tmp / "gateway.log"
    processes: list[subprocess.Popen[str]] = []
    with contextlib.ExitStack() as stack:
        def spawn(*args: str, log: Path) -> subprocess.Popen[str]:
            out = stack.enter_context(open(log, "w"))
            process = subprocess.Popen(
                [*resofleet(), *args], cwd=tmp, env=env, text=True,
                stdout=subprocess.PIPE, stderr=out,
            )
            processes.append(process)
            return process

        try:
            if request.param == "amqp":
                agent = spawn("agent", log=tmp / "agent.log")
                assert agent.stdout is not None and "serving" in agent.stdout.readline()
                gateway = spawn("gateway", "--port", "0", log=gateway_log)
            else:
                gateway = spawn("up", "--port", "0", log=gateway_log)
            url = _listening(gateway)
            fleet = Fleet(url, _issue(env, tmp, "viewer"), _issue(env, tmp, "admin"), gateway_log)
            _wait_online(fleet)
            stop = threading.Event()
            pinger = threading.Thread(target=_ping_loop, args=(fleet, stop), daemon=True)
            pinger.start()
            yield fleet
            stop.set()
            pinger.join(ANSWER_TIMEOUT)
        finally:
            for process in reversed(processes):
                process.terminate()
                try:
                    process.wait(START_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_online(fleet: Fleet) -> None:
    with connect(fleet.url, additional_headers={"Authorization": f"Bearer {fleet.admin}"}) as ws:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            ws.send(json.dumps({"type": "get_status", "server": SERVER}))
            reply = json.loads(ws.recv(timeout=ANSWER_TIMEOUT))
            if reply["type"] == "status_update":
                return
            time.sleep(0.1)  # the agent's console is still starting: ask again
        raise AssertionError(f"{SERVER} never came online")


class Fuzzer:
    """The fuzzing connection, opened again after a documented close."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.ws: ClientConnection | None = None
        self._open = contextlib.ExitStack()

    def connection(self) -> ClientConnection:
        if self.ws is None:
            self.ws = self._open.enter_context(connect(
                self.fleet.url, additional_headers={"Authorization": f"Bearer {self.fleet.viewer}"},
                max_size=None,
            ))
            self.ws.send(json.dumps({"type": "subscribe", "servers": []}))
            assert json.loads(self.ws.recv(timeout=ANSWER_TIMEOUT))["type"] == "subscribed"
        return self.ws

    def answer(self, frame: str | bytes) -> list[dict] | int:
        """The answers to ``frame`` (one; a bulk request's up to the one that ends it), or
        the close code if the gateway closed."""
        ws = self.connection()
        try:
            ws.send(frame)
            answers = [json.loads(ws.recv(timeout=ANSWER_TIMEOUT))]
            while _bulk(frame) and not _ends_bulk(answers[-1]):
                answers.append(json.loads(ws.recv(timeout=ANSWER_TIMEOUT)))
            return answers
        except ConnectionClosed as exc:
            self.ws = None
            return exc.rcvd.code if exc.rcvd is not None else -1

    def close(self) -> None:
        self._open.close()


def _bulk(frame: str | bytes) -> bool:
    """Whether ``frame`` asks for a bulk request (``servers`` on a command or container)."""
    try:
        message = json.loads(frame)
    except (ValueError, TypeError, RecursionError):
        return False
    return (isinstance(message, dict) and message.get("type") in ("command", "container")
            and isinstance(message.get("servers"), list))


def _ends_bulk(answer: dict) -> bool:
    """The last answer to a bulk request: `bulk_done`, or an error refusing it whole (one
    that names no server)."""
    return answer.get("type") == "bulk_done" or (answer.get("type") == "error" and "server" not in answer)


@pytest.fixture(scope="module")
def fuzzer(fleet: Fleet) -> Iterator[Fuzzer]:
    fuzzer = Fuzzer(fleet)
    yield fuzzer
    fuzzer.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(frame=frames)
# frames that once went wrong, always tried: integers past 64 bits reached the bus
@example(frame=json.dumps({"type": "get_output", "since": 2**70, "id": 1}))
@example(frame=json.dumps({"type": "ping", "id": 2**70}))
@example(frame=json.dumps({"type": "command", "command": "users", "world": 2**70, "id": 2}))
@example(frame=json.dumps({"type": "get_status", "id": -(2**70)}))
@example(frame="[" * 100_000)
@example(frame=json.dumps({"type": "command", "command": "users", "servers": [SERVER, "*"], "id": 3}))
def test_every_frame_gets_a_documented_answer(fuzzer: Fuzzer, frame: str | bytes) -> None:
    """One JSON message of a known type per frame, an error with a documented code and
    never `internal`; a frame over 64 KiB is closed with 1009 and nothing else is."""
    answers = fuzzer.answer(frame)
    size = len(frame.encode() if isinstance(frame, str) else frame)
    if isinstance(answers, int):
        assert answers == 1009 and size > MAX_FRAME, f"closed with {answers} after {frame[:200]!r}"
        return
    assert size <= MAX_FRAME
    for answer in answers:
        assert answer.get("type") in REPLY_TYPES, answer
        if answer["type"] == "error":
            assert answer["code"] in CODES and answer["code"] != "internal", (frame[:200], answer)
            assert isinstance(answer["message"], str) and answer["message"]


def test_a_healthy_client_kept_its_latency_and_nothing_was_logged_as_a_failure(fleet: Fleet) -> None:
    """While the fuzzing ran, every ping of the client beside it was answered at once, and
    the gateway logged no error or traceback."""
    assert fleet.rtts, "the healthy client never got a pong"
    assert fleet.unanswered == 0
    assert max(fleet.rtts) < AT_ONCE, f"slowest pong {max(fleet.rtts) * 1000:.0f} ms"
    logged = fleet.gateway_log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in logged and " ERROR " not in logged, logged[-3000:]
