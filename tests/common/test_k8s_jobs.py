"""The Kubernetes job backend, without a cluster.

What runs against what:
- Jobs built from the chart's rendered template (real Helm engine) are validated against the Kubernetes 1.30
  OpenAPI schema (kubernetes-validate, strict).
- The lifecycle logic reads real `V1Job` objects: JSON in the shape a 1.31+ API server returns (Job controller status
  with SuccessCriteriaMet/Complete, FailureTarget/Failed, deletionTimestamp), deserialized by the real client.
- The launcher (create / read status / delete / pod logs) runs the real `kubernetes` client (BatchV1Api,
  CoreV1Api, its REST layer and serializer) over HTTP against `RecordedApiServer` below: a small loopback HTTP
  server that answers the batch/v1 Job and v1 Pod endpoints with the API server's documented semantics (201 on
  create, 409 AlreadyExists, 404 NotFound Status, foreground deletion keeping the object with a deletionTimestamp and
  the foregroundDeletion finalizer until its pods are gone). It is a test double, not Kubernetes: no controller
  runs; each test moves the Job's status the way the Job controller would.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import kubernetes_validate
import pytest
from kubernetes import client as k8s
from smf.common import jobs, k8s_jobs
from smf.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unavailable

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


# ---- the launcher over HTTP against recorded API semantics ------------------------------------------------------


class RecordedApiServer:
    """Loopback HTTP server answering the Job/Pod endpoints the backend uses, with the API server's semantics.

    `jobs[name]` is the stored object; tests change `status` as the Job controller would and call
    `finish_foreground_deletion(name)` for what the garbage collector does once the pods are gone.
    """

    def __init__(self):
        self.jobs: dict[str, dict] = {}
        self.pods: dict[str, dict] = {}
        self.logs: dict[str, str] = {}
        self.requests: list[tuple[str, str, dict | None]] = []
        self.forbidden = False
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.host = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def status_obj(code, reason, message, name=None, kind="jobs"):
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": {"name": name, "group": "batch", "kind": kind},
            "code": code,
        }

    def finish_foreground_deletion(self, name):
        with self.lock:
            self.jobs.pop(name)
            for pod in [
                p for p, o in self.pods.items() if o["metadata"]["labels"].get(k8s_jobs.JOB_NAME_LABEL) == name
            ]:
                self.pods.pop(pod)

    def add_pod(self, job_name, index=0, log=""):
        name = f"{job_name}-{index}-{uuid.uuid4().hex[:5]}"
        self.pods[name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NS,
                "creationTimestamp": NOW,
                "labels": {k8s_jobs.JOB_NAME_LABEL: job_name},
                "annotations": {k8s_jobs.COMPLETION_INDEX_ANNOTATION: str(index)},
            },
            "spec": {"containers": [{"name": "trainer", "image": "smf"}]},
        }
        self.logs[name] = log

    def _handler(self):
        return type("Handler", (_ApiHandler,), {"api": self})


class _ApiHandler(BaseHTTPRequestHandler):
    """The routes of RecordedApiServer; `api` is the server whose state they read and change (under its lock)."""

    api: RecordedApiServer

    def log_message(self, *args):
        pass

    def reply(self, code, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None

    def route(self, method):
        url = urlparse(self.path)
        body = self.body() if method in ("POST", "DELETE") else None
        server = self.api
        with server.lock:
            server.requests.append((method, self.path, body))
            if server.forbidden:
                return self.reply(
                    403,
                    server.status_obj(
                        403,
                        "Forbidden",
                        'jobs.batch is forbidden: User "system:serviceaccount:sound:default" cannot create',
                    ),
                )
            if re.fullmatch(rf"/apis/batch/v1/namespaces/{NS}/jobs", url.path):
                return self.create_job(body) if method == "POST" else self.reply(405, {})
            if m := re.fullmatch(rf"/apis/batch/v1/namespaces/{NS}/jobs/([^/]+)(/status)?", url.path):
                return self.job(method, m.group(1), body)
            if url.path == f"/api/v1/namespaces/{NS}/pods" and method == "GET":
                return self.list_pods(url)
            if m := re.fullmatch(rf"/api/v1/namespaces/{NS}/pods/([^/]+)/log", url.path):
                return self.pod_log(m.group(1), url)
        return self.reply(404, server.status_obj(404, "NotFound", f"no route {self.path}"))

    def create_job(self, body):
        server = self.api
        name = body["metadata"]["name"]
        if name in server.jobs:
            return self.reply(409, server.status_obj(409, "AlreadyExists", f'jobs.batch "{name}" already exists', name))
        body["metadata"].update(
            uid=str(uuid.uuid4()), resourceVersion="1", generation=1, creationTimestamp=NOW, namespace=NS
        )
        body["status"] = {}
        server.jobs[name] = body
        return self.reply(201, body)

    def job(self, method, name, body):
        server = self.api
        if name not in server.jobs:
            return self.reply(404, server.status_obj(404, "NotFound", f'jobs.batch "{name}" not found', name))
        job = server.jobs[name]
        if method == "GET":
            return self.reply(200, job)
        if method == "DELETE":
            policy = (body or {}).get("propagationPolicy", "Background")
            if policy == "Foreground":  # object stays until the GC deleted its pods
                job["metadata"]["deletionTimestamp"] = NOW
                job["metadata"]["finalizers"] = ["foregroundDeletion"]
                return self.reply(200, job)
            server.jobs.pop(name)
            return self.reply(
                200,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Success",
                    "details": {"name": name, "group": "batch", "kind": "jobs"},
                },
            )
        return self.reply(404, server.status_obj(404, "NotFound", f"no route {self.path}"))

    def list_pods(self, url):
        selector = parse_qs(url.query).get("labelSelector", [""])[0]
        key, _, value = selector.partition("=")
        items = [p for p in self.api.pods.values() if p["metadata"]["labels"].get(key) == value]
        return self.reply(
            200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}
        )

    def pod_log(self, pod, url):
        text = self.api.logs.get(pod, "")
        tail = parse_qs(url.query).get("tailLines")
        if tail:
            text = "".join(text.splitlines(keepends=True)[-int(tail[0]) :])
        return self.reply(200, text, "text/plain")

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")


@pytest.fixture
def api():
    server = RecordedApiServer()
    yield server
    server.close()


@pytest.fixture
def backend(api, template):
    return k8s_jobs.KubernetesBackend(
        template=template, namespace=NS, api_client=k8s.ApiClient(k8s.Configuration(host=api.host))
    )


def test_lifecycle_create_running_succeeded(api, backend):
    job = jobs.launch("gan", ["--config", "c.json", "--out", "s3://smf/store/gan/a"], name="a", backend=backend)
    method, path, body = api.requests[0]
    assert (method, path) == ("POST", f"/apis/batch/v1/namespaces/{NS}/jobs")
    kubernetes_validate.validate(body, "1.30", strict=True)  # what the client actually sent
    assert body["spec"]["template"]["spec"]["containers"][0]["command"][2:5] == ["python", "-m", "smf.gan.train"]
    assert job.status() == "pending"
    stored = api.jobs[job.id]
    stored["status"] = {"active": 1, "ready": 1, "startTime": NOW}
    assert job.status() == "running" and not job.done
    stored["status"] = {
        "succeeded": 1,
        "startTime": NOW,
        "completionTime": NOW,
        "conditions": [cond("SuccessCriteriaMet", "CompletionsReached"), cond("Complete", "CompletionsReached")],
    }
    assert job.wait(timeout=5, poll=0.01) == "succeeded"
    api.finish_foreground_deletion(job.id)  # ttlSecondsAfterFinished removed it: the outcome is remembered
    assert job.status() == "succeeded"
    assert backend.get(job.id) is job


def test_lifecycle_failed_with_reason_and_logs(api, backend):
    job = jobs.launch("rnn", ["--config", "c.json"], name="r", backend=backend)
    api.add_pod(job.id, log="step 1 loss 3.2\nTraceback ...\nInvalidArgument: config: unknown key 'lr2'\n")
    api.jobs[job.id]["status"] = {
        "failed": 1,
        "startTime": NOW,
        "conditions": [
            cond("FailureTarget", "PodFailurePolicy", "Container trainer for pod sound/x failed with exit code 2"),
            cond("Failed", "PodFailurePolicy", "Container trainer for pod sound/x failed with exit code 2"),
        ],
    }
    assert job.status() == "failed"
    assert job.logs(tail=1) == "InvalidArgument: config: unknown key 'lr2'\n"
    status = jobs.poll_job(job)
    assert status.state == "failed" and "unknown key 'lr2'" in status.error
    assert any(p.startswith(f"/api/v1/namespaces/{NS}/pods?") and "job-name" in p for _, p, _ in api.requests)


def test_lifecycle_cancel_deletes_in_the_foreground(api, backend):
    job = jobs.launch("gan", ["--config", "c.json"], name="c", backend=backend)
    api.jobs[job.id]["status"] = {"active": 2, "ready": 2, "startTime": NOW}
    assert job.phase() == "running"
    job.cancel()
    method, path, body = api.requests[-1]
    assert (method, path) == ("DELETE", f"/apis/batch/v1/namespaces/{NS}/jobs/{job.id}")
    assert body["propagationPolicy"] == "Foreground"
    assert job.phase() == "deleted" and job.status() == "failed"  # pods still terminating (checkpointing)
    assert job.id in api.jobs and api.jobs[job.id]["metadata"]["finalizers"] == ["foregroundDeletion"]
    api.finish_foreground_deletion(job.id)
    assert job.phase() == "deleted"
    job.cancel()  # idempotent: a 404 on delete is fine


def test_job_that_vanishes_unasked_is_failed(api, backend):
    job = jobs.launch("gan", ["--config", "c.json"], name="v", backend=backend)
    api.finish_foreground_deletion(job.id)
    assert job.status() == "failed"


def test_api_errors_map_to_smf_errors(api, backend, template):
    with pytest.raises(NotFound):
        backend.get("no-such-job")
    fixed = spec(name="dup")
    backend.batch.create_namespaced_job(NS, k8s_jobs.build_job(template, fixed, name="lab-smf-train-gan-dup-1"))
    with pytest.raises(Exception) as raw:  # the client's own ConflictException ...
        backend.batch.create_namespaced_job(NS, k8s_jobs.build_job(template, fixed, name="lab-smf-train-gan-dup-1"))
    mapped = k8s_jobs._api_error(raw.value, "create job")  # ... mapped the way launch() maps it
    assert isinstance(mapped, AlreadyExists) and 'jobs.batch "lab-smf-train-gan-dup-1" already exists' in mapped.message
    api.forbidden = True
    with pytest.raises(PermissionDenied, match="job-launcher Role"):
        jobs.launch("gan", ["--config", "c.json"], name="f", backend=backend)


def test_backend_is_registered_for_smf_job_backend(monkeypatch, tmp_path, api):
    template_file = tmp_path / "job.yaml"
    import yaml

    template_file.write_text(yaml.safe_dump(training_job(render({}))))
    monkeypatch.setenv("SMF_JOB_TEMPLATE", str(template_file))
    monkeypatch.setenv("SMF_JOB_NAMESPACE", NS)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    (tmp_path / "kubeconfig").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "t",
                "clusters": [{"name": "t", "cluster": {"server": api.host}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}],
            }
        )
    )
    monkeypatch.setenv("SMF_JOB_BACKEND", "kubernetes")
    try:
        backend = jobs.get_backend()
        assert isinstance(backend, k8s_jobs.KubernetesBackend) and backend.namespace == NS
        job = jobs.launch("rnn", ["--config", "c.json"], name="env")
        assert job.id in api.jobs and job.status() == "pending"
    finally:
        jobs.register_backend("kubernetes", k8s_jobs.KubernetesBackend)  # drop the cached instance


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
