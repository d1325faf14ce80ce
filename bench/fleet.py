"""A fleet for a benchmark: gateway and agent in their own processes, authentication on.

Over RabbitMQ (``transport="amqp"``) the gateway and the agent are two processes, as
``resofleet gateway`` and ``resofleet agent``; over LocalBus (``"local"``) they share one,
as ``resofleet up``. The emulated servers are ``s0``, ``s1``... Clients authenticate with
an admin token (admins are not rate-limited), and the gateway's connections
per address are raised, since every benchmark client comes from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Final

import msgspec

from .procs import Child, amqp_url, start_node, unique_prefix
from .wsclient import RawClient, connect

__all__ = ["Caller", "Fleet", "admin_token"]

#: Connections per client address the benchmark gateway allows (the default is 256).
BENCH_CONNECTIONS_PER_ADDRESS: Final = 20_000
#: Seconds the servers have to come online (emulators start, agents announce).
ONLINE_TIMEOUT: Final = 60.0
#: Seconds a console has to answer its first command before it is restarted, and tries.
CONSOLE_PATIENCE: Final = 5.0
CONSOLE_ATTEMPTS: Final = 4


def admin_token() -> tuple[str, str]:
    """A fresh secret and an admin token signed with it."""
    from resofleet.contracts import Role
    from resofleet.gateway.tokens import Keyring, new_secret

    secret = new_secret()
    return secret, Keyring((secret,)).issue(role=Role.ADMIN, sub="bench", ttl=3600)


class _Reply(msgspec.Struct):
    type: str
    id: int | str | None = None


_decode_reply = msgspec.json.Decoder(_Reply).decode


class Caller:
    """A connection that sends requests with ids and awaits their replies; other messages
    (events) are ignored."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self.client: RawClient | None = None

    @classmethod
    async def open(cls, host: str, port: int, token: str | None, path: str = "/ws") -> Caller:
        caller = cls()
        caller.client = await connect(host, port, path=path, token=token, on_message=caller._on_message)
        return caller

    def _on_message(self, payload: bytes) -> None:
        if not self._waiting:
            return
        try:
            reply = _decode_reply(payload)
        except msgspec.DecodeError:
            return
        if isinstance(reply.id, int):
            future = self._waiting.pop(reply.id, None)
            if future is not None and not future.done():
                future.set_result(payload)

    async def call(self, request: dict[str, Any], timeout: float = 30.0) -> bytes:
        assert self.client is not None
        rid = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self.client.send(msgspec.json.encode({**request, "id": rid}))
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._waiting.pop(rid, None)

    def close(self) -> None:
        if self.client is not None:
            self.client.abort()


class Fleet:
    """Gateway (+ agent) processes serving ``servers`` emulators; see the module docstring."""

    def __init__(self, transport: str, *, servers: int, scenario: str | None = None,
                 emulator_args: tuple[str, ...] = (), name: str = "",
                 audit_dir: str | None = None) -> None:
        self.transport = transport
        #: Where the gateway and the agent keep their audit logs (None: no audit log).
        self.audit_dir = audit_dir
        self.servers = servers
        self.scenario = scenario
        self.emulator_args = emulator_args
        self.name = name or transport
        self.gateway: Child | None = None
        self.agent: Child | None = None
        self.token: str | None = None
        self.auth = False
        #: Consoles restarted because they never became ready (see :meth:`wait_online`).
        self.restarts = 0

    @property
    def port(self) -> int:
        assert self.gateway is not None
        return self.gateway.port

    @property
    def server_ids(self) -> list[str]:
        return [f"s{i}" for i in range(self.servers)]

    async def start(self) -> Fleet:
        secret, self.token = admin_token()
        spec: dict[str, Any] = {
            "servers": self.servers,
            "scenario": self.scenario,
            "emulator_args": list(self.emulator_args),
            "connections_per_address": BENCH_CONNECTIONS_PER_ADDRESS,
            "audit_dir": self.audit_dir,
        }
        env = {"RESOFLEET_SECRET": secret}
        try:
            if self.transport == "amqp":
                url = amqp_url()
                if url is None:
                    raise RuntimeError("RESOFLEET_AMQP_URL is not set")
                spec.update(amqp=url, prefix=unique_prefix())
                if self.servers:
                    self.agent = await start_node("agent", spec, name=f"{self.name}-agent")
                self.gateway = await start_node(
                    "gateway", spec, name=f"{self.name}-gateway", env=env
                )
            else:
                self.gateway = await start_node("up", spec, name=f"{self.name}-up", env=env)
            self.auth = bool(self.gateway.info.get("auth"))
            if self.servers:
                await self.wait_online()
        except BaseException:
            await self.stop()
            raise
        return self

    async def wait_online(self) -> None:
        """Until ``get_servers`` lists every server online and each console answers.

        A console that does not answer within :data:`CONSOLE_PATIENCE` is restarted
        (``container restart``) and tried again: an agent attaching to a console that
        chatters can miss its first prompt and wait for it until its startup deadline
        (see bench/README.md, "Findings"). Restarts are counted in :attr:`restarts`.
        """
        caller = await Caller.open("127.0.0.1", self.port, self.token)
        try:
            await caller.call({"type": "subscribe", "servers": []})
            async with asyncio.timeout(ONLINE_TIMEOUT):
                while True:
                    reply = msgspec.json.decode(await caller.call({"type": "get_servers"}))
                    # `online` is left out when true (msgspec omits defaults)
                    online = {s["server"] for s in reply.get("servers", []) if s.get("online", True)}
                    if online >= set(self.server_ids):
                        break
                    await asyncio.sleep(0.2)
            for server in self.server_ids:  # the first command waits for the console
                for attempt in range(CONSOLE_ATTEMPTS):
                    try:
                        await caller.call(
                            {"type": "command", "command": "status", "server": server},
                            timeout=CONSOLE_PATIENCE,
                        )
                        break
                    except TimeoutError:
                        if attempt == CONSOLE_ATTEMPTS - 1:
                            raise RuntimeError(f"server {server}: its console never answered") from None
                        self.restarts += 1
                        await caller.call(
                            {"type": "container", "action": "restart", "server": server},
                            timeout=30,
                        )
        finally:
            caller.close()

    async def stop(self) -> None:
        for child in (self.gateway, self.agent):
            if child is not None:
                await child.stop()

    async def __aenter__(self) -> Fleet:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
