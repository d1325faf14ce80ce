"""A real Prometheus scrapes a real `resofleet up` and sees what the test did.

`resofleet up` (gateway and agent in one process, two emulated servers) serves both
metric registries on the gateway's port. Debian's Prometheus scrapes it every second;
after known traffic the test asks Prometheus's own HTTP API for the request counters,
the request histogram and the per-server gauges, and compares them with what it sent and
with what the gateway itself answers.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_commands import START_TIMEOUT, clean_env, resofleet
from tests.integration.gateway.client import Client

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="no prometheus here (tests/services.sh installs Debian's package as root)"
)
#: Seconds Prometheus has to start, and to show a scrape taken after the traffic.
WAIT = 30.0
SERVERS = ("p-1", "p-2")
COMMANDS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read())


@pytest.fixture
def up(tmp_path: Path) -> Iterator[str]:
    """`resofleet up` with two emulated servers; its ws:// URL."""
    config = tmp_path / "fleet.toml"
    config.write_text(
        '[agent]\nname = "prom-host"\naudit_log = false\nstatus_interval = 0.5\nworlds_interval = 0.5\n'
        + "".join(f'[[servers]]\nid = "{s}"\nruntime = "emulator"\n' for s in SERVERS)
    )
    process = subprocess.Popen(
        [*resofleet(), "up", "--port", "0", "--config", str(config)], cwd=tmp_path,
        env=clean_env(RESOFLEET_AUDIT_DIR=str(tmp_path / "audit")), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert " listening on " in line, line
        yield line.split(" on ", 1)[1].split()[0]
    finally:
        process.terminate()
        try:
            process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def prometheus(tmp_path: Path, up: str) -> Iterator[str]:
    """Prometheus scraping the gateway's /metrics every second; its base URL."""
    target = urllib.parse.urlsplit(up).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        "scrape_configs:\n  - job_name: resofleet\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                targets = http_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
                if targets and targets[0]["health"] == "up":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus never scraped the gateway"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def query(base: str, expression: str) -> dict[str, float]:
    """An instant query: the value of each series, keyed by its `server` (or "")."""
    data = http_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expression})}")["data"]
    return {r["metric"].get("server", ""): float(r["value"][1]) for r in data["result"]}


async def eventually(base: str, expression: str, expected: dict[str, float]) -> dict[str, float]:
    """Wait until Prometheus holds ``expected`` for ``expression`` (a scrape after the traffic)."""
    async with asyncio.timeout(WAIT):
        while True:
            found = await asyncio.to_thread(query, base, expression)
            if found == expected:
                return found
            await asyncio.sleep(0.3)


async def test_prometheus_sees_the_requests_sent_and_the_servers_as_they_are(up: str, prometheus: str) -> None:
    async with await Client.connect(up) as client:
        for server in SERVERS:  # each console answered: the servers are up
            assert (await client.request({"type": "get_status", "server": server}))["type"] == "status_update"
        for i in range(COMMANDS):
            reply = await client.request({"type": "command", "command": "version", "server": SERVERS[i % 2]})
            assert reply["type"] == "command_response"
        users = {
            server: float(sum(w["users"] for w in (await client.request({"type": "get_worlds", "server": server}))["output"]))
            for server in SERVERS
        }

    await eventually(prometheus, 'resofleet_gateway_requests_total{type="command",outcome="ok"}', {"": COMMANDS})
    await eventually(prometheus, 'resofleet_gateway_request_seconds_count{type="command"}', {"": COMMANDS})
    await eventually(prometheus, "resofleet_server_up", {s: 1.0 for s in SERVERS})
    await eventually(prometheus, "resofleet_server_users", users)
    cpu = await asyncio.to_thread(query, prometheus, "resofleet_server_cpu_usage")
    assert set(cpu) == set(SERVERS) and all(value >= 0 for value in cpu.values())
    viewer_class = await asyncio.to_thread(
        query, prometheus, 'sum by (server) (resofleet_console_command_seconds_count{class="viewer"})'
    )
    assert sum(viewer_class.values()) == COMMANDS
