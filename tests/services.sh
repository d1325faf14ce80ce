#!/usr/bin/env bash
# Make sure the real services the tests use are running, then print the environment the
# tests read, as `export NAME=value` lines (the Makefile evals them).
#  - RabbitMQ on 127.0.0.1:5672 (started with `rabbitmq-server -detached` when silent),
#    unless RESOFLEET_AMQP_URL already points elsewhere;
#  - a Docker engine and a local base image, where the machine can run one
#    (deploy/dev/docker-engine.sh); without it the Docker tests skip and say why;
#  - Debian's chromium for the browser tests (apt-get, as root), unless
#    RESOFLEET_NO_BROWSER=1; without it the browser tests skip and say why.
# Progress goes to stderr; only the exports go to stdout.
set -uo pipefail
cd "$(dirname "$0")/.."

port_open() {
    python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()' "$1" "$2" 2>/dev/null
}

if [ -z "${RESOFLEET_AMQP_URL:-}" ]; then
    if ! port_open 127.0.0.1 5672; then
        if command -v rabbitmq-server >/dev/null; then
            echo "services: starting RabbitMQ (rabbitmq-server -detached)" >&2
            rabbitmq-server -detached >&2 || true
            for _ in $(seq 1 120); do port_open 127.0.0.1 5672 && break; sleep 1; done
        fi
    fi
    if port_open 127.0.0.1 5672; then
        echo "services: RabbitMQ is listening on 127.0.0.1:5672" >&2
        echo "export RESOFLEET_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/"
    else
        echo "services: no RabbitMQ on 127.0.0.1:5672; AMQP tests will try testcontainers or skip" >&2
    fi
fi

if [ -z "${RESOFLEET_NO_DOCKER:-}" ] && [ -x deploy/dev/docker-engine.sh ]; then
    if out=$(deploy/dev/docker-engine.sh 2> >(cat >&2)); then
        printf '%s\n' "$out" | grep '^RESOFLEET_DOCKER_BASE_IMAGE=' | tail -n 1 | sed 's/^/export /'
    else
        echo "services: no Docker engine here; the Docker tests will be skipped with the reason" >&2
    fi
fi

# Debian's chromium, driven by Playwright in the browser tests (Playwright's own browser
# download needs the internet; apt does not). About 100 MB with its libraries.
CHROMIUM=/usr/bin/chromium
if [ -z "${RESOFLEET_NO_BROWSER:-}" ] && [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log=/var/log/resofleet-chromium-apt.log
        echo "services: installing chromium for the browser tests (apt log: $log)" >&2
        t0=$(date +%s)
        export DEBIAN_FRONTEND=noninteractive
        # Another apt (the docker step, another test run) may hold the dpkg lock a while.
        apt_=(apt-get -q -o DPkg::Lock::Timeout=300)
        install=("${apt_[@]}" install -y --no-install-recommends chromium)
        if ! "${install[@]}" >"$log" 2>&1; then
            # Stale or missing package lists: refresh them once, then try again.
            "${apt_[@]}" update >>"$log" 2>&1 && "${install[@]}" >>"$log" 2>&1
        fi
        if [ -x "$CHROMIUM" ]; then
            echo "services: chromium installed in $(( $(date +%s) - t0 )) s" >&2
        else
            echo "services: could not install chromium ($(grep -E '^E:' "$log" | tail -n 1)); the browser tests will be skipped" >&2
        fi
    else
        echo "services: no $CHROMIUM and cannot apt-get it (needs root); the browser tests will be skipped" >&2
    fi
fi
if [ -z "${RESOFLEET_NO_BROWSER:-}" ] && [ -x "$CHROMIUM" ]; then
    echo "services: chromium for the browser tests: $CHROMIUM" >&2
    echo "export RESOFLEET_CHROMIUM=$CHROMIUM"
fi

# Debian's docker-compose (1.29) for the compose fleet and its end-to-end test
# (tests/e2e/test_compose_fleet.py; `make fleet`), where a Docker engine runs and no
# compose is there. Without it that test skips and says why.
if [ -z "${RESOFLEET_NO_DOCKER:-}" ] && [ -S /var/run/docker.sock ] \
        && ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log=/var/log/resofleet-compose-apt.log
        echo "services: installing docker-compose for the compose fleet test (apt log: $log)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt_=(apt-get -q -o DPkg::Lock::Timeout=300)
        install=("${apt_[@]}" install -y --no-install-recommends docker-compose)
        if ! "${install[@]}" >"$log" 2>&1; then
            "${apt_[@]}" update >>"$log" 2>&1 && "${install[@]}" >>"$log" 2>&1
        fi
        command -v docker-compose >/dev/null \
            || echo "services: could not install docker-compose ($(grep -E '^E:' "$log" | tail -n 1)); the compose fleet test will be skipped" >&2
    else
        echo "services: no docker-compose and cannot apt-get it (needs root); the compose fleet test will be skipped" >&2
    fi
fi
exit 0
