"""GAN sampling throughput: batched vs one-at-a-time, and 1 vs 2 server replicas behind the spreading client.

    .venv/bin/python bench/gan_sampling.py                  # tiny config (the test/demo model)
    .venv/bin/python bench/gan_sampling.py --config services/gan/configs/oreilly_uncond.json --n 64

Sounds/s are end to end over loopback gRPC (latents in, float32 audio out, PGHI included). The model is freshly
initialised (throughput does not depend on training). Every replica runs with one torch thread
(`smf serve gan --threads 1`), so "2 replicas" means 2 cores doing independent work, as 2 pods would.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(store, config: Path) -> None:
    from smf.gan.config import load_config
    from smf.gan.train import Trainer, TrainingData

    cfg = load_config(config)
    specs = torch.rand(8, cfg.transform.n_bins, cfg.transform.n_frames) * 2 - 1
    tr = Trainer(cfg, store, "gan/bench", data=TrainingData.from_specs(specs), log=lambda *_: None)
    tr.step = sum(cfg.model.maxIterAtScale[:-1])  # sample at the last (full-size) scale
    tr.run(max_steps=0)


def start_replica(store_uri: str, max_batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SMF_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smf.cli",
            "serve",
            "gan",
            "--port",
            str(port),
            "--metrics-port",
            "-1",
            "--host",
            "127.0.0.1",
            "--store",
            store_uri,
            "--threads",
            "1",
            "--max-batch",
            str(max_batch),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"127.0.0.1:{port}"


def wait_ready(client, tries: int = 300) -> None:
    for _ in range(tries):
        try:
            client.list_models()
            return
        except Exception:  # noqa: BLE001 — not up yet
            time.sleep(0.1)
    raise RuntimeError("replica did not start")


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "services/gan/configs/tiny.json"))
    p.add_argument("--n", type=int, default=256, help="sounds per measurement")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds (median reported)")
    args = p.parse_args()
    torch.set_num_threads(1)

    from smf.common.store import open_store
    from smf.gan.client import GanClient
    from smf.gan.sample import load_model

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"file://{tmp}/store")
        make_model(store, Path(args.config))
        model = load_model(store, "bench")
        z = model.random_latents(args.n, seed=0).numpy()
        n1 = max(args.n // 8, 8)  # one-at-a-time is slow: measure fewer sounds

        procs = []
        try:
            a, ta = start_replica(store.uri, args.max_batch)
            b, tb = start_replica(store.uri, args.max_batch)
            procs = [a, b]
            one = GanClient(ta, token=TOKEN)
            two = GanClient([ta, tb], token=TOKEN)
            wait_ready(one)
            wait_ready(GanClient(tb, token=TOKEN))
            one.render_latents("bench", z[:4])  # load + warm both replicas
            GanClient(tb, token=TOKEN).render_latents("bench", z[:4])

            # Interleaved rounds, median of each: on a shared machine other load comes and goes, and
            # interleaving exposes every variant to the same conditions.
            runs = {"singles": [], "batched": [], "spread": []}
            for _ in range(args.rounds):
                runs["singles"].append(rate(lambda: [one.render_latents("bench", z[i : i + 1]) for i in range(n1)], n1))
                runs["batched"].append(rate(lambda: one.render_latents("bench", z), args.n))
                runs["spread"].append(rate(lambda: two.render_latents("bench", z), args.n))
            singles, batched, spread = (statistics.median(runs[k]) for k in ("singles", "batched", "spread"))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)

    result = {
        "config": Path(args.config).name,
        "spectrogram": [model.args.n_bins, model.args.n_frames],
        "sounds": args.n,
        "max_batch": args.max_batch,
        "one_at_a_time_sounds_per_s": round(singles, 1),
        "batched_sounds_per_s": round(batched, 1),
        "batched_over_one_at_a_time": round(batched / singles, 2),
        "two_replicas_sounds_per_s": round(spread, 1),
        "two_over_one_replica": round(spread / batched, 2),
        "torch_threads_per_replica": 1,
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))
    print(
        f"batched vs one-at-a-time: {result['batched_over_one_at_a_time']}x (goal >= 8x); "
        f"2 vs 1 replicas: {result['two_over_one_replica']}x (goal >= 1.7x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
