"""Security end to end: the limits at the edge. Browser origins, the per-connection request
rate, the per-address connection cap, and whose X-Forwarded-For the gateway believes.

Each test runs real gateways in front of an agent driving an emulated console, over
LocalBus and over RabbitMQ, with limits small enough to reach in a few requests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

from websockets.exceptions import InvalidStatus

from resofleet.contracts import Role
from resofleet.gateway.security import Security
from resofleet.gateway.tokens import Keyring, new_secret
from resofleet.gateway.settings import Limits
from tests.integration.gateway.client import RecordingClient, handshake_status, wait_until

from .conftest import servers_online

#: Requests per second and burst in the rate test: a burst is reached in one round trip.
RATE, BURST = 5.0, 10
#: Requests sent at once in the rate test: three times the burst.
FLOOD = 3 * BURST


def bearer(token: str) -> dict:
    return {"additional_headers": {"Authorization": f"Bearer {token}"}}


async def test_pages_from_other_origins_get_403_same_origin_and_configured_ones_connect(audit_file, fleet):
    """A browser page from another origin (or another port, or `null`) gets 403, with or
    without a token and in open mode too; the same origin, a configured origin and a client
    sending no Origin connect."""
    audit = await audit_file("gateway")
    keyring = Keyring((new_secret(),))
    await fleet.agent("l-1")
    secured = await fleet.gateway(
        security=Security(keyring=keyring, origins=("https://dash.example:8443",)), audit=audit.log
    )
    open_mode = await fleet.gateway()  # no secret: loopback, every client an admin
    token = keyring.issue(role=Role.VIEWER, sub="vic", ttl=600)

    for gateway, credentials in ((secured, bearer(token)), (open_mode, {})):
        same = f"http://127.0.0.1:{gateway.port}"
        for origin in ("https://evil.example", f"http://127.0.0.1:{gateway.port + 1}", "null",
                       "http://localhost.evil.example"):
            assert await handshake_status(gateway.url, origin=origin, **credentials) == 403, (gateway, origin)
        for origin in (same, None):
            client = await fleet.client(gateway.url, cls=RecordingClient, origin=origin, **credentials)
            await servers_online(client, ["l-1"])
    assert await handshake_status(secured.url, origin="https://evil.example") == 403  # no token either
    configured = await fleet.client(secured.url, cls=RecordingClient, origin="https://dash.example:8443", **bearer(token))
    await servers_online(configured, ["l-1"])

    refused = await audit.refusals("handshake_refused", 5)
    assert len(refused) == 5 and all(r["reason"] == "origin" for r in refused)


async def test_over_the_rate_a_viewer_gets_rate_limited_for_each_extra_request_and_none_is_dropped(audit_file, fleet):
    """A viewer flooding 3x its burst gets a reply for every request: the console's answer
    up to the burst, `rate_limited` with the id for the rest (which never reach the
    console); after a short wait it gets through again. An admin is not limited."""
    audit = await audit_file("gateway")
    keyring = Keyring((new_secret(),))
    await fleet.agent("l-1")
    gateway = await fleet.gateway(
        security=Security(keyring=keyring, limits=Limits(command_rate=RATE, command_burst=BURST)), audit=audit.log
    )
    viewer = await fleet.client(gateway.url, cls=RecordingClient, **bearer(keyring.issue(role=Role.VIEWER, sub="vic", ttl=600)))
    admin = await fleet.client(gateway.url, cls=RecordingClient, **bearer(keyring.issue(role=Role.ADMIN, sub="root", ttl=600)))
    await servers_online(admin, ["l-1"])

    started = time.monotonic()
    replies = await viewer.requests([{"type": "command", "command": "version", "server": "l-1"}] * FLOOD, timeout=30)
    elapsed = time.monotonic() - started
    answered = [r for r in replies if r["type"] == "command_response"]
    limited = [r for r in replies if r["type"] == "error"]
    assert len(answered) + len(limited) == FLOOD
    assert all(r["code"] == "rate_limited" and "retry" in r["message"] for r in limited), limited[:2]
    assert BURST <= len(answered) <= BURST + RATE * elapsed + 1, (len(answered), elapsed)

    recovered = time.monotonic()

    async def allowed() -> dict | None:
        reply = await viewer.request({"type": "command", "command": "version", "server": "l-1"})
        assert reply["type"] == "command_response" or reply["code"] == "rate_limited", reply
        return reply if reply["type"] == "command_response" else None

    retry = await wait_until(allowed, timeout=5, what="the viewer's next request allowed")
    recovered = time.monotonic() - recovered
    assert retry["output"] == "2026.5.27.1300" and recovered <= 2 / RATE + 0.5

    flood = await admin.requests([{"type": "command", "command": "unban Nobody", "server": "l-1"}] * FLOOD, timeout=30)
    assert all(r["type"] == "command_response" for r in flood)

    await admin.seen(lambda m: m["type"] == "container_output" and m["output"].endswith(">unban Nobody"))
    marker = "unban rate-marker"
    await admin.request({"type": "command", "command": marker, "server": "l-1"})
    await admin.seen(lambda m: m["type"] == "container_output" and m["output"].endswith(">" + marker))
    ran = admin.received(lambda m: m["type"] == "container_output" and m["output"].endswith(">version"))
    assert len(ran) == len(answered) + 1  # the refused ones never reached the console

    refused = len([r for r in viewer.frames if '"rate_limited"' in r])
    await viewer.close()  # a flood's summary record is written when its window ends

    async def summed() -> list[dict] | None:
        records = [r for r in await audit.records() if r["outcome"] == "rate_limited"]
        return records if sum(r.get("refusals", 1) for r in records) == refused else None

    # A flood shares records: the first of each second alone, the rest summed in `refusals`.
    records = await wait_until(summed, timeout=5, what="every refusal accounted for in the audit log")
    assert len(records) < len(limited)
    assert all(r["who"] == "vic" and r["role"] == "viewer" and r["command"] == "version" for r in records)
    print(f"\nrate limit {RATE:g}/s burst {BURST}: {len(answered)} answered, {len(limited)} rate_limited "
          f"of {FLOOD} in {elapsed * 1000:.0f} ms; next allowed after {recovered * 1000:.0f} ms")


async def test_connections_beyond_the_per_address_cap_get_429_until_one_closes(audit_file, fleet):
    """One address may hold only so many connections: the next handshake gets 429 (even
    with a forged X-Forwarded-For), and closing one lets a new one in."""
    audit = await audit_file("gateway")
    keyring = Keyring((new_secret(),))
    await fleet.agent("l-1")
    gateway = await fleet.gateway(
        security=Security(keyring=keyring, limits=Limits(connections_per_address=3), auth_timeout=30),
        audit=audit.log,
    )
    token = keyring.issue(role=Role.ADMIN, sub="root", ttl=600)
    held = [await fleet.client(gateway.url, cls=RecordingClient, **bearer(token)) for _ in range(2)]
    held.append(await fleet.client(gateway.url, cls=RecordingClient))  # no token: counts too
    await servers_online(held[0], ["l-1"])

    assert await handshake_status(gateway.url, **bearer(token)) == 429
    spoofed = {"additional_headers": {"Authorization": f"Bearer {token}", "X-Forwarded-For": "198.51.100.7"}}
    assert await handshake_status(gateway.url, **spoofed) == 429  # not a trusted proxy: ignored

    await held.pop().close()

    async def admitted() -> RecordingClient | None:
        try:
            return await fleet.client(gateway.url, cls=RecordingClient, **bearer(token))
        except InvalidStatus as exc:
            assert exc.response.status_code == 429
            return None

    again = await wait_until(admitted, timeout=5, what="a connection admitted after one closed")
    await servers_online(again, ["l-1"])
    for client in held:
        assert (await client.request({"type": "ping"}))["type"] == "pong"

    refused = await audit.refusals("handshake_refused", 2)
    assert len(refused) >= 2 and {r["client"] for r in refused} == {"127.0.0.1"}
    assert all(r["reason"] == "too many connections" for r in refused)


async def test_behind_a_trusted_proxy_the_cap_counts_each_forwarded_client(audit_file, fleet):
    """Behind a trusted proxy each X-Forwarded-For client has its own cap (and is the
    address audited); the proxy's own address does not count as one client."""
    audit = await audit_file("gateway")
    keyring = Keyring((new_secret(),))
    await fleet.agent("l-1")
    gateway = await fleet.gateway(
        security=Security(
            keyring=keyring, limits=Limits(connections_per_address=2),
            trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
        ),
        audit=audit.log,
    )
    token = keyring.issue(role=Role.OPERATOR, sub="olga", ttl=600)

    def via(client: str) -> dict:
        return {"additional_headers": {"Authorization": f"Bearer {token}", "X-Forwarded-For": f"{client}, 127.0.0.2"}}

    first = [await fleet.client(gateway.url, cls=RecordingClient, **via("203.0.113.1")) for _ in range(2)]
    second = [await fleet.client(gateway.url, cls=RecordingClient, **via("203.0.113.2")) for _ in range(2)]
    assert await handshake_status(gateway.url, **via("203.0.113.1")) == 429
    assert await handshake_status(gateway.url, **via("203.0.113.2")) == 429
    for client in first + second:
        await servers_online(client, ["l-1"])

    refused = await audit.refusals("handshake_refused", 2)
    assert sorted(r["client"] for r in refused) == ["203.0.113.1", "203.0.113.2"]


async def test_a_flood_of_refused_handshakes_is_audited_in_a_few_records(audit_file, fleet):
    """Hammering the port with a bad token is counted in full, but as one record plus a
    summary per second and reason, so a flood cannot rotate the audit log away."""
    audit = await audit_file("gateway")
    keyring = Keyring((new_secret(),))
    gateway = await fleet.gateway(security=Security(keyring=keyring), audit=audit.log)
    forged = Keyring((new_secret(),)).issue(role=Role.ADMIN, sub="mallory", ttl=600)
    flood = 50
    statuses = await asyncio.gather(*(handshake_status(gateway.url, **bearer(forged)) for _ in range(flood)))
    assert statuses == [401] * flood
    refused = await audit.refusals("handshake_refused", flood)
    assert len(refused) == flood and {r["reason"] for r in refused} == {"unknown_key"}
    records = [r for r in await audit.records() if r["outcome"] == "handshake_refused"]
    assert 2 <= len(records) <= 6, records
    assert gateway.guard.refused["handshake_refused"] == flood
