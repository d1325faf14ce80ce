"""Pressure a hostile or unlucky client puts on a gateway, end to end: replies a client
never reads, subscribe churn, and a broker that is slow to bind.

Each test runs a real gateway in front of an agent driving emulated consoles, over
LocalBus and over RabbitMQ (the slow broker over RabbitMQ only, through a TCP proxy that
freezes the link).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from websockets.asyncio.client import connect

from resofleet.bus import AmqpBus
from resofleet.contracts import Role
from resofleet.contracts import client as contract
from resofleet.gateway import Gateway
from resofleet.gateway.security import Security
from resofleet.gateway.server import CLOSE_TIMEOUT
from resofleet.gateway.routing import OUTPUT_TIMEOUT
from resofleet.gateway.tokens import Keyring, new_secret
from tests.integration.gateway.client import Client, RecordingClient, wait_until
from tests.support.timing import AT_ONCE

from .conftest import servers_online

#: Lines put in the full server's ring, and the characters of each: about 8 MB of history,
#: what a few connections typing 4 KB `users xxxx...` commands leave behind.
LINES, WIDTH = 2000, 4000
#: Requests the client that never reads sends: as many as may be in flight.
REQUESTS = 32
#: Bytes all sessions' unsent buffers may hold together while that client attacks: its
#: buffer bound, one reply page on top, and room for the admin's pings.
HELD_BOUND = 4 * 1024 * 1024
#: Viewer connections churning subscriptions, their rate each (just under the rate limit's
#: 20/s, as in the report), and for how long.
CHURNERS, CHURN_RATE, CHURN_SECONDS = 8, 19.0, 5.0
#: Connections that hold a subscription of CHURN_IDS ids (the same ones) throughout: what
#: each churned subscription must not be made to recount.
WATCHERS = 24
#: Ids per churned subscription: the most one may hold (1,024 before it was bounded).
CHURN_IDS = getattr(contract, "MAX_SUBSCRIBE_SERVERS", 1024)


def bearer(token: str) -> dict:
    return {"additional_headers": {"Authorization": f"Bearer {token}"}}


async def pings(client: Client, stop: asyncio.Event, every: float = 0.05) -> list[float]:
    """Ping until ``stop``; each round trip in seconds."""
    took: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        assert (await client.request({"type": "ping"}, timeout=30))["type"] == "pong"
        took.append(time.perf_counter() - started)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every):
                await stop.wait()
    return took


def fill(agent, server: str) -> None:
    log = agent.servers[server].output_log
    for i in range(LINES):
        log.add(f"users {i:06d} " + "x" * WIDTH)


async def test_a_client_that_never_reads_its_replies_is_cut_off_and_the_gateway_holds_little(fleet):
    """A viewer subscribes to a quiet server, asks 32 times for the whole of a full
    server's history and never reads: the gateway's unsent bytes stay within a few MiB, the
    connection is cut off, and an admin's pings stay immediate meanwhile."""
    keyring = Keyring((new_secret(),))
    agent = await fleet.agent("full", "quiet")
    fill(agent, "full")
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    admin = await fleet.client(gateway.url, cls=RecordingClient, **bearer(keyring.issue(role=Role.ADMIN, sub="root", ttl=600)))
    await admin.request({"type": "subscribe", "servers": []})
    await servers_online(admin, ["full", "quiet"])

    ws = await connect(gateway.url, compression=None, max_size=None,
                       **bearer(keyring.issue(role=Role.VIEWER, sub="mallory", ttl=600)))
    try:
        await ws.send(json.dumps({"type": "subscribe", "servers": ["quiet"], "id": "s"}))
        async with asyncio.timeout(10):
            while json.loads(await ws.recv()).get("id") != "s":
                pass
        ws.transport.pause_reading()  # from here on it never reads
        for i in range(REQUESTS):
            await ws.send(json.dumps({"type": "get_output", "server": "full", "since": 0, "limit": 100_000, "id": i}))

        stop = asyncio.Event()
        pinger = asyncio.create_task(pings(admin, stop))
        held = 0

        def attacker_gone() -> bool:
            nonlocal held
            held = max(held, sum(s.connection.transport.get_write_buffer_size() for s in gateway.sessions))
            return not any(s.principal is not None and s.principal.sub == "mallory" for s in gateway.sessions)

        gone = True
        try:
            await wait_until(attacker_gone, timeout=OUTPUT_TIMEOUT + CLOSE_TIMEOUT + AT_ONCE, what="the reader-less client cut off")
        except TimeoutError:
            gone = False
        finally:
            stop.set()
            took = await pinger
        assert held <= HELD_BOUND, f"the gateway held {held / 2**20:.1f} MiB unsent"
        assert gone, "the client that never reads is still connected"
        assert took and max(took) < AT_ONCE, f"slowest admin ping {max(took):.2f} s"
        print(f"\nnever-reading client: at most {held / 2**20:.2f} MiB unsent, admin pings max {max(took) * 1000:.0f} ms")
    finally:
        ws.transport.abort()


