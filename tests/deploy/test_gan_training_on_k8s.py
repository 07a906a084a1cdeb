"""GanService.StartTraining with the Kubernetes job backend, against the real API server.

What runs against what: a GanServicer over loopback gRPC, configured the way the chart configures the gan pod
(SMF_JOB_BACKEND=kubernetes, SMF_JOB_TEMPLATE = the training-template ConfigMap's job.yaml, SMF_JOB_NAMESPACE,
and a kubeconfig holding the job-launcher ServiceAccount's token where the pod would have its projected token),
a file store, and the session's control plane with the chart's identities in the test's namespace
(test_job_launcher.install_identities). The Job controller creates the training pod on the GPU pool's kwok node.

The pod does not train: nothing runs in it. The test writes progress.json into the store itself, through the
project's run writer (smf.common.training.RunWriter) as the trainer would, and ends the pod with kwok the way the
trainer process would exit. What a real pod runs (`python -m smf.gan.train` against the store) is tested in
tests/gan/test_train.py and tests/gan/test_server.py.
"""

from __future__ import annotations

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from smf.common import jobs, k8s_jobs
from smf.common.client import call
from smf.common.errors import Cancelled, InvalidArgument
from smf.common.store import open_store
from smf.common.training import EXIT_USER_ERROR, RunWriter
from smf.common.v1 import common_pb2, operations_pb2, operations_pb2_grpc
from smf.gan.client import GanClient
from smf.gan.server import SERVICE_NAMES, GanServicer, servicers
from support.kube import finish_pod, wait_for
from support.loopback import loopback_server
from support.tiny_gan import tiny_dict

from .test_job_launcher import LAUNCHER, install_identities

TOKEN = "gan-k8s-token"
RUNNING, SUCCEEDED = common_pb2.Operation.STATE_RUNNING, common_pb2.Operation.STATE_SUCCEEDED


@pytest.fixture
def store(tmp_path):
    from smf.datasets import make_dataset

    store = open_store(f"file://{tmp_path / 'store'}")
    make_dataset("tones", store, n_files=2, duration=0.3)  # StartTraining checks that data_path has data
    return store


@pytest.fixture
def gan_on_k8s(kube, namespace, store, tmp_path, monkeypatch):
    """(GanClient, OperationService stub) of a gan service that launches its runs as Jobs in `namespace`."""
    template = install_identities(kube, namespace, tmp_path)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "k", "cluster": {"server": kube.server, "certificate-authority": str(kube.ca_file)}}
                ],
                "users": [{"name": LAUNCHER, "user": {"token": kube.token(namespace, LAUNCHER)}}],
                "contexts": [{"name": "k", "context": {"cluster": "k", "user": LAUNCHER}}],
                "current-context": "k",
            }
        )
    )
    for name, value in {
        "SMF_JOB_BACKEND": "kubernetes",
        k8s_jobs.TEMPLATE_ENV: template,
        k8s_jobs.NAMESPACE_ENV: namespace,
        "KUBECONFIG": str(kubeconfig),
    }.items():
        monkeypatch.setenv(name, value)
    jobs.register_backend("kubernetes", k8s_jobs.KubernetesBackend)  # a backend made from this environment
    servicer = GanServicer(store)
    server = loopback_server("gan", servicers(servicer), SERVICE_NAMES, TOKEN).start()
    try:
        with GanClient(f"127.0.0.1:{server.port}", token=TOKEN) as gan:
            yield gan, operations_pb2_grpc.OperationServiceStub(gan.channels[0])
    finally:
        server.stop()
        servicer.close()
        jobs.register_backend("kubernetes", k8s_jobs.KubernetesBackend)  # drop the instance bound to this test


def get_operation(ops, op_id: str) -> common_pb2.Operation:
    return call(ops.GetOperation, operations_pb2.GetOperationRequest(operation_id=op_id)).operation


def training_pod(core, namespace: str, job_name: str) -> client.V1Pod:
    def running():
        pods = core.list_namespaced_pod(namespace, label_selector=f"{k8s_jobs.JOB_NAME_LABEL}={job_name}").items
        return next((p for p in pods if p.status.phase == "Running"), None)

    return wait_for(f"the training pod of {job_name} Running", running, timeout=30)


def test_training_run_follows_the_job_and_the_store(kube, namespace, store, gan_on_k8s):
    gan, ops = gan_on_k8s
    core = client.CoreV1Api(kube.api_client())
    op = gan.start_training("onk8s", tiny_dict())
    job_name = op.metadata["job"]
    pod = training_pod(core, namespace, job_name)
    command = pod.spec.containers[0].command
    assert command[2:5] == ["python", "-m", "smf.gan.train"]
    assert command[5:] == ["--config", store.key_uri("gan/onk8s/config.json"), "--out", store.key_uri("gan/onk8s")]
    assert store.exists("gan/onk8s/config.json")  # prepared by StartTraining for the pod to read

    # the trainer's first report (written here, as smf.gan.train would) reaches the operation
    writer = RunWriter(store, "gan/onk8s", kind="gan")
    writer.progress("running", step=6, total=24, loss=0.75, message="scale 0", eta_seconds=30.0)
    seen = wait_for("progress in the operation", lambda: (o := get_operation(ops, op.id)).progress.step == 6 and o)
    assert seen.state == RUNNING and seen.progress.total == 24 and seen.progress.loss == pytest.approx(0.75)

    # the trainer's last report, then its exit 0: the operation ends with the run's artifact
    writer.progress("succeeded", step=24, total=24, loss=0.5, message="done")
    finish_pod(core, namespace, pod.metadata.name, 0)
    done = gan.wait(op.id, timeout=30)
    assert done.state == SUCCEEDED and list(done.result_uris) == [store.key_uri("gan/onk8s")]
    job = client.BatchV1Api(kube.api_client()).read_namespaced_job(job_name, namespace)
    assert k8s_jobs.job_phase(job) == "succeeded"


def test_a_trainer_error_fails_the_operation_with_its_code(kube, namespace, store, gan_on_k8s):
    gan, _ = gan_on_k8s
    core = client.CoreV1Api(kube.api_client())
    op = gan.start_training("badrun", tiny_dict())
    pod = training_pod(core, namespace, op.metadata["job"])
    RunWriter(store, "gan/badrun", kind="gan").fail(InvalidArgument("loaderConfig.data_path", "no audio under it"))
    finish_pod(core, namespace, pod.metadata.name, EXIT_USER_ERROR)  # the chart's failJobOnExitCodes: FailJob
    with pytest.raises(InvalidArgument, match="loaderConfig.data_path"):
        gan.wait(op.id, timeout=30)


def test_cancelling_the_operation_deletes_the_job_and_its_pods(kube, namespace, gan_on_k8s):
    gan, ops = gan_on_k8s
    admin = kube.api_client()
    core, batch = client.CoreV1Api(admin), client.BatchV1Api(admin)
    op = gan.start_training("cancelme", tiny_dict())
    job_name = op.metadata["job"]
    training_pod(core, namespace, job_name)
    call(ops.CancelOperation, operations_pb2.CancelOperationRequest(operation_id=op.id))
    with pytest.raises(Cancelled):
        gan.wait(op.id, timeout=30)
    # CANCELLED means stopped: by then the Job and its pods are gone, not merely being deleted
    with pytest.raises(ApiException) as err:
        batch.read_namespaced_job(job_name, namespace)
    assert err.value.status == 404
    assert core.list_namespaced_pod(namespace, label_selector=f"{k8s_jobs.JOB_NAME_LABEL}={job_name}").items == []
