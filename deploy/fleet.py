"""Run the compose fleet of deploy/compose.yaml: what `make fleet`, `make fleet-token` and
`make fleet-down` do.

    python deploy/fleet.py up     [--env-file deploy/.env] [--timeout 300]
    python deploy/fleet.py token  [--env-file deploy/.env] [--ttl 12h]
    python deploy/fleet.py down   [--env-file deploy/.env]
    python deploy/fleet.py init   [--env-file F] [--project P] [--port N] [--fleet-dir D]
    python deploy/fleet.py compose [--env-file F] -- ps     # any compose command, same files

``up`` writes the env file when it is missing (mode 0600: passwords of the broker users,
the token secret, the webhook's signing secret and URL, a free subnet, the Docker
socket's group; see :func:`new_env`; an older env file gets the keys it lacks), renders
the broker's definitions and the services' configuration into the fleet directory
(``deploy/.fleet/`` by default) from the templates in deploy/, builds the images, starts
the stack, waits until the load balancer answers ``/readyz`` and every server is online
and running, and prints the URL on stdout (progress and timings go to stderr).

Images: the official ones (python, rabbitmq, haproxy), unless a local base image is there
(``RESOFLEET_DOCKER_BASE_IMAGE``, else ``resofleet-base:local``, which
deploy/dev/docker-engine.sh makes where no registry answers): then equivalents are built
from it (deploy/compose.local.yaml), and the Python wheels for the builds are fetched on
this host into deploy/wheelhouse/ first, since builds there reach no index. It says which.
``RESOFLEET_FLEET_IMAGES=official|local`` decides instead; the choice is kept in the env
file.

It runs `docker compose` (v2) when there is one, else Debian's `docker-compose` (1.29),
without the caller's RESOFLEET_* and COMPOSE_* variables, so only the env file speaks.
Needs the project installed (the token and the readiness check use it): the Makefile runs
it with the project's virtual environment.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

DEPLOY: Final = Path(__file__).resolve().parent
REPO: Final = DEPLOY.parent
DEFAULT_ENV: Final = DEPLOY / ".env"
COMPOSE_FILE: Final = DEPLOY / "compose.yaml"
LOCAL_FILE: Final = DEPLOY / "compose.local.yaml"
WHEELHOUSE: Final = DEPLOY / "wheelhouse"
#: The local base image deploy/dev/docker-engine.sh builds where no registry answers.
LOCAL_BASE: Final = "resofleet-base:local"
#: The official Python image our images start from elsewhere (deploy/Dockerfile's default).
OFFICIAL_PYTHON: Final = "python:3.12-slim"
#: Where fleet subnets are picked from: /24s of a block Docker's default pools skip.
SUBNET_POOL: Final = ipaddress.ip_network("172.30.0.0/16")
#: The load balancer's fixed host number in the fleet's /24: above the dynamic half.
LB_HOST: Final = 200
#: Seconds `up` waits for the load balancer and every server by default: a cold start
#: builds nothing here (that is before), but RabbitMQ takes a few seconds and each
#: agent synchronises its consoles.
READY_TIMEOUT: Final = 300.0
#: Seconds between readiness checks while waiting.
POLL_INTERVAL: Final = 0.5
#: Seconds compose gives a container to stop before killing it (every process here
#: handles SIGTERM at once; RabbitMQ takes a second or two).
STOP_TIMEOUT: Final = 10
#: Where the notifier POSTs unless the env file says otherwise: the stack's own receiver
#: (deploy/webhook-receiver.py, compose profile "webhooks"), which only logs.
DEFAULT_WEBHOOK_URL: Final = "http://webhook-receiver:8080/resofleet"
#: A template's placeholders: {{NAME}}.
_PLACEHOLDER: Final = re.compile(r"\{\{([A-Z0-9_]+)\}\}")


class FleetError(Exception):
    """Something an operator must fix; printed as one line, exit status 1."""


def say(message: str) -> None:
    print(f"fleet: {message}", file=sys.stderr, flush=True)


# -- the env file --------------------------------------------------------------------------


def read_env(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (comments and blank lines skipped), as compose reads them."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def new_env(*, project: str, port: int, fleet_dir: str, images: str) -> dict[str, str]:
    """A fresh env file's values: new passwords and secret, a free subnet."""
    subnet = pick_subnet()
    hosts = list(subnet.hosts())
    base = (os.environ.get("RESOFLEET_DOCKER_BASE_IMAGE") or LOCAL_BASE) if images == "local" else OFFICIAL_PYTHON
    return {
        "COMPOSE_PROJECT_NAME": project,
        "RESOFLEET_FLEET_PORT": str(port),
        "RESOFLEET_FLEET_DIR": fleet_dir,
        "RESOFLEET_FLEET_IMAGES": images,
        "RESOFLEET_PYTHON_IMAGE": base,
        "RESOFLEET_FLEET_SUBNET": str(subnet),
        "RESOFLEET_FLEET_IP_RANGE": str(next(subnet.subnets(new_prefix=subnet.prefixlen + 1))),
        "RESOFLEET_LB_ADDRESS": str(hosts[LB_HOST - 1]),
        "RESOFLEET_DOCKER_GID": str(docker_socket_gid()),
        "RESOFLEET_SECRET": secrets.token_urlsafe(32),
        "RESOFLEET_BROKER_GATEWAY_PASSWORD": secrets.token_hex(24),
        "RESOFLEET_BROKER_HOST_A_PASSWORD": secrets.token_hex(24),
        "RESOFLEET_BROKER_HOST_B_PASSWORD": secrets.token_hex(24),
        **notifier_env(),
    }


