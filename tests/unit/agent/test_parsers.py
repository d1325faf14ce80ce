"""Console output parsers: the console's formats in, contract structs out, noise ignored."""

from __future__ import annotations

import json

import msgspec
import pytest

from resofleet.agent import parsers
from resofleet.agent.parsers import (
    CONSOLE_ERRORS,
    StatusBlock,
    WorldLine,
    build_world,
    is_noise,
    parse_bans,
    parse_friend_requests,
    parse_status,
    parse_users,
    parse_worlds,
    strip_ansi,
    utf16_len,
)
from resofleet.contracts import Ban, User, World

# --------------------------------------------------------------------------------------
# sample console text (README, The headless console)

WORLDS = (
    "[0] Harbor Lounge                   Users: 3\tPresent: 2\tAccessLevel: Anyone\tMaxUsers: 16\n"
    "[1] Night Market                    Users: 1\tPresent: 0\tAccessLevel: Private\tMaxUsers: 4\n"
)
HARBOR = WorldLine(index=0, name="Harbor Lounge", users=3, present=2, access_level="Anyone", max_users=16)
MARKET = WorldLine(index=1, name="Night Market", users=1, present=0, access_level="Private", max_users=4)

STATUS_LINES = [
    "Name: Harbor Lounge",
    "SessionID: S-3f2a9c4e-81b7-4d0a-9e55-2c1d7b8a6f01",
    "Current Users: 3",
    "Present Users: 2",
    "Max Users: 16",
    "Uptime: 1.02:03:04.5060708",
    "Access Level: Anyone",
    "Hidden from listing: False",
    "Mobile Friendly: True",
    "Description: A quiet place by the water",
    "Tags: chill, music, harbor",
    "Users: HarborHost, Mira, Tobias",
    "ResoniteLink: off",
]
STATUS = "\n".join(STATUS_LINES) + "\n"
HARBOR_STATUS = StatusBlock(
    name="Harbor Lounge",
    session_id="S-3f2a9c4e-81b7-4d0a-9e55-2c1d7b8a6f01",
    current_users=3,
    present_users=2,
    max_users=16,
    uptime="1.02:03:04.5060708",
    access_level="Anyone",
    hidden=False,
    mobile_friendly=True,
    description="A quiet place by the water",
    tags="chill, music, harbor",
    users=["HarborHost", "Mira", "Tobias"],
    resonite_link="off",
)

USER_LINES = [
    "HarborHost\tID: U-1a2B3c4D5e\tRole: Admin\tPresent: False\tPing: 0 ms\tFPS: 60.00012\tSilenced: False",
    "Mira\tID: U-Mira\tRole: Builder\tPresent: True\tPing: 42 ms\tFPS: 72.49871\tSilenced: False",
]
USERS = "\n".join(USER_LINES) + "\n"
HOST = User(username="HarborHost", userId="U-1a2B3c4D5e", present=False, ping=0, fps=60.00012,
            silenced=False, role="Admin")
MIRA = User(username="Mira", userId="U-Mira", present=True, ping=42, fps=72.49871, silenced=False,
            role="Builder")

BAN_LINE = "[0]\tUsername: SpamBot\tUserID: U-SpamBot01\tMachineIds: 4q8w0e2r6t1y9u3i5o7p"

# engine log lines that land inside answers
SIGNALR_STATUS = [
    "SIGNALR: BroadcastStatus - Contact status for U-Xy12Ab34Cd.",
    "\tOnlineStatus: Online",
    "\tSessionType: Headless",
    "\tLastStatusChange: 2026-06-01T10:00:00.0000000Z",
    "\tSessions: 2",
]
SIGNALR_SESSION = [
    "SIGNALR: BroadcastSession SessionInfo. Id: S-3f2a9c4e-81b7-4d0a-9e55-2c1d7b8a6f01, "
    "Name: Harbor Lounge, Host: U-Host, URLs: lnl-nat://s-3f2a/, res-steam://1234/5678/"
]
REFRESH = ["Running refresh on: OwnerId: U-Host, Path: Inventory\\Worlds"]
UPDATED = ["Updated: 41 -> 42"]
STACK_TRACE = [
    "",
    "   at FrooxEngine.World.RunSynchronously(Action action, Boolean immediatellyIfPossible)",
    "   at FrooxEngine.Headless.CommandHandler.ProcessCommand(String line)",
]
NOISE_BLOCKS = {
    "signalr-status": SIGNALR_STATUS,
    "signalr-session": SIGNALR_SESSION,
    "refresh": REFRESH,
    "updated": UPDATED,
    "stack-trace": STACK_TRACE,
}
ALL_NOISE = [line for block in NOISE_BLOCKS.values() for line in block]


