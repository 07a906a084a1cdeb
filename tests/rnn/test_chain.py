"""Multi-tier chaining (MTCRNN): analysis controls computed at load, a parameter tier trained on `tones` to generate
rms + centroid from normPitch, an audio tier trained on rms + centroid, and the two chained at generation time —
through the library and through the `smf rnn` CLI, at tiny capacity on CPU."""

import io
import json
import math

import numpy as np
import pytest
import torch
from smf.common.errors import InvalidArgument
from smf.common.store import open_store
from smf.rnn import features
from smf.rnn.dataset import load_dataset
from smf.rnn.generate import generate_chain, generate_controls
from smf.rnn.model import RNNConfig, build_model
from smf.rnn.train import TrainConfig, load_checkpoint, load_run, train
from support.loopback import loopback_server

SR = 16000
TINY = {
    "hidden": 16,
    "layers": 1,
    "batch": 4,
    "lr": 5e-3,
    "checkpoint_every": 10,
    "progress_every": 5,
    "device": "cpu",
    "data": "datasets/tones",
}
PARAM_TIER = {**TINY, "props": ["normPitch"], "generate": ["rms", "centroid"], "rate": 125, "seq_len": 24, "steps": 10}
AUDIO_TIER = {**TINY, "props": ["rms", "centroid"], "seq_len": 64, "steps": 6}


