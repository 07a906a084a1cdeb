"""The pitch oscillator (smf.rnn.oscillator): the phase measured from a note, the generation-side phase, the
training rows' pairing, every backend with the oscillator's inputs, and training with it (tiny models, CPU)."""

import math

import numpy as np
import pytest
import torch
from smf.common.errors import InvalidArgument
from smf.common.params import ParamFile, constant_param
from smf.rnn.dataset import TrainFile, WindowDataset, prepare_files
from smf.rnn.fastgen import cpp
from smf.rnn.generate import Generator
from smf.rnn.model import AudioTier, RNNConfig, mulaw_decode, mulaw_encode
from smf.rnn.oscillator import Oscillator, features, measured_phase, net_conditioning, note_hz, oscillator_for

SR = 16000
BACKENDS = ["torch"] + (["cpp"] if cpp.load_kernel() is not None else [])


def osc_model(harmonics=2, hidden=16, layers=2, lpc=0, seed=0):
    torch.manual_seed(seed)
    cfg = RNNConfig(
        param_names=["normPitch", "b"], hidden=hidden, layers=layers, oscillator=harmonics, pitch=[48.0, 72.0], lpc=lpc
    )
    return AudioTier(cfg).eval()


def test_note_hz_and_features():
    hz = note_hz(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), 48, 72)
    np.testing.assert_allclose(hz.numpy(), [130.8128, 261.6256, 523.2511], rtol=1e-6)
    f = features(torch.tensor([0.0, math.pi / 2]), 2)  # [sin phi, sin 2 phi, cos phi, cos 2 phi]
    np.testing.assert_allclose(f.numpy(), [[0, 0, 1, 1], [1, 0, 0, -1]], atol=1e-6)