async def test_get_output_is_paginated_within_the_reply_bound(fleet):
    """A whole-ring `get_output` comes in pages of at most the reply bound, `complete:
    false` until the last; asking again `since` the last line gets every line once."""
    agent = await fleet.agent("full")
    fill(agent, "full")
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url)
    await client.request({"type": "subscribe", "servers": []})
    await servers_online(client, ["full"])
    bound = getattr(contract, "MAX_OUTPUT_BYTES", 1024 * 1024)
    seqs: list[int] = []
    since = 0
    for _ in range(LINES):
        await client.send({"type": "get_output", "server": "full", "since": since, "limit": 100_000, "id": "page"})
        raw = await asyncio.wait_for(client.ws.recv(), OUTPUT_TIMEOUT)
        page = json.loads(raw)
        assert page["type"] == "output_history", page
        assert len(raw) <= bound + 4096, f"one reply of {len(raw)} bytes"
        seqs += [line["seq"] for line in page["lines"]]
        if page["complete"]:
            break
        assert page["lines"], "an incomplete page must carry lines"
        since = page["lines"][-1]["seq"]
    assert len(seqs) >= LINES and seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # + the console's own


async def churn(url: str, i: int, token: str, stop: asyncio.Event, answers: list[str]) -> None:
    """Alternate two subscriptions of CHURN_IDS ids each at CHURN_RATE, reading replies."""
    async with await Client.connect(url, **bearer(token)) as client:
        async def read() -> None:
            with contextlib.suppress(Exception):
                while True:
                    message = json.loads(await client.ws.recv())
                    answers.append(message.get("code") or message["type"])

        reader = asyncio.create_task(read())
        try:
            n = 0
            loop = asyncio.get_running_loop()
            start = loop.time()
            while not stop.is_set():
                ids = [f"churn-{i}-{n % 2}-{k}" for k in range(CHURN_IDS)]
                await client.send({"type": "subscribe", "servers": ids, "id": n})
                n += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, start + n / CHURN_RATE - loop.time())):
                        await stop.wait()
        finally:
            reader.cancel()


