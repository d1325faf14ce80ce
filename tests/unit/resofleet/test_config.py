"""The configuration file mapped onto the parts' settings: what a person writes, what the
agent and the gateway get, and the one line a mistake earns."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from resofleet.agent.settings import AgentSettings, ServerConfig
from resofleet.config import ConfigError, load_config, parse_config
from resofleet.gateway.settings import GatewaySettings, Limits

SECRET = "s" * 43
OLD = "o" * 43

FULL = f"""
[gateway]
host = "0.0.0.0"
port = 9000
secret = "{SECRET}"
old_secrets = ["{OLD}"]
origins = ["https://dash.example.com"]
trusted_proxies = ["10.0.0.0/8"]
revoked = ["j1"]
audit_log = "/var/log/resofleet/gateway.jsonl"
compression = true
[gateway.limits]
command_rate = 5
command_burst = 7
connections_per_address = 9
[bus]
url = "amqp://guest:guest@rabbitmq:5672/"
prefix = "prod."
[agent]
name = "host-a"
status_interval = 1
worlds_interval = 2.5
bans_interval = 30.0
audit_log = false
state_dir = "/var/lib/resofleet"
[[servers]]
id = "main"
container = "resonite-headless"
[[servers]]
id = "lab"
runtime = "process"
command = ["dotnet", "Resonite.dll"]
workdir = "/opt/resonite"
env = {{ LANG = "C" }}
[[servers]]
id = "demo"
runtime = "emulator"
scenario = "busy"
emulator_args = ["--noise-rate", "0.1"]
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RESOFLEET_SECRET", "RESOFLEET_AMQP_URL", "RESOFLEET_BUS_PREFIX", "RESOFLEET_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESOFLEET_AUDIT_DIR", str(tmp_path / "audit"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return path


def refusal(data: dict, *, source: str = "fleet.toml") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source=source)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_full_file_becomes_the_parts_settings(tmp_path: Path) -> None:
    """Every key of a full file lands in the settings the gateway and the agent take."""
    config = load_config(write(tmp_path, FULL))
    assert config.source == str(tmp_path / "fleet.toml")
    assert config.gateway == GatewaySettings(
        host="0.0.0.0", port=9000, secret=SECRET, old_secrets=(OLD,),
        origins=("https://dash.example.com",), trusted_proxies=("10.0.0.0/8",), revoked=("j1",),
        limits=Limits(command_rate=5.0, command_burst=7, connections_per_address=9),
        audit_log="/var/log/resofleet/gateway.jsonl", compression=True,
    )
    assert config.gateway.secrets == (SECRET, OLD)
    assert config.agent == AgentSettings(
        name="host-a", status_interval=1.0, worlds_interval=2.5, bans_interval=30.0, audit_log=None,
        state_dir="/var/lib/resofleet",
    )
    assert config.servers == (
        ServerConfig(id="main", runtime="docker", container="resonite-headless"),
        ServerConfig(id="lab", runtime="process", command=("dotnet", "Resonite.dll"),
                     workdir="/opt/resonite", env={"LANG": "C"}),
        ServerConfig(id="demo", runtime="emulator", scenario="busy", emulator_args=("--noise-rate", "0.1")),
    )
    assert (config.bus_url, config.bus_prefix) == ("amqp://guest:guest@rabbitmq:5672/", "prod.")


def test_no_file_means_the_defaults(tmp_path: Path) -> None:
    """Without --config or RESOFLEET_CONFIG: loopback, port 8000, open, the hostname,
    audit logs in the audit directory, no broker, no servers."""
    config = load_config(None)
    assert config.source == "<defaults>"
    assert (config.gateway.host, config.gateway.port, config.gateway.secrets) == ("127.0.0.1", 8000, ())
    assert config.agent.name == socket.gethostname()
    assert config.gateway.audit_log == str(tmp_path / "audit" / "gateway.jsonl")
    assert config.agent.audit_log == str(tmp_path / "audit" / "agent.jsonl")
    assert (config.bus_url, config.bus_prefix, config.servers) == (None, "", ())


def test_the_config_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RESOFLEET_CONFIG stands in for --config."""
    monkeypatch.setenv("RESOFLEET_CONFIG", str(write(tmp_path, '[agent]\nname = "from-env"\n')))
    assert load_config().agent.name == "from-env"


def test_a_missing_or_broken_file_is_one_line_naming_it(tmp_path: Path) -> None:
    """No such file, or not TOML: one line that starts with the file's name."""
    with pytest.raises(ConfigError, match=r"^/nonexistent/fleet\.toml: no such file$"):
        load_config("/nonexistent/fleet.toml")
    path = write(tmp_path, "[gateway\nport = 1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid TOML \("):
        load_config(path)


