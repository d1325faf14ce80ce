"""The pure output formats of the emulator (no I/O)."""

from __future__ import annotations

import pytest

from resofleet.emulator import formats
from resofleet.emulator.state import Ban, Options, Server, User, World


def test_pad_name_counts_utf16_code_units() -> None:
    """An emoji outside the BMP is two code units, as .NET's PadRight counts it."""
    assert formats.pad_name("Harbor Lounge") == "Harbor Lounge" + " " * 19
    assert formats.pad_name("🌃") == "🌃" + " " * 30
    assert formats.pad_name("x" * 40) == "x" * 40


@pytest.mark.parametrize(("ticks", "text"), [
    (0, "00:00:00"),
    (10_000_000, "00:00:01"),
    (1, "00:00:00.0000001"),
    ((((26 * 60 + 3) * 60) + 4) * 10_000_000 + 5_060_708, "1.02:03:04.5060708"),
    (24 * 3600 * 10_000_000, "1.00:00:00"),
    (-10_000_000, "-00:00:01"),
])
def test_timespan_matches_dotnet_c_format(ticks: int, text: str) -> None:
    """TimeSpan "c": day part only from 24 h, fraction only when not zero."""
    assert formats.timespan(ticks) == text
    assert formats.parse_timespan(text) == ticks


@pytest.mark.parametrize("bad", ["", "1:2", "25:00:00", "00:61:00", "00:00:00.12345678", "x"])
def test_parse_timespan_rejects_malformed(bad: str) -> None:
    """Malformed uptimes raise ValueError (the scenario loader reports them)."""
    with pytest.raises(ValueError):
        formats.parse_timespan(bad)


@pytest.mark.parametrize(("value", "text"), [
    (60.00012, "60.00012"), (72.49871, "72.49871"), (60.0, "60"), (0.1, "0.1"),
    (59.93127, "59.93127"), (1e-7, "1E-07"), (3.0e38, "3E+38"), (0.0001, "0.0001"),
    (0.00001, "1E-05"), (1234567.0, "1234567"), (12345678.0, "1.2345678E+07"),
])
def test_dotnet_float_is_shortest_round_trip_single(value: float, text: str) -> None:
    """FPS prints like .NET float.ToString(): shortest round-trip float32."""
    assert formats.dotnet_float(value) == text


def _world(**changes: object) -> World:
    world = World(name="Harbor Lounge", session_id="S-x", started_at=0, max_users=16,
                  users=[User("Host", "U-Host", role="Admin", present=False, fps=60.00012),
                         User("Mira", "U-Mira", role="Builder", present=True, ping=42)])
    for key, value in changes.items():
        setattr(world, key, value)
    return world


def test_world_line_long_name_has_nothing_before_users() -> None:
    """A name of 32+ code units is followed directly by `Users:`."""
    line = formats.world_line(3, _world(name="N" * 32))
    assert line == "[3] " + "N" * 32 + "Users: 2\tPresent: 1\tAccessLevel: Anyone\tMaxUsers: 16"


def test_status_without_resonite_link_and_without_space() -> None:
    """Pre-2026 builds: 12 lines; the no-space variant prints `Tags:` for an empty value."""
    server = Server(options=Options(resonite_link_line=False, empty_value_space=False))
    lines = formats.status_lines(server, _world(), now_ticks=10_000_000)
    assert len(lines) == 12 and lines[0] == "Name: Harbor Lounge"
    assert "Tags:" in lines and "Description:" in lines and lines[5] == "Uptime: 00:00:01"


def test_users_logged_out_host_only_variant() -> None:
    """logged_out_ids = host: only the headless's own ID is empty."""
    server = Server(options=Options(logged_out_ids="host"), logged_in=False)
    lines = formats.users_lines(server, _world())
    assert lines[0].startswith("Host\tID: \tRole: Admin")
    assert lines[1].startswith("Mira\tID: U-Mira\tRole: Builder")


def test_listbans_machine_id_separator_is_configurable() -> None:
    """Several machine ids are joined with the scenario's separator."""
    bans = [Ban("A B", "U-AB", ["m1", "m2"])]
    assert formats.listbans_lines(bans, " ") == ["[0]\tUsername: A B\tUserID: U-AB\tMachineIds: m1 m2"]
    assert formats.listbans_lines(bans, ",")[0].endswith("MachineIds: m1,m2")
    assert formats.listbans_lines([], ", ") == []


def test_help_lines_keep_trailing_space_without_args() -> None:
    """Usage lines are lowercase and keep the space when there are no arguments."""
    assert formats.help_lines([("friendRequests", "Lists", "")]) == [
        "friendRequests", "\tLists", "\tUsage: friendrequests "]