def interleave(lines: list[str], noise: list[str], at: int) -> str:
    """``lines`` with ``noise`` put before line ``at``, as console text."""
    return "\n".join([*lines[:at], *noise, *lines[at:]]) + "\n"


def utf16_units(text: str) -> int:
    """UTF-16 length computed independently of the code under test."""
    return len(text.encode("utf-16-le")) // 2


def world_line(name: str, index: int = 0, *, users: int = 3, present: int = 2,
               access: str = "Anyone", max_users: int = 16) -> str:
    """A ``worlds`` line as the console prints it (C#'s PadRight(32) counts UTF-16)."""
    padding = " " * max(0, 32 - utf16_units(name))
    return (f"[{index}] {name}{padding}Users: {users}\tPresent: {present}"
            f"\tAccessLevel: {access}\tMaxUsers: {max_users}")


def test_public_names_are_pinned():
    """The parsers module exports exactly the names the console driver codes against."""
    assert set(parsers.__all__) == {
        "CONSOLE_ERRORS", "NAME_COLUMN_UTF16", "StatusBlock", "WorldLine", "build_world",
        "humanize_uptime", "is_noise", "parse_bans", "parse_friend_requests", "parse_status",
        "parse_timespan", "parse_users", "parse_worlds", "strip_ansi", "utf16_len",
    }
    for name in parsers.__all__:
        assert hasattr(parsers, name)


# --------------------------------------------------------------------------------------
# strip_ansi, is_noise, utf16_len


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("\x1b[37mUpdated: 1 -> 2\x1b[0m", "Updated: 1 -> 2"),
        ("\x1b[1;31mred\x1b[m", "red"),
        ("\x1b[2K\x1b[1GHarbor Lounge>", "Harbor Lounge>"),
        ("\x1b[?25lhidden cursor\x1b[?25h", "hidden cursor"),
        ("\x1b]0;window title\x07text", "text"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1b(Bcharset", "charset"),
        ("\x1b=keypad\x1b>", "keypad"),
        ("lone escape\x1b", "lone escape"),
        ("line one\x1b[0m\nline two", "line one\nline two"),
    ],
)
def test_strip_ansi_removes_escape_sequences(text, plain):
    """CSI, OSC (BEL or ST terminated), charset and keypad sequences and a lone ESC go."""
    assert strip_ansi(text) == plain


@pytest.mark.parametrize("text", ["", "Harbor Lounge>", "<color=#ff0000>Red</color> [0] x", "日本語 🎉"])
def test_strip_ansi_leaves_plain_text_alone(text):
    """Text without ESC comes back unchanged."""
    assert strip_ansi(text) == text


@pytest.mark.parametrize("line", ALL_NOISE[:-3] + STACK_TRACE[1:] + ["\tchild line", "Updated: Online -> Away"])
def test_is_noise_recognises_engine_log_lines(line):
    """SIGNALR lines, their TAB children, refreshes, Updated and stack frames are noise."""
    assert is_noise(line)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "Unknown command",
        "Harbor Lounge",
        WORLDS.splitlines()[0],
        USER_LINES[0],
        BAN_LINE,
        *STATUS_LINES,
        "Updated",
        "Mira kicked!",
        "World Harbor Lounge now has access level Anyone",
    ],
)
def test_is_noise_keeps_answer_lines(line):
    """Answer lines, including every status line and a blank line, are not noise."""
    assert not is_noise(line)


@pytest.mark.parametrize(("text", "units"), [("", 0), ("abc", 3), ("日本語", 3), ("🎉", 2), ("a🎉b", 4)])
def test_utf16_len_counts_astral_characters_twice(text, units):
    """Characters outside the BMP take two UTF-16 code units."""
    assert utf16_len(text) == units


# --------------------------------------------------------------------------------------
# worlds


def test_parse_worlds_reads_the_console_example():
    """The console's two-world example, field by field."""
    assert parse_worlds(WORLDS) == [HARBOR, MARKET]


