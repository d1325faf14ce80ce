"""The gateway's edge over a real bus: bad input, ping, HTTP routes, limits, shutdown.

None of these need an agent; each runs over LocalBus and over RabbitMQ.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from resofleet.contracts import Role
from resofleet.gateway.security import Security
from resofleet.gateway.tokens import Keyring
from tests.support.timing import AT_ONCE

from .client import Client, http_get

BAD_INPUTS = [
    # (frame, code, id echoed, words of the message)
    ("not json", "bad_request", None, "not valid JSON"),
    ("[1, 2]", "bad_request", None, "JSON object"),
    ('"ping"', "bad_request", None, "JSON object"),
    ('{"id": 7}', "bad_request", 7, "no `type`"),
    ('{"type": 5}', "bad_request", None, "`type`"),
    ('{"type": "command", "id": "a"}', "bad_request", "a", "command"),
    ('{"type": "command", "command": 5, "id": "b"}', "bad_request", "b", "command"),
    ('{"type": "get_output", "since": -1, "id": "c"}', "bad_request", "c", "since"),
    ('{"type": "container", "action": "explode", "id": "d"}', "bad_request", "d", "action"),
    ('{"type": "subscribe", "servers": "all", "id": "e"}', "bad_request", "e", "servers"),
    ('{"type": "dance", "id": "f"}', "unknown_type", "f", "Unknown message type 'dance'"),
    ('{"type": "command", "command": "users\\nshutdown", "id": "g"}', "bad_request", "g", "U+000A"),
    ('{"type": "command", "command": "say\\r", "id": "h"}', "bad_request", "h", "U+000D"),
    ('{"type": "command", "command": "a\\u0000b", "id": "i"}', "bad_request", "i", "U+0000"),
    ('{"type": "command", "command": "   ", "id": "j"}', "bad_request", "j", "empty"),
    ('{"type": "command", "command": "users", "server": "Not An Id", "id": "k"}', "unknown_server", "k", "not a server id"),
]


@pytest.mark.parametrize(("frame", "code", "id", "words"), BAD_INPUTS)
async def test_bad_input_is_answered_and_the_connection_survives(start_gateway, frame, code, id, words):
    """Each bad input the README lists gets its documented error; the connection stays open."""
    gateway = await start_gateway()
    async with await Client.connect(gateway.url) as client:
        await client.send(frame)
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == code
        assert error.get("id") == id
        assert words in error["message"]
        assert await client.request({"type": "ping"}) == {"type": "pong", "id": "r1"}


async def test_binary_frame_is_bad_request(start_gateway):
    """A binary frame is answered bad_request and the connection stays open."""
    gateway = await start_gateway()
    async with await Client.connect(gateway.url) as client:
        await client.send(b'{"type": "ping"}')
        error = await client.recv()
        assert (error["type"], error["code"]) == ("error", "bad_request")
        assert "Binary frames" in error["message"]
        assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_oversize_frame_closes_with_1009(start_gateway):
    """A frame over 64 KiB closes the connection with 1009; a frame at the limit does not."""
    gateway = await start_gateway()
    async with await Client.connect(gateway.url) as client:
        at_limit = '{"type":"ping","id":"' + "x" * (64 * 1024 - 23) + '"}'
        assert len(at_limit) == 64 * 1024
        await client.send(at_limit)
        assert (await client.recv())["type"] == "error"  # id longer than 128: bad_request
        await client.send("x" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as info:
            await client.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


@pytest.mark.parametrize("id", [1, "abc", 0])
async def test_ping_echoes_the_id(start_gateway, id):
    """ping is answered pong with the request's id, as given (string or integer)."""
    gateway = await start_gateway()
    async with await Client.connect(gateway.url) as client:
        assert await client.request({"type": "ping", "id": id}) == {"type": "pong", "id": id}
        await client.send({"type": "ping"})
        assert await client.recv() == {"type": "pong"}


async def test_get_servers_without_agents_is_empty(start_gateway):
    """With no agent on the bus, get_servers lists nothing."""
    gateway = await start_gateway()
    async with await Client.connect(gateway.url) as client:
        assert await client.request({"type": "get_servers", "id": 1}) == {
            "type": "servers_update", "servers": [], "id": 1,
        }


@pytest.mark.parametrize("request_type", ["get_status", "get_worlds", "get_output", "command"])
async def test_no_server_online_is_server_offline(start_gateway, request_type):
    """Without `server` and nothing online: server_offline with an actionable sentence."""
    gateway = await start_gateway()
    async with await Client.connect(gateway.url) as client:
        message = {"type": request_type, "id": 3}
        if request_type == "command":
            message["command"] = "users"
        reply = await client.request(message)
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "server_offline", 3)
        assert "No server is online" in reply["message"]


async def test_offline_server_is_answered_at_once(start_gateway):
    """A named server nobody serves is server_offline at once, not after a timeout."""
    gateway = await start_gateway()
    async with await Client.connect(gateway.url) as client:
        await client.request({"type": "ping"})  # warm up the connection
        for request in (
            {"type": "command", "command": "users", "server": "nobody"},
            {"type": "get_status", "server": "nobody"},
            {"type": "container", "action": "restart", "server": "nobody"},
        ):
            started = time.perf_counter()
            reply = await client.request(request)
            elapsed = time.perf_counter() - started
            assert (reply["type"], reply["code"], reply["server"]) == ("error", "server_offline", "nobody")
            assert elapsed < AT_ONCE, f"{request['type']} took {elapsed * 1000:.1f} ms"


