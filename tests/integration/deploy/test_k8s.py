"""deploy/k8s, rendered and checked offline: there is no cluster here, nothing is applied.

Every kustomization is rendered with ``kubectl kustomize``; every object of a built-in
kind is validated, strictly (no unknown field), against the Kubernetes schemas of the
``kubernetes-validate`` package for the oldest and the newest version the manifests
claim. The operators' objects (RabbitmqCluster, Vhost, User, Permission) have no bundled
schema: their required fields and references are checked here, from the operators' API
types. Then what a provider cares about: probes where they belong, non-root and the
``restricted`` Pod Security profile, limits on every container, grace periods that cover
the gateway's drain and the agent's stop, an HPA and a PDB on the gateway, policies that
let only the ingress reach the gateways and only the broker be reached from them and the
agents, config files that resofleet's own loader accepts, and example secrets that fail
closed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest

from resofleet.agent.runtime.process import STOP_GRACE
from resofleet.config import ConfigError, parse_config
from resofleet.gateway.app import DRAIN_TIMEOUT
from resofleet.gateway.fanout import SLOW_CLIENTS_BUDGET
from resofleet.notifier.settings import REQUEST_TIMEOUT

from .k8s import (
    DEPLOYABLE,
    KUSTOMIZATIONS,
    Obj,
    broker_pod_labels,
    configmap_files,
    find,
    generated_name,
    kubectl,
    matches,
    one,
    pod_templates,
    render,
    secret_value,
    toml_files,
)

kv = pytest.importorskip("kubernetes_validate", reason="needs kubernetes-validate (pip install -e '.[test]')")

pytestmark = pytest.mark.skipif(
    kubectl() is None,
    reason="needs kubectl for `kubectl kustomize`: Debian's kubernetes-client "
    "(tests/services.sh installs it as root) or $RESOFLEET_KUBECTL",
)

#: Kubernetes versions validated against: the oldest the manifests claim (the preStop
#: `sleep` action is on by default from 1.30) and the newest the package knows.
SCHEMA_VERSIONS: Final = ("1.30", kv.latest_version())
#: Required fields of the operators' objects (``+kubebuilder:validation:Required`` in
#: rabbitmq/cluster-operator and rabbitmq/messaging-topology-operator, api/v1beta1), as
#: paths under ``spec``.
CRD_REQUIRED: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "RabbitmqCluster": (),
    "Vhost": (("name",), ("rabbitmqClusterReference", "name")),
    "User": (("rabbitmqClusterReference", "name"),),
    "Permission": (("vhost",), ("permissions",), ("rabbitmqClusterReference", "name")),
}
#: The group of the operators' objects.
CRD_GROUP: Final = "rabbitmq.com/"
#: Volume kinds the `restricted` Pod Security profile allows.
RESTRICTED_VOLUMES: Final = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
#: Seconds a gateway needs after SIGTERM besides the drain: closing the bus and the
#: audit log (well under a second here; the margin is for a busy node).
GATEWAY_CLOSE_MARGIN: Final = 3
#: Seconds an agent needs besides its headless's stop: closing the bus and the audit log.
AGENT_CLOSE_MARGIN: Final = 5
#: Bytes a gateway holds besides the lagging clients' budget: the interpreter, the
#: fan-out's rounds and about 23 KiB per idle connection (10,000 of them).
GATEWAY_BASELINE_MEMORY: Final = 256 * 1024 * 1024
#: Where only an ingress controller's pods may come from.
INGRESS_PEER: Final = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
}
#: The cluster's DNS.
DNS_PEER: Final = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
#: Address ranges an internet egress rule must leave closed: the cluster's own networks
#: and the cloud's metadata service.
PRIVATE_RANGES: Final = {
    4: ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"),
    6: ("fc00::/7", "fe80::/10"),
}
#: A token secret long enough for the loader, to read the files as a gateway would.
TEST_SECRET: Final = "k8s-test-secret-" + "x" * 32
GATEWAY: Final = {"app.kubernetes.io/name": "resofleet", "app.kubernetes.io/component": "gateway"}
HEADLESS: Final = {"app.kubernetes.io/name": "resofleet", "app.kubernetes.io/component": "headless"}
NOTIFIER: Final = {"app.kubernetes.io/name": "resofleet", "app.kubernetes.io/component": "notifier"}
#: Where Prometheus is assumed to run (the notifier's metrics port is open to it alone).
MONITORING_PEER: Final = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}

every_kustomization = pytest.mark.parametrize("name", KUSTOMIZATIONS)
with_fleet = pytest.mark.parametrize("name", ("base", *DEPLOYABLE))
deployable = pytest.mark.parametrize("name", DEPLOYABLE)


# -- helpers ---------------------------------------------------------------------------------


def containers(template: Obj, *, init: bool = True) -> list[Obj]:
    spec = template["spec"]
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def workload(objects: tuple[Obj, ...], labels: dict[str, str]) -> tuple[Obj, Obj]:
    """The one workload whose pods carry ``labels``."""
    found = [(w, t) for w, t in pod_templates(objects) if matches({"matchLabels": labels}, t["metadata"]["labels"])]
    assert len(found) == 1, f"expected one workload with pods labelled {labels}, found {len(found)}"
    return found[0]


def quantity(text: str | int) -> float:
    """A Kubernetes quantity ("250m", "2", "1Gi") as a number (cores or bytes)."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    assert match and match[2] in units, f"not a quantity: {text!r}"
    return float(match[1]) * units[match[2]]