@pytest.mark.parametrize("text", ["", "\n", "\r\n\r\n", "   \n\t\n"])
def test_parse_worlds_of_no_output_is_empty(text):
    """No worlds, no output: an empty list."""
    assert parse_worlds(text) == []


@pytest.mark.parametrize(
    "name",
    [
        "Harbor Lounge",
        "A",
        "Cozy > Corner",
        "Lab: Physics: Room 2",
        "Name: Harbor Lounge",
        "Users: 5 fake",
        "Users: 9\tPresent: 9\tAccessLevel: Anyone\tMaxUsers: 9",
        "<color=#ff0000>Red</color> Room",
        "<b>Bold</b><size=50%>small</size>",
        "港の ラウンジ",
        "ハーバー・ラウンジ・夜の市場へようこそ皆さん",
        "🎉 Party Room 🎶",
        "🎉" * 16,
        "   Leading spaces",
        "x" * 31,
        "x" * 32,
        "Exactly thirty-two characters!!!",
        "A forty character world name, truly long",
        "Tab\tinside a name",
        "[1] Nested index",
        "Sep\u2028arator",
    ],
)
def test_parse_worlds_reads_any_name(name):
    """Names with spaces, '>', ':', fake fields, rich text, non-Latin text or emoji parse exactly."""
    (world,) = parse_worlds(world_line(name, 5, users=7, present=4, access="ContactsPlus", max_users=32))
    assert world == WorldLine(index=5, name=name, users=7, present=4, access_level="ContactsPlus",
                              max_users=32)


def test_parse_worlds_counts_padding_in_utf16_units():
    """An emoji name is padded by UTF-16 units: fewer spaces than its code points suggest."""
    name = "🎉 Party"
    line = f"[0] {name}{' ' * 24}Users: 1\tPresent: 0\tAccessLevel: Anyone\tMaxUsers: 4"
    assert utf16_units(name) == 8 and len(name) == 7
    assert parse_worlds(line)[0].name == name


def test_parse_worlds_keeps_trailing_spaces_of_an_unpadded_name():
    """A name past 32 UTF-16 units (though under 32 code points) keeps its trailing space."""
    name = "🎉" * 15 + "ab "  # 33 UTF-16 units, 18 code points: printed without padding
    assert parse_worlds(world_line(name))[0].name == name


def test_parse_worlds_keeps_trailing_spaces_of_a_long_name():
    """A 40-character name ending in spaces was not padded, so its spaces are its own."""
    name = "A forty character world name ending in  "
    assert len(name) == 40
    assert parse_worlds(world_line(name))[0].name == name


@pytest.mark.parametrize(("name", "parsed"), [("Short ", "Short"), ("x" * 31 + " ", "x" * 31)])
def test_parse_worlds_strips_trailing_spaces_inside_the_column(name, parsed):
    """Trailing spaces of a name within the 32-unit column look like padding: dropped (documented)."""
    assert parse_worlds(world_line(name))[0].name == parsed


def test_parse_worlds_of_an_empty_name():
    """A world with an empty name is still a world."""
    assert parse_worlds(world_line(""))[0].name == ""


def test_parse_worlds_keeps_the_console_index():
    """The index is the console's, not the position in the output."""
    assert [w.index for w in parse_worlds(world_line("A", 3) + "\n" + world_line("B", 7))] == [3, 7]


@pytest.mark.parametrize("block", NOISE_BLOCKS, ids=list(NOISE_BLOCKS))
@pytest.mark.parametrize("at", [0, 1, 2])
def test_parse_worlds_ignores_noise_anywhere(block, at):
    """Engine log lines before, between or after the world lines are never worlds."""
    assert parse_worlds(interleave(WORLDS.splitlines(), NOISE_BLOCKS[block], at)) == [HARBOR, MARKET]


def test_parse_worlds_ignores_everything_at_once():
    """Every kind of noise between the two lines, and an answer of Unknown command, give two worlds."""
    text = interleave(WORLDS.splitlines(), ALL_NOISE + ["Unknown command"], 1)
    assert parse_worlds(text) == [HARBOR, MARKET]


def test_parse_worlds_reads_tty_line_ends_and_colours():
    """CRLF line ends and ANSI colours (TTY mode) do not change the result."""
    text = "\x1b[37mUpdated: 1 -> 2\x1b[0m\r\n" + WORLDS.replace("\n", "\r\n")
    assert parse_worlds(text) == [HARBOR, MARKET]


