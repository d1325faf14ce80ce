"""A fleet across hosts without compose or Docker: three network namespaces on a bridge
of their own as hosts, RabbitMQ (with the fleet's broker users, from the same definitions
as the compose fleet) in one, an agent in each of the other two, one gateway on this
machine; clients connect to the gateway on loopback.

Each agent host has its own hostname (a UTS namespace), its own monotonic and boot clocks
(a time namespace, days apart from each other and from the gateway's), its own network
address, working directory, home and audit directory: what it must not assume about the
other parts. Needs root, `ip`, `unshare` and Debian's rabbitmq-server; skipped otherwise.
Everything it made (namespaces, interfaces, processes, files) is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest

from tests.integration.gateway.client import Client

REPO: Final = Path(__file__).resolve().parents[2]
RABBITMQ: Final = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
#: Seconds for the broker to listen, an agent or the gateway to be ready.
START_TIMEOUT: Final = 60.0
#: Seconds for one request.
WAIT: Final = 15.0
#: Each agent host's clocks run this many seconds ahead of this machine's.
CLOCK_OFFSETS: Final = {"host-a": 86_400, "host-b": 3 * 86_400}
SERVERS: Final = {"host-a": ("a1", "a2"), "host-b": ("b1", "b2")}

pytestmark = pytest.mark.timeout(300)


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network, UTS and time namespaces)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not RABBITMQ.exists():
        return f"needs Debian's rabbitmq-server ({RABBITMQ})"
    return None


def load_fleet() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_fleet", REPO / "deploy" / "fleet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=WAIT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.2)


@dataclass
class Hosts:
    """The namespaces, their addresses and what runs in them."""

    name: str
    root: Path
    env: dict[str, str]
    addresses: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    gateway_url: str = ""
    token: str = ""

    def netns(self, host: str) -> str:
        return f"{self.name}-{host}"

    def spawn(self, key: str, command: list[str], *, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        cwd.mkdir(parents=True, exist_ok=True)
        log = (cwd / "output.log").open("wb")
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[key] = process
        return process

    def log(self, key: str) -> str:
        return (self.root / key / "output.log").read_text(errors="replace")


def start_network(hosts: Hosts, subnet: object) -> None:
    """A bridge with this machine on .1, and a namespace per host on it."""
    addresses = [str(a) for a in subnet.hosts()]  # type: ignore[attr-defined]
    bridge = f"{hosts.name}br"
    sh("ip", "link", "add", bridge, "type", "bridge")
    sh("ip", "addr", "add", f"{addresses[0]}/{subnet.prefixlen}", "dev", bridge)  # type: ignore[attr-defined]
    sh("ip", "link", "set", bridge, "up")
    for i, host in enumerate(("broker", "host-a", "host-b"), start=1):
        ns, veth = hosts.netns(host), f"{hosts.name}{i}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", bridge, "up")
        sh("ip", "-n", ns, "addr", "add", f"{addresses[i]}/{subnet.prefixlen}", "dev", "eth0")  # type: ignore[attr-defined]
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        hosts.addresses[host] = addresses[i]


def start_broker(hosts: Hosts, definitions: Path) -> None:
    home = hosts.root / "broker"
    home.mkdir(parents=True)
    (home / "rabbitmq.conf").write_text(
        "listeners.tcp.default = 5672\n"
        f"load_definitions = {definitions}\n"
        "log.console = true\nlog.console.level = warning\nlog.file = false\n"
    )
    (home / "env.conf").write_text("")
    (home / "enabled_plugins").write_text("[].\n")
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "RABBITMQ_CONF_ENV_FILE": str(home / "env.conf"),
        "RABBITMQ_NODENAME": "rabbit@localhost", "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"), "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"), "RABBITMQ_PID_FILE": str(home / "pid"),
    }
    hosts.spawn("broker", ["ip", "netns", "exec", hosts.netns("broker"), str(RABBITMQ)], env=env, cwd=home)
    wait_for_port(hosts.addresses["broker"], 5672)


def broker_url(hosts: Hosts, user: str) -> str:
    password = hosts.env[f"RESOFLEET_BROKER_{user.upper().replace('-', '_')}_PASSWORD"]
    return f"amqp://{user}:{password}@{hosts.addresses['broker']}:5672/resofleet"


def start_agent(hosts: Hosts, host: str) -> None:
    home = hosts.root / host
    home.mkdir(parents=True)
    servers = "".join(
        f'[[servers]]\nid = "{s}"\nruntime = "emulator"\nscenario = "default"\n' for s in SERVERS[host]
    )
    (home / "agent.toml").write_text(
        f'[agent]\nname = "{host}"\nhealth = "127.0.0.1:8001"\naudit_log = true\n{servers}'
    )
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "RESOFLEET_AUDIT_DIR": str(home / "audit"),
        "RESOFLEET_AMQP_URL": broker_url(hosts, host), "RESOFLEET_CONFIG": str(home / "agent.toml"),
    }
    offset = str(CLOCK_OFFSETS[host])
    command = [
        "ip", "netns", "exec", hosts.netns(host),
        "unshare", "--uts", "--time", "--fork", "--monotonic", offset, "--boottime", offset,
        "sh", "-c", f'hostname {host} && exec "$0" -m resofleet agent', sys.executable,
    ]
    hosts.spawn(host, command, env=env, cwd=home)


def start_gateway(hosts: Hosts) -> None:
    home = hosts.root / "gateway"
    port = free_port()
    secret = secrets.token_urlsafe(32)
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "RESOFLEET_AUDIT_DIR": str(home / "audit"),
        "RESOFLEET_AMQP_URL": broker_url(hosts, "gateway"), "RESOFLEET_SECRET": secret,
    }
    hosts.spawn("gateway", [sys.executable, "-m", "resofleet", "gateway", "--port", str(port)], env=env, cwd=home)
    wait_for_port("127.0.0.1", port)
    hosts.gateway_url = f"ws://127.0.0.1:{port}/ws"
    hosts.token = subprocess.run(
        [sys.executable, "-m", "resofleet", "token", "issue", "--role", "admin", "--ttl", "1h"],
        env=env, capture_output=True, text=True, check=True, timeout=WAIT,
    ).stdout.strip()


def stop(hosts: Hosts) -> None:
    """Every process (the ones in the namespaces too: epmd daemonises), then the
    namespaces and the bridge."""
    for process in hosts.processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=WAIT)
    for i, host in enumerate(("broker", "host-a", "host-b"), start=1):
        ns = hosts.netns(host)
        deadline = time.monotonic() + WAIT
        while pids := subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout.split():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        # Deleting our end removes the pair at once, even while the namespace lingers.
        subprocess.run(["ip", "link", "del", f"{hosts.name}{i}"], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", f"{hosts.name}br"], capture_output=True, check=False)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    problem = why_not()
    if problem is not None:
        pytest.skip(problem)
    fleet = load_fleet()
    root = tmp_path_factory.mktemp("multihost")
    env = {
        "COMPOSE_PROJECT_NAME": "multihost", "RESOFLEET_FLEET_DIR": str(root / "rendered"),
        "RESOFLEET_LB_ADDRESS": "127.0.0.1",
        **{f"RESOFLEET_BROKER_{u}_PASSWORD": secrets.token_hex(16)
           for u in ("GATEWAY", "HOST_A", "HOST_B", "NOTIFIER")},
        # the fleet's notifier is not started here; its config is rendered with the rest
        "RESOFLEET_WEBHOOK_URL": "http://127.0.0.1:9/unused", "RESOFLEET_WEBHOOK_SECRET": secrets.token_hex(16),
    }
    made = Hosts(name=f"rfmh{secrets.token_hex(3)}", root=root, env=env)
    try:
        start_network(made, fleet.pick_subnet())
        start_broker(made, fleet.render(env) / "definitions.json")
        for host in SERVERS:
            start_agent(made, host)
        start_gateway(made)
        yield made
    finally:
        stop(made)


async def connect(hosts: Hosts) -> Client:
    return await Client.connect(hosts.gateway_url, additional_headers={"Authorization": f"Bearer {hosts.token}"})


async def every_server_running(client: Client, hosts: Hosts) -> list[dict]:
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            listed = (await client.request({"type": "get_servers"}, WAIT))["servers"]
            running = [s for s in listed if s["online"] and s["status"] == "running"]
            if {s["server"] for s in running} == {s for ids in SERVERS.values() for s in ids}:
                return running
            for key, process in hosts.processes.items():
                assert process.poll() is None, f"{key} exited:\n{hosts.log(key)[-3000:]}"
            await asyncio.sleep(0.2)


async def test_every_server_answers_through_one_gateway_from_two_hosts(hosts: Hosts) -> None:
    """Four servers on two hosts, each listed with its own host's name, each answering a
    command, its worlds and its status through the gateway on this machine."""
    async with await connect(hosts) as client:
        running = await every_server_running(client, hosts)
        assert {s["server"]: s["host"] for s in running} == {
            "a1": "host-a", "a2": "host-a", "b1": "host-b", "b2": "host-b",
        }
        for server in ("a1", "a2", "b1", "b2"):
            reply = await client.request({"type": "command", "command": "users", "server": server}, WAIT)
            assert reply["type"] == "command_response", reply
            worlds = await client.request({"type": "get_worlds", "server": server}, WAIT)
            assert worlds["type"] == "worlds_update" and worlds["output"]
            status = await client.request({"type": "get_status", "server": server}, WAIT)
            assert status["status"]["status"] == "running"


async def test_output_from_another_host_streams_to_the_client(hosts: Hosts) -> None:
    """A command's lines on host-b reach a client of the gateway here, numbered."""
    async with await connect(hosts) as client:
        await every_server_running(client, hosts)
        reply = await client.request({"type": "command", "command": "users", "server": "b2"}, WAIT)
        first = reply["output"].splitlines()[0]
        line = await client.expect(
            lambda m: m["type"] == "container_output" and m["server"] == "b2" and m["output"] == first, WAIT
        )
        assert line["seq"] > 0 and line["epoch"]


