"""The Kubernetes backend of `smf.common.jobs`: each training run is a batch/v1 Job on the GPU pool.

The chart renders the Job every run starts from (image, GPU limits, GPU-pool nodeSelector/tolerations, store
credentials, backoffLimit, podFailurePolicy, deadlines) into a ConfigMap mounted at $SMF_JOB_TEMPLATE; this module
only fills in what differs per run: name, labels, the trainer command and, for multi-node runs, an Indexed Job with
the torchrun rendezvous wired. Selected with SMF_JOB_BACKEND=kubernetes:

    from smf.common import jobs, k8s_jobs   # importing k8s_jobs registers the backend
    job = jobs.launch("gan", ["--config", uri, "--out", out], name="mygan", backend="kubernetes", gpus=1, nodes=2)
    job.status()     # pending | running | succeeded | failed   (from the Job's status conditions)
    job.phase()      # ... or "deleted" once cancelled (status() stays "running" until its pods are gone)
    job.cancel()     # delete with propagationPolicy=Foreground: pods get SIGTERM and their grace period to checkpoint

Lifecycle read from the API server (never from pods directly):
    Complete / SuccessCriteriaMet condition "True"  -> succeeded
    Failed / FailureTarget condition "True"         -> failed
    metadata.deletionTimestamp set, or 404 after we deleted it -> deleted
    status.ready > 0                                -> running   (a trainer has no readiness probe: Ready = started)
    otherwise                                       -> pending   (waiting for a GPU node, pulling the image, ...)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from pathlib import Path

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from smf.common import jobs
from smf.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SmfError,
    Unavailable,
)

TEMPLATE_ENV = "SMF_JOB_TEMPLATE"
NAMESPACE_ENV = "SMF_JOB_NAMESPACE"
TRAINER_CONTAINER = "trainer"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
RENDEZVOUS_PORT_ANNOTATION = "smf/rendezvous-port"
DEFAULT_RENDEZVOUS_PORT = 29500
KIND_LABEL, RUN_LABEL = "smf/kind", "smf/run"
# Set by the Job controller on every pod of an Indexed Job (the label form only exists from 1.28).
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# Pods of an Indexed Job are named/hosted <job>-<index>: keep room for "-NNN" within the 63-char DNS label.
MAX_JOB_NAME = 52
OPTIONS = ("nodes", "image", "active_deadline_s", "backoff_limit")
_SERVICEACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_QUANTITY_KEYS = ("limits", "requests")
_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)  # connection refused, DNS, TLS, timeouts


# ---- the template ---------------------------------------------------------------------------------------------


def load_template(source: str | os.PathLike | dict | None = None) -> k8s.V1Job:
    """The Job template as a `V1Job`: from a dict, a YAML file, or (default) the file named by $SMF_JOB_TEMPLATE.

    Unknown fields are an error (the client models forbid extras), so a template from a newer chart fails loudly.
    """
    where = "job template"
    if source is None:
        source = os.environ.get(TEMPLATE_ENV)
        if not source:
            raise FailedPrecondition(
                f"${TEMPLATE_ENV} is not set: the kubernetes job backend needs the Job template "
                "the chart mounts (training.backend=kubernetes)"
            )
    manifest: object = source
    if not isinstance(source, dict):
        where = os.fspath(source)
        try:
            manifest = yaml.safe_load(Path(source).read_text())
        except FileNotFoundError:
            raise FailedPrecondition(f"job template {where} does not exist") from None
        except yaml.YAMLError as exc:
            raise InvalidArgument(where, f"not valid YAML: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "Job" or manifest.get("apiVersion") != "batch/v1":
        raise InvalidArgument(where, "must be a batch/v1 Job manifest")
    fixed: dict = _quantities_as_strings(manifest)
    try:
        job = k8s.V1Job.from_dict(fixed)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise InvalidArgument(where, f"not a valid batch/v1 Job: {exc}") from None
    if job is None:  # from_dict answers None for None only; the models type every result optional
        raise InvalidArgument(where, "must be a batch/v1 Job manifest")
    # from_dict drops fields it does not know: compare with the round trip so a typo is an error, not a no-op.
    unknown = _dropped_fields(fixed, to_manifest(job))
    if unknown:
        raise InvalidArgument(where, f"not a valid batch/v1 Job: unknown field(s) {', '.join(unknown)}")
    if _trainer(job, where) is None:
        raise InvalidArgument(where, f"needs a container named {TRAINER_CONTAINER!r}")
    return job


def _quantities_as_strings(obj):
    """YAML gives `nvidia.com/gpu: 1` as an int; the API accepts it, the client models want quantity strings."""
    if isinstance(obj, dict):
        return {
            k: (
                {q: str(v) for q, v in val.items()}
                if k in _QUANTITY_KEYS and isinstance(val, dict)
                else _quantities_as_strings(val)
            )
            for k, val in obj.items()
        }
    if isinstance(obj, list):
        return [_quantities_as_strings(v) for v in obj]
    return obj


def _dropped_fields(original, kept, path: str = "") -> list[str]:
    if isinstance(original, dict) and isinstance(kept, dict):
        return [
            p
            for k, v in original.items()
            if v is not None
            for p in ([f"{path}.{k}".lstrip(".")] if k not in kept else _dropped_fields(v, kept[k], f"{path}.{k}"))
        ]
    if isinstance(original, list) and isinstance(kept, list):
        pairs = enumerate(zip(original, kept, strict=False))
        return [p for i, (a, b) in pairs for p in _dropped_fields(a, b, f"{path}[{i}]")]
    return []


def _trainer(job: k8s.V1Job, where: str = "job template") -> k8s.V1Container | None:
    return next((c for c in _pod_spec(job, where).containers if c.name == TRAINER_CONTAINER), None)


# The client models type every part of an object optional; a template that passed load_template has these parts,
# and the API server always returns them, so these say so once instead of checking for None at every use.


def _job_spec(job: k8s.V1Job, where: str = "job template") -> k8s.V1JobSpec:
    if job.spec is None:
        raise InvalidArgument(where, "spec is missing")
    return job.spec


def _pod_spec(job: k8s.V1Job, where: str = "job template") -> k8s.V1PodSpec:
    pod = _job_spec(job, where).template.spec
    if pod is None or not pod.containers:
        raise InvalidArgument(where, "spec.template.spec.containers is missing")
    return pod


def _metadata(obj: k8s.V1Job | k8s.V1Pod) -> k8s.V1ObjectMeta:
    return obj.metadata or k8s.V1ObjectMeta()


def _name(obj: k8s.V1Job) -> str:
    name = _metadata(obj).name
    if not name:
        raise Unavailable("the kubernetes API returned a Job without metadata.name")
    return name


# ---- building one Job -----------------------------------------------------------------------------------------


def job_name(prefix: str, kind: str, run: str, suffix: str | None = None) -> str:
    """`<prefix>-<kind>-<run>-<random>` as a DNS label short enough for Indexed pod hostnames."""
    suffix = suffix or secrets.token_hex(3)
    slug = re.sub(r"[^a-z0-9-]+", "-", run.lower()).strip("-") or "run"
    head = f"{prefix}-{kind}-{slug}"[: MAX_JOB_NAME - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}"


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return value.strip("-._")


def trainer_argv(spec: jobs.JobSpec, *, nodes: int, gpus: int) -> list[str]:
    """The command the trainer container runs: plain python for one process, torchrun for several.

    Multi-node runs use torchrun's static rendezvous: rank 0 is the pod of index 0, every pod learns its node rank
    from the completion index. $(VAR) references are expanded by the kubelet from the container env.
    """
    if nodes == 1 and gpus <= 1:
        return ["python", "-m", spec.module, *spec.args]
    if nodes == 1:
        return ["torchrun", "--standalone", f"--nproc-per-node={gpus}", "-m", spec.module, *spec.args]
    return [
        "torchrun",
        f"--nnodes={nodes}",
        f"--nproc-per-node={max(gpus, 1)}",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "-m",
        spec.module,
        *spec.args,
    ]


def build_job(
    template: k8s.V1Job, spec: jobs.JobSpec, *, name: str | None = None, namespace: str | None = None
) -> k8s.V1Job:
    """The Job for one run: a copy of `template` with name, labels, command, GPUs and (nodes > 1) Indexed mode.

        job = build_job(load_template(path), jobs.JobSpec("run1", "gan", "smf.gan.train", [...], gpus=1))

    `spec.gpus` is GPUs per pod; 0 keeps the template's count (the chart's training.gpu.count). Options:
    nodes (pods, default 1), image, active_deadline_s, backoff_limit. Anything else is an error.
    """
    nodes = _nodes(spec)
    job = template.model_copy(deep=True)
    job_id, rendezvous_port = _name_and_label(job, spec, name=name, namespace=namespace)
    if "active_deadline_s" in spec.options:
        _job_spec(job).active_deadline_seconds = int(spec.options["active_deadline_s"])
    if "backoff_limit" in spec.options:
        _job_spec(job).backoff_limit = int(spec.options["backoff_limit"])

    trainer = _trainer(job)
    if trainer is None:
        raise InvalidArgument("job template", f"needs a container named {TRAINER_CONTAINER!r}")
    if "image" in spec.options:
        trainer.image = str(spec.options["image"])
    gpus = _set_gpus(trainer, spec.gpus)
    env = list(trainer.env or [])
    env += [k8s.V1EnvVar(name=k, value=str(v)) for k, v in spec.env.items()]
    env.append(k8s.V1EnvVar(name="SMF_JOB_ID", value=job_id))
    if nodes > 1:
        env += _indexed(job, nodes, f"{job_id}-0", rendezvous_port)
    trainer.env = env
    trainer.command = list(trainer.command or []) + trainer_argv(spec, nodes=nodes, gpus=gpus)
    trainer.args = None
    return job


def _nodes(spec: jobs.JobSpec) -> int:
    """The pod count, after refusing options this backend does not know (a typo must not be a silent no-op)."""
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise InvalidArgument(
            "options", f"unknown for the kubernetes job backend: {', '.join(unknown)} (known: {', '.join(OPTIONS)})"
        )
    nodes = spec.options.get("nodes", 1)
    if not isinstance(nodes, int) or isinstance(nodes, bool) or not 1 <= nodes <= 64:
        raise InvalidArgument("nodes", f"must be an integer in 1..64, got {nodes!r}")
    if spec.gpus < 0:
        raise InvalidArgument("gpus", f"must be >= 0, got {spec.gpus}")
    return nodes


def _name_and_label(job: k8s.V1Job, spec: jobs.JobSpec, *, name: str | None, namespace: str | None) -> tuple[str, int]:
    """Name the Job, label it and its pods with the run; returns (job name, rendezvous port off the annotations)."""
    meta = job.metadata = _metadata(job)
    prefix = (meta.name or "smf-train").rstrip("-")
    job_id = meta.name = name or job_name(prefix, spec.kind, spec.name)
    if len(job_id) > MAX_JOB_NAME:
        raise InvalidArgument("name", f"job name {job_id!r} is longer than {MAX_JOB_NAME} characters")
    meta.generate_name = None
    if namespace:
        meta.namespace = namespace
    run_labels = {KIND_LABEL: spec.kind, RUN_LABEL: _label_value(spec.name)}
    meta.labels = {**(meta.labels or {}), **run_labels}
    annotations = dict(meta.annotations or {})
    rendezvous_port = int(annotations.pop(RENDEZVOUS_PORT_ANNOTATION, DEFAULT_RENDEZVOUS_PORT))
    meta.annotations = {**annotations, "smf/run-name": spec.name}

    pod_template = _job_spec(job).template
    pod_meta = pod_template.metadata = pod_template.metadata or k8s.V1ObjectMeta()
    pod_meta.labels = {**(pod_meta.labels or {}), **run_labels}
    return job_id, rendezvous_port


def _set_gpus(trainer: k8s.V1Container, gpus: int) -> int:
    """Set the trainer's GPU limit to `gpus` (0: keep the template's); returns the GPUs per pod it ends up with."""
    limits = dict((trainer.resources.limits if trainer.resources else None) or {})
    gpu_key = next((k for k in limits if k.endswith("/gpu")), DEFAULT_GPU_RESOURCE)
    if gpus > 0:
        limits[gpu_key] = str(gpus)
    if limits:
        trainer.resources = trainer.resources or k8s.V1ResourceRequirements()
        trainer.resources.limits = limits
    return int(limits.get(gpu_key, "0"))


def _indexed(job: k8s.V1Job, nodes: int, first_pod: str, rendezvous_port: int) -> list[k8s.V1EnvVar]:
    """Make `job` an Indexed Job of `nodes` pods; returns the rendezvous variables each pod's torchrun reads."""
    subdomain = _pod_spec(job).subdomain
    if not subdomain:
        raise InvalidArgument(
            "job template",
            "multi-node runs need spec.template.spec.subdomain (the headless "
            "Service the chart creates for the rendezvous)",
        )
    # Indexed pods are hosted as <job>-<index>; with the subdomain, index 0 resolves as <job>-0.<subdomain>.
    job_spec = _job_spec(job)
    job_spec.completion_mode = "Indexed"
    job_spec.completions = nodes
    job_spec.parallelism = nodes
    return [
        k8s.V1EnvVar(
            name="NODE_RANK",
            value_from=k8s.V1EnvVarSource(
                field_ref=k8s.V1ObjectFieldSelector(field_path=f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']")
            ),
        ),
        k8s.V1EnvVar(name="MASTER_ADDR", value=f"{first_pod}.{subdomain}"),
        k8s.V1EnvVar(name="MASTER_PORT", value=str(rendezvous_port)),
    ]


def to_manifest(job: k8s.V1Job) -> dict:
    """The JSON/YAML form the API server receives (camelCase, no nulls)."""
    return k8s.ApiClient().sanitize_for_serialization(job)


# ---- reading the lifecycle ------------------------------------------------------------------------------------


def job_phase(job: k8s.V1Job | None) -> str:
    """pending | running | succeeded | failed | deleted, from the Job object as the API server returns it."""
    if job is None:
        return "deleted"
    status = job.status or k8s.V1JobStatus()
    true = {c.type for c in status.conditions or [] if c.status == "True"}
    # SuccessCriteriaMet / FailureTarget (1.31+) come first, Complete / Failed once every pod has terminated: the
    # outcome is decided at the first one.
    if true & {"Complete", "SuccessCriteriaMet"}:
        return "succeeded"
    if true & {"Failed", "FailureTarget"}:
        return "failed"
    if job.metadata and job.metadata.deletion_timestamp:
        return "deleted"
    if (status.ready or 0) > 0:
        return "running"
    return "pending"


def failure_message(job: k8s.V1Job | None) -> str | None:
    """The reason/message of a Failed or FailureTarget condition (e.g. BackoffLimitExceeded, DeadlineExceeded)."""
    for cond in (job.status.conditions or []) if job and job.status else []:
        if cond.type in ("Failed", "FailureTarget") and cond.status == "True":
            return f"{cond.reason or cond.type}: {cond.message or ''}".strip(": ")
    return None


def _api_error(exc: Exception, what: str) -> SmfError:
    """ApiException (or a connection failure) -> the matching smf error."""
    if not isinstance(exc, ApiException):
        return Unavailable(f"kubernetes API unreachable while trying to {what}: {exc}")
    reason = exc.reason or ""
    try:  # the API server explains itself in a Status object
        reason = json.loads(exc.body or "{}").get("message") or reason
    except (TypeError, ValueError, AttributeError):
        pass
    if exc.status == 404:
        return NotFound(f"{what}: {reason}")
    if exc.status == 409:
        return AlreadyExists(f"{what}: {reason}")
    if exc.status in (401, 403):
        return PermissionDenied(
            f"{what}: forbidden by the API server ({reason}); the launching service's "
            "ServiceAccount needs the chart's job-launcher Role"
        )
    if exc.status in (400, 422):
        return InvalidArgument("job", f"{what}: rejected by the API server: {reason}")
    return Unavailable(f"{what}: API server answered {exc.status} {reason}")


# ---- the backend ----------------------------------------------------------------------------------------------


class KubernetesJob(jobs.JobHandle):
    """A launched Job. Remembers the last outcome it saw, since a finished Job disappears after its TTL."""

    def __init__(self, backend: KubernetesBackend, name: str, spec: jobs.JobSpec):
        self.backend, self.id, self.spec = backend, name, spec
        self.cancel_requested = False
        self._final: str | None = None
        self._lock = threading.Lock()
        self.last: k8s.V1Job | None = None

    def phase(self) -> str:
        """pending | running | succeeded | failed | deleted."""
        with self._lock:
            if self._final:
                return self._final
        try:
            # GET on the Job itself carries its status; read_namespaced_job_status is the jobs/status subresource,
            # which RBAC grants separately and the job-launcher Role does not (nor needs to).
            job = self.backend.batch.read_namespaced_job(self.id, self.backend.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise _api_error(exc, f"read job {self.id}") from None
            job = None
        except _UNREACHABLE as exc:
            raise _api_error(exc, f"read job {self.id}") from None
        phase = job_phase(job)
        if job is None and not self.cancel_requested:
            phase = "failed"  # gone without us deleting it (someone else did, or TTL before we looked)
        with self._lock:
            self.last = job if job is not None else self.last
            if phase in ("succeeded", "failed") or (phase == "deleted" and job is None):
                self._final = phase
        return phase

    def status(self) -> str:
        """One of jobs.STATES. A cancelled Job counts as failed once it is gone, as a cancelled subprocess does once
        it exited; while the foreground deletion waits for its pods (SIGTERM, checkpoint) it is still running, so
        an operation following it reports CANCELLED only when the work has stopped."""
        phase = self.phase()
        if phase == "deleted":
            with self._lock:
                return "failed" if self._final == "deleted" else "running"
        return phase

    def cancel(self, grace: float = jobs.DEFAULT_GRACE_S) -> None:
        """Delete the Job with foreground propagation: the Job stays (with deletionTimestamp) until its pods are
        gone, and each pod gets SIGTERM and the template's terminationGracePeriodSeconds to checkpoint. `grace` is
        not used: the pod's grace period (training.terminationGracePeriodSeconds) governs."""
        self.cancel_requested = True
        try:
            self.backend.batch.delete_namespaced_job(
                self.id, self.backend.namespace, body=k8s.V1DeleteOptions(propagation_policy="Foreground")
            )
        except ApiException as exc:
            if exc.status != 404:  # already gone: nothing to cancel
                raise _api_error(exc, f"delete job {self.id}") from None
        except _UNREACHABLE as exc:
            raise _api_error(exc, f"delete job {self.id}") from None

    def logs(self, tail: int | None = None) -> str:
        """Logs of the Job's pods (index 0 / the newest attempt first), or the failure reason if there are none."""
        core, ns = self.backend.core, self.backend.namespace
        try:
            pods = core.list_namespaced_pod(ns, label_selector=f"{JOB_NAME_LABEL}={self.id}").items
        except (ApiException, *_UNREACHABLE) as exc:
            raise _api_error(exc, f"list pods of job {self.id}") from None
        metas = sorted(
            (_metadata(p) for p in pods),
            key=lambda m: (
                (m.annotations or {}).get(COMPLETION_INDEX_ANNOTATION, "0"),
                -(m.creation_timestamp.timestamp() if m.creation_timestamp else 0),
            ),
        )
        for pod in metas:
            if not pod.name:
                continue
            try:
                text = core.read_namespaced_pod_log(pod.name, ns, container=TRAINER_CONTAINER, tail_lines=tail)
            except ApiException:
                continue  # not started yet / already garbage collected
            if text:
                return text
        return failure_message(self.last) or ""

    def __repr__(self) -> str:
        return f"KubernetesJob({self.id!r}, namespace={self.backend.namespace!r})"


class KubernetesBackend(jobs.JobBackend):
    """Creates training Jobs in one namespace (default $SMF_JOB_NAMESPACE, else the pod's own namespace).

    `api_client` defaults to the in-cluster config (the pod's ServiceAccount), else ~/.kube/config.
    """

    name = "kubernetes"

    def __init__(
        self,
        *,
        template: k8s.V1Job | dict | str | os.PathLike | None = None,
        namespace: str | None = None,
        api_client: k8s.ApiClient | None = None,
    ):
        self.template = template if isinstance(template, k8s.V1Job) else load_template(template)
        self.namespace = (
            namespace or os.environ.get(NAMESPACE_ENV) or _metadata(self.template).namespace or _own_namespace()
        )
        self.api_client = api_client or _default_api_client()
        self.batch = k8s.BatchV1Api(self.api_client)
        self.core = k8s.CoreV1Api(self.api_client)
        self._jobs: dict[str, KubernetesJob] = {}
        self._lock = threading.Lock()

    def build(self, spec: jobs.JobSpec) -> k8s.V1Job:
        return build_job(self.template, spec, namespace=self.namespace)

    def launch(self, spec: jobs.JobSpec) -> KubernetesJob:
        job = self.build(spec)
        try:
            created = self.batch.create_namespaced_job(self.namespace, job)
        except (ApiException, *_UNREACHABLE) as exc:
            raise _api_error(exc, f"create job {_name(job)} in namespace {self.namespace}") from None
        handle = KubernetesJob(self, _name(created), spec)
        with self._lock:
            self._jobs[handle.id] = handle
        return handle

    def get(self, job_id: str) -> KubernetesJob:
        """A handle for a Job by name, also one launched by another replica or before a restart."""
        with self._lock:
            if job_id in self._jobs:
                return self._jobs[job_id]
        try:
            job = self.batch.read_namespaced_job(job_id, self.namespace)
        except (ApiException, *_UNREACHABLE) as exc:
            raise _api_error(exc, f"read job {job_id}") from None
        labels = _metadata(job).labels or {}
        annotations = _metadata(job).annotations or {}
        spec = jobs.JobSpec(
            name=annotations.get("smf/run-name", job_id), kind=labels.get(KIND_LABEL, ""), module="", args=[]
        )
        handle = KubernetesJob(self, job_id, spec)
        with self._lock:
            return self._jobs.setdefault(job_id, handle)


def _own_namespace() -> str:
    try:
        return _SERVICEACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return "default"


def _default_api_client() -> k8s.ApiClient:
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # Read $KUBECONFIG now: the client only reads it once, when kubernetes.config is imported.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except (config.ConfigException, OSError) as exc:
            raise FailedPrecondition(f"no Kubernetes API access: not in a cluster and no kubeconfig ({exc})") from None
    return k8s.ApiClient()


jobs.register_backend("kubernetes", KubernetesBackend)
