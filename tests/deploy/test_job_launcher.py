"""The Job launcher (smf.common.k8s_jobs) against the real API server, as the gan and rnn services run it.

What runs against what: the session's control plane (tests/support/kube.py: kube-apiserver, controller-manager with
the real Job, garbage-collector and EndpointSlice controllers, scheduler, kwok playing the kubelet). Each test puts
the chart's identities into its own namespace exactly as the chart renders them (ServiceAccounts, the job-launcher
Role and RoleBinding, the training-template ConfigMap, the rendezvous headless Service), created with the admin
client rather than by `helm install`: these tests are about the launcher and its Role, and the chart's whole install
is tests/deploy/test_helm_install.py's job. The launcher then authenticates with a token the API server issues for
the job-launcher ServiceAccount, reads its template from the ConfigMap as the mounted file would hold it, and runs
on the GPU pool's kwok node. kwok decides how each pod ends (`finish_pod`); no trainer runs.
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException
from smf.common import jobs, k8s_jobs
from smf.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from support.chart_render import RELEASE, VALUE_SETS, render
from support.kube import finish_pod, wait_for

from .conftest import GPU_NODE

# The GPU-pool value set (nodeSelector + tolerations for kwok-gpu-0) with one GPU per pod, so that the GPU node's 8
# fit every pod here, and without its PriorityClass (a cluster-wide object these tests leave alone).
VALUES = {
    "training": {
        **VALUE_SETS["gpu-pool"]["training"],
        "gpu": {"resourceName": "nvidia.com/gpu", "count": 1},
        "priorityClassName": "",
    }
}
LAUNCHER = f"{RELEASE}-smf-job-launcher"
TRAINING_SA, PLAIN_SA = f"{RELEASE}-smf-training", f"{RELEASE}-smf"
TEMPLATE_CONFIGMAP, RENDEZVOUS_SERVICE = f"{RELEASE}-smf-training-template", f"{RELEASE}-smf-training"
CHART_FILES = ("smf/templates/rbac.yaml", "smf/templates/training-template.yaml")
FAIL_JOB_EXIT_CODE = 2  # the chart's training.failJobOnExitCodes: a config error, retrying cannot help


def install_identities(kube, namespace: str, tmp_path) -> str:
    """Create the chart's ServiceAccounts, Role, RoleBinding, template ConfigMap and rendezvous Service in
    `namespace`; returns the path of the Job template as the gan/rnn pods see it (the ConfigMap's job.yaml)."""
    admin = kube.api_client()
    rendered = render(VALUES, namespace=namespace)
    for path in CHART_FILES:
        for obj in rendered[path]:
            utils.create_from_dict(admin, obj, namespace=namespace)
    config_map = client.CoreV1Api(admin).read_namespaced_config_map(TEMPLATE_CONFIGMAP, namespace)
    template = tmp_path / "job.yaml"
    template.write_text(config_map.data["job.yaml"])
    return str(template)


def launcher_client(kube, namespace: str) -> client.ApiClient:
    """An API client holding what the gan/rnn pod's projected token would hold: the job-launcher SA's token."""
    return kube.api_client(token=kube.token(namespace, LAUNCHER))


@pytest.fixture
def chart(kube, namespace, tmp_path) -> str:
    return install_identities(kube, namespace, tmp_path)


@pytest.fixture
def backend(kube, namespace, chart) -> k8s_jobs.KubernetesBackend:
    return k8s_jobs.KubernetesBackend(template=chart, namespace=namespace, api_client=launcher_client(kube, namespace))


@pytest.fixture
def core(kube) -> client.CoreV1Api:
    return client.CoreV1Api(kube.api_client())


def launch(backend, kind="gan", name="run", **options) -> k8s_jobs.KubernetesJob:
    args = ["--config", f"s3://smf/store/{kind}/{name}/config.json", "--out", f"s3://smf/store/{kind}/{name}"]
    job = jobs.launch(kind, args, name=name, backend=backend, **options)
    assert isinstance(job, k8s_jobs.KubernetesJob)
    return job


def job_pods(core, namespace: str, job: k8s_jobs.KubernetesJob) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"{k8s_jobs.JOB_NAME_LABEL}={job.id}").items
    return sorted(pods, key=lambda p: p.metadata.creation_timestamp)


