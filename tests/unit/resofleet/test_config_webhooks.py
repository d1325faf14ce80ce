"""``[notifier]`` and ``[[webhooks]]`` in the config (resofleet.config)."""

from __future__ import annotations

import pytest

from resofleet.config import ConfigError, parse_config

SECRET = "0123456789abcdef-secret"


def hook(**fields: object) -> dict[str, object]:
    return {"name": "ops", "url": "https://hooks.example.com/x", "secret": SECRET, **fields}


def test_webhooks_map_onto_the_notifier_settings(monkeypatch):
    monkeypatch.setenv("CHAT_HOOK", "https://discord.example.com/api/webhooks/1/token")
    config = parse_config({
        "notifier": {"users_threshold": 20},
        "webhooks": [
            hook(events=["server_down"], servers=["eu-*"]),
            {"name": "chat", "url": "https://discord.example.com/api/webhooks/1/t", "format": "discord"},
        ],
    })
    assert config.notifier.users_threshold == 20
    assert [w.name for w in config.webhooks] == ["ops", "chat"]
    assert config.webhooks[0].events == ("server_down",)
    assert config.webhook_secrets == {"ops": SECRET, "chat": None}


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"webhooks": [hook(), hook()]}, "webhooks[1].name 'ops' appears twice"),
        ({"webhooks": [hook(secret=None)]}, "webhooks[0] needs a signing secret"),
        ({"webhooks": [hook(events=["server_gone"])]}, "webhooks[0].events[0] must be one of"),
        ({"webhooks": [hook(url="ftp://x")]}, "webhooks[0].url must be an http:// or https:// URL"),
        ({"webhooks": [hook(secret="short")]}, "webhooks[0].secret must be a secret of at least 16"),
        ({"webhooks": [hook(max_attempts=50, timeout=60)]}, "webhooks[0] may retry a notice for"),
        ({"notifier": {"health": "nowhere"}}, "notifier.health"),
        ({"notifier": {"users_thresold": 3}}, "notifier.users_thresold is not a known key"),
    ],
)
def test_bad_webhook_config_is_one_clear_line(data, line):
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="fleet.toml")
    assert str(info.value).startswith("fleet.toml: ")
    assert line in str(info.value)
    assert SECRET not in str(info.value) and "short" not in str(info.value).split("must")[0]
