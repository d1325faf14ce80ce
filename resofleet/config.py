"""Configuration: one TOML file (``--config`` or ``RESOFLEET_CONFIG``), read once at start.

```toml
[gateway]
host = "127.0.0.1"          # 0.0.0.0 to listen beyond loopback (needs a secret)
port = 8000
secret = "..."              # signs and checks tokens (or $RESOFLEET_SECRET); absent: open
old_secrets = ["..."]       # still accepted, no longer used to sign (rotation)
origins = ["https://dash.example.com"]   # browser origins allowed besides the same origin
trusted_proxies = ["10.0.0.0/8"]         # whose X-Forwarded-For names the client
hosts = ["dash.example.com"]             # Host names answered besides loopback (open: loopback only)
revoked = ["<jti>"]         # token ids refused for good (`token revoke` is immediate)
audit_log = "/var/log/resofleet/gateway.jsonl"   # false: no audit log
compression = false         # offer permessage-deflate (costs CPU and memory per client)
bulk_concurrency = 16       # servers of one bulk request (`servers` patterns) in flight at once
[gateway.limits]
command_rate = 20.0         # requests per second per connection (not for admin tokens)
command_burst = 50
connections_per_address = 256
[bus]
url = "amqp://guest:guest@rabbitmq:5672/"   # absent: the in-process bus (only with `up`)
# url = ["amqp://u:p@rabbit-0:5672/", "amqp://u:p@rabbit-1:5672/"]   # a cluster's nodes, tried in turn
prefix = ""                 # names on the broker start with it: deployments sharing one broker
[agent]
name = "host-a"             # how this agent names itself in presence (default: hostname)
status_interval = 5.0       # seconds between status polls
worlds_interval = 15.0      # seconds between worlds+users polls
bans_interval = 60.0        # seconds between listbans polls
audit_log = "/var/log/resofleet/agent.jsonl"     # false: no audit log
health = "127.0.0.1:8001"   # serve /healthz and /readyz there (absent: off)
metrics = "127.0.0.1:8001"  # serve /metrics there (absent: off; `up` serves it on the gateway's port)
state_dir = "/var/lib/resofleet"   # what outlives the agent (schedules' last slots); false: nothing
[log]
format = "text"             # or "json": one object per line (--log-format overrides it)
[notifier]                  # `resofleet notifier` (and `up` when webhooks are configured)
users_threshold = 20        # users_above / users_below around this count (absent: none)
health = "127.0.0.1:8002"   # /healthz, /readyz, /metrics (absent: off)
[[webhooks]]
name = "ops"                # [a-z0-9][a-z0-9-]{0,62}: names its queue, metrics, log lines
url = "https://hooks.example.com/resofleet"   # or url_env / url_file (a Discord URL is a credential)
format = "json"             # json (signed: secret, secret_env or secret_file) | discord
events = ["server_down", "server_up", "crash_loop"]   # default: all
servers = ["eu-*"]          # glob patterns (default: all)
secret_env = "OPS_HOOK_SECRET"
[[servers]]
id = "main"                 # [a-z0-9][a-z0-9-]{0,62}
runtime = "docker"          # docker | process | emulator
container = "resonite-headless"
[[schedules]]               # see resofleet.agent.schedules
name = "nightly-restart"    # optional: default <action>-<digest of the entry>
servers = ["eu-*"]          # glob patterns over this agent's [[servers]] ids
cron = "0 4 * * *"          # or every = "6h"
timezone = "Europe/Berlin"  # for cron; default UTC
action = "restart"          # restart | save | command (with command = "...")
when = "empty"              # or "always" (the default)
max_wait = "2h"             # when empty: wait at most this long, then
on_timeout = "run"          # run anyway, or "skip"
```

The tables decode straight into the settings the parts own, with msgspec's typed decoding:
``[gateway]`` into :class:`~resofleet.gateway.settings.GatewaySettings`, ``[agent]`` into
:class:`~resofleet.agent.settings.AgentSettings`, ``[log]`` into :class:`LogSettings`, each ``[[servers]]`` entry into a
:class:`~resofleet.agent.settings.ServerConfig`, each ``[[schedules]]`` entry into a
:class:`~resofleet.agent.schedules.ScheduleConfig` (then checked and compiled as the agent
will: :func:`~resofleet.agent.schedules.compile_schedule`). Their fields carry the types and bounds;
this module adds only what the file says differently (``audit_log = true/false``, the
environment) and the few rules that span fields (see :func:`parse_config`).

**Unknown keys are errors**, naming the key and the keys that are known: a misspelt key
silently ignored (``secrte = ...``, and the gateway runs open) is a classic operations trap.

Environment: ``RESOFLEET_SECRET`` (whitespace-separated; the first signs, the others are
only accepted) replaces ``secret`` and ``old_secrets`` when set; a secret must be at least
:data:`~resofleet.gateway.settings.MIN_SECRET_LENGTH` characters (``resofleet token secret``
prints a fresh one). ``RESOFLEET_AMQP_URL`` fills ``[bus] url`` and ``RESOFLEET_BUS_PREFIX``
fills ``[bus] prefix`` when the file does not set them. ``[bus] url`` is one URL or a list
of them (the nodes of a RabbitMQ cluster), and the variable may name several separated by
commas or spaces: the bus connects to the first that answers and moves to the next when its
link drops (:mod:`resofleet.bus.amqp_failover`).

Audit logs default to ``$RESOFLEET_AUDIT_DIR/{gateway,agent}.jsonl``, and without that
variable to ``$XDG_STATE_HOME/resofleet/audit/`` (``~/.local/state/resofleet/audit/``).
``[agent] state_dir`` defaults to ``$RESOFLEET_STATE_DIR``, and without that variable to
``$XDG_STATE_HOME/resofleet/agent/``; ``state_dir = false`` keeps nothing.

Errors::

    ValueError
     └── ConfigError      one line: "<file>: <key.path> <problem>", or
                          "<VARIABLE>: <problem>" for a bad environment variable

for example ``fleet.toml: gateway.limits.command_burst must be a whole number of at least
1, not 0``. A value marked sensitive (a secret, the broker URL) is never repeated.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import msgspec.inspect as mi

from resofleet.agent.health import split_address
from resofleet.agent.schedules import ScheduleConfig, ScheduleError, compile_schedule
from resofleet.agent.settings import AgentSettings, ServerConfig
from resofleet.bus.amqp_failover import broker_urls
from resofleet.gateway.settings import GatewaySettings, Secret
from resofleet.notifier.settings import (
    NotifierSettings, WebhookError, WebhookSettings, read_webhooks,
)

__all__ = [
    "Config",
    "ConfigError",
    "LogSettings",
    "default_audit_dir",
    "default_audit_path",
    "default_state_dir",
    "load_config",
    "parse_config",
]

#: What ``source`` says when no file was read.
NO_FILE: Final = "<defaults>"

_AmqpUrl = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^amqps?://",
        description="an amqp:// or amqps:// URL",
        extra={"sensitive": True},  # it may carry the broker's password
    ),
]
_AmqpUrls = Annotated[
    list[_AmqpUrl],
    msgspec.Meta(min_length=1, description="a list of amqp:// or amqps:// URLs"),
]
_Prefix = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9._-]{0,64}$",
        description="at most 64 letters, digits, dots, dashes or underscores",
    ),
]


class ConfigError(ValueError):
    """A configuration problem, phrased as one line naming the file and the key."""


_Requester = Annotated[str, msgspec.Meta(min_length=1, max_length=255, description="a broker user name")]


class _Bus(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[bus]``: which broker (one URL, or a cluster's nodes), and the prefix of every name on it."""

    url: _AmqpUrl | _AmqpUrls | None = None
    prefix: _Prefix | None = None
    #: Broker users whose requests an agent runs (the gateways' users); absent: anyone's.
    requesters: tuple[_Requester, ...] | None = None


class LogSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[log]``: how log lines are written (the level is ``$RESOFLEET_LOG_LEVEL``)."""

    #: ``text`` for people, ``json`` for a log collector; ``--log-format`` overrides it.
    format: Literal["text", "json"] = "text"


class _File(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole file, as msgspec decodes it."""

    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    agent: AgentSettings = msgspec.field(default_factory=AgentSettings)
    bus: _Bus = msgspec.field(default_factory=_Bus)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    servers: tuple[ServerConfig, ...] = ()
    schedules: tuple[ScheduleConfig, ...] = ()
    notifier: NotifierSettings = msgspec.field(default_factory=NotifierSettings)
    webhooks: tuple[WebhookSettings, ...] = ()


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one command reads from the file and the environment."""

    #: The file read (for messages), or :data:`NO_FILE`.
    source: str = NO_FILE
    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    agent: AgentSettings = msgspec.field(default_factory=AgentSettings)
    #: The broker (``[bus] url`` or ``$RESOFLEET_AMQP_URL``); several are separated by
    #: ", " (as :class:`~resofleet.bus.AmqpBus` takes them); ``None``: no broker.
    bus_url: str | None = None
    #: Prefix of every exchange and queue name on the broker (``[bus] prefix`` or
    #: ``$RESOFLEET_BUS_PREFIX``): several deployments, or test runs, share one broker.
    bus_prefix: str = ""
    #: ``[bus] requesters``: the broker users whose requests an agent runs; ``None``: anyone's.
    bus_requesters: tuple[str, ...] | None = None
    #: ``[log]``: the format of log lines.
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    servers: tuple[ServerConfig, ...] = ()
    #: ``[[schedules]]``, checked (the agent compiles them again for its servers).
    schedules: tuple[ScheduleConfig, ...] = ()
    #: ``[notifier]`` and ``[[webhooks]]``, with each webhook's URL and secret read once
    #: (``url`` filled in; ``webhook_secrets``: name -> secret, ``None`` for an unsigned
    #: Discord webhook).
    notifier: NotifierSettings = msgspec.field(default_factory=NotifierSettings)
    webhooks: tuple[WebhookSettings, ...] = ()
    webhook_secrets: dict[str, str | None] = msgspec.field(default_factory=dict)

    @property
    def bus_urls(self) -> tuple[str, ...]:
        """The brokers in :attr:`bus_url`, in the order they are tried."""
        return broker_urls(self.bus_url) if self.bus_url else ()


def default_audit_dir() -> Path:
    """``$RESOFLEET_AUDIT_DIR``, else ``$XDG_STATE_HOME/resofleet/audit``."""
    explicit = os.environ.get("RESOFLEET_AUDIT_DIR")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "resofleet" / "audit"


def default_audit_path(kind: Literal["gateway", "agent"]) -> str:
    return str(default_audit_dir() / f"{kind}.jsonl")


def default_state_dir() -> str:
    """``$RESOFLEET_STATE_DIR``, else ``$XDG_STATE_HOME/resofleet/agent``."""
    explicit = os.environ.get("RESOFLEET_STATE_DIR")
    if explicit:
        return explicit
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "resofleet" / "agent")


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read ``path`` (or ``$RESOFLEET_CONFIG``); no file means the defaults."""
    path = path or os.environ.get("RESOFLEET_CONFIG") or None
    if path is None:
        return parse_config({}, source=NO_FILE)
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


