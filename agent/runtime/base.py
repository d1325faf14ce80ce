"""What the agent needs from whatever runs a headless: a console and its resource usage.

A runtime starts (or attaches to) one headless, hands its console output to
``listener.output(bytes)``, writes commands to it, reports lifecycle changes through
``listener.started()`` / ``listener.exited(reason)`` / ``listener.state(state)``, and
samples CPU and memory. States follow Docker's words: created, running, restarting,
exited; plus ``crashloop`` when a runtime stopped restarting a headless that keeps dying
(:mod:`resofleet.agent.runtime.policy` decides, the same way for every runtime).
"""

from __future__ import annotations

import abc
import time
from typing import TYPE_CHECKING, Protocol

from resofleet.contracts import Status

if TYPE_CHECKING:
    from .policy import RestartTracker

__all__ = ["Runtime", "RuntimeListener", "format_bytes"]


class RuntimeListener(Protocol):
    def output(self, data: bytes) -> None: ...

    def started(self) -> None: ...

    def exited(self, reason: str) -> None: ...

    def state(self, state: str) -> None: ...


class Runtime(abc.ABC):
    kind: str = ""
    #: Deaths and the crash-loop guard (:mod:`resofleet.agent.runtime.policy`).
    tracker: RestartTracker

    def __init__(self, server: str, listener: RuntimeListener) -> None:
        self.server = server
        self.listener = listener
        self.status = "created"
        self.restarts = 0
        #: The last exit code of the headless, as a shell reports it (``None``: none yet).
        self.exit_code: int | None = None

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the headless (or attach to it if it runs already)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the headless and keep it stopped."""

    @abc.abstractmethod
    async def restart(self, *, fresh: bool = True) -> None:
        """Stop and start the headless. ``fresh``: someone asked, so past deaths are
        forgotten (a crash loop ends); ``False`` for :meth:`recover`, which counts them."""

    async def recover(self) -> str:
        """Restart a headless whose console stopped answering (``health_restart``), or,
        when that makes a crash loop (:meth:`RestartTracker.hung`), stop it and leave it in
        ``crashloop`` until someone starts it. Returns the verdict's phrase."""
        verdict = self.tracker.hung(time.monotonic())
        if verdict.restart:
            await self.restart(fresh=False)
        else:
            await self.stop()
            self._set_status(verdict.state)
        return verdict.why

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Send bytes to the console's stdin."""

    @abc.abstractmethod
    async def stats(self) -> Status:
        """A fresh sample of the headless's own CPU and memory use."""

    @abc.abstractmethod
    async def close(self) -> None:
        """The agent is leaving: release the console (a child process is stopped)."""

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.listener.state(status)


def format_bytes(n: float) -> str:
    """``4_200_000_000`` -> ``"3.9GB"``: binary units, one decimal, as ``docker stats``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n:.1f}TB"  # pragma: no cover
