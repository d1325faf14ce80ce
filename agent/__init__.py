"""The agent: drives headless consoles, parses them, publishes the fleet's events.

- :mod:`.reader`: the console reader, Sans-I/O: bytes and the time in, lines and replies out.
- :mod:`.console`: the console driver, a thin async shell around the reader (the lock, the
  writes, the timers).
- :mod:`.parsers`: console text -> contract structs, pure functions.
- :mod:`.runtime`: what runs a headless (a child process, a Docker container);
  :mod:`.runtime.dockerfmt` holds the Docker formats, pure; :mod:`.runtime.dockerevents`
  reads a container's engine events in a thread, its subscription waited for with a deadline.
- :mod:`.output`: numbered output lines, the ring buffer, batches for the bus.
- :mod:`.server`: one managed headless answering its bus requests.
- :mod:`.service`: :class:`Agent`, every server of a host on the bus, with presence.
- :mod:`.audit`: what the agent records in its audit sink.
- :mod:`.settings`: :class:`AgentSettings` and :class:`ServerConfig`, what it is configured
  with (``[agent]``, ``[[servers]]``).
- :mod:`.errors`: the agent's errors and the client code each becomes.
- :mod:`.health`: the optional ``/healthz`` and ``/readyz`` endpoint (``[agent] health``).
"""

from __future__ import annotations

from .service import Agent
from .settings import AgentSettings, ServerConfig

__all__ = ["Agent", "AgentSettings", "ServerConfig"]
