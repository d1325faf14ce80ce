"""Configuration: one TOML file (``--config`` or ``RESOFLEET_CONFIG``), read once at start.

```toml
[gateway]
host = "127.0.0.1"          # 0.0.0.0 to listen beyond loopback (needs a secret)
port = 8000
secret = "..."              # signs and checks tokens (or $RESOFLEET_SECRET); absent: open
old_secrets = ["..."]       # still accepted, no longer used to sign (rotation)
origins = ["https://dash.example.com"]   # browser origins allowed besides the same origin
trusted_proxies = ["10.0.0.0/8"]         # whose X-Forwarded-For names the client
revoked = ["<jti>"]         # token ids refused for good (`token revoke` is immediate)
audit_log = "/var/log/resofleet/gateway.jsonl"   # false: no audit log
compression = false         # offer permessage-deflate (costs CPU and memory per client)
[gateway.limits]
command_rate = 20.0         # requests per second per connection (not for admin tokens)
command_burst = 50
connections_per_address = 256
[bus]
url = "amqp://guest:guest@rabbitmq:5672/"   # absent: the in-process bus (only with `up`)
prefix = ""                 # names on the broker start with it: deployments sharing one broker
[agent]
name = "host-a"             # how this agent names itself in presence (default: hostname)
status_interval = 5.0       # seconds between status polls
worlds_interval = 15.0      # seconds between worlds+users polls
bans_interval = 60.0        # seconds between listbans polls
audit_log = "/var/log/resofleet/agent.jsonl"     # false: no audit log
[[servers]]
id = "main"                 # [a-z0-9][a-z0-9-]{0,62}
runtime = "docker"          # docker | process | emulator
container = "resonite-headless"
```

Secrets: ``RESOFLEET_SECRET`` (whitespace-separated; the first signs, the others are only
accepted) replaces ``secret`` and ``old_secrets`` when set. A secret must be at least
:data:`MIN_SECRET_LENGTH` characters: ``resofleet token secret`` prints a fresh one.

Audit logs default to ``$RESOFLEET_AUDIT_DIR/{gateway,agent}.jsonl``, and without that
variable to ``$XDG_STATE_HOME/resofleet/audit/`` (``~/.local/state/resofleet/audit/``).

A bad file gets one clear line naming the key and the file (:class:`ConfigError`), and the
command exits non-zero.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from resofleet.contracts import is_server_id

__all__ = [
    "AgentSettings",
    "Config",
    "ConfigError",
    "GatewaySettings",
    "Limits",
    "MIN_SECRET_LENGTH",
    "ServerConfig",
    "default_audit_dir",
    "default_audit_path",
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

#: Requests per second one connection with a viewer, moderator or operator token may send,
#: and the burst above it (DESIGN.md, Limits): a person or a dashboard stays far below;
#: a runaway script is slowed down with ``rate_limited`` replies instead of flooding consoles.
DEFAULT_COMMAND_RATE: Final = 20.0
DEFAULT_COMMAND_BURST: Final = 50
#: WebSocket connections one client address may hold on one gateway: a dashboard opens a
#: few; a NAT of many users stays under it; one host cannot exhaust the gateway's sockets.
DEFAULT_CONNECTIONS_PER_ADDRESS: Final = 256
#: Shortest secret accepted, in characters: HS256 wants a key of at least 256 bits, which
#: ``secrets.token_urlsafe(32)`` (43 characters) gives.
MIN_SECRET_LENGTH: Final = 32

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
class Limits:
    """``[gateway.limits]`` (see the constants for the reasons behind the defaults)."""

    command_rate: float = DEFAULT_COMMAND_RATE
    command_burst: int = DEFAULT_COMMAND_BURST
    connections_per_address: int = DEFAULT_CONNECTIONS_PER_ADDRESS


@dataclass(frozen=True)
class GatewaySettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: Token secrets, the signing one first; empty: the gateway runs open (loopback only).
    secrets: tuple[str, ...] = field(default=(), repr=False)
    origins: tuple[str, ...] = ()
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    revoked: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    #: Path of the gateway's audit log; ``None``: none is written.
    audit_log: str | None = None
    #: Offer permessage-deflate to clients (see gateway/server.py for the trade-off).
    compression: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class AgentSettings:
    name: str = field(default_factory=socket.gethostname)
    status_interval: float = DEFAULT_STATUS_INTERVAL
    worlds_interval: float = DEFAULT_WORLDS_INTERVAL
    bans_interval: float = DEFAULT_BANS_INTERVAL
    #: Path of the agent's audit log; ``None``: none is written (the library default, so
    #: tests and embedders choose; the command line fills in :func:`default_audit_path`).
    audit_log: str | None = None


def default_audit_dir() -> Path:
    """``$RESOFLEET_AUDIT_DIR``, else ``$XDG_STATE_HOME/resofleet/audit``."""
    explicit = os.environ.get("RESOFLEET_AUDIT_DIR")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "resofleet" / "audit"


def default_audit_path(kind: Literal["gateway", "agent"]) -> str:
    return str(default_audit_dir() / f"{kind}.jsonl")


@dataclass(frozen=True)
class Config:
    source: str = "<defaults>"
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    bus_url: str | None = None
    #: Prefix of every exchange and queue name on the broker (``[bus] prefix`` or
    #: ``$RESOFLEET_BUS_PREFIX``): several deployments, or test runs, share one broker.
    bus_prefix: str = ""
    servers: tuple[ServerConfig, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


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

    def strings(t: dict[str, Any], prefix: str, key: str) -> tuple[str, ...]:
        value = t.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise fail(f"{prefix}.{key}", "must be a list of non-empty strings")
        return tuple(value)

    def audit(t: dict[str, Any], prefix: str, kind: Literal["gateway", "agent"]) -> str | None:
        value = t.get("audit_log", True)
        if value is False:
            return None
        if value is True:
            return default_audit_path(kind)
        if not isinstance(value, str) or not value:
            raise fail(f"{prefix}.audit_log", "must be a path, or false for no audit log")
        return value

    env_secrets = os.environ.get("RESOFLEET_SECRET", "").split()
    if env_secrets:
        secrets, secret_key = tuple(env_secrets), "RESOFLEET_SECRET"
    else:
        secret = gw.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise fail("gateway.secret", "must be a string")
        old = strings(gw, "gateway", "old_secrets")
        if old and secret is None:
            raise fail("gateway.old_secrets", "needs gateway.secret (the one that signs)")
        secrets, secret_key = ((secret, *old) if secret else ()), "gateway.secret"
    for s in secrets:
        if len(s) < MIN_SECRET_LENGTH:
            where = "RESOFLEET_SECRET" if secret_key == "RESOFLEET_SECRET" else f"{source}: gateway.secret"
            raise ConfigError(
                f"{where}: every secret must be at least {MIN_SECRET_LENGTH} characters "
                "(make one with `resofleet token secret`)"
            )
    origins = strings(gw, "gateway", "origins")
    for o in origins:
        if not o.startswith(("http://", "https://")) or o.count("/") != 2:
            raise fail("gateway.origins", f"entries look like https://host[:port], not {o!r}")
    proxies = []
    for p in strings(gw, "gateway", "trusted_proxies"):
        try:
            proxies.append(ipaddress.ip_network(p, strict=False))
        except ValueError:
            raise fail("gateway.trusted_proxies", f"{p!r} is not an address or network") from None
    lim = gw.get("limits", {})
    if not isinstance(lim, dict):
        raise fail("[gateway.limits]", "must be a table")

    def count(key: str, default: int) -> int:
        value = lim.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail(f"gateway.limits.{key}", f"must be a whole number of at least 1, not {value!r}")
        return value

    limits = Limits(
        command_rate=number(lim, "gateway.limits", "command_rate", DEFAULT_COMMAND_RATE),
        command_burst=count("command_burst", DEFAULT_COMMAND_BURST),
        connections_per_address=count("connections_per_address", DEFAULT_CONNECTIONS_PER_ADDRESS),
    )
    compression = gw.get("compression", False)
    if not isinstance(compression, bool):
        raise fail("gateway.compression", f"must be true or false, not {compression!r}")
    gateway_settings = GatewaySettings(
        host=host,
        port=port,
        secrets=secrets,
        origins=tuple(o.lower() for o in origins),
        trusted_proxies=tuple(proxies),
        revoked=strings(gw, "gateway", "revoked"),
        limits=limits,
        audit_log=audit(gw, "gateway", "gateway"),
        compression=compression,
        raw=gw,
    )

    bus = table("bus")
    url = bus.get("url") or os.environ.get("RESOFLEET_AMQP_URL") or None
    if url is not None and (not isinstance(url, str) or not url.startswith(("amqp://", "amqps://"))):
        raise fail("bus.url", "must be an amqp:// or amqps:// URL")

    prefix = bus.get("prefix", os.environ.get("RESOFLEET_BUS_PREFIX", ""))
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9._-]{0,64}", prefix):
        raise fail("bus.prefix", "must be at most 64 letters, digits, dots, dashes or underscores")

    ag = table("agent")
    name = ag.get("name", socket.gethostname())
    if not isinstance(name, str) or not name:
        raise fail("agent.name", "must be a non-empty string")
    agent = AgentSettings(
        name=name,
        status_interval=number(ag, "agent", "status_interval", DEFAULT_STATUS_INTERVAL),
        worlds_interval=number(ag, "agent", "worlds_interval", DEFAULT_WORLDS_INTERVAL),
        bans_interval=number(ag, "agent", "bans_interval", DEFAULT_BANS_INTERVAL),
        audit_log=audit(ag, "agent", "agent"),
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
        gateway=gateway_settings,
        agent=agent,
        bus_url=url,
        bus_prefix=prefix,
        servers=tuple(servers),
        raw=data,
    )
