"""Console text in, structs out: the parsers for ``worlds``, ``status``, ``users``,
``listbans`` and ``friendRequests`` (the formats: README, *The headless console*).

Pure functions: no I/O, no clock, no asyncio. Each takes the text a command printed, with
the prompt and the TTY echo already removed by the console driver, and returns what it
recognised.

Tolerance rules, shared by every parser:

- **Lines.** Text is split on ``\\n`` only (never on ``str.splitlines``' other breaks such
  as U+2028, which a world name may contain); trailing ``\\r`` are removed (TTY mode ends
  lines with ``\\r\\n``); ANSI escape sequences are stripped first. Blank lines anywhere,
  leading and trailing included, are skipped.
- **Anchoring.** Every data line is recognised by a pattern anchored at both ends; a line
  that does not match is not data and is skipped, never reported as an error. The engine's
  log lines that land inside an answer (:func:`is_noise`) never match a data pattern.
- **Forward compatibility.** Unknown extra TAB fields after the known ones are ignored
  (``users`` also accepts known fields in another order or with unknown ones between).
  A ``Key:`` with an empty value may or may not keep its space (``Tags:`` / ``Tags: ``).
- **Values kept as printed.** Names, descriptions and tags are returned exactly as the
  console printed them; only the ``worlds`` name padding is removed (see
  :func:`parse_worlds` for the one ambiguity that leaves).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import Final

import msgspec

from resofleet.contracts import Ban, User, World

from .timespan import humanize_uptime, parse_timespan

__all__ = [
    "CONSOLE_ERRORS",
    "NAME_COLUMN_UTF16",
    "StatusBlock",
    "WorldLine",
    "build_world",
    "humanize_uptime",
    "is_noise",
    "parse_bans",
    "parse_friend_requests",
    "parse_status",
    "parse_timespan",
    "parse_users",
    "parse_worlds",
    "strip_ansi",
    "utf16_len",
]

#: ``worlds`` pads each name with spaces to this many UTF-16 code units (C#'s
#: ``PadRight(32)``); a longer name is printed whole, glued to ``Users:``.
NAME_COLUMN_UTF16: Final = 32

#: One-line replies that say a command did not run. They are not data of any command, so
#: :func:`parse_friend_requests` never mistakes them for a username.
CONSOLE_ERRORS: Final = frozenset({
    "Unknown command",
    "The world has been destroyed in the meanwhile",
})

# --------------------------------------------------------------------------------------
# lines, ANSI and noise

#: ANSI escape sequences (ECMA-48), most specific first: string sequences (OSC, DCS, SOS,
#: PM, APC) up to BEL or ST (or the end of the line when unterminated), CSI with its
#: parameters, other two- and three-byte ESC sequences, and a lone ESC. Eight-bit C1
#: forms (U+009B ...) are left alone: in decoded UTF-8 text they are ordinary characters.
_ANSI: Final = re.compile(
    r"\x1b[P\]X^_][^\x07\x1b\n]*(?:\x07|\x1b\\)?"
    r"|\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b[ -/]*[0-~]"
    r"|\x1b"
)

#: Engine log lines that can land inside a command's answer (README, *The headless
#: console*, "Engine log lines"): SignalR traffic, inventory refreshes, ``Updated: a -> b``,
#: stack-trace frames, and TAB-indented lines (the children of a ``SIGNALR:`` line).
_NOISE: Final = re.compile(
    r"SIGNALR:"
    r"|Running refresh on:"
    r"|Updated: .* -> "
    r"|\s+at \S"
    r"|\t"
)


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (colours, cursor moves, titles)."""
    return _ANSI.sub("", text) if "\x1b" in text else text


def is_noise(line: str) -> bool:
    """Whether ``line`` is an engine log line rather than part of a command's answer.

    Context-free, for one line without its line end: a TAB-indented line counts as noise
    because no answer of the parsed commands starts with a TAB (``help``'s answer does, so
    do not use this to filter ``help``). Blank lines are not noise: they belong to some
    answers (``kick``); the parsers skip them separately.
    """
    return _NOISE.match(line) is not None


def _lines(text: str) -> list[str]:
    """``text`` as lines: ANSI stripped, split on ``\\n`` only, trailing ``\\r`` removed."""
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    lines = text.split("\n")
    if "\r" in text:
        lines = [line.rstrip("\r") for line in lines]
    return lines


