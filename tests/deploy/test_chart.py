"""The Helm chart, checked offline with the real Helm engine (lint + render) and Kubernetes 1.30 OpenAPI schemas."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml
from support.chart_render import (
    CHART,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    by_kind,
    helm,
    objects,
    render,
    training_job,
)

KUBE_VERSION = "1.30"
SERVICES = {"gan": 50051, "grid": 50052, "som": 50053, "rnn": 50054, "artifact": 50055, "pipeline": 50056}
FULL = f"{RELEASE}-smf"
GPU = "nvidia.com/gpu"
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # no upstream schema: checked by hand below


@pytest.fixture(scope="session", params=sorted(VALUE_SETS))
def value_set(request):
    return request.param, VALUE_SETS[request.param], render(VALUE_SETS[request.param])


def pod_specs(rendered, *, with_training=True):
    """(owner description, pod spec) of every pod the release can run."""
    for obj in objects(rendered):
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in ("Deployment", "StatefulSet", "Job"):
            yield f"{kind}/{name}", obj["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield f"Pod/{name}", obj["spec"]
    if (
        with_training
        and by_kind(rendered, "ConfigMap")
        and any(o["metadata"]["name"].endswith("-training-template") for o in by_kind(rendered, "ConfigMap"))
    ):
        yield "training Job template", training_job(rendered)["spec"]["template"]["spec"]


# ---- Helm lint + schema validation of every manifest --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_strict_is_clean(name):
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == []
    # severity 1 = info ("icon is recommended" is the only one); 2 warning and 3 error fail the chart.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems
    assert {m["error"] for m in report["messages"]} <= {"icon is recommended"}


def test_every_manifest_validates_against_kubernetes_schemas(value_set):
    name, _, rendered = value_set
    count = 0
    for obj in objects(rendered):
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        count += 1
    if any(o["metadata"]["name"].endswith("-training-template") for o in by_kind(rendered, "ConfigMap")):
        kubernetes_validate.validate(training_job(rendered), KUBE_VERSION, strict=True)
        count += 1
    assert count >= 15, f"{name}: only {count} manifests rendered"


def test_validation_catches_a_broken_manifest():
    """The validator is not a no-op: a typo'd field and a wrong type in a rendered Deployment are caught."""
    (dep,) = [d for d in by_kind(render({}), "Deployment") if d["metadata"]["name"] == f"{FULL}-gan"]
    typo = copy.deepcopy(dep)
    typo["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBE_VERSION, strict=True)
    wrong = copy.deepcopy(dep)
    wrong["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBE_VERSION, strict=True)


def test_every_object_carries_the_standard_labels(value_set):
    _, _, rendered = value_set
    for obj in objects(rendered):
        labels = obj["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert obj["metadata"].get("namespace", NAMESPACE) == NAMESPACE


# ---- services -----------------------------------------------------------------------------------------------


def test_each_service_has_deployment_and_service_with_grpc_probes(value_set):
    _, _, rendered = value_set
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in by_kind(rendered, "Deployment")}
    services = {s["metadata"]["name"]: s for s in by_kind(rendered, "Service")}
    assert set(deployments) == set(SERVICES)
    for svc, port in SERVICES.items():
        pod = deployments[svc]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"][:2] == ["serve", svc]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == port and ports["metrics"] == port + 1000
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"]["port"] == port, f"{svc} {probe}"
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        spread = pod["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        service = services[f"{FULL}-{svc}"]
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]}.items() >= {"grpc": port}.items()
        assert service["spec"]["selector"] == deployments[svc]["spec"]["selector"]["matchLabels"]
        env = {e["name"]: e for e in container["env"]}
        assert env["SMF_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert env["SMF_STORE"]["value"].startswith("s3://")
        assert env["SMF_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
        assert env["SMF_GAN_TARGETS"]["value"] == f"{FULL}-gan:50051"
    grid = deployments["grid"]["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in grid["ports"]}["http"] == 8080


def test_pods_are_non_root_read_only_and_unprivileged(value_set):
    _, _, rendered = value_set
    for owner, spec in pod_specs(rendered):
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, owner
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, owner
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, owner
            assert sc["allowPrivilegeEscalation"] is False, owner
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), owner
            assert sc.get("privileged") in (None, False), owner
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert mounts.get("/tmp") in tmp_volumes, f"{owner}: /tmp must be a writable emptyDir"


def test_only_job_launchers_get_an_api_token(value_set):
    _, values, rendered = value_set
    launcher_sa = f"{FULL}-job-launcher"
    k8s_backend = values.get("training", {}).get("backend", "kubernetes") == "kubernetes"
    for owner, spec in pod_specs(rendered, with_training=False):
        component = owner.split("/")[1].removeprefix(f"{FULL}-")
        if k8s_backend and owner.startswith("Deployment/") and component in ("gan", "rnn"):
            assert spec["serviceAccountName"] == launcher_sa and spec["automountServiceAccountToken"] is True
        else:
            assert spec["serviceAccountName"] != launcher_sa, owner
            assert spec["automountServiceAccountToken"] is False, owner
    if k8s_backend:
        train = training_job(rendered)["spec"]["template"]["spec"]
        assert train["automountServiceAccountToken"] is False and train["serviceAccountName"] == f"{FULL}-training"


# ---- RBAC ---------------------------------------------------------------------------------------------------


def test_rbac_is_limited_to_jobs_in_the_namespace(value_set):
    _, values, rendered = value_set
    kinds = {o["kind"] for o in objects(rendered)}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    roles = by_kind(rendered, "Role")
    if values.get("training", {}).get("backend") == "local":
        assert roles == [] and by_kind(rendered, "RoleBinding") == []
        return
    (role,) = roles
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    jobs = {("batch", "jobs", v) for v in ("create", "get", "delete")}
    assert granted == jobs | {("", "pods", "list"), ("", "pods/log", "get")}
    assert all("resourceNames" not in rule for rule in role["rules"])
    (binding,) = by_kind(rendered, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{FULL}-job-launcher", "namespace": NAMESPACE}]


# ---- GPU pool: only training pods ---------------------------------------------------------------------------


def test_gpu_limits_and_tolerations_only_on_training_pods(value_set):
    _, values, rendered = value_set
    training = values.get("training", {})
    gpu_tolerations = training.get("tolerations", [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}])
    for owner, spec in pod_specs(rendered, with_training=False):
        for c in spec["containers"]:
            for section in ("limits", "requests"):
                assert not any(k.endswith("/gpu") for k in c.get("resources", {}).get(section, {})), owner
        for tol in spec.get("tolerations", []):
            assert tol not in gpu_tolerations, f"{owner} tolerates the GPU pool"
        for key in training.get("nodeSelector", {}):
            assert key not in spec.get("nodeSelector", {}), f"{owner} selects the GPU pool"
    if training.get("backend") == "local":
        return
    spec = training_job(rendered)["spec"]["template"]["spec"]
    (trainer,) = spec["containers"]
    assert trainer["resources"]["limits"][GPU] == str(training.get("gpu", {}).get("count", 1))
    assert spec["tolerations"] == gpu_tolerations
    assert spec.get("nodeSelector", {}) == training.get("nodeSelector", {})
    if "priorityClassName" in training:
        assert spec["priorityClassName"] == training["priorityClassName"]


def test_training_template_has_the_job_policies(value_set):
    _, values, rendered = value_set
    if values.get("training", {}).get("backend") == "local":
        assert not [c for c in by_kind(rendered, "ConfigMap") if "training" in c["metadata"]["name"]]
        return
    job = training_job(rendered)
    spec = job["spec"]
    assert spec["backoffLimit"] == 3 and spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    assert rules[-1]["action"] == "FailJob" and rules[-1]["onExitCodes"]["values"] == [2]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    assert pod["terminationGracePeriodSeconds"] >= 120  # time to upload a checkpoint after SIGTERM
    assert pod["subdomain"] == f"{FULL}-training"
    (headless,) = [s for s in by_kind(rendered, "Service") if s["metadata"]["name"] == f"{FULL}-training"]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["SMF_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"]
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "smf"  # created by smf, not Helm


def test_training_template_loads_into_the_job_builder():
    from smf.common import jobs, k8s_jobs

    rendered = render(VALUE_SETS["gpu-pool"])
    template = k8s_jobs.load_template(training_job(rendered))
    spec = jobs.JobSpec(name="h100 run", kind="rnn", module="smf.rnn.train", args=["--config", "c.json"])
    job = k8s_jobs.to_manifest(k8s_jobs.build_job(template, spec))
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][GPU] == "4"


# ---- storage, autoscaling, secrets, network ------------------------------------------------------------------


def test_minio_storage_when_enabled():
    rendered = render({})
    (sts,) = by_kind(rendered, "StatefulSet")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    (init,) = [j for j in by_kind(rendered, "Job") if j["metadata"]["name"] == f"{FULL}-minio-init"]
    assert "post-install" in init["metadata"]["annotations"]["helm.sh/hook"]
    script = init["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "mc mb --ignore-existing" in script and "mc admin user add" in script
    env = {e["name"]: e for e in by_kind(rendered, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SMF_STORE"]["value"] == "s3://smf/store"
    assert env["SMF_S3_ENDPOINT"]["value"] == f"http://{FULL}-minio.{NAMESPACE}.svc:9000"
    secrets = {s["metadata"]["name"] for s in by_kind(rendered, "Secret")}
    assert secrets == {f"{FULL}-token", f"{FULL}-s3", f"{FULL}-minio"}


def test_external_s3_with_existing_secrets():
    values = VALUE_SETS["external-s3-existing-secret"]
    rendered = render(values)
    assert not by_kind(rendered, "StatefulSet") and not by_kind(rendered, "PersistentVolumeClaim")
    assert not [j for j in by_kind(rendered, "Job") if "minio" in j["metadata"]["name"]]
    assert by_kind(rendered, "Secret") == []  # every credential comes from the user's Secrets
    for owner, spec in pod_specs(rendered):
        if "test" in owner:
            continue
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["SMF_STORE"]["value"] == "s3://lab-sounds/smf/prod"
        assert env["SMF_S3_ENDPOINT"]["value"] == "https://s3.eu-west-1.amazonaws.com"
        assert env["SMF_S3_REGION"]["value"] == "eu-west-1"
        assert env["SMF_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "lab-s3-creds",
            "key": "AWS_ACCESS_KEY_ID",
        }
        if owner.startswith("Deployment"):
            assert env["SMF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "lab-smf-token", "key": "bearer"}


def test_hpa_scales_gan_only_and_owns_its_replicas():
    on, off = render({}), render(VALUE_SETS["hpa-off"])
    (hpa,) = by_kind(on, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{FULL}-gan"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"

    def gan(r):
        return next(d for d in by_kind(r, "Deployment") if d["metadata"]["name"] == f"{FULL}-gan")

    assert "replicas" not in gan(on)["spec"]  # the HPA owns it; a fixed value would fight it on every upgrade
    assert by_kind(off, "HorizontalPodAutoscaler") == []
    assert gan(off)["spec"]["replicas"] == 3
    custom = {
        "type": "Pods",
        "pods": {"metric": {"name": "smf_rpc_inflight"}, "target": {"type": "AverageValue", "averageValue": "4"}},
    }
    (hpa,) = by_kind(render({"services": {"gan": {"autoscaling": {"metrics": [custom]}}}}), "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][1] == custom
    kubernetes_validate.validate(hpa, KUBE_VERSION, strict=True)


def test_generated_secrets_and_explicit_token():
    rendered = render({"auth": {"token": "t" * 24}})
    token = next(s for s in by_kind(rendered, "Secret") if s["metadata"]["name"] == f"{FULL}-token")
    import base64

    assert base64.b64decode(token["data"]["token"]).decode() == "t" * 24
    s3 = next(s for s in by_kind(rendered, "Secret") if s["metadata"]["name"] == f"{FULL}-s3")
    assert len(base64.b64decode(s3["data"]["secretKey"])) == 40


def test_network_policies():
    rendered = render({})
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(rendered, "NetworkPolicy")}
    assert set(policies) == {f"{FULL}-services", f"{FULL}-minio", f"{FULL}-training"}
    services = policies[f"{FULL}-services"]
    grpc_ports = {p["port"] for p in services["ingress"][0]["ports"]}
    assert grpc_ports == set(SERVICES.values()) | {8080}
    assert {p["port"] for p in services["ingress"][1]["ports"]} == {p + 1000 for p in SERVICES.values()}
    minio = policies[f"{FULL}-minio"]
    assert minio["ingress"] == [
        {
            "from": [
                {
                    "podSelector": {
                        "matchLabels": {"app.kubernetes.io/name": "smf", "app.kubernetes.io/instance": RELEASE}
                    }
                }
            ],
            "ports": [{"port": 9000, "protocol": "TCP"}],
        }
    ]
    assert by_kind(render(VALUE_SETS["minio-off"]), "NetworkPolicy") == []


def test_service_monitor_and_helm_test_pod():
    rendered = render(VALUE_SETS["minio-off"])
    (sm,) = by_kind(rendered, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (pod,) = by_kind(rendered, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    targets = pod["spec"]["containers"][0]["args"][1:]
    assert targets == [f"{FULL}-{s}:{p}" for s, p in sorted(SERVICES.items())]
    assert pod["spec"]["containers"][0]["image"] == "ghcr.io/smf/smf@sha256:" + "ab" * 32
    # The probe script itself must at least compile.
    compile(pod["spec"]["containers"][0]["args"][0], "helm-test", "exec")


def test_disabled_service_disappears_everywhere():
    rendered = render({"services": {"som": {"enabled": False}}})
    names = {o["metadata"]["name"] for o in objects(rendered)}
    assert f"{FULL}-som" not in names
    (pod,) = by_kind(rendered, "Pod")
    assert not [a for a in pod["spec"]["containers"][0]["args"] if "-som:" in a]
    env = {e["name"] for e in by_kind(rendered, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "SMF_SOM_TARGETS" not in env


def _grid_env(values: dict) -> dict:
    rendered = render(values)
    (grid,) = [d for d in by_kind(rendered, "Deployment") if d["metadata"]["name"] == f"{FULL}-grid"]
    return {e["name"]: e.get("value") for e in grid["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_grid_live_panel_plays_the_rnn_service_in_the_cluster():
    assert "SMF_LIVE_MODEL" not in _grid_env({})  # off by default
    env = _grid_env({"services": {"grid": {"live": {"model": "rnn/demo", "chain": "rnn/demo-controls"}}}})
    assert env["SMF_LIVE_RNN"] == f"{FULL}-rnn:50054"
    assert env["SMF_LIVE_MODEL"] == "rnn/demo" and env["SMF_LIVE_CHAIN"] == "rnn/demo-controls"
    off = _grid_env({"services": {"grid": {"live": {"model": "rnn/demo"}}, "rnn": {"enabled": False}}})
    assert "SMF_LIVE_RNN" not in off  # no rnn service to play: the panel stays off


def test_notes_render():
    with helm.Chart.load(CHART) as chart:
        notes = chart.render(values={}, name=RELEASE, namespace=NAMESPACE)["smf/templates/NOTES.txt"]
    assert f"{FULL}-gan.{NAMESPACE}.svc:50051" in notes and "helm test" in notes


# ---- values.schema.json --------------------------------------------------------------------------------------

BAD_VALUES = [
    ({"services": {"gan": {"grpcPort": 70000}}}, "/services/gan/grpcPort"),
    ({"services": {"gan": {"replicas": 2}}}, "replicas"),  # typo of replicaCount
    ({"servics": {}}, "servics"),
    ({"training": {"backend": "slurm"}}, "/training/backend"),
    ({"training": {"gpu": {"count": -1}}}, "/training/gpu/count"),
    ({"training": {"terminationGracePeriodSeconds": 5}}, "terminationGracePeriodSeconds"),
    ({"training": {"tolerations": [{"key": "x", "operator": "Maybe"}]}}, "operator"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
    ({"containerSecurityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
    ({"s3": {"bucket": "Bad_Bucket"}}, "/s3/bucket"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"image": {"digest": "sha256:xyz"}}, "digest"),
    ({"auth": {"token": "short"}}, "/auth/token"),
    ({"minio": {"enabled": False}}, "/s3"),  # external S3 needs an endpoint and credentials
    ({"minio": {"enabled": False}, "s3": {"endpoint": "s3.local:9000"}}, "/s3"),  # ... credentials
    ({"services": {"gan": {"resources": {"limits": {"memory": "lots"}}}}}, "memory"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "interval"),
    ({"services": {"grid": {"live": {"model": "../x"}}}}, "model"),
]


@pytest.mark.parametrize("values,where", BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(values, where):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as err:
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    assert where in str(err.value)


def test_defaults_satisfy_the_schema():
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(yaml.safe_load((CHART / "values.yaml").read_text()))
