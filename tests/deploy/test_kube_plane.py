"""The loopback control plane itself: real authentication and RBAC, the scheduler placing pods on kwok nodes."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support.kube import finish_pod, wait_for

from .conftest import CPU_NODE, GPU_NODE


def _pod(name: str, **spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/none:1"}], **spec},
    }


def test_plane_runs_real_kubernetes(kube):
    version = client.VersionApi(kube.api_client()).get_code()
    assert version.git_version.startswith("v1.36.")
    assert kube.startup_s is not None and kube.startup_s < 60


def test_pods_are_scheduled_run_and_finish_on_kwok_nodes(kube, namespace):
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_pod(namespace, _pod("plain"))
    pod = wait_for(
        "pod Running", lambda: (p := core.read_namespaced_pod("plain", namespace)).status.phase == "Running" and p
    )
    assert pod.spec.node_name == CPU_NODE  # the GPU node's taints keep it off
    finish_pod(core, namespace, "plain", 3)
    pod = wait_for(
        "pod Failed", lambda: (p := core.read_namespaced_pod("plain", namespace)).status.phase == "Failed" and p
    )
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3


def test_gpu_pods_need_the_pool_and_tolerations(kube, namespace):
    core = client.CoreV1Api(kube.api_client())
    gpu = {"resources": {"limits": {"nvidia.com/gpu": "2"}}}
    untolerated = _pod("no-toleration")
    untolerated["spec"]["containers"][0].update(gpu)
    core.create_namespaced_pod(namespace, untolerated)
    tolerated = _pod(
        "gpu",
        nodeSelector={"pool": "gpu"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}, {"key": "dedicated", "operator": "Exists"}],
    )
    tolerated["spec"]["containers"][0].update(gpu)
    core.create_namespaced_pod(namespace, tolerated)
    pod = wait_for(
        "GPU pod Running", lambda: (p := core.read_namespaced_pod("gpu", namespace)).status.phase == "Running" and p
    )
    assert pod.spec.node_name == GPU_NODE

    # no node offers nvidia.com/gpu without the taints: the scheduler leaves the other one Pending, and says why
    def unschedulable():
        conds = core.read_namespaced_pod("no-toleration", namespace).status.conditions or []
        return next((c for c in conds if c.type == "PodScheduled" and c.reason == "Unschedulable"), None)

    cond = wait_for("Unschedulable condition", unschedulable)
    assert "Insufficient nvidia.com/gpu" in cond.message or "untolerated taint" in cond.message


def test_unauthenticated_and_unbound_callers_are_refused(kube, namespace):
    anonymous = client.CoreV1Api(kube.api_client(token="not-a-token"))
    with pytest.raises(ApiException) as err:
        anonymous.list_namespaced_pod(namespace)
    assert err.value.status == 401
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    nobody = client.CoreV1Api(kube.api_client(token=kube.token(namespace, "nobody")))
    with pytest.raises(ApiException) as err:
        nobody.list_namespaced_pod(namespace)
    assert err.value.status == 403