async def test_pinned_endpoint_refuses_another_server(start_gateway):
    """On /ws/<id>, a request naming another server is unknown_server."""
    gateway = await start_gateway()
    async with await Client.connect(gateway.url + "/alpha") as client:
        reply = await client.request({"type": "get_status", "server": "beta"})
        assert (reply["type"], reply["code"]) == ("error", "unknown_server")
        reply = await client.request({"type": "get_status"})
        assert (reply["code"], reply["server"]) == ("server_offline", "alpha")


async def test_health_and_readiness(start_gateway, bus_factory):
    """/healthz answers while the process runs; /readyz follows the bus connection."""
    bus = await bus_factory()
    gateway = await start_gateway(bus=bus)
    assert await http_get(gateway.port, "/healthz") == (200, "ok\n")
    assert await http_get(gateway.port, "/readyz") == (200, "ready\n")
    await bus.close()
    status, body = await http_get(gateway.port, "/readyz")
    assert status == 503 and "bus is not connected" in body
    assert (await http_get(gateway.port, "/healthz"))[0] == 200


async def test_unknown_paths_are_404(start_gateway):
    """Only /ws and /ws/<id> are WebSocket endpoints; others get 404 naming them."""
    gateway = await start_gateway()
    status, body = await http_get(gateway.port, "/nope?token=secret")
    assert status == 404 and "/ws" in body
    assert (await http_get(gateway.port, "/ws/Not_An_Id"))[0] == 404
    with pytest.raises(InvalidStatus) as info:
        await Client.connect(gateway.url.replace("/ws", "/socket"))
    assert info.value.response.status_code == 404


async def test_auth_in_open_mode_says_who_the_session_is(start_gateway):
    """An open gateway answers auth with the identity every session has: an admin."""
    gateway = await start_gateway()
    async with await Client.connect(gateway.url) as client:
        reply = await client.request({"type": "auth", "token": "whatever", "id": 9})
        assert reply == {"type": "authenticated", "sub": "local", "role": "admin", "id": 9}


async def test_shutdown_closes_sessions_with_1001_and_stops_accepting(start_gateway):
    """close(): sessions get 1001, new connections are refused, close is idempotent."""
    gateway = await start_gateway()
    clients = [await Client.connect(gateway.url) for _ in range(3)]
    await clients[0].request({"type": "ping"})
    await asyncio.gather(gateway.close(), gateway.close())
    for client in clients:
        with pytest.raises(ConnectionClosed) as info:
            await client.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    with pytest.raises(OSError):
        await Client.connect(gateway.url)
    await gateway.close()
    await gateway.wait_closed()


@pytest.mark.parametrize("compression", [False, True])
async def test_compression_is_offered_only_when_configured(start_gateway, compression):
    """A browser-like client asking for permessage-deflate gets it only with compression on."""
    gateway = await start_gateway(compression=compression)
    async with await Client.connect(gateway.url, compression="deflate") as client:
        offered = client.ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert ("permessage-deflate" in offered) is compression
        assert (await client.request({"type": "ping"}))["type"] == "pong"


#: A WebSocket handshake's own headers, for raw requests.
UPGRADE = {
    "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


async def test_an_open_gateway_refuses_host_names_that_are_not_loopback(start_gateway):
    """DNS rebinding: a page from rebind.example.test, whose name an attacker points at
    127.0.0.1, is same-origin with itself; an open (admin) gateway must not let it in, on
    /ws or /login, while loopback names and addresses still connect."""
    gateway = await start_gateway()
    port = gateway.port
    for host in (f"rebind.example.test:{port}", "rebind.example.test", f"127.0.0.1.example.test:{port}"):
        origin = f"http://{host}"
        status, body = await http_get(port, "/ws", headers={"Host": host, "Origin": origin, **UPGRADE})
        assert status == 421, (host, status, body)
        assert "host" in body.lower()
        status, _ = await http_get(port, "/login?token=x", headers={"Host": host})
        assert status == 421
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"app.localhost:{port}", "127.0.0.2"):
        status, body = await http_get(port, "/ws", headers={"Host": host, "Origin": f"http://{host}", **UPGRADE})
        assert status == 101, (host, status, body)
    # health checks answer whatever name a probe uses
    assert (await http_get(port, "/healthz", headers={"Host": "gateway.internal"}))[0] == 200


async def test_a_secured_gateway_answers_only_the_host_names_it_is_given(start_gateway):
    """With `[gateway] hosts`, a secured gateway refuses other names (421) before looking
    at the token; loopback names still reach it (health checks, a local operator)."""
    keyring = Keyring(("s" * 43,))
    gateway = await start_gateway(security=Security(keyring=keyring, hosts=("dash.example.com",)))
    port = gateway.port
    bearer = {"Authorization": f"Bearer {keyring.issue(role=Role.ADMIN, sub='ann')}"}
    assert (await http_get(port, "/ws", headers={"Host": "other.example.com", **bearer, **UPGRADE}))[0] == 421
    assert (await http_get(port, "/ws", headers={"Host": "dash.example.com", **bearer, **UPGRADE}))[0] == 101
    assert (await http_get(port, "/ws", headers={"Host": f"localhost:{port}", **bearer, **UPGRADE}))[0] == 101
