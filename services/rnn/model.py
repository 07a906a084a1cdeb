"""MTCRNN tiers: conditional GRU networks that generate audio (or control trajectories) one step at a time.

One tier = input `[generated part, conditioning part]` -> Linear + ReLU -> GRU stack -> output head, exactly the
"net 0" block of MTCRNN (Huzaifah & Wyse) that the original Sound Model Factory trains:

- AudioTier: the generated part is the previous audio sample (a scalar derived from its mu-law class, see
  `audio_input`); the head gives logits over Q mu-law classes.
- ParamTier: the generated part is the previous G control values (e.g. rms, centroid); two heads give a Gaussian
  mean and std (softplus of a raw scale) for the next values. Tiers are trained separately and chained at
  generation time by feeding one tier's output array as the next tier's conditioning.

Conditioning enters only through the input concatenation, at every step. The same `forward` serves training
(whole teacher-forced sequences in one fused GRU call) and generation (T=1 steps carrying `h`):

    config = RNNConfig(param_names=["normPitch"], hidden=256, layers=4)
    model = build_model(config)
    logits, h = model(torch.zeros(2, 100, 1 + 1))          # [B=2, T=100, Q=256], h [L, B, H]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class RNNConfig:
    param_names: list[str]  # conditioning columns, in input order (C = len)
    hidden: int = 256  # H
    layers: int = 4  # L
    classes: int = 256  # Q, 8-bit mu-law with mu = Q - 1
    sample_rate: int = 16000
    # Parameter tier only: the names of the generated controls (e.g. ["rms", "centroid"]); [] means the audio tier.
    generate: list[str] = field(default_factory=list)
    rate: int | None = None  # the tier's step rate; None -> sample_rate (the audio tier runs at the audio rate)
    # Audio tier: the net models x[t] - preemphasis * x[t-1] and generation undoes it (see `preemphasis`); 0 = off,
    # the reference recipe. A checkpoint without the key is a model trained without it.
    preemphasis: float = 0.0
    # Audio tier: source-filter (LPCNet's idea): the order of the all-pole filter an envelope net derives from the
    # conditioning; the GRU learns the filter's excitation and hears (previous sample, LPC prediction, previous
    # excitation). 0 = off (the net learns the samples themselves). See `Envelope` and smf.rnn.source_filter.
    lpc: int = 0
    # Audio tier: a pitch oscillator of this many harmonics: the net also hears sin/cos(k * phase of the fundamental)
    # at the pitch it is asked for (normPitch, else an analysed f0; smf.rnn.oscillator); 0 = off. `pitch` is the
    # MIDI range [lo, hi] that param's 0..1 spans, set by the trainer from the data.
    oscillator: int = 0
    pitch: list[float] | None = None

    @property
    def is_audio(self) -> bool:
        return not self.generate

    @property
    def step_rate(self) -> int:
        return self.rate if self.rate is not None else self.sample_rate

    @property
    def history(self) -> int:
        """Past audio samples a generation loop keeps per voice (newest first): the source-filter's order, else 1
        (the last sample, where de-emphasis of the next chunk starts)."""
        return max(self.lpc, 1)

    @property
    def cond_size(self) -> int:
        return len(self.param_names)

    @property
    def net_cond_size(self) -> int:
        """The conditioning part of the input layer: the params, then 2 x oscillator columns (sin, cos)."""
        return self.cond_size + 2 * self.oscillator

    @property
    def pitch_column(self) -> int:
        """The column the oscillator follows: normPitch, else an analysed f0 (smf.rnn.pitch.pitch_param)."""
        from smf.rnn.oscillator import pitch_param_of

        return self.param_names.index(pitch_param_of(self.param_names))

    @property
    def gen_size(self) -> int:
        """The generated part of the input: the previous sample (audio tier; with `lpc` also the LPC prediction and
        the previous excitation) or the previous controls (parameter tier)."""
        if self.is_audio:
            return 3 if self.lpc else 1
        return len(self.generate)

    @property
    def input_size(self) -> int:
        return self.gen_size + self.net_cond_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RNNConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            from smf.common.errors import InvalidArgument

            raise InvalidArgument("config", f"unknown RNN config keys {unknown}; known: {sorted(known)}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------------------------
# mu-law: a matched encode/decode pair (standard WaveNet/torchaudio companding, mu = classes - 1). The reference
# decodes with spacing 2/Q but encodes with 2/(Q-1), which biases every sample; ours round-trips, and 0.0 maps to
# class 128 which decodes to ~8.6e-5.


def mulaw_encode(x: Tensor, classes: int = 256) -> Tensor:
    """Audio in [-1, 1] -> mu-law class indices (int64) in [0, classes-1]."""
    mu = classes - 1
    x = x.clamp(-1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return ((y + 1) / 2 * mu + 0.5).long().clamp(0, mu)


def mulaw_decode(c: Tensor, classes: int = 256) -> Tensor:
    """Mu-law class indices -> audio in [-1, 1] (float32)."""
    mu = classes - 1
    y = c.float() / mu * 2 - 1
    return torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu


def preemphasis(x: Tensor, coef: float) -> Tensor:
    """y[t] = x[t] - coef * x[t-1] along the last dim (x[-1] = 0): what an audio tier with `preemphasis` learns.

    Why (as LPCNet, Valin & Skoglund 2019): sampling a mu-law class at every step adds roughly white noise to the
    output. Learning the pre-emphasised signal and de-emphasising the output (`deemphasis`, a one-pole low-pass)
    tilts that noise down by 20*log10((1+coef)/(1-coef)) dB at Nyquist against DC (25.6 dB at 0.9), where tonal
    sounds have little energy to hide it. The signal itself comes back unchanged."""
    if coef == 0.0:
        return x
    return torch.cat([x[..., :1], x[..., 1:] - coef * x[..., :-1]], dim=-1)


def deemphasis(x: Tensor, coef: float, last: Tensor | None = None, block: int = 64) -> Tensor:
    """The inverse of `preemphasis`: y[t] = x[t] + coef * y[t-1] along the last dim, starting from y[-1] = `last`
    ([...] or None = 0). Blocks of `block` steps as one small matmul each (TorchScript-able, no per-sample loop);
    computed in float64 and returned in x's dtype."""
    if coef == 0.0:
        return x
    n = x.shape[-1]
    k = torch.arange(block, device=x.device, dtype=torch.float64)
    lag = k[:, None] - k[None, :]
    powers = torch.where(lag >= 0, torch.pow(torch.full_like(lag, coef), lag.clamp(min=0.0)), torch.zeros_like(lag))
    carry = torch.pow(torch.full_like(k, coef), k + 1)  # how y[-1] of the block before reaches each position
    xd = x.to(torch.float64)
    prev = torch.zeros(x.shape[:-1], dtype=torch.float64, device=x.device) if last is None else last.to(xd)
    out: list[Tensor] = []
    for s in range(0, n, block):
        part = xd[..., s : s + block]
        m = part.shape[-1]
        y = part @ powers[:m, :m].t() + prev.unsqueeze(-1) * carry[:m]
        out.append(y)
        prev = y[..., -1]
    if not out:
        return x
    return torch.cat(out, dim=-1).to(x.dtype)


