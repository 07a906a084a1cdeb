"""`helm install` of the chart against the real control plane (tests/deploy/conftest.py): each value set of
tests/support/chart_render.py installed as a lab would, after what a cluster admin provides first (the Secrets an
existingSecret names, a PersistentVolume for MinIO's claim, the PriorityClass, the Prometheus Operator's CRD or not).

kwok plays the pods (Running and Ready once scheduled), so no smf process runs here: these tests show that the API
server accepts every object (admission, defaulting, strict field validation), that the scheduler puts each pod where
the chart means it to go, and that Helm's install / upgrade / test / uninstall complete. The MinIO init Job's `mc`
pod is ended with exit 0 by the test, standing in for the process that would create the bucket.

One install per value set (module fixture `installs`), each in a namespace of its own, shared by the tests that
read it: the tests that change a release (upgrade, uninstall) come after those that only read it, in file order.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import threading
import time

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from smf.common import jobs, k8s_jobs
from support.chart_render import CHART, RELEASE, SERVICE_MONITOR_API, VALUE_SETS, render
from support.kube import EXIT_CODE_ANNOTATION, finish_pod, wait_for

from .conftest import CPU_NODE, GPU_NODE

helm = pytest.importorskip("helm_python")

FULL = f"{RELEASE}-smf"
TIMEOUT_S = 60
MINIO_CLAIM = f"data-{FULL}-minio-0"
KEPT = [f"PersistentVolumeClaim/{MINIO_CLAIM}"]
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"


# ---- what an admin or the user creates before `helm install` --------------------------------------------------


def _prepare(api, namespace: str, values: dict) -> None:
    """The objects a value set presumes exist: Secrets it names, a PV for MinIO's claim, the PriorityClass."""
    core = client.CoreV1Api(api)
    s3, auth = values.get("s3", {}), values.get("auth", {})
    if s3.get("existingSecret"):
        keys = (s3["existingSecretAccessKeyKey"], s3["existingSecretSecretKeyKey"])
        _secret(core, namespace, s3["existingSecret"], dict(zip(keys, ("AKIAEXAMPLE", "s3-secret-key"), strict=True)))
    if auth.get("existingSecret"):
        _secret(core, namespace, auth["existingSecret"], {auth["existingSecretKey"]: "the-lab-bearer-token"})
    for pull in values.get("imagePullSecrets", []):
        _secret(core, namespace, pull["name"], {".dockerconfigjson": '{"auths": {}}'}, "kubernetes.io/dockerconfigjson")
    if values.get("minio", {}).get("enabled", True):
        core.create_persistent_volume(_minio_volume(namespace))
    priority = values.get("training", {}).get("priorityClassName")
    if priority:
        with contextlib.suppress(ApiException):  # cluster-scoped: made once per plane
            client.SchedulingV1Api(api).create_priority_class({"metadata": {"name": priority}, "value": 100})


def _secret(core, namespace: str, name: str, data: dict[str, str], kind: str = "Opaque") -> None:
    core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "type": kind, "stringData": data})


