"""The parsers read what the emulator prints (both follow the real console's formats), noise included.

The emulator's formatters and noise generators are pure functions, so this stays a unit
test: each seed builds an answer with an engine log block injected at a random line, as
the emulated console does with ``noise_rate = 1``.
"""

from __future__ import annotations

import random

import pytest

from resofleet.agent.parsers import parse_bans, parse_status, parse_users, parse_worlds
from resofleet.agent.timespan import parse_timespan
from resofleet.emulator import formats, noise
from resofleet.emulator.state import Ban, Options, Server, User, World

NAMES = [
    "Harbor Lounge",
    "Cozy > Corner: Lab",
    "<color=#ff0000>Red</color> Room",
    "港のラウンジ",
    "🎉 Party 🎶",
    "x" * 32,
    "A forty character world name, truly long",
]
TICKS_PER_SECOND = 10_000_000
SEEDS = range(40)


def make_server(*, separator: str = ", ", logged_in: bool = True, link: bool = True,
                space: bool = True) -> Server:
    options = Options(noise_rate=1.0, machine_id_separator=separator, resonite_link_line=link,
                      empty_value_space=space)
    server = Server(options=options, logged_in=logged_in)
    for n, name in enumerate(NAMES):
        users = [User("Headless", "U-Headless", role="Admin", present=False, fps=60.00012)]
        users += [User(f"Guest {n}.{k}", f"U-g{n}{k}", role="Guest", ping=10 * k, fps=72.5 + k,
                       silenced=k == 1) for k in range(n % 4)]
        server.worlds.append(World(name=name, session_id=f"S-{n:08d}-0000-4000-8000-000000000000",
                                   started_at=0, max_users=8 + n, tags=["a", "b"][: n % 3],
                                   description="" if n % 2 else "desc", users=users))
    server.bans = [Ban("SpamBot", "U-Spam", ["m1", "m2"]), Ban("Quiet One", "U-Q", [])]
    return server


def with_noise(server: Server, seed: int, lines: list[str], *, tty: bool = False) -> str:
    rng = random.Random(seed)
    paint = (lambda line: f"\x1b[37m{line}\x1b[0m") if tty else None
    mixed = noise.inject_noise(rng, server, lines, paint)
    end = "\r\n" if tty else "\n"
    return "".join(line + end for line in mixed)


@pytest.mark.parametrize("tty", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_worlds_round_trip_through_noise(seed, tty):
    """Every emulated world line parses back to its name and counts."""
    server = make_server()
    parsed = parse_worlds(with_noise(server, seed, formats.worlds_lines(server.worlds), tty=tty))
    assert [(w.index, w.name, w.users, w.present, w.max_users) for w in parsed] == [
        (i, w.name, w.user_count, w.present_count, w.max_users) for i, w in enumerate(server.worlds)
    ]


@pytest.mark.parametrize(("link", "space"), [(True, True), (False, False)])
@pytest.mark.parametrize("seed", SEEDS)
def test_status_round_trips_through_noise(seed, link, space):
    """Every emulated status block parses back, whichever build quirks are on."""
    server = make_server(link=link, space=space)
    world = server.worlds[seed % len(server.worlds)]
    now = (seed * 86_400 + 3_723) * TICKS_PER_SECOND + seed
    block = parse_status(with_noise(server, seed, formats.status_lines(server, world, now)))
    assert block is not None and block.complete
    assert (block.name, block.session_id, block.max_users, block.tags, block.description) == (
        world.name, world.session_id, world.max_users, ", ".join(world.tags), world.description)
    assert block.users == [u.username for u in world.users]
    assert block.resonite_link == ("off" if link else None)
    assert parse_timespan(block.uptime) == pytest.approx(now / TICKS_PER_SECOND)


@pytest.mark.parametrize("logged_in", [True, False])
@pytest.mark.parametrize("seed", SEEDS)
def test_users_round_trip_through_noise(seed, logged_in):
    """Every emulated user line parses back, ids empty when logged out."""
    server = make_server(logged_in=logged_in)
    world = server.worlds[3]
    users = parse_users(with_noise(server, seed, formats.users_lines(server, world), tty=seed % 2 == 0))
    assert [(u.username, u.userId, u.role, u.ping, u.silenced) for u in users] == [
        (u.username, u.user_id if logged_in else "", u.role, u.ping, u.silenced) for u in world.users
    ]
    assert [u.fps for u in users] == [float(formats.dotnet_float(u.fps)) for u in world.users]


@pytest.mark.parametrize("separator", [", ", ",", " "])
@pytest.mark.parametrize("seed", SEEDS[:10])
def test_bans_round_trip_through_noise(seed, separator):
    """Every emulated ban parses back, whatever separates the machine ids."""
    server = make_server(separator=separator)
    bans = parse_bans(with_noise(server, seed, formats.listbans_lines(server.bans, separator)))
    assert [(b.username, b.userId, b.machineIds) for b in bans] == [
        (b.username, b.user_id, b.machine_ids) for b in server.bans
    ]


@pytest.mark.parametrize("ticks", [0, 1, 45 * TICKS_PER_SECOND, 93_784_506_0708, 10**15 + 7])
def test_timespan_reads_the_emulators_format(ticks):
    """parse_timespan inverts the emulator's .NET TimeSpan formatter."""
    assert parse_timespan(formats.timespan(ticks)) == pytest.approx(ticks / TICKS_PER_SECOND)
