"""One managed headless: its runtime, console driver, output log and pollers.

:class:`ManagedServer` answers the bus requests for its server id (:meth:`handle`) and
publishes its events: output lines as they come, status/worlds/bans when a poll finds
them changed, lifecycle states as they happen. A request that arrives while the console is
starting waits for it within the request's own deadline; one whose deadline passed before
the console got to it is never run.

A command with ``world`` runs as one atomic group: ``worlds`` (not streamed), then, only
if the world is among those the console just listed, ``focus`` and the command, then the
user's focus put back. A world the console does not have (a name it does not list, an
index past its last world; digits are an index, as the console reads them) is answered
``unknown_world`` and nothing else is sent, so no other world's settings change. Should
``focus`` itself answer that the world is not there, the command is not sent either.

Errors raised here, each answered through :func:`resofleet.bus.reply_for`::

    ContractError (contracts)   a command or world name with a control character  bad_request
                                a world the console does not have                unknown_world
    AgentError                  the console closed, timed out, not ready...      (agent/errors.py)

Replies to commands and container actions state their
:class:`~resofleet.contracts.CommandOutcome`: ``executed`` with the answer; for an error,
``not_executed`` when it came before the command's line was handed to the console (or the
action to the runtime), ``unknown`` after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import msgspec

from resofleet.bus import Bus, BusError, reply_for
from resofleet.contracts import (
    Ban,
    BansUpdate,
    BusEvent,
    BusReply,
    BusRequest,
    CommandOutcome,
    CommandResponse,
    ContainerOutputBatch,
    ContainerRequest,
    ContainerResponse,
    ContractError,
    ErrorCode,
    OutputRequest,
    RunCommand,
    ServerPresence,
    ServerState,
    Status,
    StatusRequest,
    StatusUpdate,
    World,
    WorldsRequest,
    WorldsUpdate,
    check_command_text,
    check_world_text,
    command_name,
)
from .settings import AgentSettings, ServerConfig

from .console import COMMAND_DEADLINE, ConsoleDriver, deadline_for
from .consolehealth import UNHEALTHY, ConsoleHealth
from .errors import AgentError, ConsoleBusy, ConsoleClosed, ConsoleNotReady, ConsoleSilent, ConsoleTimeout
from .metrics import AgentMetrics, ServerMetrics
from .output import OutputLog
from .parsers import build_world, parse_bans, parse_status, parse_users, parse_worlds
from .runtime import ProcessRuntime, Runtime, emulator_command

__all__ = ["ManagedServer", "check_world", "make_runtime"]

log = logging.getLogger(__name__)

#: Commands after which worlds and bans are polled at once instead of at the next interval.
_CHANGES_WORLDS: Final = frozenset(
    {"kick", "ban", "unban", "banbyname", "unbanbyname", "banbyid", "unbanbyid", "silence",
     "unsilence", "role", "name", "accesslevel", "hidefromlisting", "description", "maxusers",
     "startworldurl", "startworldtemplate", "close", "restart", "focus"}
)
_CHANGES_BANS: Final = frozenset({"ban", "unban", "banbyname", "unbanbyname", "banbyid", "unbanbyid"})
#: Seconds a poll waits for the console to be free before skipping this round.
POLL_WAIT: Final = 5.0
#: The health probe (:mod:`resofleet.agent.consolehealth`): read-only, one short line of
#: answer on every build, and nothing on the console's state depends on it.
HEALTH_PROBE: Final = "version"
#: What the console answers ``focus`` with when the world is not there (CONSOLE.md).
_NO_SUCH_WORLD: Final = frozenset({"World index out of range", "World with this name does not exist"})
#: A ``world`` text the console reads as an index (it tries a number first, then a name).
_INDEX_TEXT: Final = re.compile(r"\s*[+-]?[0-9]+\s*")


def check_world(server: str, world: str | int, names: Sequence[str]) -> None:
    """Raise ``unknown_world`` unless ``world`` (a name, an index, or digits, which the
    console reads as an index) is one of ``names``, the worlds the console just listed."""
    if isinstance(world, str) and _INDEX_TEXT.fullmatch(world):
        world = int(world)
    if isinstance(world, int):
        if 0 <= world < len(names):
            return
        count = len(names)
        where = f"at index {world} (it has {count} world{'' if count == 1 else 's'})"
    elif world in names:
        return
    else:
        where = f"named {world!r}"
    raise _unknown_world(f"Server {server!r} has no world {where}")


def _unknown_world(what: str) -> ContractError:
    return ContractError(
        f"{what}; get_worlds lists its worlds by index and name. Nothing was run.",
        code=ErrorCode.UNKNOWN_WORLD,
    )


def make_runtime(config: ServerConfig, listener) -> Runtime:  # type: ignore[no-untyped-def]
    policy = config.restart_policy()
    if config.runtime == "emulator":
        return ProcessRuntime(
            config.id, listener, command=emulator_command(config.scenario, config.emulator_args),
            env=config.env, kind="emulator", policy=policy,
        )
    if config.runtime == "process":
        return ProcessRuntime(
            config.id, listener, command=config.command, workdir=config.workdir, env=config.env,
            policy=policy,
        )
    from .runtime.docker import DockerRuntime

    return DockerRuntime(config.id, listener, container=config.container, policy=policy)


class _Attempt:
    """Whether a request's command was handed to the console (or its action to the
    runtime): what an error reply's outcome depends on (see the module docstring)."""

    __slots__ = ("handed",)

    def __init__(self) -> None:
        self.handed = False

    def hand(self) -> None:
        self.handed = True


