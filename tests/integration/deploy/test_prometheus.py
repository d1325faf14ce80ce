"""deploy/prometheus/ as Prometheus reads it: the scrape configuration, the alert rules,
and what the rules fire on (``promtool``, from Debian's prometheus package, which
tests/services.sh installs; without it these tests skip and say so)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS = REPO / "deploy" / "prometheus"
#: Seconds one promtool run may take (well under a second here; the bound is for a loaded
#: machine).
PROMTOOL_TIMEOUT = 60.0
#: Where the compose fleet mounts the gateways' bearer token (deploy/compose.yaml).
TOKEN_PATH = "/etc/prometheus/secrets/gateway.token"

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool (Debian's prometheus package: tests/services.sh installs it)"
)


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_scrape_configuration_is_valid(tmp_path: Path) -> None:
    """`promtool check config` passes (the token file it checks for exists where compose
    mounts it; here a stand-in)."""
    token = tmp_path / "gateway.token"
    token.write_text("a-token\n", encoding="utf-8")
    text = (PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8")
    assert TOKEN_PATH in text
    (tmp_path / "prometheus.yml").write_text(text.replace(TOKEN_PATH, str(token)), encoding="utf-8")
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    promtool("check", "config", "prometheus.yml", cwd=tmp_path)


def test_both_gateways_both_agents_and_the_notifier_are_scraped() -> None:
    """The gateways on 8000 with the bearer token file, the agents on 8001, the notifier
    on 8002, /metrics."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {
        name: sorted(t for group in job["static_configs"] for t in group["targets"]) for name, job in jobs.items()
    }
    assert targets == {
        "resofleet-gateway": ["gateway-1:8000", "gateway-2:8000"],
        "resofleet-agent": ["agent-a:8001", "agent-b:8001"],
        "resofleet-notifier": ["notifier:8002"],
    }
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
    assert jobs["resofleet-gateway"]["authorization"] == {"type": "Bearer", "credentials_file": TOKEN_PATH}


def test_the_alert_rules_are_valid() -> None:
    """`promtool check rules`: the ten alerts parse."""
    assert "SUCCESS: 10 rules found" in promtool("check", "rules", "alerts.yml")


def test_the_alerts_fire_on_what_they_are_for() -> None:
    """`promtool test rules alerts.test.yml`: server down, agent unreachable, crash loop,
    console timeouts, unhealthy console, gateway not ready, clients cut off, webhook dead
    letters, a failing webhook, an unreachable notifier, each from input series."""
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")


def test_the_dashboards_queries_parse_as_promql(tmp_path: Path) -> None:
    """Every query of deploy/grafana's dashboard, as a recording rule: `promtool check
    rules` parses each with Prometheus's own PromQL parser."""
    import json

    dashboard = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "resofleet-fleet.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", "queries.yml", cwd=tmp_path)