def test_a_bad_value_in_a_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    """The line a person sees for a mistake in the file they wrote."""
    path = write(tmp_path, "[gateway.limits]\ncommand_burst = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: gateway.limits.command_burst must be a whole number of at least 1, not 0"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"gateway": {"port": 70000}}, "gateway.port must be a port number 0-65535, not 70000"),
        ({"gateway": {"port": "8000"}}, "gateway.port must be a port number 0-65535, not '8000'"),
        ({"gateway": {"host": ""}}, "gateway.host must be a host name or address, not ''"),
        ({"gateway": 3}, "[gateway] must be a table, not 3"),
        ({"gateway": {"limits": {"command_rate": -1}}},
         "gateway.limits.command_rate must be a number greater than 0, not -1"),
        ({"gateway": {"compression": "yes"}}, "gateway.compression must be true or false, not 'yes'"),
        ({"gateway": {"origins": "https://a.example"}},
         "gateway.origins must be a list of strings, not 'https://a.example'"),
        ({"gateway": {"origins": ["https://a.example/path"]}},
         "gateway.origins[0] must be an origin like https://host[:port], not 'https://a.example/path'"),
        ({"gateway": {"trusted_proxies": ["10.0.0.0/8", "proxy.local"]}},
         "gateway.trusted_proxies[1] must be an address or a network, not 'proxy.local'"),
        ({"gateway": {"audit_log": ""}}, "gateway.audit_log must be a path, or false for no audit log, not ''"),
        ({"agent": {"name": ""}}, "agent.name must be a non-empty string, not ''"),
        ({"agent": {"bans_interval": 0}}, "agent.bans_interval must be a number greater than 0, not 0"),
        ({"agent": {"status_interval": True}}, "agent.status_interval must be a number greater than 0, not true"),
        ({"agent": {"audit_log": 7}}, "agent.audit_log must be a path, or false for no audit log, not 7"),
        ({"bus": {"prefix": "a b"}},
         "bus.prefix must be at most 64 letters, digits, dots, dashes or underscores, not 'a b'"),
        ({"bus": {"prefix": "p" * 65}},
         f"bus.prefix must be at most 64 letters, digits, dots, dashes or underscores, not '{'p' * 65}'"),
        ({"servers": {"id": "main"}}, "[[servers]] must be an array of tables, not a table"),
        ({"servers": ["main"]}, "servers[0] must be a table, not 'main'"),
        ({"servers": [{"runtime": "emulator"}]}, "servers[0].id is required"),
        ({"servers": [{"id": "EU 1", "runtime": "emulator"}]},
         "servers[0].id must be an id matching [a-z0-9][a-z0-9-]{0,62}, not 'EU 1'"),
        ({"servers": [{"id": "a" * 64, "runtime": "emulator"}]},
         f"servers[0].id must be an id matching [a-z0-9][a-z0-9-]{{0,62}}, not '{'a' * 64}'"),
        ({"servers": [{"id": "one", "runtime": "vm"}]},
         "servers[0].runtime must be one of docker, emulator, process, not 'vm'"),
        ({"servers": [{"id": "one", "runtime": "emulator", "env": {"A": 1}}]},
         "servers[0].env must be a table of strings"),
        ({"servers": [{"id": "one", "runtime": "process", "command": ["run", 3]}]},
         "servers[0].command[1] must be a string, not 3"),
        ({"servers": [{"id": "one", "runtime": "emulator", "restart": "sometimes"}]},
         "servers[0].restart must be one of always, never, on-failure, not 'sometimes'"),
        ({"servers": [{"id": "one", "runtime": "emulator", "crash_loop_limit": 0}]},
         "servers[0].crash_loop_limit must be a whole number of at least 1, not 0"),
        ({"servers": [{"id": "one", "runtime": "emulator", "restart_backoff": 0}]},
         "servers[0].restart_backoff must be a number greater than 0, not 0"),
        ({"servers": [{"id": "one", "runtime": "emulator", "health_restart": "yes"}]},
         "servers[0].health_restart must be true or false, not 'yes'"),
        ({"agent": {"health_misses": 0}}, "agent.health_misses must be a whole number of at least 1, not 0"),
    ],
)
def test_bad_values_name_the_file_the_key_and_what_it_must_be(data: dict, line: str) -> None:
    """Each mistake is one line: the file, the key path as written in TOML, the rule, the value."""
    assert refusal(data) == f"fleet.toml: {line}"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"gatway": {"port": 1}}, "gatway is not a known key (known: gateway, agent, bus, log, servers, schedules, notifier, webhooks)"),
        ({"gateway": {"secrte": SECRET}}, "gateway.secrte is not a known key (known: host, port, secret, "
         "old_secrets, origins, trusted_proxies, revoked, hosts, limits, audit_log, compression, bulk_concurrency)"),
        ({"gateway": {"limits": {"rate": 1}}},
         "gateway.limits.rate is not a known key (known: command_rate, command_burst, connections_per_address, "
         "pre_auth_rate, pre_auth_burst, pre_auth_frame)"),
        ({"agent": {"status": 1}}, "agent.status is not a known key (known: name, status_interval, "
         "worlds_interval, bans_interval, audit_log, health, metrics, health_interval, health_timeout, "
         "health_misses, state_dir)"),
        ({"bus": {"uri": "amqp://x/"}}, "bus.uri is not a known key (known: url, prefix, requesters)"),
        ({"servers": [{"id": "one", "runtime": "emulator", "args": []}]},
         "servers[0].args is not a known key (known: id, runtime, container, command, workdir, scenario, "
         "emulator_args, env, restart, restart_backoff, restart_backoff_max, restart_stable_run, "
         "crash_loop_limit, crash_loop_window, health_restart)"),
    ],
)
def test_an_unknown_key_is_refused_with_the_known_ones(data: dict, line: str) -> None:
    """A misspelt key is an error listing the right spellings, never silently ignored."""
    assert refusal(data) == f"fleet.toml: {line}"


