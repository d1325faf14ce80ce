"""Schedules end to end: an agent runs a configured schedule on an emulated headless, a
WebSocket client watching the server sees ``schedule_run``, the agent's audit log has the
run, and an agent restart never runs the same slot again. Over LocalBus and RabbitMQ with
a clock the test holds; and as real ``resofleet agent`` (RabbitMQ) and ``resofleet up``
(in-process bus) processes on the real clock."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from resofleet.agent.schedules import ScheduleConfig
from resofleet.agent.scheduler import state_path
from resofleet.agent.settings import AgentSettings
from resofleet.bus import AmqpBus
from resofleet.contracts import Role, Topology
from resofleet.gateway import Gateway
from resofleet.gateway.security import Security
from resofleet.gateway.tokens import Keyring, new_secret
from tests.integration.gateway.client import Client, RecordingClient, wait_until
from tests.support.clock import ManualClock

from .agent_cli import start_agent
from .conftest import emulated, servers_online
from .test_commands import START_TIMEOUT, running
from .test_security_cli import env_for

#: A slot of every ``every = "1h"`` schedule: a whole hour, UTC.
SLOT = datetime(2026, 11, 30, 4, tzinfo=timezone.utc).timestamp()
#: Seconds a client waits for a schedule_run the agent sends as soon as the clock moved.
WAIT = 20.0

SAVE = ScheduleConfig(name="hourly-save", servers=("eu-*",), every="1h", action="save")
STATUS = ScheduleConfig(name="hourly-status", servers=("eu-1",), every="1h", action="command",
                        command="status")
#: Added to the file before the agent's restart: runs at the same slot, after the others.
ADDED = ScheduleConfig(name="added-later", servers=("eu-1",), every="1h", action="command",
                       command="worlds")


def bearer(token: str) -> dict:
    return {"additional_headers": {"Authorization": f"Bearer {token}"}}


def is_run(message: dict) -> bool:
    return message.get("type") == "schedule_run"


async def test_a_schedule_runs_once_per_slot_and_clients_see_it(fleet, audit_file, tmp_path):
    """At the slot, both schedules of eu-1 run in the order of the file; the client sees a
    schedule_run for each and the audit log records each. The agent restarts (its file now
    has one more schedule) on a clock put back before the same slot: at the slot only the
    new schedule runs; the two that ran are not run again."""
    audit = await audit_file("agent")
    settings = AgentSettings(name="host-a", state_dir=str(tmp_path / "state"))
    clock = ManualClock(SLOT - 5)
    agent = await fleet.agent(emulated("eu-1"), settings=settings, audit=audit.log,
                              schedules=[SAVE, STATUS], clock=clock)
    gateway = await fleet.gateway()
    client = await fleet.client(gateway.url, cls=RecordingClient)
    await servers_online(client, ["eu-1"])
    await clock.asleep()

    clock.set(SLOT)
    first = await client.expect(is_run, timeout=WAIT)
    second = await client.expect(is_run, timeout=WAIT)
    assert first == {"type": "schedule_run", "server": "eu-1", "schedule": "hourly-save",
                     "action": "save", "slot": SLOT, "outcome": "ok", "detail": "saved 2 worlds"}
    assert (second["schedule"], second["slot"], second["outcome"]) == ("hourly-status", SLOT, "ok")
    assert "Name: " in second["detail"]  # what the console answered `status`

    async def audited() -> list[dict]:
        return [r for r in await audit.records() if r["who"].startswith("schedule:")]

    records = await wait_until(audited, timeout=WAIT, what="the runs audited")
    assert [(r["who"], r["server"], r["command"], r["outcome"], r["slot"]) for r in records] == [
        ("schedule:hourly-save", "eu-1", "schedule save", "ok", "2026-11-30T04:00:00Z"),
        ("schedule:hourly-status", "eu-1", "schedule command status", "ok", "2026-11-30T04:00:00Z"),
    ]

    await agent.close()  # the agent restarts; the gateway and the client stay
    clock = ManualClock(SLOT - 5)  # the same slot comes round again
    await fleet.agent(emulated("eu-1"), settings=settings, audit=audit.log,
                      schedules=[SAVE, STATUS, ADDED], clock=clock)
    await clock.asleep()
    clock.set(SLOT)
    # one server's due schedules are handled in the order of the file, one after another,
    # so had either ran again, its schedule_run would come before this one
    after = await client.expect(is_run, timeout=WAIT)
    assert (after["schedule"], after["slot"], after["outcome"]) == ("added-later", SLOT, "ok")
    runs = client.received(is_run)
    assert [(m["schedule"], m["slot"]) for m in runs] == [
        ("hourly-save", SLOT), ("hourly-status", SLOT), ("added-later", SLOT)]
    assert len(await audited()) == 3


async def test_viewers_in_scope_see_the_runs_and_others_do_not(fleet, tmp_path):
    """schedule_run reaches every client that may see its server, a viewer too, and no
    client whose token's scope leaves the server out."""
    clock = ManualClock(SLOT - 5)
    settings = AgentSettings(name="host-a", state_dir=str(tmp_path / "state"))
    await fleet.agent(emulated("eu-1"), emulated("lab"), settings=settings, schedules=[STATUS], clock=clock)
    keyring = Keyring((new_secret(),))
    gateway = await fleet.gateway(security=Security(keyring=keyring))
    viewer = await fleet.client(gateway.url, cls=RecordingClient, **bearer(
        keyring.issue(role=Role.VIEWER, sub="vic", servers=["eu-*"], ttl=600)))
    other = await fleet.client(gateway.url, cls=RecordingClient, **bearer(
        keyring.issue(role=Role.ADMIN, sub="lab-admin", servers=["lab"], ttl=600)))
    await servers_online(viewer, ["eu-1"])
    await servers_online(other, ["lab"])
    await clock.asleep()
    clock.set(SLOT)
    run = await viewer.expect(is_run, timeout=WAIT)
    assert (run["server"], run["schedule"], run["outcome"]) == ("eu-1", "hourly-status", "ok")
    await other.request({"type": "ping"})  # its stream has caught up past the event
    assert other.received(is_run) == []


