"""deploy/webhook-receiver.py, the compose fleet's stand-in endpoint: its check accepts what
the notifier signs (resofleet.notifier.formats) and nothing altered, old or malformed."""

from __future__ import annotations

import http.client
import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from resofleet.notifier.formats import signature_header

REPO = Path(__file__).resolve().parents[2]
SECRET = "receiver-test-secret-0123456789"
NOW = 1_764_525_600.0


def load_receiver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_receiver", REPO / "deploy" / "webhook-receiver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


receiver = load_receiver()


def test_what_the_notifier_signs_verifies() -> None:
    body = b'{"event": "server_down", "server": "a1"}'
    assert receiver.verify(SECRET, body, signature_header(SECRET, body, now=NOW), now=NOW + 1)


@pytest.mark.parametrize(
    ("body", "secret", "at"),
    [
        (b'{"event": "server_up", "server": "a1"}', SECRET, NOW),  # another body
        (b'{"event": "server_down", "server": "a1"}', "another-secret-0123456789", NOW),
        (b'{"event": "server_down", "server": "a1"}', SECRET, NOW + 301),  # a replay
    ],
)
def test_an_altered_foreign_or_old_notice_does_not(body: bytes, secret: str, at: float) -> None:
    header = signature_header(SECRET, b'{"event": "server_down", "server": "a1"}', now=NOW)
    assert not receiver.verify(secret, body, header, now=at)


@pytest.mark.parametrize(
    "header", ["", "t=1", "v1=abc", "t=x,v1=abc", "garbage", f"t={NOW:.0f},v1=\u00e9t\u00e9"]
)
def test_a_malformed_header_is_refused_not_raised(header: str) -> None:
    assert not receiver.verify(SECRET, b"{}", header, now=NOW)


@pytest.fixture
def listening(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The receiver's own HTTP server on a free port of 127.0.0.1, serving in a thread."""
    monkeypatch.setattr(receiver.Handler, "secret", SECRET)
    server = receiver.ThreadingHTTPServer(("127.0.0.1", 0), receiver.Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"not json"])
def test_a_signed_body_that_is_no_notice_is_answered_not_dropped(listening: int, body: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """A POST whose body is JSON but no object (or no JSON) still gets its answer (204:
    the signature verifies) and its log line, instead of a dropped connection."""
    connection = http.client.HTTPConnection("127.0.0.1", listening, timeout=5)
    try:
        connection.request("POST", "/", body=body, headers={
            "X-Resofleet-Signature": signature_header(SECRET, body, now=time.time()),
        })
        assert connection.getresponse().status == 204
    finally:
        connection.close()
    assert '"verified": true' in capsys.readouterr().out
