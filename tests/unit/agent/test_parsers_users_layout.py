"""The ``users`` fast path: lines in the usual layout are read column-wise, anything else
falls back to the line-by-line reader, and both give the same users."""

from __future__ import annotations

import random

import pytest

import resofleet.agent.parsers as parsers
from resofleet.agent.parsers import _users_in_layout, parse_users
from resofleet.contracts import User
from resofleet.emulator import formats, noise
from resofleet.emulator.state import Options, Server, World
from resofleet.emulator.state import User as EmulatedUser

HOST = "HarborHost\tID: U-1a2B3c4D5e\tRole: Admin\tPresent: False\tPing: 0 ms\tFPS: 60.00012\tSilenced: False"
MIRA = "Mira\tID: U-Mira\tRole: Builder\tPresent: True\tPing: 42 ms\tFPS: 72.49871\tSilenced: False"


def _general(text: str, monkeypatch: pytest.MonkeyPatch) -> list[User]:
    """What parse_users gives with the fast path switched off."""
    with monkeypatch.context() as m:
        m.setattr(parsers, "_users_in_layout", lambda text: None)
        return parse_users(text)


def test_console_sample_takes_the_fast_path():
    """The documented sample is in the layout and reads field for field."""
    users = _users_in_layout(f"{HOST}\n{MIRA}")
    assert users == [
        User("HarborHost", "U-1a2B3c4D5e", False, 0, 60.00012, False, "Admin"),
        User("Mira", "U-Mira", True, 42, 72.49871, False, "Builder"),
    ]


@pytest.mark.parametrize(
    "name",
    ["Big Tom", "Ana Lúcia", "李明", "Тролль", "Crasher>_<", "Pop:Up", "🌃 Night Owl", "  spaced  ",
     "Name: X", "ID: fake", "Present: True", "a\u2028b"],
)
def test_names_as_printed(name):
    """Spaces, non-Latin text, emoji, '>' and ':' and field-like text stay in the name."""
    line = f"{name}\tID: U-x\tRole: Guest\tPresent: True\tPing: 5 ms\tFPS: 30\tSilenced: True"
    assert _users_in_layout(f"{HOST}\n{line}") == [
        User("HarborHost", "U-1a2B3c4D5e", False, 0, 60.00012, False, "Admin"),
        User(name, "U-x", True, 5, 30.0, True, "Guest"),
    ]


def test_logged_out_empty_id_and_negative_ping():
    """``ID: `` with nothing after it is an empty id; pings and FPS keep their sign."""
    line = "Host\tID: \tRole: Admin\tPresent: False\tPing: -1 ms\tFPS: 1E-05\tSilenced: False"
    assert _users_in_layout(line) == [User("Host", "", False, -1, 1e-05, False, "Admin")]


def test_empty_text_has_no_users():
    """No output: no users, on the fast path."""
    assert _users_in_layout("") == []


@pytest.mark.parametrize(
    "line",
    [
        MIRA + "\r",  # a CRLF line end left in
        MIRA + " ",  # trailing space
        MIRA + "\tVoice: On",  # an unknown extra field
        MIRA.replace("Ping: 42 ms", "Ping: 42"),  # no unit
        MIRA.replace("ID: ", "ID:"),  # no space after a colon
        MIRA.replace("\tRole: Builder", ""),  # Role absent
        MIRA.replace("Present: True", "Present: true"),  # other casing
        MIRA.replace("72.49871", "\u221e"),  # .NET Framework infinity
        MIRA.replace("72.49871", "Infinity"),
        MIRA.replace("72.49871", "NaN"),
        MIRA.replace("72.49871", "72,49871"),  # a decimal comma
        MIRA.replace("Mira", "Mi\tra"),  # a TAB in the name: no longer the layout
        "\tID: U-x\tRole: Guest\tPresent: True\tPing: 5 ms\tFPS: 30\tSilenced: True",  # no name
    ],
)
def test_lines_off_the_layout_fall_back(line, monkeypatch):
    """A line off the layout sends the whole text to the general reader, which decides."""
    text = f"{HOST}\n{line}\n{MIRA}"
    assert _users_in_layout(text) is None
    assert parse_users(text) == _general(text, monkeypatch)


@pytest.mark.parametrize(
    "extra",
    [
        "SIGNALR: BroadcastStatus - Contact status for U-x.\n\tOnlineStatus: Online",
        "Updated: 1 -> 2",
        "\n   at FrooxEngine.World.Update()\n",
        "",  # a blank line
        "junk\t" + MIRA,  # a user line behind other text is not a user line
    ],
)
def test_noise_between_users(extra, monkeypatch):
    """Engine log lines inside the answer: fast path or not, the same users."""
    text = f"{HOST}\n{extra}\n{MIRA}"
    assert parse_users(text) == _general(text, monkeypatch)
    assert [u.username for u in parse_users(text)][-1] == "Mira"


@pytest.mark.parametrize("seed", range(30))
def test_fast_path_agrees_with_the_general_reader(seed, monkeypatch):
    """Emulator-printed listings, with and without an engine log block inside: the fast
    path, where it applies, gives exactly what the general reader gives."""
    rng = random.Random(seed)
    server = Server(options=Options(noise_rate=1.0 if seed % 2 else 0.0))
    world = World(name="W", session_id="S-w", started_at=0, users=[EmulatedUser("Host", "U-Host", role="Admin", present=False)])
    for k in range(rng.randrange(0, 40)):
        world.users.append(EmulatedUser(
            rng.choice(["Big Tom", "李明", "Zoë", "A>B", "x:y", "🎉"]) + str(k),
            f"U-{rng.getrandbits(40):010x}", role=rng.choice(["Guest", "Builder", "Admin"]),
            present=rng.random() < 0.5, ping=rng.randrange(0, 400),
            fps=rng.choice([rng.uniform(0, 144), 60.0, 1e-05, 120.5]), silenced=rng.random() < 0.2,
        ))
    lines = noise.inject_noise(random.Random(seed), server, formats.users_lines(server, world))
    text = "\n".join(lines)
    assert parse_users(text) == _general(text, monkeypatch)
    assert len(parse_users(text)) == len(world.users)
    if seed % 2 == 0:
        assert _users_in_layout(text) is not None