def running_pods(core, namespace, job, n: int = 1, *, besides: tuple[client.V1Pod, ...] = ()) -> list[client.V1Pod]:
    """Wait for `n` Running pods of `job` other than those in `besides` (the ones a test just ended)."""
    old = {p.metadata.name for p in besides}

    def running():
        pods = [
            p
            for p in job_pods(core, namespace, job)
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp and p.metadata.name not in old
        ]
        return pods if len(pods) == n else None

    return wait_for(f"{n} running pod(s) of {job.id}", running, timeout=30)


def job_gone(batch: client.BatchV1Api, namespace: str, name: str) -> bool:
    try:
        batch.read_namespaced_job(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def wait_phase(job: k8s_jobs.KubernetesJob, phase: str, timeout: float = 30) -> str:
    return wait_for(f"{job.id} {phase}", lambda: job.phase() == phase and phase, timeout=timeout)


# ---- the lifecycle ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gan", "rnn"])
def test_run_is_created_runs_and_succeeds(kube, namespace, backend, core, kind):
    job = launch(backend, kind)
    assert job.phase() in ("pending", "running")
    (pod,) = running_pods(core, namespace, job)
    wait_phase(job, "running")  # status.ready counted by the Job controller from the pod's Ready condition
    # what the server stored is what build_job made, on the GPU pool, as the training ServiceAccount
    assert pod.spec.node_name == GPU_NODE and pod.spec.service_account_name == TRAINING_SA
    trainer = pod.spec.containers[0]
    assert trainer.command[:5] == ["tini", "--", "python", "-m", f"smf.{kind}.train"]
    assert trainer.resources.limits["nvidia.com/gpu"] == "1"
    assert pod.metadata.labels[k8s_jobs.RUN_LABEL] == "run" and pod.metadata.labels[k8s_jobs.KIND_LABEL] == kind

    finish_pod(core, namespace, pod.metadata.name, 0)
    assert job.wait(timeout=30, poll=0.1) == "succeeded"
    # another replica (or this one after a restart) re-attaches by name and reads the same outcome
    again = k8s_jobs.KubernetesBackend(
        template=backend.template, namespace=namespace, api_client=launcher_client(kube, namespace)
    )
    assert again.get(job.id).status() == "succeeded"
    # ttlSecondsAfterFinished removes finished Jobs: the handle remembers the outcome it saw
    batch = client.BatchV1Api(kube.api_client())
    batch.delete_namespaced_job(job.id, namespace, propagation_policy="Background")
    wait_for("the Job removed", lambda: job_gone(batch, namespace, job.id))
    assert job.status() == "succeeded"


def test_a_job_deleted_by_someone_else_is_failed(kube, namespace, backend, core):
    job = launch(backend)
    running_pods(core, namespace, job)
    batch = client.BatchV1Api(kube.api_client())
    batch.delete_namespaced_job(job.id, namespace, propagation_policy="Foreground")  # kubectl delete job, not cancel
    wait_for("the Job removed", lambda: job_gone(batch, namespace, job.id))
    assert job.status() == "failed"


def test_exit_code_in_fail_job_on_exit_codes_fails_the_job_at_once(namespace, backend, core):
    job = launch(backend)
    (pod,) = running_pods(core, namespace, job)
    finish_pod(core, namespace, pod.metadata.name, FAIL_JOB_EXIT_CODE)
    assert job.wait(timeout=30, poll=0.1) == "failed"
    message = k8s_jobs.failure_message(job.last)
    assert message.startswith("PodFailurePolicy:") and f"exit code {FAIL_JOB_EXIT_CODE}" in message
    # FailJob: failed after one pod although backoffLimit (3) is not spent (any other exit code is retried, after
    # the Job controller's 10 s pod-failure backoff, and would end as BackoffLimitExceeded)
    # (the outcome is read at the FailureTarget condition, when the pod may still be an uncounted terminated one)
    status = job.last.status
    uncounted = status.uncounted_terminated_pods
    assert (status.failed or 0) + len((uncounted.failed if uncounted else None) or []) == 1
    status = jobs.poll_job(job)
    assert status.state == "failed" and "PodFailurePolicy" in status.error


def test_eviction_is_a_disruption_not_a_failure(namespace, backend, core):
    job = launch(backend)
    (pod,) = running_pods(core, namespace, job)
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=namespace))
    core.create_namespaced_pod_eviction(pod.metadata.name, namespace, eviction)  # what a node drain does
    (replacement,) = running_pods(core, namespace, job, besides=(pod,))
    wait_phase(job, "running")
    # podFailurePolicy Ignore on DisruptionTarget: the evicted pod (SIGTERM, exit 143) is not counted as a failure
    assert not job.last.status.failed
    finish_pod(core, namespace, replacement.metadata.name, 0)
    assert job.wait(timeout=30, poll=0.1) == "succeeded"