def test_secret_values_and_broker_urls_are_never_repeated() -> None:
    """A wrong secret or a wrong broker URL is named by its key, its value is not printed."""
    short = "hunter2-but-too-short"
    assert short not in refusal({"gateway": {"secret": short}})
    assert short not in refusal({"gateway": {"secret": SECRET, "old_secrets": [short]}})
    message = refusal({"bus": {"url": "http://admin:p4ssw0rd@rabbit/"}})
    assert message == (
        "fleet.toml: bus.url must be an amqp:// or amqps:// URL or a list of amqp:// or amqps:// URLs"
    ) and "p4ssw0rd" not in message


def test_the_secret_variable_replaces_the_files_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """RESOFLEET_SECRET replaces secret and old_secrets, even ones the file got wrong."""
    monkeypatch.setenv("RESOFLEET_SECRET", f"  {OLD}\n{SECRET} ")
    config = parse_config({"gateway": {"secret": "short", "old_secrets": ["x"]}})
    assert (config.gateway.secret, config.gateway.old_secrets) == (OLD, (SECRET,))


def test_a_short_secret_in_the_variable_is_blamed_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The line names the variable and how to make a good secret, not the secret."""
    monkeypatch.setenv("RESOFLEET_SECRET", f"{SECRET} tooshort")
    message = refusal({})
    assert message == (
        "RESOFLEET_SECRET: every entry must be a secret of at least 32 characters "
        "(make one with `resofleet token secret`)"
    )


def test_the_broker_url_comes_from_the_file_else_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """[bus] url wins; RESOFLEET_AMQP_URL fills in when the file has none; a bad one is
    blamed on the variable without repeating it."""
    monkeypatch.setenv("RESOFLEET_AMQP_URL", "amqps://env@broker/")
    assert parse_config({"bus": {"url": "amqp://file@broker/"}}).bus_url == "amqp://file@broker/"
    assert parse_config({}).bus_url == "amqps://env@broker/"
    monkeypatch.setenv("RESOFLEET_AMQP_URL", "http://user:secretpw@broker/")
    assert refusal({}) == "RESOFLEET_AMQP_URL: must be an amqp:// or amqps:// URL"


def test_the_broker_url_may_be_a_cluster_of_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """[bus] url takes a list (a cluster's nodes, tried in turn), and the variable several
    URLs separated by commas or spaces; bus_url carries them ", "-separated, as AmqpBus
    takes them."""
    nodes = ["amqp://u:p@rabbit-0/", "amqp://u:p@rabbit-1/", "amqps://u:p@rabbit-2/"]
    config = parse_config({"bus": {"url": nodes}})
    assert (config.bus_url, config.bus_urls) == (", ".join(nodes), tuple(nodes))
    monkeypatch.setenv("RESOFLEET_AMQP_URL", "amqp://a/,amqp://b/ amqp://c/")
    assert parse_config({}).bus_urls == ("amqp://a/", "amqp://b/", "amqp://c/")
    assert parse_config({"bus": {"url": "amqp://x/, amqp://y/"}}).bus_urls == ("amqp://x/", "amqp://y/")


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"bus": {"url": ["amqp://a/", "http://u:secretpw@b/"]}}, "bus.url[1] must be an amqp:// or amqps:// URL"),
        ({"bus": {"url": []}}, "bus.url must be an amqp:// or amqps:// URL or a list of amqp:// or amqps:// URLs"),
        ({"bus": {"url": "amqp://a/, http://u:secretpw@b/"}}, "bus.url must be amqp:// or amqps:// URLs"),
        ({"bus": {"url": 5}}, "bus.url must be an amqp:// or amqps:// URL or a list of amqp:// or amqps:// URLs"),
    ],
)
def test_a_bad_broker_in_a_list_is_named_and_not_repeated(data: dict, line: str) -> None:
    """Each node's URL is checked; the line names where, never the URL (a password)."""
    message = refusal(data)
    assert message == f"fleet.toml: {line}" and "secretpw" not in message


def test_a_bad_broker_among_several_in_the_variable_is_blamed_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESOFLEET_AMQP_URL", "amqp://a/ http://u:secretpw@b/")
    assert refusal({}) == "RESOFLEET_AMQP_URL: must be amqp:// or amqps:// URLs"


def test_the_bus_prefix_comes_from_the_file_else_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """[bus] prefix wins, even empty; RESOFLEET_BUS_PREFIX fills in; a bad one is named."""
    monkeypatch.setenv("RESOFLEET_BUS_PREFIX", "ci-7.")
    assert parse_config({"bus": {"prefix": ""}}).bus_prefix == ""
    assert parse_config({}).bus_prefix == "ci-7."
    monkeypatch.setenv("RESOFLEET_BUS_PREFIX", "ci 7")
    assert refusal({}) == (
        "RESOFLEET_BUS_PREFIX: must be at most 64 letters, digits, dots, dashes or underscores"
    )


def test_each_runtime_needs_its_own_keys() -> None:
    """docker needs a container, process a command; the emulator needs nothing."""
    assert refusal({"servers": [{"id": "one"}]}) == (
        "fleet.toml: servers[0].container is required for the docker runtime"
    )
    assert refusal({"servers": [{"id": "one", "runtime": "process", "command": []}]}) == (
        "fleet.toml: servers[0].command must be a non-empty list of strings for the process runtime"
    )
    [server] = parse_config({"servers": [{"id": "one", "runtime": "emulator"}]}).servers
    assert (server.container, server.command, server.scenario) == ("", (), None)


def test_a_server_id_may_appear_once() -> None:
    """Two entries with one id: the second is named."""
    servers = [{"id": "one", "runtime": "emulator"}, {"id": "two", "runtime": "emulator"},
               {"id": "one", "runtime": "emulator"}]
    assert refusal({"servers": servers}) == "fleet.toml: servers[2].id 'one' appears twice"


@pytest.mark.parametrize("kind", ["gateway", "agent"])
def test_audit_log_is_a_path_true_or_false(kind: str, tmp_path: Path) -> None:
    """Absent or true: the default file in the audit directory; false: none; a path: it."""
    def audit_log(value: object = None) -> str | None:
        table = {} if value is None else {"audit_log": value}
        return getattr(parse_config({kind: table}), kind).audit_log

    default = str(tmp_path / "audit" / f"{kind}.jsonl")
    assert audit_log() == audit_log(True) == default
    assert audit_log(False) is None
    assert audit_log("/srv/audit.jsonl") == "/srv/audit.jsonl"


def test_agent_name_defaults_to_the_hostname() -> None:
    """An agent without a name is named after its host, in presence and in its id."""
    assert parse_config({"agent": {}}).agent.name == socket.gethostname()
    assert parse_config({"agent": {"name": "rack-3"}}).agent.name == "rack-3"


def test_settings_print_without_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A configuration in a log line or a traceback shows no secret, old or current."""
    config = parse_config({"gateway": {"secret": SECRET, "old_secrets": [OLD]}})
    assert SECRET not in repr(config) and OLD not in repr(config)
    assert "secrets=<2 hidden>" in repr(config.gateway)


def test_gateway_hosts_are_host_names_without_ports() -> None:
    """`[gateway] hosts` lists the names the gateway answers to; a port or a space is refused
    naming the key."""
    config = parse_config({"gateway": {"hosts": ["dash.example.com", "GW.example.com"]}}, source="f.toml")
    assert config.gateway.hosts == ("dash.example.com", "GW.example.com")
    with pytest.raises(ConfigError, match=r"^f\.toml: gateway\.hosts\[0\] "):
        parse_config({"gateway": {"hosts": ["dash.example.com:443"]}}, source="f.toml")


def test_the_log_table_chooses_the_format() -> None:
    """[log] format is text (the default) or json; anything else names the key."""
    assert parse_config({}).log.format == "text"
    assert parse_config({"log": {"format": "json"}}).log.format == "json"
    with pytest.raises(ConfigError, match=r"^f.toml: log.format must be one of json, text, not 'xml'$"):
        parse_config({"log": {"format": "xml"}}, source="f.toml")
    with pytest.raises(ConfigError, match=r"log.level is not a known key \(known: format\)"):
        parse_config({"log": {"level": "debug"}}, source="f.toml")
