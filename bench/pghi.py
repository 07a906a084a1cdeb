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
    """Chirps, harmonic notes, a noise burst, pops and a tone, one clip each (tests/common/test_pghi.py uses them)."""
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
        pops[k : k + n] += (
            (0.8 - 0.1 * i) * torch.exp(-torch.arange(n) / 60.0) * torch.randn(n, generator=g, dtype=torch.float64)
        )
    sig = {
        "chirp_fast": chirp(200.0, 8000.0),
        "chirp_slow": chirp(300.0, 1200.0),
        "note_a3": note(220.0, 10, 1.5),
        "note_e5": note(659.25, 6, 3.0),
        "noise_burst": 0.3 * torch.randn(T, generator=g, dtype=torch.float64) * torch.exp(-(((t - 0.6) / 0.15) ** 2)),
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


def _timed_round_robin(methods, arg, device, repeats):
    """Seconds per call for every method: `repeats` rounds, each calling every method once in turn, so that load from
    other processes on a shared machine hits all methods alike. Returns {label: (output, sorted times)}."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    outs = {label: fn(arg) for label, fn in methods.items()}  # warm-up: caches, numba compilation, CUDA kernels
    sync()
    times = {label: [] for label in methods}
    for _ in range(repeats):
        for label, fn in methods.items():
            t0 = time.perf_counter()
            fn(arg)
            sync()
            times[label].append(time.perf_counter() - t0)
    return {label: (outs[label], sorted(ts)) for label, ts in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16, help="clips per call (the 7 test sounds, repeated)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (pghipy is single-threaded)")
    ap.add_argument("--repeats", type=int, default=9, help="timed rounds; the median is reported")
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
        "ours, PGHI + 1 FGLA": lambda m: pghi.reconstruct(m, n_fft=N_FFT, hop=HOP, refine_iters=1),
        "ours, plain PGHI": lambda m: pghi.reconstruct(m, n_fft=N_FFT, hop=HOP, refine_iters=0),
        "torchaudio Griffin-Lim-32": lambda m: griffin_lim_torchaudio(m, n_fft=N_FFT, hop=HOP, n_iter=32),
    }
    pghipy = None if args.no_pghipy else _load_pghipy()
    if pghipy is not None:
        gamma = pghi.HANN_GAMMA * N_FFT**2  # same window and lambda as ours, so it sees the same problem

        def run_pghipy(m):
            mags = m.detach().cpu().double().numpy()
            phase = np.stack([pghipy.pghi(np.ascontiguousarray(s.T), N_FFT, HOP, gamma).T for s in mags])
            # phase in float64 (pghipy's own), then the same float32 iSTFT as ours
            spec = torch.polar(m.cpu(), torch.from_numpy(phase).float())
            return pghi.istft(spec, n_fft=N_FFT, hop=HOP)

        methods["pghipy (numba heap PGHI)"] = run_pghipy

    torch.manual_seed(0)
    results = {}
    for label, (out, times) in _timed_round_robin(methods, mag, device, args.repeats).items():
        sc = 20 * torch.log10(pghi.spectral_convergence(mag.cpu(), out.cpu(), n_fft=N_FFT, hop=HOP))
        results[label] = (times[len(times) // 2], times, sc[: len(names)])

    print(
        f"device={device} threads={args.threads} batch={args.batch} clips of {T / SR:.2f} s "
        f"({audio_s:.1f} s of audio per call); time = median of {args.repeats} round-robin rounds [min-max]"
    )
    print(
        f"{'method':28s} {'s/call':>8s} {'[min - max]':>15s} {'x realtime':>10s}  SC dB mean  "
        + " ".join(f"{n[:11]:>11s}" for n in names)
    )
    for label, (secs, times, sc) in results.items():
        print(
            f"{label:28s} {secs:8.4f} [{times[0]:.4f}-{times[-1]:.4f}] {audio_s / secs:10.1f}  {sc.mean():10.2f}  "
            + " ".join(f"{v:11.2f}" for v in sc.tolist())
        )
    ours = {label: (secs, sc) for label, (secs, _, sc) in results.items() if label.startswith("ours")}
    for label, (secs, _, sc) in results.items():
        if label.startswith("ours"):
            continue
        for mine, (my_t, my_sc) in ours.items():
            print(
                f"vs {label}: {mine} is {secs / my_t:.1f}x faster, SC {my_sc.mean() - sc.mean():+.2f} dB "
                f"(negative = ours better), better on {int((my_sc < sc).sum())}/{len(names)} sounds"
            )


if __name__ == "__main__":
    main()
