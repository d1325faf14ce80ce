"""The lines `resofleet up` and `resofleet gateway` print when they listen."""

from __future__ import annotations

import pytest

from resofleet.commands.common import announce, dashboard_url


@pytest.mark.parametrize(("ws", "page"), [
    ("ws://127.0.0.1:8000/ws", "http://127.0.0.1:8000/"),
    ("wss://gw.example.com:8443/ws", "https://gw.example.com:8443/"),
    ("ws://[::1]:8000/ws", "http://[::1]:8000/"),
])
def test_the_dashboard_is_on_the_gateways_own_address(ws, page):
    assert dashboard_url(ws) == page


def test_the_listening_line_comes_first_then_the_dashboard(capsys):
    announce("ws://127.0.0.1:8000/ws", " (open: no secret)")
    assert capsys.readouterr().out.splitlines() == [
        "resofleet: gateway listening on ws://127.0.0.1:8000/ws (open: no secret)",
        "resofleet: dashboard at http://127.0.0.1:8000/",
    ]