def test_parse_worlds_ignores_unknown_trailing_fields():
    """A field a later build appends after MaxUsers does not hide the world."""
    assert parse_worlds(world_line("Harbor Lounge") + "\tHidden: False") == [HARBOR]


@pytest.mark.parametrize(
    "line",
    [
        "Harbor Lounge                   Users: 3\tPresent: 2\tAccessLevel: Anyone\tMaxUsers: 16",
        "[0] Harbor Lounge Users: 3\tPresent: 2\tAccessLevel: Anyone",
        "[x] Harbor Lounge               Users: 3\tPresent: 2\tAccessLevel: Anyone\tMaxUsers: 16",
        "[0] Harbor Lounge               Users: many\tPresent: 2\tAccessLevel: Anyone\tMaxUsers: 16",
        "Unknown command",
    ],
)
def test_parse_worlds_skips_lines_of_another_shape(line):
    """Lines without the [N] prefix or the full field tail are not worlds."""
    assert parse_worlds(line) == []


# --------------------------------------------------------------------------------------
# status


def test_parse_status_reads_the_console_example():
    """The console's 13-line block, field by field."""
    block = parse_status(STATUS)
    assert block == HARBOR_STATUS
    assert block is not None and block.complete


def test_parse_status_without_resonite_link():
    """Builds before 2026 print 12 lines: resonite_link is None and the block is complete."""
    block = parse_status("\n".join(STATUS_LINES[:-1]))
    assert block is not None
    assert block.resonite_link is None and block.complete
    assert block.users == ["HarborHost", "Mira", "Tobias"]


@pytest.mark.parametrize("line", ["Tags: ", "Tags:"])
def test_parse_status_reads_empty_tags_both_ways(line):
    """An empty value with or without the space after the colon is ''."""
    lines = [line if text.startswith("Tags:") else text for text in STATUS_LINES]
    block = parse_status("\n".join(lines))
    assert block is not None and block.tags == "" and block.complete


@pytest.mark.parametrize("link", ["off", "on, port 38123"])
def test_parse_status_keeps_resonite_link_as_printed(link):
    """The ResoniteLink value is kept as the console printed it."""
    block = parse_status("\n".join([*STATUS_LINES[:-1], f"ResoniteLink: {link}"]))
    assert block is not None and block.resonite_link == link


@pytest.mark.parametrize(("line", "users"), [("Users: ", []), ("Users:", []), ("Users: Solo", ["Solo"])])
def test_parse_status_splits_the_user_list(line, users):
    """Users: is split on ', '; an empty list is []."""
    lines = [line if text.startswith("Users:") else text for text in STATUS_LINES]
    block = parse_status("\n".join(lines))
    assert block is not None and block.users == users


def test_parse_status_splits_a_username_holding_the_separator():
    """A username containing ', ' comes out as two names (the printed list is ambiguous)."""
    lines = [("Users: Host, Smith, John" if text.startswith("Users:") else text) for text in STATUS_LINES]
    block = parse_status("\n".join(lines))
    assert block is not None and block.users == ["Host", "Smith", "John"]


def test_parse_status_reads_true_flags():
    """Hidden and Mobile Friendly read True as true."""
    text = STATUS.replace("Hidden from listing: False", "Hidden from listing: True").replace(
        "Mobile Friendly: True", "Mobile Friendly: False")
    block = parse_status(text)
    assert block is not None and block.hidden and not block.mobile_friendly


@pytest.mark.parametrize(
    "name",
    ["Cozy > Corner", "Lab: Physics", "Trailing space ", "<color=#ff0000>Red</color>", "港 🎉", "Users: 3"],
)
def test_parse_status_keeps_the_name_exactly(name):
    """The name after 'Name: ' is kept exactly, trailing spaces and all."""
    block = parse_status(STATUS.replace("Name: Harbor Lounge", f"Name: {name}"))
    assert block is not None and block.name == name


def test_parse_status_removes_only_one_space_after_the_colon():
    """A value that starts with a space keeps it: only the separator space goes."""
    block = parse_status(STATUS.replace("Description: A quiet", "Description:  A quiet"))
    assert block is not None and block.description == " A quiet place by the water"


@pytest.mark.parametrize("block", NOISE_BLOCKS, ids=list(NOISE_BLOCKS))
@pytest.mark.parametrize("at", [0, 1, 6, 10, 12, 13])
def test_parse_status_ignores_noise_anywhere(block, at):
    """Engine log lines before, inside or after the block change nothing."""
    assert parse_status(interleave(STATUS_LINES, NOISE_BLOCKS[block], at)) == HARBOR_STATUS


