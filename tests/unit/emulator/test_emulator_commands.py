"""The command interpreter and scenario loader, without I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from resofleet.emulator import scenario
from resofleet.emulator.commands import COMMANDS
from resofleet.emulator.interpreter import Interpreter
from resofleet.emulator.syntax import UNKNOWN_COMMAND, split_args
from resofleet.emulator.state import Randomness

ARGS = {"<port, 0 for random>": "0", "<true/false>": "true", "<n>": "8", "<minutes>": "5",
        "<ticks per second>": "30", "<level>": "Anyone", "<role>": "Guest",
        "<world name or number>": "0", "<template>": "Grid", "<record URL>": "resrec:///U-a/R-b",
        "<active>": "true", "<persistent>": "false", "<value>": "1", "<username>": "Mira",
        "<user ID>": "U-Mira"}


def _interpreter(name: str = "default", seed: int = 1) -> Interpreter:
    server, clock, rng = scenario.load(name, seed=seed, frozen_clock=True)
    return Interpreter(server, clock, rng)


def _example_args(args: str) -> list[str]:
    return [ARGS.get(part, "x") for part in args.replace("> <", ">\0<").split("\0") if args]


def test_there_are_55_commands_in_help_order() -> None:
    """The help list of the real console: 55 commands from saveConfig to log."""
    names = [c.name for c in COMMANDS]
    assert len(names) == 55 == len({n.casefold() for n in names})
    assert names[0] == "saveConfig" and names[9] == "worlds" and names[-1] == "log"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_is_accepted_case_insensitively(command) -> None:  # type: ignore[no-untyped-def]
    """Upper-cased, with plausible arguments, no command is `Unknown command`."""
    interpreter = _interpreter()
    args = " ".join(f'"{a}"' for a in _example_args(command.args))
    reply = interpreter.execute(f"{command.name.upper()} {args}".strip())
    assert reply.lines != [UNKNOWN_COMMAND]
    assert not any(line.startswith("Usage:") for line in reply.lines)


def test_missing_arguments_print_the_usage_line() -> None:
    """Too few arguments: the command's own usage line."""
    assert _interpreter().execute("role Mira").lines == ["Usage: role <username> <role>"]


@pytest.mark.parametrize(("line", "args"), [
    ('name "Two Words"', ["name", "Two Words"]),
    ('message  Mira   "hi there" ', ["message", "Mira", "hi there"]),
    ('description ""', ["description", ""]),
    ('kick "unterminated name', ["kick", "unterminated name"]),
])
def test_split_args_honours_double_quotes(line: str, args: list[str]) -> None:
    """Spaces split arguments except inside double quotes."""
    assert split_args(line) == args


def test_seeded_ids_repeat() -> None:
    """New worlds get the same session id under the same seed, another under another."""
    first = _interpreter(seed=5)
    second = _interpreter(seed=5)
    other = _interpreter(seed=6)
    for it in (first, second, other):
        it.execute("startWorldTemplate Grid")
    ids = [it.server.worlds[-1].session_id for it in (first, second, other)]
    assert ids[0] == ids[1] != ids[2] and ids[0].startswith("S-")


def test_randomness_streams_are_independent() -> None:
    """Drawing from the activity stream does not shift the noise stream."""
    a, b = Randomness(3), Randomness(3)
    a.activity.random()
    assert a.noise.random() == b.noise.random()


@pytest.mark.parametrize("name", scenario.BUILTIN_SCENARIOS)
def test_builtin_scenarios_load(name: str) -> None:
    """default, busy and demo load by bare name."""
    server, _, _ = scenario.load(name, seed=1)
    assert server.worlds and server.focused is server.worlds[-1]


def test_default_and_demo_follow_design_defaults() -> None:
    """default: two worlds, one ban, quirks off; demo: activity on, no noise, no chatter."""
    default, _, _ = scenario.load("default")
    assert len(default.worlds) == 2 and len(default.bans) == 1
    options = default.options
    assert (options.noise_rate, options.chatter_rate, options.activity_interval,
            options.first_command_quirk) == (0, 0, 0, 0)
    demo, _, _ = scenario.load("demo")
    assert demo.options.activity_interval > 0
    assert demo.options.noise_rate == 0 and demo.options.chatter_rate == 0


def test_busy_scenario_has_the_hard_cases() -> None:
    """busy: dozens of users, bans, requests, and names that break naive parsers."""
    server, _, _ = scenario.load("busy")
    names = [w.name for w in server.worlds]
    assert sum(w.user_count for w in server.worlds) >= 30
    assert len(server.bans) >= 3 and len(server.friend_requests) >= 3
    assert any(">" in n for n in names) and any(":" in n for n in names)
    assert any("<color=" in n for n in names) and any(not n.isascii() for n in names)
    assert any(len(n) > 32 for n in names)
    assert any(" " in u.username for w in server.worlds for u in w.users)


@pytest.mark.parametrize(("text", "message"), [
    ("bogus = 1\n", "bogus: unknown key"),
    ("[noise]\nrate = 2.0\n", "noise.rate: expected a probability"),
    ("[[worlds]]\nuptime = \"soon\"\n", "worlds[0].uptime: expected"),
    ("[[worlds]]\naccess_level = \"Everyone\"\n", "worlds[0].access_level"),
    ("[latency]\nsvae = 1\n", "latency.svae: not a console command"),
    ("[[worlds]]\n[[worlds.users]]\nrole = \"Guest\"\n", "worlds[0].users[0].username: required"),
    ("x = [", "not valid TOML"),
])
def test_bad_scenarios_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    """Every scenario error names the file and the key."""
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(scenario.ScenarioError) as info:
        scenario.load(str(path))
    assert str(path) in str(info.value) and message in str(info.value)
