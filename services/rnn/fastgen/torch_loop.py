"""The pure-torch generation loop: the always-available backend, the CUDA path, and the body of the export.

`StepLoop` copies an AudioTier's weights into the shapes a per-step loop wants (transposed for `addmm`) and runs
T steps for B voices with no host sync and no allocation that grows with T: the classes go into one preallocated
[B, T] tensor. It is TorchScript-able, and the exported module runs this very code, which is why the export and
`Generator(backend="torch")` give bit-identical samples for the same seed on the same device.

Per step: x = relu(b + a*w_a + sum_c cond_c*w_c) (elementwise, so the result for a step does not depend on how the
run is chunked), L GRU cells (nn.GRU's gate equations), logits = out(h), class = inverse-CDF of softmax(logits/temp)
at a pre-drawn uniform (see rng.py); temperature <= 0 means argmax. The classes are then decoded to audio
(de-emphasised when the model was trained pre-emphasised). A source-filter tier (config.lpc = P) hears three
scalars instead of a (the previous sample, the LPC prediction of this one, the previous excitation; see
smf.rnn.source_filter) and its sample, prediction + decoded excitation, is made inside the loop.
"""

from __future__ import annotations

import torch
from smf.rnn.model import compand, decode_audio, mulaw_decode
from torch import Tensor, nn


class NoEnvelope(nn.Module):
    """The envelope of a tier without a source-filter: no coefficients (keeps StepLoop one TorchScript type)."""

    def forward(self, cond: Tensor) -> Tensor:
        return cond[..., :0]


@torch.jit.script
def sample_classes(logits: Tensor, u: Tensor, temperature: float) -> Tensor:
    """Inverse-CDF categorical sampling: logits [B, Q], u [B] in [0, 1) -> classes int64 [B]."""
    if temperature <= 0.0:
        return logits.argmax(1)
    cdf = torch.softmax(logits / temperature, dim=1).cumsum(1)
    target = (u * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=logits.shape[1] - 1)


class StepLoop(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        cfg = model.config
        self.hidden: int = cfg.hidden
        self.layers: int = cfg.layers
        self.classes: int = cfg.classes
        self.cond_size: int = cfg.net_cond_size  # the params, then a pitch oscillator's columns (smf.rnn.oscillator)
        self.params: int = cfg.cond_size
        self.order: int = cfg.lpc
        self.preemphasis: float = float(cfg.preemphasis)
        self.envelope = model.envelope if cfg.lpc else NoEnvelope()
        G = cfg.gen_size
        gru = model.gru
        with torch.no_grad():
            w = model.inp.weight.detach().float()
            self.register_buffer("w_a", w[:, :G].t().contiguous())  # [G, H]: G = 1, or 3 for a source-filter
            self.register_buffer("w_c", w[:, G:].t().contiguous())  # [C, H]
            self.register_buffer("b_inp", model.inp.bias.detach().float().clone())
            self.register_buffer(
                "w_ih",
                torch.stack([getattr(gru, f"weight_ih_l{i}").detach().t() for i in range(cfg.layers)])
                .float()
                .contiguous(),
            )
            self.register_buffer(
                "w_hh",
                torch.stack([getattr(gru, f"weight_hh_l{i}").detach().t() for i in range(cfg.layers)])
                .float()
                .contiguous(),
            )
            self.register_buffer(
                "b_ih",
                torch.stack([getattr(gru, f"bias_ih_l{i}").detach() for i in range(cfg.layers)]).float().contiguous(),
            )
            self.register_buffer(
                "b_hh",
                torch.stack([getattr(gru, f"bias_hh_l{i}").detach() for i in range(cfg.layers)]).float().contiguous(),
            )
            self.register_buffer("w_out", model.out.weight.detach().t().float().contiguous())  # [H, Q]
            self.register_buffer("b_out", model.out.bias.detach().float().clone())

    def forward(
        self, cond: Tensor, h: Tensor, prev: Tensor, hist: Tensor, u: Tensor, temperature: float
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """cond [B, T, C] float32, h [L, B, H], prev [B] int64 (last class), hist [B, config.history] float32 (the
        last audio samples, newest first), u [B, T] uniforms -> (audio [B, T] float32, h, prev, hist)."""
        B, T = cond.shape[0], cond.shape[1]
        out = torch.empty(B, T, dtype=torch.int64, device=cond.device)
        audio = torch.empty(B, T, dtype=torch.float32, device=cond.device)
        scale = 2.0 / (self.classes - 1)  # audio_input(c) = c * 2/(Q-1) - 1, as in smf.rnn.model
        hs: list[Tensor] = [h[i] for i in range(self.layers)]
        # [B, T, P] predictor coefficients from the params (P = 0 without a source-filter)
        coef = self.envelope(cond[:, :, : self.params])
        pred = torch.zeros(B, dtype=torch.float32, device=cond.device)
        for t in range(T):
            a = prev.to(torch.float32) * scale - 1.0
            if self.order > 0:
                pred = -(coef[:, t] * hist).sum(1)
                x = (
                    self.b_inp
                    + compand(hist[:, 0], self.classes).unsqueeze(1) * self.w_a[0]
                    + compand(pred, self.classes).unsqueeze(1) * self.w_a[1]
                    + a.unsqueeze(1) * self.w_a[2]
                )
            else:
                x = self.b_inp + a.unsqueeze(1) * self.w_a[0]
            for c in range(self.cond_size):
                x = x + cond[:, t, c : c + 1] * self.w_c[c]
            x = torch.relu(x)
            for i in range(self.layers):
                gi = torch.addmm(self.b_ih[i], x, self.w_ih[i])
                gh = torch.addmm(self.b_hh[i], hs[i], self.w_hh[i])
                i_r, i_z, i_n = gi.chunk(3, 1)
                h_r, h_z, h_n = gh.chunk(3, 1)
                r = torch.sigmoid(i_r + h_r)
                z = torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                x = n + z * (hs[i] - n)  # (1 - z) * n + z * h
                hs[i] = x
            logits = torch.addmm(self.b_out, x, self.w_out)
            prev = sample_classes(logits, u[:, t], temperature)
            out[:, t] = prev
            if self.order > 0:
                sample = (pred + mulaw_decode(prev, self.classes)).clamp(-1.0, 1.0)
                hist = torch.cat([sample.unsqueeze(1), hist[:, :-1]], 1)
                audio[:, t] = sample
        if self.order == 0:
            audio = decode_audio(out, self.classes, self.preemphasis, hist[:, 0])
            if T > 0:
                hist = audio[:, -1:].clone()
        return audio, torch.stack(hs), prev, hist