def test_parse_status_finds_resonite_link_behind_noise():
    """A ResoniteLink line after a noise line still belongs to the block."""
    assert parse_status(interleave(STATUS_LINES, UPDATED, 12)).resonite_link == "off"  # type: ignore[union-attr]


def test_parse_status_starts_at_name():
    """Key-like lines before Name: are not part of the block."""
    text = "Users: Stale, Names\nTags: old\n" + STATUS
    assert parse_status(text) == HARBOR_STATUS


def test_parse_status_reads_the_first_of_two_blocks():
    """When two blocks follow each other, the first one is returned."""
    second = STATUS.replace("Harbor Lounge", "Night Market")
    assert parse_status(STATUS + second) == HARBOR_STATUS
    assert parse_status("\n".join(STATUS_LINES[:-1]) + "\n" + second) == msgspec.structs.replace(
        HARBOR_STATUS, resonite_link=None)


def test_parse_status_reads_tty_line_ends_and_colours():
    """CRLF line ends and ANSI colours do not change the result."""
    text = "\x1b[37mSIGNALR: x\x1b[0m\r\n" + STATUS.replace("\n", "\r\n")
    assert parse_status(text) == HARBOR_STATUS


@pytest.mark.parametrize("text", ["", "\n\n", "Unknown command", "World index out of range",
                                  "SessionID: S-x\nUptime: 00:00:01", "\n".join(SIGNALR_SESSION)])
def test_parse_status_without_a_name_line_is_none(text):
    """No line starting with Name: means no status block."""
    assert parse_status(text) is None


def test_parse_status_joins_a_multi_line_description():
    """Lines between Description: and the next key continue the description."""
    text = STATUS.replace("Description: A quiet place by the water",
                          "Description: Rules:\nbe kind\nhave fun")
    block = parse_status(text)
    assert block is not None and block.description == "Rules:\nbe kind\nhave fun"
    assert block.tags == "chill, music, harbor" and block.complete


def test_parse_status_leaves_noise_out_of_a_multi_line_description():
    """Noise inside a multi-line description is not part of it."""
    text = STATUS.replace("Description: A quiet place by the water",
                          "Description: first\nUpdated: 1 -> 2\nsecond")
    block = parse_status(text)
    assert block is not None and block.description == "first\nsecond"


def test_parse_status_lists_missing_lines():
    """A missing line leaves its field at the default and is named in missing."""
    block = parse_status("\n".join(line for line in STATUS_LINES if not line.startswith("Uptime")))
    assert block is not None
    assert block.uptime == "" and block.missing == ("Uptime",) and not block.complete
    assert block.session_id == HARBOR_STATUS.session_id


def test_parse_status_of_a_lone_name_line():
    """A block cut short after Name: keeps the name and lists everything else as missing."""
    block = parse_status("Name: Harbor Lounge\n")
    assert block is not None and block.name == "Harbor Lounge"
    assert len(block.missing) == 11 and block.users == []


def test_parse_status_treats_a_bad_count_as_missing():
    """A count that is not a number is reported missing instead of failing."""
    block = parse_status(STATUS.replace("Max Users: 16", "Max Users: many"))
    assert block is not None and block.max_users == 0 and block.missing == ("Max Users",)


def test_parse_status_ignores_unknown_keys():
    """A line a later build adds (not right after Description) is skipped."""
    block = parse_status(interleave(STATUS_LINES, ["Tick Rate: 60"], 5))
    assert block == HARBOR_STATUS


# --------------------------------------------------------------------------------------
# users


def test_parse_users_reads_the_console_example():
    """The console's two users, the headless's account first."""
    assert parse_users(USERS) == [HOST, MIRA]


@pytest.mark.parametrize("text", ["", "\n", "\r\n", "Unknown command"])
def test_parse_users_of_no_users_is_empty(text):
    """No user lines: an empty list."""
    assert parse_users(text) == []


def test_parse_users_reads_an_empty_id():
    """A logged-out headless prints 'ID: ' with nothing after it: userId is ''."""
    (user,) = parse_users("HarborHost\tID: \tRole: Admin\tPresent: False\tPing: 0 ms\tFPS: 60\tSilenced: False")
    assert user.userId == "" and user.username == "HarborHost" and user.role == "Admin"


