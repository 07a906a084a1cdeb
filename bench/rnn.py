"""RNN generation and training speed: smf vs a faithful re-implementation of the reference (MTCRNN) loops.

    .venv/bin/python bench/rnn.py                 # full run (~10 min on a 2-core box, half of it training)
    .venv/bin/python bench/rnn.py --quick         # smaller measurements, no quality training
    python bench/rnn.py --device cuda             # the same on a GPU: reference vs the torch loop, cuDNN training

Prints, side by side in one run, at the SMF size (H 256, L 4, 2 params, Q 256, 16 kHz):
1. generation: the reference per-sample loop (eager nn.GRU with seq len 1, softmax + torch.multinomial, a top-p sort,
   .cpu() host sync + numpy mu-law decode per sample, np.concatenate of the whole output history per sample — reference
   notes §3.6) vs ours (smf.rnn.generate.Generator), per sample and as a ratio;
2. real-time factor (seconds of audio per second of compute): one voice, and 16 voices batched (aggregate), for the
   kernel's weight formats and the pure-torch loop, plus smaller H;
3. training samples/s: one fused nn.GRU call over a teacher-forced window vs the reference's Python loop of seq-len-1
   GRU calls (forward + backward + Adam step, same batch and window);
4. quality cost of the weight formats: validation cross-entropy (nats/sample) of a briefly trained model on a
   synthetic pitched signal, evaluated as the kernel computes (weights rounded as stored; int8 also rounds its
   activations per step, smf.rnn.fastgen.quant.int8_forward).
Kernel timings are the median of --repeat runs, with the spread (min-max) and the load average, because the dev box
is shared.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from smf.rnn.fastgen import cpp
from smf.rnn.fastgen.quant import teacher_forced_logits
from smf.rnn.generate import Generator
from smf.rnn.model import AudioTier, RNNConfig, audio_input, mulaw_encode

SR = 16000
DEVICE = torch.device("cpu")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def smf_model(hidden=256, layers=4, params=2, seed=0, lpc=0) -> AudioTier:
    torch.manual_seed(seed)
    config = RNNConfig(param_names=[f"p{i}" for i in range(params)], hidden=hidden, layers=layers, lpc=lpc)
    model = AudioTier(config)
    return model.to(DEVICE).eval()


# --- 1. the reference generation loop ---------------------------------------------------------------------------


def reference_generate(model: AudioTier, cond: np.ndarray, n: int, temp: float = 1.0) -> np.ndarray:
    """The MTCRNN.Fork generate loop for one voice, as described in the reference notes §3.2-3.6: random primer
    vector, then per sample: build the input on the host, copy it to the device, eager Linear+ReLU, nn.GRU with
    seq len 1, output Linear, softmax, multinomial, a top-p sort of the distribution, .cpu() sync, numpy mu-law
    decode with the reference's formula, and np.concatenate of the whole output (and p-cut) history."""
    Q = model.config.classes
    mu = Q - 1
    rng = np.random.default_rng(0)
    x = rng.random((1, 1, model.config.input_size)).astype(np.float32)  # --rand_prime, P = 1
    h = None
    outputs = np.zeros((1, 0), dtype=np.float64)
    pcut = np.zeros((1, 0), dtype=np.float64)
    device = next(model.parameters()).device
    with torch.no_grad():
        for t in range(n):
            inp = torch.from_numpy(x).to(device)
            y, h = model.gru(F.relu(model.inp(inp)), h)
            logits = model.out(y)[0, -1]
            probs = F.softmax(logits / temp, dim=-1)
            sorted_p, _ = torch.sort(probs, descending=True)  # the top-p cut
            cut = float(torch.cumsum(sorted_p, 0)[0].cpu())
            c = int(torch.multinomial(probs, 1).cpu().numpy()[0])
            v = (c / Q) * 2 - 1
            sample = np.sign(v) * ((1 + mu) ** abs(v) - 1) / mu
            outputs = np.concatenate([outputs, np.array([[sample]])], axis=1)
            pcut = np.concatenate([pcut, np.array([[cut]])], axis=1)
            x = np.concatenate([np.array([[[c / Q]]]), cond[None, t + 1 : t + 2]], axis=-1).astype(np.float32)
    return outputs[0]


def timed_runs(fn, *args, repeat=1, **kw) -> list[float]:
    runs = []
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        fn(*args, **kw)
        sync()
        runs.append(time.perf_counter() - t)
    return runs


def timed(fn, *args, repeat=1, **kw) -> float:
    """Median wall time of `repeat` runs."""
    return float(np.median(timed_runs(fn, *args, repeat=repeat, **kw)))


def spread(runs: list[float], n: int) -> str:
    return f"[{min(runs) / n * 1e6:.1f}-{max(runs) / n * 1e6:.1f} us, load {os.getloadavg()[0]:.1f}]"


# --- 3. training step: fused vs reference per-step loop --------------------------------------------------------