def test_analysis_of_known_signals():
    t = np.arange(SR) / SR
    loud = 0.5 * np.sin(2 * np.pi * 1000 * t)
    raw = features.analyse(loud, SR, 125)
    assert raw["rms"].shape == (SR // 128 + 1,)
    mid = slice(2, -2)  # away from the zero-padded edges
    np.testing.assert_allclose(raw["rms"][mid], 10 * math.log10(0.125), atol=0.1)  # 0.5 amplitude sine: -9.03 dB
    np.testing.assert_allclose(raw["centroid"][mid], math.log2(1000 / 20), atol=0.05)  # 1 kHz: 5.64 octaves
    silent = features.analyse(np.zeros(SR), SR, 125)
    assert np.all(silent["rms"] == features.RMS_FLOOR_DB) and np.all(silent["centroid"] == 0)
    with pytest.raises(InvalidArgument, match="rate"):
        features.analyse(loud, SR, 300)  # 16000 / 300 is not a whole hop
    with pytest.raises(InvalidArgument, match="unknown analysis features"):
        features.analyse(loud, SR, 125, ["loudness"])


@pytest.fixture
def tones(tmp_path):
    from smf.datasets import make_dataset

    store = open_store(f"file://{tmp_path}/store")
    make_dataset("tones", store, n_files=3, duration=0.5)
    return store


def test_features_computed_once_and_normalised_over_the_dataset(tones, monkeypatch):
    calls = []
    real = features.analyse
    monkeypatch.setattr(features, "analyse", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = TrainConfig.from_dict(PARAM_TIER).model_config()
    data = load_dataset("datasets/tones", cfg, 24, store=tones)
    assert len(calls) == 3  # once per file, at load; windows are slices of the pre-sampled tracks
    assert set(data.features) == {"rms", "centroid"} and data.features["rms"]["unit"] == "dB"
    assert data.features["centroid"]["rate"] == 125
    series = torch.cat([f.series for f in data.files])  # [steps, 2] controls at 125 Hz
    assert len(data.files[0]) == int(0.5 * 125)
    assert float(series.min()) >= 0.0 and float(series.max()) <= 1.0
    # normalised over the dataset (not per file): the range is the min/max of every file's raw track, and step k of
    # a file is its frame k mapped through that range
    from smf.common.audio import load_audio
    from smf.rnn.dataset import artifact_files

    raw = [
        real(load_audio(tones.get_bytes(k), mono="error")[0], SR, 125)
        for k, _ in artifact_files(tones, "datasets/tones")
    ]
    for name in ("rms", "centroid"):
        assert data.features[name]["min"] == min(float(r[name].min()) for r in raw)
        assert data.features[name]["max"] == max(float(r[name].max()) for r in raw)
        assert data.features[name]["max"] > data.features[name]["min"]
    for f, r in zip(data.files, raw, strict=False):
        want = np.stack([features.normalise(r[n], data.features[n]) for n in ("rms", "centroid")], 1)[: len(f)]
        np.testing.assert_allclose(f.series.numpy(), want, atol=1e-6)
    x, y = data.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 24, 3) and y.shape == (5, 24, 2)
    x, y = data.sample(5, generator=torch.Generator().manual_seed(1))
    assert len(calls) == 3


def test_audio_tier_windows_carry_controls(tones):
    cfg = TrainConfig.from_dict(AUDIO_TIER).model_config()
    data = load_dataset("datasets/tones", cfg, 64, store=tones)
    assert len(data.files[0]) == int(0.5 * SR)
    cond = torch.cat([f.cond for f in data.files])  # interpolated to every sample time
    assert cond.shape[1] == 2 and float(cond.min()) >= 0 and float(cond.max()) <= 1
    assert data.features["rms"]["rate"] == features.DEFAULT_RATE


def test_train_param_and_audio_tier_then_chain(tones):
    p = train(TrainConfig.from_dict(PARAM_TIER), tones, "rnn/ctl", log=lambda m: None)
    a = train(TrainConfig.from_dict(AUDIO_TIER), tones, "rnn/aud", log=lambda m: None)
    assert p["state"] == a["state"] == "succeeded" and math.isfinite(p["loss"])
    ck = load_checkpoint(tones, "rnn/ctl")
    assert ck["config"]["model"]["generate"] == ["rms", "centroid"]
    assert ck["config"]["model"]["param_names"] == ["normPitch"] and ck["config"]["model"]["rate"] == 125
    assert set(ck["config"]["features"]) == {"rms", "centroid"}
    manifest = json.loads(tones.get_bytes("rnn/ctl/manifest.json"))
    cfg = manifest.get("config", manifest)
    assert cfg["generate"] == ["rms", "centroid"] and cfg["param_names"] == ["normPitch"]
    assert cfg["features"]["rms"]["unit"] == "dB"

    param_tier, _ = load_run(tones, "rnn/ctl")
    audio_tier, _ = load_run(tones, "rnn/aud")
    pitch = np.linspace(0.1, 0.9, 50, dtype=np.float32)[:, None]  # [N, C=1]: normPitch glide
    audio, controls = generate_chain(param_tier, audio_tier, pitch, 0.3, seed=7, backend="torch", voices=2)
    assert audio.shape == (2, round(0.3 * SR)) and audio.dtype == np.float32
    assert controls.shape == (2, round(0.3 * 125), 2) and controls.min() >= 0 and controls.max() <= 1
    again, controls2 = generate_chain(param_tier, audio_tier, pitch, 0.3, seed=7, backend="torch", voices=2)
    np.testing.assert_array_equal(audio, again)
    np.testing.assert_array_equal(controls, controls2)
    _, controls3 = generate_chain(param_tier, audio_tier, pitch, 0.3, seed=8, backend="torch", voices=2)
    assert not np.array_equal(controls, controls3)

    # tiers whose names do not match: the error names both lists
    with pytest.raises(InvalidArgument, match=r"generates \['rms', 'centroid'\].*conditioned on \['normPitch'\]"):
        generate_chain(param_tier, build_model(RNNConfig(["normPitch"], hidden=8, layers=1)), pitch, 0.1, seed=0)
    with pytest.raises(InvalidArgument, match=r"\['rms', 'centroid'\].*\['rms', 'loudness'\]"):
        generate_chain(param_tier, build_model(RNNConfig(["rms", "loudness"], hidden=8, layers=1)), pitch, 0.1, seed=0)
    # columns go by name: another order, or the knobs passed through beside the controls, is a valid chain
    both = build_model(RNNConfig(["centroid", "normPitch", "rms"], hidden=8, layers=1))
    mixed, _ = generate_chain(param_tier, both, pitch, 0.1, seed=3, backend="torch")
    assert mixed.shape == (1, round(0.1 * SR)) and np.isfinite(mixed).all()
    with pytest.raises(InvalidArgument, match=r"normPitch"):  # wrong column count: names the param tier's props
        generate_chain(param_tier, audio_tier, np.zeros((10, 2), np.float32), 0.1, seed=0)

    # the service over a real channel: GenerateRequest.chain_model; conditioning columns are the param tier's params
    from smf.rnn.client import RnnClient
    from smf.rnn.server import SERVICE_NAME, RnnServicer, servicers

    srv = loopback_server("rnn", servicers(RnnServicer(tones)), [SERVICE_NAME], "chain-token").start()
    try:
        with RnnClient(f"127.0.0.1:{srv.port}", token="chain-token") as rnn:
            result, streamed = rnn.generate(
                "aud", np.array([[0.2], [0.8]], np.float32), 0.2, seed=7, voices=2, chain_model="ctl", stream=True
            )
            assert result.voices == 2 and result.samples == round(0.2 * SR) and streamed.shape == (2, 3200)
            render = result.render.id
            assert np.load(io.BytesIO(tones.get_bytes(f"{render}/controls.npy"))).shape == (2, 25, 2)
            with pytest.raises(InvalidArgument, match="chain_model.*audio tier"):
                rnn.generate("aud", np.array([[0.2], [0.8]], np.float32), 0.1, chain_model="aud")
            # live: the knobs are the parameter tier's params; an update mid-stream is taken
            chunks = list(
                rnn.play(
                    "aud",
                    [0.2],
                    updates=[{"normPitch": 0.9}],
                    chunk_samples=800,
                    max_seconds=0.2,
                    chain_model="ctl",
                    seed=1,
                )
            )
            assert chunks and all(len(a) == 800 and np.isfinite(a).all() for a, _ in chunks)
            assert len(chunks[-1][1]) == 1  # values reported in the knobs' space (normPitch), not the controls
            with pytest.raises(InvalidArgument, match="start.chain_model"):
                list(rnn.play("ctl", [0.2], chunk_samples=800, max_seconds=0.1, chain_model="ctl"))
    finally:
        srv.stop()


def test_controls_follow_the_gaussian_at_zero_temperature():
    cfg = RNNConfig(["p"], hidden=8, layers=1, generate=["rms"], rate=100)
    torch.manual_seed(0)
    tier = build_model(cfg).eval()
    c = generate_controls(tier, np.full((5, 1), 0.3, np.float32), 0.2, seed=1, temperature=0.0)
    # temperature 0: every step is the (clamped) mean, whatever the seed
    np.testing.assert_array_equal(
        c, generate_controls(tier, np.full((5, 1), 0.3, np.float32), 0.2, seed=2, temperature=0.0)
    )
    assert c.shape == (1, 20, 1) and c[0, 0, 0] == 0.5
    with torch.no_grad():
        mean, _, _ = tier(torch.tensor([[[0.5, 0.3]]]))
    assert abs(c[0, 1, 0] - float(mean.clamp(0, 1))) < 1e-6


def test_cli_train_both_tiers_and_generate_chain(tones, tmp_path, capsys):
    from smf.cli import main

    store = ["--store", tones.uri]
    tiny = ["--hidden", "16", "--layers", "1", "--batch", "4", "--steps", "3", "--device", "cpu"]
    train_tones = ["rnn", "train", "--data", "datasets/tones", *tiny, *store]
    param_tier = ["--generate", "rms", "centroid", "--rate", "125", "--prop", "normPitch", "--seq-len", "16"]
    assert main([*train_tones, *param_tier, "-n", "ctl"]) == 0
    assert main([*train_tones, "--prop", "rms", "centroid", "--seq-len", "32", "-n", "aud"]) == 0
    out = tmp_path / "render"
    assert (
        main(
            [
                "rnn",
                "generate",
                "-m",
                "aud",
                "--chain",
                "ctl",
                "--const",
                "0.4",
                "--duration",
                "0.2",
                "--seed",
                "3",
                "-o",
                str(out),
                *store,
            ]
        )
        == 0
    )
    import soundfile as sf

    wav, sr = sf.read(out / "voice-0.wav")
    assert sr == SR and len(wav) == round(0.2 * SR)
    assert np.load(out / "controls.npy").shape == (1, 25, 2)
    # chaining an audio tier as the parameter tier: a clear error, not a traceback
    capsys.readouterr()
    assert (
        main(["rnn", "generate", "-m", "aud", "--chain", "aud", "--const", "0.4", "0.4", "--duration", "0.2", *store])
        == 1
    )
    assert "is an audio tier" in capsys.readouterr().err


def test_f0_and_mel_controls_of_known_signals():
    from smf.rnn.features import MELS, analyse

    t = np.arange(8000) / 16000
    for hz in (110.0, 220.0, 440.0):
        raw = analyse(0.5 * np.sin(2 * np.pi * hz * t), 16000, 125, ["f0", *MELS])
        assert abs(1200 * np.log2(20 * 2 ** np.median(raw["f0"][5:-5]) / hz)) < 30  # integer-lag resolution
        assert np.argmax([np.median(raw[m]) for m in MELS]) <= 2  # a low tone sits in the low bands
    noise = analyse(np.random.default_rng(0).standard_normal(8000), 16000, 125, ["f0"])["f0"]
    assert np.median(noise) == 0.0  # aperiodic: no pitch


def test_chain_conditioning_picks_columns_by_name():
    from smf.rnn.generate import chain_columns, chain_conditioning

    param = RNNConfig(["dim0", "dim1"], generate=["rms", "centroid"], rate=125)
    audio = RNNConfig(["dim1", "rms", "centroid"])
    cols = chain_columns(param, audio)
    assert cols == [(False, 1), (True, 0), (True, 1)]
    controls = np.stack([np.full((1, 4), 0.1), np.full((1, 4), 0.2)], axis=-1).astype(np.float32)  # [1, 4, 2]
    knobs = np.stack([np.full((1, 4), 0.7), np.linspace(0, 1, 4)[None]], axis=-1).astype(np.float32)
    out = chain_conditioning(cols, controls, knobs)
    np.testing.assert_allclose(out[0], np.stack([np.linspace(0, 1, 4), np.full(4, 0.1), np.full(4, 0.2)], 1), 1e-6)
    same = chain_conditioning(chain_columns(param, RNNConfig(["rms", "centroid"])), controls, knobs)
    assert same is controls  # the plain chain passes the controls through untouched
    with pytest.raises(InvalidArgument, match="chain"):
        chain_columns(param, RNNConfig(["dim0", "dim1"]))  # uses no generated control: not a chain