@pytest.mark.parametrize("name", ["Mira Grey", "  Odd  Spaces ", "名前 🎉", "a: b > c", "Role: Admin"])
def test_parse_users_keeps_the_username_exactly(name):
    """Usernames with spaces, colons or non-Latin text are kept as printed."""
    (user,) = parse_users(USER_LINES[1].replace("Mira", name, 1))
    assert user.username == name


@pytest.mark.parametrize(
    ("fps", "value"),
    [
        ("60.00012", 60.00012),
        ("60", 60.0),
        ("72.5", 72.5),
        ("1E-05", 1e-05),
        ("3.4028235E+38", 3.4028235e38),
        ("60,5", 60.5),
        ("NaN", 0.0),
        ("Infinity", 0.0),
        ("-Infinity", 0.0),
        ("\u221e", 0.0),
        ("fast", 0.0),
    ],
)
def test_parse_users_reads_fps(fps, value):
    """FPS in .NET's shortest round-trip form; unreadable or non-finite values read 0.0."""
    (user,) = parse_users(USER_LINES[1].replace("72.49871", fps))
    assert user.fps == value


@pytest.mark.parametrize(("ping", "value"), [("Ping: 0 ms", 0), ("Ping: 1234 ms", 1234), ("Ping: 42", 42)])
def test_parse_users_reads_ping(ping, value):
    """Ping is an integer of milliseconds (the unit may be missing)."""
    (user,) = parse_users(USER_LINES[1].replace("Ping: 42 ms", ping))
    assert user.ping == value


def test_parse_users_reads_flags():
    """Present and Silenced read True as true."""
    (user,) = parse_users(USER_LINES[0].replace("Present: False", "Present: True").replace(
        "Silenced: False", "Silenced: True"))
    assert user.present and user.silenced


def test_parse_users_ignores_unknown_trailing_fields():
    """A field appended by a later build is ignored."""
    assert parse_users(USER_LINES[1] + "\tVoice: Normal\tPlatform: Linux") == [MIRA]


def test_parse_users_reads_fields_in_another_order():
    """Known fields in another order, or with an unknown one between, still make a user."""
    line = ("Mira\tRole: Builder\tID: U-Mira\tDevice: Headset\tSilenced: False\tPresent: True"
            "\tFPS: 72.49871\tPing: 42 ms")
    assert parse_users(line) == [MIRA]


def test_parse_users_allows_a_missing_role():
    """Without a Role field the role is ''."""
    line = "Mira\tID: U-Mira\tPresent: True\tPing: 42 ms\tFPS: 72.49871\tSilenced: False"
    assert parse_users(line) == [msgspec.structs.replace(MIRA, role="")]


@pytest.mark.parametrize(
    "line",
    [
        "Mira\tID: U-Mira\tRole: Builder\tPresent: True\tPing: 42 ms\tFPS: 72.49871",
        "Mira\tID: U-Mira\tRole: Builder\tPresent: True\tPing: soon\tFPS: 1\tSilenced: False",
        "\tID: U-Mira\tRole: Builder\tPresent: True\tPing: 42 ms\tFPS: 72.49871\tSilenced: False",
        "Mira ID: U-Mira Role: Builder Present: True Ping: 42 ms FPS: 72.49871 Silenced: False",
    ],
)
def test_parse_users_skips_incomplete_lines(line):
    """Lines without a name or one of ID, Present, Ping, FPS, Silenced are not users."""
    assert parse_users(line) == []


@pytest.mark.parametrize("block", NOISE_BLOCKS, ids=list(NOISE_BLOCKS))
@pytest.mark.parametrize("at", [0, 1, 2])
def test_parse_users_ignores_noise_anywhere(block, at):
    """Engine log lines before, between or after the user lines are never users."""
    assert parse_users(interleave(USER_LINES, NOISE_BLOCKS[block], at)) == [HOST, MIRA]


@pytest.mark.parametrize("at", [0, 1, 2])
def test_parse_users_ignores_noise_that_mentions_an_id(at):
    """A TAB-indented log child holding 'ID:' is not a user, and the order is kept."""
    noise = ["SIGNALR: BroadcastStatus - Contact status for U-x.", "\tID: U-x\tStatus: Online"]
    assert parse_users(interleave(USER_LINES, noise, at)) == [HOST, MIRA]


