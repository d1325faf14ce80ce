"""Benchmark 4: parsing a worlds poll, 50 worlds x 30 users.

The agent's worlds poll asks ``worlds``, then per world ``status`` and ``users``, and
builds the client's :class:`resofleet.contracts.World` list (:func:`resofleet.agent.parsers.build_world`).
This times the parsing alone, per call (one whole poll's worth of text: 1 worlds listing,
50 status blocks, 50 users listings of 30 users each, the headless's own account first),
on text printed by the emulator's own formatters (:mod:`resofleet.emulator.formats`).

Baselines, same run, same text:

- **split + regex**: splitting every text into lines and one compiled anchored regex match
  per line: the floor of any line-by-line parser in Python;
- **JSON decode**: msgspec decoding the resulting ``worlds_update`` from JSON into the
  contract structs: what the same data costs when it arrives already structured.

Target: under 2 ms per call.
"""

from __future__ import annotations

import random
import re
import statistics
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec

from .table import Row, Table

__all__ = ["make_poll", "parse_poll", "run"]

WORLDS: Final = 50
USERS: Final = 30
ROUNDS: Final = 15
ROUND_SECONDS: Final = 0.2
QUICK_ROUNDS: Final = 5
QUICK_ROUND_SECONDS: Final = 0.05
ROLES: Final = ("Admin", "Builder", "Moderator", "Guest", "Spectator")


def make_poll(worlds: int = WORLDS, users: int = USERS, seed: int = 1) -> tuple[str, list[str], list[str]]:
    """The text of one worlds poll: (worlds, [status per world], [users per world])."""
    from resofleet.emulator import formats
    from resofleet.emulator.state import Server, User, World

    rng = random.Random(seed)
    server = Server(account_name="BenchHost", account_id="U-BenchHost")
    now = 10**15
    for w in range(worlds):
        world = World(
            name=f"World {w} {rng.choice(['Lounge', 'Market', 'Club > Night', 'Harbor'])}",
            session_id=f"S-{rng.getrandbits(128):032x}",
            started_at=now - rng.randrange(10**9, 10**13),
            access_level=rng.choice(["Anyone", "Contacts", "RegisteredUsers", "Private"]),
            max_users=users + 2,
            description=f"World number {w}, a description of a reasonable length",
            tags=["bench", f"tag{w}"],
            users=[User(username="BenchHost", user_id="U-BenchHost", role="Admin", present=False)],
        )
        for u in range(users - 1):
            world.users.append(User(
                username=f"User {w}-{u}", user_id=f"U-{rng.getrandbits(48):012x}",
                role=rng.choice(ROLES), present=rng.random() < 0.8, ping=rng.randrange(10, 300),
                fps=rng.uniform(20, 120), silenced=rng.random() < 0.1,
            ))
        server.worlds.append(world)
    listing = "\n".join(formats.worlds_lines(server.worlds))
    statuses = ["\n".join(formats.status_lines(server, w, now)) for w in server.worlds]
    users_texts = ["\n".join(formats.users_lines(server, w)) for w in server.worlds]
    return listing, statuses, users_texts


def parse_poll(listing: str, statuses: list[str], users_texts: list[str]) -> list[Any]:
    """What the agent does with one poll's text (``ManagedServer._collect_worlds``)."""
    from resofleet.agent.parsers import build_world, parse_status, parse_users, parse_worlds

    return [
        build_world(line, parse_status(statuses[line.index]), parse_users(users_texts[line.index]))
        for line in parse_worlds(listing)
    ]


_LINE: Final = re.compile(r"([^\t]*)(?:\t([^\t]*))*")


def _floor(listing: str, statuses: list[str], users_texts: list[str]) -> int:
    n = 0
    match = _LINE.fullmatch
    for text in (listing, *statuses, *users_texts):
        for line in text.split("\n"):
            if match(line) is not None:
                n += 1
    return n


def _time_per_call(fn: Callable[[], object], rounds: int, seconds: float) -> float:
    """Median over ``rounds`` of the mean time per call, each round about ``seconds``."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    per_round = max(1, int(seconds / once))
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            fn()
        results.append((time.perf_counter() - t0) / per_round)
    return statistics.median(results)


async def run(quick: bool = False) -> Table:
    from resofleet.contracts import WorldsUpdate

    rounds = QUICK_ROUNDS if quick else ROUNDS
    seconds = QUICK_ROUND_SECONDS if quick else ROUND_SECONDS
    listing, statuses, users_texts = make_poll()
    worlds = parse_poll(listing, statuses, users_texts)
    assert len(worlds) == WORLDS and all(len(w.users_list) == USERS for w in worlds)
    encoded = msgspec.json.encode(WorldsUpdate(output=worlds, server="s0"))
    decoder = msgspec.json.Decoder(WorldsUpdate)

    parse = _time_per_call(lambda: parse_poll(listing, statuses, users_texts), rounds, seconds)
    floor = _time_per_call(lambda: _floor(listing, statuses, users_texts), rounds, seconds)
    decode = _time_per_call(lambda: decoder.decode(encoded), rounds, seconds)

    table = Table(f"parsing: worlds + status + users, {WORLDS} worlds x {USERS} users, per call")
    chars = len(listing) + sum(map(len, statuses)) + sum(map(len, users_texts))
    lines = 1 + listing.count("\n") + sum(t.count("\n") + 1 for t in (*statuses, *users_texts))
    table.add(Row("parse a whole poll", parse * 1e3, "ms", "split + regex", floor * 1e3)).judge(
        lambda r: r.value < 2.0, "< 2 ms")
    table.add(Row("parse a whole poll", parse * 1e3, "ms", "JSON decode", decode * 1e3))
    table.add(Row("parse, per console line", parse / lines * 1e6, "us", "split + regex",
                  floor / lines * 1e6))
    table.notes.append(f"{lines} lines, {chars:,} characters of console text; "
                       f"{len(encoded):,} bytes as worlds_update JSON")
    table.notes.append(f"median of {rounds} rounds of ~{seconds:g} s, one process, one core")
    return table
