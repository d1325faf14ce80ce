"""The gateway's /metrics body, parsed as Prometheus parses it: no I/O."""

from __future__ import annotations

import time

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from resofleet.agent.metrics import AgentMetrics
from resofleet.gateway.metrics import GatewayMetrics, exposition


def samples(body: bytes, *, openmetrics: bool = False) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse(body.decode())
        for s in family.samples
    }


def counted() -> GatewayMetrics:
    metrics = GatewayMetrics()
    started = time.perf_counter()
    for _ in range(3):
        metrics.request("command", "ok", started)
    metrics.request("command", "forbidden", started)
    metrics.request("made-up type", "not a code", started)  # bounded: invalid / internal
    metrics.refused("forbidden")
    metrics.watch(connections=lambda: (1, 2), ready=lambda: True)
    return metrics


def test_the_text_format_parses_and_counts_what_happened() -> None:
    """Requests by type and outcome, the latency histogram, refusals and the sessions, as a
    scraper reads them; unknown types and outcomes fall into fixed label values."""
    body, content_type = exposition([counted().registry], None)
    assert content_type.startswith("text/plain")
    found = samples(body)
    assert found[("resofleet_gateway_requests_total", (("outcome", "ok"), ("type", "command")))] == 3
    assert found[("resofleet_gateway_requests_total", (("outcome", "forbidden"), ("type", "command")))] == 1
    assert found[("resofleet_gateway_requests_total", (("outcome", "internal"), ("type", "invalid")))] == 1
    assert found[("resofleet_gateway_request_seconds_count", (("type", "command"),))] == 4
    assert found[("resofleet_gateway_refused_total", (("reason", "forbidden"),))] == 1
    assert found[("resofleet_gateway_connections", (("state", "authenticated"),))] == 2
    assert found[("resofleet_gateway_connections", (("state", "unauthenticated"),))] == 1
    assert found[("resofleet_gateway_ready", ())] == 1
    assert not any("made-up" in str(key) for key in found)


def test_openmetrics_of_two_registries_is_one_document() -> None:
    """Asked for OpenMetrics, the gateway's and an agent's registries (as `resofleet up`
    serves them) come out as one document with one `# EOF`, which the parser accepts."""
    agent = AgentMetrics(lambda: {})
    agent.server("p-1").command("version", 0.002)
    body, content_type = exposition(
        [counted().registry, agent.registry], "application/openmetrics-text; version=1.0.0"
    )
    assert content_type.startswith("application/openmetrics-text")
    assert body.count(b"# EOF") == 1 and body.endswith(b"# EOF\n")
    assert samples(body, openmetrics=True)[
        ("resofleet_gateway_requests_total", (("outcome", "ok"), ("type", "command")))
    ] == 3
    assert samples(body, openmetrics=True)[
        ("resofleet_console_command_seconds_count", (("class", "viewer"), ("server", "p-1")))
    ] == 1
