"""A RabbitMQ node of a test's own, for tests that stop, freeze or restart the broker.

The shared broker on 127.0.0.1:5672 is never touched: this node has its own node name,
its own AMQP and distribution ports, its own data, log and config files under the test's
``tmp_path``, and its own process group, which is the only thing these helpers signal.
It is bounded in time twice: every wait here has a timeout, and the node runs under
``timeout(1)``, which kills it after :data:`NODE_LIFETIME` seconds even if the test
process itself dies before its clean-up.

    async with rabbit_node(tmp_path) as node:
        bus = AmqpBus(node.url, ...)
        node.freeze()            # SIGSTOP: the broker keeps its sockets and answers nothing
        node.thaw()              # SIGCONT
        await node.restart()     # SIGKILL, then the same node again (same name, port, data)

A cluster of such nodes on one machine (:func:`rabbit_cluster`): each node has its own
name, ports and data; they share an Erlang cookie, and every node after the first joins
the first with ``rabbitmqctl join_cluster``:

    async with rabbit_cluster(tmp_path, size=3) as cluster:
        bus = AmqpBus(cluster.urls, ...)     # every node's URL, the first first
        await cluster.nodes[0].stop()        # SIGKILL one node; the others go on
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest

__all__ = ["NODE_LIFETIME", "RabbitCluster", "RabbitNode", "rabbit_cluster", "rabbit_node"]

#: The broker's own start script, run directly: the ``/usr/sbin`` wrapper switches to the
#: ``rabbitmq`` user, who cannot write to a test's temporary directory.
SERVER: Final = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
#: Its control tool, run directly for the same reason.
CTL: Final = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
#: Seconds a node may live at most: longer than any test that uses one (pytest's own
#: limit is 120 s), short enough that a node orphaned by a crashed test run goes away.
NODE_LIFETIME: Final = 300
#: Seconds a node has to boot and accept an AMQP connection (about 5 s here, on two
#: cores shared with other test runs).
START_TIMEOUT: Final = 60.0
#: Seconds to wait for a killed node's processes to be gone.
STOP_TIMEOUT: Final = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RabbitNode:
    """One private broker node (see the module docstring)."""

    def __init__(self, base: Path, *, cookie: str | None = None) -> None:
        self.base = base
        #: The Erlang cookie: nodes of one cluster (and the tools that drive them) share it.
        self.cookie = cookie
        self.name = f"resofleet-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = _free_port()
        self.dist_port = _free_port()
        self._process: asyncio.subprocess.Process | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _environment(self) -> dict[str, str]:
        self.base.mkdir(parents=True, exist_ok=True)
        config = self.base / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        plugins = self.base / "enabled_plugins"
        plugins.write_text("[].\n")
        env_file = self.base / "rabbitmq-env.conf"
        env_file.write_text("")
        if self.cookie is not None:
            cookie = self.base / ".erlang.cookie"  # in HOME, where Erlang looks for it
            if cookie.exists():
                cookie.chmod(0o600)
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)  # Erlang refuses a cookie others may read
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.base),  # the Erlang cookie goes here
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(config),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(plugins),
            RABBITMQ_CONF_ENV_FILE=str(env_file),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    async def start(self) -> None:
        """Boot the node and wait until it accepts AMQP connections."""
        env = self._environment()
        log = open(self.base / "server.out", "ab")  # noqa: SIM115 (the child writes it)
        try:
            self._process = await asyncio.create_subprocess_exec(
                "timeout", "-s", "KILL", str(NODE_LIFETIME), str(SERVER),
                env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True,
            )
        finally:
            log.close()
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await self._wait_ready()
        except TimeoutError:
            await self.stop()
            raise AssertionError(
                f"the private RabbitMQ node did not start in {START_TIMEOUT:g} s; "
                f"see {self.base / 'server.out'} and {self.base / 'log'}"
            ) from None

    async def ctl(self, *args: str) -> str:
        """Run ``rabbitmqctl -n <this node> ARGS`` within :data:`START_TIMEOUT`; its output."""
        process = await asyncio.create_subprocess_exec(
            str(CTL), "-n", self.name, *args, env=self._environment(),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
        try:
            async with asyncio.timeout(START_TIMEOUT):
                out, _ = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise AssertionError(f"rabbitmqctl {' '.join(args)} took over {START_TIMEOUT:g} s") from None
        text = out.decode(errors="replace")
        assert process.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {text}"
        return text

    async def _wait_ready(self) -> None:
        import aiormq

        while True:
            assert self._process is not None
            if self._process.returncode is not None:
                raise AssertionError(
                    f"the private RabbitMQ node exited ({self._process.returncode}); "
                    f"see {self.base / 'server.out'}"
                )
            try:
                # a bare TCP connect first: aiormq logs every refused attempt
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                async with asyncio.timeout(5):
                    connection = await aiormq.connect(self.url)
                await connection.close()
                return
            except (OSError, TimeoutError, aiormq.exceptions.AMQPError):
                await asyncio.sleep(0.2)

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, sig)

    def freeze(self) -> None:
        """SIGSTOP the node: its sockets stay open and nothing is answered."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT a frozen node."""
        self._signal(signal.SIGCONT)
        self.frozen = False

    async def stop(self) -> None:
        """Kill the node (SIGKILL to its process group) and wait for it to be gone."""
        process = self._process
        if process is None:
            return
        self._signal(signal.SIGKILL)
        self.frozen = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT):
                await process.wait()
        self._process = None

    async def restart(self) -> None:
        """The same node again (same name, port and data) after a hard stop."""
        await self.stop()
        await self.start()


