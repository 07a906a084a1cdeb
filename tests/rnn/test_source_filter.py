"""The source-filter audio tier (lpc): LPC analysis, the envelope's fit, training windows, and generation with the
filter in the loop on every backend (tiny models, CPU)."""

import math

import numpy as np
import pytest
import torch
from smf.rnn.dataset import TrainFile, WindowDataset
from smf.rnn.fastgen import cpp
from smf.rnn.fastgen.quant import teacher_forced_logits
from smf.rnn.fastgen.rng import uniforms
from smf.rnn.generate import Generator
from smf.rnn.model import AudioTier, RNNConfig, audio_input, compand, mulaw_encode, reflection_to_lpc
from smf.rnn.source_filter import analyse, fit_envelope, history, tier_batch

SR = 16000
BACKENDS = ["torch"] + (["cpp"] if cpp.load_kernel() is not None else [])


def ar_noise(k: list[float], n: int, seed: int) -> np.ndarray:
    """White noise through the all-pole filter with reflection coefficients k (a known spectral envelope)."""
    a = reflection_to_lpc(torch.tensor(k, dtype=torch.float64)).numpy()
    e = np.random.default_rng(seed).normal(0, 0.02, n)
    x = np.zeros(n)
    for t in range(n):
        acc = e[t]
        for j, aj in enumerate(a, start=1):
            if t - j >= 0:
                acc -= aj * x[t - j]
        x[t] = acc
    return x


