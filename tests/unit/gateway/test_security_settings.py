"""Security settings from the configuration, and what counts as loopback."""

from __future__ import annotations

import pytest

from resofleet.gateway.security import AUTH_TIMEOUT, Security, is_loopback
from resofleet.config import parse_config
from resofleet.gateway.settings import Limits

SECRET = "s" * 43


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESOFLEET_SECRET", raising=False)


def test_default_is_open_mode():
    """No secret: no keyring, every client an admin."""
    security = Security.from_settings(parse_config({}).gateway)
    assert security.open and security.keyring is None
    assert security.limits == Limits() and security.auth_timeout == AUTH_TIMEOUT == 5.0


def test_settings_carry_over():
    """Secrets become a keyring; origins, proxies, revoked ids and limits carry over."""
    config = parse_config(
        {
            "gateway": {
                "secret": SECRET,
                "origins": ["https://Dash.Example.com"],
                "trusted_proxies": ["10.0.0.0/8"],
                "revoked": ["j1"],
                "limits": {"command_rate": 5, "command_burst": 7, "connections_per_address": 3},
            }
        }
    )
    security = Security.from_settings(config.gateway)
    assert not security.open and security.keyring is not None
    assert security.keyring.secrets == (SECRET,)
    assert security.origins == ("https://dash.example.com",)
    assert [str(n) for n in security.trusted_proxies] == ["10.0.0.0/8"]
    assert security.revoked == ("j1",)
    assert security.limits == Limits(command_rate=5.0, command_burst=7, connections_per_address=3)


def test_environment_secret_wins(monkeypatch: pytest.MonkeyPatch):
    """RESOFLEET_SECRET (whitespace-separated) replaces the configured secrets."""
    monkeypatch.setenv("RESOFLEET_SECRET", f"{'n' * 43} {'o' * 43}")
    security = Security.from_settings(parse_config({"gateway": {"secret": SECRET}}).gateway)
    assert security.keyring is not None and security.keyring.secrets == ("n" * 43, "o" * 43)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.5.5.5", True), ("::1", True), ("[::1]", True),
        ("localhost", True), ("LOCALHOST", True),
        ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.1", False),
        ("example.com", False), ("localhost.example.com", False),
    ],
)
def test_is_loopback(host, loopback):
    """Only 127.0.0.0/8, ::1 and localhost are loopback."""
    assert is_loopback(host) is loopback