def _answer_lines(text: str) -> Iterator[str]:
    """The lines of ``text`` that are neither blank nor noise."""
    for line in _lines(text):
        if line and not line.isspace() and _NOISE.match(line) is None:
            yield line


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, as .NET counts it (astral chars are 2)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _bool(text: str) -> bool:
    """.NET's ``True``/``False`` (any case); anything else is false."""
    return text.strip().lower() == "true"


# --------------------------------------------------------------------------------------
# worlds


class WorldLine(msgspec.Struct, frozen=True):
    """One line of ``worlds``."""

    index: int
    name: str
    users: int
    present: int
    access_level: str
    max_users: int


#: ``[N] <name, padded>Users: N\tPresent: N\tAccessLevel: X\tMaxUsers: N[\t<extra>...]``.
#: The name group is greedy, so the tail that counts is the LAST one on the line: a name
#: containing ``Users: 3`` (or a whole fake tail) stays in the name.
_WORLD: Final = re.compile(
    r"\[(\d+)\] (.*)Users: ?(\d+)\tPresent: ?(\d+)\tAccessLevel: ?([^\t]*)"
    r"\tMaxUsers: ?(\d+)(?:\t[^\t]*)*[ \t]*"
)


def _unpad(region: str) -> str:
    """The world name inside its padded column.

    A region wider than the column was printed without padding, so it is the name exactly
    (trailing spaces included). A region of the column's width (or, tolerated, narrower)
    loses its trailing spaces: padding and spaces that end a short name look the same, and
    the name without them is the likelier one. :func:`build_world` restores such spaces
    from ``status`` when it has the world's status.
    """
    if region[-1:] != " " or utf16_len(region) > NAME_COLUMN_UTF16:
        return region
    return region.rstrip(" ")


def parse_worlds(text: str) -> list[WorldLine]:
    """The worlds listed by ``worlds``, in console order; ``[]`` for no output.

    A name holding a line break cannot be recognised (its line is split in two); such a
    world is missing from the result rather than reported under half a name.
    """
    worlds = []
    for line in _lines(text):
        match = _WORLD.fullmatch(line)
        if match is not None:
            index, region, users, present, access, max_users = match.groups()
            worlds.append(WorldLine(
                int(index), _unpad(region), int(users), int(present), access, int(max_users)
            ))
    return worlds


# --------------------------------------------------------------------------------------
# status


