"""Roles and the role each console command needs.

Roles are ordered, each including the one before: viewer < moderator < operator < admin.

- viewer: read-only commands, status, worlds, output.
- moderator: acting on users (kick, ban, unban, silence, respawn, role below Moderator).
- operator: acting on worlds (settings, save, close, restart, start, focus, content), and
  granting a world role at or above Moderator (a moderator may not make peers or admins).
- admin: everything else: the headless's account and friends, messages, shutdown, crash,
  files and ports on the host (``import``, ``importMinecraft``, ResoniteLink),
  container start/stop/restart, and any command this table does not know.

Every command of the console's ``help`` list appears in :data:`COMMAND_ROLES`, keyed by its
lowercase name (the console matches names case-insensitively).
"""

from __future__ import annotations

import enum
import re
from types import MappingProxyType
from typing import Final

__all__ = ["COMMAND_ROLES", "CONTAINER_ROLE", "Role", "command_name", "required_role"]


class Role(enum.IntEnum):
    VIEWER = 1
    MODERATOR = 2
    OPERATOR = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Role:
        """A role from its name, in any case of ASCII letters (``Admin``, ``admin``)."""
        try:
            if not value.isascii():  # "admın".upper() is "ADMIN": not a role's name
                raise KeyError(value)
            return cls[value.upper()]
        except KeyError:
            names = ", ".join(r.label for r in cls)
            raise ValueError(f"unknown role {value!r}; roles are {names}") from None


_V, _M, _O, _A = Role.VIEWER, Role.MODERATOR, Role.OPERATOR, Role.ADMIN

_TABLE: dict[str, Role] = {
    # read-only
    "help": _V,
    "worlds": _V,
    "status": _V,
    "sessionurl": _V,
    "sessionid": _V,
    "copysessionurl": _V,
    "copysessionid": _V,
    "users": _V,
    "listbans": _V,
    "version": _V,
    "debugworldstate": _V,
    # users
    "kick": _M,
    "silence": _M,
    "unsilence": _M,
    "ban": _M,
    "unban": _M,
    "banbyname": _M,
    "unbanbyname": _M,
    "banbyid": _M,
    "unbanbyid": _M,
    "respawn": _M,
    "role": _M,
    # worlds
    "focus": _O,
    "startworldurl": _O,
    "startworldtemplate": _O,
    "close": _O,
    "save": _O,
    "restart": _O,
    "name": _O,
    "accesslevel": _O,
    "hidefromlisting": _O,
    "description": _O,
    "maxusers": _O,
    "awaykickinterval": _O,
    "dynamicimpulse": _O,
    "dynamicimpulsestring": _O,
    "dynamicimpulseint": _O,
    "dynamicimpulsefloat": _O,
    "spawn": _O,
    "gc": _O,
    "tickrate": _O,
    "log": _O,
    # the account, the host, the process
    "saveconfig": _A,
    "login": _A,
    "logout": _A,
    "message": _A,
    "invite": _A,
    "friendrequests": _A,
    "acceptfriendrequest": _A,
    "sendfriendrequest": _A,
    "removefriend": _A,
    "enableresonitelink": _A,
    "import": _A,  # reads a path on the host
    "importminecraft": _A,  # reads a folder on the host
    "crash": _A,
    "shutdown": _A,
}

#: Lowercase console command name -> the least role allowed to run it.
COMMAND_ROLES: Final = MappingProxyType(_TABLE)

#: Starting, stopping or restarting a server's container or process.
CONTAINER_ROLE: Final = Role.ADMIN


def command_name(command: str) -> str:
    """The lowercase command name of a console line (its first word)."""
    head = command.split(maxsplit=1)  # no separator: leading whitespace is skipped
    return head[0].lower() if head else ""


#: World roles (lowercase) that only an operator may grant: Moderator and those above it
#: in Resonite's order (Admin > Builder > Moderator > Guest > Spectator).
ELEVATED_WORLD_ROLES: Final = frozenset({"admin", "builder", "moderator"})
#: An argument as the console splits them: a double-quoted run, or a word.
_ARGUMENT: Final = re.compile(r'"([^"]*)"|(\S+)')


def required_role(command: str) -> Role:
    """The least role that may run ``command``; unknown commands need admin."""
    name = command_name(command)
    role = COMMAND_ROLES.get(name, Role.ADMIN)
    if name == "role":
        arguments = [m.group(1) if m.group(1) is not None else m.group(2)
                     for m in _ARGUMENT.finditer(command.strip())][1:]
        if len(arguments) >= 2 and arguments[1].lower() in ELEVATED_WORLD_ROLES:
            return Role.OPERATOR
    return role
