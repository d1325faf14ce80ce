"""A broker user whose permissions do not cover a server: serving it is refused with a
sentence, and `resofleet agent` stops with one line instead of a traceback.

The test broker gets a vhost and a user of the test's own (rabbitmqctl), whose
permissions cover everything but server `b1`'s command queue, and loses both at the end.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from resofleet.bus import AmqpBus, NotPermitted

pytestmark = pytest.mark.amqp

#: Seconds a rabbitmqctl call may take (it starts an Erlang VM: about a second).
CTL_TIMEOUT = 60
#: Seconds `resofleet agent` has to give up and exit.
EXIT_TIMEOUT = 30


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=CTL_TIMEOUT
    )


@pytest.fixture
def restricted_url(amqp_url: str) -> Iterator[str]:
    """A URL for a user of a vhost of its own who may do everything but serve `b1`."""
    parts = urlsplit(amqp_url)
    if parts.hostname not in ("127.0.0.1", "localhost") or shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl administering the test broker on this machine")
    name = f"perm-{uuid.uuid4().hex[:8]}"
    if rabbitmqctl("add_vhost", name).returncode != 0:
        pytest.skip("rabbitmqctl cannot administer the test broker")
    try:
        assert rabbitmqctl("add_user", name, "secret-pass").returncode == 0
        # everything but the command queue of server b1 (Erlang's re has lookahead)
        allowed = r"^(?!resofleet\.commands\.b1$).*"
        assert rabbitmqctl("set_permissions", "-p", name, name, allowed, ".*", ".*").returncode == 0
        yield f"amqp://{name}:secret-pass@{parts.hostname}:{parts.port or 5672}/{quote(name, safe='')}"
    finally:
        rabbitmqctl("delete_user", name)
        rabbitmqctl("delete_vhost", name)


async def test_serving_a_server_the_user_may_not_is_refused_with_a_sentence(restricted_url: str) -> None:
    """serve('b1') raises NotPermitted naming b1; the same bus still serves a1."""
    bus = AmqpBus(restricted_url)
    await bus.start()
    try:
        with pytest.raises(NotPermitted, match="'b1'"):
            await bus.serve("b1", lambda request, deadline: None)  # type: ignore[arg-type,return-value]
        served = await bus.serve("a1", lambda request, deadline: None)  # type: ignore[arg-type,return-value]
        await served.close()
    finally:
        await bus.close()


async def test_resofleet_agent_stops_with_one_line(restricted_url: str, tmp_path: Path) -> None:
    """`resofleet agent` configured for b1 with that user: exit 1, one line, no traceback."""
    config = tmp_path / "fleet.toml"
    config.write_text(
        f'[bus]\nurl = "{restricted_url}"\n[agent]\nname = "host-a"\naudit_log = false\n'
        '[[servers]]\nid = "b1"\nruntime = "emulator"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resofleet", "agent", "--config", str(config), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(EXIT_TIMEOUT):
        out, err = await process.communicate()
    lines = [line for line in err.decode().splitlines() if line.startswith("resofleet agent:")]
    assert process.returncode == 1, err.decode()
    assert "Traceback" not in err.decode()
    assert len(lines) == 1 and "'b1'" in lines[0] and "permissions" in lines[0], err.decode()