async def test_the_agent_command_reads_schedules_and_keeps_their_state(tmp_path, amqp_url):
    """``resofleet agent`` with ``[[schedules]]`` (every 1 s, the real clock): a client
    sees a run, the audit log on disk has it, and the state file names its slot."""
    prefix = f"sched-{uuid.uuid4().hex[:8]}."
    state = tmp_path / "state"
    extra = (f'state_dir = "{state}"\n'
             '[[schedules]]\nname = "tick"\nservers = ["eu-*"]\nevery = "1s"\n'
             'action = "command"\ncommand = "status"\n')
    cli = await start_agent(tmp_path, bus_url=f'"{amqp_url}"', prefix=prefix, extra=extra)
    bus = AmqpBus(amqp_url, topology=Topology(prefix=prefix), name="test-gateway")
    gateway = Gateway(bus, host="127.0.0.1", port=0)
    try:
        await cli.serving()
        await bus.start()
        await gateway.start()
        async with await Client.connect(gateway.url) as client:
            await servers_online(client, ["eu-1"], timeout=START_TIMEOUT)
            run = await client.expect(is_run, timeout=WAIT)
        assert (run["server"], run["schedule"], run["action"], run["outcome"]) == (
            "eu-1", "tick", "command", "ok")
        await cli.stop()
        lines = [json.loads(line) for line in cli.audit.read_text().splitlines()]
        slots = {r["slot"] for r in lines if r["who"] == "schedule:tick" and r["outcome"] == "ok"}
        expected = datetime.fromtimestamp(run["slot"], tz=timezone.utc).isoformat().replace("+00:00", "Z")
        assert expected in slots
        saved = json.loads(state_path(state, "eu-1").read_bytes())
        assert saved["schedules"]["tick"]["done"] >= run["slot"]
    finally:
        await cli.stop()
        await gateway.close()
        await bus.close()


async def test_up_runs_schedules_on_its_demo_server_over_the_in_process_bus(tmp_path):
    """``resofleet up`` with no ``[[servers]]`` manages ``demo``; a schedule naming it runs
    (every 1 s, the real clock), a client sees it, and its slot is in the state file."""
    state = tmp_path / "state"
    config = tmp_path / "up.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{state}"\n[gateway]\naudit_log = false\n'
        '[[schedules]]\nname = "tick"\nservers = ["demo"]\nevery = "1s"\n'
        'action = "command"\ncommand = "status"\n'
    )
    async with running("up", "--config", str(config), "--port", "0", cwd=tmp_path,
                       env=env_for(tmp_path)) as up:
        async with await Client.connect(up.url) as client:
            run = await client.expect(is_run, timeout=START_TIMEOUT)
        assert (run["server"], run["schedule"], run["outcome"]) == ("demo", "tick", "ok")
        assert await up.stop() == 0
    saved = json.loads(state_path(state, "demo").read_bytes())
    assert saved["schedules"]["tick"]["done"] >= run["slot"]
