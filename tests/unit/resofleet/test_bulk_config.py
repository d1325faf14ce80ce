"""`[gateway] bulk_concurrency`: its default, and one clear line for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from resofleet.config import ConfigError, parse_config
from resofleet.gateway.settings import DEFAULT_BULK_CONCURRENCY


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RESOFLEET_SECRET", "RESOFLEET_AMQP_URL", "RESOFLEET_BUS_PREFIX", "RESOFLEET_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESOFLEET_AUDIT_DIR", str(tmp_path / "audit"))


def test_bulk_concurrency_defaults_to_16_and_is_read_from_the_gateway_table():
    assert DEFAULT_BULK_CONCURRENCY == 16
    assert parse_config({}).gateway.bulk_concurrency == DEFAULT_BULK_CONCURRENCY
    assert parse_config({"gateway": {"bulk_concurrency": 4}}).gateway.bulk_concurrency == 4


@pytest.mark.parametrize("value", [0, 257, "16", 2.5])
def test_a_bad_bulk_concurrency_is_one_line_naming_the_key(value):
    with pytest.raises(ConfigError) as caught:
        parse_config({"gateway": {"bulk_concurrency": value}}, source="fleet.toml")
    message = str(caught.value)
    assert message.startswith("fleet.toml: gateway.bulk_concurrency") and "\n" not in message
    assert "from 1 to 256" in message