def port_number(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert named, f"container {container['name']} has no port named {port}"
    return int(named[0])


def policies_for(objects: tuple[Obj, ...], pod_labels: dict[str, str], kind: str) -> list[Obj]:
    """The NetworkPolicies selecting these pods for ``kind`` (Ingress or Egress)."""
    return [
        p for p in find(objects, "NetworkPolicy")
        if matches(p["spec"]["podSelector"], pod_labels) and kind in p["spec"].get("policyTypes", ["Ingress"])
    ]


def rules(policies: list[Obj], direction: str) -> list[Obj]:
    return [rule for p in policies for rule in p["spec"].get(direction, [])]


def ports_of(rule: Obj) -> set[tuple[int, str]]:
    return {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}


@pytest.fixture
def loader_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a pod gives the loader: a secret and a broker URL."""
    monkeypatch.setenv("RESOFLEET_SECRET", TEST_SECRET)
    monkeypatch.setenv("RESOFLEET_AMQP_URL", "amqp://user:password@rabbitmq:5672/resofleet")
    monkeypatch.delenv("RESOFLEET_BUS_PREFIX", raising=False)


# -- rendering and schemas -------------------------------------------------------------------


@every_kustomization
def test_renders(name: str) -> None:
    """`kubectl kustomize` builds every kustomization into named objects."""
    objects = render(name)
    assert objects
    for o in objects:
        assert o.get("apiVersion") and o.get("kind") and o.get("metadata", {}).get("name"), o


@every_kustomization
@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_objects_match_the_kubernetes_schemas(name: str, version: str) -> None:
    """Every built-in object is valid, with no unknown field, for Kubernetes `version`."""
    for o in render(name):
        if o["apiVersion"].startswith(CRD_GROUP):
            assert o["kind"] in CRD_REQUIRED, f"{o['kind']}: an operator object this test does not check"
            continue
        try:
            kv.validate(o, version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(step) for step in exc.path)
            pytest.fail(f"{name}: {o['kind']} {o['metadata']['name']}: {path}: {exc.message}")


def test_the_validator_refuses_a_misspelt_field() -> None:
    """The schema check is not vacuous: a misspelt field in a probe is refused."""
    deployment = json.loads(json.dumps(one(render("base"), "Deployment", "resofleet-gateway")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, SCHEMA_VERSIONS[0], strict=True)


@pytest.mark.parametrize("name", ("rabbitmq/operator", "overlays/operator"))
def test_operator_objects_have_their_required_fields_and_references(name: str) -> None:
    """RabbitmqCluster, Vhost, User and Permission (no bundled schema) carry what the
    operators require, and point at objects the render has."""
    objects = render(name)
    clusters = {c["metadata"]["name"] for c in find(objects, "RabbitmqCluster")}
    vhosts = {v["spec"]["name"] for v in find(objects, "Vhost")}
    users = {u["metadata"]["name"] for u in find(objects, "User")}
    assert clusters and vhosts and users
    for o in objects:
        if not o["apiVersion"].startswith(CRD_GROUP):
            continue
        assert o["apiVersion"] == "rabbitmq.com/v1beta1"
        spec = o.get("spec", {})
        for path in CRD_REQUIRED[o["kind"]]:
            value: Any = spec
            for step in path:
                assert isinstance(value, dict) and step in value, f"{o['kind']} {o['metadata']['name']}: spec.{'.'.join(path)} is required"
                value = value[step]
            assert value not in ("", None, {}), f"{o['kind']}: spec.{'.'.join(path)} is empty"
        if "rabbitmqClusterReference" in spec:
            assert spec["rabbitmqClusterReference"]["name"] in clusters
    for cluster in find(objects, "RabbitmqCluster"):
        spec = cluster["spec"]
        assert spec["replicas"] in (1, 3, 5), "the operator tests 1, 3 and 5 nodes only"
        assert {"cpu", "memory"} <= spec["resources"]["limits"].keys()
        assert len(spec.get("rabbitmq", {}).get("additionalConfig", "")) <= 2000  # the CRD's maxLength
    for user in find(objects, "User"):
        secret = user["spec"]["importCredentialsSecret"]["name"]
        if name == "rabbitmq/operator":  # the Secrets are the base's
            continue
        assert secret_value(objects, secret, "username") and secret_value(objects, secret, "password")
    for permission in find(objects, "Permission"):
        spec = permission["spec"]
        assert bool(spec.get("user")) != bool(spec.get("userReference")), "exactly one of user, userReference"
        assert spec.get("userReference", {}).get("name", next(iter(users))) in users
        assert spec["vhost"] in vhosts
        assert {"configure", "write", "read"} == spec["permissions"].keys()


# -- containers ------------------------------------------------------------------------------


@every_kustomization
def test_every_container_has_requests_and_limits(name: str) -> None:
    """Every container, init containers too, requests and is limited in CPU and memory."""
    for w, template in pod_templates(render(name)):
        for c in containers(template):
            res = c.get("resources", {})
            for kind in ("cpu", "memory"):
                where = f"{w['metadata']['name']}/{c['name']} {kind}"
                assert kind in res.get("requests", {}) and kind in res.get("limits", {}), f"{where}: no request or limit"
                assert quantity(res["requests"][kind]) <= quantity(res["limits"][kind]), f"{where}: request above limit"


@every_kustomization
def test_every_pod_meets_the_restricted_pod_security_profile(name: str) -> None:
    """Non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp, a
    read-only root filesystem, no host namespaces or host paths, no API token."""
    for w, template in pod_templates(render(name)):
        spec = template["spec"]
        pod_ctx = spec.get("securityContext", {})
        where = w["metadata"]["name"]
        assert pod_ctx.get("runAsNonRoot") is True, where
        assert pod_ctx.get("runAsUser", 1) != 0, where
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
        assert spec.get("automountServiceAccountToken") is False, f"{where}: mounts an API token it never uses"
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUMES, f"{where}: volume {volume['name']} is {kinds}"
        for c in containers(template):
            ctx = c.get("securityContext", {})
            where = f"{w['metadata']['name']}/{c['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add"), where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("runAsUser", 1) != 0 and not ctx.get("privileged"), where


@every_kustomization
def test_no_pod_gets_service_links(name: str) -> None:
    """Service links are off: a Service named `rabbitmq` would put RABBITMQ_PORT=tcp://...
    into every pod's environment, which the broker's own scripts read as its port."""
    for w, template in pod_templates(render(name)):
        assert template["spec"].get("enableServiceLinks") is False, w["metadata"]["name"]


@every_kustomization
def test_long_running_containers_have_readiness_and_liveness_probes(name: str) -> None:
    """Every container that serves (not init containers) says when it is ready and alive."""
    for w, template in pod_templates(render(name)):
        for c in containers(template, init=False):
            assert "readinessProbe" in c and "livenessProbe" in c, f"{w['metadata']['name']}/{c['name']}"


@with_fleet
def test_gateway_probes_ask_readyz_and_healthz_on_its_port(name: str) -> None:
    """The gateway is ready when /readyz (bus connected) says so, alive per /healthz, both on
    the port it listens on (gateway.toml)."""
    objects = render(name)
    _, template = workload(objects, GATEWAY)
    (gateway,) = containers(template)
    config = next(doc for (_, key), doc in toml_files(objects).items() if key == "gateway.toml")
    port = config["gateway"]["port"]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = gateway[probe]["httpGet"]
        assert get["path"] == path and port_number(gateway, get["port"]) == port


@with_fleet
def test_agent_probes_ask_the_health_endpoint_of_its_config(name: str) -> None:
    """The headless pods' readiness is the agent's /readyz (bus connected, every console
    synchronised), liveness its /healthz, on the port `[agent] health` of every pod's config."""
    objects = render(name)
    _, template = workload(objects, HEADLESS)
    (agent,) = containers(template)
    ports = {
        int(doc["agent"]["health"].rsplit(":", 1)[1])
        for (cm, _), doc in toml_files(objects).items() if cm.startswith("resofleet-headless")
    }
    assert len(ports) == 1, f"every pod's agent should listen on one health port, not {ports}"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = agent[probe]["httpGet"]
        assert get["path"] == path and port_number(agent, get["port"]) in ports


@with_fleet
def test_gateway_grace_period_covers_prestop_and_drain(name: str) -> None:
    """After preStop (leave the endpoints) the gateway closes sessions with 1001 and drains
    for up to DRAIN_TIMEOUT: the grace period leaves room for both and the bus to close."""
    _, template = workload(render(name), GATEWAY)
    (gateway,) = containers(template)
    pre_stop = gateway["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 1
    grace = template["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + DRAIN_TIMEOUT + GATEWAY_CLOSE_MARGIN


@with_fleet
def test_headless_grace_period_covers_the_agents_stop(name: str) -> None:
    """The agent stops its headless (SIGTERM, SIGKILL after STOP_GRACE) before it exits."""
    _, template = workload(render(name), HEADLESS)
    assert template["spec"]["terminationGracePeriodSeconds"] >= STOP_GRACE + AGENT_CLOSE_MARGIN


@with_fleet
def test_gateway_memory_limit_covers_the_lagging_clients_budget(name: str) -> None:
    """The fan-out may hold SLOW_CLIENTS_BUDGET for lagging clients: the limit is above it."""
    _, template = workload(render(name), GATEWAY)
    (gateway,) = containers(template)
    limit = quantity(gateway["resources"]["limits"]["memory"])
    assert limit >= SLOW_CLIENTS_BUDGET + GATEWAY_BASELINE_MEMORY


@with_fleet
def test_every_writable_path_is_a_mounted_volume(name: str) -> None:
    """With a read-only root, the audit logs each config names are on writable mounts."""
    objects = render(name)
    for labels, prefix in ((GATEWAY, "resofleet-gateway"), (HEADLESS, "resofleet-headless")):
        _, template = workload(objects, labels)
        (c,) = containers(template)
        writable = [m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")]
        for (cm, key), doc in toml_files(objects).items():
            if not cm.startswith(prefix):
                continue
            audit = next(iter(doc.values()))["audit_log"]  # [gateway] or [agent]
            assert any(Path(audit).is_relative_to(m) for m in writable), f"{cm}/{key}: {audit} is read-only"


@every_kustomization
def test_images_are_pinned(name: str) -> None:
    """No image runs as `latest` or without a tag; overlays take theirs from a registry."""
    for w, template in pod_templates(render(name)):
        for c in containers(template):
            image = c["image"]
            assert "@sha256:" in image or re.search(r":[\w][\w.-]*$", image.rsplit("/", 1)[-1]), image
            assert not image.endswith(":latest"), image
            if name.startswith("overlays/") and image.split(":")[0].startswith("resofleet"):
                pytest.fail(f"{w['metadata']['name']}: {image} is the base's local name, not a registry's")


@with_fleet
def test_references_to_secrets_and_configmaps_resolve(name: str) -> None:
    """Every Secret key and ConfigMap a pod reads is in the render."""
    objects = render(name)
    secrets = {s["metadata"]["name"]: {*s.get("stringData", {}), *s.get("data", {})} for s in find(objects, "Secret")}
    configmaps = {c["metadata"]["name"]: set(c.get("data", {})) for c in find(objects, "ConfigMap")}
    for w, template in pod_templates(objects):
        for c in containers(template):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), f"{w['metadata']['name']}: {ref}"
        for volume in template["spec"].get("volumes", []):
            if "configMap" in volume:
                cm = volume["configMap"]
                assert cm["name"] in configmaps, cm
                assert {i["key"] for i in cm.get("items", [])} <= configmaps[cm["name"]]
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets


# -- gateway scaling -------------------------------------------------------------------------


@with_fleet
def test_hpa_scales_the_gateway_deployment(name: str) -> None:
    """The HorizontalPodAutoscaler targets the gateways' Deployment (by its rendered name),
    keeps at least two, and the Deployment leaves `replicas` to it."""
    objects = render(name)
    deployment, _ = workload(objects, GATEWAY)
    (hpa,) = find(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1", "Deployment", deployment["metadata"]["name"]
    )
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert "replicas" not in deployment["spec"], "an explicit replicas fights the HPA on every apply"


@with_fleet
def test_pdb_keeps_a_gateway_up_and_lets_nodes_drain(name: str) -> None:
    """The gateway's PodDisruptionBudget selects the gateway pods, keeps one available, and
    still allows an eviction at the HPA's minimum (or a drain would block for ever)."""
    objects = render(name)
    _, template = workload(objects, GATEWAY)
    (hpa,) = find(objects, "HorizontalPodAutoscaler")
    pdbs = [p for p in find(objects, "PodDisruptionBudget") if matches(p["spec"]["selector"], template["metadata"]["labels"])]
    assert len(pdbs) == 1
    min_available = pdbs[0]["spec"]["minAvailable"]
    assert 1 <= min_available < hpa["spec"]["minReplicas"]


# -- network policies ------------------------------------------------------------------------


@with_fleet
def test_every_pod_is_closed_in_both_directions_by_a_policy(name: str) -> None:
    """Each workload's pods are selected by a NetworkPolicy for ingress and for egress."""
    objects = render(name)
    for w, template in pod_templates(objects):
        labels = template["metadata"]["labels"]
        for kind in ("Ingress", "Egress"):
            assert policies_for(objects, labels, kind), f"{w['metadata']['name']}: no {kind} policy"


@with_fleet
def test_only_the_ingress_controller_reaches_the_gateways(name: str) -> None:
    """Gateway ingress: the ingress controller's pods, on the gateway's port, nothing else."""
    objects = render(name)
    _, template = workload(objects, GATEWAY)
    allowed = rules(policies_for(objects, template["metadata"]["labels"], "Ingress"), "ingress")
    assert allowed
    for rule in allowed:
        assert rule.get("from") == [INGRESS_PEER], rule  # an absent `from` would be everyone
        assert ports_of(rule) == {(8000, "TCP")}, rule


@with_fleet
def test_gateways_and_agents_reach_only_the_broker(name: str) -> None:
    """Gateway and agent egress: the broker's pods on 5672, and DNS; nothing else (the
    Resonite headless's internet egress, where an overlay adds it, excepted below)."""
    objects = render(name)
    brokers = broker_pod_labels(objects)
    for labels in (GATEWAY, HEADLESS):
        _, template = workload(objects, labels)
        allowed = rules(policies_for(objects, template["metadata"]["labels"], "Egress"), "egress")
        kinds = set()
        for rule in allowed:
            peers = rule.get("to")
            assert peers, f"{labels}: an egress rule without `to` opens everything"
            if peers == [DNS_PEER]:
                assert ports_of(rule) == {(53, "UDP"), (53, "TCP")}
                kinds.add("dns")
            elif all("ipBlock" in p for p in peers):
                assert labels is HEADLESS and name == "overlays/example", f"{labels}: egress to addresses"
                kinds.add("internet")
            else:
                assert len(peers) == 1 and set(peers[0]) == {"podSelector"}, rule
                assert ports_of(rule) == {(5672, "TCP")}, rule
                if name != "base":  # the base has no broker to select
                    assert any(matches(peers[0]["podSelector"], b) for b in brokers), "selects no broker pod"
                kinds.add("broker")
        assert {"dns", "broker"} <= kinds


@with_fleet
def test_nothing_may_connect_to_the_headless_pods(name: str) -> None:
    """Agents take no connections: the policies selecting them allow no ingress."""
    objects = render(name)
    _, template = workload(objects, HEADLESS)
    policies = policies_for(objects, template["metadata"]["labels"], "Ingress")
    assert policies and not rules(policies, "ingress")


def test_headless_internet_egress_keeps_the_cluster_closed() -> None:
    """The Resonite headless may reach the internet, not the cluster's private ranges or the
    cloud's metadata service."""
    objects = render("overlays/example")
    _, template = workload(objects, HEADLESS)
    blocks = [
        peer["ipBlock"]
        for rule in rules(policies_for(objects, template["metadata"]["labels"], "Egress"), "egress")
        for peer in rule["to"] if "ipBlock" in peer
    ]
    assert {ipaddress.ip_network(b["cidr"]).version for b in blocks} == {4, 6}
    for block in blocks:
        network = ipaddress.ip_network(block["cidr"])
        excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
        for private in PRIVATE_RANGES[network.version]:
            closed = ipaddress.ip_network(private)
            if closed.subnet_of(network):  # type: ignore[arg-type]
                assert any(closed.subnet_of(e) for e in excepted), f"{block['cidr']} opens {private}"  # type: ignore[arg-type]


@deployable
def test_the_broker_takes_amqp_only_from_gateways_agents_and_the_notifier(name: str) -> None:
    """Broker ingress on 5672 comes from the gateway, headless and notifier pods only; other ports
    (clustering, the operators' management API) never from them."""
    objects = render(name)
    (broker,) = broker_pod_labels(objects)
    allowed = rules(policies_for(objects, broker, "Ingress"), "ingress")
    amqp = [r for r in allowed if (5672, "TCP") in ports_of(r)]
    assert amqp
    for rule in allowed:
        assert rule.get("from"), f"a broker ingress rule without `from` opens it to everyone: {rule}"
    for rule in amqp:
        assert ports_of(rule) == {(5672, "TCP")}
        assert [p["podSelector"]["matchLabels"] for p in rule["from"]] == [GATEWAY, HEADLESS, NOTIFIER]


# -- config, secrets, broker -----------------------------------------------------------------


@with_fleet
def test_config_files_load_with_resofleets_own_loader(name: str, loader_env: None, tmp_path: Path) -> None:
    """Every TOML file in a ConfigMap is accepted by resofleet.config.parse_config (a
    webhook's secret_file read from a real secret where the pod mounts Secret
    resofleet-webhooks)."""
    objects = render(name)
    files = toml_files(objects)
    assert files
    _, template = workload(objects, NOTIFIER)
    (notifier,) = containers(template)
    mount = next(m for m in notifier["volumeMounts"] if m["name"] == "webhooks")["mountPath"]
    for (cm, key), document in files.items():
        for hook in document.get("webhooks", []):
            if "secret_file" in hook:
                path = Path(hook["secret_file"])
                assert path.parent == Path(mount) and path.name in secret_keys(objects, "resofleet-webhooks"), hook
                hook["secret_file"] = str(tmp_path / path.name)
                (tmp_path / path.name).write_text("w" * 32 + "\n")
        try:
            parse_config(document, source=f"{cm}/{key}")
        except ConfigError as exc:
            pytest.fail(str(exc))


def test_agent_health_setting_is_known(loader_env: None) -> None:
    """`[agent] health` (the agent's probe endpoint) is a key resofleet's loader knows."""
    (document,) = [d for (cm, k), d in toml_files(render("base")).items() if k == "resofleet-headless-0.toml"]
    assert parse_config(document).agent.health == document["agent"]["health"]


@with_fleet
def test_one_agent_config_per_headless_pod(name: str, loader_env: None) -> None:
    """Pod N of the StatefulSet reads <statefulset>-N.toml from the ConfigMap mounted where
    its command line looks; server ids are unique across pods; each runs the process
    runtime (no Docker socket in Kubernetes)."""
    objects = render(name)
    statefulset, template = workload(objects, HEADLESS)
    (agent,) = containers(template)
    mount = next(m for m in agent["volumeMounts"] if m["name"] == "config")["mountPath"]
    assert agent["args"][-1] == f"{mount}/$(POD_NAME).toml"
    assert any(e["name"] == "POD_NAME" and e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" for e in agent["env"])
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "config")
    cm_name = volume["configMap"]["name"]
    assert cm_name == generated_name(objects, "ConfigMap", "resofleet-headless")
    stateful_name = statefulset["metadata"]["name"]
    expected = {f"{stateful_name}-{i}.toml" for i in range(statefulset["spec"]["replicas"])}
    files = {key: doc for (cm, key), doc in toml_files(objects).items() if cm == cm_name}
    assert set(files) == expected
    ids = []
    for key, document in files.items():
        config = parse_config(document, source=key)
        assert config.servers and all(s.runtime == "process" for s in config.servers)
        ids += [s.id for s in config.servers]
    assert len(ids) == len(set(ids)), f"a server id is served by two pods: {ids}"


@with_fleet
def test_the_example_token_secret_fails_closed(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The placeholder token secret is refused by the loader: an unedited example never runs
    a gateway with a secret published in git."""
    placeholder = secret_value(render(name), "resofleet-token", "secret")
    monkeypatch.setenv("RESOFLEET_SECRET", placeholder)
    with pytest.raises(ConfigError, match="RESOFLEET_SECRET"):
        parse_config({"gateway": {"host": "0.0.0.0"}})


@deployable
def test_broker_url_names_the_broker_service_and_vhost(name: str) -> None:
    """RESOFLEET_AMQP_URL points at a Service (or RabbitmqCluster) of the render that is the
    broker, and at the vhost the broker defines; its user comes from a Secret."""
    objects = render(name)
    brokers = broker_pod_labels(objects)
    services = {
        s["metadata"]["name"] for s in find(objects, "Service")
        if any(matches({"matchLabels": s["spec"].get("selector", {})}, b) for b in brokers)
        and s["spec"].get("clusterIP") != "None"
    } | {c["metadata"]["name"] for c in find(objects, "RabbitmqCluster")}
    vhosts = {v["spec"]["name"] for v in find(objects, "Vhost")}
    for cm in find(objects, "ConfigMap"):
        if "definitions.json" in cm.get("data", {}):
            vhosts |= {v["name"] for v in json.loads(cm["data"]["definitions.json"])["vhosts"]}
    for labels in (GATEWAY, HEADLESS):
        _, template = workload(objects, labels)
        (c,) = containers(template)
        env = {e["name"]: e for e in c["env"]}
        url = urlsplit(env["RESOFLEET_AMQP_URL"]["value"])
        assert url.hostname in services and url.port == 5672
        assert url.path.lstrip("/") in vhosts
        for var in ("RESOFLEET_BROKER_USER", "RESOFLEET_BROKER_PASSWORD"):
            assert f"$({var})" in env["RESOFLEET_AMQP_URL"]["value"]
            assert env[var]["valueFrom"]["secretKeyRef"]["name"].startswith("resofleet-broker-")


def test_operator_permissions_are_the_statefulset_brokers() -> None:
    """Both broker variants give the gateway and agent users the same permissions."""
    definitions = json.loads(configmap_files(render("rabbitmq/statefulset"), "definitions.json").popitem()[1])
    by_placeholder = {p["user"]: p for p in definitions["permissions"]}
    operator = {p["metadata"]["name"]: p["spec"]["permissions"] for p in find(render("rabbitmq/operator"), "Permission")}
    for role in ("gateway", "agent"):
        expected = by_placeholder[f"@{role.upper()}_USER@"]
        assert operator[f"resofleet-{role}"] == {k: expected[k] for k in ("configure", "write", "read")}


def secret_keys(objects: tuple[Obj, ...], name: str) -> set[str]:
    (secret,) = [s for s in find(objects, "Secret") if s["metadata"]["name"] == name]
    return {*secret.get("stringData", {}), *secret.get("data", {})}


# -- the notifier ----------------------------------------------------------------------------


@with_fleet
def test_the_notifier_runs_two_replicas_probed_and_scraped_on_its_health_port(name: str, loader_env: None, tmp_path: Path) -> None:
    """Two replicas (they share the broker's queues), a PDB keeping one, probes on the port
    `[notifier] health` listens on, the prometheus.io annotations naming it, its own
    broker user, and a grace period over a POST's timeout."""
    objects = render(name)
    deployment, template = workload(objects, NOTIFIER)
    assert deployment["spec"]["replicas"] == 2
    assert any(matches(p["spec"]["selector"]["matchLabels"], NOTIFIER) and p["spec"]["minAvailable"] == 1
               for p in find(objects, "PodDisruptionBudget"))
    (notifier,) = containers(template)
    assert notifier["args"][0] == "notifier"
    (config,) = [d for (cm, k), d in toml_files(objects).items() if k == "notifier.toml"]
    health = int(config["notifier"]["health"].rsplit(":", 1)[1])
    assert config["notifier"]["health"].startswith("0.0.0.0:")  # the kubelet and Prometheus reach it
    for probe in ("readinessProbe", "livenessProbe"):
        assert port_number(notifier, notifier[probe]["httpGet"]["port"]) == health
    assert notifier["readinessProbe"]["httpGet"]["path"] == "/readyz"
    annotations = template["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], int(annotations["prometheus.io/port"]), annotations["prometheus.io/path"]) == ("true", health, "/metrics")
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in notifier["env"] if "valueFrom" in e}
    assert refs == {"resofleet-broker-notifier"}
    assert template["spec"]["terminationGracePeriodSeconds"] > max(h.get("timeout", REQUEST_TIMEOUT) for h in config["webhooks"])


@with_fleet
def test_the_notifier_reaches_the_broker_dns_and_https_outside_the_cluster_only(name: str) -> None:
    """Egress: the broker on 5672, DNS, and 443 to addresses outside the cluster's private
    ranges and the metadata service; ingress: its metrics port from the monitoring
    namespace alone."""
    objects = render(name)
    brokers = broker_pod_labels(objects)
    _, template = workload(objects, NOTIFIER)
    labels = template["metadata"]["labels"]
    kinds = set()
    for rule in rules(policies_for(objects, labels, "Egress"), "egress"):
        peers = rule.get("to")
        assert peers, "an egress rule without `to` opens everything"
        if peers == [DNS_PEER]:
            assert ports_of(rule) == {(53, "UDP"), (53, "TCP")}
            kinds.add("dns")
        elif all("ipBlock" in p for p in peers):
            assert ports_of(rule) == {(443, "TCP")}, rule
            for block in (p["ipBlock"] for p in peers):
                network = ipaddress.ip_network(block["cidr"])
                excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
                for private in PRIVATE_RANGES[network.version]:
                    closed = ipaddress.ip_network(private)
                    if closed.subnet_of(network):  # type: ignore[arg-type]
                        assert any(closed.subnet_of(e) for e in excepted), f"{block['cidr']} opens {private}"  # type: ignore[arg-type]
            kinds.add("https")
        else:
            assert len(peers) == 1 and set(peers[0]) == {"podSelector"} and ports_of(rule) == {(5672, "TCP")}, rule
            if name != "base":
                assert any(matches(peers[0]["podSelector"], b) for b in brokers), "selects no broker pod"
            kinds.add("broker")
    assert kinds == {"dns", "https", "broker"}
    allowed = rules(policies_for(objects, labels, "Ingress"), "ingress")
    assert allowed
    for rule in allowed:
        assert rule.get("from") == [MONITORING_PEER] and ports_of(rule) == {(8002, "TCP")}, rule


def test_the_example_webhook_secret_is_refused(loader_env: None, tmp_path: Path) -> None:
    """The committed resofleet-webhooks Secret fails closed: too short to sign with."""
    objects = render("base")
    (secret,) = [s for s in find(objects, "Secret") if s["metadata"]["name"] == "resofleet-webhooks"]
    (document,) = [d for (cm, k), d in toml_files(objects).items() if k == "notifier.toml"]
    for hook in document["webhooks"]:
        path = tmp_path / Path(hook["secret_file"]).name
        path.write_text(secret["stringData"][path.name])
        hook["secret_file"] = str(path)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        parse_config(document)

