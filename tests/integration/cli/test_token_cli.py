"""`resofleet token` as a user runs it: a real child process, a real broker."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import jwt
import pytest

from resofleet.bus import AmqpBus
from resofleet.contracts import Revoke, Role, Topology
from resofleet.gateway.tokens import MAX_TTL, Keyring, key_id

SECRET = "k" * 43
#: Seconds a `resofleet token` process may take (Python start-up plus a broker round trip).
CLI_TIMEOUT = 30.0


async def resofleet(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RESOFLEET_")}
    full.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resofleet", *args, env=full,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(CLI_TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_issue_prints_a_token_the_gateway_accepts() -> None:
    """`token issue` prints one verifiable token on stdout and its id on stderr."""
    code, out, err = await resofleet(
        "token", "issue", "--role", "moderator", "--servers", "eu-*", "--ttl", "2h",
        "--sub", "alice", env={"RESOFLEET_SECRET": SECRET},
    )
    assert code == 0, err
    token = out.strip()
    assert "\n" not in token
    principal = Keyring((SECRET,)).verify(token)
    assert (principal.sub, principal.role, principal.servers) == ("alice", Role.MODERATOR, ("eu-*",))
    assert principal.expires is not None and 7100 < principal.expires - time.time() <= 7201  # exp is rounded up to a second
    assert principal.jti in err and "alice" in err
    assert jwt.get_unverified_header(token)["kid"] == key_id(SECRET)


async def test_issue_without_a_secret_says_how_to_make_one() -> None:
    """Without a secret, one line says what to set and how to make it."""
    code, out, err = await resofleet("token", "issue", "--role", "viewer")
    assert code != 0 and out == ""
    assert "RESOFLEET_SECRET" in err and "resofleet token secret" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "needle"), [
    (("--ttl", "2y"), "--ttl"),
    (("--servers", "EU 1"), "server pattern"),
])
async def test_issue_refuses_bad_arguments(args: tuple[str, ...], needle: str) -> None:
    """Bad durations and patterns are refused with one line and no token."""
    code, out, err = await resofleet("token", "issue", "--role", "viewer", *args, env={"RESOFLEET_SECRET": SECRET})
    assert code != 0 and out == "" and needle in err


async def test_secret_prints_a_usable_secret() -> None:
    """`token secret` prints a fresh secret long enough for the gateway to accept."""
    code, first, _ = await resofleet("token", "secret")
    code2, second, _ = await resofleet("token", "secret")
    assert code == code2 == 0 and first != second and len(first.strip()) >= 43
    code, out, err = await resofleet("token", "issue", "--role", "admin", env={"RESOFLEET_SECRET": first.strip()})
    assert code == 0, err


async def _revocation(amqp_url: str, topology: Topology, *args: str) -> Revoke:
    bus = AmqpBus(amqp_url, topology=topology)
    await bus.start()
    try:
        presence = await bus.presence()
        code, out, err = await resofleet(
            "token", "revoke", *args,
            env={"RESOFLEET_AMQP_URL": amqp_url, "RESOFLEET_BUS_PREFIX": topology.prefix},
        )
        assert code == 0, err
        async with asyncio.timeout(CLI_TIMEOUT):
            async for message in presence:
                if isinstance(message, Revoke):
                    return message
        raise AssertionError("presence ended")
    finally:
        await bus.close()


@pytest.mark.amqp
async def test_revoke_by_id_reaches_the_bus(amqp_url: str, topology: Topology) -> None:
    """`token revoke ID` publishes the id for as long as any token can live."""
    message = await _revocation(amqp_url, topology, "abc123")
    assert message.jti == "abc123"
    assert message.until == pytest.approx(time.time() + MAX_TTL, abs=60)


@pytest.mark.amqp
async def test_revoke_by_token_lasts_until_it_expires(amqp_url: str, topology: Topology) -> None:
    """Given the token itself, the revocation ends when the token would have expired."""
    token = Keyring((SECRET,)).issue(role=Role.VIEWER, sub="bob", ttl=600, jti="j-bob")
    message = await _revocation(amqp_url, topology, token)
    assert message.jti == "j-bob"
    assert message.until == pytest.approx(time.time() + 600, abs=60)


async def test_revoke_without_a_bus_explains() -> None:
    """Without a broker, revoke says why it cannot and what to do instead."""
    code, _, err = await resofleet("token", "revoke", "abc")
    assert code != 0 and "--amqp" in err and "revoked" in err
