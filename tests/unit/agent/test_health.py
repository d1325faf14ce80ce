"""The agent's health endpoint as pure translation: a request head in, response bytes out."""

from __future__ import annotations

import pytest
from resofleet.agent.health import answer, split_address

from resofleet.config import ConfigError, parse_config


def status_and_body(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def ready() -> list[str]:
    return []


def test_healthz_is_ok_whatever_the_readiness() -> None:
    """/healthz is liveness: it never asks about readiness."""

    def unready() -> list[str]:
        raise AssertionError("readiness asked for /healthz")

    assert status_and_body(answer(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", unready)) == (200, "ok\n")


def test_readyz_is_200_when_nothing_is_missing() -> None:
    """No readiness problem: 200 ready."""
    assert status_and_body(answer(b"GET /readyz HTTP/1.1\r\n\r\n", ready)) == (200, "ready\n")


def test_readyz_names_what_is_missing() -> None:
    """Problems: 503 with every reason, in order."""
    response = answer(b"GET /readyz HTTP/1.1\r\n\r\n", lambda: ["bus not connected", "a2 starting"])
    assert status_and_body(response) == (503, "not ready: bus not connected; a2 starting\n")


def test_head_has_the_status_and_length_but_no_body() -> None:
    """HEAD: the same status line and Content-Length as GET, no body."""
    response = answer(b"HEAD /readyz HTTP/1.1\r\n\r\n", lambda: ["a1 exited"])
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and body == b""
    assert b"Content-Length: %d" % len(b"not ready: a1 exited\n") in head


def test_a_query_string_is_ignored() -> None:
    """Probes that add a cache-buster still reach the path."""
    assert status_and_body(answer(b"GET /readyz?x=1 HTTP/1.0\r\n\r\n", ready))[0] == 200


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"GET /ws HTTP/1.1\r\n\r\n", 404),
        (b"POST /readyz HTTP/1.1\r\n\r\n", 405),
        (b"hello\r\n\r\n", 400),
        (b"GET /readyz SPDY/3\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS ClientHello
    ],
)
def test_other_requests_get_a_plain_refusal(head: bytes, status: int) -> None:
    """Anything but GET/HEAD of the two paths: 404, 405 or 400, and the connection closes."""
    response = answer(head, ready)
    assert status_and_body(response)[0] == status
    assert b"Connection: close" in response


def test_405_says_what_is_allowed() -> None:
    """A 405 carries Allow, as HTTP wants."""
    assert b"Allow: GET, HEAD" in answer(b"DELETE /healthz HTTP/1.1\r\n\r\n", ready)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8001", ("127.0.0.1", 8001)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:8001", ("::1", 8001)),
        ("agent-a:65535", ("agent-a", 65535)),
    ],
)
def test_split_address(text: str, address: tuple[str, int]) -> None:
    """HOST:PORT, IPv6 in brackets."""
    assert split_address(text) == address


@pytest.mark.parametrize("text", ["8001", "127.0.0.1", "127.0.0.1:65536", ":8001", "::1:8001", "a b:1", "h:x"])
def test_split_address_refuses(text: str) -> None:
    """Anything else is refused with what is expected."""
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_address(text)


def test_config_reads_health() -> None:
    """``[agent] health`` reaches the agent's settings; absent, it is off."""
    assert parse_config({"agent": {"health": "0.0.0.0:8001"}}).agent.health == "0.0.0.0:8001"
    assert parse_config({}).agent.health is None


@pytest.mark.parametrize("value", ["8001", "127.0.0.1:99999"])
def test_config_refuses_a_bad_health_address(value: str) -> None:
    """A bad address stops the command with one line naming the key."""
    with pytest.raises(ConfigError, match=r"^fleet.toml: agent.health must be HOST:PORT"):
        parse_config({"agent": {"health": value}}, source="fleet.toml")
