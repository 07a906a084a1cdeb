"""Render the chart with the real Helm engine (helm-python-sdk binds Helm's Go SDK; no binary, no cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python")
from helm_python import _native  # noqa: E402 -- after the importorskip

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "smf"
RELEASE, NAMESPACE = "lab", "sound"

# The value sets the issue names, each a realistic install.
VALUE_SETS = {
    "defaults": {},
    "external-s3-existing-secret": {
        "minio": {"enabled": False},
        "s3": {
            "endpoint": "https://s3.eu-west-1.amazonaws.com",
            "bucket": "lab-sounds",
            "prefix": "smf/prod",
            "region": "eu-west-1",
            "existingSecret": "lab-s3-creds",
            "existingSecretAccessKeyKey": "AWS_ACCESS_KEY_ID",
            "existingSecretSecretKeyKey": "AWS_SECRET_ACCESS_KEY",
        },
        "auth": {"existingSecret": "lab-smf-token", "existingSecretKey": "bearer"},
    },
    "gpu-pool": {
        "training": {
            "gpu": {"resourceName": "nvidia.com/gpu", "count": 4},
            "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb", "pool": "gpu"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoSchedule"},
            ],
            "priorityClassName": "training-low",
        },
    },
    "hpa-off": {"services": {"gan": {"autoscaling": {"enabled": False}, "replicaCount": 3}}},
    "minio-off": {
        "minio": {"enabled": False},
        "s3": {"endpoint": "minio.storage.svc:9000", "accessKey": "smf", "secretKey": "a-long-secret-key-123"},
        "training": {"backend": "local"},
        "networkPolicy": {"enabled": False},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "image": {"digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": [{"name": "regcred"}],
    },
}


# The API a ServiceMonitor needs; the chart renders one only where the cluster serves it (.Capabilities).
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
# Offline, render as for a cluster with the Prometheus Operator, like `helm template --api-versions ...`.
OPERATOR_CLUSTER = (SERVICE_MONITOR_API,)


def render(
    values: dict, namespace: str = NAMESPACE, api_versions: tuple[str, ...] = OPERATOR_CLUSTER
) -> dict[str, list[dict]]:
    """{template path: [objects]} for a value set (NOTES.txt left out: not a manifest), released into `namespace`,
    for a cluster that serves `api_versions` beyond the built-in ones (() = a bare cluster)."""
    return _documents(render_text(values, namespace, api_versions))


def render_text(
    values: dict, namespace: str = NAMESPACE, api_versions: tuple[str, ...] = OPERATOR_CLUSTER
) -> dict[str, str]:
    """{template path: rendered text}, NOTES.txt included."""
    with helm.Chart.load(CHART) as chart:
        if not api_versions:
            return chart.render(values=values, name=RELEASE, namespace=namespace)
        # helm-python 0.2.2's native render takes `api_versions` (helm template --api-versions) but Chart.render
        # does not pass it on: call the native function with the same options Chart.render builds.
        options = {"name": RELEASE, "namespace": namespace, "api_versions": list(api_versions)}
        return json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(options)))


def _documents(rendered: dict[str, str]) -> dict[str, list[dict]]:
    out = {}
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        if docs:
            out[path] = docs
    return out


def objects(rendered: dict[str, list[dict]]) -> list[dict]:
    return [o for docs in rendered.values() for o in docs]


def by_kind(rendered, kind: str) -> list[dict]:
    return [o for o in objects(rendered) if o["kind"] == kind]


def training_job(rendered) -> dict:
    """The Job template the chart puts in the training ConfigMap."""
    (cm,) = [o for o in by_kind(rendered, "ConfigMap") if o["metadata"]["name"].endswith("-training-template")]
    return yaml.safe_load(cm["data"]["job.yaml"])
