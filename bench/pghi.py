"""Benchmark: phase reconstruction speed and quality, ours (smf.common.pghi) vs Griffin-Lim-32 vs pghipy.

    .venv/bin/python bench/pghi.py                      # CPU, 1 thread, batch 16
    .venv/bin/python bench/pghi.py --device cuda --batch 256

All methods get the same magnitude (the SMF transform's circular STFT: Hann 512, hop 256, 128 frames, 22.05 kHz)
and are scored with the same spectral convergence ||S - |STFT(x)|||_F / ||S||_F, in dB (lower is better).
pghipy (the numba heap PGHI, https://pypi.org/project/pghipy/) is optional and not a project dependency; install it
to a throwaway folder and it is picked up from there:  pip install --target /tmp/benchdeps pghipy
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
from smf.common import pghi
from smf.common.audio import griffin_lim_torchaudio

SR, N_FFT, HOP, N_FRAMES = 22050, 512, 256, 128
T = N_FRAMES * HOP


def signals(seed: int = 0) -> dict[str, torch.Tensor]:
    """Chirps, harmonic notes, a noise burst, pops and a tone, one clip each (same as tests/common/test_pghi.py)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T, dtype=torch.float64) / SR
    dur = T / SR

    def chirp(f0, f1):
        return 0.5 * torch.sin(2 * math.pi * (f0 * t + (f1 - f0) * t**2 / (2 * dur)))

    def note(f0, n_harm, decay):
        env = torch.clamp(t / 0.02, max=1) * torch.exp(-t * decay)
        return 0.3 * env * sum(torch.sin(2 * math.pi * f0 * k * t + 0.3 * k) / k for k in range(1, n_harm + 1))

    pops = torch.zeros(T, dtype=torch.float64)
    for i, at in enumerate([0.1, 0.45, 0.8, 1.2]):
        k, n = int(at * SR), 400
        pops[k:k + n] += (0.8 - 0.1 * i) * torch.exp(-torch.arange(n) / 60.0) * torch.randn(
            n, generator=g, dtype=torch.float64)
    sig = {
        "chirp_fast": chirp(200.0, 8000.0),
        "chirp_slow": chirp(300.0, 1200.0),
        "note_a3": note(220.0, 10, 1.5),
        "note_e5": note(659.25, 6, 3.0),
        "noise_burst": 0.3 * torch.randn(T, generator=g, dtype=torch.float64) * torch.exp(-((t - 0.6) / 0.15) ** 2),
        "pops": pops,
        "tone": 0.5 * torch.sin(2 * math.pi * 440 * t) * torch.clamp(t / 0.05, max=1),
    }
    return {k: v.float() for k, v in sig.items()}


def _load_pghipy():
    for folder in ("/tmp/benchdeps",):
        if folder not in sys.path:
            sys.path.append(folder)  # appended: the venv's own numpy/torch keep priority
    try:
        import pghipy
    except ImportError as exc:
        print(f"pghipy not available ({exc}); install it with: pip install --target /tmp/benchdeps pghipy")
        return None
    return pghipy


def _timed(fn, device, repeats):
    fn()  # warm-up: caches, numba compilation, CUDA kernels
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16, help="clips per call (the 7 test sounds, repeated)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (pghipy is single-threaded)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-pghipy", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sig = signals()
    names = list(sig)
    x = torch.stack(list(sig.values()))
    x = x.repeat((args.batch + len(names) - 1) // len(names), 1)[: args.batch]
    mag = pghi.stft(x, n_fft=N_FFT, hop=HOP).abs().to(device)
    audio_s = args.batch * T / SR

    methods = {
        "ours (PGHI + 2 FGLA)": lambda m: pghi.reconstruct(m, n_fft=N_FFT, hop=HOP),
        "ours, plain PGHI": lambda m: pghi.reconstruct(m, n_fft=N_FFT, hop=HOP, refine_iters=0),
        "torchaudio Griffin-Lim-32": lambda m: griffin_lim_torchaudio(m, n_fft=N_FFT, hop=HOP, n_iter=32),
    }
    pghipy = None if args.no_pghipy else _load_pghipy()
    if pghipy is not None:
        gamma = pghi.HANN_GAMMA * N_FFT**2  # same window and lambda as ours, so it sees the same problem

        def run_pghipy(m):
            mags = m.detach().cpu().double().numpy()
            phase = np.stack([pghipy.pghi(np.ascontiguousarray(s.T), N_FFT, HOP, gamma).T for s in mags])
            spec = torch.polar(m.cpu().double(), torch.from_numpy(phase))
            return pghi.istft(spec, n_fft=N_FFT, hop=HOP).float()

        methods["pghipy (numba heap PGHI)"] = run_pghipy

    torch.manual_seed(0)
    results = {}
    for label, fn in methods.items():
        out, secs = _timed(lambda fn=fn: fn(mag), device, args.repeats)
        sc = 20 * torch.log10(pghi.spectral_convergence(mag.cpu(), out.cpu(), n_fft=N_FFT, hop=HOP))
        results[label] = (secs, sc[: len(names)])

    print(f"device={device} threads={args.threads} batch={args.batch} clips of {T / SR:.2f} s "
          f"({audio_s:.1f} s of audio per call)")
    print(f"{'method':28s} {'s/call':>8s} {'clips/s':>8s} {'x realtime':>10s}  SC dB mean  "
          + " ".join(f"{n[:11]:>11s}" for n in names))
    for label, (secs, sc) in results.items():
        print(f"{label:28s} {secs:8.3f} {args.batch / secs:8.1f} {audio_s / secs:10.1f}  {sc.mean():10.2f}  "
              + " ".join(f"{v:11.2f}" for v in sc.tolist()))
    ours_t, ours_sc = results["ours (PGHI + 2 FGLA)"]
    plain_t, _ = results["ours, plain PGHI"]
    for label, (secs, sc) in results.items():
        if label.startswith("ours"):
            continue
        print(f"vs {label}: ours is {secs / ours_t:.1f}x faster (plain PGHI {secs / plain_t:.1f}x), "
              f"SC {ours_sc.mean() - sc.mean():+.2f} dB (negative = ours better), "
              f"better on {int((ours_sc < sc).sum())}/{len(names)} sounds")


if __name__ == "__main__":
    main()