def test_each_agent_kept_its_own_clock_hostname_and_paths(hosts: Hosts) -> None:
    """Each agent's readiness answers inside its own namespace; its audit log is in its
    own directory; its clocks are days ahead of this machine's."""
    for host, offset in CLOCK_OFFSETS.items():
        probe = subprocess.run(
            ["ip", "netns", "exec", hosts.netns(host), sys.executable, "-c",
             "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8001/readyz', timeout=5).read().decode())"],
            capture_output=True, text=True, timeout=WAIT, check=False,
        )
        assert probe.stdout.strip() == "ready", probe.stderr
        assert (hosts.root / host / "audit" / "agent.jsonl").exists()
        pid = hosts.processes[host].pid
        agent = next(  # the agent is the python process under unshare
            int(p) for p in subprocess.run(["pgrep", "-s", str(pid), "-f", "resofleet agent"], capture_output=True, text=True, check=False).stdout.split()
        )
        ahead = float(Path(f"/proc/{agent}/timens_offsets").read_text().split()[1])
        assert ahead == offset


async def test_an_agent_host_gone_its_servers_are_offline_at_once(hosts: Hosts) -> None:
    """SIGTERM to host-b's agent: b1 is answered server_offline in well under a second,
    a1 still answers."""
    async with await connect(hosts) as client:
        await every_server_running(client, hosts)
        os.killpg(hosts.processes["host-b"].pid, signal.SIGTERM)
        hosts.processes["host-b"].wait(timeout=WAIT)
        asked = time.monotonic()
        reply = await client.request({"type": "command", "command": "users", "server": "b1"}, WAIT)
        assert (reply["type"], reply.get("code")) == ("error", "server_offline"), reply
        assert time.monotonic() - asked < 1.0
        assert (await client.request({"type": "command", "command": "users", "server": "a1"}, WAIT))["type"] == "command_response"
