"""The Kubernetes job backend, without a cluster: building Jobs, reading their status, template errors.

What runs against what:
- Jobs built from the chart's rendered template (real Helm engine) are validated against the Kubernetes 1.30
  OpenAPI schema (kubernetes-validate, strict).
- The lifecycle logic reads real `V1Job` objects: JSON in the shape a 1.31+ API server returns (Job controller status
  with SuccessCriteriaMet/Complete, FailureTarget/Failed, deletionTimestamp), deserialized by the real client.
- The launcher itself (create / read / delete / pod logs, RBAC, the Job controller acting on what it creates) runs
  against a real kube-apiserver with the chart's Role in tests/deploy/test_job_launcher.py and
  tests/deploy/test_gan_training_on_k8s.py; it used to run here against a loopback stand-in of the API server.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes import client as k8s
from smf.common import jobs, k8s_jobs
from smf.common.errors import InvalidArgument, Unavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from support.chart_render import VALUE_SETS, render, training_job

NS = "sound"
NOW = "2026-11-25T20:30:00Z"


@pytest.fixture(scope="module")
def template() -> k8s.V1Job:
    """The chart's default template: 1 GPU per pod, the default GPU toleration."""
    return k8s_jobs.load_template(training_job(render({})))


@pytest.fixture(scope="module")
def gpu_pool_template() -> k8s.V1Job:
    """4 GPUs per pod on a named pool (nodeSelector + two tolerations)."""
    return k8s_jobs.load_template(training_job(render(VALUE_SETS["gpu-pool"])))


def spec(kind="gan", name="mygan", gpus=0, **options) -> jobs.JobSpec:
    return jobs.JobSpec(
        name=name,
        kind=kind,
        module=f"smf.{kind}.train",
        args=["--config", f"s3://smf/store/{kind}/{name}/config.json", "--out", f"s3://smf/store/{kind}/{name}"],
        gpus=gpus,
        options=options,
    )


# ---- building -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gan", "rnn"])
def test_single_pod_job_for_each_trainer_is_schema_valid(template, kind):
    manifest = k8s_jobs.to_manifest(k8s_jobs.build_job(template, spec(kind)))
    kubernetes_validate.validate(manifest, "1.30", strict=True)
    pod = manifest["spec"]["template"]["spec"]
    (trainer,) = pod["containers"]
    assert trainer["command"] == [
        "tini",
        "--",
        "python",
        "-m",
        f"smf.{kind}.train",
        "--config",
        f"s3://smf/store/{kind}/mygan/config.json",
        "--out",
        f"s3://smf/store/{kind}/mygan",
    ]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "1"  # gpus=0 keeps the chart's count
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "completionMode" not in manifest["spec"]
    assert manifest["metadata"]["labels"]["smf/kind"] == kind
    assert manifest["spec"]["template"]["metadata"]["labels"]["smf/run"] == "mygan"
    assert re.fullmatch(rf"lab-smf-train-{kind}-mygan-[0-9a-f]{{6}}", manifest["metadata"]["name"])
    assert "smf/rendezvous-port" not in manifest["metadata"].get("annotations", {})
    env = {e["name"]: e for e in trainer["env"]}
    assert env["SMF_JOB_ID"]["value"] == manifest["metadata"]["name"]
    assert env["SMF_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "lab-smf-s3"


def test_indexed_job_wires_torchrun_rendezvous(template):
    job = k8s_jobs.build_job(template, spec("gan", gpus=8, nodes=4), name="lab-smf-train-gan-big-abc123")
    manifest = k8s_jobs.to_manifest(job)
    kubernetes_validate.validate(manifest, "1.30", strict=True)
    s = manifest["spec"]
    assert (s["completionMode"], s["completions"], s["parallelism"]) == ("Indexed", 4, 4)
    (trainer,) = s["template"]["spec"]["containers"]
    assert trainer["command"][:9] == [
        "tini",
        "--",
        "torchrun",
        "--nnodes=4",
        "--nproc-per-node=8",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "-m",
    ]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "8"
    env = {e["name"]: e for e in trainer["env"]}
    # Pod 0 of the Indexed Job is hosted as <job>-0 under the headless Service named by the template's subdomain.
    assert s["template"]["spec"]["subdomain"] == "lab-smf-training"
    assert env["MASTER_ADDR"]["value"] == "lab-smf-train-gan-big-abc123-0.lab-smf-training"
    assert env["MASTER_PORT"]["value"] == "29500"
    assert (
        env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    # Env vars referenced as $(VAR) must be defined before the kubelet expands the command.
    assert all(v in env for v in ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT"))


def test_single_node_multi_gpu_uses_standalone_torchrun(template, gpu_pool_template):
    job = k8s_jobs.to_manifest(k8s_jobs.build_job(template, spec("rnn", gpus=2)))
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][2:5] == [
        "torchrun",
        "--standalone",
        "--nproc-per-node=2",
    ]
    # The GPU pool's own count (4) and placement come from the chart when the caller does not ask.
    job = k8s_jobs.to_manifest(k8s_jobs.build_job(gpu_pool_template, spec("gan")))
    kubernetes_validate.validate(job, "1.30", strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"][2:5] == ["torchrun", "--standalone", "--nproc-per-node=4"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["nodeSelector"]["pool"] == "gpu" and pod["priorityClassName"] == "training-low"
    assert {t["key"] for t in pod["tolerations"]} == {"nvidia.com/gpu", "dedicated"}


def test_build_rejects_bad_requests(template):
    with pytest.raises(InvalidArgument, match="options: unknown .*queue"):
        k8s_jobs.build_job(template, spec(queue="fast"))
    with pytest.raises(InvalidArgument, match="nodes"):
        k8s_jobs.build_job(template, spec(nodes=0))
    long_name = k8s_jobs.job_name("lab-smf-train", "gan", "x" * 200)
    assert len(long_name) <= k8s_jobs.MAX_JOB_NAME and re.fullmatch(r"[a-z0-9-]+", long_name)


def test_template_errors_name_the_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\n")
    with pytest.raises(InvalidArgument, match=str(path)):
        k8s_jobs.load_template(path)
    path.write_text("apiVersion: batch/v1\nkind: Job\nspec:\n  backofLimit: 3\n  template: {spec: {containers: []}}\n")
    with pytest.raises(InvalidArgument, match="not a valid batch/v1 Job"):
        k8s_jobs.load_template(path)


# ---- reading status: real V1Job objects as the API server returns them ----------------------------------------


def job_json(status: dict, **meta) -> k8s.V1Job:
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "namespace": NS, "uid": str(uuid.uuid4()), "creationTimestamp": NOW, **meta},
        "spec": {"template": {"spec": {"containers": [{"name": "trainer", "image": "smf"}], "restartPolicy": "Never"}}},
        "status": status,
    }
    return k8s.ApiClient().deserialize(json.dumps(body), "V1Job", "application/json")


def cond(type_, reason="", message=""):
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": NOW,
        "lastTransitionTime": NOW,
    }


