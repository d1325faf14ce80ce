"""The docker runtime against a real Docker engine, with the real console driver on top.

Skipped, with the reason, when no engine answers ``docker info`` (start one with
``sudo bash deploy/dev/docker-engine.sh``). The emulator image is built once per session
from deploy/emulator.Dockerfile on ``RESOFLEET_DOCKER_BASE_IMAGE`` (no registry needed);
each test gets its own uniquely named container, force-removed afterwards. Every wait
has a deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resofleet.agent.console import ConsoleDriver
from resofleet.agent.errors import RuntimeActionFailed
from resofleet.agent.runtime import docker as docker_module
from resofleet.agent.runtime import dockerevents
from resofleet.agent.runtime.docker import DockerRuntime

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[3]
BASE_ENV = "RESOFLEET_DOCKER_BASE_IMAGE"
DOCKER_INFO_TIMEOUT_S = 20.0
BUILD_TIMEOUT_S = 300.0
WAIT_S = 15.0
"""Any single wait: a start is ~0.2 s on overlay2, several seconds on vfs; stats ~1 s."""
HARBOR = "[0] Harbor Lounge"
NIGHT = "[1] Night Market"
MEMORY_LIMIT = 128 * 1024 * 1024


# -- engine, image, containers -------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    """Skip the module, saying why, unless `docker info` answers; then an SDK client."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client on PATH")
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                                capture_output=True, text=True, timeout=DOCKER_INFO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"`docker info` did not answer within {DOCKER_INFO_TIMEOUT_S:.0f} s")
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.skip(f"no Docker engine: `docker info` failed ({last}); "
                    "start one with `sudo bash deploy/dev/docker-engine.sh`")
    docker = pytest.importorskip("docker")
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="module")
def image(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """deploy/emulator.Dockerfile built (legacy builder, offline) from a context of emulator/."""
    context = tmp_path_factory.mktemp("emulator-image")
    shutil.copytree(REPO / "emulator", context / "emulator",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO / "deploy" / "emulator.Dockerfile", context / "Dockerfile")
    tag = f"resofleet-emulator:test-agent-{uuid.uuid4().hex[:8]}"
    command = ["docker", "build", "-q", "-t", tag, str(context)]
    base = os.environ.get(BASE_ENV)
    if base:
        command[2:2] = ["--build-arg", f"BASE_IMAGE={base}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                            env={**os.environ, "DOCKER_BUILDKIT": "0"})
    if result.returncode != 0:
        if not base:
            pytest.skip(f"building on the default public base failed; set {BASE_ENV} to a "
                        "local base image (deploy/dev/docker-engine.sh makes one)")
        pytest.fail(f"docker build failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)


Make = Callable[..., Any]


@pytest.fixture
def make_container(docker_client: Any, image: str) -> Iterator[Make]:
    """Create (not start) uniquely named emulator containers; force-removed at teardown."""
    made: list[Any] = []

    def make(*, tty: bool = True, args: tuple[str, ...] = ("--seed", "1"), **options: Any) -> Any:
        # detach=True: no StdinOnce, as compose's `stdin_open: true` and `docker run -d -i`
        # (the SDK sets StdinOnce otherwise, and then a detach closes a non-TTY stdin)
        container = docker_client.containers.create(
            image, list(args), name=f"resofleet-test-{uuid.uuid4().hex[:10]}",
            tty=tty, stdin_open=True, detach=True, network_mode="none", init=True, **options,
        )
        made.append(container)
        return container

    yield make
    for container in made:
        try:
            container.remove(force=True)
        except Exception:  # already gone
            pass


# -- a listener like agent.server.ManagedServer ----------------------------------------------


class Harness:
    """Forwards output to a fresh ConsoleDriver per run and records the lifecycle."""

    def __init__(self) -> None:
        self.runtime: DockerRuntime | None = None
        self.driver: ConsoleDriver | None = None
        self.lines: list[str] = []
        self.exits: list[str] = []
        self.states: list[str] = []
        self.starts = 0
        self.ready = asyncio.Event()
        self.exited_event = asyncio.Event()
        self.started_event = asyncio.Event()  # set at every start
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, name: str, **kwargs: Any) -> DockerRuntime:
        self.runtime = DockerRuntime("dock", self, container=name, **kwargs)
        return self.runtime

    def output(self, data: bytes) -> None:
        if self.driver is not None:
            self.driver.feed(data)

    def started(self) -> None:
        assert self.runtime is not None
        self.starts += 1
        self.ready.clear()
        self.exited_event.clear()
        self.driver = ConsoleDriver(self.runtime.write, on_line=self.lines.append, name="dock")
        self.started_event.set()
        task = asyncio.ensure_future(self._sync(self.driver))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sync(self, driver: ConsoleDriver) -> None:
        await driver.start(timeout=WAIT_S)
        if driver is self.driver:
            self.ready.set()

    def exited(self, reason: str) -> None:
        self.exits.append(reason)
        self.ready.clear()
        if self.driver is not None:
            self.driver.feed_eof(reason)
        self.exited_event.set()

    def state(self, state: str) -> None:
        self.states.append(state)

    async def console(self) -> ConsoleDriver:
        """The driver, once synchronised with the console."""
        async with asyncio.timeout(WAIT_S):
            await self.ready.wait()
        assert self.driver is not None
        return self.driver

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.runtime is not None:
            await self.runtime.close()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


async def _worlds(driver: ConsoleDriver) -> list[str]:
    reply = await driver.run("worlds", timeout=WAIT_S)
    assert "\r" not in reply.text
    return list(reply.lines)


def _assert_two_worlds(lines: list[str]) -> None:
    assert len(lines) == 2, lines
    assert lines[0].startswith(HARBOR) and lines[1].startswith(NIGHT), lines
    assert "worlds" not in lines  # no TTY echo


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tty", [True, False], ids=["tty", "multiplexed"])
async def test_command_round_trip(make_container: Make, harness: Harness, tty: bool) -> None:
    container = make_container(tty=tty)
    runtime = harness.attach(container.name)
    await runtime.start()
    assert runtime.status == "running" and runtime.tty is tty
    driver = await harness.console()
    _assert_two_worlds(await _worlds(driver))
    assert (await driver.run("status", timeout=WAIT_S)).lines[0] == "Name: Night Market"
    assert harness.starts == 1 and harness.exits == []
    assert not any("\r" in line for line in harness.lines)


async def test_stats_of_a_running_container(make_container: Make, harness: Harness) -> None:
    # a limit, so the percentage is not 0.0 after rounding (10 MB of a 24 GB host)
    container = make_container(args=("--scenario", "busy"), mem_limit=MEMORY_LIMIT)
    runtime = harness.attach(container.name)
    await runtime.start()
    await harness.console()
    async with asyncio.timeout(WAIT_S):
        status = await runtime.stats()
    assert status.status == "running"
    assert status.name == container.name and container.id.startswith(status.id) and len(status.id) == 12
    assert status.cpu_usage >= 0
    assert 0 < status.memory_percent < 100
    assert status.memory_used_bytes > 0 and status.memory_total_bytes == MEMORY_LIMIT
    assert status.memory_percent == round(100 * status.memory_used_bytes / MEMORY_LIMIT, 1)
    assert status.memory_used.endswith("MB") and status.memory_total == "128.0MB"
    assert status.uptime.endswith(("second", "seconds"))
    assert status.restarts == 0


async def test_killing_the_container_is_reported(
    make_container: Make, harness: Harness, docker_client: Any
) -> None:
    container = make_container()
    runtime = harness.attach(container.name)
    await runtime.start()
    await harness.console()
    await asyncio.to_thread(docker_client.containers.get(container.name).kill)
    async with asyncio.timeout(WAIT_S):
        await harness.exited_event.wait()
    assert harness.exits == ["exited with code 137"]
    assert runtime.status == "exited"
    assert harness.driver is not None and harness.driver.closed
    with pytest.raises(ConnectionError):
        await runtime.write(b"worlds\n")
    async with asyncio.timeout(WAIT_S):
        status = await runtime.stats()  # an exited container: zeros, no memory_stats
    assert (status.status, status.cpu_usage, status.memory_used_bytes, status.uptime) == ("exited", 0.0, 0, "")


@pytest.mark.parametrize("tty", [True, False], ids=["tty", "multiplexed"])
async def test_restart_brings_the_console_back(make_container: Make, harness: Harness, tty: bool) -> None:
    container = make_container(tty=tty)
    runtime = harness.attach(container.name)
    await runtime.start()
    first = await harness.console()
    _assert_two_worlds(await _worlds(first))
    async with asyncio.timeout(WAIT_S):
        await runtime.restart()
    assert harness.exits == ["exited with code 143"]  # SIGTERM through tini
    assert first.closed
    second = await harness.console()
    assert second is not first
    _assert_two_worlds(await _worlds(second))
    assert (await runtime.stats()).restarts == 1
    # by now (a stats sample takes ~1 s) the start event of our own restart has been
    # handled: it must not have announced a third run
    assert runtime.status == "running" and harness.starts == 2 and harness.driver is second


async def test_a_blocked_write_drops_the_connection_and_attaches_again(
    make_container: Make, harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A console write that blocks past the write timeout fails, and its connection is
    dropped, so no later write can interleave with the send still under way; the runtime
    attaches again and the console answers on the new connection."""
    container = make_container()
    runtime = harness.attach(container.name)
    await runtime.start()
    first = await harness.console()
    harness.started_event.clear()
    monkeypatch.setattr(docker_module, "WRITE_TIMEOUT", 0)  # every write "blocks"
    with pytest.raises(ConnectionError, match="blocked"):
        await runtime.write(b"worlds\n")
    monkeypatch.undo()
    async with asyncio.timeout(WAIT_S):
        await harness.started_event.wait()
    second = await harness.console()
    assert second is not first and first.closed
    _assert_two_worlds(await _worlds(second))
    assert runtime.status == "running"


@pytest.mark.parametrize("tty", [True, False], ids=["tty", "multiplexed"])
async def test_attach_to_a_running_container_then_detach(
    make_container: Make, harness: Harness, docker_client: Any, tty: bool
) -> None:
    container = make_container(tty=tty)
    await asyncio.to_thread(container.start)
    # let the console reach its prompt with nobody attached (docker logs keeps full lines)
    async with asyncio.timeout(WAIT_S):
        while (await asyncio.to_thread(container.logs)).count(b"World running...") < 2:
            await asyncio.sleep(0.05)
    runtime = harness.attach(container.name)
    await runtime.start()
    _assert_two_worlds(await _worlds(await harness.console()))
    await runtime.start()  # already attached: nothing happens
    assert harness.starts == 1

    await runtime.close()  # detaching leaves the container, and its stdin, alive
    assert not [t.name for t in threading.enumerate() if t.name.startswith("docker-")]
    await asyncio.to_thread(container.reload)
    assert container.status == "running" and container.attrs["Config"]["StdinOnce"] is False
    again = Harness()
    try:
        await again.attach(container.name).start()
        _assert_two_worlds(await _worlds(await again.console()))
    finally:
        await again.close()


async def test_someone_elses_restart_is_followed(
    make_container: Make, harness: Harness, docker_client: Any
) -> None:
    """`docker restart` from outside: die is reported, the new run attached and announced."""
    container = make_container()
    runtime = harness.attach(container.name)
    await runtime.start()
    await harness.console()
    await asyncio.to_thread(docker_client.containers.get(container.name).restart, timeout=5)
    async with asyncio.timeout(WAIT_S):
        while harness.starts < 2:
            harness.started_event.clear()
            await harness.started_event.wait()
    assert harness.exits == ["exited with code 143"]
    _assert_two_worlds(await _worlds(await harness.console()))
    assert runtime.status == "running"


async def test_stop_and_start(make_container: Make, harness: Harness) -> None:
    container = make_container(tty=False)
    runtime = harness.attach(container.name)
    await runtime.start()
    await harness.console()
    async with asyncio.timeout(WAIT_S):
        await runtime.stop()
    assert runtime.status == "exited" and harness.exits == ["exited with code 143"]
    await runtime.start()
    _assert_two_worlds(await _worlds(await harness.console()))
    assert harness.starts == 2 and harness.exits == ["exited with code 143"]


async def test_unknown_container_is_a_clear_error(docker_client: Any, harness: Harness) -> None:
    runtime = harness.attach("resofleet-test-no-such-container")
    with pytest.raises(RuntimeActionFailed, match="no container named 'resofleet-test-no-such-container'"):
        await runtime.start()
    with pytest.raises(RuntimeActionFailed, match="no container named"):
        await runtime.stats()


class EngineProxy:
    """A unix socket in front of the real engine that passes everything through, except
    that while ``hold_events`` it takes ``GET .../events`` requests and never answers them
    (an engine that accepts the connection and hangs). ``release()`` stops holding and
    drops the held connections, as an engine coming back would."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rf-engine-")  # a unix socket path stays short
        self.path = os.path.join(self.dir, "engine.sock")
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        assert host.startswith("unix://"), f"the proxy needs a unix socket engine, not {host}"
        self.target = host.removeprefix("unix://")
        self.hold_events = True
        self.held: list[asyncio.StreamWriter] = []
        self.events: list[asyncio.StreamWriter] = []  # connections that carried /events
        self.subscribed = asyncio.Event()  # set at every /events request passed through
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> EngineProxy:
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        shutil.rmtree(self.dir, ignore_errors=True)

    def drop_events(self) -> None:
        """Break every events stream passed through so far (as an engine restart would)."""
        for writer in self.events:
            writer.transport.abort()
        self.events.clear()
        self.subscribed.clear()

    def release(self) -> None:
        self.hold_events = False
        for writer in self.held:
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        self._writers.append(up_writer)

        async def down() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        task = asyncio.ensure_future(down())
        try:
            while data := await reader.read(65536):
                request_line = data.split(b"\r\n", 1)[0]
                if self.hold_events and request_line.startswith(b"GET ") and b"/events" in request_line:
                    self.held.append(writer)
                    task.cancel()  # before the upstream end, which would close ours
                    up_writer.transport.abort()
                    while await reader.read(65536):  # taken, never answered: the client
                        pass  # waits until release() drops it
                    return
                if request_line.startswith(b"GET ") and b"/events" in request_line:
                    self.events.append(writer)
                    self.subscribed.set()
                up_writer.write(data)
                await up_writer.drain()
        except ConnectionError:
            pass
        finally:
            if writer not in self.held:
                task.cancel()
                up_writer.transport.abort()
                writer.transport.abort()


async def test_an_engine_that_never_answers_the_events_subscription(
    make_container: Make, harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK subscribes to events without a timeout. An engine that takes the request and
    never answers fails a start within the subscription timeout, with a clear error, having
    started nothing and holding no lock (a second start fails the same way, and no second
    subscription is made); once the engine answers, the same runtime starts the headless."""
    monkeypatch.setattr(dockerevents, "SUBSCRIBE_TIMEOUT", 1.0)
    container = make_container()
    async with EngineProxy() as proxy:
        runtime = harness.attach(container.name, docker_url=f"unix://{proxy.path}")
        for _ in range(2):
            async with asyncio.timeout(WAIT_S):
                with pytest.raises(RuntimeActionFailed, match="did not answer the events subscription"):
                    await runtime.start()
        assert len(proxy.held) == 1  # one subscription, left waiting by the one events thread
        await asyncio.to_thread(container.reload)
        assert container.status == "created" and harness.starts == 0

        proxy.release()  # the engine answers again: the events thread subscribes anew
        monkeypatch.setattr(dockerevents, "SUBSCRIBE_TIMEOUT", WAIT_S)  # after EVENTS_RETRY
        async with asyncio.timeout(WAIT_S):
            await runtime.start()
        _assert_two_worlds(await _worlds(await harness.console()))
        assert harness.starts == 1 and runtime.status == "running"
        await runtime.close()


async def test_what_happened_while_the_events_stream_was_down_is_caught_up(
    make_container: Make, harness: Harness, docker_client: Any
) -> None:
    """The events stream breaks (an engine restart) and its new subscription is held up
    while the container is paused from outside: the pause event reaches no one, and once
    the stream is back the runtime looks at the container and reports it paused."""
    container = make_container()
    async with EngineProxy() as proxy:
        proxy.hold_events = False
        runtime = harness.attach(container.name, docker_url=f"unix://{proxy.path}")
        await runtime.start()
        await harness.console()
        assert proxy.subscribed.is_set()
        proxy.hold_events = True
        proxy.drop_events()
        async with asyncio.timeout(WAIT_S):  # the events thread tries again, and is held
            while not proxy.held:
                await asyncio.sleep(0.05)
        engine_side = await asyncio.to_thread(docker_client.containers.get, container.name)
        await asyncio.to_thread(engine_side.pause)
        try:
            assert runtime.status == "running"  # nobody told it
            proxy.release()
            async with asyncio.timeout(WAIT_S):
                while runtime.status != "paused":
                    await asyncio.sleep(0.05)
            assert harness.states[-1] == "paused" and harness.exits == []
        finally:
            await asyncio.to_thread(engine_side.unpause)
        async with asyncio.timeout(WAIT_S):  # and the live stream reports the unpause
            while runtime.status != "running":
                await asyncio.sleep(0.05)
        await runtime.close()


class _Forward:
    """A ManagedServer's listener methods, output going to its driver as its own ``output``
    does. Used only while ``ManagedServer.__init__`` assigns ``self.output = OutputLog(...)``,
    which hides that method, so the runtime's ``listener.output(bytes)`` calls the log."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def output(self, data: bytes) -> None:
        if self.server.driver is not None:
            self.server.driver.feed(data)

    def started(self) -> None:
        self.server.started()

    def exited(self, reason: str) -> None:
        self.server.exited(reason)

    def state(self, state: str) -> None:
        self.server.state(state)


async def test_through_the_agent(make_container: Make) -> None:
    """ManagedServer on a LocalBus: a RunCommand and a StatusRequest answered from Docker."""
    import inspect

    from resofleet.agent.server import ManagedServer, make_runtime
    from resofleet.bus import LocalBus
    from resofleet.contracts import BusRequest, CommandResponse, RunCommand, StatusRequest, StatusUpdate
    from resofleet.agent.settings import AgentSettings, ServerConfig

    def runtime_factory(config: ServerConfig, server: Any) -> Any:
        listener = server if inspect.ismethod(server.output) else _Forward(server)
        runtime = make_runtime(config, listener)
        assert isinstance(runtime, DockerRuntime)
        return runtime

    container = make_container()
    bus = LocalBus()
    await bus.start()
    server = ManagedServer(ServerConfig(id="dock", runtime="docker", container=container.name),
                           bus, AgentSettings(name="test"), runtime_factory=runtime_factory)
    try:
        await server.start()
        await bus.serve("dock", server.handle)
        reply = await bus.request(BusRequest(server="dock", body=RunCommand(command="worlds"), timeout=WAIT_S))
        assert isinstance(reply.body, CommandResponse), reply.body
        _assert_two_worlds(reply.body.output.split("\n"))
        reply = await bus.request(BusRequest(server="dock", body=StatusRequest(), timeout=WAIT_S))
        assert isinstance(reply.body, StatusUpdate), reply.body
        assert reply.body.status.status == "running" and reply.body.status.name == container.name
        assert server.presence().runtime == "docker"
    finally:
        await server.close()
        await bus.close()