def encode_audio(x: Tensor, classes: int, preemphasis_coef: float) -> Tensor:
    """Audio in [-1, 1] -> the classes an audio tier learns: pre-emphasised (when its config says so), mu-law."""
    return mulaw_encode(preemphasis(x, preemphasis_coef), classes)


def decode_audio(c: Tensor, classes: int, preemphasis_coef: float, last: Tensor | None = None) -> Tensor:
    """The inverse of `encode_audio`: classes -> audio, de-emphasised from `last` (the previous chunk's final sample
    [...], None = silence). Every generation path and the control score's reference use it."""
    return deemphasis(mulaw_decode(c, classes), preemphasis_coef, last)


def audio_input(c: Tensor, classes: int = 256) -> Tensor:
    """The scalar fed back into the net for a generated class: c/(classes-1)*2 - 1, i.e. the companded value in
    [-1, 1] (zero-centred, unlike the reference's c/Q in [0, 1), which is why our checkpoints are not
    interchangeable with the reference's). Shape is kept: [...] -> [...] float32."""
    return c.float() * (2.0 / (classes - 1)) - 1.0


def compand(x: Tensor, classes: int = 256) -> Tensor:
    """Continuous mu-law companding of audio in [-1, 1] (what `audio_input` gives for its class, unquantised): how
    a source-filter tier hears its previous sample and the LPC prediction."""
    mu = classes - 1
    x = x.clamp(-1.0, 1.0)
    return torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)


