"""Weight formats of the fast kernel, in one place: the packer and the quality measurement both round here.

- fp32: as trained.
- bf16: the upper 16 bits of fp32 (round to nearest even), 8 bits of mantissa; halves the bytes streamed per step.
- int8: weights symmetric, one scale per output row (max|w| / 127); a quarter of the bytes. The matrix inputs are
  int8 too (LPCNet-style): every activation vector (the layer-0 input, each new hidden state) is quantised once per
  step with its own scale max|v| / 127, so the products are int8 x int8 dot products with int32 sums (AVX-512 VNNI
  vpdpbusd where the CPU has it). The hidden-state update, gates, biases and sampling stay fp32.
bf16 and fp32 keep fp32 activations.

    q, scale = quantize(w, "int8")              # int8 [R, K], float32 [R]
    model_q = fake_quantize(model, "int8")      # a copy whose float weights equal what the kernel computes with
    logits = teacher_forced_logits(model, x, "int8")   # [B, T, Q] as the kernel's int8 net computes them
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

PRECISIONS = ("fp32", "bf16", "int8")


def quantize(w: Tensor, precision: str) -> tuple[Tensor, Tensor | None]:
    """w [R, K] float -> (stored weights, per-row scale or None). bf16 is returned as its raw int16 bits."""
    w = w.detach().float()
    if precision == "fp32":
        return w.contiguous(), None
    if precision == "bf16":
        return w.to(torch.bfloat16).view(torch.int16).contiguous(), None
    if precision == "int8":
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        return q.contiguous(), scale.float().contiguous()
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def dequantize(w: Tensor, precision: str) -> Tensor:
    """The float values the kernel multiplies with for weights w."""
    q, scale = quantize(w, precision)
    if precision == "bf16":
        return q.view(torch.bfloat16).float()
    if precision == "int8":
        return q.float() * scale[:, None]
    return q


def quantize_activations(v: Tensor) -> tuple[Tensor, Tensor]:
    """v [..., H] -> (q [..., H] integers in [-127, 127] as float, scale [..., 1]): v ~ q * scale, per vector.
    The same operations as kernel.cpp's quantize_act (multiply by 127 / max, round half to even)."""
    m = v.abs().amax(-1, keepdim=True)
    inv = torch.where(m > 0, 127.0 / m.clamp_min(1e-30), torch.zeros_like(m))
    return torch.round(v * inv).clamp_(-127, 127), m / 127.0


@torch.no_grad()
def int8_forward(model: nn.Module, x: Tensor) -> Tensor:
    """Teacher-forced logits [B, T, Q] of an AudioTier computed as the kernel's int8 net does (int8 weights per row,
    activations quantised per vector and step, fp32 elsewhere), from x [B, T, 1 + C] and a zero initial state.
    Integer-valued float32 matmuls are exact here (|sums| < 2^24), so only the nonlinearities differ from the kernel
    in the last bits. A per-step Python loop: slow, for quality checks and tests."""
    cfg = model.config
    H, L = cfg.hidden, cfg.layers
    B, T = x.shape[0], x.shape[1]

    def qw(w: Tensor) -> tuple[Tensor, Tensor]:
        q, s = quantize(w, "int8")
        return q.float().t().contiguous(), s

    gru = model.gru
    w_ih = [qw(getattr(gru, f"weight_ih_l{i}")) for i in range(L)]
    w_hh = [qw(getattr(gru, f"weight_hh_l{i}")) for i in range(L)]
    b_ih = [getattr(gru, f"bias_ih_l{i}").float() for i in range(L)]
    b_hh = [getattr(gru, f"bias_hh_l{i}").float() for i in range(L)]
    w_out, s_out = qw(model.out.weight)
    inp = torch.relu(model.inp(x.float()))
    h = [x.new_zeros(B, H) for _ in range(L)]
    qh = [quantize_activations(v) for v in h]
    logits = x.new_empty(B, T, cfg.classes)
    for t in range(T):
        qx, sx = quantize_activations(inp[:, t])
        for i in range(L):
            gi = (qx @ w_ih[i][0]) * (w_ih[i][1] * sx) + b_ih[i]
            gh = (qh[i][0] @ w_hh[i][0]) * (w_hh[i][1] * qh[i][1]) + b_hh[i]
            i_r, i_z, i_n = gi.chunk(3, 1)
            h_r, h_z, h_n = gh.chunk(3, 1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h[i] = n + z * (h[i] - n)
            qh[i] = quantize_activations(h[i])
            qx, sx = qh[i]
        logits[:, t] = (qx @ w_out) * (s_out * sx) + model.out.bias.float()
    return logits


@torch.no_grad()
def teacher_forced_logits(model: nn.Module, x: Tensor, precision: str) -> Tensor:
    """Logits [B, T, Q] of an AudioTier on x [B, T, 1 + C] (zero initial state) as the fast kernel's `precision`
    computes them: fused nn.GRU on rounded weights for fp32/bf16, the int8 emulation for int8."""
    if precision == "int8":
        return int8_forward(model, x)
    return fake_quantize(model, precision)(x)[0]


def fake_quantize(model: nn.Module, precision: str) -> nn.Module:
    """A copy of an AudioTier whose GRU and output matrices are rounded as the fast kernel stores them (the input
    layer and biases stay fp32 in the kernel too). Weights only: int8's activation rounding is in int8_forward."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 2 and name.startswith(("gru.weight", "out.")):
                p.copy_(dequantize(p, precision))
    return m
