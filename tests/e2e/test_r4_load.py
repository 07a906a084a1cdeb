"""R4: 50 concurrent SampleRandom clients against one GAN service on loopback (10 s in CI, 60 s with SMF_SLOW=1):
no error other than RESOURCE_EXHAUSTED, the service's memory stays bounded (RSS sampled), p50/p99 latency reported.
A second phase overloads a service started with a tiny render queue: RESOURCE_EXHAUSTED appears, nothing else."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
from smf.common.errors import SmfError
from smf.gan.client import GanClient
from smf.pipeline.services import local_services

from .helpers import SLOW, record_figures

CLIENTS = 50


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _hammer(target: str, token: str, seconds: float, pid: int) -> dict:
    latencies: list[float] = []
    errors: Counter = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    rss: list[tuple[float, float]] = []

    def client() -> None:
        with GanClient(target, token=token, timeout=30.0) as gan:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    out = gan.sample_random("trained", 1, output="inline")
                    assert out.audio is not None and out.audio.shape[0] == 1
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                except SmfError as exc:
                    code = getattr(exc, "code", grpc.StatusCode.UNKNOWN)
                    with lock:
                        errors[code.name] += 1
                    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        time.sleep(0.05)  # what a well-behaved client does: back off

    def sampler() -> None:
        t0 = time.monotonic()
        while time.monotonic() < stop + 0.5:
            rss.append((time.monotonic() - t0, _rss_mb(pid)))
            time.sleep(0.25)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)] + [threading.Thread(target=sampler)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    lat = np.asarray(latencies) * 1000
    mem = np.asarray([m for _, m in rss])
    third = max(len(mem) // 3, 1)
    return {
        "clients": CLIENTS,
        "seconds": round(wall, 1),
        "ok": len(latencies),
        "throughput_per_s": round(len(latencies) / wall, 1),
        "errors": dict(errors),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p99": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "max": round(float(lat.max()), 1) if len(lat) else None,
        },
        "rss_mb": {
            "start": round(float(mem[0]), 1),
            "max": round(float(mem.max()), 1),
            "first_third_mean": round(float(mem[:third].mean()), 1),
            "last_third_mean": round(float(mem[-third:].mean()), 1),
        },
    }


def test_50_concurrent_sample_clients(gan_store, tmp_path):
    seconds = 60 if SLOW else 10
    with local_services(gan_store.uri, log_dir=tmp_path / "logs", names=("gan",)) as svc:
        normal = _hammer(svc.targets["gan"], svc.token, seconds, svc.processes["gan"].pid)
    with local_services(
        gan_store.uri, log_dir=tmp_path / "logs2", names=("gan",), extra_args={"gan": ["--max-queue", "4"]}
    ) as svc:
        overload = _hammer(svc.targets["gan"], svc.token, min(seconds, 10), svc.processes["gan"].pid)
    record_figures("R4", {"normal": normal, "overload_max_queue_4": overload})
    for phase in (normal, overload):
        assert set(phase["errors"]) <= {"RESOURCE_EXHAUSTED"}, phase["errors"]
        assert phase["ok"] > 0
        # bounded memory: no growth trend over the run (allow noise), and well under a GiB for a tiny model
        assert phase["rss_mb"]["last_third_mean"] < phase["rss_mb"]["first_third_mean"] * 1.25 + 50
        assert phase["rss_mb"]["max"] < 1500
    assert overload["errors"].get("RESOURCE_EXHAUSTED", 0) > 0
