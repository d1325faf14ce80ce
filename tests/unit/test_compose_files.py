"""The compose fleet's files, rendered without Docker: the configurations the services
read are valid for resofleet, and the broker's permissions (Erlang regular expressions,
here read with Python's, which agree on these) cover exactly the names each user needs,
as contracts/topology.py spells them."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from resofleet.contracts import Topology

from resofleet.agent.timespan import parse_duration
from resofleet.config import parse_config
from resofleet.notifier.service import ROUTE_CLOSE_TIMEOUT

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = Topology()


def load_fleet() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_fleet", REPO / "deploy" / "fleet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fleet = load_fleet()

ENV = {
    "COMPOSE_PROJECT_NAME": "unit",
    "RESOFLEET_FLEET_DIR": "",  # set per test
    "RESOFLEET_LB_ADDRESS": "172.30.9.200",
    "RESOFLEET_BROKER_GATEWAY_PASSWORD": "g" * 48,
    "RESOFLEET_BROKER_HOST_A_PASSWORD": "a" * 48,
    "RESOFLEET_BROKER_HOST_B_PASSWORD": "b" * 48,
    "RESOFLEET_BROKER_NOTIFIER_PASSWORD": "n" * 48,
    "RESOFLEET_WEBHOOK_URL": 'https://hooks.example.com/a"b',  # a quote: still one TOML string
    "RESOFLEET_WEBHOOK_SECRET": "w" * 43,
}


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    return fleet.render({**ENV, "RESOFLEET_FLEET_DIR": str(tmp_path / "fleet")})


def test_the_folder_is_private_and_the_files_readable_by_the_containers(rendered: Path) -> None:
    """0700 folder (others cannot list or read it), 0644 files (a container's own user
    reads the one file mounted)."""
    assert rendered.stat().st_mode & 0o777 == 0o700
    assert {p.name for p in rendered.iterdir()} == {"definitions.json", "gateway.toml", "host-a.toml", "host-b.toml", "notifier.toml"}
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in rendered.iterdir())


def test_agent_configurations_are_valid_and_name_their_containers(rendered: Path) -> None:
    """host-a serves a1, a2 and host-b b1, b2, through the docker runtime, with the health
    endpoint the image's HEALTHCHECK asks."""
    for host, ids in (("host-a", ["a1", "a2"]), ("host-b", ["b1", "b2"])):
        path = rendered / f"{host}.toml"
        config = parse_config(tomllib.loads(path.read_text()), source=str(path))
        assert config.agent.name == host and config.agent.health == config.agent.metrics == "0.0.0.0:8001"  # Prometheus scrapes it from the stack network
        assert [(s.id, s.runtime, s.container) for s in config.servers] == [(i, "docker", f"unit-{i}") for i in ids]
    assert fleet.servers({**ENV, "RESOFLEET_FLEET_DIR": str(rendered)}) == ["a1", "a2", "b1", "b2"]


