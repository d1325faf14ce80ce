"""The gateway's ``/metrics`` over a real gateway and bus: counts equal the traffic sent,
and who may read them."""

from __future__ import annotations

from resofleet.contracts import Role
from resofleet.gateway import Security
from resofleet.gateway.tokens import Keyring
from tests.support.scrape import get, parse, scrape, value

from .client import Client, wait_until
from .test_requests import announce, answering

SECRET = "m" * 43
KEYRING = Keyring((SECRET,))


def token(role: Role) -> str:
    return KEYRING.issue(role=role, sub="metrics-test")


async def test_counters_equal_the_traffic_sent(start_gateway, bus_factory):
    """N commands, M forbidden ones, K bad frames: the counters say exactly that."""
    gateway = await start_gateway(security=Security(keyring=KEYRING))
    agent_bus = await bus_factory()
    await agent_bus.serve("m1", answering("m1"))
    await announce(agent_bus, "a1", "m1")
    await wait_until(lambda: gateway.registry.online() == ["m1"], what="m1 announced")
    admin = token(Role.ADMIN)
    n, m, k = 5, 3, 4
    async with await Client.connect(gateway.url + f"?token={token(Role.VIEWER)}") as client:
        for i in range(n):
            reply = await client.request({"type": "command", "server": "m1", "command": "users"})
            assert reply["type"] == "command_response"
        for i in range(m):
            reply = await client.request({"type": "command", "server": "m1", "command": "kick bob"})
            assert reply["code"] == "forbidden"
        for i in range(k):
            await client.send("{not json")
            assert (await client.recv())["code"] == "bad_request"
        during = await scrape(gateway.port, token=admin)
    assert value(during, "resofleet_gateway_connections", state="authenticated") == 1
    assert value(during, "resofleet_gateway_ready") == 1
    assert value(during, "resofleet_gateway_requests_total", type="command", outcome="ok") == n
    assert value(during, "resofleet_gateway_requests_total", type="command", outcome="forbidden") == m
    assert value(during, "resofleet_gateway_requests_total", type="invalid", outcome="bad_request") == k
    assert value(during, "resofleet_gateway_request_seconds_count", type="command") == n + m
    assert value(during, "resofleet_gateway_refused_total", reason="forbidden") == m
    assert value(during, "resofleet_gateway_refused_total", reason="rejected_input") == k
    assert value(during, "resofleet_gateway_sent_bytes_total") > 0
    after = await wait_until(
        lambda: _closed(gateway.port, admin), what="the session to end"
    )
    assert value(after, "resofleet_gateway_connections", state="authenticated") == 0


async def _closed(port: int, admin: str):
    samples = await scrape(port, token=admin)
    return samples if value(samples, "resofleet_gateway_connections", state="authenticated") == 0 else None


async def test_metrics_need_an_admin_token_when_a_secret_is_set(start_gateway):
    """No token: 401; a refused one: 401; a viewer's: 403; an admin's: 200."""
    gateway = await start_gateway(security=Security(keyring=KEYRING))
    assert (await get(gateway.port))[0] == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert (await get(gateway.port, headers=bad))[0] == 401
    viewer = {"Authorization": f"Bearer {token(Role.VIEWER)}"}
    assert (await get(gateway.port, headers=viewer))[0] == 403
    status, headers, body = await get(
        gateway.port, headers={"Authorization": f"Bearer {token(Role.ADMIN)}"}
    )
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    assert value(parse(body.decode()), "resofleet_gateway_refused_total", reason="handshake_refused") == 1


async def test_open_mode_serves_metrics_and_openmetrics_when_asked(start_gateway):
    """Open loopback mode: no token needed; ``Accept: application/openmetrics-text``
    gets OpenMetrics, ending with one ``# EOF``."""
    gateway = await start_gateway()
    status, headers, body = await get(
        gateway.port, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
    assert b"resofleet_gateway_ready 1.0" in body