def test_parse_users_reads_tty_line_ends_and_colours():
    """CRLF line ends and ANSI colours do not change the result."""
    text = "\x1b[37mUpdated: 1 -> 2\x1b[0m\r\n" + USERS.replace("\n", "\r\n")
    assert parse_users(text) == [HOST, MIRA]


def test_parse_users_keeps_console_order():
    """Thirty users come back in the order printed."""
    lines = [USER_LINES[1].replace("Mira", f"User {n}") for n in range(30)]
    assert [u.username for u in parse_users("\n".join(lines))] == [f"User {n}" for n in range(30)]


# --------------------------------------------------------------------------------------
# listbans


def test_parse_bans_reads_the_console_example():
    """The console's ban line, field by field."""
    assert parse_bans(BAN_LINE) == [Ban(username="SpamBot", userId="U-SpamBot01",
                                        machineIds=["4q8w0e2r6t1y9u3i5o7p"])]


@pytest.mark.parametrize(
    ("field", "ids"),
    [
        ("MachineIds: aaa", ["aaa"]),
        ("MachineIds: aaa,bbb", ["aaa", "bbb"]),
        ("MachineIds: aaa bbb", ["aaa", "bbb"]),
        ("MachineIds: aaa, bbb, ccc", ["aaa", "bbb", "ccc"]),
        ("MachineIds: aaa;bbb", ["aaa", "bbb"]),
        ("MachineIds: aaa , bbb,", ["aaa", "bbb"]),
        ("MachineIds: ", []),
        ("MachineIds:", []),
    ],
)
def test_parse_bans_splits_machine_ids(field, ids):
    """Machine ids separated by commas and/or spaces; none gives []."""
    (ban,) = parse_bans(BAN_LINE.replace("MachineIds: 4q8w0e2r6t1y9u3i5o7p", field))
    assert ban.machineIds == ids


def test_parse_bans_reads_several_in_order():
    """Several bans come back in console order, usernames with spaces intact."""
    text = (BAN_LINE + "\n[1]\tUsername: Rude Person\tUserID: U-Rude\tMachineIds: \n"
            "[2]\tUsername: Third\tUserID: U-3\tMachineIds: m1, m2\n")
    assert parse_bans(text) == [
        Ban("SpamBot", "U-SpamBot01", ["4q8w0e2r6t1y9u3i5o7p"]),
        Ban("Rude Person", "U-Rude", []),
        Ban("Third", "U-3", ["m1", "m2"]),
    ]


@pytest.mark.parametrize("text", ["", "\n", "Unknown command"])
def test_parse_bans_of_no_bans_is_empty(text):
    """No ban lines: an empty list."""
    assert parse_bans(text) == []


@pytest.mark.parametrize("block", NOISE_BLOCKS, ids=list(NOISE_BLOCKS))
def test_parse_bans_ignores_noise(block):
    """Engine log lines around a ban line are not bans; CRLF and colours are fine."""
    text = interleave([BAN_LINE, BAN_LINE.replace("[0]", "[1]")], NOISE_BLOCKS[block], 1)
    assert len(parse_bans("\x1b[0m" + text.replace("\n", "\r\n"))) == 2


def test_parse_bans_ignores_unknown_trailing_fields():
    """A field a later build appends does not hide the ban."""
    assert parse_bans(BAN_LINE + "\tReason: spam")[0].machineIds == ["4q8w0e2r6t1y9u3i5o7p"]


# --------------------------------------------------------------------------------------
# friendRequests


def test_parse_friend_requests_reads_one_name_per_line():
    """Each line is one username, spaces and all."""
    assert parse_friend_requests("Mira\nTobias Grey\n名前 🎉\n") == ["Mira", "Tobias Grey", "名前 🎉"]


@pytest.mark.parametrize("text", ["", "\n", "\r\n  \r\n"])
def test_parse_friend_requests_of_no_requests_is_empty(text):
    """No requests, no output: an empty list."""
    assert parse_friend_requests(text) == []


@pytest.mark.parametrize("block", NOISE_BLOCKS, ids=list(NOISE_BLOCKS))
def test_parse_friend_requests_ignores_noise(block):
    """Engine log lines, their TAB children and stack frames are not usernames."""
    assert parse_friend_requests(interleave(["Mira", "Tobias"], NOISE_BLOCKS[block], 1)) == ["Mira", "Tobias"]


