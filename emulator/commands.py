"""The 55 console commands (plus ``help``): check the arguments, change the state, reply.

Each handler takes the :class:`~.interpreter.Interpreter` (the server's state, its clock and
its randomness) and the command's arguments, and returns the lines to print or a
:class:`~.syntax.Reply`. :data:`COMMANDS` lists them in the order ``help`` prints them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import formats, noise
from .state import ACCESS_LEVELS, ROLES, Ban, User
from .syntax import (
    MAX_USERS_RANGE, RECORD_URL, RESONITE_LINK_PORTS, TEMPLATES,
    USER_NOT_FOUND, WORLD_DESTROYED, Command, Handler, Reply,
)

if TYPE_CHECKING:
    from .interpreter import Interpreter

__all__ = ["COMMANDS", "COMMANDS_BY_NAME"]


def _parse_bool(text: str) -> bool | None:
    """C#'s ``bool.TryParse``: case-insensitive ``true``/``false``."""
    return {"true": True, "false": False}.get(text.strip().casefold())


def _parse_int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _parse_float(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def _canonical(value: str, choices: tuple[str, ...]) -> str | None:
    for choice in choices:
        if choice.casefold() == value.casefold():
            return choice
    return None


def _save_config(it: Interpreter, args: list[str]) -> list[str]:
    return [f"Config saved to {args[0] if args else 'Config/Config.json'}"]


def _login(it: Interpreter, args: list[str]) -> list[str]:
    server = it.server
    if server.logged_in:
        return [f"Already logged in as {server.account_name}"]
    if not args[1]:
        return ["Login failed: invalid credentials"]
    server.logged_in = True
    server.account_name = args[0].split("@")[0]
    server.account_id = "U-" + re.sub(r"[^A-Za-z0-9-]", "", server.account_name)
    for world in server.worlds:
        if world.users:
            world.users[0].username = server.account_name
            world.users[0].user_id = server.account_id
    return [f"Logging in as {args[0]}", f"Logged in as {server.account_name}"]


def _logout(it: Interpreter, args: list[str]) -> list[str]:
    if not it.server.logged_in:
        return ["Not logged in"]
    it.server.logged_in = False
    return ["Logged out"]


def _friend(it: Interpreter, name: str) -> str | None:
    for friend in it.server.friends:
        if friend.casefold() == name.casefold():
            return friend
    return None


def _message(it: Interpreter, args: list[str]) -> list[str]:
    if not it.server.logged_in:
        return ["Not logged in"]
    friend = _friend(it, args[0])
    if friend is None:
        return [USER_NOT_FOUND]
    message_id = f"MSG-{it.rng.session_id()[2:]}"
    return [f"SIGNALR: SendMessage - {message_id} to {friend}", "Message sent!"]


def _invite(it: Interpreter, args: list[str]) -> list[str]:
    if not it.server.logged_in:
        return ["Not logged in"]
    friend = _friend(it, args[0])
    if friend is None:
        return [USER_NOT_FOUND]
    world = it.world
    message_id = f"MSG-{it.rng.session_id()[2:]}"
    return [
        f"Updated: {world.access_level} -> {world.access_level}",
        f"Updated: {friend} -> {friend} (invited to {world.session_id})",
        f"SIGNALR: SendMessage - {message_id} to {friend}",
        f"SIGNALR: BroadcastSession SessionInfo. Id: {world.session_id}, Name: {world.name}",
        "Invite sent!",
    ]


def _friend_requests(it: Interpreter, args: list[str]) -> list[str]:
    return list(it.server.friend_requests)


def _accept_friend_request(it: Interpreter, args: list[str]) -> list[str]:
    for request in it.server.friend_requests:
        if request.casefold() == args[0].casefold():
            it.server.friend_requests.remove(request)
            it.server.friends.append(request)
            return ["Request accepted!"]
    return ["There's no friend request from this user"]


def _send_friend_request(it: Interpreter, args: list[str]) -> list[str]:
    if _friend(it, args[0]) is not None:
        return ["Already friends"]
    return ["Friend request sent!"]


def _remove_friend(it: Interpreter, args: list[str]) -> list[str]:
    friend = _friend(it, args[0])
    if friend is None:
        return [USER_NOT_FOUND]
    it.server.friends.remove(friend)
    return ["Friend removed!"]


def _worlds(it: Interpreter, args: list[str]) -> list[str]:
    return formats.worlds_lines(it.server.worlds)


def _focus(it: Interpreter, args: list[str]) -> list[str]:
    worlds = it.server.worlds
    index = _parse_int(args[0])
    if index is not None:
        if not 0 <= index < len(worlds):
            return ["World index out of range"]
        it.server.focused = worlds[index]
        return []
    for world in worlds:
        if world.name == args[0]:
            it.server.focused = world
            return []
    return ["World with this name does not exist"]


def _start_world_url(it: Interpreter, args: list[str]) -> list[str] | Reply:
    url = args[0]
    if not RECORD_URL.match(url):
        if it.server.options.wedge_on_bad_url:
            return Reply(wedge=True)
        return [f"Invalid record URL: {url}"]
    record = url.rstrip("/").rsplit("/", 1)[-1]
    return it.start_world(f"World {record}")


def _start_world_template(it: Interpreter, args: list[str]) -> list[str]:
    template = _canonical(args[0], TEMPLATES)
    if template is None:
        return [f"Invalid template. Available: {', '.join(TEMPLATES)}"]
    return it.start_world(template)


def _status(it: Interpreter, args: list[str]) -> list[str]:
    return formats.status_lines(it.server, it.world, it.clock.now())


def _enable_resonite_link(it: Interpreter, args: list[str]) -> list[str]:
    port = _parse_int(args[0])
    if port is None or not 0 <= port <= 65535:
        return ["Invalid port"]
    if port == 0:
        port = it.rng.ids.randint(*RESONITE_LINK_PORTS)
    it.world.resonite_link_port = port
    return [f"ResoniteLink enabled on port {port}"]


def _session_url(it: Interpreter, args: list[str]) -> list[str]:
    return [it.server.options.session_url.replace("{session_id}", it.world.session_id)]


def _session_id(it: Interpreter, args: list[str]) -> list[str]:
    return [it.world.session_id]


def _silent(it: Interpreter, args: list[str]) -> list[str]:
    return []


def _users(it: Interpreter, args: list[str]) -> list[str]:
    return formats.users_lines(it.server, it.world)


def _close(it: Interpreter, args: list[str]) -> Reply:
    server = it.server
    server.worlds.remove(it.world)
    server.focused = server.worlds[-1] if server.worlds else None
    late = [WORLD_DESTROYED] if it.rng.quirks.random() < server.options.close_destroyed else []
    return Reply(late=late)


def _restart(it: Interpreter, args: list[str]) -> list[str]:
    world = it.world
    world.users = [it.host_user()]
    world.started_at = it.clock.now()
    if not world.session_id.startswith("S-U-"):
        world.session_id = it.rng.session_id()
    if it.rng.quirks.random() < it.server.options.restart_destroyed:
        it.destroyed_pending = True
    return []


def _target(it: Interpreter, name: str) -> User | None:
    return it.world.find_user(name)


def _user_action(kind: str, diagnostic: Callable[[User], str], result: str,
                 change: Callable[[Interpreter, User], None]) -> Handler:
    """kick/silence/unsilence/respawn/ban: diagnostic, blank line, stack trace, result."""
    def handler(it: Interpreter, args: list[str]) -> list[str]:
        user = _target(it, args[0])
        if user is None:
            return [USER_NOT_FOUND]
        lines = [diagnostic(user), *noise.stack_trace(kind), f"{user.username} {result}!"]
        change(it, user)
        return lines
    return handler


def _kick_change(it: Interpreter, user: User) -> None:
    if user is not it.world.users[0]:
        it.world.users.remove(user)


def _set_silenced(value: bool) -> Callable[[Interpreter, User], None]:
    def change(it: Interpreter, user: User) -> None:
        user.silenced = value
    return change


def _ban_change(it: Interpreter, user: User) -> None:
    if user is it.world.users[0]:
        return
    if it.server.find_ban(username=user.username, user_id=user.user_id or None) is None:
        machine_ids = list(user.machine_ids) or [it.rng.machine_id()]
        it.server.bans.append(Ban(user.username, user.user_id, machine_ids))
    it.remove_everywhere(user.username, user.user_id)


def _unban(it: Interpreter, args: list[str]) -> list[str]:
    before = len(it.server.bans)
    it.server.bans = [b for b in it.server.bans if b.username.casefold() != args[0].casefold()]
    return [f"Removed {before - len(it.server.bans)} matching bans"]


def _listbans(it: Interpreter, args: list[str]) -> list[str]:
    return formats.listbans_lines(it.server.bans, it.server.options.machine_id_separator)


def _ban_by(it: Interpreter, username: str, user_id: str, machine_ids: list[str]) -> list[str]:
    if it.server.find_ban(username=username, user_id=user_id) is not None:
        return ["Already banned"]
    it.server.bans.append(Ban(username, user_id, machine_ids))
    it.remove_everywhere(username, user_id)
    return ["User banned"]


def _ban_by_name(it: Interpreter, args: list[str]) -> list[str]:
    known = it.server.find_known_user(args[0])
    if known is not None:
        return _ban_by(it, known.username, known.user_id, list(known.machine_ids))
    return _ban_by(it, args[0], "U-" + re.sub(r"[^A-Za-z0-9-]", "", args[0]), [])


def _ban_by_id(it: Interpreter, args: list[str]) -> list[str]:
    if not args[0].startswith("U-"):
        return [USER_NOT_FOUND]
    known = it.server.find_known_user(args[0])
    username = known.username if known else args[0][2:]
    return _ban_by(it, username, args[0], list(known.machine_ids) if known else [])


def _unban_by(attribute: str) -> Handler:
    def handler(it: Interpreter, args: list[str]) -> list[str]:
        ban = it.server.find_ban(**{attribute: args[0]})
        if ban is None:
            return ["Ban not found"]
        it.server.bans.remove(ban)
        return ["Ban removed"]
    return handler


def _role(it: Interpreter, args: list[str]) -> list[str]:
    user = _target(it, args[0])
    if user is None:
        return [USER_NOT_FOUND]
    role = _canonical(args[1], ROLES)
    if role is None:
        return [f"Role {args[1]} isn't available"]
    user.role = role
    return [f"{user.username} now has role {role}!"]


def _name(it: Interpreter, args: list[str]) -> list[str]:
    it.world.name = args[0]
    return []


def _access_level(it: Interpreter, args: list[str]) -> list[str]:
    level = _canonical(args[0], ACCESS_LEVELS)
    if level is None:
        return [f"Invalid access level. Valid levels are: {', '.join(ACCESS_LEVELS)}"]
    it.world.access_level = level
    return [f"World {it.world.name} now has access level {level}"]


def _hide_from_listing(it: Interpreter, args: list[str]) -> list[str]:
    value = _parse_bool(args[0])
    if value is None:
        return ["Invalid value. Must be true or false"]
    it.world.hidden = value
    if value:
        return [f"World {it.world.name} will now be hidden from listing"]
    return [f"World {it.world.name} will now show in listing"]


def _description(it: Interpreter, args: list[str]) -> list[str]:
    it.world.description = args[0]
    return []


def _max_users(it: Interpreter, args: list[str]) -> list[str]:
    value = _parse_int(args[0])
    low, high = MAX_USERS_RANGE
    if value is None or not low <= value <= high:
        return [f"Invalid number. Must be within {low} and {high}"]
    it.world.max_users = value
    return []


def _away_kick_interval(it: Interpreter, args: list[str]) -> list[str]:
    value = _parse_float(args[0])
    if value is None:
        return ["Invalid number"]
    it.world.away_kick_minutes = value
    return []


def _typed_impulse(parse: Callable[[str], object]) -> Handler:
    def handler(it: Interpreter, args: list[str]) -> list[str]:
        return ["Invalid value"] if parse(args[1]) is None else []
    return handler


def _spawn(it: Interpreter, args: list[str]) -> list[str]:
    if _parse_bool(args[1]) is None or _parse_bool(args[2]) is None:
        return ["Invalid value. Must be true or false"]
    return []


def _gc(it: Interpreter, args: list[str]) -> list[str]:
    return ["GC finished"]


def _crash(it: Interpreter, args: list[str]) -> Reply:
    return Reply(crash=True, exit_code=it.server.options.crash_exit_code)


def _debug_world_state(it: Interpreter, args: list[str]) -> list[str]:
    world = it.world
    return [
        f"World: {world.name}, SessionID: {world.session_id}",
        "State: Running, SyncTick: 48211, StateVersion: 48209",
        f"Users: {world.user_count}, Slots: 1843, Components: 12760",
        "Pending: Messages: 0, Confirmations: 0, Streams: 0",
    ]


def _version(it: Interpreter, args: list[str]) -> list[str]:
    return [it.server.version]


def _shutdown(it: Interpreter, args: list[str]) -> Reply:
    return Reply(noise.shutdown_lines(it.server), exit_code=0)


def _tick_rate(it: Interpreter, args: list[str]) -> list[str]:
    value = _parse_float(args[0])
    if value is None or value <= 0:
        return ["Invalid number"]
    it.server.tick_rate = value
    return ["Tick Rate Set!"]


def _log(it: Interpreter, args: list[str]) -> Reply:
    return Reply(log_mode=True)


def _id_of(user: User) -> str:
    return user.user_id or "(no id)"



WORLD = True
"""Marks commands that act on the focused world (and need one)."""
COMMANDS: tuple[Command, ...] = (
    Command("saveConfig", "[filename]", "Saves the current settings into the config file", _save_config),
    Command("login", "<username/email> <password>", "Logs into a Resonite account", _login),
    Command("logout", "", "Logs out of the current Resonite account", _logout),
    Command("message", "<friend> <text>", "Sends a message to a contact", _message),
    Command("invite", "<friend>", "Invites a contact to the currently focused world", _invite, WORLD),
    Command("friendRequests", "", "Lists all incoming contact requests", _friend_requests),
    Command("acceptFriendRequest", "<friend>", "Accepts a contact request", _accept_friend_request),
    Command("sendFriendRequest", "<friend>", "Sends a contact request", _send_friend_request),
    Command("removeFriend", "<friend>", "Removes a contact", _remove_friend),
    Command("worlds", "", "Lists all active worlds", _worlds),
    Command("focus", "<world name or number>", "Focuses a world", _focus),
    Command("startWorldURL", "<record URL>", "Starts a new world from a record URL", _start_world_url),
    Command("startWorldTemplate", "<template>", "Starts a new world from a template", _start_world_template),
    Command("status", "", "Shows the status of the currently focused world", _status, WORLD),
    Command("enableResoniteLink", "<port, 0 for random>",
            "Enables ResoniteLink for the currently focused world", _enable_resonite_link, WORLD),
    Command("sessionUrl", "", "Prints the URL of the current session", _session_url, WORLD),
    Command("sessionID", "", "Prints the ID of the current session", _session_id, WORLD),
    Command("copySessionURL", "", "Copies the URL of the current session to the clipboard", _silent, WORLD),
    Command("copySessionID", "", "Copies the ID of the current session to the clipboard", _silent, WORLD),
    Command("users", "", "Lists all users in the currently focused world", _users, WORLD),
    Command("close", "", "Closes the currently focused world", _close, WORLD),
    Command("save", "", "Saves the currently focused world", _silent, WORLD),
    Command("restart", "", "Restarts the currently focused world", _restart, WORLD),
    Command("kick", "<username>", "Kicks the given user from the session", _user_action(
        "kick", lambda u: f"KickRequest: {u.username} ({_id_of(u)})", "kicked", _kick_change), WORLD),
    Command("silence", "<username>", "Silences the given user in the session", _user_action(
        "silence", lambda u: f"Silence: True for User {u.username} ({_id_of(u)})", "silenced",
        _set_silenced(True)), WORLD),
    Command("unsilence", "<username>", "Removes silence from the given user", _user_action(
        "silence", lambda u: f"Silence: False for User {u.username} ({_id_of(u)})", "unsilenced",
        _set_silenced(False)), WORLD),
    Command("ban", "<username>", "Bans the given user from all sessions hosted by this server",
            _user_action("ban", lambda u: f"BanRequest: {u.username} ({_id_of(u)})", "banned",
                         _ban_change), WORLD),
    Command("unban", "<username>", "Removes the ban of the user with the given username", _unban),
    Command("listbans", "", "Lists all active bans", _listbans),
    Command("banByName", "<username>", "Bans the user with the given username from all sessions",
            _ban_by_name),
    Command("unbanByName", "<username>", "Removes the ban of the user with the given username",
            _unban_by("username")),
    Command("banByID", "<user ID>", "Bans the user with the given ID from all sessions", _ban_by_id),
    Command("unbanByID", "<user ID>", "Removes the ban of the user with the given ID",
            _unban_by("user_id")),
    Command("respawn", "<username>", "Respawns the given user", _user_action(
        "respawn", lambda u: f"RespawnRequest: {u.username} ({_id_of(u)})", "respawned",
        lambda it, u: None), WORLD),
    Command("role", "<username> <role>", "Assigns a role to the given user", _role, WORLD),
    Command("name", "<new name>", "Sets a new name for the currently focused world", _name, WORLD),
    Command("accessLevel", "<level>", "Sets the access level of the currently focused world",
            _access_level, WORLD),
    Command("hideFromListing", "<true/false>", "Sets whether the session is hidden from listing",
            _hide_from_listing, WORLD),
    Command("description", "<text>", "Sets a new description for the currently focused world",
            _description, WORLD),
    Command("maxUsers", "<n>", "Sets the user limit of the currently focused world", _max_users, WORLD),
    Command("awayKickInterval", "<minutes>", "Sets the away kick interval", _away_kick_interval, WORLD),
    Command("import", "<path or URL>", "Imports an asset into the currently focused world", _silent, WORLD),
    Command("importMinecraft", "<folder>", "Imports a Minecraft world (requires Mineways)", _silent, WORLD),
    Command("dynamicImpulse", "<tag>", "Sends a dynamic impulse with the given tag to the world root",
            _silent, WORLD),
    Command("dynamicImpulseString", "<tag> <value>", "Sends a dynamic impulse with a string value",
            _silent, WORLD),
    Command("dynamicImpulseInt", "<tag> <value>", "Sends a dynamic impulse with an integer value",
            _typed_impulse(_parse_int), WORLD),
    Command("dynamicImpulseFloat", "<tag> <value>", "Sends a dynamic impulse with a float value",
            _typed_impulse(_parse_float), WORLD),
    Command("spawn", "<url> <active> <persistent>", "Spawns an item from a record URL", _spawn, WORLD),
    Command("gc", "", "Forces a full garbage collection", _gc),
    Command("crash", "", "Crashes the headless (for testing)", _crash),
    Command("debugWorldState", "", "Prints debugging information about the focused world",
            _debug_world_state, WORLD),
    Command("version", "", "Prints the version of the headless", _version),
    Command("shutdown", "", "Saves and shuts down the headless", _shutdown),
    Command("tickRate", "<ticks per second>", "Sets the maximum simulation rate", _tick_rate),
    Command("log", "", "Switches to log output; press Enter to return to the prompt", _log),
)
COMMANDS_BY_NAME: dict[str, Command] = {c.name.casefold(): c for c in COMMANDS}
