"""Live chained play: a parameter tier stepped chunk by chunk gives the controls offline generation gives."""

import numpy as np
import torch
from smf.rnn.generate import ControlStream, Generator, generate_controls
from smf.rnn.live import LiveVoice
from smf.rnn.model import RNNConfig, build_model

SR = 16000


def tiers():
    torch.manual_seed(0)
    param = build_model(
        RNNConfig(param_names=["dim0", "dim1"], hidden=8, layers=1, generate=["rms", "centroid"], rate=125)
    ).eval()
    audio = build_model(RNNConfig(param_names=["rms", "centroid"], hidden=8, layers=1)).eval()
    return param, audio


def test_control_stream_in_chunks_matches_offline_controls():
    param, _ = tiers()
    knobs = np.array([0.2, 0.9], dtype=np.float32)
    offline = generate_controls(param, knobs[None], 0.5, seed=0, temperature=0.0)[0]  # [62, 2] frames
    stream = ControlStream(param, seed=0, temperature=0.0)
    chunks, rng = [], np.random.default_rng(0)
    total = 0
    while total < int(0.5 * SR):
        n = int(rng.integers(100, 1500))
        chunks.append(stream.audio_rate(np.broadcast_to(knobs, (1, n, 2)), SR)[0])
        total += n
    live = np.concatenate(chunks)
    hop = SR // 125
    for k in range(len(offline) - 1):  # at frame times the interpolation is the frame itself
        np.testing.assert_allclose(live[k * hop], offline[k], atol=1e-5)


def test_knob_change_moves_the_controls():
    param, _ = tiers()
    stream = ControlStream(param, seed=0, temperature=0.0)
    a = stream.audio_rate(np.full((1, 4000, 2), 0.0, dtype=np.float32), SR)[0]
    b = stream.audio_rate(np.full((1, 4000, 2), 1.0, dtype=np.float32), SR)[0]
    assert np.abs(a[-1] - b[-1]).max() > 1e-4


def test_live_voice_with_a_chain_plays():
    param, audio = tiers()
    voice = LiveVoice(Generator(audio, backend="torch"), [0.5, 0.5], seed=1, chain=param)
    x = voice.next_chunk(800, SR)
    voice.update({"dim0": 1.0}, ["dim0", "dim1"], SR, glide_ms=20)
    y = voice.next_chunk(800, SR)
    assert x.shape == y.shape == (800,) and np.isfinite(x).all() and np.isfinite(y).all()