def test_cancel_deletes_the_job_and_its_pods(namespace, backend, core):
    job = launch(backend)
    running_pods(core, namespace, job)
    job.cancel()
    assert job.phase() == "deleted"
    batch = client.BatchV1Api(core.api_client)
    wait_for(
        "the Job and its pods removed",
        lambda: job_gone(batch, namespace, job.id) and not job_pods(core, namespace, job),
    )
    assert job.phase() == "deleted" and job.status() == "failed"
    job.cancel()  # a second cancel (404) is not an error


def test_logs_without_a_kubelet_fall_back_to_the_failure_reason(namespace, backend, core):
    job = launch(backend)
    (pod,) = running_pods(core, namespace, job)
    finish_pod(core, namespace, pod.metadata.name, FAIL_JOB_EXIT_CODE)
    assert job.wait(timeout=30, poll=0.1) == "failed"
    t0 = time.monotonic()
    text = job.logs(tail=20)
    # The API server proxies pods/log to the node's kubelet; kwok's nodes have none, so the read fails and the
    # launcher answers with the Job's failure condition instead.
    assert text == k8s_jobs.failure_message(job.last)
    assert time.monotonic() - t0 < 15


def test_multi_node_run_is_an_indexed_job_with_its_rendezvous(kube, namespace, backend, core):
    job = launch(backend, nodes=2)
    pods = running_pods(core, namespace, job, n=2)
    by_index = {p.metadata.annotations[k8s_jobs.COMPLETION_INDEX_ANNOTATION]: p for p in pods}
    assert sorted(by_index) == ["0", "1"]
    for index, pod in by_index.items():
        assert pod.spec.hostname == f"{job.id}-{index}" and pod.spec.subdomain == RENDEZVOUS_SERVICE
        env = {e.name: e for e in pod.spec.containers[0].env}
        assert env["MASTER_ADDR"].value == f"{job.id}-0.{RENDEZVOUS_SERVICE}"
        assert env["MASTER_PORT"].value == "29500"
    service = core.read_namespaced_service(RENDEZVOUS_SERVICE, namespace)
    assert service.spec.cluster_ip == "None" and service.spec.publish_not_ready_addresses
    # the EndpointSlice controller publishes both pods under their hostnames: <job>-<i>.<service> resolves
    discovery = client.DiscoveryV1Api(kube.api_client())

    def hostnames():
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={RENDEZVOUS_SERVICE}"
        ).items
        names = sorted(e.hostname for s in slices for e in s.endpoints or [] if e.hostname)
        return names if len(names) == 2 else None

    assert wait_for("rendezvous endpoints", hostnames, timeout=30) == [f"{job.id}-0", f"{job.id}-1"]
    for pod in pods:
        finish_pod(core, namespace, pod.metadata.name, 0)
    assert job.wait(timeout=30, poll=0.1) == "succeeded"
    assert job.last.status.completed_indexes == "0,1"


# ---- RBAC, both ways ----------------------------------------------------------------------------------------------