def train_step_fused(model, opt, x, target):
    logits, _ = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def train_step_reference(model, opt, x, target):
    """The reference's CondRNN.train: hidden := zeros, a Python loop over T calls of the GRU with seq len 1, the
    per-step losses summed, one backward over the window (full BPTT), one Adam step."""
    h = None
    loss = 0.0
    for t in range(x.shape[1]):
        y, h = model.gru(F.relu(model.inp(x[:, t : t + 1])), h)
        loss = loss + F.cross_entropy(model.out(y)[:, 0], target[:, t])
    loss = loss / x.shape[1]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


# --- 4. a synthetic corpus for the quality check ---------------------------------------------------------------


def synthetic_batch(batch: int, T: int, gen: torch.Generator):
    """Harmonic tones whose pitch (p0) and brightness (p1) are the two conditioning params, with a little noise;
    random pitch glides inside each window. Returns (x [B, T, 3], target classes [B, T])."""
    n = T + 1
    p0 = torch.rand(batch, 2, generator=gen)
    p0 = p0[:, :1] + (p0[:, 1:] - p0[:, :1]) * torch.linspace(0, 1, n)[None]  # a glide per window
    p1 = torch.rand(batch, 1, generator=gen).expand(batch, n)
    f0 = 110 * 2 ** (p0 * 3)  # 110 .. 880 Hz
    phase = torch.cumsum(2 * math.pi * f0 / SR, 1) + torch.rand(batch, 1, generator=gen) * 6.28
    audio = sum((p1 ** (k - 1)) * torch.sin(k * phase) / k for k in range(1, 6)) * 0.4
    audio = audio + 0.01 * torch.randn(batch, n, generator=gen)
    c = mulaw_encode(audio)
    cond = torch.stack([p0, p1], -1)[:, 1:]
    x = torch.cat([audio_input(c[:, :-1])[..., None], cond], -1)
    return x, c[:, 1:]


def val_ce(model, batches, precision="fp32") -> float:
    with torch.no_grad():
        tot = 0.0
        for x, y in batches:
            logits = teacher_forced_logits(model, x, precision)
            tot += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)))
        return tot / len(batches)


