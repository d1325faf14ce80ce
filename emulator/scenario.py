"""Scenario files: TOML in, a ready :class:`~resofleet.emulator.state.Server` out.

The schema is documented in :mod:`emulator` (the package docstring). Loading is
strict: an unknown key or a value of the wrong type raises
:class:`ScenarioError` naming the file and the key, so a typo never silently
turns a quirk off.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .commands import COMMANDS_BY_NAME
from .formats import parse_timespan
from .state import (
    ACCESS_LEVELS, DEFAULT_HOST_FPS, DEFAULT_MAX_USERS, ROLES, Ban, Clock, Options, Randomness,
    Server, User, World,
)

BUILTIN_SCENARIOS: tuple[str, ...] = ("default", "busy", "demo")
SCENARIO_DIR = Path(__file__).parent / "scenarios"
"""Shipped as package data, next to the modules (also in the Docker image's COPY)."""


class ScenarioError(Exception):
    """A scenario file is missing, not TOML, or has a bad key; the message names both."""


def resolve(name_or_path: str) -> tuple[str, str]:
    """Return (label, TOML text) for a bare built-in name or a file path."""
    if name_or_path in BUILTIN_SCENARIOS:
        path = SCENARIO_DIR / f"{name_or_path}.toml"
        return f"{name_or_path} (built-in)", path.read_text(encoding="utf-8")
    path = Path(name_or_path)
    try:
        return str(path), path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc.strerror}") from None