def notifier_env() -> dict[str, str]:
    """The notifier's values: its broker password, the webhook's URL and signing secret
    (the receiver verifies with the same one)."""
    return {
        "RESOFLEET_BROKER_NOTIFIER_PASSWORD": secrets.token_hex(24),
        "RESOFLEET_WEBHOOK_URL": DEFAULT_WEBHOOK_URL,
        "RESOFLEET_WEBHOOK_SECRET": secrets.token_urlsafe(32),
    }


def ensure_env(path: Path, *, project: str = "resofleet", port: int = 8000, fleet_dir: str = "./.fleet") -> dict[str, str]:
    """The env file's values; written first (mode 0600, never readable by others) when
    it is missing."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise FleetError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        values = read_env(path)
        missing = {k: v for k, v in notifier_env().items() if k not in values}
        if missing:  # an env file from before the notifier: add its keys, keep the rest
            with path.open("a", encoding="utf-8") as file:
                file.write("".join(f"{key}={value}\n" for key, value in missing.items()))
            say(f"added {', '.join(missing)} to {path}")
            values.update(missing)
        return values
    images = os.environ.get("RESOFLEET_FLEET_IMAGES") or ("local" if local_base_present() else "official")
    if images not in ("local", "official"):
        raise FleetError(f"RESOFLEET_FLEET_IMAGES must be local or official, not {images!r}")
    values = new_env(project=project, port=port, fleet_dir=fleet_dir, images=images)
    text = "# The compose fleet's settings and secrets, written by deploy/fleet.py. Keep it private.\n"
    text += "".join(f"{key}={value}\n" for key, value in values.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    say(f"wrote {path} (mode 0600): broker passwords, token secret, subnet {values['RESOFLEET_FLEET_SUBNET']}")
    return values


def local_base_present() -> bool:
    image = os.environ.get("RESOFLEET_DOCKER_BASE_IMAGE") or LOCAL_BASE
    return run(["docker", "image", "inspect", image], check=False, quiet=True).returncode == 0


def docker_socket_gid() -> int:
    try:
        return os.stat("/var/run/docker.sock").st_gid
    except OSError as exc:
        raise FleetError(f"no Docker socket at /var/run/docker.sock ({exc.strerror}): is the engine running?") from None


def pick_subnet() -> ipaddress.IPv4Network:
    """A /24 of :data:`SUBNET_POOL` that no Docker network and no host route uses."""
    taken: list[ipaddress.IPv4Network] = []
    ids = run(["docker", "network", "ls", "-q"], quiet=True).stdout.split()
    if ids:
        out = run(["docker", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *ids], quiet=True).stdout
        taken += [ipaddress.ip_network(s, strict=False) for s in out.split() if "." in s]
    with open("/proc/net/route", encoding="ascii") as routes:
        for line in routes.readlines()[1:]:
            fields = line.split()
            dest, mask = (ipaddress.IPv4Address(bytes.fromhex(f)[::-1]) for f in (fields[1], fields[7]))
            if int(dest):  # the default route overlaps everything and matters for nothing here
                taken.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    for candidate in SUBNET_POOL.subnets(new_prefix=24):
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise FleetError(f"no free /24 left in {SUBNET_POOL}")


# -- rendering -----------------------------------------------------------------------------


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def fill(template: Path, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        try:
            return values[match[1]]
        except KeyError:
            raise FleetError(f"{template}: no value for {{{{{match[1]}}}}}") from None

    return _PLACEHOLDER.sub(one, template.read_text(encoding="utf-8"))


def fleet_dir(env: dict[str, str]) -> Path:
    path = Path(env.get("RESOFLEET_FLEET_DIR", "./.fleet"))
    return path if path.is_absolute() else (DEPLOY / path).resolve()


def render(env: dict[str, str]) -> Path:
    """deploy/.fleet/ (or the env file's RESOFLEET_FLEET_DIR): the broker's definitions and
    each service's configuration. The folder is 0700; the files are 0644, for the
    containers' own users (a bind mount exposes the file alone, not the folder)."""
    out = fleet_dir(env)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)
    values = {
        "PROJECT": env["COMPOSE_PROJECT_NAME"],
        "LB_ADDRESS": env["RESOFLEET_LB_ADDRESS"],
        "GATEWAY_HASH": password_hash(env["RESOFLEET_BROKER_GATEWAY_PASSWORD"]),
        "HOST_A_HASH": password_hash(env["RESOFLEET_BROKER_HOST_A_PASSWORD"]),
        "HOST_B_HASH": password_hash(env["RESOFLEET_BROKER_HOST_B_PASSWORD"]),
        "NOTIFIER_HASH": password_hash(env["RESOFLEET_BROKER_NOTIFIER_PASSWORD"]),
        "WEBHOOK_URL": json.dumps(env["RESOFLEET_WEBHOOK_URL"]),  # a quoted TOML string
    }
    files = {
        "definitions.json": DEPLOY / "rabbitmq" / "definitions.json.in",
        "gateway.toml": DEPLOY / "fleet" / "gateway.toml.in",
        "host-a.toml": DEPLOY / "fleet" / "host-a.toml.in",
        "host-b.toml": DEPLOY / "fleet" / "host-b.toml.in",
        "notifier.toml": DEPLOY / "fleet" / "notifier.toml.in",
    }
    for name, template in files.items():
        target = out / name
        target.write_text(fill(template, values), encoding="utf-8")
        target.chmod(0o644)
    return out


