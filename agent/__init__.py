"""The agent: drives headless consoles, parses them, publishes the fleet's events.

- :mod:`agent.console`: the console driver (a reply ends at the prompt, never at silence).
- :mod:`agent.parsers`: console text -> contract structs, pure functions.
- :mod:`agent.runtime`: what runs a headless (a child process, a Docker container).
- :mod:`agent.output`: numbered output lines, the ring buffer, batches for the bus.
- :mod:`agent.server`: one managed headless answering its bus requests.
- :mod:`agent.service`: :class:`Agent`, every server of a host on the bus, with presence.
- :mod:`agent.audit`: what the agent records in its audit log.
- :mod:`agent.settings`: :class:`AgentSettings` and :class:`ServerConfig`, what it is told.
"""

from __future__ import annotations

from .service import Agent
from .settings import AgentSettings, ServerConfig

__all__ = ["Agent", "AgentSettings", "ServerConfig"]
