"""GAN training data at two sizes: peak RSS and steps/s for 1 000 vs 20 000 synthetic clips, file store and S3.

    .venv/bin/python bench/gan_data.py --quick            # fewer steps (about 3 minutes on 2 cores)
    .venv/bin/python bench/gan_data.py --stores file      # without the SeaweedFS server
    .venv/bin/python bench/gan_data.py --old 47497fc      # also the trainer as it was at a commit (in-RAM loader)

Data: noise textures of 20 tiny-config clips each (20 x 2048 samples at 16 kHz), so 1 000 clips = 50 files and
20 000 clips = 1 000 files, written to a file store and to an S3 bucket on a local SeaweedFS (started as the tests
start it, tests/support/seaweed.py). Every measurement is a fresh process (its own peak RSS, its own page cache
warmth aside) that loads the data through smf.gan.data and times Trainer.train_step at the tiny config's last
(full-size) scale, one torch thread:
- cold:    empty spectrogram cache; streamed (memory_budget_mb 0): load time includes reading + transforming
- stream:  warm cache, memory_budget_mb 0: clips read from the cache per batch (num_workers 0)
- stream+w1: the same through a DataLoader with one worker process
- ram:     warm cache, default budget (256 MiB): every clip in one tensor, as the old loader held them
- old:     (--old) the trainer of that commit on the same files as a local folder: all clips in RAM, first clip of
           each file only (so fewer clips: its steps/s is the reference, its RSS is not)
Ratios: 20 000 / 1 000 of peak RSS (goal: within 10 % when streamed) and steps/s of each mode / ram.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SR, CLIP, PER_FILE = 16000, 2048, 20
MODES = ("cold", "stream", "stream+w1", "ram")


def bench_config(data_path: str, *, budget_mb: int, workers: int) -> dict:
    cfg = json.loads((ROOT / "services/gan/configs/tiny.json").read_text())
    cfg["loaderConfig"] = {"data_path": data_path, "shuffle": False}
    if budget_mb is not None:  # the old loader knows neither key
        cfg["loaderConfig"].update(memory_budget_mb=budget_mb, num_workers=workers)
    m = cfg["modelConfig"]
    m.update(startScale=len(m["maxIterAtScale"]) - 1, miniBatchSize=[8] * len(m["maxIterAtScale"]))
    cfg["trainConfig"].update(checkpointEvery=10**9, logEvery=10**9)
    return cfg


def child(args) -> None:
    """One measurement: load the data, time train_step; prints one JSON line."""
    import torch

    torch.set_num_threads(1)
    from smf.common.store import open_store
    from smf.gan.config import parse_config
    from smf.gan.train import Trainer

    budget = None if args.mode == "old" else (10**6 if args.mode == "ram" else 0)
    cfg = parse_config(bench_config(args.data, budget_mb=budget, workers=1 if args.mode == "stream+w1" else 0))
    store = open_store(args.store)
    t0 = time.perf_counter()
    tr = Trainer(cfg, store, f"gan/bench-{os.getpid()}", log=lambda *_: None)
    load_s = time.perf_counter() - t0
    for _ in range(3):  # warm-up (first steps allocate; workers start)
        tr.train_step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        tr.train_step()
    sps = args.steps / (time.perf_counter() - t0)
    if hasattr(tr, "batches"):
        tr.batches.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"clips": len(getattr(tr.data, "specs", tr.data)), "load_s": load_s, "sps": sps, "rss": rss_mb}))


def make_data(store, prefix: str, n_clips: int, folder: Path) -> None:
    """The files in the store and, for the old trainer (which reads the store layout of its day), in a folder."""
    import numpy as np
    from smf.common.audio import save_wav

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_clips // PER_FILE):
        x = (rng.standard_normal(PER_FILE * CLIP) * 0.1).astype(np.float32)
        path = folder / f"t{i:05d}.wav"
        save_wav(path, x, SR)
        store.put_file(f"{prefix}/{path.name}", path)


def run_child(store_uri: str, data: str, mode: str, steps: int, env: dict, old_src: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--store", store_uri, "--data", data, "--mode", mode]
    cmd += ["--steps", str(steps)]
    env = {**env, "OMP_NUM_THREADS": "1"}
    if mode == "old":
        env["PYTHONPATH"] = old_src
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode:
        raise SystemExit(f"{mode} on {data} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def old_tree(commit: str, into: Path) -> str:
    """The package as it was at `commit`, importable as `smf` (PYTHONPATH)."""
    into.mkdir(parents=True)
    arch = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "services"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=arch.stdout, check=True)
    (into / "smf").symlink_to(into / "services")
    return str(into)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="30 timed steps instead of 150")
    p.add_argument("--stores", default="file,s3", help="file,s3 (default) or one of them")
    p.add_argument("--sizes", default="1000,20000")
    p.add_argument("--old", help="also time the trainer of this git commit (e.g. 47497fc)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=150, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    steps = 30 if args.quick else 150
    sizes = [int(s) for s in args.sizes.split(",")]
    sys.path.insert(0, str(ROOT / "tests"))
    from smf.common.store import open_store

    tmp = Path(tempfile.mkdtemp(prefix="smf-bench-data-"))
    env = {**os.environ, "SMF_SPEC_CACHE": str(tmp / "cache")}
    stores: dict[str, tuple[str, dict]] = {}
    server = None
    if "file" in args.stores:
        stores["file"] = (f"file://{tmp}/store", env)
    if "s3" in args.stores:
        from support.seaweed import SeaweedServer

        server = SeaweedServer(tmp / "seaweed").start()
        s3_env = {**env, **server.env()}
        os.environ.update(server.env())
        stores["s3"] = (f"s3://{server.bucket}/bench", s3_env)
    old_src = old_tree(args.old, tmp / "old") if args.old else None
    modes = MODES + (("old",) if old_src else ())
    results: dict[tuple[str, int, str], dict] = {}
    try:
        for name, (uri, store_env) in stores.items():
            store = open_store(uri)
            for n in sizes:
                t0 = time.perf_counter()
                folder = tmp / f"{name}-folder{n}"
                make_data(store, f"datasets/bench{n}", n, folder)
                print(
                    f"{name}: wrote {n // PER_FILE} files ({n} clips) in {time.perf_counter() - t0:.1f} s", flush=True
                )
                for mode in modes:
                    data = str(folder) if mode == "old" else f"datasets/bench{n}"
                    r = run_child(uri, data, mode, steps, store_env, old_src)
                    results[name, n, mode] = r
                    print(f"  {mode:9s} {json.dumps(r)}", flush=True)
    finally:
        if server:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    table(results, stores, sizes, modes)


def table(results, stores, sizes, modes) -> None:
    lo, hi = sizes[0], sizes[-1]
    print(f"\n| store | mode | clips | load s | peak RSS MiB | steps/s | RSS {hi}/{lo} | steps/s vs ram |")
    print("|---|---|---|---|---|---|---|---|")
    for name in stores:
        for mode in modes:
            for n in sizes:
                r = results[name, n, mode]
                ratio = r["rss"] / results[name, lo, mode]["rss"] if n == hi else None
                vs_ram = r["sps"] / results[name, n, "ram"]["sps"]
                print(
                    f"| {name} | {mode} | {r['clips']} | {r['load_s']:.1f} | {r['rss']:.0f} | {r['sps']:.1f} | "
                    f"{'' if ratio is None else f'{ratio:.3f}'} | {vs_ram:.2f} |"
                )


if __name__ == "__main__":
    main()