@contextlib.asynccontextmanager
async def rabbit_node(base: Path) -> AsyncIterator[RabbitNode]:
    """A started :class:`RabbitNode` under ``base``, killed on the way out; skips the
    test where RabbitMQ is not installed."""
    if not SERVER.exists():
        pytest.skip(f"needs RabbitMQ's server script at {SERVER} (Debian's rabbitmq-server)")
    node = RabbitNode(base)
    try:
        await node.start()
        yield node
    finally:
        node.thaw()
        await node.stop()


class RabbitCluster:
    """Private nodes clustered together (see the module docstring)."""

    def __init__(self, base: Path, size: int) -> None:
        cookie = secrets.token_hex(16)
        self.nodes = [RabbitNode(base / f"node{i}", cookie=cookie) for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    async def start(self) -> None:
        """Boot every node, then join each to the first (``stop_app``, ``join_cluster``,
        ``start_app``) and wait until each accepts AMQP connections again."""
        first, *others = self.nodes
        await asyncio.gather(*(node.start() for node in self.nodes))
        await asyncio.gather(*(node.ctl("stop_app") for node in others))
        for node in others:  # one at a time: joins change the cluster's membership
            await node.ctl("join_cluster", first.name)
        await asyncio.gather(*(node.ctl("start_app") for node in others))
        async with asyncio.timeout(START_TIMEOUT):
            await asyncio.gather(*(node._wait_ready() for node in others))
        status = await first.ctl("cluster_status", "--formatter", "json")
        assert all(node.name in status for node in self.nodes), status

    async def stop(self) -> None:
        for node in self.nodes:
            node.thaw()
        await asyncio.gather(*(node.stop() for node in self.nodes))


@contextlib.asynccontextmanager
async def rabbit_cluster(base: Path, *, size: int = 3) -> AsyncIterator[RabbitCluster]:
    """A started :class:`RabbitCluster` of ``size`` nodes under ``base``, every node
    killed on the way out; skips the test where RabbitMQ is not installed."""
    if not (SERVER.exists() and CTL.exists()):
        pytest.skip(f"needs RabbitMQ's {SERVER} and {CTL} (Debian's rabbitmq-server)")
    cluster = RabbitCluster(base, size)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()