@pytest.mark.parametrize(
    "status,meta,phase",
    [
        ({}, {}, "pending"),  # just created
        ({"active": 1, "ready": 0, "startTime": NOW, "terminating": 0}, {}, "pending"),  # waiting for a GPU node
        ({"active": 1, "ready": 1, "startTime": NOW}, {}, "running"),
        ({"active": 1, "ready": 0, "failed": 1, "startTime": NOW}, {}, "pending"),  # retry pod after a failure
        (
            {"succeeded": 1, "startTime": NOW, "conditions": [cond("SuccessCriteriaMet", "CompletionsReached")]},
            {},
            "succeeded",
        ),
        (
            {
                "succeeded": 1,
                "completionTime": NOW,
                "startTime": NOW,
                "conditions": [
                    cond("SuccessCriteriaMet", "CompletionsReached"),
                    cond("Complete", "CompletionsReached"),
                ],
            },
            {},
            "succeeded",
        ),
        (
            {
                "failed": 4,
                "startTime": NOW,
                "terminating": 1,
                "conditions": [
                    cond("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
                ],
            },
            {},
            "failed",
        ),
        (
            {
                "failed": 1,
                "startTime": NOW,
                "conditions": [cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")],
            },
            {},
            "failed",
        ),
        (
            {"failed": 1, "conditions": [cond("Failed", "PodFailurePolicy", "Container trainer exited with 2")]},
            {},
            "failed",
        ),
        ({"active": 1, "ready": 1, "conditions": [{**cond("Complete"), "status": "False"}]}, {}, "running"),
        (
            {"active": 1, "ready": 1, "terminating": 1},
            {"deletionTimestamp": NOW, "finalizers": ["foregroundDeletion"]},
            "deleted",
        ),
    ],
)
def test_phase_from_job_status(status, meta, phase):
    assert k8s_jobs.job_phase(job_json(status, **meta)) == phase


def test_failure_message_carries_reason():
    job = job_json(
        {"conditions": [cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]}
    )
    assert k8s_jobs.failure_message(job) == "BackoffLimitExceeded: Job has reached the specified backoff limit"


# ---- without a server ---------------------------------------------------------------------------------------------


def test_created_at_is_utc_aware():
    # The client parses API timestamps into aware datetimes (used to order pods for logs).
    job = job_json({"startTime": NOW})
    assert job.status.start_time == datetime(2026, 11, 25, 20, 30, tzinfo=UTC)


def test_unreachable_api_server_is_unavailable(template):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    config = k8s.Configuration(host=f"http://127.0.0.1:{dead}")
    config.retries = 0
    backend = k8s_jobs.KubernetesBackend(template=template, namespace=NS, api_client=k8s.ApiClient(config))
    with pytest.raises(Unavailable, match="unreachable"):
        jobs.launch("gan", ["--config", "c.json"], name="down", backend=backend)