def servers(env: dict[str, str]) -> list[str]:
    """Every server id the rendered agents serve."""
    ids: list[str] = []
    for config in sorted(fleet_dir(env).glob("host-*.toml")):
        ids += [s["id"] for s in tomllib.loads(config.read_text(encoding="utf-8")).get("servers", [])]
    return ids


# -- wheels for offline builds -------------------------------------------------------------


def fetch_wheels(base: str) -> None:
    """deploy/wheelhouse/: every dependency of the project (and the build backend) as
    wheels for the base image's Python, fetched with this host's pip and its settings."""
    version = run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", base,
         "-c", "import sys; print(*sys.version_info[:2], sep='.')"],
        quiet=True,
    ).stdout.strip()
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    stamp = WHEELHOUSE / ".stamp"
    key = json.dumps([version, wanted])
    if stamp.exists() and stamp.read_text(encoding="utf-8") == key:
        return
    say(f"fetching wheels for Python {version} into {WHEELHOUSE.relative_to(REPO)} (builds here reach no index)")
    for old in WHEELHOUSE.glob("*.whl"):
        old.unlink()
    command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(WHEELHOUSE)]
    if version != f"{sys.version_info[0]}.{sys.version_info[1]}":
        machine = os.uname().machine
        command += ["--python-version", version, "--implementation", "cp",
                    "--platform", f"manylinux2014_{machine}", "--platform", f"manylinux_2_28_{machine}"]
    run([*command, *wanted], quiet=True)  # pip's progress and its index warnings are noise here
    stamp.write_text(key, encoding="utf-8")


