"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.

    plane = ControlPlane(tmp_dir).start()     # ~5-10 s; certificates generated, every port chosen free
    plane.kubeconfig                          # admin (system:masters) kubeconfig path
    plane.api_client()                        # a kubernetes.client.ApiClient as admin
    plane.api_client(token=t)                 # ... as whoever the bearer token names (a ServiceAccount token)
    plane.add_node("gpu-0", labels={...}, taints=[...], capacity={"nvidia.com/gpu": "8"})
    plane.stop()

The binaries, etcd included, come from tools/k8s/build.sh (`make setup`), built from the Go modules pinned in
tools/k8s/*/go.mod. There is no kubelet: kwok plays every node and pod this plane schedules, per
tests/support/kwok-stages.yaml — a scheduled pod becomes Running and Ready, and ends when a test annotates it with
`smf-test/exit-code` (see `finish_pod`). Everything else is the real thing: authentication by client certificate and
ServiceAccount token, RBAC, admission, defaulting and validation, the Job, ReplicaSet, garbage-collector and
ServiceAccount controllers, the scheduler's filters (nodeSelector, taints, extended resources like nvidia.com/gpu).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Self

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from support.seaweed import free_ports

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SMF_K8S_BIN") or ROOT / "build" / "k8s" / "bin")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
STAGES = Path(__file__).with_name("kwok-stages.yaml")
KWOK_NODE_LABEL = {"type": "kwok"}
EXIT_CODE_ANNOTATION = "smf-test/exit-code"
SERVICE_CIDR = "10.96.0.0/16"
READY_TIMEOUT_S = 60.0


def binaries() -> dict[str, str]:
    """Paths of the control plane's binaries; a clear error naming the fix when one is missing."""
    found = {name: BIN / name for name in BINARIES}
    missing = [n for n, p in found.items() if not os.access(p, os.X_OK)]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not built in {BIN}: run `make setup` (or `make k8s`)")
    return {n: str(p) for n, p in found.items()}


# ---- certificates ---------------------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class _CA:
    def __init__(self, name: str):
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, cn: str, *, orgs: tuple[str, ...] = (), server_names: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) for a client (CN = user, O = groups) or, with server_names, a serving certificate."""
        key = _key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server_names:
            sans: list[x509.GeneralName] = []
            for n in server_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    sans.append(x509.DNSName(n))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            usage = [x509.ExtendedKeyUsageOID.SERVER_AUTH]
        else:
            usage = [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
        cert = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False).sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


# ---- the plane ------------------------------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, as subprocesses under `root`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.procs: dict[str, subprocess.Popen] = {}
        self.etcd_port, self.etcd_peer_port, self.port = free_ports(3)
        self.server = f"https://127.0.0.1:{self.port}"
        self.startup_s: float | None = None

    # -- files --

    def _write(self, name: str, data: bytes | str, mode: int = 0o600) -> Path:
        path = self.root / "pki" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        path.chmod(mode)
        return path

    def _kubeconfig(self, name: str, cn: str, orgs: tuple[str, ...] = ()) -> Path:
        cert, key = self.ca.issue(cn, orgs=orgs)
        cert_path, key_path = self._write(f"{name}.crt", cert), self._write(f"{name}.key", key)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "smf-test", "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": name, "user": {"client-certificate": str(cert_path), "client-key": str(key_path)}}],
            "contexts": [{"name": name, "context": {"cluster": "smf-test", "user": name}}],
            "current-context": name,
        }
        return self._write(f"{name}.kubeconfig", yaml.safe_dump(config))

    def _certificates(self) -> None:
        self.ca = _CA("smf-test-ca")
        self.ca_file = self._write("ca.crt", self.ca.cert.public_bytes(serialization.Encoding.PEM), 0o644)
        names = ("127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "10.96.0.1")
        cert, key = self.ca.issue("kube-apiserver", server_names=names)
        self.serving = (self._write("apiserver.crt", cert), self._write("apiserver.key", key))
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = self._write("sa.key", _pem_key(sa))
        self.sa_pub = self._write(
            "sa.pub",
            sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        )
        self.kubeconfig = self._kubeconfig("admin", "smf-test-admin", ("system:masters",))
        self._cm_kubeconfig = self._kubeconfig("controller-manager", "system:kube-controller-manager")
        self._sched_kubeconfig = self._kubeconfig("scheduler", "system:kube-scheduler")

    # -- processes --

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 -- lives as long as the process
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
        )

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(self.root / "pki" / "admin.crt", self.root / "pki" / "admin.key")
        return ctx

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(self.server + path, context=self._ssl(), timeout=5) as resp:  # noqa: S310
            return resp.read().decode()

    def _wait(self, what: str, ready, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                if ready():
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {timeout:.0f} s; logs in {self.root}")
            time.sleep(0.1)

    def start(self) -> Self:
        """Start every component and wait until the controllers work; on any failure nothing is left running."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Self:
        bins = binaries()
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self._certificates()
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn(
            "etcd",
            [
                bins["etcd"],
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        cert, key = self.serving
        self._spawn(
            "kube-apiserver",
            [
                bins["kube-apiserver"],
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={cert}",
                f"--tls-private-key-file={key}",
                f"--client-ca-file={self.ca_file}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.sa_pub}",
                f"--service-account-signing-key-file={self.sa_key}",
                "--authorization-mode=Node,RBAC",
                "--endpoint-reconciler-type=none",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cert-dir={self.root / 'apiserver-certs'}",
                "--profiling=false",
                "-v=0",
            ],
        )
        self._wait("kube-apiserver", lambda: self._get("/readyz") == "ok")
        common = ["--leader-elect=false", "--secure-port=0", "--profiling=false", "-v=0"]
        self._spawn(
            "kube-controller-manager",
            [
                bins["kube-controller-manager"],
                f"--kubeconfig={self._cm_kubeconfig}",
                f"--service-account-private-key-file={self.sa_key}",
                f"--root-ca-file={self.ca_file}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                *common,
            ],
        )
        self._spawn("kube-scheduler", [bins["kube-scheduler"], f"--kubeconfig={self._sched_kubeconfig}", *common])
        self._spawn(
            "kwok",
            [
                bins["kwok"],
                f"--kubeconfig={self.kubeconfig}",
                f"--config={STAGES}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-label-selector=" + ",".join(f"{k}={v}" for k, v in KWOK_NODE_LABEL.items()),
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.1/16",
                "--node-ip=10.0.0.1",
                "--server-address=",
            ],
        )
        # Ready when the controllers work: the ServiceAccount controller has made `default` in namespace default.
        self._wait(
            "kube-controller-manager",
            lambda: (
                '"name":"default"' in self._get("/api/v1/namespaces/default/serviceaccounts/default").replace(" ", "")
            ),
        )
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients and objects --

    def api_client(self, *, token: str | None = None):
        """A kubernetes ApiClient: as admin (client certificate), or as the bearer of `token`."""
        from kubernetes import client, config

        if token is None:
            return config.new_client_from_config(config_file=str(self.kubeconfig))
        conf = client.Configuration()
        conf.host = self.server
        conf.ssl_ca_cert = str(self.ca_file)
        conf.api_key = {"authorization": token}
        conf.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(conf)

    def token(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A token the API server issues for a ServiceAccount (TokenRequest), as the kubelet would mount it."""
        from kubernetes import client

        core = client.CoreV1Api(self.api_client())
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
        )
        return core.create_namespaced_service_account_token(service_account, namespace, request).status.token

    def add_node(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        taints: list[dict] | None = None,
        capacity: dict[str, str] | None = None,
        wait: bool = True,
    ) -> None:
        """A node kwok plays (Ready within seconds), with extra labels, taints and capacity (e.g. nvidia.com/gpu)."""
        from kubernetes import client

        resources = {"cpu": "32", "memory": "128Gi", "pods": "110", **(capacity or {})}
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {**KWOK_NODE_LABEL, "kubernetes.io/hostname": name, **(labels or {})},
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": taints or []},
            "status": {"capacity": resources, "allocatable": resources},
        }
        client.CoreV1Api(self.api_client()).create_node(body)
        if wait:
            self.wait_nodes_ready([name])

    def wait_nodes_ready(self, names: list[str], timeout: float = 30.0) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api_client())

        def ready() -> bool:
            nodes = [core.read_node(n) for n in names]
            return all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []) for n in nodes)

        self._wait(f"nodes {', '.join(names)}", ready, timeout=timeout)


def finish_pod(core, namespace: str, pod: str, exit_code: int = 0) -> None:
    """Make kwok end a Running pod's containers with `exit_code` (what the trainer process would have returned)."""
    core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: str(exit_code)}}})


def wait_for(what: str, predicate, timeout: float = 60.0, interval: float = 0.1):
    """Poll until `predicate()` is truthy; returns its value, or raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
