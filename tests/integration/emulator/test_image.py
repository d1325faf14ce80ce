"""The emulator's Docker image, built and run on a real Docker engine.

Skipped, with the reason, when no engine answers ``docker info`` (start one with
``sudo bash deploy/dev/docker-engine.sh``). Offline machines build on the local
base named by ``RESOFLEET_DOCKER_BASE_IMAGE``; without it the Dockerfile's
public default is used, and a failed pull skips with the reason.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.emulator.conftest import REPO, Spawn

pytestmark = pytest.mark.docker

DOCKER_INFO_TIMEOUT_S = 20.0
BUILD_TIMEOUT_S = 300.0
"""A cold build on a public base may pull it; a local base builds in about a second."""
READ_TIMEOUT_S = 10.0
"""Container start is ~0.2 s on overlay2 but several seconds on vfs."""
STOP_GRACE = 10
"""Seconds `docker stop` gives the emulator before SIGKILL: stopping sooner shows that it
handled SIGTERM as PID 1."""
BASE_ENV = "RESOFLEET_DOCKER_BASE_IMAGE"
WORLDS = (
    b"[0] Harbor Lounge                   Users: 3\tPresent: 2\tAccessLevel: Anyone\tMaxUsers: 16\n"
    b"[1] Night Market                    Users: 1\tPresent: 0\tAccessLevel: Private\tMaxUsers: 4\n"
)


def _docker(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # DOCKER_BUILDKIT=0: the CLI here has no buildx plugin; the legacy builder works offline.
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "DOCKER_BUILDKIT": "0"})


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


@pytest.fixture(scope="module")
def docker_engine() -> None:
    """Skip the module, saying why, unless `docker info` answers."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client on PATH")
    try:
        result = _docker("info", "--format", "{{.ServerVersion}}", timeout=DOCKER_INFO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"`docker info` did not answer within {DOCKER_INFO_TIMEOUT_S:.0f} s")
    if result.returncode != 0:
        pytest.skip(f"no Docker engine: `docker info` failed ({_last_line(result.stderr)}); "
                    "start one with `sudo bash deploy/dev/docker-engine.sh`")


@pytest.fixture(scope="module")
def image(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Build deploy/emulator.Dockerfile from a context holding only emulator/."""
    context = tmp_path_factory.mktemp("emulator-image")
    shutil.copytree(REPO / "emulator", context / "emulator",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO / "deploy" / "emulator.Dockerfile", context / "Dockerfile")
    tag = f"resofleet-emulator:test-{uuid.uuid4().hex[:10]}"
    command = ["build", "-f", str(context / "Dockerfile"), "-t", tag]
    base = os.environ.get(BASE_ENV)
    if base:
        command += ["--build-arg", f"BASE_IMAGE={base}"]
    result = _docker(*command, str(context), timeout=BUILD_TIMEOUT_S)
    if result.returncode != 0:
        if not base:
            pytest.skip(f"building on the default public base failed ({_last_line(result.stderr)}); "
                        f"set {BASE_ENV} to a local base image (deploy/dev/docker-engine.sh makes one)")
        pytest.fail(f"docker build failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    yield tag
    _docker("rmi", "-f", tag, timeout=60)


async def test_image_runs_the_console_over_pipes(image: str, spawn: Spawn) -> None:
    """`docker run -i` (no TTY): the same exact bytes as the local process; shutdown exits 0."""
    console = await spawn(argv=["docker", "run", "-i", "--rm", "--network", "none", image,
                                "--seed", "1", "--frozen-clock"])
    await console.read_until(b"World running...\nNight Market>", timeout=READ_TIMEOUT_S)
    console.send("worlds", "shutdown")
    await console.expect(WORLDS + b"Night Market>Exiting. Save Homes: False\n",
                         timeout=READ_TIMEOUT_S)
    await console.read_to_eof(timeout=READ_TIMEOUT_S)
    assert await console.wait(timeout=READ_TIMEOUT_S) == 0


def _read_until(sock: socket.socket, buffer: bytearray, marker: bytes) -> bytes:
    deadline = time.monotonic() + READ_TIMEOUT_S
    while marker not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
            raise AssertionError(f"{marker!r} never came; got {bytes(buffer[-2000:])!r}")
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"stream ended before {marker!r}; got {bytes(buffer[-2000:])!r}")
        buffer += chunk
    end = buffer.index(marker) + len(marker)
    data = bytes(buffer[:end])
    del buffer[:end]
    return data


def test_image_with_a_real_tty_echoes_once_with_crlf(image: str) -> None:
    """tty + stdin_open, as compose runs headless images: the kernel's echo and CRLF, not doubled."""
    docker = pytest.importorskip("docker")
    client = docker.from_env()
    container = client.containers.create(image, ["--seed", "1", "--frozen-clock"], tty=True,
                                         stdin_open=True, network_mode="none")
    try:
        attached = container.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
        sock: socket.socket = attached._sock
        container.start()
        buffer = bytearray()
        startup = _read_until(sock, buffer, b"World running...\r\nNight Market>")
        assert b"\n" not in startup.replace(b"\r\n", b"")
        sock.sendall(b"worlds\n")
        expected = b"worlds\r\n" + WORLDS.replace(b"\n", b"\r\n") + b"Night Market>"
        assert _read_until(sock, buffer, b"Night Market>") == expected
        sock.sendall(b"shutdown\n")
        _read_until(sock, buffer, b"Shutting down\r\n")
        assert container.wait(timeout=READ_TIMEOUT_S)["StatusCode"] == 0
        sock.close()
    finally:
        container.remove(force=True)
        client.close()


def test_image_stops_fast_on_sigterm(image: str) -> None:
    """`docker stop` ends the emulator (PID 1) at once with 143, not after the kill timeout."""
    result = _docker("run", "-d", "-i", "--network", "none", image, timeout=60)
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    try:
        # Wait for the startup log (printed after the handler is set): a signal that lands
        # before Python set it is ignored by a PID 1, which must not pass for a bug. The
        # prompt itself never reaches `docker logs`, which keeps only complete lines.
        deadline = time.monotonic() + READ_TIMEOUT_S
        while subprocess.run(["docker", "logs", container_id], capture_output=True,
                             timeout=30).stdout.count(b"World running...\n") < 2:
            assert time.monotonic() < deadline, "the emulator never finished starting"
            time.sleep(0.05)
        started = time.monotonic()
        stopped = _docker("stop", "-t", str(STOP_GRACE), container_id, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert time.monotonic() - started < STOP_GRACE  # SIGTERM handled, no SIGKILL needed
        code = _docker("inspect", "-f", "{{.State.ExitCode}}", container_id, timeout=30)
        assert code.stdout.strip() == "143"
    finally:
        _docker("rm", "-f", container_id, timeout=60)
