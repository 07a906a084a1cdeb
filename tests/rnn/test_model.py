"""The MTCRNN tiers at tiny capacity: shapes, state carrying, and the mu-law pair."""

import torch
from smf.rnn.model import (
    AudioTier,
    ParamTier,
    RNNConfig,
    audio_input,
    build_model,
    deemphasis,
    mulaw_decode,
    mulaw_encode,
    preemphasis,
)


def test_audio_tier_shapes_and_state():
    cfg = RNNConfig(param_names=["dim0", "dim1"], hidden=16, layers=2)
    model = build_model(cfg)
    assert isinstance(model, AudioTier)
    assert (model.inp.in_features, model.gru.hidden_size, model.gru.num_layers, model.out.out_features) == (
        3,
        16,
        2,
        256,
    )
    x = torch.rand(3, 7, 3)
    logits, h = model(x)
    assert logits.shape == (3, 7, 256) and h.shape == (2, 3, 16)
    # one call over T steps == T calls of one step carrying h (what generation relies on)
    h, steps = None, []
    for t in range(7):
        out, h = model(x[:, t : t + 1], h)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), logits, atol=1e-5, rtol=1e-5)


def test_param_tier_gaussian_heads():
    cfg = RNNConfig(param_names=["fill"], hidden=16, layers=1, generate=["rms", "centroid"], rate=125)
    model = build_model(cfg)
    assert isinstance(model, ParamTier)
    mean, std, h = model(torch.rand(2, 5, 3))
    assert mean.shape == std.shape == (2, 5, 2) and h.shape == (1, 2, 16)
    assert bool((std > 0).all())


def test_mulaw_matched_pair():
    x = torch.linspace(-1, 1, 20001)
    c = mulaw_encode(x)
    assert c.dtype == torch.int64 and int(c.min()) == 0 and int(c.max()) == 255
    assert float((mulaw_decode(c) - x).abs().max()) < 0.025  # coarsest bin near +-1
    small = torch.linspace(-0.01, 0.01, 101)
    assert float((mulaw_decode(mulaw_encode(small)) - small).abs().max()) < 3e-4  # fine near 0
    assert abs(float(mulaw_decode(mulaw_encode(torch.tensor(0.0))))) < 1e-4
    # every class decodes and re-encodes to itself
    allc = torch.arange(256)
    assert torch.equal(mulaw_encode(mulaw_decode(allc)), allc)
    v = audio_input(allc)
    assert float(v[0]) == -1.0 and abs(float(v[-1]) - 1.0) < 1e-6


def test_preemphasis_pair_round_trips_and_carries_across_chunks():
    x = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0)) * 0.3
    y = preemphasis(x, 0.9)
    torch.testing.assert_close(y[:, 1:], x[:, 1:] - 0.9 * x[:, :-1])
    torch.testing.assert_close(deemphasis(y, 0.9), x, rtol=0, atol=1e-6)
    first = deemphasis(y[:, :333], 0.9)  # chunk boundaries off the 64-sample blocks
    rest = deemphasis(y[:, 333:], 0.9, first[:, -1])
    torch.testing.assert_close(torch.cat([first, rest], 1), x, rtol=0, atol=1e-6)
    assert preemphasis(x, 0.0) is x and deemphasis(x, 0.0) is x
    assert deemphasis(torch.zeros(2, 0), 0.9).shape == (2, 0)


def test_deemphasis_tilts_sampling_noise_away_from_high_frequencies():
    """What it is for: white noise added to the learned signal comes out low-passed, ~25 dB down at Nyquist."""
    noise = torch.randn(1, 1 << 15, generator=torch.Generator().manual_seed(1)).double()
    spec = torch.fft.rfft(deemphasis(noise, 0.9)[0]).abs().square()
    low, high = spec[1:200].mean(), spec[-200:].mean()
    assert 10 * torch.log10(low / high) > 20  # 20*log10(1.9/0.1) = 25.6 dB in theory