def source_filter_rows(rows, arr, args) -> None:
    """The source-filter tier (lpc 16, LPCNet's order): a 16-tap prediction per sample on top of the GRU step."""
    sf = smf_model(lpc=16)
    for precision in ("fp32", "int8"):
        gen = Generator(sf, backend="cpp", precision=precision)
        gen.generate(arr, 0.01, seed=0)
        runs = timed_runs(gen.generate, arr, args.seconds, seed=0, repeat=args.repeat)
        t1 = float(np.median(runs)) / (args.seconds * SR)
        plain = next(t for b, p, t in rows if (b, p) == ("cpp", precision))
        print(
            f"ours cpp   {precision:5s} lpc 16     {t1 * 1e6:9.1f} us/sample   RTF {1 / (t1 * SR):6.3f}   "
            f"{t1 / plain:5.2f}x the plain tier's time  {spread(runs, args.seconds * SR)}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter measurements, skip the quality training")
    ap.add_argument("--ref-seconds", type=float, default=0.25, help="audio length for the reference loop")
    ap.add_argument("--seconds", type=float, default=1.0, help="audio length per speed measurement of ours")
    ap.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="optimiser steps for the quality model (default 400 on cuda, 100 on cpu; 0 = skip)",
    )
    ap.add_argument("--repeat", type=int, default=5, help="runs per kernel timing (the median is reported)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where both loops run (the kernel is CPU-only)")
    args = ap.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    gpu = DEVICE.type == "cuda"
    if args.train_steps is None:
        args.train_steps = 400 if gpu else 100
    if args.quick:
        args.ref_seconds, args.seconds, args.train_steps, args.repeat = 0.1, 0.5, 0, 3
    threads = torch.get_num_threads()
    kernel = cpp.load_kernel() if not gpu else None
    print(
        f"# bench/rnn.py  torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {threads}, "
        f"kernel: {'built' if kernel else 'unavailable: ' + str(cpp.kernel_error())}"
    )
    model = smf_model()
    print(f"model: H 256, L 4, C 2, Q 256, 16 kHz; device {torch.cuda.get_device_name() if gpu else 'cpu'}")

    # 1. reference vs ours
    n_ref = int(args.ref_seconds * SR)
    cond_ref = np.full((n_ref + 1, 2), 0.5, dtype=np.float32)
    reference_generate(model, cond_ref, 50)  # warm-up
    t_ref = timed(reference_generate, model, cond_ref, n_ref) / n_ref
    print(f"\n## 1. generation, one voice ({args.ref_seconds} s of audio for the reference)")
    print(f"reference per-sample loop     {t_ref * 1e6:9.1f} us/sample   RTF {1 / (t_ref * SR):6.3f}")

    arr = np.full((2, 2), 0.5, dtype=np.float32)
    rows = []
    configs = [("torch", "fp32")] + ([("cpp", p) for p in ("fp32", "bf16", "int8")] if kernel else [])
    for backend, precision in configs:
        gen = Generator(model, backend=backend, precision=precision)
        secs = args.seconds if backend == "cpp" else min(args.seconds, 0.25 if gpu else 0.1)
        gen.generate(arr, 0.01, seed=0)
        runs = timed_runs(gen.generate, arr, secs, seed=0, repeat=args.repeat if backend == "cpp" else 1)
        t1 = float(np.median(runs)) / (secs * SR)
        rows.append((backend, precision, t1))
        isa = f" ({gen.engine.isa})" if precision == "int8" else ""
        print(
            f"ours {backend:5s} {precision:5s}{isa:11s} {t1 * 1e6:9.1f} us/sample   RTF {1 / (t1 * SR):6.3f}   "
            f"{t_ref / t1:7.1f}x the reference  {spread(runs, secs * SR)}"
        )

    if kernel:
        source_filter_rows(rows, arr, args)

    # 2. batched voices
    print("\n## 2. real-time factor (audio seconds per compute second)")
    for backend, precision in configs[1:] or configs:
        gen = Generator(model, backend=backend, precision=precision)
        secs = min(args.seconds, 0.25) if backend == "cpp" else (0.1 if gpu else 0.02)
        t1 = next(t for b, p, t in rows if (b, p) == (backend, precision))
        if backend == "cpp" and threads > 1:  # one voice shared by the threads (row split, barrier per layer)
            split = Generator(model, backend=backend, precision=precision, split=True)
            split.generate(arr, 0.01, seed=0)
            runs = timed_runs(split.generate, arr, args.seconds, seed=0, repeat=args.repeat)
            ts = float(np.median(runs)) / (args.seconds * SR)
            print(
                f"{backend:5s} {precision:5s}  1 voice on {threads} threads (split=True) RTF {1 / (ts * SR):6.3f}  "
                f"{spread(runs, args.seconds * SR)}"
            )
        for voices in (16, 256) if gpu else (16,):
            tv = timed(gen.generate, arr, secs, seed=0, voices=voices) / secs
            print(
                f"{backend:5s} {precision:5s}  1 voice RTF {1 / (t1 * SR):6.3f}   {voices} voices aggregate RTF "
                f"{voices / tv:8.3f}  ({voices / tv / (1 / (t1 * SR)):.1f}x one voice)"
            )
    if kernel:
        for H, L in ((128, 4), (192, 4), (256, 2)):
            small = smf_model(hidden=H, layers=L)
            for precision in ("fp32", "int8"):
                gen = Generator(small, backend="cpp", precision=precision)
                gen.generate(arr, 0.01, seed=0)
                t1 = timed(gen.generate, arr, args.seconds, seed=0, repeat=args.repeat) / (args.seconds * SR)
                print(f"cpp   {precision:5s}  H {H} L {L}: 1 voice RTF {1 / (t1 * SR):6.3f}")

    # 3. training throughput
    B, T = (128, 512) if gpu else (8, 256 if not args.quick else 128)  # GPU: the SMF scripts' batch and window
    print(f"\n## 3. training samples/s (batch {B}, window {T}, forward + backward + Adam)")
    g = torch.Generator().manual_seed(0)
    x, y = (v.to(DEVICE) for v in synthetic_batch(B, T, g))
    res = {}
    for name, step in (("reference per-step loop", train_step_reference), ("smf fused nn.GRU", train_step_fused)):
        m = smf_model().train()
        opt = torch.optim.Adam(m.parameters(), lr=5e-4)
        step(m, opt, x, y)
        res[name] = B * T / timed(step, m, opt, x, y, repeat=2)
        print(f"{name:26s} {res[name]:9.0f} samples/s")
    print(f"ratio {res['smf fused nn.GRU'] / res['reference per-step loop']:.1f}x")

    # 4. quality cost of the weight formats
    if args.train_steps > 0:
        print(
            f"\n## 4. validation cross-entropy by format (synthetic pitched tones, {args.train_steps} "
            "steps of batch 16 x 256, fused teacher forcing; int8 = int8 weights and activations)"
        )
        m = smf_model().train()
        opt = torch.optim.Adam(m.parameters(), lr=2e-3)
        t = time.perf_counter()
        for _ in range(args.train_steps):
            train_step_fused(m, opt, *(v.to(DEVICE) for v in synthetic_batch(16, 256, g)))
        m.eval()
        val = [
            tuple(v.to(DEVICE) for v in synthetic_batch(16, 512, torch.Generator().manual_seed(1000 + i)))
            for i in range(4)
        ]
        base = val_ce(m, val)
        print(f"trained in {time.perf_counter() - t:.0f} s;  fp32 CE {base:.4f} nats/sample")
        for precision in ("bf16", "int8"):
            ce = val_ce(m, val, precision)
            print(f"{precision:5s} CE {ce:.4f}  (delta {ce - base:+.4f} nats, {100 * (ce - base) / base:+.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