class StatusBlock(msgspec.Struct, frozen=True):
    """The ``status`` of one world. ``missing`` names the keys the block did not have
    (``ResoniteLink`` is never missing: builds before 2026 do not print it, and
    ``resonite_link`` is then ``None``); their fields keep the empty defaults."""

    name: str
    session_id: str = ""
    current_users: int = 0
    present_users: int = 0
    max_users: int = 0
    uptime: str = ""
    access_level: str = ""
    hidden: bool = False
    mobile_friendly: bool = False
    description: str = ""
    tags: str = ""
    users: list[str] = msgspec.field(default_factory=list)
    resonite_link: str | None = None
    missing: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether every line a ``status`` prints was there."""
        return not self.missing


#: Printed key -> StatusBlock field, in the order the console prints them.
_STATUS_FIELDS: Final = {
    "Name": "name",
    "SessionID": "session_id",
    "Current Users": "current_users",
    "Present Users": "present_users",
    "Max Users": "max_users",
    "Uptime": "uptime",
    "Access Level": "access_level",
    "Hidden from listing": "hidden",
    "Mobile Friendly": "mobile_friendly",
    "Description": "description",
    "Tags": "tags",
    "Users": "users",
    "ResoniteLink": "resonite_link",
}
_STATUS_INT: Final = frozenset({"Current Users", "Present Users", "Max Users"})
_STATUS_BOOL: Final = frozenset({"Hidden from listing", "Mobile Friendly"})
_STATUS_OPTIONAL: Final = frozenset({"ResoniteLink"})
_STATUS_KEY: Final = re.compile(
    "(" + "|".join(re.escape(key) for key in _STATUS_FIELDS) + r"):(.*)"
)
#: A whole clean ``status`` block (no noise inside, one-line description), read in one
#: scan; anything else takes the line-by-line reader, which gives the same result.
_STATUS_BLOCK: Final = re.compile(
    r"^Name: ?([^\r\n]*)\r*\n"
    r"SessionID: ?([^\r\n]*)\r*\n"
    r"Current Users: ?(\d+)\r*\n"
    r"Present Users: ?(\d+)\r*\n"
    r"Max Users: ?(\d+)\r*\n"
    r"Uptime: ?([^\r\n]*)\r*\n"
    r"Access Level: ?([^\r\n]*)\r*\n"
    r"Hidden from listing: ?([^\r\n]*)\r*\n"
    r"Mobile Friendly: ?([^\r\n]*)\r*\n"
    r"Description: ?([^\r\n]*)\r*\n"
    r"Tags: ?([^\r\n]*)\r*\n"
    r"Users: ?([^\r\n]*)\r*(?:\n|\Z)"
    r"(?:ResoniteLink: ?([^\r\n]*)\r*(?:\n|\Z))?",
    re.MULTILINE,
)
_FIRST_NAME_LINE: Final = re.compile(r"^Name:", re.MULTILINE)
#: Separator of the ``Users:`` list (C#'s ``string.Join(", ", ...)``).
LIST_SEPARATOR: Final = ", "


def _status_value(raw: str) -> str:
    """The value after ``Key:``: one space removed (it may be absent when empty)."""
    return raw[1:] if raw[:1] == " " else raw


def parse_status(text: str) -> StatusBlock | None:
    """The first ``status`` block in ``text``, or ``None`` when there is no ``Name:`` line.

    The block starts at the first line that begins with ``Name:``. After it, each known
    ``Key:`` line fills its field once; noise, blank and unrecognised lines are skipped;
    a key seen a second time ends the block (it belongs to whatever follows). Lines right
    after ``Description:`` that are no known key are the description's own further lines
    (a multi-line description), joined to it with ``\\n``; blank lines inside such a
    description are lost, as are lines that look like noise. ``Users:`` is split on ``", "``:
    a username that itself contains ``", "`` comes out as two (the printed list cannot be
    told apart); :func:`build_world` takes its users from ``users`` instead.
    """
    text = strip_ansi(text)
    block = _STATUS_BLOCK.search(text)
    if block is not None and _fast_block_is_first(text, block):
        (name, session_id, current, present, max_users, uptime, access, hidden, mobile,
         description, tags, users, link) = block.groups()
        return StatusBlock(
            name, session_id, int(current), int(present), int(max_users), uptime, access,
            _bool(hidden), _bool(mobile), description, tags,
            users.split(LIST_SEPARATOR) if users else [], link,
        )
    values: dict[str, str] = {}
    in_description = False
    for line in _answer_lines(text):
        match = _STATUS_KEY.match(line)
        key = match.group(1) if match is not None else None
        if not values:
            if key == "Name":
                values[key] = _status_value(match.group(2))  # type: ignore[union-attr]
            continue
        if key is None or (in_description and key in values):
            if in_description:
                values["Description"] += "\n" + line
            continue
        if key in values:
            break
        values[key] = _status_value(match.group(2))  # type: ignore[union-attr]
        in_description = key == "Description"
    if not values:
        return None
    return _status_block(values)


def _fast_block_is_first(text: str, block: re.Match[str]) -> bool:
    """Whether the block the one-scan reader found is the one the line reader would read.

    It is when it starts at the first ``Name:`` line and nothing it left out (a
    ``ResoniteLink:`` line behind noise) belongs to it.
    """
    first = _FIRST_NAME_LINE.search(text)
    if first is None or first.start() != block.start():
        return False
    return block.group(13) is not None or "ResoniteLink:" not in text[block.end():]


def _status_block(values: dict[str, str]) -> StatusBlock:
    fields: dict[str, object] = {}
    missing = []
    for key, attr in _STATUS_FIELDS.items():
        value = values.get(key)
        if value is None:
            if key not in _STATUS_OPTIONAL:
                missing.append(key)
        elif key in _STATUS_INT:
            try:
                fields[attr] = int(value)
            except ValueError:
                missing.append(key)
        elif key in _STATUS_BOOL:
            fields[attr] = _bool(value)
        elif key == "Users":
            fields[attr] = value.split(LIST_SEPARATOR) if value else []
        else:
            fields[attr] = value
    return StatusBlock(**fields, missing=tuple(missing))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# users


#: The exact shape of a ``users`` line, known fields in the printed order, extra TAB
#: fields after them allowed. Lines that miss it go to the slower field-by-field reader.
_USER_BODY: Final = (
    r"([^\t\n]+)\tID: ?([^\t\n]*)\tRole: ?([^\t\n]*)\tPresent: ?(True|False)"
    r"\tPing: ?(-?\d+)(?: ?ms)?\tFPS: ?([^\t\n]*)\tSilenced: ?(True|False)"
    r"(?:\t[^\t\n]*)*[ \t\r]*"
)
_USER: Final = re.compile(_USER_BODY)
#: The same over a whole text at once (one C-level scan instead of a Python loop).
_USER_LINES: Final = re.compile(rf"^{_USER_BODY}$", re.MULTILINE)
#: The layout every ``users`` line has on the consoles seen (README, *The headless console*), whole lines only:
#: one space after each colon, ``Ping: N ms``, no extra fields, no trailing space or CR.
#: ``Present``/``Silenced`` capture ``T`` or nothing, so their truth is the group's. A text
#: made only of such lines (and nothing else carrying ``\tID:``) is read in one C-level
#: scan plus column-wise conversions; anything else takes the line-by-line reader below.
_USER_LAYOUT: Final = re.compile(
    r"^([^\t\n]+)\tID: ([^\t\n]*)\tRole: ([^\t\n]*)\tPresent: (?:(T)rue|False)"
    r"\tPing: (-?\d+) ms\tFPS: ([^\t\n]*)\tSilenced: (?:(T)rue|False)(?:\n|\Z)",
    re.MULTILINE,
)
#: Present once in every ``users`` line, and in every line the slow reader would take.
_USER_MARK: Final = "\tID:"
_USER_REQUIRED: Final = ("ID", "Present", "Ping", "FPS", "Silenced")
_INTEGER: Final = re.compile(r"\s*(-?\d+)")
#: Infinity as .NET Framework printed it (newer .NET prints ``Infinity``).
_DOTNET_INFINITY: Final = "\u221e"


def _fps(text: str) -> float:
    """A .NET float as printed: shortest round-trip, maybe ``1E-05``, ``∞`` or ``60,5``.

    Unreadable and non-finite values read as ``0.0``: JSON has no NaN or infinity (it
    would go out as ``null``), and clients format the number.
    """
    try:
        value = float(text)
    except ValueError:
        text = text.strip().replace(_DOTNET_INFINITY, "inf")
        if "," in text and "." not in text:
            text = text.replace(",", ".")  # a culture with a decimal comma
        try:
            value = float(text)
        except ValueError:
            return 0.0
    return value if math.isfinite(value) else 0.0


def _user_from_fields(line: str) -> User | None:
    """A ``users`` line whose fields are in an unexpected order or shape, or ``None``."""
    name, *rest = line.split("\t")
    if not name or not rest:
        return None
    fields = {}
    for item in rest:
        key, sep, value = item.partition(":")
        if sep:
            fields.setdefault(key.strip(), _status_value(value))
    if any(key not in fields for key in _USER_REQUIRED):
        return None
    ping = _INTEGER.match(fields["Ping"])
    if ping is None:
        return None
    return User(
        name,
        fields["ID"].strip(),
        _bool(fields["Present"]),
        int(ping.group(1)),
        _fps(fields["FPS"]),
        _bool(fields["Silenced"]),
        fields.get("Role", "").strip(),
    )


def _users_in_layout(text: str) -> list[User] | None:
    """The users of a text made only of lines in the usual layout, or ``None``.

    The hot path of a worlds poll: one regex scan, then each field converted for all rows
    at once (``zip``/``map`` loop in C), so no Python code runs per user. ``None`` when a
    candidate line is off the layout or an FPS is not a finite plain float: the general
    reader decides those.
    """
    rows = _USER_LAYOUT.findall(text)
    if len(rows) != text.count(_USER_MARK):
        return None
    if not rows:
        return []
    names, user_ids, roles, present, pings, fps_texts, silenced = zip(*rows)
    try:
        fps = list(map(float, fps_texts))
    except ValueError:
        return None  # ``∞``, a decimal comma...: _fps reads those
    if not all(map(math.isfinite, fps)):
        return None
    return list(map(User, names, user_ids, map(bool, present), map(int, pings), fps,
                    map(bool, silenced), roles))


def parse_users(text: str) -> list[User]:
    """The users listed by ``users``, in console order (the headless's account first).

    A line is a user when it has a name before its first TAB and at least the ``ID``,
    ``Present``, ``Ping``, ``FPS`` and ``Silenced`` fields; ``Role`` may be absent (then
    ``""``). ``ID:`` is empty when the headless is logged out: ``userId`` is then ``""``.
    Usernames are kept exactly as printed (spaces included).
    """
    text = strip_ansi(text)
    users = _users_in_layout(text)
    if users is not None:
        return users
    rows = _USER_LINES.findall(text)
    if len(rows) == text.count(_USER_MARK):  # every candidate line has the usual shape
        return [
            User(name, user_id, present == "True", int(ping), _fps(fps), silenced == "True", role)
            for name, user_id, role, present, ping, fps, silenced in rows
        ]
    users = []
    for line in _lines(text):
        match = _USER.fullmatch(line)
        if match is not None:
            name, user_id, role, present, ping, fps, silenced = match.groups()
            users.append(User(
                name, user_id, present == "True", int(ping), _fps(fps), silenced == "True", role
            ))
        elif _USER_MARK in line:
            user = _user_from_fields(line)
            if user is not None:
                users.append(user)
    return users


# --------------------------------------------------------------------------------------
# listbans and friendRequests


_BAN: Final = re.compile(
    r"\[(\d+)\]\s*Username: ?([^\t]*)\tUserID: ?([^\t]*)\tMachineIds: ?([^\t]*)"
    r"(?:\t[^\t]*)*"
)
#: Between machine ids: never observed on a real console, so commas, semicolons and whitespace
#: in any mix are accepted. Machine ids themselves are base-32 text without any of these.
_MACHINE_ID_SEPARATOR: Final = re.compile(r"[\s,;]+")


def parse_bans(text: str) -> list[Ban]:
    """The bans listed by ``listbans``, in console order; ``[]`` for no output."""
    bans = []
    for line in _lines(text):
        match = _BAN.fullmatch(line)
        if match is not None:
            _, username, user_id, machine_ids = match.groups()
            ids = [m for m in _MACHINE_ID_SEPARATOR.split(machine_ids) if m]
            bans.append(Ban(username, user_id.strip(), ids))
    return bans


def parse_friend_requests(text: str) -> list[str]:
    """Usernames with a pending friend request, one per line; ``[]`` for no output.

    Any text could be a username, so this is the one heuristic parser. A line is skipped
    when it is blank, indented (starts with a space or TAB: stack frames, the children of
    log lines), contains a TAB (no username does; other commands' data lines do), is an
    engine log line (:func:`is_noise`) or a console error (:data:`CONSOLE_ERRORS`).
    Everything else is a username, kept exactly as printed.
    """
    names = []
    for line in _answer_lines(text):
        if line[0] in " \t" or "\t" in line or line in CONSOLE_ERRORS:
            continue
        names.append(line)
    return names


# --------------------------------------------------------------------------------------
# the World a client sees


def build_world(line: WorldLine, status: StatusBlock | None, users: Iterable[User]) -> World:
    """The client protocol's World from a world's ``worlds`` line, ``status`` and ``users``.

    Counts come from the ``worlds`` line (they include the headless's own account).
    ``status`` supplies the session id, uptime, flags, description and tags; without it
    they are empty. The name is the ``worlds`` one, unless ``status`` has the same name with
    trailing spaces (which the ``worlds`` padding hides): then that one. An uptime that is
    not a TimeSpan leaves ``uptime`` empty and keeps the text in ``uptime_raw``.
    """
    name = line.name
    if status is None:
        return World(
            name, "", line.users, line.present, line.max_users, "", line.access_level,
            False, False, "", "", list(users), line.index, "",
        )
    if status.name != name and status.name.rstrip(" ") == name:
        name = status.name
    try:
        uptime = humanize_uptime(parse_timespan(status.uptime))
    except ValueError:
        uptime = ""
    return World(
        name,
        status.session_id,
        line.users,
        line.present,
        line.max_users,
        uptime,
        line.access_level,
        status.hidden,
        status.mobile_friendly,
        status.description,
        status.tags,
        list(users),
        line.index,
        status.uptime,
    )