class ManagedServer:
    """See the module docstring."""

    def __init__(
        self,
        config: ServerConfig,
        bus: Bus,
        settings: AgentSettings,
        *,
        runtime_factory: Callable[[ServerConfig, object], Runtime] = make_runtime,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.id = config.id
        #: Where this server's console and polls are counted (its own registry if none).
        self.metrics = metrics if metrics is not None else AgentMetrics(dict).server(config.id)
        #: The last status sample (the metrics read it; a scrape never asks the runtime).
        self.last_status: Status | None = None
        self.config = config
        self.bus = bus
        self.settings = settings
        self.output_log = OutputLog(config.id, self._publish_output)
        self.runtime = runtime_factory(config, self)
        self.driver: ConsoleDriver | None = None
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pollers: list[asyncio.Task[None]] = []
        self._poke_worlds = asyncio.Event()
        self._poke_bans = asyncio.Event()
        self.worlds: list[World] = []
        self.bans: list[Ban] = []
        self._last_status: bytes = b""
        self._last_worlds: bytes = b""
        self._last_bans: bytes | None = None
        #: The console health check's verdict (``Status.health``).
        self.health = ConsoleHealth(misses=settings.health_misses)
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.output_log.start()
        await self.runtime.start()
        self._pollers = [
            asyncio.create_task(self._poll_status(), name=f"poll-status:{self.id}"),
            asyncio.create_task(self._poll_worlds(), name=f"poll-worlds:{self.id}"),
            asyncio.create_task(self._poll_bans(), name=f"poll-bans:{self.id}"),
            asyncio.create_task(self._poll_health(), name=f"poll-health:{self.id}"),
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in [*self._pollers, *self._tasks]:
            task.cancel()
        for task in [*self._pollers, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.runtime.close()
        await self.output_log.close()

    def presence(self) -> ServerPresence:
        status = self.runtime.status
        if status == "running" and not self._ready.is_set():
            status = "starting"
        return ServerPresence(
            server=self.id,
            status=status,
            worlds=len(self.worlds),
            users=sum(w.users for w in self.worlds),
            runtime=self.runtime.kind,
        )

    # -- runtime listener ------------------------------------------------------------

    def output_line(self, line: str) -> None:
        self.output_log.add(line)

    def output(self, data: bytes) -> None:  # RuntimeListener
        if self.driver is not None:
            self.driver.feed(data)

    def started(self) -> None:  # RuntimeListener
        self._ready.clear()
        self.health.new_run()
        driver = ConsoleDriver(
            self.runtime.write, on_line=self.output_line, name=self.id, metrics=self.metrics
        )
        self.driver = driver
        self._spawn(self._synchronise(driver))
        self._spawn(self._publish_state("starting"))

    def exited(self, reason: str) -> None:  # RuntimeListener
        self._ready.clear()
        if self.driver is not None:
            self.driver.feed_eof(reason)
        self._spawn(self._publish_state("exited", reason))

    def state(self, state: str) -> None:  # RuntimeListener
        self._spawn(self._publish_state(state))
        self._spawn(self._refresh_status())

    async def _synchronise(self, driver: ConsoleDriver) -> None:
        try:
            await driver.start()
        except (AgentError, TimeoutError) as exc:
            log.error("server=%s: the console did not become ready: %s", self.id, exc)
            return
        if driver is self.driver:
            self._ready.set()
            log.info("server=%s: console ready, focused %r", self.id, driver.prompt)
            await self._publish_state("ready")
            self._poke_worlds.set()
            self._poke_bans.set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests --------------------------------------------------------------------

    async def handle(self, request: BusRequest, deadline: float) -> BusReply:
        """Answer one bus request (the bus handler for this server). Every failure is
        answered through :func:`resofleet.bus.reply_for`: an agent error with its code and client
        sentence, anything else ``internal`` with a reference into this agent's log."""
        attempt = _Attempt()
        driver = self.driver
        try:
            body = await self._dispatch(request, deadline, attempt)
        except Exception as exc:
            if isinstance(exc, ConsoleSilent) and driver is not None and driver is self.driver:
                # a client's command the console took and never answered is a miss like a
                # poll's: a dashboard asking a hung console all the time must not hide it
                await self._health(False)
            reply = reply_for(exc, server=self.id)
            if isinstance(request.body, (RunCommand, ContainerRequest)):
                outcome = CommandOutcome.UNKNOWN if attempt.handed else CommandOutcome.NOT_EXECUTED
                reply = BusReply(body=msgspec.structs.replace(reply.body, outcome=outcome))
            return reply
        return BusReply(body=body)

    async def _dispatch(  # type: ignore[no-untyped-def]
        self, request: BusRequest, deadline: float, attempt: _Attempt
    ):
        self._remaining(deadline)  # past it (the broker held the request back): run nothing
        match request.body:
            case RunCommand(command=command, world=world):
                return await self._command(command, world, deadline, attempt)
            case StatusRequest():
                self.last_status = await self._sample()  # the freshest sample
                return StatusUpdate(status=self.last_status, server=self.id)
            case WorldsRequest():
                worlds = await self._collect_worlds(self._remaining(deadline), wait=self._remaining(deadline))
                await self._maybe_publish_worlds(worlds)
                return WorldsUpdate(output=worlds, server=self.id)
            case OutputRequest(since=since, epoch=epoch, limit=limit):
                return self.output_log.history(since, epoch, limit)
            case ContainerRequest(action=action):
                return await self._container(action, attempt)
        raise ContractError(f"This agent cannot answer a {type(request.body).__name__}.")

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise ConsoleTimeout(
                message=f"The request's time ran out before server {self.id!r}'s console got to it."
            )
        return remaining

    async def _console(self, deadline: float) -> ConsoleDriver:
        """The console, once ready; waits for a starting one within the deadline."""
        driver = self.driver
        if driver is not None and driver.ready and self._ready.is_set():
            return driver  # the usual case: no timer to arm
        try:
            async with asyncio.timeout(self._remaining(deadline)):
                while True:
                    driver = self.driver
                    if driver is not None and driver.ready and self._ready.is_set():
                        return driver
                    if self.runtime.status in ("exited", "crashloop", "created"):
                        raise ConsoleClosed(
                            message=f"Server {self.id!r} is not running "
                            f"({self.runtime.status}); start it with a container start action."
                        )
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                    # cancellation that lands as its awaitable finishes
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await self._ready.wait()
        except TimeoutError:
            raise ConsoleNotReady(
                message=f"Server {self.id!r} is still starting; its console is not ready yet."
            ) from None

    async def _command(  # type: ignore[no-untyped-def]
        self, command: str, world: str | int | None, deadline: float, attempt: _Attempt
    ):
        check_command_text(command)  # the bus is not trusted to have checked it
        if isinstance(world, str):
            check_world_text(world)
        driver = await self._console(deadline)
        name = command_name(command)
        async with driver.exclusive(wait=self._remaining(deadline)) as group:
            timeout = min(deadline_for(command), self._remaining(deadline))
            if world is None:
                started = time.perf_counter()
                reply = await group.run(command, timeout=timeout, sent=attempt.hand)
                self.metrics.command(command, time.perf_counter() - started)
            else:
                await group.worlds(timeout=timeout)  # the console's own list, inside the group
                check_world(self.id, world, driver.world_names)
                before = driver.focused_index
                focused = await group.focus(world, timeout=timeout, stream=True)
                if _NO_SUCH_WORLD.intersection(line.strip() for line in focused.lines):
                    # listed a moment ago, gone now (it closed): refuse, run nothing
                    raise _unknown_world(f"Server {self.id!r} no longer has the world {world!r}")
                started = time.perf_counter()
                reply = await group.run(command, timeout=timeout, sent=attempt.hand)
                self.metrics.command(command, time.perf_counter() - started)
                if before is not None and name not in ("focus", "close") and driver.focused_index != before:
                    await group.focus(before, timeout=COMMAND_DEADLINE)
        if name in _CHANGES_WORLDS:
            self._poke_worlds.set()
        if name in _CHANGES_BANS:
            self._poke_bans.set()
        if name == "listbans":
            bans = parse_bans(reply.text)
            await self._maybe_publish_bans(bans)
            return BansUpdate(bans=bans, server=self.id)
        return CommandResponse(
            command=command, output=reply.text, server=self.id, outcome=CommandOutcome.EXECUTED
        )

    async def _container(self, action: str, attempt: _Attempt) -> ContainerResponse:
        attempt.hand()
        if action == "start":
            await self.runtime.start()
        elif action == "stop":
            await self.runtime.stop()
        else:
            await self.runtime.restart()
        return ContainerResponse(
            action=action, server=self.id, status=self.runtime.status,
            outcome=CommandOutcome.EXECUTED,
        )

    # -- the worlds poll, as one atomic group ----------------------------------------

    async def _collect_worlds(self, timeout: float, *, wait: float) -> list[World]:
        driver = await self._console(asyncio.get_running_loop().time() + timeout)
        async with driver.exclusive(wait=wait) as group:
            before = driver.focused_index
            listing = await group.worlds(timeout=timeout)
            worlds: list[World] = []
            for line in parse_worlds(listing.text):
                await group.focus(line.index, timeout=timeout)
                status = parse_status((await group.run("status", timeout=timeout, stream=False)).text)
                users = parse_users((await group.run("users", timeout=timeout, stream=False)).text)
                worlds.append(build_world(line, status, users))
            if before is not None and driver.focused_index != before:
                await group.focus(before, timeout=timeout)
        self.worlds = worlds
        return worlds

    # -- pollers and events ----------------------------------------------------------

    async def _poll_status(self) -> None:
        while True:
            await self._refresh_status()
            await asyncio.sleep(self.settings.status_interval)

    async def _refresh_status(self) -> None:
        started = time.perf_counter()
        try:
            status = await self._sample()
        except Exception as exc:
            log.warning("server=%s: status sample failed: %s", self.id, exc)
            return
        finally:
            self.metrics.polls["status"].observe(time.perf_counter() - started)
        self.last_status = status
        encoded = msgspec.json.encode(status)
        if encoded != self._last_status:
            self._last_status = encoded
            await self._publish("status", StatusUpdate(status=status, server=self.id))

    async def _sample(self) -> Status:
        """The runtime's fresh sample, with the console health check's verdict."""
        status = await self.runtime.stats()
        return msgspec.structs.replace(status, health=self.health.state)

    async def _poll_worlds(self) -> None:
        await self._poll(self._poke_worlds, self.settings.worlds_interval, self._poll_worlds_once, "worlds")

    async def _poll_worlds_once(self) -> None:
        worlds = await self._collect_worlds(COMMAND_DEADLINE, wait=POLL_WAIT)
        await self._maybe_publish_worlds(worlds)

    async def _poll_bans(self) -> None:
        await self._poll(self._poke_bans, self.settings.bans_interval, self._poll_bans_once, "bans")

    async def _poll_bans_once(self) -> None:
        driver = await self._console(asyncio.get_running_loop().time() + COMMAND_DEADLINE)
        reply = await driver.run("listbans", stream=False, wait=POLL_WAIT)
        await self._maybe_publish_bans(parse_bans(reply.text))

    async def _poll(
        self, poke: asyncio.Event, interval: float, once: Callable[[], Awaitable[None]], name: str
    ) -> None:
        timing = self.metrics.polls[name]
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await poke.wait()
            poke.clear()
            if not self._ready.is_set():
                continue
            started = time.perf_counter()
            driver = self.driver
            answered: bool | None = None  # for the health check; None: neither
            try:
                await once()
                timing.observe(time.perf_counter() - started)
                answered = True
            except AgentError as exc:
                log.info("server=%s: poll skipped: %s", self.id, exc)
                if isinstance(exc, ConsoleTimeout) and not isinstance(exc, ConsoleBusy):
                    answered = False
            except Exception:
                log.exception("server=%s: poll failed", self.id)
            if answered is not None and driver is self.driver:
                await self._health(answered)

    # -- the console health check (resofleet.agent.consolehealth) --------------------

    async def _poll_health(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval)
            driver = self.driver
            if driver is not None and self._ready.is_set() and self.runtime.status == "running":
                try:
                    await self._probe(driver)
                except Exception:
                    log.exception("server=%s: health probe failed", self.id)

    async def _probe(self, driver: ConsoleDriver) -> None:
        """One probe. A console busy with other commands the whole time counts as neither an
        answer nor a miss; a closed one is the runtime's business, not a health one."""
        timeout = self.settings.health_timeout
        try:
            await driver.run(HEALTH_PROBE, timeout=timeout, stream=False, wait=timeout)
        except (ConsoleBusy, ConsoleClosed):
            return
        except (ConsoleTimeout, ConsoleNotReady):
            answered = False
        else:
            answered = True
        if driver is self.driver:  # else the run ended meanwhile
            await self._health(answered)

    async def _health(self, answered: bool) -> None:
        """A console poll's outcome (the probe's, the worlds and bans polls')."""
        if answered:
            change = self.health.answered()
        else:
            self.metrics.health_misses.inc()
            change = self.health.missed()
        if change.state == UNHEALTHY:
            log.warning("server=%s: the console missed %d polls in a row: unhealthy",
                        self.id, self.health.misses)
        elif change.state:
            log.info("server=%s: the console answers again: %s", self.id, change.state)
        if change.state:
            await self._publish_state(change.state)
        if change.state or change.act:
            await self._refresh_status()
        if change.act and self.config.health_restart:
            try:
                why = await self.runtime.recover()
            except AgentError as exc:
                log.error("server=%s: the health restart failed: %s", self.id, exc)
            else:
                log.warning("server=%s: the console is unhealthy; %s", self.id, why)

    async def _maybe_publish_worlds(self, worlds: list[World]) -> None:
        # uptime moves every second; a change of anything else is news
        key = msgspec.json.encode([msgspec.structs.replace(w, uptime="", uptime_raw="") for w in worlds])
        if key != self._last_worlds:
            self._last_worlds = key
            await self._publish("worlds", WorldsUpdate(output=worlds, server=self.id))

    async def _maybe_publish_bans(self, bans: list[Ban]) -> None:
        self.bans = bans
        key = msgspec.json.encode(bans)
        if key != self._last_bans:
            self._last_bans = key
            await self._publish("bans", BansUpdate(bans=bans, server=self.id))

    async def _publish_state(self, state: str, detail: str = "") -> None:
        await self._publish("state", ServerState(server=self.id, state=state, detail=detail))

    async def _publish_output(self, batch: ContainerOutputBatch) -> bool:
        return await self.bus.publish(BusEvent(server=self.id, kind="output", body=batch))

    async def _publish(self, kind, body) -> None:  # type: ignore[no-untyped-def]
        try:
            await self.bus.publish(BusEvent(server=self.id, kind=kind, body=body))
        except BusError as exc:
            log.warning("server=%s: %s event not published: %s", self.id, kind, exc)