async def test_subscribe_churn_leaves_an_admins_version_and_new_handshakes_immediate(fleet):
    """Viewers alternating subscriptions of many ids as fast as the rate limit lets them:
    an admin's `version` and a new connection's first ping stay immediate."""
    keyring = Keyring((new_secret(),))
    await fleet.agent("l-1")
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    admin_token = keyring.issue(role=Role.ADMIN, sub="root", ttl=600)
    admin = await fleet.client(gateway.url, cls=RecordingClient, **bearer(admin_token))
    await servers_online(admin, ["l-1"])
    await admin.request({"type": "subscribe", "servers": ["l-1"]})  # a dashboard's list, not "#"
    watched = [f"watched-{k}" for k in range(CHURN_IDS)]
    for i in range(WATCHERS):
        watcher = await fleet.client(gateway.url, **bearer(keyring.issue(role=Role.VIEWER, sub=f"w{i}", ttl=600)))
        assert (await watcher.request({"type": "subscribe", "servers": watched}, timeout=60))["type"] == "subscribed"
    stop = asyncio.Event()
    answers: list[str] = []
    churners = [
        asyncio.create_task(churn(gateway.url, i, keyring.issue(role=Role.VIEWER, sub=f"v{i}", ttl=600), stop, answers))
        for i in range(CHURNERS)
    ]
    took: list[float] = []
    handshakes: list[float] = []
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + CHURN_SECONDS
        while loop.time() < end:
            started = time.perf_counter()
            reply = await admin.request({"type": "command", "command": "version", "server": "l-1"}, timeout=60)
            took.append(time.perf_counter() - started)
            assert reply["type"] == "command_response", reply
            if len(took) % 10 == 0:
                started = time.perf_counter()
                async with await Client.connect(gateway.url, **bearer(admin_token)) as fresh:
                    assert (await fresh.request({"type": "ping"}, timeout=60))["type"] == "pong"
                handshakes.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*churners, return_exceptions=True)
    assert "subscribed" in answers
    assert max(took) < AT_ONCE, f"slowest admin version {max(took):.2f} s"
    assert handshakes and max(handshakes) < AT_ONCE, f"slowest new connection {max(handshakes):.2f} s"
    print(f"\nsubscribe churn ({CHURNERS} x {CHURN_IDS} ids at {CHURN_RATE:g}/s): version max "
          f"{max(took) * 1000:.0f} ms, new connection max {max(handshakes) * 1000:.0f} ms; "
          f"{answers.count('subscribed')} subscribed, {answers.count('rate_limited')} rate_limited")


@pytest.mark.parametrize("transport", ["amqp"], indirect=True)
async def test_a_frozen_broker_never_delays_a_new_session_or_a_subscribe(fleet, amqp_url, topology, proxy):
    """With the gateway's broker link frozen, a new session (which needs a new binding)
    answers its first ping at once and a subscribe is answered within its bound; once the
    link flows again, the bindings catch up and events reach both."""
    await fleet.agent("alpha", "beta")
    parts = urlsplit(amqp_url)
    creds = parts.netloc.rpartition("@")[0]
    bus = AmqpBus(urlunsplit(parts._replace(netloc=f"{creds}@127.0.0.1:{proxy.port}")), topology=topology)
    await bus.start()
    gateway = Gateway(bus, host="127.0.0.1", port=0)
    await gateway.start()
    try:
        async with await Client.connect(gateway.url) as first:
            await servers_online(first, ["alpha", "beta"])
            await first.request({"type": "subscribe", "servers": ["alpha"]})  # "#" unbound
            proxy.hold()
            try:
                started = time.perf_counter()
                async with await Client.connect(gateway.url) as second:  # watches all: needs "#"
                    assert (await second.request({"type": "ping"}, timeout=30))["type"] == "pong"
                    first_ping = time.perf_counter() - started
                    started = time.perf_counter()
                    subscribed = await first.request({"type": "subscribe", "servers": ["alpha", "beta"]}, timeout=30)
                    subscribe = time.perf_counter() - started
                    assert subscribed["type"] == "subscribed"
                    assert first_ping < AT_ONCE, f"first ping took {first_ping:.2f} s"
                    assert subscribe < AT_ONCE + 2.0, f"subscribe took {subscribe:.2f} s"
                    proxy.release()
                    async with Client(await connect(gateway.url)) as admin:
                        await admin.request({"type": "subscribe", "servers": []})
                        await admin.request({"type": "command", "command": "worlds", "server": "beta"}, timeout=30)
                    for watcher in (first, second):
                        line = await watcher.expect(lambda m: m.get("type") == "container_output" and m["server"] == "beta", timeout=15)
                        assert line["output"].endswith("worlds")
                    print(f"\nfrozen broker: new session's first ping {first_ping * 1000:.0f} ms, subscribe {subscribe * 1000:.0f} ms")
            finally:
                proxy.release()
    finally:
        await gateway.close()
        await bus.close()
