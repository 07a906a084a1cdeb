"""The deploy tests' Kubernetes: one real control plane per session (tests/support/kube.py), with kwok nodes.

    kube           the ControlPlane: .api_client(), .api_client(token=...), .token(ns, sa), .kubeconfig
    (nodes)        kwok-cpu-0 (plain) and kwok-gpu-0 (the GPU pool: nvidia.com/gpu capacity 8, the gpu-pool value
                   set's labels, and taints nvidia.com/gpu:NoSchedule + dedicated=training:NoSchedule)

Tests share the plane: each works in a namespace of its own (`namespace` fixture) and leaves the nodes alone.
"""

from __future__ import annotations

import secrets

import pytest
from support.kube import ControlPlane

CPU_NODE, GPU_NODE = "kwok-cpu-0", "kwok-gpu-0"
GPU_POOL_LABELS = {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb", "pool": "gpu"}
GPU_POOL_TAINTS = [
    {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
    {"key": "dedicated", "value": "training", "effect": "NoSchedule"},
]


# Package scope: the plane (~600 MB, a few % of a core even idle) stops when the deploy tests are done, instead of
# running beside the rest of the suite.
@pytest.fixture(scope="package")
def kube(tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("kube")).start()
    try:
        plane.add_node(CPU_NODE, wait=False)
        plane.add_node(
            GPU_NODE, labels=GPU_POOL_LABELS, taints=GPU_POOL_TAINTS, capacity={"nvidia.com/gpu": "8"}, wait=False
        )
        plane.wait_nodes_ready([CPU_NODE, GPU_NODE])
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(kube):
    """A fresh namespace for one test, deleted after it."""
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    name = f"t-{secrets.token_hex(4)}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    core.delete_namespace(name)
