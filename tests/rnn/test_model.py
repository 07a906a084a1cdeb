"""The MTCRNN tiers at tiny capacity: shapes, state carrying, and the mu-law pair."""

import torch
from smf.rnn.model import (
    AudioTier,
    ParamTier,
    RNNConfig,
    audio_input,
    build_model,
    mulaw_decode,
    mulaw_encode,
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
