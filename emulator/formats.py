"""Exact console output formats, as pure functions (no I/O, no clock).

Every function here returns the text the real headless prints, without the
prompt and without line ends; :mod:`resofleet.emulator.console` adds ``\\n`` (or ``\\r\\n``
in TTY mode). README, *The headless console*, sums up each format.
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from collections.abc import Iterable, Sequence

from .state import Ban, Server, User, World

NAME_COLUMN_UTF16 = 32
"""``worlds`` pads names to this many UTF-16 code units (C#'s ``PadRight(32)``)."""

TICKS_PER_SECOND = 10_000_000
"""A .NET tick is 100 ns; TimeSpan's fraction has seven digits."""

FLOAT32_MAX_DIGITS = 9
"""Nine significant digits always round-trip a single-precision float."""
FLOAT32_FIXED_EXPONENTS = (-4, 7)
"""Decimal exponents [low, high) .NET prints a float in fixed notation; others get ``E``."""


def utf16_len(text: str) -> int:
    """Length of ``text`` as .NET counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def pad_name(name: str, width: int = NAME_COLUMN_UTF16) -> str:
    """Right-pad ``name`` with spaces to ``width`` UTF-16 code units, like PadRight."""
    return name + " " * max(0, width - utf16_len(name))


def timespan(ticks: int) -> str:
    """Format a duration as .NET's TimeSpan "c" format: ``[-][d.]hh:mm:ss[.fffffff]``.

    The day part appears only from 24 hours on; the fraction only when it is
    not zero (``TimeSpan.Zero`` prints ``00:00:00``), exactly as .NET does.
    """
    sign = "-" if ticks < 0 else ""
    ticks = abs(ticks)
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    text = f"{sign}{f'{days}.' if days else ''}{hrs:02d}:{mins:02d}:{secs:02d}"
    if fraction:
        text += f".{fraction:07d}"
    return text


def parse_timespan(text: str) -> int:
    """Parse ``[d.]hh:mm:ss[.fffffff]`` into ticks; raises ValueError when malformed."""
    body = text.strip()
    negative = body.startswith("-")
    body = body.lstrip("-")
    head, _, rest = body.partition(":")
    days = 0
    if "." in head:
        day_text, _, head = head.partition(".")
        days = int(day_text)
    parts = [head, *rest.split(":")]
    if len(parts) != 3:
        raise ValueError(f"not a TimeSpan: {text!r}")
    hours, minutes = int(parts[0]), int(parts[1])
    sec_text, _, frac_text = parts[2].partition(".")
    if not (0 <= hours < 24 and 0 <= minutes < 60 and 0 <= int(sec_text) < 60):
        raise ValueError(f"not a TimeSpan: {text!r}")
    if len(frac_text) > 7 or (frac_text and not frac_text.isdigit()):
        raise ValueError(f"not a TimeSpan: {text!r}")
    ticks = (((days * 24 + hours) * 60 + minutes) * 60 + int(sec_text)) * TICKS_PER_SECOND
    ticks += int(frac_text.ljust(7, "0")) if frac_text else 0
    return -ticks if negative else ticks


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def dotnet_float(value: float) -> str:
    """Format a single-precision float like .NET's ``float.ToString()``.

    .NET Core 3.0+ prints the shortest digits that round-trip the float32, in
    fixed notation (no ``.0`` for whole numbers) unless the decimal exponent is
    at least 7 or below -4, where it switches to ``1E+07`` / ``1E-07``.
    """
    as_f32 = _f32(value)
    if not math.isfinite(as_f32):
        return "NaN" if math.isnan(as_f32) else ("∞" if as_f32 > 0 else "-∞")
    candidate = f"{as_f32:.{FLOAT32_MAX_DIGITS - 1}e}"
    for digits in range(1, FLOAT32_MAX_DIGITS + 1):
        shorter = f"{as_f32:.{digits - 1}e}"
        if _f32(float(shorter)) == as_f32:
            candidate = shorter
            break
    mantissa, _, exponent_text = candidate.partition("e")
    exponent = int(exponent_text)
    if exponent >= FLOAT32_FIXED_EXPONENTS[1] or exponent < FLOAT32_FIXED_EXPONENTS[0]:
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
        return f"{mantissa}E{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"
    text = format(Decimal(candidate), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def dotnet_bool(value: bool) -> str:
    """C#'s ``bool.ToString()``."""
    return "True" if value else "False"


def world_line(index: int, world: World) -> str:
    """One line of ``worlds``: padded name glued to ``Users:``, then TAB-separated fields."""
    return (
        f"[{index}] {pad_name(world.name)}Users: {world.user_count}"
        f"\tPresent: {world.present_count}\tAccessLevel: {world.access_level}"
        f"\tMaxUsers: {world.max_users}"
    )


def worlds_lines(worlds: Sequence[World]) -> list[str]:
    """``worlds``: one line per world, nothing at all when there are none."""
    return [world_line(index, world) for index, world in enumerate(worlds)]


def _kv(key: str, value: str, *, empty_space: bool) -> str:
    if value == "" and not empty_space:
        return f"{key}:"
    return f"{key}: {value}"


def status_lines(server: Server, world: World, now_ticks: int) -> list[str]:
    """``status`` of ``world``: 12 lines, plus ``ResoniteLink:`` on 2026+ builds."""
    space = server.options.empty_value_space
    lines = [
        _kv("Name", world.name, empty_space=space),
        _kv("SessionID", world.session_id, empty_space=space),
        f"Current Users: {world.user_count}",
        f"Present Users: {world.present_count}",
        f"Max Users: {world.max_users}",
        f"Uptime: {timespan(now_ticks - world.started_at)}",
        f"Access Level: {world.access_level}",
        f"Hidden from listing: {dotnet_bool(world.hidden)}",
        f"Mobile Friendly: {dotnet_bool(world.mobile_friendly)}",
        _kv("Description", world.description, empty_space=space),
        _kv("Tags", ", ".join(world.tags), empty_space=space),
        _kv("Users", ", ".join(u.username for u in world.users), empty_space=space),
    ]
    if server.options.resonite_link_line:
        link = "off" if world.resonite_link_port is None else f"on, port {world.resonite_link_port}"
        lines.append(f"ResoniteLink: {link}")
    return lines


def user_line(user: User, *, show_id: bool) -> str:
    """One line of ``users``; ``ID:`` stays empty when ``show_id`` is false (logged out)."""
    user_id = user.user_id if show_id else ""
    return (
        f"{user.username}\tID: {user_id}\tRole: {user.role}\tPresent: {dotnet_bool(user.present)}"
        f"\tPing: {user.ping} ms\tFPS: {dotnet_float(user.fps)}"
        f"\tSilenced: {dotnet_bool(user.silenced)}"
    )


def users_lines(server: Server, world: World) -> list[str]:
    """``users``: the headless's own account first, then everyone else in join order."""
    lines = []
    for position, user in enumerate(world.users):
        is_host = position == 0
        show_id = server.logged_in or (server.options.logged_out_ids == "host" and not is_host)
        lines.append(user_line(user, show_id=show_id))
    return lines


def ban_line(index: int, ban: Ban, separator: str) -> str:
    """One line of ``listbans``."""
    return (
        f"[{index}]\tUsername: {ban.username}\tUserID: {ban.user_id}"
        f"\tMachineIds: {separator.join(ban.machine_ids)}"
    )


def listbans_lines(bans: Iterable[Ban], separator: str) -> list[str]:
    """``listbans``: one line per ban, nothing when there are none."""
    return [ban_line(index, ban, separator) for index, ban in enumerate(bans)]


def help_lines(entries: Iterable[tuple[str, str, str]]) -> list[str]:
    """``help``: name, ``\\t<description>``, ``\\tUsage: <lowercase name> <args>``.

    ``entries`` are (name, description, args); with no args the usage line keeps
    its trailing space, as the real console prints it.
    """
    lines: list[str] = []
    for name, description, args in entries:
        lines += [name, f"\t{description}", f"\tUsage: {name.lower()} {args}"]
    return lines
