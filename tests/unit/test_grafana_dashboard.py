"""deploy/grafana/: the fleet dashboard asks only for metrics resofleet exports, in PromQL
that is at least well formed, every panel titled and with a unit; the provisioning files
point at the datasource uid the panels use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "resofleet-fleet.json"

#: Every metric the gateway, the agent and the notifier export (the README's Metrics and
#: Webhooks sections).
COUNTERS_AND_GAUGES = {
    "resofleet_gateway_connections", "resofleet_gateway_requests_total", "resofleet_gateway_events_total",
    "resofleet_gateway_cut_off_total", "resofleet_gateway_sent_bytes_total",
    "resofleet_gateway_bus_reconnects_total", "resofleet_gateway_refused_total",
    "resofleet_gateway_revocations_total", "resofleet_gateway_ready",
    "resofleet_server_up", "resofleet_server_cpu_usage", "resofleet_server_memory_bytes",
    "resofleet_server_worlds", "resofleet_server_users", "resofleet_server_present_users",
    "resofleet_server_restarts_total", "resofleet_console_timeouts_total",
    "resofleet_console_resyncs_total", "resofleet_output_lines_total", "resofleet_output_dropped_total",
    "resofleet_notifier_events_total", "resofleet_notifier_notices_total", "resofleet_notifier_deliveries_total",
}
HISTOGRAMS = {
    "resofleet_gateway_request_seconds", "resofleet_console_command_seconds", "resofleet_poll_seconds",
    "resofleet_notifier_post_seconds",
}
KNOWN = COUNTERS_AND_GAUGES | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
#: PromQL's functions, aggregations and keywords the panels may use besides metric names.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate",
    "histogram_quantile", "vector", "or", "and", "unless", "le", "on", "ignoring",
}
#: Labels the metrics carry (the panels group and filter by these only).
LABELS = {"type", "outcome", "reason", "state", "server", "class", "poll", "instance", "job", "webhook"}
#: Grafana's names of the units the panels use.
UNITS = {"none", "short", "percent", "bytes", "Bps", "reqps", "ops", "s", "bool_on_off"}


def panels() -> list[dict[str, Any]]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]


def expressions() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def balanced(expr: str) -> bool:
    """Brackets nest and close; quotes close."""
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    quoted = False
    for char in expr:
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return False
    return not stack and not quoted


def test_the_dashboard_covers_the_fleet_overview() -> None:
    """Servers up, users, CPU and memory per server, request rate and latency, errors,
    fan-out and cut-offs each have a panel."""
    titles = {panel["title"] for panel in panels()}
    for wanted in ("Servers up", "Users per server", "CPU per server", "Memory per server",
                   "Request rate by type", "Request latency (p50, p95, p99)", "Errors by code",
                   "Fan-out events", "Clients cut off by reason"):
        assert wanted in titles


def test_every_panel_has_a_title_a_unit_and_a_query() -> None:
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["title"].strip() and panel["description"].strip(), panel
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}


@pytest.mark.parametrize("expr", expressions())
def test_every_query_is_well_formed_and_names_only_exported_metrics(expr: str) -> None:
    """Brackets balance; every name outside label matchers and quotes is an exported
    metric, a PromQL word or a label; latencies come from histogram buckets."""
    assert balanced(expr), expr
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # range selectors: [5m]
    matchers = re.findall(r"\{([^}]*)\}", bare)
    for matcher in matchers:
        for label in re.findall(r"([a-z_]+)\s*(?:!=|=~|!~|=)", matcher):
            assert label in LABELS, (label, expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    for name in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare):
        assert name in KNOWN or name in PROMQL_WORDS or name in LABELS, (name, expr)
    if "histogram_quantile" in expr:
        assert "_bucket" in expr and "le" in re.findall(r"by \(([^)]*)\)", expr)[0], expr


def test_the_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    [source] = datasources["datasources"]
    assert (source["uid"], source["type"], source["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
    dashboards = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "resofleet.yaml").read_text())
    [provider] = dashboards["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
