"""`resofleet notifier` as a child process over a real RabbitMQ: events published while it
is down arrive when it returns, a restart (even with POSTs in flight) sends nothing twice,
and `resofleet up` runs the notifier in process when webhooks are configured.

Durability is a broker matter: these tests run over RabbitMQ only (the in-process bus
lives and dies with its process). The events queue exists from the first time a notifier
starts; events published before that are not kept.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from resofleet.bus import AmqpBus
from resofleet.contracts import Topology
from tests.e2e.test_commands import START_TIMEOUT, STOP_TIMEOUT, resofleet
from tests.e2e.test_security_cli import env_for
from tests.support.lines import LoggedProcess
from tests.support.notices import state
from tests.support.receiver import Receiver
from tests.support.scrape import get, parse

from .conftest import SECRET, delete_queues

pytestmark = pytest.mark.amqp

#: Seconds a test watches for POSTs that must not come.
QUIET = 1.0
READY = b"resofleet: notifier delivering to"


def write_config(tmp_path: Path, receiver: Receiver, *, url: str, prefix: str) -> Path:
    path = tmp_path / "notify.toml"
    path.write_text(
        f'[bus]\nurl = "{url}"\nprefix = "{prefix}"\n'
        '[notifier]\nhealth = "127.0.0.1:0"\n'
        f'[[webhooks]]\nname = "ops"\nurl = "{receiver.url("ops")}"\nsecret_env = "OPS_SECRET"\n'
        'backoff = 0.05\nmax_backoff = 0.2\n'
    )
    return path


class Notifiers:
    """Starts `resofleet notifier` processes on one config and stops them after the test."""

    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.env = env_for(tmp_path, RESOFLEET_CONFIG=str(config), OPS_SECRET=SECRET)
        self.cwd = tmp_path
        self.running: list[LoggedProcess] = []

    async def start(self) -> LoggedProcess:
        process = await asyncio.create_subprocess_exec(
            *resofleet(), "notifier", cwd=self.cwd, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        child = LoggedProcess(process)
        self.running.append(child)
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = await process.stdout.readline()
        assert line.startswith(READY), (line, child.log)
        return child

    async def stop(self, child: LoggedProcess) -> None:
        assert await child.stop(timeout=STOP_TIMEOUT) == 0, child.log
        self.running.remove(child)


@pytest.fixture
async def processes(tmp_path: Path, receiver: Receiver, amqp_url: str, topology: Topology) -> AsyncIterator[Notifiers]:
    config = write_config(tmp_path, receiver, url=amqp_url, prefix=topology.prefix)
    made = Notifiers(tmp_path, config)
    yield made
    for child in made.running:
        await child.kill()
    await delete_queues(amqp_url, topology)


@pytest.fixture
async def agent_bus(amqp_url: str, topology: Topology) -> AsyncIterator[AmqpBus]:
    """A bus standing in for the agents: it publishes their events."""
    bus = AmqpBus(amqp_url, topology=topology, name="test-agents")
    await bus.start()
    yield bus
    await bus.close()


def servers_of(receiver: Receiver) -> Counter[str]:
    return Counter(p.json["server"] for p in receiver.posts["ops"])


async def test_nothing_is_lost_while_the_notifier_is_down(processes: Notifiers, agent_bus, receiver: Receiver):
    """Events published while no notifier runs are all delivered, once, when one starts."""
    await processes.stop(await processes.start())  # the queue exists from the first start
    for i in range(20):
        await agent_bus.publish(state(f"s{i}", "ready"))
    await processes.start()
    await receiver.wait_for("ops", 20)
    await asyncio.sleep(QUIET)
    assert servers_of(receiver) == Counter(f"s{i}" for i in range(20))


async def test_a_restart_with_posts_in_flight_sends_nothing_twice(processes: Notifiers, agent_bus, receiver: Receiver):
    """SIGTERM while the endpoint is slow and notices wait: the POST in progress ends and
    is acknowledged, the rest wait in the queue, and the next process sends each of them
    once; what both processes sent adds up to every event once."""
    receiver.delay["ops"] = 0.1
    first = await processes.start()
    for i in range(30):
        await agent_bus.publish(state(f"s{i}", "ready"))
    await receiver.wait_for("ops", 5)
    await processes.stop(first)
    sent_before = len(receiver.posts["ops"])
    assert sent_before < 30
    await processes.start()
    await receiver.wait_for("ops", 30, timeout=30)
    await asyncio.sleep(QUIET)
    assert servers_of(receiver) == Counter(f"s{i}" for i in range(30))
    assert len({p.delivery for p in receiver.posts["ops"]}) == 30


async def test_two_notifier_processes_send_once(processes: Notifiers, agent_bus, receiver: Receiver):
    """Two processes on the same queues: every event arrives once."""
    await processes.start()
    await processes.start()
    for i in range(40):
        await agent_bus.publish(state(f"s{i}", "ready"))
    await receiver.wait_for("ops", 40)
    await asyncio.sleep(QUIET)
    assert servers_of(receiver) == Counter(f"s{i}" for i in range(40))


async def test_health_and_metrics_endpoint(processes: Notifiers, agent_bus, receiver: Receiver):
    """``[notifier] health`` serves /readyz (ready once it consumes) and /metrics with the
    delivery counters, naming the webhook and never its URL."""
    child = await processes.start()
    line = await child.log.first(lambda text: "health checks and metrics on" in text, timeout=START_TIMEOUT)
    port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
    status, _, _ = await get(port, "/readyz")
    assert status == 200
    await agent_bus.publish(state("eu-1", "ready"))
    await receiver.wait_for("ops", 1)
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            _, _, body = await get(port, "/metrics")
            samples = parse(body.decode())
            if samples.get(("resofleet_notifier_deliveries_total", (("outcome", "ok"), ("webhook", "ops")))) == 1.0:
                break
            await asyncio.sleep(0.05)
    assert samples[("resofleet_notifier_notices_total", (("event", "server_up"),))] == 1.0
    assert receiver.url("ops") not in body.decode()


async def test_up_runs_the_notifier_when_webhooks_are_configured(tmp_path: Path, receiver: Receiver):
    """`resofleet up --demo` with a webhook: the demo server's start arrives as server_up.
    The Discord URL (a credential) is read from a file, as from a mounted secret, and never
    appears in the output."""
    url_file = tmp_path / "chat-url"
    url_file.write_text(receiver.url("chat") + "\n")
    config = tmp_path / "up.toml"
    config.write_text(
        f'[[webhooks]]\nname = "chat"\nurl_file = "{url_file}"\nformat = "discord"\n'
        'events = ["server_up"]\n'
    )
    process = await asyncio.create_subprocess_exec(
        *resofleet(), "up", "--demo", "--port", "0", "--config", str(config), cwd=tmp_path,
        env=env_for(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    child = LoggedProcess(process)
    try:
        (post,) = await receiver.wait_for("chat", 1, timeout=START_TIMEOUT)
        assert post.json["embeds"][0]["title"] == "Server up: demo"
        assert await child.stop(timeout=STOP_TIMEOUT) == 0, child.log
        assert not any(receiver.url("chat") in line for line in child.log.lines)
    finally:
        await child.kill()
