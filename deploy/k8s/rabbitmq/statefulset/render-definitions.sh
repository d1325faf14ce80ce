#!/bin/sh
# Renders the broker's definitions (vhost, users, permissions) from the template
# definitions.json and the users in the environment (from the Secrets), for the node to
# load at boot. Refuses an empty value, a character that would need escaping in JSON or in
# an amqp:// URL, and a password that is still the example placeholder.
#
# What each user may do (the resource names are resofleet.contracts.Topology's):
#   gateway: declare the exchanges and its own queues (aio-pika names them amq_<hex>);
#            publish requests and presence (discover, revocations); read events and
#            presence. It cannot serve a server or publish its output.
#   agent:   declare the exchanges, per-server command queues and its own queues; publish
#            events, presence and replies (default exchange); read commands and presence.
#            It cannot send a request to a server.
#   notifier: declare the exchanges, its durable resofleet.notify.* queues and its own
#            queues; publish to them (default exchange) and presence (a discover); read
#            events and presence. It cannot send a request, serve or publish an event.
set -eu
template="${DEFINITIONS_TEMPLATE:-/templates/definitions.json}"
out="${DEFINITIONS_OUT:-/etc/rabbitmq/definitions/definitions.json}"

fail() {
    echo "rabbitmq-definitions: $*" >&2
    exit 1
}

check() {  # NAME VALUE
    case "$2" in
        "") fail "$1 is empty" ;;
        *[!A-Za-z0-9._~-]*) fail "$1 may hold only letters, digits and . _ ~ -" ;;
    esac
}

check GATEWAY_USER "${GATEWAY_USER:-}"
check GATEWAY_PASSWORD "${GATEWAY_PASSWORD:-}"
check AGENT_USER "${AGENT_USER:-}"
check AGENT_PASSWORD "${AGENT_PASSWORD:-}"
check NOTIFIER_USER "${NOTIFIER_USER:-}"
check NOTIFIER_PASSWORD "${NOTIFIER_PASSWORD:-}"
for password in "$GATEWAY_PASSWORD" "$AGENT_PASSWORD" "$NOTIFIER_PASSWORD"; do
    case "$password" in
        REPLACE-ME*) fail "a broker password is still the example placeholder: put a real one in Secrets resofleet-broker-gateway, resofleet-broker-agent and resofleet-broker-notifier" ;;
    esac
done
[ "$GATEWAY_USER" != "$AGENT_USER" ] || fail "the gateway and agent users must differ"
[ "$NOTIFIER_USER" != "$GATEWAY_USER" ] && [ "$NOTIFIER_USER" != "$AGENT_USER" ] || fail "the notifier user must differ from the gateway and agent users"

sed -e "s/@GATEWAY_USER@/$GATEWAY_USER/g" \
    -e "s/@GATEWAY_PASSWORD@/$GATEWAY_PASSWORD/g" \
    -e "s/@AGENT_USER@/$AGENT_USER/g" \
    -e "s/@AGENT_PASSWORD@/$AGENT_PASSWORD/g" \
    -e "s/@NOTIFIER_USER@/$NOTIFIER_USER/g" \
    -e "s/@NOTIFIER_PASSWORD@/$NOTIFIER_PASSWORD/g" \
    "$template" > "$out.tmp"
mv "$out.tmp" "$out"
echo "rabbitmq-definitions: users $GATEWAY_USER, $AGENT_USER and $NOTIFIER_USER in vhost resofleet" >&2
