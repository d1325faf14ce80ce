"""The security keys of the configuration: each bad value is one clear line naming the key."""

from __future__ import annotations

import ipaddress

import pytest

from resofleet.config import ConfigError, parse_config
from resofleet.gateway.security import Security
from resofleet.gateway.settings import Limits

SECRET = "s" * 43
OLD = "o" * 43


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RESOFLEET_SECRET", "RESOFLEET_AUDIT_DIR", "RESOFLEET_BUS_PREFIX"):
        monkeypatch.delenv(name, raising=False)


def test_no_secret_means_open() -> None:
    """Without any secret the gateway has none (it then runs open, on loopback only)."""
    config = parse_config({})
    assert config.gateway.secrets == () and config.gateway.limits == Limits()


def test_secret_signs_and_old_secrets_are_accepted_after_it() -> None:
    """The configured secret comes first (it signs), old ones follow."""
    config = parse_config({"gateway": {"secret": SECRET, "old_secrets": [OLD]}})
    assert config.gateway.secrets == (SECRET, OLD)


def test_env_secret_replaces_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """RESOFLEET_SECRET holds whitespace-separated secrets, the first signing."""
    monkeypatch.setenv("RESOFLEET_SECRET", f"{OLD} {SECRET}")
    assert parse_config({"gateway": {"secret": SECRET}}).gateway.secrets == (OLD, SECRET)


def test_secrets_never_show_in_repr() -> None:
    """A config printed in a log line does not print the secret."""
    config = parse_config({"gateway": {"secret": SECRET}})
    assert SECRET not in repr(config) and SECRET not in repr(config.gateway)


@pytest.mark.parametrize(
    ("gateway", "key"),
    [
        ({"secret": "short"}, "at least 32 characters"),
        ({"secret": 5}, "gateway.secret"),
        ({"old_secrets": [OLD]}, "gateway.old_secrets"),
        ({"secret": SECRET, "old_secrets": ["x"]}, "at least 32 characters"),
        ({"origins": ["dash.example.com"]}, "gateway.origins"),
        ({"origins": ["https://a.example/path"]}, "gateway.origins"),
        ({"trusted_proxies": ["not-an-ip"]}, "gateway.trusted_proxies"),
        ({"limits": {"command_rate": 0}}, "gateway.limits.command_rate"),
        ({"limits": {"connections_per_address": 0}}, "gateway.limits.connections_per_address"),
        ({"limits": {"command_burst": 2.5}}, "gateway.limits.command_burst"),
        ({"limits": 3}, "[gateway.limits]"),
        ({"audit_log": 3}, "gateway.audit_log"),
        ({"revoked": [""]}, "gateway.revoked"),
        ({"compression": "yes"}, "gateway.compression"),
    ],
)
def test_bad_security_values_name_the_key(gateway: dict, key: str) -> None:
    """Each bad value is refused with a line that names what to fix."""
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_config({"gateway": gateway}, source="fleet.toml")


def test_short_env_secret_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A too-short RESOFLEET_SECRET is blamed on the variable, with how to make a good one."""
    monkeypatch.setenv("RESOFLEET_SECRET", "short")
    with pytest.raises(ConfigError, match=r"^RESOFLEET_SECRET: .*resofleet token secret"):
        parse_config({})


def test_limits_origins_proxies_parsed() -> None:
    """Limits come out typed; the gateway gets origins lowercased and proxies as networks."""
    config = parse_config({"gateway": {
        "origins": ["https://Dash.Example.com:8443"],
        "trusted_proxies": ["10.0.0.0/8", "::1"],
        "limits": {"command_rate": 5, "command_burst": 7, "connections_per_address": 9},
    }})
    security = Security.from_settings(config.gateway)
    assert security.origins == ("https://dash.example.com:8443",)
    assert security.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1"))
    assert config.gateway.limits == Limits(command_rate=5.0, command_burst=7, connections_per_address=9)


def test_audit_paths_default_to_the_audit_dir(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Audit logs go to RESOFLEET_AUDIT_DIR by default; false turns one off."""
    monkeypatch.setenv("RESOFLEET_AUDIT_DIR", str(tmp_path))
    config = parse_config({"agent": {"audit_log": False}})
    assert config.gateway.audit_log == str(tmp_path / "gateway.jsonl")
    assert config.agent.audit_log is None


def test_bus_prefix_from_file_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deployments sharing a broker set a prefix; a bad one is refused."""
    assert parse_config({"bus": {"prefix": "prod."}}).bus_prefix == "prod."
    monkeypatch.setenv("RESOFLEET_BUS_PREFIX", "test-1.")
    assert parse_config({}).bus_prefix == "test-1."
    with pytest.raises(ConfigError, match="bus.prefix"):
        parse_config({"bus": {"prefix": "a b"}})


def test_compression_is_off_unless_asked_for() -> None:
    """permessage-deflate is offered only when configured."""
    assert parse_config({}).gateway.compression is False
    assert parse_config({"gateway": {"compression": True}}).gateway.compression is True
