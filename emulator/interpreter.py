"""The console's command interpreter: one input line in, one :class:`Reply` out.

:class:`Interpreter` is Sans-I/O: :meth:`Interpreter.execute` takes one input line and
returns a :class:`~.syntax.Reply` (the lines to print and what the console loop must do
next). The console loop holds :attr:`Server.lock` around it. The commands themselves are
in :mod:`.commands`.
"""

from __future__ import annotations

from . import formats, noise
from .commands import COMMANDS, COMMANDS_BY_NAME
from .state import DEFAULT_HOST_FPS, DEFAULT_MAX_USERS, Clock, Randomness, Server, User, World
from .syntax import NO_FOCUSED_WORLD, UNKNOWN_COMMAND, WORLD_DESTROYED, Reply, split_args

__all__ = ["Interpreter"]


class Interpreter:
    """Runs console commands against a :class:`Server`."""

    def __init__(self, server: Server, clock: Clock, rng: Randomness) -> None:
        self.server = server
        self.clock = clock
        self.rng = rng
        self.first_command_pending = server.options.first_command_quirk > 0 and (
            rng.quirks.random() < server.options.first_command_quirk
        )
        self.destroyed_pending = False

    @property
    def world(self) -> World:
        assert self.server.focused is not None
        return self.server.focused

    def execute(self, line: str) -> Reply:
        """Run one input line (without its line end)."""
        args = split_args(line)
        if not args:
            return Reply()
        if self.first_command_pending:
            self.first_command_pending = False
            return Reply([UNKNOWN_COMMAND])
        name = args[0].casefold()
        if name == "help":
            return Reply(formats.help_lines((c.name, c.description, c.args) for c in COMMANDS))
        command = COMMANDS_BY_NAME.get(name)
        if command is None:
            return Reply([UNKNOWN_COMMAND])
        if self.destroyed_pending:
            self.destroyed_pending = False
            if name != "focus":
                return Reply([WORLD_DESTROYED])
        if len(args) - 1 < command.min_args:
            return Reply([command.usage])
        if command.needs_world and self.server.focused is None:
            return Reply([NO_FOCUSED_WORLD])
        result = command.handler(self, args[1:])
        reply = result if isinstance(result, Reply) else Reply(result)
        reply.delay = self.server.options.latency.get(name, 0.0)
        return reply

    # Helpers shared by handlers.

    def host_user(self) -> User:
        return User(self.server.account_name, self.server.account_id, role="Admin",
                    present=False, ping=0, fps=DEFAULT_HOST_FPS)

    def start_world(self, name: str) -> list[str]:
        world = World(name=name, session_id=self.rng.session_id(), started_at=self.clock.now(),
                      access_level="Anyone", max_users=DEFAULT_MAX_USERS,
                      users=[self.host_user()])
        self.server.worlds.append(world)
        self.server.focused = world
        return noise.world_start_lines(self.server, world)

    def remove_everywhere(self, username: str, user_id: str) -> None:
        """A banned user leaves every world (the headless's own account never does)."""
        for world in self.server.worlds:
            world.users[1:] = [u for u in world.users[1:]
                               if u.username != username and (not user_id or u.user_id != user_id)]

