"""What the emulated headless knows: worlds, users, bans, account, options, clock.

Plain data plus the few lookups the commands need. Nothing here prints; the
console loop holds :attr:`Server.lock` while a command or a background event
changes the state, so the activity thread and a command never race.
"""

from __future__ import annotations

import random
import string
import threading
import time
import uuid
from dataclasses import dataclass, field

ACCESS_LEVELS: tuple[str, ...] = (
    "Private", "LAN", "Contacts", "ContactsPlus", "RegisteredUsers", "Anyone",
)
ROLES: tuple[str, ...] = ("Admin", "Builder", "Moderator", "Guest", "Spectator")

DEFAULT_VERSION = "2026.5.27.1300"
"""Build printed by ``version`` and the startup banner when a scenario names none."""
DEFAULT_TICK_RATE_HZ = 60.0
"""Config.json's default ``tickRate``."""
DEFAULT_MAX_USERS = 16
"""Max users of a world started from the console (startWorldURL/Template)."""
DEFAULT_HOST_FPS = 60.00012
"""The headless's own user runs at its tick rate, give or take float noise."""
DEFAULT_CRASH_EXIT_CODE = 134
"""``crash`` ends like an unhandled .NET exception on Linux: SIGABRT, 128 + 6."""
FROZEN_NOW_TICKS = 10_000 * 24 * 3600 * 10_000_000
"""The instant a frozen clock shows: far enough from zero that any uptime fits."""
MACHINE_ID_LENGTH = 20
MACHINE_ID_ALPHABET = string.ascii_lowercase + string.digits


@dataclass
class User:
    username: str
    user_id: str
    role: str = "Guest"
    present: bool = True
    ping: int = 0
    fps: float = 60.0
    silenced: bool = False
    machine_ids: list[str] = field(default_factory=list)


@dataclass
class World:
    name: str
    session_id: str
    started_at: int
    """Clock ticks (100 ns) when the world started; uptime is now minus this."""
    access_level: str = "Anyone"
    max_users: int = DEFAULT_MAX_USERS
    hidden: bool = False
    mobile_friendly: bool = False
    description: str = ""
    tags: list[str] = field(default_factory=list)
    users: list[User] = field(default_factory=list)
    """The headless's own account first, then the others in join order."""
    away_kick_minutes: float = -1.0
    resonite_link_port: int | None = None

    @property
    def user_count(self) -> int:
        return len(self.users)

    @property
    def present_count(self) -> int:
        return sum(1 for user in self.users if user.present)

    def find_user(self, name: str) -> User | None:
        """A user by exact name, then case-insensitive name, then user id."""
        for user in self.users:
            if user.username == name:
                return user
        folded = name.casefold()
        for user in self.users:
            if user.username.casefold() == folded or user.user_id == name:
                return user
        return None


@dataclass
class Ban:
    username: str
    user_id: str
    machine_ids: list[str] = field(default_factory=list)


@dataclass
class Options:
    """Quirks and switches; scenario ``[quirks]``, ``[noise]`` etc. and CLI flags fill it."""

    first_command_quirk: float = 0.0
    """Probability that the first command after startup is answered ``Unknown command``."""
    resonite_link_line: bool = True
    """``status`` ends with ``ResoniteLink:`` (2026+ builds) or not (older builds)."""
    empty_value_space: bool = True
    """An empty status value prints ``Tags: `` (True) or ``Tags:`` (False)."""
    machine_id_separator: str = ", "
    """Between several machine ids in ``listbans`` (never observed: commas or spaces)."""
    session_url: str = "ressession:///{session_id}"
    """``sessionUrl`` template; ``{session_id}`` is replaced."""
    logged_out_ids: str = "all"
    """When logged out, ``users`` prints empty ``ID:`` for ``all`` users or only the ``host``."""
    close_destroyed: float = 0.0
    """Probability of a late ``The world has been destroyed in the meanwhile`` after close."""
    restart_destroyed: float = 0.0
    """Probability that the first non-focus command after a restart fails that way."""
    wedge_on_bad_url: bool = False
    """startWorldURL with a malformed URL never returns the prompt (the console wedges)."""
    ansi_colors: bool = False
    """In --tty mode, engine log lines carry ANSI colour codes."""
    crash_exit_code: int = DEFAULT_CRASH_EXIT_CODE
    noise_rate: float = 0.0
    """Probability that a command's output gets an engine log block inside it."""
    chatter_rate: float = 0.0
    """Engine log lines per second printed on their own, also while idle at the prompt."""
    activity_interval: float = 0.0
    """Mean seconds between a user joining or leaving; 0 turns activity off."""
    activity_names: list[str] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)
    """Seconds a command takes before its output, by lowercase command name."""
    startup_delay: float = 0.0
    """Seconds spent in the startup log before the first ``World running...``."""
    startup_log: bool = True
    frozen_clock: bool = False


@dataclass
class Server:
    """The whole emulated headless."""

    options: Options = field(default_factory=Options)
    version: str = DEFAULT_VERSION
    account_name: str = "Headless"
    account_id: str = "U-Headless"
    logged_in: bool = True
    friends: list[str] = field(default_factory=list)
    friend_requests: list[str] = field(default_factory=list)
    bans: list[Ban] = field(default_factory=list)
    worlds: list[World] = field(default_factory=list)
    focused: World | None = None
    tick_rate: float = DEFAULT_TICK_RATE_HZ
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def focused_index(self) -> int | None:
        if self.focused is None:
            return None
        return self.worlds.index(self.focused)

    def prompt(self) -> str:
        """``<focused world name>>``; with no world, the name part is empty."""
        return f"{self.focused.name if self.focused else ''}>"

    def find_ban(self, *, username: str | None = None, user_id: str | None = None) -> Ban | None:
        for ban in self.bans:
            if username is not None and ban.username.casefold() == username.casefold():
                return ban
            if user_id is not None and ban.user_id == user_id:
                return ban
        return None

    def find_known_user(self, name: str) -> User | None:
        """A user by name or id in any world (stands in for the cloud's user lookup)."""
        for world in self.worlds:
            user = world.find_user(name)
            if user is not None:
                return user
        return None


class Clock:
    """Time in .NET ticks (100 ns); frozen clocks make ``status`` byte-exact in tests."""

    def __init__(self, *, frozen: bool = False) -> None:
        self.frozen = frozen

    def now(self) -> int:
        if self.frozen:
            return FROZEN_NOW_TICKS
        return time.monotonic_ns() // 100


class Randomness:
    """Independent streams drawn from one seed, so enabling activity never shifts noise.

    Each stream is seeded from the master ``random.Random(seed)`` in a fixed
    order; with the same seed and the same input, noise and generated ids repeat
    byte for byte whatever the timers do.
    """

    def __init__(self, seed: int | None) -> None:
        master = random.Random(seed)
        self.ids = random.Random(master.getrandbits(64))
        self.noise = random.Random(master.getrandbits(64))
        self.chatter = random.Random(master.getrandbits(64))
        self.activity = random.Random(master.getrandbits(64))
        self.quirks = random.Random(master.getrandbits(64))

    def session_id(self) -> str:
        return f"S-{uuid.UUID(int=self.ids.getrandbits(128), version=4)}"

    def machine_id(self) -> str:
        return "".join(self.ids.choice(MACHINE_ID_ALPHABET) for _ in range(MACHINE_ID_LENGTH))
