"""Errors of the agent.

The error tree::

    ReplyError (bus)           a failure with a client ``error.code`` and a client-safe sentence
    └── AgentError             base of the agent's own failures                         internal
        ├── ConsoleClosed      the console went away (process exited, container died)  server_offline
        ├── ConsoleTimeout     a command got no complete answer by its deadline        timeout
        │   ├── ConsoleSilent  the console took the command and fell silent            timeout
        │   └── ConsoleBusy    other commands held the console past the wait           timeout
        ├── ConsoleNotReady    the console did not become ready in time                 timeout
        └── RuntimeActionFailed  start/stop/restart or stats failed (Docker, process)   internal

An agent error carries two texts. The one given positionally is the operator's ``detail``
(it may quote an OS or Docker error, a path, a container name): it is what ``str()``
shows and what the log records, and no client ever reads it. The client reads
``message``: the sentence the raiser gave with ``message=``, else the class's own
:attr:`AgentError.sentence`.

They become ``error`` replies in one place, :func:`resofleet.bus.reply_for`, which the agent's
request handler calls for every failure (:meth:`resofleet.agent.server.ManagedServer.handle`).
"""

from __future__ import annotations

from typing import ClassVar

from resofleet.bus import ReplyError
from resofleet.contracts import ErrorCode

__all__ = [
    "AgentError",
    "ConsoleClosed",
    "ConsoleNotReady",
    "ConsoleBusy",
    "ConsoleSilent",
    "ConsoleTimeout",
    "RuntimeActionFailed",
]


class AgentError(ReplyError):
    """A failure of the agent: ``detail`` (positional) for the log, ``message`` for the
    client (see the module docstring)."""

    code = ErrorCode.INTERNAL
    #: What a client reads when the raiser gave no ``message``.
    sentence: ClassVar[str] = "The agent could not carry out the request."

    def __init__(self, detail: str | None = None, *, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.sentence, detail=detail)


class ConsoleClosed(AgentError):
    code = ErrorCode.SERVER_OFFLINE
    sentence = (
        "The server's console is closed: the headless is not running "
        "(a container start action starts it)."
    )


class ConsoleTimeout(AgentError):
    code = ErrorCode.TIMEOUT
    sentence = "The server's console did not answer in time; try again in a moment."


class ConsoleSilent(ConsoleTimeout):
    """The command was written and no complete answer came by the deadline: whoever sent
    it, a miss for the console health check (:mod:`resofleet.agent.consolehealth`)."""


class ConsoleBusy(ConsoleTimeout):
    """The command was never sent: other commands held the console for the whole wait
    (the console health check does not count this as a console that hangs)."""

    sentence = "The server's console is busy with other commands; try again in a moment."


class ConsoleNotReady(AgentError):
    code = ErrorCode.TIMEOUT
    sentence = "The server's console is not ready yet; try again in a moment."


class RuntimeActionFailed(AgentError):
    code = ErrorCode.INTERNAL
    sentence = "The server's runtime could not carry out the action; the agent's log says why."
