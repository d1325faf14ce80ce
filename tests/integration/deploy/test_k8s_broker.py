"""The broker users of deploy/k8s, for real: the StatefulSet broker's init script, and its
definitions imported into a real RabbitMQ.

The init script (render-definitions.sh, from the rendered ConfigMap) runs under /bin/sh as
it would in the pod. Its output is then imported into the test broker (``rabbitmqctl
import_definitions``) under a vhost and user names of the test's own, and the gateway's
and the agent's buses, logged in as those users, do what they do in a fleet: serve,
request, publish, subscribe, announce. What each user must not do is refused by the
broker. The vhost and users are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import aio_pika
import pytest

from resofleet.bus import AmqpBus
from resofleet.contracts import (
    Announce,
    BusEvent,
    BusReply,
    BusRequest,
    CommandResponse,
    ContainerOutputBatch,
    Discover,
    OutputLine,
    RunCommand,
)

from resofleet.notifier import Notifier, NotifierSettings, WebhookSettings
from tests.integration.notifier.conftest import SECRET
from tests.support.notices import state
from tests.support.receiver import Receiver

from .k8s import configmap_files, kubectl, render, secret_value

pytestmark = pytest.mark.skipif(
    kubectl() is None,
    reason="needs kubectl for `kubectl kustomize`: Debian's kubernetes-client "
    "(tests/services.sh installs it as root) or $RESOFLEET_KUBECTL",
)

#: Seconds a rabbitmqctl call may take (about 1 s: it starts an Erlang VM).
RABBITMQCTL_TIMEOUT: Final = 60.0
#: Seconds the users may take to appear after the import (which the broker runs on its
#: own after rabbitmqctl returns; tens of milliseconds here).
IMPORT_TIMEOUT: Final = 15.0
#: Seconds a bus operation of this test may take (all are round trips on loopback).
STEP_TIMEOUT: Final = 10.0
USERS: Final = {
    "GATEWAY_USER": "gw", "GATEWAY_PASSWORD": "Gw.pass_1~x-",
    "AGENT_USER": "ag", "AGENT_PASSWORD": "Ag.pass_2~y-",
    "NOTIFIER_USER": "nt", "NOTIFIER_PASSWORD": "Nt.pass_3~z-",
}


def run_definitions_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run render-definitions.sh, as rendered into the broker's ConfigMap, with /bin/sh."""
    objects = render("rabbitmq/statefulset")
    for key in ("definitions.json", "render-definitions.sh"):
        ((_, text),) = configmap_files(objects, key).items()
        (tmp_path / key).write_text(text)
    return subprocess.run(
        ["sh", str(tmp_path / "render-definitions.sh")],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DEFINITIONS_TEMPLATE": str(tmp_path / "definitions.json"),
            "DEFINITIONS_OUT": str(tmp_path / "out.json"),
            **env,
        },
        capture_output=True, text=True, timeout=30, check=False,
    )


# -- the init script -------------------------------------------------------------------------


def test_definitions_script_fills_in_the_users(tmp_path: Path) -> None:
    """The broker's init script writes valid definitions with the Secrets' users."""
    done = run_definitions_script(tmp_path, **USERS)
    assert done.returncode == 0, done.stderr
    definitions = json.loads((tmp_path / "out.json").read_text())
    assert {(u["name"], u["password"]) for u in definitions["users"]} == {
        ("gw", "Gw.pass_1~x-"), ("ag", "Ag.pass_2~y-"), ("nt", "Nt.pass_3~z-")
    }
    assert {p["user"] for p in definitions["permissions"]} == {"gw", "ag", "nt"}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"AGENT_PASSWORD": "REPLACE-ME-agent-password"}, "placeholder"),
        ({"GATEWAY_PASSWORD": 'pa"ss'}, "GATEWAY_PASSWORD may hold only"),
        ({"GATEWAY_PASSWORD": "p/ss"}, "GATEWAY_PASSWORD may hold only"),
        ({"AGENT_USER": ""}, "AGENT_USER is empty"),
        ({"AGENT_USER": "gw"}, "must differ"),
        ({"NOTIFIER_PASSWORD": "REPLACE-ME-notifier-password"}, "placeholder"),
        ({"NOTIFIER_USER": ""}, "NOTIFIER_USER is empty"),
        ({"NOTIFIER_USER": "ag"}, "notifier user must differ"),
    ],
)
def test_definitions_script_refuses_what_it_cannot_write(
    tmp_path: Path, change: dict[str, str], says: str
) -> None:
    """A placeholder, a character needing escapes, an empty or shared user: the broker does
    not start, and says why in one line."""
    done = run_definitions_script(tmp_path, **{**USERS, **change})
    assert done.returncode == 1
    assert says in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "out.json").exists()


