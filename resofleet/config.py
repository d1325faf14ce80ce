"""Configuration: one TOML file (``--config`` or ``RESOFLEET_CONFIG``), read once at start.

```toml
[gateway]
host = "127.0.0.1"          # 0.0.0.0 to listen beyond loopback (needs a secret)
port = 8000
[bus]
url = "amqp://guest:guest@rabbitmq:5672/"   # absent: the in-process bus (only with `up`)
[agent]
name = "host-a"             # how this agent names itself in presence (default: hostname)
status_interval = 5.0       # seconds between status polls
worlds_interval = 15.0      # seconds between worlds+users polls
bans_interval = 60.0        # seconds between listbans polls
[[servers]]
id = "main"                 # [a-z0-9][a-z0-9-]{0,62}
runtime = "docker"          # docker | process | emulator
container = "resonite-headless"
```

A bad file gets one clear line naming the key and the file (:class:`ConfigError`), and the
command exits non-zero.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from contracts import is_server_id

__all__ = [
    "AgentSettings",
    "Config",
    "ConfigError",
    "GatewaySettings",
    "ServerConfig",
    "load_config",
]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000
#: Seconds between status polls: CPU and memory move quickly, a sample is cheap.
DEFAULT_STATUS_INTERVAL: Final = 5.0
#: Seconds between worlds+users polls: each costs a few console commands.
DEFAULT_WORLDS_INTERVAL: Final = 15.0
#: Seconds between listbans polls: bans change rarely.
DEFAULT_BANS_INTERVAL: Final = 60.0

Runtime = Literal["docker", "process", "emulator"]


class ConfigError(ValueError):
    """A configuration problem, phrased as one line naming the file and the key."""


@dataclass(frozen=True)
class ServerConfig:
    id: str
    runtime: Runtime
    container: str = ""
    command: tuple[str, ...] = ()
    workdir: str | None = None
    scenario: str | None = None
    emulator_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewaySettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentSettings:
    name: str = field(default_factory=socket.gethostname)
    status_interval: float = DEFAULT_STATUS_INTERVAL
    worlds_interval: float = DEFAULT_WORLDS_INTERVAL
    bans_interval: float = DEFAULT_BANS_INTERVAL


@dataclass(frozen=True)
class Config:
    source: str = "<defaults>"
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    bus_url: str | None = None
    servers: tuple[ServerConfig, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read ``path`` (or ``$RESOFLEET_CONFIG``); no file means the defaults.

    ``RESOFLEET_AMQP_URL`` fills ``[bus] url`` when the file does not set it.
    """
    path = path or os.environ.get("RESOFLEET_CONFIG") or None
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read it ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    return parse_config(data, source=source)


def parse_config(data: dict[str, Any], *, source: str = "<config>") -> Config:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {key} {problem}")

    def table(key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise fail(f"[{key}]", "must be a table")
        return value

    def number(t: dict[str, Any], prefix: str, key: str, default: float, *, positive: bool = True) -> float:
        value = t.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"{prefix}.{key}", f"must be a number, not {value!r}")
        if positive and value <= 0:
            raise fail(f"{prefix}.{key}", f"must be greater than 0, not {value!r}")
        return float(value)

    gw = table("gateway")
    host = gw.get("host", DEFAULT_HOST)
    if not isinstance(host, str) or not host:
        raise fail("gateway.host", "must be a host name or address")
    port = gw.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise fail("gateway.port", f"must be a port number 0-65535, not {port!r}")

    bus = table("bus")
    url = bus.get("url") or os.environ.get("RESOFLEET_AMQP_URL") or None
    if url is not None and (not isinstance(url, str) or not url.startswith(("amqp://", "amqps://"))):
        raise fail("bus.url", "must be an amqp:// or amqps:// URL")

    ag = table("agent")
    name = ag.get("name", socket.gethostname())
    if not isinstance(name, str) or not name:
        raise fail("agent.name", "must be a non-empty string")
    agent = AgentSettings(
        name=name,
        status_interval=number(ag, "agent", "status_interval", DEFAULT_STATUS_INTERVAL),
        worlds_interval=number(ag, "agent", "worlds_interval", DEFAULT_WORLDS_INTERVAL),
        bans_interval=number(ag, "agent", "bans_interval", DEFAULT_BANS_INTERVAL),
    )

    raw_servers = data.get("servers", [])
    if not isinstance(raw_servers, list):
        raise fail("[[servers]]", "must be an array of tables")
    servers: list[ServerConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_servers):
        where = f"servers[{i}]"
        if not isinstance(entry, dict):
            raise fail(where, "must be a table")
        sid = entry.get("id")
        if not is_server_id(sid):
            raise fail(f"{where}.id", f"must match [a-z0-9][a-z0-9-]{{0,62}}, not {sid!r}")
        if sid in seen:
            raise fail(f"{where}.id", f"{sid!r} appears twice")
        seen.add(sid)
        runtime = entry.get("runtime", "docker")
        if runtime not in ("docker", "process", "emulator"):
            raise fail(f"{where}.runtime", f"must be docker, process or emulator, not {runtime!r}")
        container = entry.get("container", "")
        command = entry.get("command", [])
        if runtime == "docker" and (not isinstance(container, str) or not container):
            raise fail(f"{where}.container", "is required for the docker runtime")
        if runtime == "process" and (
            not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command)
        ):
            raise fail(f"{where}.command", "must be a non-empty list of strings for the process runtime")
        workdir = entry.get("workdir")
        if workdir is not None and not isinstance(workdir, str):
            raise fail(f"{where}.workdir", "must be a path")
        scenario = entry.get("scenario")
        if scenario is not None and not isinstance(scenario, str):
            raise fail(f"{where}.scenario", "must be a path or a scenario name")
        emulator_args = entry.get("emulator_args", [])
        if not isinstance(emulator_args, list) or not all(isinstance(a, str) for a in emulator_args):
            raise fail(f"{where}.emulator_args", "must be a list of strings")
        env = entry.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise fail(f"{where}.env", "must be a table of strings")
        servers.append(
            ServerConfig(
                id=sid,
                runtime=runtime,
                container=container if isinstance(container, str) else "",
                command=tuple(command) if isinstance(command, list) else (),
                workdir=workdir,
                scenario=scenario,
                emulator_args=tuple(emulator_args),
                env=dict(env),
            )
        )
    return Config(
        source=source,
        gateway=GatewaySettings(host=host, port=port, raw=gw),
        agent=agent,
        bus_url=url,
        servers=tuple(servers),
        raw=data,
    )
