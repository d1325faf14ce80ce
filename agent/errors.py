"""Errors of the agent.

The error tree::

    AgentError                 base; ``code`` is the client error code it maps to
    ├── ConsoleClosed          the console went away (process exited, container died)  server_offline
    ├── ConsoleTimeout         a command got no complete answer by its deadline        timeout
    ├── ConsoleNotReady        the console did not become ready in time                 timeout
    └── RuntimeActionFailed    start/stop/restart or stats failed (Docker, process)     internal

The agent turns each into an ``error`` reply in one place (:mod:`agent.handlers`).
"""

from __future__ import annotations

from resofleet.contracts import ErrorCode

__all__ = [
    "AgentError",
    "ConsoleClosed",
    "ConsoleNotReady",
    "ConsoleTimeout",
    "RuntimeActionFailed",
]


class AgentError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL


class ConsoleClosed(AgentError):
    code = ErrorCode.SERVER_OFFLINE


class ConsoleTimeout(AgentError):
    code = ErrorCode.TIMEOUT


class ConsoleNotReady(AgentError):
    code = ErrorCode.TIMEOUT


class RuntimeActionFailed(AgentError):
    code = ErrorCode.INTERNAL