class _Table:
    """A TOML table that remembers which keys were read, to reject the rest."""

    def __init__(self, label: str, where: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ScenarioError(f"{label}: {where}: expected a table")
        self.label, self.where, self.data = label, where, data
        self.seen: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.seen.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise ScenarioError(f"{self.label}: {self._key(key)}: expected {_names(kinds)}")
        if not isinstance(value, kinds):
            raise ScenarioError(f"{self.label}: {self._key(key)}: expected {_names(kinds)}")
        return value

    def strings(self, key: str) -> list[str]:
        values = self.get(key, list, [])
        if not all(isinstance(v, str) for v in values):
            raise ScenarioError(f"{self.label}: {self._key(key)}: expected a list of strings")
        return list(values)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        for choice in choices:
            if choice.casefold() == value.casefold():
                return choice
        raise ScenarioError(
            f"{self.label}: {self._key(key)}: {value!r} is not one of {', '.join(choices)}")

    def table(self, key: str) -> _Table:
        self.seen.add(key)
        return _Table(self.label, self._key(key), self.data.get(key, {}))

    def tables(self, key: str) -> list[_Table]:
        self.seen.add(key)
        items = self.data.get(key, [])
        if not isinstance(items, list):
            raise ScenarioError(f"{self.label}: {self._key(key)}: expected an array of tables")
        return [_Table(self.label, f"{self._key(key)}[{i}]", item) for i, item in enumerate(items)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ScenarioError(f"{self.label}: {self._key(unknown[0])}: unknown key")


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join({bool: "a boolean", int: "an integer", float: "a number", str: "a string",
                        list: "a list", dict: "a table"}[k] for k in kinds)


def _probability(table: _Table, key: str) -> float:
    """A quirk that may be a boolean (always/never) or a probability between 0 and 1."""
    value = table.get(key, (bool, float), 0.0)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not 0.0 <= value <= 1.0:
        raise ScenarioError(f"{table.label}: {table._key(key)}: expected a probability 0..1")
    return value


def _non_negative(table: _Table, key: str, default: float) -> float:
    value = table.get(key, float, default)
    if value < 0:
        raise ScenarioError(f"{table.label}: {table._key(key)}: must not be negative")
    return value


def parse(label: str, text: str) -> tuple[dict[str, Any], int | None]:
    """Decode TOML; returns the document and its optional ``seed``."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{label}: not valid TOML: {exc}") from None
    seed = document.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ScenarioError(f"{label}: seed: expected an integer")
    return document, seed


def build(label: str, document: dict[str, Any], *, clock: Clock, rng: Randomness,
          frozen_clock: bool | None = None) -> Server:
    """Turn a decoded scenario into a Server whose worlds started ``uptime`` ago."""
    top = _Table(label, "", document)
    top.get("seed", int, None)
    options = Options()
    options.frozen_clock = top.get("frozen_clock", bool, False)
    server = Server(options=options)
    server.version = top.get("version", str, server.version)
    server.tick_rate = top.get("tick_rate", float, server.tick_rate)
    server.friends = top.strings("friends")
    server.friend_requests = top.strings("friend_requests")

    account = top.table("account")
    server.account_name = account.get("username", str, server.account_name)
    server.account_id = account.get("user_id", str, server.account_id)
    server.logged_in = account.get("logged_in", bool, True)
    account.done()

    quirks = top.table("quirks")
    options.first_command_quirk = _probability(quirks, "first_command_unknown")
    options.resonite_link_line = quirks.get("resonite_link_line", bool, True)
    options.empty_value_space = quirks.get("empty_value_space", bool, True)
    options.machine_id_separator = quirks.get("machine_id_separator", str, ", ")
    options.session_url = quirks.get("session_url", str, options.session_url)
    options.logged_out_ids = quirks.choice("logged_out_ids", ("all", "host"), "all")
    options.close_destroyed = _probability(quirks, "close_destroyed")
    options.restart_destroyed = _probability(quirks, "restart_destroyed")
    options.wedge_on_bad_url = quirks.get("wedge_on_bad_url", bool, False)
    options.ansi_colors = quirks.get("ansi_colors", bool, False)
    options.crash_exit_code = quirks.get("crash_exit_code", int, options.crash_exit_code)
    quirks.done()

    noise = top.table("noise")
    options.noise_rate = _probability(noise, "rate")
    noise.done()
    chatter = top.table("chatter")
    options.chatter_rate = _non_negative(chatter, "rate", 0.0)
    chatter.done()
    activity = top.table("activity")
    options.activity_interval = _non_negative(activity, "interval", 0.0)
    options.activity_names = activity.strings("names")
    activity.done()
    latency = top.table("latency")
    for name in list(latency.data):
        if name.casefold() not in COMMANDS_BY_NAME and name.casefold() != "help":
            raise ScenarioError(f"{label}: latency.{name}: not a console command")
        options.latency[name.casefold()] = _non_negative(latency, name, 0.0)
    latency.done()
    startup = top.table("startup")
    options.startup_delay = _non_negative(startup, "delay", 0.0)
    options.startup_log = startup.get("log", bool, True)
    startup.done()

    if frozen_clock is not None:
        options.frozen_clock = frozen_clock
    clock.frozen = options.frozen_clock
    now = clock.now()
    for table in top.tables("worlds"):
        server.worlds.append(_world(table, server, rng, now))
    for table in top.tables("bans"):
        server.bans.append(Ban(table.get("username", str, ""), table.get("user_id", str, ""),
                               table.strings("machine_ids")))
        table.done()
    top.done()
    server.focused = server.worlds[-1] if server.worlds else None
    return server


def _world(table: _Table, server: Server, rng: Randomness, now: int) -> World:
    uptime_text = table.get("uptime", str, "00:00:00")
    try:
        uptime = parse_timespan(uptime_text)
    except ValueError:
        raise ScenarioError(
            f"{table.label}: {table._key('uptime')}: expected [d.]hh:mm:ss[.fffffff]") from None
    world = World(
        name=table.get("name", str, "World"),
        session_id=table.get("session_id", str, "") or rng.session_id(),
        started_at=now - uptime,
        access_level=table.choice("access_level", ACCESS_LEVELS, "Anyone"),
        max_users=table.get("max_users", int, DEFAULT_MAX_USERS),
        hidden=table.get("hidden", bool, False),
        mobile_friendly=table.get("mobile_friendly", bool, False),
        description=table.get("description", str, ""),
        tags=table.strings("tags"),
        away_kick_minutes=table.get("away_kick_minutes", float, -1.0),
        resonite_link_port=table.get("resonite_link_port", int, None),
    )
    host = User(server.account_name, server.account_id,
                role=table.choice("host_role", ROLES, "Admin"), present=False, ping=0,
                fps=table.get("host_fps", float, DEFAULT_HOST_FPS))
    world.users.append(host)
    for user_table in table.tables("users"):
        world.users.append(_user(user_table))
    table.done()
    return world


def _user(table: _Table) -> User:
    username = table.get("username", str, None)
    if username is None:
        raise ScenarioError(f"{table.label}: {table._key('username')}: required")
    user = User(
        username=username,
        user_id=table.get("user_id", str, ""),
        role=table.choice("role", ROLES, "Guest"),
        present=table.get("present", bool, True),
        ping=table.get("ping", int, 0),
        fps=table.get("fps", float, 60.0),
        silenced=table.get("silenced", bool, False),
        machine_ids=table.strings("machine_ids"),
    )
    table.done()
    return user


def load(name_or_path: str, *, seed: int | None = None,
         frozen_clock: bool | None = None) -> tuple[Server, Clock, Randomness]:
    """Load a scenario; ``seed`` (the CLI's) wins over the file's own ``seed``."""
    label, text = resolve(name_or_path)
    document, file_seed = parse(label, text)
    rng = Randomness(seed if seed is not None else file_seed)
    clock = Clock()
    server = build(label, document, clock=clock, rng=rng, frozen_clock=frozen_clock)
    return server, clock, rng
