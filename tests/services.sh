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

# apt_install PACKAGE COMMAND WHAT: install Debian's PACKAGE (as root) unless COMMAND is
# there already; WHAT names the tests that need it, which skip and say why without it.
apt_install() {
    local package=$1 command=$2 what=$3
    command -v "$command" >/dev/null && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "services: no $command and cannot apt-get $package (needs root); $what will be skipped" >&2
        return 1
    fi
    local log=/var/log/resofleet-$package-apt.log t0
    t0=$(date +%s)
    echo "services: installing $package for $what (apt log: $log)" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Another apt (the docker step, another test run) may hold the dpkg lock a while.
    local apt_=(apt-get -q -o DPkg::Lock::Timeout=300)
    local install=("${apt_[@]}" install -y --no-install-recommends "$package")
    if ! "${install[@]}" >"$log" 2>&1; then
        # Stale or missing package lists: refresh them once, then try again.
        "${apt_[@]}" update >>"$log" 2>&1 && "${install[@]}" >>"$log" 2>&1
    fi
    if command -v "$command" >/dev/null; then
        echo "services: $package installed in $(( $(date +%s) - t0 )) s" >&2
    else
        echo "services: could not install $package ($(grep -E '^E:' "$log" | tail -n 1)); $what will be skipped" >&2
        return 1
    fi
}

# Debian's chromium, driven by Playwright in the browser tests (Playwright's own browser
# download needs the internet; apt does not). About 100 MB with its libraries.
CHROMIUM=/usr/bin/chromium
if [ -z "${RESOFLEET_NO_BROWSER:-}" ] && apt_install chromium "$CHROMIUM" "the browser tests"; then
    echo "services: chromium for the browser tests: $CHROMIUM" >&2
    echo "export RESOFLEET_CHROMIUM=$CHROMIUM"
fi

# kubectl for the Kubernetes manifest tests (`kubectl kustomize`; there is no cluster: the
# tests render deploy/k8s and validate it offline). Any kubectl on PATH will do; without
# one, Debian's kubernetes-client.
if [ -z "${RESOFLEET_NO_KUBECTL:-}" ] && apt_install kubernetes-client kubectl "the manifest tests"; then
    echo "services: kubectl for the manifest tests: $(command -v kubectl)" >&2
fi

# promtool, from Debian's prometheus package, for the Prometheus files' tests
# (tests/integration/deploy/test_prometheus.py: `promtool check config`, `check rules`,
# `test rules` on deploy/prometheus/). About 100 MB; the package's own service is not used.
if [ -z "${RESOFLEET_NO_PROMETHEUS:-}" ] && apt_install prometheus promtool "the Prometheus file tests"; then
    echo "services: promtool for the Prometheus file tests: $(command -v promtool)" >&2
fi

# Debian's docker-compose (1.29) for the compose fleet and its end-to-end test
# (tests/e2e/test_compose_fleet.py; `make fleet`), where a Docker engine runs and no
# compose v2 is there.
if [ -z "${RESOFLEET_NO_DOCKER:-}" ] && [ -S /var/run/docker.sock ] \
        && ! docker compose version >/dev/null 2>&1; then
    apt_install docker-compose docker-compose "the compose fleet test" || true
fi
exit 0
