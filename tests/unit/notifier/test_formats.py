"""Webhook bodies and the signature, without I/O (resofleet.notifier.formats), and the
notifier's settings (resofleet.notifier.settings)."""

from __future__ import annotations

import hashlib
import hmac
import json

import msgspec
import pytest

from resofleet.notifier import Notice, WebhookSettings, discord_body, json_body, resolve_secret, resolve_url, retry_time
from resofleet.notifier.delivery import backoff_delay
from resofleet.notifier.formats import escape_markdown, plain, signature_header
from resofleet.notifier.presence import PresenceWatch
from resofleet.contracts import Announce, ServerPresence

SECRET = "s" * 32
NOTICE = Notice(
    id="abc", event="user_joined", server="eu-1", time=1_700_000_000.0,
    text="@everyone *Eve* joined Hub on eu-1",
    data={"user": "<color=red>@everyone *Eve*</color>", "world": "Hub", "users": 3},
)


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    """The header verifies with the documented algorithm, computed independently."""
    body = json_body(NOTICE)
    header = signature_header(SECRET, body, now=1_700_000_123.9)
    parts = dict(p.split("=", 1) for p in header.split(","))
    assert parts["t"] == "1700000123"
    expected = hmac.new(SECRET.encode(), b"1700000123." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)


def test_json_body_is_the_notice():
    assert json.loads(json_body(NOTICE)) == {
        "id": "abc", "event": "user_joined", "server": "eu-1", "time": 1_700_000_000.0,
        "text": NOTICE.text, "data": NOTICE.data,
    }


def test_discord_body_shape_and_no_mentions():
    """One embed with title, escaped description, colour and timestamp; no mention can ping."""
    body = json.loads(discord_body(NOTICE))
    assert body["allowed_mentions"] == {"parse": []}
    (embed,) = body["embeds"]
    assert embed["title"] == "User joined: eu-1"
    assert embed["description"] == r"@everyone \*Eve\* joined Hub on eu-1"
    assert isinstance(embed["color"], int)
    assert embed["timestamp"].startswith("2023-11-14T22:13:20")


def test_discord_body_respects_discord_limits():
    long = msgspec.structs.replace(NOTICE, text="x" * 10_000)
    (embed,) = json.loads(discord_body(long))["embeds"]
    assert len(embed["description"]) == 4096


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("<color=#ff0000>Red</color>", "Red"),
        ("<b><i>Bold</i></b> name", "Bold name"),
        ("<size=150%>Big</size>", "Big"),
        ("a < b > c", "a < b > c"),
        ("line\nbreak", "line break"),
    ],
)
def test_plain_strips_rich_text_tags(raw, shown):
    assert plain(raw) == shown


def test_markdown_is_escaped():
    assert escape_markdown("_a_ **b** `c` ~~d~~ |e| > f") == r"\_a\_ \*\*b\*\* \`c\` \~\~d\~\~ \|e\| \> f"


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter():
    assert [backoff_delay(n, base=1.0, cap=10.0, rnd=lambda: 0.5) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    assert backoff_delay(1, base=1.0, cap=10.0, rnd=lambda: 0.0) == pytest.approx(0.9)
    assert backoff_delay(1, base=1.0, cap=10.0, rnd=lambda: 1.0) == pytest.approx(1.1)


def test_secret_from_env_or_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    hook = WebhookSettings(name="ops", url="https://example.invalid/h", secret_env="HOOK_SECRET")
    assert resolve_secret(hook) == SECRET
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    assert resolve_secret(WebhookSettings(name="ops", url="https://x.invalid/", secret_file=str(path))) == SECRET


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "needs a signing secret"),
        ({"secret_env": "NOT_SET_ANYWHERE_1"}, "needs a signing secret"),
        ({"secret": SECRET, "secret_env": "X"}, "set one of them"),
        ({"secret_file": "/nonexistent/secret"}, "cannot be read"),
    ],
)
def test_secret_problems_are_named_without_the_secret(fields, problem):
    hook = WebhookSettings(name="ops", url="https://x.invalid/", **fields)
    with pytest.raises(ValueError, match=problem) as info:
        resolve_secret(hook)
    assert SECRET not in str(info.value)


def test_url_inline_from_env_or_file(tmp_path, monkeypatch):
    url = "https://discord.example/api/webhooks/1/token"
    assert resolve_url(WebhookSettings(name="d", url=url)) == url
    monkeypatch.setenv("CHAT_URL", url)
    assert resolve_url(WebhookSettings(name="d", url_env="CHAT_URL")) == url
    path = tmp_path / "url"
    path.write_text(url + "\n")
    assert resolve_url(WebhookSettings(name="d", url_file=str(path))) == url


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "needs a URL: set url, url_env or url_file"),
        ({"url_env": "NOT_SET_ANYWHERE_2"}, "the environment variable NOT_SET_ANYWHERE_2 is empty or unset"),
        ({"url_env": "CHAT_URL", "url_file": "/x"}, "sets url_env and url_file: set one of them"),
        ({"url_file": "/nonexistent/url"}, r"url_file cannot be read \(FileNotFoundError\)"),
        ({"url_env": "BAD_URL"}, "the environment variable BAD_URL must hold an http:// or https:// URL"),
    ],
)
def test_url_problems_are_named_without_the_url(fields, problem, monkeypatch):
    monkeypatch.setenv("CHAT_URL", "https://discord.example/api/webhooks/1/token")
    monkeypatch.setenv("BAD_URL", "ftp://discord.example/api/webhooks/1/token")
    with pytest.raises(ValueError, match=problem) as info:
        resolve_url(WebhookSettings(name="d", format="discord", **fields))
    assert "webhooks/1/token" not in str(info.value)


def test_discord_needs_no_secret():
    assert resolve_secret(WebhookSettings(name="d", url="https://x.invalid/", format="discord")) is None


def test_retry_time_adds_attempts_and_waits():
    hook = WebhookSettings(name="d", url="https://x.invalid/", timeout=2, max_attempts=3, backoff=1, max_backoff=60)
    assert retry_time(hook) == 3 * 2 + 1 + 2


def test_presence_lapse_and_return():
    """Three missed intervals lapse a server once; an announcement brings it back; an
    agent that stops naming a server drops it at once; a link down stops the clock."""
    watch = PresenceWatch()

    def announce(*servers: str, agent: str = "h1") -> Announce:
        return Announce(agent=agent, host="h", servers=[ServerPresence(server=s, status="running") for s in servers], interval=1.0)

    assert watch.announce(announce("a", "b"), now=0.0) == ([], [])
    assert watch.lapsed(now=2.9) == []
    assert watch.announce(announce("a"), now=2.9) == ([], ["b"])
    assert watch.lapsed(now=6.0) == ["a"]
    assert watch.lapsed(now=7.0) == []
    assert watch.announce(announce("a"), now=8.0) == (["a"], [])
    watch.link_down()
    assert watch.lapsed(now=100.0) == [] and watch.next_due() is None
    watch.link_up(now=100.0)
    assert watch.lapsed(now=102.0) == []
    assert watch.lapsed(now=103.5) == ["a"]
