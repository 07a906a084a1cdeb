"""A real Prometheus server (Debian `prometheus`) scrapes a running `smf serve artifact` on loopback; PromQL over the
HTTP API must return smf's RPC counters and latency histogram buckets. This is what the chart's pod annotations /
ServiceMonitor point a cluster's Prometheus at."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
from smf.common.v1 import artifact_pb2, artifact_pb2_grpc

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="Debian prometheus not installed (make setup)")
TOKEN = "prometheus-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}\n{log.read_text() if log else ''}")
        try:
            result = predicate()
        except (OSError, ValueError):
            result = None
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{log.read_text()[-3000:] if log else ''}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def smf_service(tmp_path):
    """`smf serve artifact` as its own process, exactly as the chart runs it (token auth on, metrics port)."""
    port, metrics_port = free_port(), free_port()
    log = tmp_path / "smf.log"
    env = {**os.environ, "SMF_TOKEN": TOKEN, "SMF_STORE": (tmp_path / "store").as_uri()}
    env.pop("SMF_ALLOW_NO_AUTH", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smf.cli",
                "serve",
                "artifact",
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
                "--host",
                "127.0.0.1",
                "--grace",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).status == 200,
            60,
            "smf metrics endpoint",
            proc,
            log,
        )
        yield port, metrics_port
    finally:
        stop(proc)


@pytest.fixture
def prometheus(tmp_path, smf_service):
    _, metrics_port = smf_service
    web = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {  # JSON is YAML
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "smf-artifact",
                        "metrics_path": "/metrics",
                        "static_configs": [
                            {
                                "targets": [f"127.0.0.1:{metrics_port}"],
                                "labels": {"app_kubernetes_io_component": "artifact"},
                            }
                        ],
                    }
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{web}", proc, log
    finally:
        stop(proc)


def query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_smf_rpc_metrics(smf_service, prometheus):
    port, _ = smf_service
    base, proc, log = prometheus
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
        auth = [("authorization", f"Bearer {TOKEN}")]
        for _ in range(5):
            stub.ListArtifacts(artifact_pb2.ListArtifactsRequest(prefix=""), metadata=auth, timeout=10)
        with pytest.raises(grpc.RpcError) as err:  # counted too, under its status code
            stub.StatArtifact(artifact_pb2.StatArtifactRequest(key="missing/key"), metadata=auth, timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            stub.ListArtifacts(artifact_pb2.ListArtifactsRequest(), timeout=10)  # no token
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    started = time.monotonic()
    wait_for(
        lambda: any(r["value"][1] == "1" for r in query(base, 'up{job="smf-artifact"}')),
        60,
        "first successful scrape",
        proc,
        log,
    )
    first_scrape_s = time.monotonic() - started

    def handled():
        rows = query(base, 'smf_grpc_server_handled_total{job="smf-artifact",grpc_method="ListArtifacts"}')
        return rows if rows and sum(float(r["value"][1]) for r in rows) >= 6 else None

    rows = wait_for(handled, 30, "ListArtifacts counters", proc, log)
    by_code = {r["metric"]["grpc_code"]: float(r["value"][1]) for r in rows}
    assert by_code["OK"] == 5
    assert by_code["UNAUTHENTICATED"] == 1
    assert rows[0]["metric"]["grpc_service"] == "smf.common.v1.ArtifactService"
    assert rows[0]["metric"]["app_kubernetes_io_component"] == "artifact"  # target labels survive
    (stat,) = query(base, 'smf_grpc_server_handled_total{grpc_method="StatArtifact"}')
    assert stat["metric"]["grpc_code"] == "NOT_FOUND" and float(stat["value"][1]) == 1

    buckets = query(base, 'smf_grpc_server_handling_seconds_bucket{grpc_method="ListArtifacts"}')
    les = {r["metric"]["le"] for r in buckets}
    assert {"0.001", "0.01", "0.1", "1.0", "+Inf"} <= les
    inf = sum(float(r["value"][1]) for r in buckets if r["metric"]["le"] == "+Inf")
    assert inf >= 5  # every authenticated call landed in a bucket
    # The query a dashboard would run: p99 latency from the buckets.
    (p99,) = query(
        base,
        'histogram_quantile(0.99, sum by (le) (smf_grpc_server_handling_seconds_bucket{grpc_method="ListArtifacts"}))',
    )
    assert 0 < float(p99["value"][1]) < 10
    print(f"first scrape landed {first_scrape_s:.1f}s after the RPCs")
