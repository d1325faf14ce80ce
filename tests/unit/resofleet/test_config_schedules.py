"""``[[schedules]]`` and ``[agent] state_dir`` in the configuration file: what the agent
gets, and the one line a mistake earns (before anything starts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from resofleet.agent.schedules import ScheduleConfig
from resofleet.config import ConfigError, parse_config

SERVERS = [{"id": "eu-1", "runtime": "emulator"}, {"id": "lab", "runtime": "emulator"}]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RESOFLEET_SECRET", "RESOFLEET_AMQP_URL", "RESOFLEET_BUS_PREFIX", "RESOFLEET_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESOFLEET_AUDIT_DIR", str(tmp_path / "audit"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def refusal(*schedules: dict, servers: list[dict] = SERVERS) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config({"servers": servers, "schedules": list(schedules)}, source="fleet.toml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_schedules_reach_the_agent_as_written():
    nightly = {
        "name": "nightly", "servers": ["eu-*"], "cron": "0 4 * * *", "timezone": "Europe/Berlin",
        "action": "restart", "when": "empty", "max_wait": "2h", "on_timeout": "skip",
    }
    save = {"servers": ["*"], "every": "6h", "action": "command", "command": "save"}
    config = parse_config({"servers": SERVERS, "schedules": [nightly, save]})
    assert config.schedules == (
        ScheduleConfig(name="nightly", servers=("eu-*",), cron="0 4 * * *", timezone="Europe/Berlin",
                       action="restart", when="empty", max_wait="2h", on_timeout="skip"),
        ScheduleConfig(servers=("*",), every="6h", action="command", command="save"),
    )


@pytest.mark.parametrize(
    ("entry", "line"),
    [
        ({"servers": ["eu-*"], "action": "restart"},
         'schedules[0].cron or every: give exactly one (cron = "0 4 * * *" or every = "6h")'),
        ({"servers": ["eu-*"], "cron": "0 4 * *", "action": "restart"},
         "schedules[0].cron must have five fields (minute hour day month weekday), not '0 4 * *'"),
        ({"servers": ["eu-*"], "every": "6 hours", "action": "save"},
         "schedules[0].every must be a duration: not a duration: '6 hours' (write e.g. 6h, 90m, "
         "1h30m, 45s or 02:00:00)"),
        ({"servers": ["us-*"], "every": "6h", "action": "save"},
         "schedules[0].servers pattern 'us-*' matches none of this agent's servers (eu-1, lab)"),
        ({"servers": ["eu-*"], "every": "6h", "action": "command", "command": "shutdown"},
         "schedules[0].command 'shutdown' needs the admin role; a schedule acts as an operator "
         '(to restart the headless, use action = "restart")'),
        ({"servers": ["eu-*"], "every": "6h", "action": "reboot"},
         "schedules[0].action must be one of command, restart, save, not 'reboot'"),
        ({"servers": ["eu-*"], "every": "6h", "action": "save", "wen": "empty"},
         "schedules[0].wen is not a known key (known: name, servers, cron, every, timezone, action, "
         "command, when, max_wait, on_timeout)"),
        ({"servers": [], "every": "6h", "action": "save"},
         'schedules[0].servers must name at least one server id or pattern (["*"]: all of them)'),
    ],
)
def test_a_bad_schedule_is_refused_with_one_line_naming_its_key(entry, line):
    assert refusal(entry) == f"fleet.toml: {line}"


def test_two_schedules_with_one_name_are_refused():
    entry = {"servers": ["eu-*"], "every": "6h", "action": "save"}
    assert refusal(entry, dict(entry)).startswith("fleet.toml: schedules[1].name 'save-")
    named = {**entry, "name": "x"}
    assert refusal(named, {**named, "every": "1h"}) == (
        "fleet.toml: schedules[1].name 'x' appears twice (give each schedule its own name)"
    )


def test_patterns_are_not_checked_against_servers_that_are_not_configured():
    """Without ``[[servers]]`` (``resofleet up`` manages its demo server) nothing to match."""
    config = parse_config({"schedules": [{"servers": ["demo"], "every": "1h", "action": "save"}]})
    assert len(config.schedules) == 1


def test_state_dir_defaults_to_the_state_home_and_false_keeps_nothing(tmp_path: Path, monkeypatch):
    assert parse_config({}).agent.state_dir == str(tmp_path / "state" / "resofleet" / "agent")
    assert parse_config({"agent": {"state_dir": False}}).agent.state_dir is None
    assert parse_config({"agent": {"state_dir": "/srv/a"}}).agent.state_dir == "/srv/a"
    monkeypatch.setenv("RESOFLEET_STATE_DIR", "/srv/b")
    assert parse_config({}).agent.state_dir == "/srv/b"