# (verb, group, resource, subresource) the services use, through k8s_jobs
NEEDED = [
    ("create", "batch", "jobs", ""),  # launch
    ("get", "batch", "jobs", ""),  # phase(), get()
    ("delete", "batch", "jobs", ""),  # cancel()
    ("list", "", "pods", ""),  # logs(): the Job's pods
    ("get", "", "pods", "log"),  # logs()
]
# what a stolen launcher token must not give
REFUSED = [
    ("get", "", "secrets", ""),
    ("list", "", "secrets", ""),
    ("create", "", "pods", ""),
    ("delete", "", "pods", ""),
    ("create", "", "pods", "exec"),
    ("create", "", "pods", "attach"),
    ("create", "", "pods", "eviction"),
    ("get", "batch", "jobs", "status"),
    ("list", "batch", "jobs", ""),
    ("watch", "batch", "jobs", ""),
    ("get", "", "pods", ""),
    ("update", "batch", "jobs", ""),
    ("patch", "batch", "jobs", ""),
    ("update", "batch", "jobs", "status"),
    ("create", "batch", "cronjobs", ""),
    ("get", "", "configmaps", ""),
    ("create", "", "serviceaccounts", "token"),
    ("create", "rbac.authorization.k8s.io", "rolebindings", ""),
    ("create", "apps", "deployments", ""),
]


def allowed(api_client: client.ApiClient, namespace: str, verb, group, resource, subresource) -> bool:
    """What the API server's authorizer (RBAC) answers for the bearer of `api_client`."""
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, group=group, resource=resource, subresource=subresource or None
            )
        )
    )
    return client.AuthorizationV1Api(api_client).create_self_subject_access_review(review).status.allowed


def test_launcher_role_allows_what_the_services_need_and_nothing_else(kube, namespace, chart):
    launcher = launcher_client(kube, namespace)
    assert [r for r in NEEDED if not allowed(launcher, namespace, *r)] == []
    assert [r for r in REFUSED if allowed(launcher, namespace, *r)] == []
    # a Role, not a ClusterRole: nothing in any other namespace
    assert [r for r in NEEDED if allowed(launcher, "default", *r)] == []


def test_refusals_are_permission_denied_through_the_launcher(kube, namespace, chart, backend):
    launcher = launcher_client(kube, namespace)
    core = client.CoreV1Api(launcher)
    for read in (
        lambda: core.list_namespaced_secret(namespace),
        lambda: core.read_namespaced_config_map(TEMPLATE_CONFIGMAP, namespace),
    ):
        with pytest.raises(ApiException) as err:
            read()
        assert err.value.status == 403
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(
            namespace, {"metadata": {"name": "direct"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
        )
    assert err.value.status == 403
    elsewhere = k8s_jobs.KubernetesBackend(template=chart, namespace="default", api_client=launcher)
    with pytest.raises(PermissionDenied, match="job-launcher Role"):
        launch(elsewhere)
    with pytest.raises(PermissionDenied):
        elsewhere.get("lab-smf-train-gan-run-000000")
    with pytest.raises(NotFound):  # in its own namespace a missing Job is a plain NotFound
        backend.get("lab-smf-train-gan-run-000000")


def test_the_servers_refusals_map_to_smf_errors(namespace, backend):
    run = jobs.JobSpec(name="dup", kind="gan", module="smf.gan.train", args=[])
    fixed = k8s_jobs.build_job(backend.template, run, name="lab-smf-train-gan-dup-1", namespace=namespace)
    backend.batch.create_namespaced_job(namespace, fixed)
    with pytest.raises(ApiException) as raw:
        backend.batch.create_namespaced_job(namespace, fixed)
    mapped = k8s_jobs._api_error(raw.value, "create job")  # the way launch() maps it
    assert isinstance(mapped, AlreadyExists) and 'jobs.batch "lab-smf-train-gan-dup-1" already exists' in mapped.message
    # server-side validation the client models do not do: an empty image is a 422, INVALID_ARGUMENT naming the field
    with pytest.raises(InvalidArgument, match=r"spec\.template\.spec\.containers\[0\]\.image: Required value"):
        launch(backend, image="")


@pytest.mark.parametrize("service_account", [TRAINING_SA, PLAIN_SA])
def test_training_and_plain_service_accounts_can_do_nothing(kube, namespace, chart, service_account):
    api = kube.api_client(token=kube.token(namespace, service_account))
    assert [r for r in NEEDED + REFUSED if allowed(api, namespace, *r)] == []
    backend = k8s_jobs.KubernetesBackend(template=chart, namespace=namespace, api_client=api)
    with pytest.raises(PermissionDenied):
        launch(backend)
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(api).list_namespaced_pod(namespace)
    assert err.value.status == 403