def _minio_volume(namespace: str) -> dict:
    """No provisioner runs here: an admin's static PV, pre-bound to the claim MinIO's StatefulSet makes."""
    return {
        "metadata": {"name": f"{namespace}-minio"},
        "spec": {
            "capacity": {"storage": "50Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",  # the claim names no class and the plane has no default StorageClass
            "hostPath": {"path": f"/srv/{namespace}/minio"},
            "claimRef": {"namespace": namespace, "name": MINIO_CLAIM},
        },
    }


@contextlib.contextmanager
def _recording(read, every_s: float = 0.02):
    """Call `read()` every `every_s` in a thread while the block runs; yields the list of what it returned."""
    seen: list = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(every_s):
            seen.append(read())

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()
        seen.append(read())


def _mc_exits_ok(core, namespace: str):
    """While Helm waits on the MinIO init hook Job, end each of its running pods with exit 0."""

    def finish() -> None:
        pods = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=minio-init").items
        for pod in pods:
            if pod.status.phase == "Running" and EXIT_CODE_ANNOTATION not in (pod.metadata.annotations or {}):
                with contextlib.suppress(ApiException):  # deleted meanwhile
                    finish_pod(core, namespace, pod.metadata.name, 0)

    return _recording(finish, every_s=0.1)


# ---- one install per value set --------------------------------------------------------------------------------


class Release:
    """One value set installed by Helm into its own namespace, with the clients a test reads it through."""

    def __init__(self, kube, value_set: str):
        self.value_set, self.values = value_set, VALUE_SETS[value_set]
        self.kubeconfig = str(kube.kubeconfig)
        self.api = kube.api_client()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.namespace = f"helm-{secrets.token_hex(4)}"
        self.core.create_namespace({"metadata": {"name": self.namespace}})
        self.installed: dict = {}
        self.install_s = self.available_s = 0.0

    def install(self) -> None:
        _prepare(self.api, self.namespace, self.values)
        t0 = time.monotonic()
        with _recording(lambda: (time.monotonic() - t0, self.deployments_available()), every_s=0.05) as seen:
            self.installed = self.helm("install", self.values)
        self.install_s = self.last_s
        self.available_s = next((t for t, available in seen if available), float("nan"))

    def deployments_available(self) -> bool:
        deployments = self.apps.list_namespaced_deployment(self.namespace).items
        return bool(deployments) and all(
            any(c.type == "Available" and c.status == "True" for c in d.status.conditions or [])
            and d.status.ready_replicas == d.spec.replicas
            for d in deployments
        )

    def helm(self, action: str, values: dict | None = None) -> dict:
        """`helm install|upgrade|uninstall|test` as the admin, waiting (kstatus watcher) up to TIMEOUT_S."""
        # A fresh Config each time, like a fresh `helm` process: it rediscovers the cluster's APIs.
        with (
            helm.Config(kubeconfig_path=self.kubeconfig, namespace=self.namespace) as cfg,
            _mc_exits_ok(self.core, self.namespace),
        ):
            t0 = time.monotonic()
            if action in ("install", "upgrade"):
                result = getattr(cfg, action)(str(CHART), RELEASE, values, wait="watcher", timeout=TIMEOUT_S)
            elif action == "uninstall":
                result = cfg.uninstall(RELEASE, wait="watcher", timeout=TIMEOUT_S)
            else:
                result = cfg.test(RELEASE, timeout=TIMEOUT_S)
            self.last_s = time.monotonic() - t0
        return result

    def manifest(self, release: dict | None = None) -> list[dict]:
        return [d for d in yaml.safe_load_all((release or self.installed)["manifest"]) if d]

    def pods(self, selector: str = INSTANCE):
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def secret_value(self, name: str, key: str) -> str:
        return base64.b64decode(self.core.read_namespaced_secret(name, self.namespace).data[key]).decode()


@pytest.fixture(scope="module")
def installs(kube):
    """installs(value_set) -> its Release, installed on first use and kept for the module."""
    print(f"\n  control plane ready in {kube.startup_s:.1f} s (session fixture)")
    done: dict[str, Release] = {}
    failed: dict[str, str] = {}

    def get(value_set: str) -> Release:
        if value_set in failed:
            pytest.fail(f"helm install of {value_set!r} failed earlier: {failed[value_set]}")
        if value_set not in done:
            done[value_set] = rel = Release(kube, value_set)
            try:
                rel.install()
            except Exception as exc:
                failed[value_set] = str(exc)
                raise
        return done[value_set]

    yield get
    core = client.CoreV1Api(kube.api_client())
    for rel in done.values():
        core.delete_namespace(rel.namespace)
        with contextlib.suppress(ApiException):
            core.delete_persistent_volume(f"{rel.namespace}-minio")


def _enabled_services(values: dict) -> list[str]:
    services = render(values)  # the chart's own view of which services are on
    return sorted(
        o["metadata"]["labels"]["app.kubernetes.io/component"]
        for docs in services.values()
        for o in docs
        if o["kind"] == "Deployment"
    )


def _strict_dry_run_apply(dyn: DynamicClient, obj: dict) -> None:
    """Server-side apply, dry run, strict field validation: an unknown or duplicate field is an error (a plain
    create would only warn and drop it). Helm 4 applies server-side itself; this states the claim on its own."""
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    dyn.server_side_apply(
        resource,
        body=obj,
        namespace=obj["metadata"].get("namespace"),
        field_manager="smf-test-strict",
        force_conflicts=True,
        dry_run="All",
        query_params=[("fieldValidation", "Strict")],
    )


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_install_value_set(installs, value_set):
    rel = installs(value_set)
    assert rel.installed["status"] == "deployed"
    dyn = DynamicClient(rel.api)
    for obj in rel.manifest():
        _strict_dry_run_apply(dyn, obj)

    deployments = rel.apps.list_namespaced_deployment(rel.namespace).items
    services = _enabled_services(rel.values)
    assert sorted(d.metadata.labels["app.kubernetes.io/component"] for d in deployments) == services
    for d in deployments:
        conditions = {c.type: c.status for c in d.status.conditions or []}
        assert conditions.get("Available") == "True", f"{d.metadata.name}: {d.status}"
        assert d.status.ready_replicas == d.spec.replicas
    # Services on the CPU node: the GPU node's taints keep everything else off it.
    placed = {p.metadata.name: p.spec.node_name for p in rel.pods()}
    assert placed and set(placed.values()) == {CPU_NODE}, placed
    print(
        f"\n  {value_set}: all Deployments Available {rel.available_s:.1f} s after `helm install` began;"
        f" the install, waiting on every resource and hook, took {rel.install_s:.1f} s"
    )


def test_hpa_off_runs_the_given_replicas(installs):
    rel = installs("hpa-off")
    gan = rel.apps.read_namespaced_deployment(f"{FULL}-gan", rel.namespace)
    assert gan.spec.replicas == gan.status.ready_replicas == 3
    assert not client.AutoscalingV2Api(rel.api).list_namespaced_horizontal_pod_autoscaler(rel.namespace).items
    pdb = client.PolicyV1Api(rel.api).read_namespaced_pod_disruption_budget(f"{FULL}-gan", rel.namespace)
    assert pdb.status.expected_pods == 3 and pdb.status.disruptions_allowed == 1


def test_hpa_scales_gan_to_its_minimum(installs):
    """The chart leaves gan's replicas to the HPA (the API server defaults the field to 1); the real HPA
    controller raises it to minReplicas even with no metrics server to read CPU from."""
    rel = installs("defaults")
    gan = wait_for(
        "gan at minReplicas",
        lambda: (
            (d := rel.apps.read_namespaced_deployment(f"{FULL}-gan", rel.namespace)).status.ready_replicas == 2 and d
        ),
    )
    assert gan.spec.replicas == 2


def test_turning_autoscaling_on_keeps_the_running_replicas(installs):
    """hpa-off runs gan at 3; the upgrade that hands it to the HPA must not take it down to the API's default of
    1 (it did: Helm applies server-side, and a field the chart stops writing is dropped and defaulted)."""
    rel = installs("hpa-off")
    with _recording(lambda: rel.apps.read_namespaced_deployment(f"{FULL}-gan", rel.namespace).spec.replicas) as seen:
        rel.helm("upgrade", {**rel.values, "services": {"gan": {"autoscaling": {"enabled": True}}}})
    assert seen and min(seen) == 3, seen
    assert client.AutoscalingV2Api(rel.api).read_namespaced_horizontal_pod_autoscaler(f"{FULL}-gan", rel.namespace)


def test_existing_secrets_are_used_not_made(installs):
    rel = installs("external-s3-existing-secret")
    made = {o["metadata"]["name"] for o in rel.manifest() if o["kind"] == "Secret"}
    assert made == set(), made  # the chart made neither the token nor the S3 Secret
    gan = rel.apps.read_namespaced_deployment(f"{FULL}-gan", rel.namespace)
    env = {e.name: e for e in gan.spec.template.spec.containers[0].env}
    assert env["SMF_TOKEN"].value_from.secret_key_ref.name == "lab-smf-token"
    assert env["SMF_S3_ACCESS_KEY"].value_from.secret_key_ref.to_dict() == {
        "name": "lab-s3-creds",
        "key": "AWS_ACCESS_KEY_ID",
        "optional": None,
    }
    assert rel.secret_value("lab-smf-token", "bearer") == "the-lab-bearer-token"  # untouched


def test_minio_claim_bound_to_the_admins_volume(installs):
    rel = installs("defaults")
    claim = rel.core.read_namespaced_persistent_volume_claim(MINIO_CLAIM, rel.namespace)
    assert claim.status.phase == "Bound" and claim.spec.volume_name == f"{rel.namespace}-minio"
    minio = rel.apps.read_namespaced_stateful_set(f"{FULL}-minio", rel.namespace)
    assert minio.status.ready_replicas == 1
    # The init hook ran to completion and Helm deleted it (hook-delete-policy hook-succeeded).
    assert not client.BatchV1Api(rel.api).list_namespaced_job(rel.namespace).items


def test_training_job_from_the_template_lands_on_the_gpu_pool(installs):
    """The gan service's launch, as the admin: the chart's Job template, filled in by k8s_jobs, on the GPU node."""
    rel = installs("gpu-pool")
    template = rel.core.read_namespaced_config_map(f"{FULL}-training-template", rel.namespace)
    backend = k8s_jobs.KubernetesBackend(
        template=yaml.safe_load(template.data["job.yaml"]), namespace=rel.namespace, api_client=rel.api
    )
    job = backend.launch(jobs.JobSpec("run1", "gan", "smf.gan.train", ["--config", "c.json"]))
    selector = f"job-name={job.id}"
    pod = wait_for(
        "training pod Running", lambda: next((p for p in rel.pods(selector) if p.status.phase == "Running"), None)
    )
    assert pod.spec.node_name == GPU_NODE
    trainer = pod.spec.containers[0]
    assert trainer.resources.limits["nvidia.com/gpu"] == "4"
    assert pod.spec.priority_class_name == "training-low" and pod.spec.priority == 100
    wait_for("the Job controller to count the pod", lambda: job.status() == "running")


def test_service_monitor_waits_for_the_operator(installs):
    """No Prometheus Operator: the install succeeds without the ServiceMonitor and NOTES says so; once the CRD is
    there, `helm upgrade` adds it."""
    rel = installs("minio-off")
    assert "ServiceMonitor" not in {o["kind"] for o in rel.manifest()}
    assert "WARNING: metrics.serviceMonitor.enabled is set" in rel.installed["notes"]

    extensions = client.ApiextensionsV1Api(rel.api)
    crd = extensions.create_custom_resource_definition(_service_monitor_crd())
    try:
        wait_for(
            "ServiceMonitor CRD Established",
            lambda: any(
                c.type == "Established" and c.status == "True"
                for c in extensions.read_custom_resource_definition(crd.metadata.name).status.conditions or []
            ),
        )
        upgraded = rel.helm("upgrade", rel.values)
        assert "WARNING" not in upgraded["notes"]
        (sm,) = [o for o in rel.manifest(upgraded) if o["kind"] == "ServiceMonitor"]
        group, version, _ = SERVICE_MONITOR_API.split("/")
        live = client.CustomObjectsApi(rel.api).get_namespaced_custom_object(
            group, version, rel.namespace, "servicemonitors", sm["metadata"]["name"]
        )
        assert live["metadata"]["labels"]["release"] == "prometheus"
        assert live["spec"]["endpoints"][0]["port"] == "metrics"
    finally:
        extensions.delete_custom_resource_definition(crd.metadata.name)


def _service_monitor_crd() -> dict:
    """The operator's CRD in name, group, version and scope; its schema left open (the operator's own is ~1000
    lines and not ours to copy): enough for the API server to serve and store ServiceMonitors."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"plural": "servicemonitors", "singular": "servicemonitor", "kind": "ServiceMonitor"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }


def test_upgrade_test_and_uninstall(installs):
    """An image-tag upgrade rolls every Deployment out; generated secrets survive it; `helm test` passes;
    `helm uninstall` leaves nothing of the release but MinIO's claim (StatefulSet claims are kept)."""
    rel = installs("defaults")
    token = rel.secret_value(f"{FULL}-token", "token")
    s3_key = rel.secret_value(f"{FULL}-s3", "secretKey")

    # The HPA scales through the scale subresource; an upgrade must leave its count alone (and not conflict).
    rel.apps.patch_namespaced_deployment_scale(
        f"{FULL}-gan", rel.namespace, {"spec": {"replicas": 4}}, field_manager="hpa-stand-in"
    )
    upgraded = rel.helm("upgrade", {"image": {"tag": "0.1.1"}})
    assert upgraded["revision"] == 2 and upgraded["status"] == "deployed"
    for d in rel.apps.list_namespaced_deployment(rel.namespace).items:
        assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "2", d.metadata.name  # a rollout
        assert d.status.observed_generation == d.metadata.generation, d.metadata.name
        assert d.status.updated_replicas == d.status.ready_replicas == d.spec.replicas, d.status
    assert rel.apps.read_namespaced_deployment(f"{FULL}-gan", rel.namespace).status.ready_replicas == 4
    images = {p.spec.containers[0].image for p in rel.pods() if p.metadata.deletion_timestamp is None}
    images.discard("quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z")
    assert images == {"ghcr.io/smf/smf:0.1.1"}
    # lookup against the live Secrets kept the generated values (a new token would lock every client out)
    assert rel.secret_value(f"{FULL}-token", "token") == token
    assert rel.secret_value(f"{FULL}-s3", "secretKey") == s3_key

    def test_pods():
        return [(p.status.phase, p.spec.node_name) for p in rel.pods("app.kubernetes.io/component=test")]

    with _recording(test_pods) as seen:
        rel.helm("test")  # raises HelmReleaseError unless the test pod Succeeded
    assert ("Succeeded", CPU_NODE) in [state for states in seen for state in states]
    assert test_pods() == []  # hook-delete-policy hook-succeeded

    rel.helm("uninstall")
    with contextlib.suppress(TimeoutError):  # the garbage collector removes dependents after Helm returns
        wait_for("the release's objects to go", lambda: _objects_left(rel) == KEPT, timeout=20)
    assert _objects_left(rel) == KEPT


# Objects every namespace has, that no release made.
_NAMESPACE_OWN = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}


def _objects_left(rel: Release) -> list[str]:
    """Names of every object left in the namespace (all listable namespaced kinds), but events and its own."""
    dyn = DynamicClient(rel.api)
    left = []
    for resource in dyn.resources.search():
        if not resource.namespaced or "list" not in (resource.verbs or []) or "/" in resource.name:
            continue
        if resource.kind == "Event" or resource.kind.endswith("List"):  # the ...List entries are list views
            continue
        for item in dyn.get(resource, namespace=rel.namespace).items:
            if (resource.kind, item.metadata.name) not in _NAMESPACE_OWN:
                left.append(f"{resource.kind}/{item.metadata.name}")
    return sorted(left)