@pytest.mark.parametrize("cents_off", [0.0, 30.0])
def test_measured_phase_tracks_the_note_itself(cents_off):
    """A harmonic note at (or 30 cents beside) its nominal f0 with a random start phase: the measured phase is the
    fundamental's own, so cos(phase) lines up with the fundamental sample by sample (edges aside)."""
    f_nom = 196.0
    f = f_nom * 2 ** (cents_off / 1200)
    n = np.arange(SR // 2)
    phi0 = 1.234
    fund = np.cos(2 * np.pi * f * n / SR + phi0)
    x = 0.4 * fund + 0.2 * np.cos(2 * (2 * np.pi * f * n / SR + phi0) + 0.5)
    phase = measured_phase(x, np.full(len(x), f_nom), SR)
    mid = slice(1000, len(x) - 1000)
    err = np.angle(np.exp(1j * (phase[mid] - (2 * np.pi * f * n[mid] / SR + phi0))))
    assert np.abs(err).max() < 0.1, np.abs(err).max()
    assert np.corrcoef(np.cos(phase[mid]), fund[mid])[0, 1] > 0.99
    with pytest.raises(ValueError):
        measured_phase(x, np.full(3, f_nom), SR)


def test_generation_phase_integrates_the_requested_pitch_across_chunks():
    osc = Oscillator(column=0, lo=48, hi=72, harmonics=3, sample_rate=SR)
    cond = torch.rand(2, 500, 2)
    whole, last = osc(cond, torch.zeros(2, dtype=torch.float64))
    assert whole.shape == (2, 500, 2 + 6)
    torch.testing.assert_close(whole[..., :2], cond)
    hz = note_hz(cond[..., 0].double(), 48, 72)
    expected = torch.remainder(torch.cumsum(2 * math.pi * hz / SR, 1), 2 * math.pi)
    torch.testing.assert_close(whole[..., 2], torch.sin(expected).float(), atol=1e-5, rtol=0)
    a, p = osc(cond[:, :123], torch.zeros(2, dtype=torch.float64))
    b, p = osc(cond[:, 123:], p)
    torch.testing.assert_close(torch.cat([a, b], 1), whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(p, last)
    empty, p0 = osc(cond[:, :0], last)
    assert empty.shape == (2, 0, 8) and torch.equal(p0, last)


def test_training_rows_hear_the_phase_of_the_sample_they_predict():
    cfg = RNNConfig(param_names=["normPitch"], hidden=8, layers=1, oscillator=2, pitch=[48.0, 72.0])
    n = 400
    phase = torch.remainder(torch.arange(n, dtype=torch.float32) * 0.3, 2 * math.pi)
    audio = 0.5 * torch.cos(phase)
    f = TrainFile("a.wav", mulaw_encode(audio).to(torch.int16), torch.full((n, 1), 0.5), phase)
    data = WindowDataset([f], cfg, 32)
    series, cond = data.windows(1, 33, torch.Generator().manual_seed(0))
    assert cond.shape == (1, 33, 2)  # the phase rides as a last column
    rows = net_conditioning(cond[0], cfg.cond_size, cfg.oscillator)
    assert rows.shape == (32, 1 + 4)
    torch.testing.assert_close(rows[:, 1], torch.sin(cond[0, 1:, 1]))
    x, target = data.sample(2, 32, torch.Generator().manual_seed(1))
    assert x.shape == (2, 32, 1 + 1 + 4)  # [previous sample, normPitch, sin phi, sin 2 phi, cos phi, cos 2 phi]
    # the file is 0.5 cos(phase): each row's cos column is the sample it predicts, not the one it hears
    torch.testing.assert_close(mulaw_decode(target), 0.5 * x[..., 4], atol=0.03, rtol=0)
    assert (mulaw_decode(target)[:, 1:] - 0.5 * x[:, :-1, 4]).abs().max() > 0.05


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lpc", [0, 4])
def test_every_backend_chunked_and_exported_renders_the_same(backend, lpc, chunked_live):
    from smf.rnn.export import export_bytes, load_exported

    model = osc_model(lpc=lpc)
    arr = np.random.default_rng(1).random((2, 6, 2)).astype(np.float32)
    gen = Generator(model, backend=backend)
    full, live = chunked_live(gen, arr, 0.03, 5, 77)
    np.testing.assert_array_equal(live, full)
    cond = gen.prepare(arr, 0.03, None)
    if backend == "torch":
        m = load_exported(export_bytes(model))
        np.testing.assert_array_equal(m.generate(torch.from_numpy(arr), 0.03, 5).numpy(), full)
        m.reset(2, 5)
        steps = [m.step(torch.from_numpy(cond[:, i : i + 77])) for i in range(0, cond.shape[1], 77)]
        np.testing.assert_array_equal(torch.cat(steps, 1).numpy(), full)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="no C++ compiler")
def test_backends_agree_with_the_oscillator():
    model = osc_model(hidden=32)
    arr = np.random.default_rng(2).random((3, 8, 2))
    a = Generator(model, backend="torch").generate(arr, 0.02, seed=11)
    b = Generator(model, backend="cpp").generate(arr, 0.02, seed=11)
    first = [int(np.argmax(np.abs(a[i] - b[i]) > 1e-4)) if np.abs(a[i] - b[i]).max() > 1e-4 else 320 for i in range(3)]
    assert min(first) >= 200, first


def test_the_oscillator_columns_reach_the_net():
    """Zeroing the oscillator's input weights changes the render: the loop feeds the columns (not only the params)."""
    model = osc_model()
    arr = np.full((1, 4, 2), 0.5, dtype=np.float32)
    a = Generator(model, backend="torch").generate(arr, 0.02, seed=1)
    with torch.no_grad():
        model.inp.weight[:, 1 + 2 :] = 0
    b = Generator(model, backend="torch").generate(arr, 0.02, seed=1)
    assert np.abs(a - b).max() > 1e-3


def test_oscillator_for_needs_the_range():
    assert isinstance(oscillator_for(RNNConfig(param_names=["normPitch"])), torch.nn.Module)
    with pytest.raises(InvalidArgument, match="pitch"):
        oscillator_for(RNNConfig(param_names=["normPitch"], oscillator=2))


def note_entries(n_files=4, seconds=0.3, midi=True):
    """Harmonic notes over MIDI 48..72 with paramManager normPitch (origUnits midiPitch unless midi=False)."""
    entries = []
    for i in range(n_files):
        v = i / (n_files - 1)
        f0 = 440 * 2 ** ((48 + 24 * v - 69) / 12)
        t = np.arange(int(seconds * SR)) / SR
        audio = (0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(4 * np.pi * f0 * t)).astype(np.float32)
        p = constant_param(v, seconds, orig_units="midiPitch" if midi else "norm", orig_minval=48, orig_maxval=72)
        entries.append((f"n{i}.wav", audio, SR, ParamFile(f"n{i}.wav", {"normPitch": p})))
    return entries


def test_prepare_files_measures_phases_and_the_midi_range():
    cfg = RNNConfig(param_names=["normPitch"], hidden=8, layers=1, oscillator=2)
    data = prepare_files(note_entries(), cfg, 64)
    assert data.pitch == [48.0, 72.0]
    for i, f in enumerate(data.files):
        a = data.audio(i)
        mid = slice(600, len(a) - 600)
        assert np.corrcoef(np.cos(f.phase.numpy()[mid]), a[mid])[0, 1] > 0.9  # the fundamental is cos(phase)
    with pytest.raises(InvalidArgument, match="oscillator"):
        prepare_files(note_entries(midi=False), cfg, 64)
    renamed = [(n, a, sr, ParamFile(pf.filename, {"b": pf.params["normPitch"]})) for n, a, sr, pf in note_entries()]
    with pytest.raises(InvalidArgument, match="oscillator"):
        prepare_files(renamed, RNNConfig(param_names=["b"], oscillator=2), 64)


def test_train_config_validates_the_oscillator():
    from smf.rnn.train import TrainConfig

    assert TrainConfig.from_dict({"oscillator": 3}).model_config().oscillator == 3
    assert TrainConfig.from_dict({}).oscillator is None  # auto: decided by the data
    assert TrainConfig.from_dict({"props": ["dim0"]}).model_config().oscillator == 0
    for bad, field in (
        ({"oscillator": 9}, "oscillator"),
        ({"oscillator": -1}, "oscillator"),
        ({"oscillator": 2, "props": ["dim0"]}, "oscillator"),
        ({"oscillator": 2, "generate": ["rms"], "rate": 100, "props": ["normPitch"]}, "oscillator"),
    ):
        with pytest.raises(InvalidArgument) as e:
            TrainConfig.from_dict(bad)
        assert e.value.field == field


def test_a_tiny_oscillator_tier_holds_its_pitch_and_a_plain_one_does_not(tmp_path):
    """The score can tell: the same tiny tier and budget on the `tones` notes, with the oscillator (the default:
    auto, on for normPitch with a MIDI range) and with `oscillator` 0; the oscillator's renders sit on the requested
    pitches, the plain tier's do not. The trainer reads normPitch's MIDI range from the .params into the model, and
    the stored run plays back with it."""
    from smf.common.store import open_store
    from smf.datasets import make_dataset
    from smf.rnn.evaluate import pitch_errors
    from smf.rnn.train import TrainConfig, load_run, train

    store = open_store(f"file://{tmp_path}/store")
    make_dataset("tones", store, n_files=13, duration=0.5)
    medians = {}
    for harmonics in (None, 0):
        cfg = TrainConfig.from_dict(
            {
                "data": "datasets/tones",
                "props": ["normPitch"],
                "hidden": 24,
                "layers": 1,
                "seq_len": 128,
                "batch": 8,
                "lr": 3e-3,
                "steps": OSC_STEPS,
                "checkpoint_every": OSC_STEPS,
                "progress_every": 10**6,
                "oscillator": harmonics,
            }
        )
        train(cfg, store, f"rnn/osc{harmonics}", log=lambda *a: None)
        model, _ = load_run(store, f"rnn/osc{harmonics}")
        assert model.config.oscillator == (2 if harmonics is None else 0)
        assert model.config.pitch == ([48.0, 72.0] if harmonics is None else None)
        gen = Generator(model)
        rep = pitch_errors(lambda a, d, s, g=gen: g.generate(a, d, seed=s), ["normPitch"], SR, (48.0, 72.0))
        medians[harmonics] = rep["median_cents"]
    print("pitch medians (cents), auto oscillator / none", medians)
    assert medians[None] < 30, medians
    assert medians[0] > 3 * max(medians[None], 10), medians


OSC_STEPS = 300


def test_the_oscillator_follows_normpitch_or_an_analysed_f0():
    from smf.rnn.pitch import pitch_param, pitch_range

    assert pitch_param(["dim0", "f0", "normPitch"]) == "normPitch" and pitch_param(["rms", "f0"]) == "f0"
    assert pitch_param(["dim0"]) is None
    assert RNNConfig(param_names=["rms", "f0"], oscillator=2).pitch_column == 1
    ranges = {"f0": {"units": "octaves", "min": 1.0, "max": math.log2(440 / 20)}, "normPitch": {"units": "norm"}}
    lo, hi = pitch_range(ranges, "f0")  # octaves above 20 Hz: 40 Hz .. 440 Hz
    assert abs(hi - 69.0) < 1e-9 and abs(lo - (69 + 12 * math.log2(40 / 440))) < 1e-9
    assert pitch_range(ranges) is None  # normPitch without MIDI units names no pitch


def test_auto_turns_the_oscillator_on_only_for_normpitch_with_a_midi_range():
    from smf.rnn.oscillator import AUTO_HARMONICS, auto_oscillator

    plain = RNNConfig(param_names=["normPitch"], hidden=8, layers=1)
    data = prepare_files(note_entries(), plain, 64)
    assert all(f.phase is None for f in data.files)
    cfg = auto_oscillator(plain, data)
    assert cfg.oscillator == AUTO_HARMONICS and cfg.pitch == [48.0, 72.0] and data.config is cfg
    assert all(f.phase is not None for f in data.files)
    x, _ = data.sample(2, 32, torch.Generator().manual_seed(0))
    assert x.shape[-1] == cfg.input_size
    no_midi = prepare_files(note_entries(midi=False), plain, 64)
    assert auto_oscillator(plain, no_midi) is plain
    tier = RNNConfig(param_names=["normPitch"], hidden=8, layers=1, generate=["rms"], rate=125)
    assert auto_oscillator(tier, data) is tier
    explicit = RNNConfig(param_names=["normPitch"], hidden=8, layers=1, oscillator=3, pitch=[48.0, 72.0])
    assert auto_oscillator(explicit, data) is explicit


def test_a_run_without_an_oscillator_resumes_with_oscillator_0_and_the_error_says_so(tmp_path):
    from smf.common.store import open_store
    from smf.datasets import make_dataset
    from smf.rnn.train import TrainConfig, train

    store = open_store(f"file://{tmp_path}/store")
    make_dataset("tones", store, n_files=3, duration=0.3)
    base = {"data": "datasets/tones", "hidden": 8, "layers": 1, "seq_len": 64, "batch": 2, "progress_every": 10**6}
    quiet = lambda *a: None  # noqa: E731
    train(
        TrainConfig.from_dict({**base, "steps": 2, "checkpoint_every": 2, "oscillator": 0}), store, "rnn/r", log=quiet
    )
    with pytest.raises(InvalidArgument, match="set oscillator 0 to resume"):
        train(TrainConfig.from_dict({**base, "steps": 4, "checkpoint_every": 2}), store, "rnn/r", log=quiet)
    progress = train(
        TrainConfig.from_dict({**base, "steps": 4, "checkpoint_every": 2, "oscillator": 0}), store, "rnn/r", log=quiet
    )
    assert progress["step"] == 4
