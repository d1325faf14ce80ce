"""Security end to end: what an unauthenticated client can cost the gateway. Frames before
authentication are small and few (``auth`` included), their refusals share audit records
per client address and keep only a prefix of what was sent, and a flood cannot rotate an
earlier record out of the audit log.

Real gateways in front of an agent driving an emulated console, over LocalBus and over
RabbitMQ.
"""

from __future__ import annotations

import asyncio
import json

from resofleet.audit import AuditLog
from resofleet.contracts import Role
from resofleet.gateway.security import Security
from resofleet.gateway.settings import DEFAULT_PRE_AUTH_FRAME, Limits
from resofleet.gateway.tokens import Keyring, new_secret
from resofleet.gateway.server import OPEN_TIMEOUT
from tests.integration.gateway.client import Client, RecordingClient, handshake_status
from tests.support.timing import AT_ONCE

from .conftest import servers_online

#: Requests per second and burst before authentication in these tests.
PRE_RATE, PRE_BURST = 1.0, 4


def bearer(token: str) -> dict:
    return {"additional_headers": {"Authorization": f"Bearer {token}"}}


def padded(size: int) -> str:
    """A ``ping`` frame of ``size`` bytes (JSON whitespace)."""
    head, tail = '{"type":"ping","id":"big"', "}"
    return head + " " * (size - len(head) - len(tail)) + tail


async def test_before_auth_frames_over_4_kib_close_1009_after_auth_64_kib_pass(audit_file, fleet):
    """Until it authenticates a connection may send frames of 4 KiB (a larger one closes it
    with 1009, audited); once authenticated in band, frames up to 64 KiB are answered."""
    audit = await audit_file("gateway")
    keyring = Keyring((new_secret(),))
    await fleet.agent("l-1")
    gateway = await fleet.gateway(security=Security(keyring=keyring, auth_timeout=30), audit=audit.log)

    small = await fleet.client(gateway.url)
    await small.send(padded(DEFAULT_PRE_AUTH_FRAME))
    assert (await small.recv())["type"] == "pong"

    early = await fleet.client(gateway.url)
    await early.send(padded(DEFAULT_PRE_AUTH_FRAME + 1))
    assert await early.closed() == 1009

    late = await fleet.client(gateway.url)
    token = keyring.issue(role=Role.VIEWER, sub="vic", ttl=600)
    assert (await late.request({"type": "auth", "token": token}))["type"] == "authenticated"
    await late.send(padded(60 * 1024))
    # Authenticated, the client also gets pushed events; the answer is the one with our id.
    assert (await late.expect(lambda m: m.get("id") == "big"))["type"] == "pong"
    await servers_online(late, ["l-1"])

    refused = await audit.refusals("rejected_input", 1)
    assert [r["reason"] for r in refused] == ["frame too big"] and refused[0]["who"] == "-"


async def test_before_auth_every_frame_auth_included_spends_a_small_bucket(audit_file, fleet):
    """An unauthenticated connection flooding `auth` with bad tokens gets an answer for each:
    `unauthenticated` up to the pre-authentication burst, `rate_limited` after; the audit
    log sums them per client address in a few records; a good token still gets in once the
    bucket refills."""
    audit = await audit_file("gateway")
    keyring = Keyring((new_secret(),))
    await fleet.agent("l-1")
    gateway = await fleet.gateway(
        security=Security(keyring=keyring, auth_timeout=30, limits=Limits(pre_auth_rate=PRE_RATE, pre_auth_burst=PRE_BURST)),
        audit=audit.log,
    )
    flood = 10 * PRE_BURST
    clients = [await fleet.client(gateway.url) for _ in range(3)]
    replies = await asyncio.gather(
        *(c.requests([{"type": "auth", "token": "x" * 900}] * flood, timeout=30) for c in clients)
    )
    for answers in replies:
        codes = [r["code"] for r in answers]
        assert len(codes) == flood
        assert set(codes) == {"unauthenticated", "rate_limited"}, codes
        assert PRE_BURST <= codes.count("unauthenticated") <= PRE_BURST + 2, codes

    token = keyring.issue(role=Role.VIEWER, sub="vic", ttl=600)

    async def authenticated() -> dict | None:
        reply = await clients[0].request({"type": "auth", "token": token})
        return reply if reply["type"] == "authenticated" else None

    from tests.integration.gateway.client import wait_until

    await wait_until(authenticated, timeout=5 / PRE_RATE, what="auth allowed after the bucket refilled")
    await servers_online(clients[0], ["l-1"])

    total = 3 * flood
    limited = await audit.refusals("rate_limited", total - 3 * (PRE_BURST + 2))
    unauth = await audit.refusals("unauthenticated", 3 * PRE_BURST)
    records = [r for r in await audit.records() if r["outcome"] in ("rate_limited", "unauthenticated")]
    assert len(records) <= 12, records  # per address and second, not per connection or frame
    assert all(len(r["command"] or "") <= 64 for r in records)
    print(f"\npre-auth flood: {total} auth frames from 3 connections, {len(records)} audit records "
          f"({len(limited)} rate_limited, {len(unauth)} unauthenticated)")