def parse_config(data: Mapping[str, Any], *, source: str = "<config>") -> Config:
    """Map a parsed TOML document (and the environment) onto the settings.

    Besides what the settings' types say: ``audit_log`` is true (the default path), false
    (none) or a path; ``old_secrets`` needs ``secret``; ``trusted_proxies`` are addresses or
    networks; ``[agent] health`` is HOST:PORT with a port up to 65535; server ids are
    unique; a docker server names its ``container`` and a process
    server its ``command``; ``[agent] state_dir`` is true (the default directory), false
    (none) or a directory; each schedule compiles (with its patterns matching configured
    servers, when there are any) and schedule names are unique.
    """
    env_secrets = _from_env("RESOFLEET_SECRET", tuple[Secret, ...], split=True)
    document = _file_form(data, drop_secrets=bool(env_secrets))
    try:
        file = msgspec.convert(document, _File)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(exc, document, _File)}") from None

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {key} {problem}")

    gateway = file.gateway
    if env_secrets:
        gateway = msgspec.structs.replace(gateway, secret=env_secrets[0], old_secrets=env_secrets[1:])
    elif gateway.old_secrets and gateway.secret is None:
        raise fail("gateway.old_secrets", "needs gateway.secret (the one that signs)")
    for i, proxy in enumerate(gateway.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            problem = f"must be an address or a network, not {proxy!r}"
            raise fail(f"gateway.trusted_proxies[{i}]", problem) from None
    for key, address in (("agent.health", file.agent.health), ("agent.metrics", file.agent.metrics)):
        if address is not None:
            try:
                split_address(address)
            except ValueError as exc:
                raise fail(key, f"{exc}, not {address!r}") from None
    seen: set[str] = set()
    for i, server in enumerate(file.servers):
        if server.id in seen:
            raise fail(f"servers[{i}].id", f"{server.id!r} appears twice")
        seen.add(server.id)
        if server.runtime == "docker" and not server.container:
            raise fail(f"servers[{i}].container", "is required for the docker runtime")
        if server.runtime == "process" and not server.command:
            raise fail(f"servers[{i}].command", "must be a non-empty list of strings for the process runtime")
    names: set[str] = set()
    ids = [server.id for server in file.servers]
    for i, entry in enumerate(file.schedules):
        try:
            name = compile_schedule(entry, servers=ids).name
        except ScheduleError as exc:
            raise fail(f"schedules[{i}].{exc.field}", exc.problem) from None
        if name in names:
            key = f"schedules[{i}].name"
            raise fail(key, f"{name!r} appears twice (give each schedule its own name)")
        names.add(name)
    webhooks, secrets = _webhooks(file, fail)
    url = file.bus.url or _from_env("RESOFLEET_AMQP_URL", _AmqpUrl)
    if url is not None:
        try:
            url = ", ".join(broker_urls(url))
        except ValueError:  # one of several in a string; not repeated (it may hold a password)
            where = f"{source}: bus.url" if file.bus.url else "RESOFLEET_AMQP_URL:"
            raise ConfigError(f"{where} must be amqp:// or amqps:// URLs") from None
    prefix = file.bus.prefix if file.bus.prefix is not None else _from_env("RESOFLEET_BUS_PREFIX", _Prefix)
    return Config(
        source=source,
        gateway=gateway,
        agent=file.agent,
        bus_url=url,
        bus_prefix=prefix or "",
        bus_requesters=file.bus.requesters,
        log=file.log,
        servers=file.servers,
        schedules=file.schedules,
        notifier=file.notifier,
        webhooks=webhooks,
        webhook_secrets=secrets,
    )


def _webhooks(file: _File, fail: Any) -> tuple[tuple[WebhookSettings, ...], dict[str, str | None]]:
    """Check ``[notifier]`` and ``[[webhooks]]`` beyond their types; read each URL and
    each secret (the webhooks with their URLs filled in, and name -> secret)."""
    if file.notifier.health is not None:
        try:
            split_address(file.notifier.health)
        except ValueError as exc:
            raise fail("notifier.health", f"{exc}, not {file.notifier.health!r}") from None
    try:
        return read_webhooks(file.webhooks)
    except WebhookError as exc:
        raise fail(exc.key, exc.problem) from None


def _file_form(data: Mapping[str, Any], *, drop_secrets: bool) -> dict[str, Any]:
    """``data`` with what the file writes differently from the settings rewritten:
    ``audit_log = true`` (also when absent) is the default path, ``false`` is none (and
    the same for ``[agent] state_dir``); the
    file's secrets are left out when the environment replaces them. Anything malformed is
    left as it is, for msgspec to name."""
    document = dict(data)
    for kind in ("gateway", "agent"):
        table = document.get(kind, {})
        if not isinstance(table, dict):
            continue
        table = dict(table)
        audit = table.get("audit_log", True)
        if audit is True:
            table["audit_log"] = default_audit_path(kind)
        elif audit is False:
            table["audit_log"] = None
        if kind == "agent":
            state_dir = table.get("state_dir", True)
            if state_dir is True:
                table["state_dir"] = default_state_dir()
            elif state_dir is False:
                table["state_dir"] = None
        if kind == "gateway" and drop_secrets:
            table.pop("secret", None)
            table.pop("old_secrets", None)
        document[kind] = table
    return document


def _from_env(name: str, kind: Any, *, split: bool = False) -> Any:
    """Environment variable ``name`` decoded as ``kind`` (whitespace-separated words with
    ``split``); ``None`` when unset or empty."""
    text = os.environ.get(name, "")
    value: Any = text.split() if split else text
    if not value:
        return None
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError:
        info = mi.type_info(kind)
        if isinstance(info, (mi.ListType, mi.VarTupleType)):
            problem = f"every entry must be {_describe(info.item_type)}"
        else:
            problem = f"must be {_describe(info)}"
        raise ConfigError(f"{name}: {problem}") from None


# -- msgspec's errors, said in the file's words ----------------------------------------------

#: msgspec's "<message> - at `$.gateway.limits`" (no "at" part: the top level).
_AT: Final = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
#: One step of its path: ``.key``, ``[0]``, or ``[...]`` (into a table's values).
_STEP: Final = re.compile(r"\.(?P<key>[^.\[]+)|\[(?P<index>\d+)\]|\[\.\.\.\]")
#: The two messages about keys rather than values.
_UNKNOWN: Final = re.compile(r"^Object contains unknown field `(?P<key>.+)`$")
_MISSING: Final = re.compile(r"^Object missing required field `(?P<key>.+)`$")
#: No value to show: none in the document there, or one not to repeat (``None`` would do
#: for TOML, which has no null, but a sentinel says what it means).
_NO_VALUE: Final = object()


def _explain(error: msgspec.ValidationError, document: Any, root: type) -> str:
    """``error`` (from converting ``document`` to ``root``) as ``<key.path> <problem>``."""
    text = str(error)
    at = _AT.match(text)  # no "at" part: the error is about the top level
    message, where = (at["message"], at["path"]) if at is not None else (text, "")
    path: list[str | int] = []
    into_values = False  # the path went into a table's values (msgspec does not say which)
    for step in _STEP.finditer(where):
        if step["key"] is not None:
            path.append(step["key"])
        elif step["index"] is not None:
            path.append(int(step["index"]))
        else:
            into_values = True
            break
    info = _type_at(mi.type_info(root), path)
    if (unknown := _UNKNOWN.match(message)) is not None:
        table = _unwrap(info, mi.StructType)
        known = [f.name for f in table.fields] if isinstance(table, mi.StructType) else []
        return f"{_key([*path, unknown['key']])} is not a known key (known: {', '.join(known)})"
    if (missing := _MISSING.match(message)) is not None:
        return f"{_key([*path, missing['key']])} is required"
    expected = _describe(info)
    key = _key(path)
    if not any(isinstance(step, int) for step in path):  # a table, written as in the file
        if _is_array_of_tables(info):
            key = f"[[{key}]]"
        elif isinstance(_unwrap(info, mi.StructType), mi.StructType):
            key = f"[{key}]"
    value = _NO_VALUE if into_values or _sensitive(info) else _value_at(document, path)
    if value is _NO_VALUE:
        return f"{key} must be {expected}"
    return f"{key} must be {expected}, not {_show(value)}"


def _describe(info: mi.Type) -> str:
    """What a value of this type is, in the words of a TOML file ("a whole number of at
    least 1", "a table"): a constraint's ``description`` when it has one."""
    if isinstance(info, mi.Metadata):
        description = (info.extra_json_schema or {}).get("description")
        return str(description) if description else _describe(info.type)
    if isinstance(info, mi.UnionType):
        members = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return " or ".join(_describe(t) for t in members) if members else "absent"
    if isinstance(info, mi.BoolType):
        return "true or false"
    if isinstance(info, (mi.IntType, mi.FloatType)):
        noun = "a whole number" if isinstance(info, mi.IntType) else "a number"
        return noun + _bounds(info)
    if isinstance(info, mi.StrType):
        if info.pattern is not None:
            return f"a string matching {info.pattern}"
        if info.min_length == 1 and info.max_length is None:
            return "a non-empty string"
        limits = []
        if info.min_length:
            limits.append(f"at least {info.min_length}")
        if info.max_length is not None:
            limits.append(f"at most {info.max_length}")
        return "a string" + (f" of {' and '.join(limits)} characters" if limits else "")
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(str(v) for v in info.values)
    if _is_array_of_tables(info):
        return "an array of tables"
    if isinstance(info, (mi.ListType, mi.VarTupleType)):
        return f"a list of {_plural(info.item_type)}"
    if isinstance(info, mi.DictType):
        return f"a table of {_plural(info.value_type)}"
    if isinstance(info, mi.StructType):
        return "a table"
    return type(info).__name__.removesuffix("Type").lower()


def _bounds(info: mi.IntType | mi.FloatType) -> str:
    """" from 0 to 65535", " of at least 1", " greater than 0", or ""."""
    if info.ge is not None and info.le is not None:
        return f" from {info.ge:g} to {info.le:g}"
    phrases = [
        f"{words} {bound:g}"
        for words, bound in (
            ("of at least", info.ge), ("greater than", info.gt),
            ("of at most", info.le), ("less than", info.lt),
        )
        if bound is not None
    ]
    return "".join(f" {p}" for p in phrases[:1]) + "".join(f" and {p}" for p in phrases[1:])


def _plural(info: mi.Type) -> str:
    while isinstance(info, mi.Metadata):
        info = info.type
    plurals: list[tuple[type, str]] = [
        (mi.StrType, "strings"), (mi.IntType, "whole numbers"), (mi.FloatType, "numbers"),
        (mi.BoolType, "true or false values"), (mi.StructType, "tables"),
    ]
    return next((word for kind, word in plurals if isinstance(info, kind)), "values")


def _unwrap(info: mi.Type, wanted: type | tuple[type, ...]) -> mi.Type | None:
    """The part of ``info`` of kind ``wanted``, through annotations and ``| None``."""
    if isinstance(info, wanted):
        return info
    if isinstance(info, mi.Metadata):
        return _unwrap(info.type, wanted)
    if isinstance(info, mi.UnionType):
        for member in info.types:
            found = _unwrap(member, wanted)
            if found is not None:
                return found
    return None


def _type_at(info: mi.Type, path: list[str | int]) -> mi.Type:
    for step in path:
        if isinstance(step, int):
            seq = _unwrap(info, (mi.ListType, mi.VarTupleType))
            if not isinstance(seq, (mi.ListType, mi.VarTupleType)):
                break
            info = seq.item_type
        else:
            struct = _unwrap(info, mi.StructType)
            if not isinstance(struct, mi.StructType):
                break
            field = next((f for f in struct.fields if f.name == step), None)
            if field is None:
                break
            info = field.type
    return info


def _is_array_of_tables(info: mi.Type) -> bool:
    seq = _unwrap(info, (mi.ListType, mi.VarTupleType))
    return isinstance(seq, (mi.ListType, mi.VarTupleType)) and isinstance(
        _unwrap(seq.item_type, mi.StructType), mi.StructType
    )


def _sensitive(info: mi.Type) -> bool:
    if isinstance(info, mi.Metadata):
        return bool((info.extra or {}).get("sensitive")) or _sensitive(info.type)
    if isinstance(info, mi.UnionType):
        return any(_sensitive(t) for t in info.types)
    if isinstance(info, (mi.ListType, mi.VarTupleType)):
        return _sensitive(info.item_type)
    return False


def _value_at(document: Any, path: list[str | int]) -> Any:
    value = document
    for step in path:
        if isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict) and step in value:
            value = value[step]
        else:
            return _NO_VALUE
    return value


def _key(path: list[str | int]) -> str:
    """``gateway.limits.command_burst``, ``servers[0].id``."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def _show(value: Any) -> str:
    """A value as the file wrote it, briefly: ``true``, ``'eu 1'``, ``0``, ``a table``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (str, int, float)):
        return repr(value)
    return str(value)  # a TOML date or time