# -- compose -------------------------------------------------------------------------------


def run(command: list[str], *, check: bool = True, quiet: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, env=env, text=True, stdin=subprocess.DEVNULL, check=False,
        stdout=subprocess.PIPE if quiet else sys.stderr, stderr=subprocess.PIPE if quiet else None,
    )
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if quiet else []
        raise FleetError(f"{' '.join(command[:3])} ... failed (exit {result.returncode}){': ' + detail[0] if detail else ''}")
    return result


def compose_cli() -> list[str]:
    """`docker compose` (v2) when the CLI has it, else Debian's `docker-compose`."""
    if run(["docker", "compose", "version"], check=False, quiet=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise FleetError("no compose: install Debian's docker-compose (apt-get install docker-compose) or compose v2")


def compose(env_file: Path, env: dict[str, str], *args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    files = ["-f", str(COMPOSE_FILE)]
    if env.get("RESOFLEET_FLEET_IMAGES") == "local":
        files += ["-f", str(LOCAL_FILE)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RESOFLEET_", "COMPOSE_"))}
    # The legacy builder: it works without buildx and builds RUN steps with --network host.
    clean.update(DOCKER_BUILDKIT="0", COMPOSE_DOCKER_CLI_BUILD="0")
    command = [*compose_cli(), "--env-file", str(env_file), "-p", env["COMPOSE_PROJECT_NAME"], *files, *args]
    return run(command, check=check, quiet=quiet, env=clean)


def url_of(env: dict[str, str]) -> str:
    return f"ws://127.0.0.1:{env['RESOFLEET_FLEET_PORT']}/ws"


def issue_token(env: dict[str, str], *, ttl: str = "12h", sub: str = "fleet-admin") -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RESOFLEET_")}
    clean["RESOFLEET_SECRET"] = env["RESOFLEET_SECRET"]
    result = subprocess.run(
        [sys.executable, "-m", "resofleet", "token", "issue", "--role", "admin", "--ttl", ttl, "--sub", sub],
        env=clean, text=True, capture_output=True, stdin=subprocess.DEVNULL, check=False,
    )
    if result.returncode != 0:
        raise FleetError(f"token issue failed: {result.stderr.strip()}")
    return result.stdout.strip()


def wait_ready(env: dict[str, str], *, timeout: float) -> None:
    """Until the load balancer answers /readyz with 200 and every server is listed online
    and running in get_servers, through the load balancer."""
    from websockets.sync.client import connect

    deadline = time.monotonic() + timeout
    port = env["RESOFLEET_FLEET_PORT"]
    expected = set(servers(env))
    problem = "nothing answered yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError) as exc:
            problem = f"/readyz: {exc}"
        time.sleep(POLL_INTERVAL)
    else:
        raise FleetError(f"the load balancer did not answer /readyz within {timeout:.0f} s ({problem})")
    token = issue_token(env, ttl="10m", sub="fleet-readiness")
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < deadline:
        try:
            with connect(url_of(env), additional_headers=headers, open_timeout=5) as ws:
                while time.monotonic() < deadline:
                    ws.send(json.dumps({"type": "get_servers", "id": 1}))
                    while (reply := json.loads(ws.recv(timeout=5))).get("id") != 1:
                        pass
                    running = {s["server"] for s in reply.get("servers", []) if s.get("online") and s.get("status") == "running"}
                    if expected <= running:
                        return
                    problem = f"waiting for {', '.join(sorted(expected - running))}"
                    time.sleep(POLL_INTERVAL)
        except Exception as exc:  # noqa: BLE001 (a gateway restarting, a refused connection: try again)
            problem = f"{type(exc).__name__}: {exc}"
            time.sleep(POLL_INTERVAL)
    raise FleetError(f"not every server came online within {timeout:.0f} s ({problem})")


# -- commands ------------------------------------------------------------------------------


def up(args: argparse.Namespace) -> None:
    env = ensure_env(args.env_file)
    render(env)
    if env["RESOFLEET_FLEET_IMAGES"] == "local":
        say(f"images: building equivalents of the official python, rabbitmq and haproxy images from {env['RESOFLEET_PYTHON_IMAGE']} (no registry here)")
        fetch_wheels(env["RESOFLEET_PYTHON_IMAGE"])
    else:
        say("images: the official python, rabbitmq and haproxy images")
    started = time.monotonic()
    compose(args.env_file, env, "build")
    built = time.monotonic()
    compose(args.env_file, env, "up", "-d", "--remove-orphans")
    wait_ready(env, timeout=args.timeout)
    ready = time.monotonic()
    say(f"built in {built - started:.1f} s, up and every server online {ready - built:.1f} s after `up`")
    say("admin token: make fleet-token; stop and remove: make fleet-down")
    print(url_of(env), flush=True)


def down(args: argparse.Namespace) -> None:
    if not args.env_file.exists():
        say(f"no {args.env_file}: nothing was started with it")
        return
    env = read_env(args.env_file)
    compose(args.env_file, env, "down", "--volumes", "--remove-orphans", "--timeout", str(STOP_TIMEOUT))
    shutil.rmtree(fleet_dir(env), ignore_errors=True)


def token(args: argparse.Namespace) -> None:
    if not args.env_file.exists():
        raise FleetError(f"no {args.env_file}: run make fleet first")
    print(issue_token(read_env(args.env_file), ttl=args.ttl), flush=True)


def init(args: argparse.Namespace) -> None:
    env = ensure_env(args.env_file, project=args.project, port=args.port, fleet_dir=args.fleet_dir)
    render(env)


def passthrough(args: argparse.Namespace) -> None:
    env = read_env(args.env_file)
    result = compose(args.env_file, env, *args.rest, check=False)
    sys.exit(result.returncode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet.py", description="Run the compose fleet of deploy/compose.yaml.")
    parser.add_argument("--env-file", type=Path, default=DEFAULT_ENV, help="default: deploy/.env")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="build, start, wait until every server is online, print the URL")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT)
    p.set_defaults(func=up)
    sub.add_parser("down", help="remove the containers, networks and volumes").set_defaults(func=down)
    p = sub.add_parser("token", help="print an admin token for the fleet")
    p.add_argument("--ttl", default="12h")
    p.set_defaults(func=token)
    p = sub.add_parser("init", help="write the env file (when missing) and render the configuration")
    p.add_argument("--project", default="resofleet")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--fleet-dir", default="./.fleet")
    p.set_defaults(func=init)
    p = sub.add_parser("compose", help="run a compose command on the fleet's files")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=passthrough)
    args = parser.parse_args(argv)
    if getattr(args, "rest", None) and args.rest[0] == "--":
        args.rest = args.rest[1:]
    try:
        args.func(args)
    except FleetError as exc:
        say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
