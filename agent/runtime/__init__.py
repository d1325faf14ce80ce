"""Runtimes: what runs a headless and gives the agent its console and its numbers."""

from __future__ import annotations

from .base import Runtime, RuntimeListener, format_bytes
from .process import ProcessRuntime, emulator_command

# DockerRuntime is imported from .docker where needed: it pulls in the docker SDK. The
# pure reading of what the engine sends (no SDK) is in .dockerfmt, the events thread in
# .dockerevents.

__all__ = ["ProcessRuntime", "Runtime", "RuntimeListener", "emulator_command", "format_bytes"]