def test_reflection_to_lpc_step_up_and_stability():
    k = torch.tensor([0.5, -0.3])
    # A(z) = 1 + a1 z^-1 + a2 z^-2 with a1 = k1 + k2 k1, a2 = k2 (Levinson step-up)
    torch.testing.assert_close(reflection_to_lpc(k), torch.tensor([0.5 + -0.3 * 0.5, -0.3]))
    for seed in range(5):  # any |k| < 1 is a stable all-pole filter: every root of A(z) inside the unit circle
        kk = torch.rand(12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.98 - 0.99
        a = reflection_to_lpc(kk).numpy()
        assert np.abs(np.roots(np.concatenate([[1.0], a]))).max() < 1.0


def test_analysis_recovers_a_known_envelope():
    k = [-0.9, 0.5, -0.2]
    centres, ks = analyse(ar_noise(k, 8000, 0), SR, 3)
    assert centres[0] == 0 and len(centres) == len(ks) == 8000 // 80
    np.testing.assert_allclose(np.median(ks[5:-5], 0), k, atol=0.08)
    # silence stays finite (the white-noise correction) and gives a flat envelope
    _, quiet = analyse(np.zeros(1000), SR, 4)
    assert np.all(np.isfinite(quiet)) and np.abs(quiet).max() < 1e-6


def two_envelopes(order=4, n=4000):
    """Two files: a dark (low-pass) and a bright (high-pass) noise, told apart by their one param."""
    cfg = RNNConfig(param_names=["p"], hidden=16, layers=1, lpc=order)
    files = []
    for i, k in enumerate(([-0.9, 0.3], [0.9, 0.3])):
        x = torch.tensor(ar_noise(k, n, i), dtype=torch.float32)
        files.append(TrainFile(f"f{i}.wav", x, torch.full((n, 1), float(i))))
    return cfg, WindowDataset(files, cfg, 64)


def test_envelope_fits_the_analysis_per_param_and_is_frozen():
    cfg, data = two_envelopes()
    torch.manual_seed(0)
    model = AudioTier(cfg)
    fit = fit_envelope(model.envelope, data, seed=0, steps=400)
    assert fit["frames"] == 2 * (4000 // 80) and fit["mse"] < 0.1 * fit["variance"]
    k = model.envelope.reflection(torch.tensor([[0.0], [1.0]]))
    assert k[0, 0] < -0.7 and k[1, 0] > 0.7  # dark file: k1 ~ -0.9, bright: ~ +0.9
    assert not any(p.requires_grad for p in model.envelope.parameters())
    again = AudioTier(cfg)
    fit_envelope(again.envelope, data, seed=0, steps=400)
    for a, b in zip(model.envelope.parameters(), again.envelope.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # deterministic for a seed


def test_tier_batch_aligns_prediction_excitation_and_inputs():
    cfg, data = two_envelopes()
    model = AudioTier(cfg)
    fit_envelope(model.envelope, data, seed=0, steps=50)
    P, T = cfg.lpc, 32
    audio, cond = data.windows(3, P + T + 1, torch.Generator().manual_seed(1))
    cond = cond + torch.rand_like(cond) * 0.1  # conditioning that changes along the window
    x, target = tier_batch(model.envelope, audio, cond, cfg.classes)
    assert x.shape == (3, T, 3 + 1) and target.shape == (3, T) and target.dtype == torch.int64
    b, r = 1, 7
    i = P + r  # row r reads sample i and predicts sample i + 1 with the coefficients of cond[i]
    a = model.envelope(cond[b, i])
    pred = -(a * audio[b, i + 1 - P : i + 1].flip(0)).sum()
    assert int(target[b, r]) == int(mulaw_encode(audio[b, i + 1] - pred))
    torch.testing.assert_close(x[b, r, 0], compand(audio[b, i]))
    torch.testing.assert_close(x[b, r, 1], compand(pred), atol=1e-6, rtol=0)
    prev_pred = -(model.envelope(cond[b, i - 1]) * audio[b, i - P : i].flip(0)).sum()
    assert float(x[b, r, 2]) == pytest.approx(float(audio_input(mulaw_encode(audio[b, i] - prev_pred))))
    torch.testing.assert_close(x[b, r, 3:], cond[b, i])
    assert history(torch.arange(6.0), 2).tolist() == [[1, 0], [2, 1], [3, 2], [4, 3]]


def lpc_model(order=4, hidden=16, layers=2, seed=0, k1=-0.6):
    """A random source-filter tier whose envelope gives k1 (plus a little from the params)."""
    torch.manual_seed(seed)
    model = AudioTier(RNNConfig(param_names=["a", "b"], hidden=hidden, layers=layers, lpc=order)).eval()
    with torch.no_grad():  # peaked distributions (sampling errors would show) on small excitations (no clipping)
        model.out.weight.mul_(4)
        model.out.bias.copy_(-0.1 * (torch.arange(model.config.classes) - 127.5).abs())
        last = model.envelope.net[-1]
        last.weight.mul_(0.1)
        last.bias.zero_()
        last.bias[0] = math.atanh(k1 / 0.995)
    return model


def teacher_inputs(model, audio, cond):
    """The inputs [B, T, 3 + C] and excitation classes [B, T] a source-filter tier saw while generating `audio`."""
    P, Q = model.config.lpc, model.config.classes
    B, T = audio.shape
    padded = torch.cat([torch.zeros(B, P), audio], 1)
    coef = model.envelope(cond)
    pred = -(coef * history(padded, P)).sum(-1)  # [B, T]: the prediction of every generated sample
    classes = mulaw_encode(audio - pred, Q)
    prev = torch.cat([mulaw_encode(torch.zeros(B, 1), Q), classes[:, :-1]], 1)
    x = torch.cat(
        [
            compand(padded[:, P - 1 : P - 1 + T], Q)[..., None],
            compand(pred, Q)[..., None],
            audio_input(prev, Q)[..., None],
            cond,
        ],
        -1,
    )
    return x, classes


RUNS = [(b, p) for b in BACKENDS for p in ("fp32", "int8") if b == "cpp" or p == "fp32"]  # torch runs fp32 only


@pytest.mark.parametrize("backend,precision", RUNS)
def test_generation_follows_the_source_filter_tier(backend, precision):
    """Every sample is prediction + decoded excitation, and every excitation class is the inverse-CDF pick of the
    fused model's own logits on the inputs the loop saw (the loops implement the tier exactly)."""
    model = lpc_model()
    arr = np.random.default_rng(1).random((2, 5, 2))
    gen = Generator(model, backend=backend, precision=precision)
    out = torch.from_numpy(gen.generate(arr, 0.02, seed=3))
    cond = torch.from_numpy(gen.prepare(arr, 0.02, None))
    assert out.abs().max() < 1.0  # no clamping in this run, so the classes can be recovered from the samples
    x, classes = teacher_inputs(model, out, cond)
    logits = teacher_forced_logits(model, x, precision)
    cdf = torch.softmax(logits, -1).cumsum(-1)
    u = uniforms(3, 2, 0, out.shape[1], torch.device("cpu"))
    target = (u * cdf[..., -1])[..., None]
    c = classes[..., None]
    hi = cdf.gather(-1, c)
    lo = torch.where(c > 0, cdf.gather(-1, (c - 1).clamp(min=0)), torch.zeros_like(hi))
    ok = (lo <= target + 2e-3) & (target <= hi + 2e-3)
    assert float(ok.float().mean()) > 0.995, float(ok.float().mean())


@pytest.mark.skipif(len(BACKENDS) < 2, reason="no C++ compiler")
def test_backends_agree_and_chunks_equal_one_shot(chunked_live):
    model = lpc_model(hidden=32)
    arr = np.random.default_rng(2).random((3, 8, 2))
    a = Generator(model, backend="torch").generate(arr, 0.02, seed=11)
    b = Generator(model, backend="cpp").generate(arr, 0.02, seed=11)
    first = [
        int(np.argmax(np.abs(a[i] - b[i]) > 1e-4)) if np.abs(a[i] - b[i]).max() > 1e-4 else a.shape[1] for i in range(3)
    ]
    assert min(first) >= 200, first
    for backend in BACKENDS:
        full, live = chunked_live(Generator(model, backend=backend), arr, 0.02, 4, 57)
        np.testing.assert_array_equal(live, full)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_noise_takes_the_envelope_shape(backend):
    """Why the tier exists: the same excitation net behind a dark envelope (k1 -0.9) renders a far darker sound
    than behind a bright one (k1 +0.9); a plain tier's noise has no such shape."""

    def tilt(audio):  # dB of energy above 4 kHz against below 1 kHz
        spec = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[-1]), axis=-1)) ** 2
        f = np.fft.rfftfreq(audio.shape[-1], 1 / SR)
        return 10 * np.log10(spec[:, f > 4000].sum() / spec[:, (f > 50) & (f < 1000)].sum())

    arr = np.full((2, 4, 2), 0.5)
    dark = tilt(Generator(lpc_model(k1=-0.9), backend=backend).generate(arr, 0.25, seed=1))
    bright = tilt(Generator(lpc_model(k1=0.9), backend=backend).generate(arr, 0.25, seed=1))
    assert bright - dark > 20, (dark, bright)


def test_export_runs_the_filter_like_the_generator():
    from smf.rnn.export import export_bytes, load_exported

    model = lpc_model()
    arr = np.random.default_rng(0).random((2, 7, 2)).astype(np.float32)
    expected = Generator(model, backend="torch").generate(arr, 0.0213, seed=123, temperature=0.9)
    m = load_exported(export_bytes(model))
    np.testing.assert_array_equal(m.generate(torch.from_numpy(arr), 0.0213, 123, 0.9).numpy(), expected)
    m.reset(2, 123)
    cond = m.stretch(torch.from_numpy(arr), 0.0213)
    parts = [m.step(cond[:, i : i + 50], 0.9) for i in range(0, cond.shape[1], 50)]
    np.testing.assert_array_equal(torch.cat(parts, 1).numpy(), expected)
