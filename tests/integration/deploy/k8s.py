"""Rendering deploy/k8s with ``kubectl kustomize`` and reading what comes out.

There is no cluster on the machines that run the tests, so the manifests are rendered
(``kubectl kustomize``: Debian's ``kubernetes-client``, or ``$RESOFLEET_KUBECTL``) and the
objects read as data: their pods, containers, the config files in their ConfigMaps and the
NetworkPolicies that select them. Each kustomization is rendered once per test session.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = [
    "BROKER_OPERATOR_LABELS",
    "DEPLOYABLE",
    "K8S",
    "KUSTOMIZATIONS",
    "Obj",
    "broker_pod_labels",
    "configmap_files",
    "find",
    "generated_name",
    "kubectl",
    "matches",
    "one",
    "pod_templates",
    "render",
    "secret_value",
    "toml_files",
]

#: The manifests.
K8S: Final = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
#: Every kustomization under deploy/k8s, each rendered and checked on its own.
KUSTOMIZATIONS: Final = (
    "base",
    "rabbitmq/statefulset",
    "rabbitmq/operator",
    "overlays/example",
    "overlays/operator",
)
#: The ones a provider applies: a whole fleet, broker included.
DEPLOYABLE: Final = ("overlays/example", "overlays/operator")
#: Seconds one `kubectl kustomize` may take (about 0.1 s here; the bound is for a machine
#: that is busy running the rest of the suite).
RENDER_TIMEOUT: Final = 120.0
#: The labels the RabbitMQ Cluster Operator gives the pods of a RabbitmqCluster named
#: NAME (its internal/metadata/label.go); ``{name}`` is filled in.
BROKER_OPERATOR_LABELS: Final = {
    "app.kubernetes.io/name": "{name}",
    "app.kubernetes.io/component": "rabbitmq",
    "app.kubernetes.io/part-of": "pivotal-rabbitmq",
}

Obj = dict[str, Any]


def kubectl() -> str | None:
    """The kubectl to render with: ``$RESOFLEET_KUBECTL``, else the one on PATH."""
    return os.environ.get("RESOFLEET_KUBECTL") or shutil.which("kubectl")


@functools.cache
def render(name: str) -> tuple[Obj, ...]:
    """The objects ``kubectl kustomize deploy/k8s/<name>`` prints (fails on any error)."""
    tool = kubectl()
    assert tool is not None, "no kubectl"
    done = subprocess.run(
        [tool, "kustomize", str(K8S / name)],
        capture_output=True, text=True, timeout=RENDER_TIMEOUT, check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {name} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def find(objects: tuple[Obj, ...], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objects
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_templates(objects: tuple[Obj, ...]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod template) for every object that makes pods."""
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield o, o["spec"]["template"]
        elif o["kind"] == "CronJob":
            yield o, o["spec"]["jobTemplate"]["spec"]["template"]


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` only, as every selector here) selects."""
    assert not selector.get("matchExpressions"), "a selector with matchExpressions: teach the test"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def broker_pod_labels(objects: tuple[Obj, ...]) -> list[dict[str, str]]:
    """The labels of the broker's pods: the StatefulSet's, or those the Cluster Operator
    gives a RabbitmqCluster's pods."""
    labels = [
        dict(w["spec"]["template"]["metadata"]["labels"])
        for w in find(objects, "StatefulSet", "rabbitmq")
    ]
    for cluster in find(objects, "RabbitmqCluster"):
        name = cluster["metadata"]["name"]
        labels.append({k: v.format(name=name) for k, v in BROKER_OPERATOR_LABELS.items()})
    return labels


def configmap_files(objects: tuple[Obj, ...], suffix: str) -> dict[tuple[str, str], str]:
    """``{(configmap name, key): text}`` for every ConfigMap entry whose key ends in suffix."""
    return {
        (cm["metadata"]["name"], key): text
        for cm in find(objects, "ConfigMap")
        for key, text in cm.get("data", {}).items()
        if key.endswith(suffix)
    }


def toml_files(objects: tuple[Obj, ...]) -> dict[tuple[str, str], dict[str, Any]]:
    return {where: tomllib.loads(text) for where, text in configmap_files(objects, ".toml").items()}


def secret_value(objects: tuple[Obj, ...], name: str, key: str) -> str:
    """A key of a Secret in the render, from ``stringData`` or (decoded) ``data``."""
    secret = one(objects, "Secret", name)
    if key in secret.get("stringData", {}):
        return str(secret["stringData"][key])
    return base64.b64decode(secret["data"][key]).decode()


def generated_name(objects: tuple[Obj, ...], kind: str, base: str) -> str:
    """The name kustomize gave a generated object (``base`` plus its hash suffix)."""
    names = [
        o["metadata"]["name"] for o in find(objects, kind)
        if re.fullmatch(rf"{re.escape(base)}(-[a-z0-9]{{10}})?", o["metadata"]["name"])
    ]
    assert len(names) == 1, f"expected one {kind} generated from {base}, found {names}"
    return names[0]