def test_gateway_configuration_trusts_only_the_load_balancer(rendered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Listening beyond loopback (the secret comes from the environment), trusting the
    X-Forwarded-For of the load balancer's fixed address alone."""
    monkeypatch.setenv("RESOFLEET_SECRET", "s" * 43)
    path = rendered / "gateway.toml"
    config = parse_config(tomllib.loads(path.read_text()), source=str(path))
    assert (config.gateway.host, config.gateway.port) == ("0.0.0.0", 8000)
    assert list(config.gateway.trusted_proxies) == ["172.30.9.200"]


def test_password_hashes_are_rabbitmqs_salted_sha256(rendered: Path) -> None:
    """base64(salt(4) + sha256(salt + password)), the format RabbitMQ imports."""
    users = {u["name"]: u for u in json.loads((rendered / "definitions.json").read_text())["users"]}
    assert set(users) == {"gateway", "host-a", "host-b", "notifier"}  # and no guest
    for name, letter in (("gateway", "g"), ("host-a", "a"), ("host-b", "b"), ("notifier", "n")):
        raw = base64.b64decode(users[name]["password_hash"])
        salt, digest = raw[:4], raw[4:]
        assert digest == hashlib.sha256(salt + (letter * 48).encode()).digest()
        assert users[name]["hashing_algorithm"] == "rabbit_password_hashing_sha256"


def permissions(rendered: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    definitions = json.loads((rendered / "definitions.json").read_text())
    assert {p["vhost"] for p in definitions["permissions"]} == {"resofleet"}
    return (
        {p["user"]: p for p in definitions["permissions"]},
        {p["user"]: p for p in definitions["topic_permissions"] if p["exchange"] == TOPOLOGY.events},
    )


def allows(pattern: str, name: str) -> bool:
    """RabbitMQ's reading of a permission: an empty pattern allows nothing."""
    return bool(pattern) and re.search(pattern, name) is not None


BUS_QUEUE = "amq_0123456789abcdef0123456789abcdef"  # how aio-pika names the bus's own queues


@pytest.mark.parametrize(("agent", "own", "other"), [("host-a", ("a1", "a2"), ("b1", "b2")), ("host-b", ("b1", "b2"), ("a1", "a2"))])
def test_an_agent_may_serve_and_publish_for_its_own_servers_only(rendered: Path, agent: str, own: tuple[str, ...], other: tuple[str, ...]) -> None:
    """Its own command queues: declare, bind, consume; another agent's: none of it. Events
    under its own servers' keys only; it binds nothing to the events."""
    perms, topics = permissions(rendered)
    p = perms[agent]
    for server in own:
        queue = TOPOLOGY.command_queue(server)
        assert allows(p["configure"], queue) and allows(p["write"], queue) and allows(p["read"], queue)
        for kind in ("output", "status", "worlds", "bans", "state"):
            assert allows(topics[agent]["write"], TOPOLOGY.event_key(server, kind))
    for server in other:
        queue = TOPOLOGY.command_queue(server)
        assert not (allows(p["configure"], queue) or allows(p["write"], queue) or allows(p["read"], queue))
        assert not allows(topics[agent]["write"], TOPOLOGY.event_key(server, "status"))
    assert not allows(topics[agent]["read"], "a1.status")
    for exchange in (TOPOLOGY.commands, TOPOLOGY.events, TOPOLOGY.presence):
        assert allows(p["configure"], exchange)  # the bus declares all three
    assert allows(p["read"], TOPOLOGY.commands) and allows(p["read"], TOPOLOGY.presence)
    assert allows(p["write"], TOPOLOGY.events) and allows(p["write"], TOPOLOGY.presence)
    assert not allows(p["write"], TOPOLOGY.commands)  # it sends no requests
    assert not allows(p["read"], TOPOLOGY.events)
    assert allows(p["write"], "amq.default")  # replies (direct reply-to)
    assert all(allows(p[kind], BUS_QUEUE) for kind in ("configure", "write", "read"))


def test_the_gateway_user_sends_requests_and_reads_events_but_serves_nothing(rendered: Path) -> None:
    """No command queue of any server; every server's events; it publishes none."""
    perms, topics = permissions(rendered)
    p = perms["gateway"]
    for server in ("a1", "b2", "anything"):
        queue = TOPOLOGY.command_queue(server)
        assert not (allows(p["configure"], queue) or allows(p["read"], queue))
        assert allows(topics["gateway"]["read"], TOPOLOGY.server_pattern(server))
        assert not allows(topics["gateway"]["write"], TOPOLOGY.event_key(server, "status"))
    assert allows(p["write"], TOPOLOGY.commands) and allows(p["write"], TOPOLOGY.presence)
    assert allows(p["read"], TOPOLOGY.events) and allows(p["read"], TOPOLOGY.presence)
    assert not allows(p["write"], TOPOLOGY.events) and not allows(p["write"], "amq.default")
    assert all(allows(p[kind], BUS_QUEUE) for kind in ("configure", "write", "read"))


def test_the_notifier_user_has_its_queues_and_reads_events_and_presence_only(rendered: Path) -> None:
    """Its durable queues: declare, bind, consume, publish (through the default exchange);
    binds the events it judges (never output) and the presence fanout; sends no request,
    publishes no event, serves no server."""
    perms, topics = permissions(rendered)
    p = perms["notifier"]
    for queue in (TOPOLOGY.notify_events, TOPOLOGY.notify_queue("ops"), TOPOLOGY.notify_dead, BUS_QUEUE):
        assert all(allows(p[kind], queue) for kind in ("configure", "write", "read")), queue
    for exchange in (TOPOLOGY.commands, TOPOLOGY.events, TOPOLOGY.presence):
        assert allows(p["configure"], exchange)  # the bus declares all three
    assert allows(p["read"], TOPOLOGY.events) and allows(p["read"], TOPOLOGY.presence)
    assert allows(p["write"], TOPOLOGY.presence)  # a discover at start
    assert allows(p["write"], "amq.default")  # put: persistent notices to its queues
    assert not allows(p["write"], TOPOLOGY.events) and not allows(p["write"], TOPOLOGY.commands)
    assert not allows(p["read"], TOPOLOGY.commands)
    for server in ("a1", "b2"):
        queue = TOPOLOGY.command_queue(server)
        assert not (allows(p["configure"], queue) or allows(p["write"], queue) or allows(p["read"], queue))
    for kind in ("state", "status", "worlds", "schedule"):
        assert allows(topics["notifier"]["read"], f"*.{kind}")  # the binding keys it uses
    assert not allows(topics["notifier"]["read"], "*.output") and not allows(topics["notifier"]["read"], "#")
    assert not allows(topics["notifier"]["write"], TOPOLOGY.event_key("a1", "state"))


def test_notifier_configuration_is_valid_and_signs_with_the_env_secret(rendered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One json webhook to the env file's URL, signed with RESOFLEET_WEBHOOK_SECRET, and
    the health endpoint the image's HEALTHCHECK asks and Prometheus scrapes."""
    monkeypatch.setenv("RESOFLEET_WEBHOOK_SECRET", "w" * 43)
    path = rendered / "notifier.toml"
    config = parse_config(tomllib.loads(path.read_text()), source=str(path))
    assert config.notifier.health == "0.0.0.0:8002"
    [hook] = config.webhooks
    assert (hook.name, hook.url, hook.format, hook.secret_env) == (
        "fleet", 'https://hooks.example.com/a"b', "json", "RESOFLEET_WEBHOOK_SECRET",
    )
    assert "server_down" in hook.events



#: Seconds Docker gives a container between SIGTERM and SIGKILL when compose names none.
DOCKER_STOP_DEFAULT = 10.0


def test_a_stopped_notifier_may_end_its_posts_before_it_is_killed(rendered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`docker compose stop`/`down`/`up` with a new image gives the notifier time to end
    the POSTs in progress (a webhook's timeout) after routing stops: killed mid-POST, it
    leaves a notice the receiver may have taken in the queue, sent again at the next start."""
    monkeypatch.setenv("RESOFLEET_WEBHOOK_SECRET", "w" * 43)
    path = rendered / "notifier.toml"
    config = parse_config(tomllib.loads(path.read_text()), source=str(path))
    needed = max(h.timeout for h in config.webhooks) + 1 + ROUTE_CLOSE_TIMEOUT
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    grace = compose["services"]["notifier"].get("stop_grace_period")
    assert (parse_duration(grace) if grace else DOCKER_STOP_DEFAULT) >= needed

def test_an_env_file_from_before_the_notifier_gets_its_keys(tmp_path: Path) -> None:
    """The notifier's password, URL and secret are appended; every other value is kept."""
    path = tmp_path / ".env"
    path.write_text("COMPOSE_PROJECT_NAME=old\nRESOFLEET_SECRET=keep\n")
    path.chmod(0o600)
    values = fleet.ensure_env(path)
    assert values["COMPOSE_PROJECT_NAME"] == "old" and values["RESOFLEET_SECRET"] == "keep"
    assert values["RESOFLEET_WEBHOOK_URL"] == fleet.DEFAULT_WEBHOOK_URL
    assert len(values["RESOFLEET_WEBHOOK_SECRET"]) >= 32 and len(values["RESOFLEET_BROKER_NOTIFIER_PASSWORD"]) == 48
    assert fleet.read_env(path) == values and fleet.ensure_env(path) == values  # written once


def test_a_template_placeholder_without_a_value_is_an_error(tmp_path: Path) -> None:
    """A misspelt placeholder never reaches a rendered file."""
    template = tmp_path / "x.in"
    template.write_text("a = {{NOPE}}\n")
    with pytest.raises(fleet.FleetError, match="NOPE"):
        fleet.fill(template, {})


def test_the_env_file_is_written_0600_and_never_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new env file is 0600 with fresh secrets; an existing one is read as it is, and
    refused when others may read it."""
    monkeypatch.setattr(fleet, "pick_subnet", lambda: fleet.ipaddress.ip_network("172.30.7.0/24"))
    monkeypatch.setattr(fleet, "docker_socket_gid", lambda: 999)
    monkeypatch.setattr(fleet, "local_base_present", lambda: True)
    monkeypatch.delenv("RESOFLEET_FLEET_IMAGES", raising=False)
    path = tmp_path / ".env"
    first = fleet.ensure_env(path, project="p", port=8123)
    assert path.stat().st_mode & 0o777 == 0o600
    assert first["RESOFLEET_LB_ADDRESS"] == "172.30.7.200" and first["RESOFLEET_FLEET_IP_RANGE"] == "172.30.7.0/25"
    assert first["RESOFLEET_FLEET_IMAGES"] == "local" and len(first["RESOFLEET_SECRET"]) >= 32
    assert fleet.ensure_env(path) == first
    path.chmod(0o644)
    with pytest.raises(fleet.FleetError, match="chmod 600"):
        fleet.ensure_env(path)
