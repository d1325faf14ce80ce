"""A fleet made only of `resofleet` processes, as a hosting provider runs one: an agent, a
gateway and the token commands, sharing a broker under their own `[bus] prefix`."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from resofleet.gateway.tokens import new_secret
from tests.integration.gateway.client import Client, handshake_status, wait_until

from .test_commands import START_TIMEOUT, resofleet
from .test_security_cli import env_for, issue, run_to_exit, started

pytestmark = pytest.mark.amqp


async def test_agent_gateway_and_revoke_as_processes_under_one_prefix(tmp_path: Path, amqp_url: str) -> None:
    """An operator token reaches the agent's server through the gateway; `token revoke`
    closes its connection with 4403 and the token is refused from then on."""
    prefix = f"procs-{uuid.uuid4().hex[:8]}."
    secret = new_secret()
    config = tmp_path / "fleet.toml"
    config.write_text(
        f'[bus]\nurl = "{amqp_url}"\nprefix = "{prefix}"\n'
        '[agent]\nname = "host-a"\naudit_log = false\n'
        '[[servers]]\nid = "eu-1"\nruntime = "emulator"\n'
    )
    env = env_for(tmp_path, RESOFLEET_SECRET=secret, RESOFLEET_CONFIG=str(config))
    agent = await asyncio.create_subprocess_exec(
        *resofleet(), "agent", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert agent.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = await agent.stdout.readline()
        assert b"serving eu-1" in line, line
        async with started("gateway", "--port", "0", cwd=tmp_path, env=env) as gateway:
            token = await issue(tmp_path, secret, "operator")
            client = await Client.connect(gateway.url, additional_headers={"Authorization": f"Bearer {token}"})

            async def listed() -> bool:
                reply = await client.request({"type": "get_servers"})
                return [s["server"] for s in reply["servers"] if s["online"]] == ["eu-1"]

            await wait_until(listed, timeout=START_TIMEOUT, what="eu-1 online through the gateway")
            reply = await client.request({"type": "command", "command": "version", "server": "eu-1"})
            assert reply["type"] == "command_response" and reply["output"], reply

            code, out, err = await run_to_exit("token", "revoke", token, cwd=tmp_path, env=env)
            assert code == 0, err
            assert await client.closed() == 4403
            status = await handshake_status(gateway.url, additional_headers={"Authorization": f"Bearer {token}"})
            assert status == 401
    finally:
        if agent.returncode is None:
            agent.terminate()
            async with asyncio.timeout(START_TIMEOUT):
                await agent.wait()