def reflection_to_lpc(k: Tensor) -> Tensor:
    """Reflection coefficients [..., P] (each in (-1, 1)) -> predictor coefficients a [..., P] of the all-pole
    filter 1 / A(z), A(z) = 1 + sum_j a_j z^-j (the Levinson step-up recursion). Any |k| < 1 gives a stable filter,
    which is why the envelope net predicts k rather than a."""
    a = k[..., :1]
    for i in range(1, k.shape[-1]):
        ki = k[..., i : i + 1]
        a = torch.cat([a + ki * a.flip(-1), ki], -1)
    return a


class Envelope(nn.Module):
    """A source-filter audio tier's spectral envelope: conditioning [..., C] -> LPC predictor coefficients [..., P].

    A small MLP gives reflection coefficients (tanh, |k| <= 0.995: always a stable filter) that the trainer fits, by
    regression and before the GRU trains, to the LPC analysis of the training audio at the conditioning of each
    frame (smf.rnn.source_filter.fit_envelope); it is frozen afterwards. Generation computes the coefficients of
    every step from the conditioning up front, so the per-sample loop only adds a P-tap dot product."""

    def __init__(self, cond_size: int, order: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(cond_size, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, order)
        )
        for p in self.parameters():  # fitted by its own regression, never by the tier's loss
            p.requires_grad_(False)

    def reflection(self, cond: Tensor) -> Tensor:
        """cond [..., C] -> reflection coefficients [..., P] in [-0.995, 0.995]."""
        return torch.tanh(self.net(cond)) * 0.995

    def forward(self, cond: Tensor) -> Tensor:
        """cond [..., C] -> predictor coefficients a [..., P] (prediction p[t] = -sum_j a_j x[t - j])."""
        return reflection_to_lpc(self.reflection(cond))


# ---------------------------------------------------------------------------------------------------------------


class AudioTier(nn.Module):
    """Sample-level tier: [previous sample (1), conditioning (C)] -> logits over Q mu-law classes.

    With `config.lpc` = P (source-filter): [previous sample, LPC prediction of this sample, previous excitation (3),
    conditioning (C)] -> logits over the mu-law classes of the excitation e[t] = x[t] - prediction[t]; `envelope`
    gives the prediction's coefficients from the conditioning. Sampling noise in e is then shaped by the all-pole
    filter, i.e. by the spectral envelope of the sound the knobs ask for, not spread white over the spectrum."""

    def __init__(self, config: RNNConfig):
        super().__init__()
        assert config.is_audio, "AudioTier needs config.generate == []"
        self.config = config
        H = config.hidden
        self.inp = nn.Linear(config.input_size, H)
        self.gru = nn.GRU(H, H, config.layers, batch_first=True)
        self.out = nn.Linear(H, config.classes)
        if config.lpc:
            self.envelope = Envelope(config.cond_size, config.lpc)

    def forward(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [B, T, 1+C], h [L, B, H] or None (zeros) -> (logits [B, T, Q], h [L, B, H])."""
        y, h = self.gru(F.relu(self.inp(x)), h)
        return self.out(y), h


class ParamTier(nn.Module):
    """Control-rate tier: [previous controls (G), conditioning (C)] -> Gaussian (mean, std) for the next controls."""

    def __init__(self, config: RNNConfig):
        super().__init__()
        assert not config.is_audio, "ParamTier needs config.generate (the generated control names)"
        self.config = config
        H, G = config.hidden, config.gen_size
        self.inp = nn.Linear(config.input_size, H)
        self.gru = nn.GRU(H, H, config.layers, batch_first=True)
        self.mean = nn.Linear(H, G)
        self.scale = nn.Linear(H, G)

    def forward(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, T, G+C], h [L, B, H] or None -> (mean [B, T, G], std [B, T, G] > 0, h [L, B, H])."""
        y, h = self.gru(F.relu(self.inp(x)), h)
        # a small floor keeps the Gaussian NLL finite when the net becomes overconfident
        return self.mean(y), F.softplus(self.scale(y)) + 1e-4, h


def build_model(config: RNNConfig) -> nn.Module:
    """The tier the config describes: AudioTier when config.generate is empty, else ParamTier."""
    return AudioTier(config) if config.is_audio else ParamTier(config)
