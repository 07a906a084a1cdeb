"""Weight formats of the fast kernel, in one place: the packer and the quality measurement both round here.

- fp32: as trained.
- bf16: the upper 16 bits of fp32 (round to nearest even), 8 bits of mantissa; halves the bytes streamed per step.
- int8: symmetric, one scale per output row (max|w| / 127); a quarter of the bytes. Activations stay fp32, so
  only the weights carry quantisation error. LPCNet-style per-row int8 is the usual choice for sample-level RNNs.

    q, scale = quantize(w, "int8")              # int8 [R, K], float32 [R]
    model_q = fake_quantize(model, "int8")      # a copy whose float weights equal what the kernel computes with
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


def fake_quantize(model: nn.Module, precision: str) -> nn.Module:
    """A copy of an AudioTier whose GRU and output matrices are rounded as the fast kernel stores them (the input
    layer and biases stay fp32 in the kernel too). Used to measure the cross-entropy cost of a format."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 2 and name.startswith(("gru.weight", "out.")):
                p.copy_(dequantize(p, precision))
    return m
