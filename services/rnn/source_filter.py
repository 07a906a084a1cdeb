"""The source-filter audio tier's training side (LPCNet's idea, Valin & Skoglund 2019): LPC analysis of the training
audio, the envelope net's fit to it, and the tier's inputs and targets for a batch of windows.

Why: a sample-level net that samples one mu-law class per step adds roughly white noise to what it renders. On a
dark sound (little energy above a few kHz) that noise alone is louder up there than the sound, so the render is
heard as a brighter cell than the knobs ask for (docs/benchmarks.md, Knobs). A source-filter tier predicts each
sample from the previous P with an all-pole filter whose coefficients follow the knobs (`Envelope`, fitted here to
the LPC analysis of every training frame), and the GRU learns only the prediction's error, the excitation: the
sampling noise then passes through the same filter as the sound and takes the sound's spectral shape.

    fit = fit_envelope(model.envelope, data)            # once, before the GRU trains (the Trainer does it)
    x, target = tier_batch(model.envelope, audio, cond, classes)   # audio [B, P+T+1], cond [B, P+T+1, C]
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from smf.rnn.model import audio_input, compand, mulaw_encode
from torch import Tensor

FRAME = 0.02  # analysis window (s), Hann
HOP = 0.005  # analysis hop (s)
LAG_HZ = 40.0  # Gaussian lag window: smooths the envelope so single harmonics do not become sharp poles
MAX_FRAMES = 20000  # frames per fit step (a random subset when the data has more)
FIT_STEPS = 2000


def analyse(audio: np.ndarray, sample_rate: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """LPC analysis (autocorrelation method, Levinson-Durbin) of one file -> (frame centre sample [F] int64,
    reflection coefficients [F, order] float64, each in (-1, 1))."""
    x = np.asarray(audio, dtype=np.float64)
    n = len(x)
    frame, hop = max(int(round(FRAME * sample_rate)), order + 1), max(int(round(HOP * sample_rate)), 1)
    padded = np.pad(x, (frame // 2, frame // 2))
    centres = np.arange(0, n, hop)
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame)[centres] * np.hanning(frame)
    r = np.stack([(frames[:, : frame - k] * frames[:, k:]).sum(1) for k in range(order + 1)], 1)
    r *= np.exp(-0.5 * (2 * np.pi * LAG_HZ * np.arange(order + 1) / sample_rate) ** 2)
    r[:, 0] = r[:, 0] * (1 + 1e-4) + 1e-9  # white-noise correction: silence and pure tones stay well conditioned
    a = np.zeros((len(frames), order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    ks = np.zeros((len(frames), order))
    for i in range(1, order + 1):
        k = -(r[:, i] + (a[:, 1:i] * r[:, i - 1 : 0 : -1]).sum(1)) / err
        ks[:, i - 1] = k
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1 : 0 : -1]
        a[:, i] = k
        err = err * (1 - k * k)
    return centres, np.clip(ks, -0.995, 0.995)


def fit_envelope(envelope, data, *, seed: int = 0, steps: int = FIT_STEPS, log=None) -> dict:
    """Fit `envelope` (smf.rnn.model.Envelope) to the LPC analysis of every file of `data` (a WindowDataset of a
    source-filter tier: series = audio): the conditioning at each frame's centre -> that frame's reflection
    coefficients, least squares in atanh(k) (where the MLP's tanh output lives). Deterministic for a seed; the
    envelope is left frozen. Returns {"frames", "mse", "variance"} (variance: of the targets, what a constant
    envelope would score)."""
    cfg = data.config
    conds, targets = [], []
    for f in data.files:
        centres, ks = analyse(f.series.numpy(), cfg.sample_rate, cfg.lpc)
        conds.append(f.cond[torch.as_tensor(np.minimum(centres, len(f) - 1))])
        targets.append(torch.as_tensor(np.arctanh(ks / 0.995 * 0.999), dtype=torch.float32))
    cond, target = torch.cat(conds), torch.cat(targets)
    g = torch.Generator().manual_seed(seed)
    params = list(envelope.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for p in params:
            p.requires_grad_(True)
        for m in envelope.net:  # a fresh, seeded start (the tier's own init drew from the global generator)
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    device = params[0].device
    cond, target = cond.to(device), target.to(device)
    opt = torch.optim.Adam(params, lr=3e-3)
    try:
        for _ in range(steps):
            if len(cond) > MAX_FRAMES:
                idx = torch.randint(0, len(cond), (MAX_FRAMES,), generator=g).to(device)
                c, t = cond[idx], target[idx]
            else:
                c, t = cond, target
            loss = F.mse_loss(envelope.net(c), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    with torch.no_grad():
        mse = float(F.mse_loss(envelope.net(cond), target))
    out = {"frames": int(len(cond)), "mse": mse, "variance": float(target.var(0).mean())}
    if log is not None:
        log(
            f"envelope: LPC order {cfg.lpc} fitted to {out['frames']} frames, mse {mse:.4f} "
            f"(a constant envelope: {out['variance']:.4f})"
        )
    return out


def history(x: Tensor, order: int) -> Tensor:
    """x [..., n] -> [..., n - order, order]: row t holds x[t + order - 1], ..., x[t] (newest first), i.e. the
    `order` samples before x[t + order]."""
    return x.unfold(-1, order, 1)[..., : x.shape[-1] - order, :].flip(-1)


@torch.no_grad()
def tier_batch(envelope, audio: Tensor, cond: Tensor, classes: int, harmonics: int = 0) -> tuple[Tensor, Tensor]:
    """The inputs and targets of a source-filter tier for windows of P + T + 1 samples -> (x [B, T, 3 + C],
    target [B, T] int64). audio [B, P+T+1] float in [-1, 1], cond [B, P+T+1, C] (row i = the params at sample i).

    Row r reads input sample i = P + r and predicts sample i + 1, as generation does at its step: the prediction
    p[i+1] = -sum_j a_j x[i+1-j] with a = envelope(cond[i]), the target is the class of e[i+1] = x[i+1] - p[i+1],
    and the inputs are compand(x[i]), compand(p[i+1]), audio_input(class of e[i]) and cond[i]. With a pitch
    oscillator of `harmonics` (cond's last column is then the phase, see WindowDataset.windows) the oscillator at
    the phase of sample i + 1 follows cond[i]."""
    from smf.rnn.oscillator import net_conditioning

    P = envelope.net[-1].out_features
    n = audio.shape[-1]
    T = n - P - 1
    params = cond[..., :-1] if harmonics else cond
    a = envelope(params[:, P - 1 : n - 1])  # [B, T+1, P]: coefficients for samples P .. P+T
    past = history(audio, P)  # [B, T+1, P]: the P samples before samples P .. P+T
    pred = -(a * past).sum(-1)  # [B, T+1]
    exc = mulaw_encode((audio[:, P:] - pred).clamp(-1.0, 1.0), classes)  # [B, T+1]
    x = torch.cat(
        [
            compand(audio[:, P : P + T], classes)[..., None],
            compand(pred[:, 1:], classes)[..., None],
            audio_input(exc[:, :-1], classes)[..., None],
            net_conditioning(cond[:, P : P + T + 1], params.shape[-1], harmonics),
        ],
        -1,
    )
    return x, exc[:, 1:]
