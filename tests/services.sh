#!/usr/bin/env bash
# Make sure the real services the tests use are running, then print the environment the
# tests read, as `export NAME=value` lines (the Makefile evals them).
#  - RabbitMQ on 127.0.0.1:5672 (started with `rabbitmq-server -detached` when silent),
#    unless RESOFLEET_AMQP_URL already points elsewhere;
#  - a Docker engine and a local base image, where the machine can run one
#    (deploy/dev/docker-engine.sh); without it the Docker tests skip and say why.
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
exit 0