def test_example_broker_passwords_are_refused_by_the_script(tmp_path: Path) -> None:
    """The broker Secrets as committed do not start the StatefulSet broker."""
    objects = render("overlays/example")
    env = {
        f"{role.upper()}_{var}": secret_value(objects, f"resofleet-broker-{role}", field)
        for role in ("gateway", "agent", "notifier")
        for field, var in (("username", "USER"), ("password", "PASSWORD"))
    }
    done = run_definitions_script(tmp_path, **env)
    assert done.returncode == 1 and "placeholder" in done.stderr
    real = {k: v.replace("REPLACE-ME", "real") for k, v in env.items()}
    for role in ("GATEWAY", "AGENT", "NOTIFIER"):  # each placeholder alone stops it
        done = run_definitions_script(tmp_path, **{**real, f"{role}_PASSWORD": env[f"{role}_PASSWORD"]})
        assert done.returncode == 1 and "placeholder" in done.stderr, role
    assert run_definitions_script(tmp_path, **real).returncode == 0


# -- the definitions in a real broker --------------------------------------------------------


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("rabbitmqctl")
    assert tool is not None
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT, check=False
    )


@pytest.fixture
def broker_address() -> str:
    """host:port of a broker this machine administers with rabbitmqctl (the test broker)."""
    url = os.environ.get("RESOFLEET_AMQP_URL")
    if not url:
        pytest.skip("needs the test broker: set RESOFLEET_AMQP_URL (tests/services.sh does)")
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip(f"rabbitmqctl administers the local node; RESOFLEET_AMQP_URL is {parts.hostname}")
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl (Debian's rabbitmq-server) to import definitions")
    status = rabbitmqctl("-q", "list_vhosts")
    if status.returncode != 0:
        pytest.skip(f"rabbitmqctl cannot administer the broker: {status.stderr.strip()[:200]}")
    return f"{parts.hostname}:{parts.port or 5672}"


@pytest.fixture
def imported(tmp_path: Path, broker_address: str) -> Iterator[dict[str, str]]:
    """The k8s definitions, with users and a vhost of this test's own, imported into the
    test broker; yields the two users' URLs. Deleted afterwards, even on failure."""
    tag = f"k8stest-{uuid.uuid4().hex[:10]}"
    users = {
        "GATEWAY_USER": f"{tag}-gateway", "GATEWAY_PASSWORD": secrets.token_urlsafe(18),
        "AGENT_USER": f"{tag}-agent", "AGENT_PASSWORD": secrets.token_urlsafe(18),
        "NOTIFIER_USER": f"{tag}-notifier", "NOTIFIER_PASSWORD": secrets.token_urlsafe(18),
    }
    done = run_definitions_script(tmp_path, **users)
    assert done.returncode == 0, done.stderr
    definitions = json.loads((tmp_path / "out.json").read_text())
    for vhost in definitions["vhosts"]:
        vhost["name"] = tag
    for permission in definitions["permissions"]:
        permission["vhost"] = tag
    # rabbitmqctl may run as the broker's user, who cannot read tmp_path (nor, in
    # RabbitMQ 3.10, stdin): a file of its own that anyone may read, removed at once.
    handle, path = tempfile.mkstemp(prefix=f"{tag}-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(definitions, file)
        os.chmod(path, 0o644)
        result = rabbitmqctl("import_definitions", path)
        os.unlink(path)
        assert result.returncode == 0, result.stderr
        yield {
            role: f"amqp://{users[f'{role.upper()}_USER']}:{users[f'{role.upper()}_PASSWORD']}"
            f"@{broker_address}/{tag}"
            for role in ("gateway", "agent", "notifier")
        }
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        rabbitmqctl("delete_vhost", tag)
        for user in (users["GATEWAY_USER"], users["AGENT_USER"], users["NOTIFIER_USER"]):
            rabbitmqctl("delete_user", user)


async def wait_until_login_works(url: str) -> None:
    """The import finishes in the broker after rabbitmqctl returns: wait for the login."""
    async with asyncio.timeout(IMPORT_TIMEOUT):
        while True:
            try:
                connection = await aio_pika.connect(url, timeout=STEP_TIMEOUT)
            except aio_pika.exceptions.AMQPConnectionError:
                await asyncio.sleep(0.1)  # polling the broker: the import has no event to wait on
                continue
            await connection.close()
            return


@pytest.fixture
async def buses(imported: dict[str, str]) -> AsyncIterator[tuple[AmqpBus, AmqpBus]]:
    """(gateway's bus, agent's bus), each logged in as its k8s broker user."""
    for url in imported.values():
        await wait_until_login_works(url)  # the notifier's too, for the tests below
    made: list[AmqpBus] = []
    try:
        for role in ("gateway", "agent"):
            bus = AmqpBus(imported[role], name=f"k8s-{role}")
            await bus.start()
            made.append(bus)
        yield made[0], made[1]
    finally:
        for bus in reversed(made):
            with contextlib.suppress(Exception):
                await bus.close()


async def echo(request: BusRequest, deadline: float) -> BusReply:
    assert isinstance(request.body, RunCommand)
    return BusReply(body=CommandResponse(command=request.body.command, output="ok", server=request.server))


@pytest.mark.amqp
async def test_broker_users_can_do_what_a_fleet_does(buses: tuple[AmqpBus, AmqpBus]) -> None:
    """Logged in as the k8s users, an agent serves and publishes, a gateway requests and
    subscribes, and both see each other's presence messages."""
    gateway, agent = buses
    async with asyncio.timeout(STEP_TIMEOUT):
        await agent.serve("k8s-1", echo)
        reply = await gateway.request(BusRequest(server="k8s-1", body=RunCommand(command="worlds"), timeout=5.0))
        assert reply.body == CommandResponse(command="worlds", output="ok", server="k8s-1")

        events = await gateway.subscribe(["k8s-1.*"])
        batch = ContainerOutputBatch(server="k8s-1", epoch="e1", lines=[OutputLine(seq=1, output="hello")])
        await agent.publish(BusEvent(server="k8s-1", kind="output", body=batch))
        assert (await events.get()).body == batch

        heard_by_agent, heard_by_gateway = await agent.presence(), await gateway.presence()
        await gateway.broadcast(Discover(gateway="g1"))
        assert isinstance(await heard_by_agent.get(), Discover)
        await agent.broadcast(Announce(agent="a1", host="pod-0", servers=[], interval=2.0))
        while not isinstance(await heard_by_gateway.get(), Announce):  # its own Discover first
            pass


@pytest.mark.amqp
async def test_gateway_user_cannot_serve_a_server(buses: tuple[AmqpBus, AmqpBus]) -> None:
    """A gateway's broker user cannot take a server's command queue: a stolen gateway
    credential does not let anyone answer for a headless."""
    gateway, _ = buses
    with pytest.raises(Exception, match="ACCESS_REFUSED"):
        async with asyncio.timeout(STEP_TIMEOUT):
            await gateway.serve("k8s-1", echo)


@pytest.mark.amqp
async def test_agent_user_cannot_send_requests(imported: dict[str, str]) -> None:
    """An agent's broker user cannot publish to the commands exchange: a compromised
    headless pod cannot command the other servers."""
    await wait_until_login_works(imported["agent"])
    connection = await aio_pika.connect(imported["agent"], timeout=STEP_TIMEOUT)
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            channel = await connection.channel(publisher_confirms=True)
            with pytest.raises(Exception, match="ACCESS_REFUSED"):
                exchange = await channel.get_exchange("resofleet.requests", ensure=False)
                await exchange.publish(aio_pika.Message(b"{}"), routing_key="k8s-1", mandatory=True)
    finally:
        await connection.close()


@pytest.mark.amqp
async def test_the_notifier_user_delivers_an_agents_server_down(buses: tuple[AmqpBus, AmqpBus], imported: dict[str, str]) -> None:
    """Logged in as the k8s notifier user, a notifier declares its durable queues, binds
    the events and presence, and POSTs an agent's server_down (signed) to a receiver."""
    _, agent = buses
    receiver = Receiver()
    await receiver.start()
    bus = AmqpBus(imported["notifier"], name="k8s-notifier")
    hook = WebhookSettings(name="ops", url=receiver.url("ops"), secret=SECRET, backoff=0.05, max_backoff=0.2)
    notifier = Notifier(bus, webhooks=[hook], secrets={"ops": SECRET}, settings=NotifierSettings(), name="k8s-notifier")
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            await bus.start()
            await notifier.start()
            await agent.publish(state("k8s-1", "crashed"))
            (post,) = await receiver.wait_for("ops", 1)
        assert (post.json["event"], post.json["server"]) == ("server_down", "k8s-1")
        with pytest.raises(Exception, match="ACCESS_REFUSED"):  # it cannot pose as an agent
            async with asyncio.timeout(STEP_TIMEOUT):
                await bus.serve("k8s-1", echo)
    finally:
        await notifier.close()
        await bus.close()
        await receiver.close()

