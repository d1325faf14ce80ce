"""The compose fleet of deploy/compose.yaml as a test runs it: `deploy/fleet.py up` with an
env file of the test's own (a unique project name, so unique container, network, volume
and image names; a free port on 127.0.0.1; a free subnet), its containers found by their
compose labels, and everything removed at the end, whatever happened.

Images keep their layers between runs (`docker rmi --no-prune`), so a second run builds
nothing; the first builds every image from the local base (a few minutes).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
FLEET: Final = REPO / "deploy" / "fleet.py"
#: Seconds `fleet.py up` may take, the builds included (a cold build fetches Debian
#: packages and wheels).
UP_TIMEOUT: Final = 840.0
#: Seconds for a docker or compose command that only looks or stops.
DOCKER_TIMEOUT: Final = 120.0
#: The project name prefix: every image, container, network and volume a run makes
#: starts with it.
PREFIX: Final = "rftest"


def why_not() -> str | None:
    """Why the stack cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI; run tests/services.sh as root (deploy/dev/docker-engine.sh)"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=DOCKER_TIMEOUT, check=False)
    if info.returncode != 0:
        return f"no Docker engine (`docker info`: {info.stderr.strip().splitlines()[-1:]})"
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=DOCKER_TIMEOUT, check=False)
    if compose.returncode != 0 and shutil.which("docker-compose") is None:
        return "no compose: apt-get install docker-compose (tests/services.sh does it as root)"
    if os.environ.get("RESOFLEET_FLEET_IMAGES") != "official":
        base = os.environ.get("RESOFLEET_DOCKER_BASE_IMAGE") or "resofleet-base:local"
        found = subprocess.run(["docker", "image", "inspect", base], capture_output=True, timeout=DOCKER_TIMEOUT, check=False)
        if found.returncode != 0:
            return (f"no local base image {base} (deploy/dev/docker-engine.sh builds it); "
                    "set RESOFLEET_FLEET_IMAGES=official where a registry answers")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """One compose fleet, started by :meth:`up`, removed by :meth:`down`."""

    def __init__(self, workdir: Path) -> None:
        self.project = f"{PREFIX}{secrets.token_hex(4)}"
        self.port = free_port()
        self.env_file = workdir / "fleet.env"
        self.fleet_dir = workdir / "fleet"
        self.env: dict[str, str] = {}
        self.start_seconds = 0.0
        self.log = ""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def fleet(self, *args: str, timeout: float = DOCKER_TIMEOUT) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RESOFLEET_", "COMPOSE_"))}
        for key in ("RESOFLEET_DOCKER_BASE_IMAGE", "RESOFLEET_FLEET_IMAGES"):
            if key in os.environ:
                env[key] = os.environ[key]
        return subprocess.run(
            [sys.executable, str(FLEET), "--env-file", str(self.env_file), *args],
            env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )

    def up(self) -> None:
        init = self.fleet("init", "--project", self.project, "--port", str(self.port), "--fleet-dir", str(self.fleet_dir))
        assert init.returncode == 0, init.stderr
        # The webhook receiver too (profile "webhooks"), which the notifier posts to.
        with self.env_file.open("a", encoding="utf-8") as file:
            file.write("COMPOSE_PROFILES=webhooks\n")
        self.env = dict(
            line.split("=", 1) for line in self.env_file.read_text().splitlines() if "=" in line and not line.startswith("#")
        )
        started = time.monotonic()
        result = self.fleet("up", "--timeout", "240", timeout=UP_TIMEOUT)
        self.log = result.stderr
        assert result.returncode == 0, f"fleet.py up failed:\n{result.stderr[-4000:]}"
        assert result.stdout.strip() == self.url
        self.start_seconds = time.monotonic() - started
        # What fleet.py measured: "up and every server online N s after `up`" (no builds).
        for line in result.stderr.splitlines():
            if "after `up`" in line:
                self.start_seconds = float(line.rsplit("online ", 1)[1].split(" s")[0])

    def token(self) -> str:
        result = self.fleet("token", "--ttl", "1h")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def container(self, service: str) -> str:
        """The id of ``service``'s container (running or not)."""
        out = docker(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        )
        ids = out.split()
        assert len(ids) == 1, f"{service}: {ids}"
        return ids[0]

    def address(self, service: str) -> str:
        """``service``'s address on the fleet network."""
        return docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", self.container(service)).strip()

    def inspect(self, service: str) -> dict:
        return json.loads(docker("inspect", self.container(service)))[0]

    def down(self) -> None:
        """Remove everything of the project: compose's own way first, then whatever is
        left by label (a failed `up` may leave things compose does not know about), and
        the project's image tags, keeping their layers for the next run."""
        if self.env_file.exists():
            self.fleet("down", timeout=DOCKER_TIMEOUT)
        label = f"label=com.docker.compose.project={self.project}"
        for kind, lister in (("container", ["ps", "-aq"]), ("network", ["network", "ls", "-q"]), ("volume", ["volume", "ls", "-q"])):
            ids = docker(*lister, "--filter", label, check=False).split()
            if ids:
                remove = ["rm", "-f"] if kind == "container" else [kind, "rm"]
                docker(*remove, *ids, check=False)
        tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={self.project}-*", check=False).split()
        if tags:
            docker("rmi", "--no-prune", *tags, check=False)


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=DOCKER_TIMEOUT, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result.stdout
