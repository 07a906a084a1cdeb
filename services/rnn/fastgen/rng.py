"""Counter-based uniforms for sampling: u(seed, voice, step) in [0, 1), the same on every backend and device.

A generated sample is drawn by inverse-CDF on one uniform per (voice, step). The uniforms come from a stateless
32-bit hash (murmur3's finaliser, twice) of (seed, voice, absolute step), not from a torch.Generator, because:
- the pure-torch loop, the C++ kernel and the exported TorchScript module must consume exactly the same numbers;
- a live session that runs chunk by chunk must draw what a one-shot generation draws (the step index is the key);
- it runs on any device with plain int64 tensor ops (TorchScript-able, no generator objects).
24 bits of resolution: a class with probability below 2**-24 (6e-8) can be missed, which is far below what a
softmax over 256 mu-law classes meaningfully distinguishes.

    u = uniforms(seed=7, voices=2, t0=0, n=16000, device=torch.device("cpu"))   # float32 [2, 16000]
"""

from __future__ import annotations

import torch
from torch import Tensor


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32) held in int64, without int64 overflow (16-bit halves of c)."""
    hi = (x * (c >> 16)) & 0xFFFF
    return ((hi << 16) + x * (c & 0xFFFF)) & 0xFFFFFFFF


def _fmix(x: Tensor) -> Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def voice_keys(seed: int, voices: int, device: torch.device) -> Tensor:
    """One 32-bit key per voice (int64 [voices]) derived from a 64-bit seed."""
    lo = torch.tensor(seed & 0xFFFFFFFF, dtype=torch.int64, device=device)
    hi = torch.tensor((seed >> 32) & 0xFFFFFFFF, dtype=torch.int64, device=device)
    base = _fmix(lo ^ _fmix(hi ^ 0x85EBCA6B))
    v = torch.arange(voices, dtype=torch.int64, device=device)
    return _fmix((base + _mul32(v, 0x9E3779B9)) & 0xFFFFFFFF)


def uniforms(seed: int, voices: int, t0: int, n: int, device: torch.device) -> Tensor:
    """float32 [voices, n]: the uniform for voice b at absolute step t0 + i."""
    keys = voice_keys(seed, voices, device)
    t = (torch.arange(n, dtype=torch.int64, device=device) + t0) & 0xFFFFFFFF
    x = _fmix(_fmix(keys[:, None] ^ t[None, :]))
    return (x >> 8).to(torch.float32) * (1.0 / 16777216.0)