async def test_a_marker_record_survives_an_unauthenticated_flood(tmp_path, fleet):
    """A refusal recorded before a flood (a viewer's forbidden command) is still in the audit
    files after many unauthenticated connections sent bursts of long refused commands and
    bad `auth` frames and reconnected, over and over."""
    path = tmp_path / "gateway.jsonl"
    audit = AuditLog(path, source="gateway", max_bytes=32 * 1024, backups=2)
    await audit.start()
    try:
        keyring = Keyring((new_secret(),))
        await fleet.agent("l-1")
        gateway = await fleet.gateway(security=Security(keyring=keyring, auth_timeout=30), audit=audit)
        viewer = await fleet.client(gateway.url, **bearer(keyring.issue(role=Role.VIEWER, sub="vic", ttl=600)))
        await servers_online(viewer, ["l-1"])
        marker = "shutdown marker-7f3a"
        reply = await viewer.request({"type": "command", "command": marker, "server": "l-1"})
        assert reply["code"] == "forbidden"

        long = "kick " + "A" * 1_100

        async def hostile() -> None:
            for _ in range(3):  # reconnect, as a flood does
                client = await Client.connect(gateway.url)
                try:
                    burst = [{"type": "command", "command": long, "server": "l-1"}] * 40
                    burst += [{"type": "auth", "token": "y" * 1_000}] * 20
                    await client.requests(burst, timeout=30)
                finally:
                    await client.close()

        await asyncio.gather(*(hostile() for _ in range(40)))
        await audit.flush()
        kept = [p for p in sorted(tmp_path.glob("gateway.jsonl*"))]
        lines = [json.loads(line) for p in kept for line in p.read_text(encoding="utf-8").splitlines()]
        assert any(r.get("command") == marker and r["who"] == "vic" for r in lines), (
            f"marker rotated away: {len(lines)} records in {len(kept)} files"
        )
        unauth = [r for r in lines if r["who"] == "-"]
        assert all(len(r["command"] or "") <= 64 for r in unauth)
        print(f"\nflood of 120 unauthenticated connections: {len(lines)} records kept in "
              f"{len(kept)} files, marker kept; {len(unauth)} unauthenticated records")
    finally:
        await audit.close()


async def test_half_open_connections_count_against_the_address_until_the_handshake_deadline(audit_file, fleet):
    """TCP connections that never finish their handshake hold their address's slots: with
    the cap reached by silent sockets a handshake gets 429; the gateway drops each silent
    socket at the handshake deadline, and then a client gets in."""
    audit = await audit_file("gateway")
    keyring = Keyring((new_secret(),))
    await fleet.agent("l-1")
    cap = 3
    gateway = await fleet.gateway(
        security=Security(keyring=keyring, limits=Limits(connections_per_address=cap)), audit=audit.log
    )
    token = keyring.issue(role=Role.VIEWER, sub="vic", ttl=600)
    silent = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(cap)]
    opened = asyncio.get_running_loop().time()
    try:
        assert await handshake_status(gateway.url, **bearer(token)) == 429

        async def dropped(reader: asyncio.StreamReader) -> None:
            assert await reader.read() == b""  # EOF: the gateway closed it

        async with asyncio.timeout(OPEN_TIMEOUT + AT_ONCE):
            await asyncio.gather(*(dropped(reader) for reader, _ in silent))
        waited = asyncio.get_running_loop().time() - opened
        assert waited >= OPEN_TIMEOUT * 0.9, waited
        client = await fleet.client(gateway.url, cls=RecordingClient, **bearer(token))
        await servers_online(client, ["l-1"])
    finally:
        for _, writer in silent:
            writer.close()
    refused = await audit.refusals("handshake_refused", 1)
    assert refused[0]["reason"] == "too many connections"
    print(f"\n{cap} silent sockets held the address's slots; dropped after {waited:.1f} s (open timeout {OPEN_TIMEOUT:g} s)")


async def test_far_over_the_cap_tcp_connections_are_closed_at_accept(fleet):
    """Past twice the per-address cap, a new TCP connection from that address is closed at
    once, before it may send a byte: a flood of half-open sockets costs no handshake."""
    keyring = Keyring((new_secret(),))
    cap = 2
    gateway = await fleet.gateway(security=Security(keyring=keyring, limits=Limits(connections_per_address=cap)))
    silent = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(2 * cap)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        async with asyncio.timeout(AT_ONCE):
            assert await reader.read() == b""
        writer.close()
        assert gateway.guard.connections("127.0.0.1") == 2 * cap
    finally:
        for _, w in silent:
            w.close()