@pytest.mark.parametrize("line", [*sorted(CONSOLE_ERRORS), "  indented", "\tchild", USER_LINES[0]])
def test_parse_friend_requests_skips_non_names(line):
    """Console errors, indented lines and lines with a TAB are not usernames."""
    assert parse_friend_requests(f"Mira\n{line}\n") == ["Mira"]


def test_parse_friend_requests_reads_tty_line_ends_and_colours():
    """CRLF line ends and ANSI colours are removed from the names."""
    assert parse_friend_requests("\x1b[1mMira\x1b[0m\r\nTobias\r\n") == ["Mira", "Tobias"]


# --------------------------------------------------------------------------------------
# build_world


def test_build_world_combines_the_three_answers():
    """worlds + status + users make the seed's World, uptime in English and raw."""
    world = build_world(HARBOR, HARBOR_STATUS, [HOST, MIRA])
    assert world == World(
        name="Harbor Lounge",
        sessionId="S-3f2a9c4e-81b7-4d0a-9e55-2c1d7b8a6f01",
        users=3,
        present=2,
        maxUsers=16,
        uptime="1 day 2 hours 3 minutes",
        accessLevel="Anyone",
        hidden=False,
        mobileFriendly=True,
        description="A quiet place by the water",
        tags="chill, music, harbor",
        users_list=[HOST, MIRA],
        index=0,
        uptime_raw="1.02:03:04.5060708",
    )


def test_build_world_encodes_to_the_seed_shape():
    """The World encodes with the seed's keys plus index and uptime_raw."""
    encoded = json.loads(msgspec.json.encode(build_world(HARBOR, HARBOR_STATUS, [HOST, MIRA])))
    assert set(encoded) == {
        "name", "sessionId", "users", "present", "maxUsers", "uptime", "accessLevel", "hidden",
        "mobileFriendly", "description", "tags", "users_list", "index", "uptime_raw",
    }
    assert encoded["users_list"][0] == {"username": "HarborHost", "userId": "U-1a2B3c4D5e",
                                        "present": False, "ping": 0, "fps": 60.00012,
                                        "silenced": False, "role": "Admin"}


def test_build_world_takes_counts_from_the_worlds_line():
    """users, present, maxUsers and accessLevel are the worlds line's, not the status's."""
    status = msgspec.structs.replace(HARBOR_STATUS, current_users=9, present_users=9, max_users=99,
                                     access_level="Private")
    world = build_world(HARBOR, status, [])
    assert (world.users, world.present, world.maxUsers, world.accessLevel) == (3, 2, 16, "Anyone")


def test_build_world_without_status():
    """Without a status, the status-only fields are empty."""
    world = build_world(MARKET, None, [HOST])
    assert (world.name, world.index, world.users, world.users_list) == ("Night Market", 1, 1, [HOST])
    assert (world.sessionId, world.uptime, world.uptime_raw, world.description, world.tags) == ("",) * 5
    assert not world.hidden and not world.mobileFriendly


def test_build_world_restores_trailing_spaces_from_status():
    """A name whose trailing spaces the padding hid gets them back from status."""
    line = parse_worlds(world_line("Short "))[0]
    world = build_world(line, msgspec.structs.replace(HARBOR_STATUS, name="Short "), [])
    assert world.name == "Short "


def test_build_world_keeps_the_worlds_name_when_status_differs():
    """A status name that is not the same name keeps the worlds line's name."""
    world = build_world(HARBOR, msgspec.structs.replace(HARBOR_STATUS, name="Renamed"), [])
    assert world.name == "Harbor Lounge"


@pytest.mark.parametrize(("raw", "uptime"), [("00:00:45.1000000", "45 seconds"), ("02:30:00", "2 hours 30 minutes"),
                                             ("soon", "")])
def test_build_world_humanizes_the_uptime(raw, uptime):
    """The uptime is English text; one that is not a TimeSpan leaves it empty, raw kept."""
    world = build_world(HARBOR, msgspec.structs.replace(HARBOR_STATUS, uptime=raw), [])
    assert (world.uptime, world.uptime_raw) == (uptime, raw)


def test_build_world_from_parsed_console_text():
    """The parsers' outputs plug into build_world as they are."""
    (line, _) = parse_worlds(WORLDS)
    world = build_world(line, parse_status(STATUS), parse_users(USERS))
    assert world.users_list == [HOST, MIRA] and world.uptime == "1 day 2 hours 3 minutes"
