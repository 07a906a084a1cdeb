"""Built-in datasets: deterministic, params in [0, 1] covering the range, and the sound does what the params say."""

import io

import numpy as np
import pytest
import soundfile as sf
from smf.common.errors import AlreadyExists, InvalidArgument
from smf.common.lineage import read_manifest, verify_artifact
from smf.common.params import read_params, sample_param, validate_params
from smf.common.store import open_store
from smf.datasets import generate, list_dataset_files, make_dataset, tone_f0
from smf.datasets.generators import cutoff_hz

SR = 16000


def clips(name, **kw):
    kw.setdefault("n_files", 6)
    kw.setdefault("duration", 0.5)
    return list(generate(name, sample_rate=SR, **kw))


@pytest.mark.parametrize("name", ["pops", "tones", "wind"])
def test_same_seed_same_output_and_other_seed_differs(name):
    a, b, c = clips(name, seed=7), clips(name, seed=7), clips(name, seed=8)
    assert [x.audio.tobytes() for x in a] == [x.audio.tobytes() for x in b]
    assert [x.params for x in a] == [x.params for x in b]
    assert [x.audio.tobytes() for x in a] != [x.audio.tobytes() for x in c]


@pytest.mark.parametrize(
    "name, expected", [("pops", ["rate", "pitch"]), ("tones", ["normPitch", "brightness"]), ("wind", ["cutoff"])]
)
def test_params_valid_and_cover_unit_range(name, expected):
    n = 10
    out = clips(name, n_files=n)
    for clip in out:
        assert list(clip.params.params) == expected and clip.params.filename == f"{clip.name}.wav"
        validate_params(clip.params, expected, source=clip.name, all_params=True)
        assert clip.audio.dtype == np.float32 and clip.audio.shape == (SR // 2,)
        assert 0.4 < np.abs(clip.audio).max() <= 0.5
        for p in clip.params.params.values():
            assert p.times[0] == 0 and p.times[-1] == pytest.approx(0.5)
    for pname in expected:
        values = np.concatenate([c.params.params[pname].values for c in out])
        assert values.min() <= 1 / n and values.max() >= 1 - 1 / n, (pname, values)


def test_tones_f0_matches_norm_pitch():
    for clip in clips("tones", n_files=9, duration=1.0):
        v = clip.params.params["normPitch"].values[0]
        x = clip.audio.astype(np.float64) * np.hanning(len(clip.audio))
        n_fft = 8 * len(x)  # zero padding: 0.125 Hz bins
        mag = np.abs(np.fft.rfft(x, n_fft))
        k = int(np.argmax(mag))
        a, b, c = np.log(mag[k - 1 : k + 2])
        peak_hz = (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / n_fft  # parabolic interpolation of the peak
        assert peak_hz == pytest.approx(tone_f0(v), rel=1e-4), clip.name
        assert tone_f0(v) == pytest.approx(440 * 2 ** ((48 + 24 * v - 69) / 12))
        assert round(v * 24) == pytest.approx(v * 24)  # semitone steps: nvals 25


def test_pops_come_at_the_stated_rate():
    for clip in clips("pops", n_files=5, duration=2.0):
        rate = 2 ** (2 + 3 * clip.params.params["rate"].values[0])
        env = np.abs(clip.audio.astype(np.float64))
        env -= env.mean()
        ac = np.fft.irfft(np.abs(np.fft.rfft(env, 2 * len(env))) ** 2)[: len(env)]
        lo = int(SR / 40)  # above the fastest rate (32/s); the first autocorrelation peak is one period
        lag = lo + int(np.argmax(ac[lo : int(SR / 3)]))
        assert SR / lag == pytest.approx(rate, rel=0.005), clip.name


def test_wind_cutoff_moves_and_the_spectrum_follows():
    out = clips("wind", n_files=4, duration=2.0)
    for clip in out:
        cutoff = clip.params.params["cutoff"]
        assert len(cutoff.times) == 5 and np.ptp(cutoff.values) > 0.05  # time-varying within the file
        hop, n_fft = 512, 2048
        frames = np.lib.stride_tricks.sliding_window_view(clip.audio, n_fft)[::hop] * np.hanning(n_fft)
        mag = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        freqs = np.fft.rfftfreq(n_fft, 1 / SR)
        centroid = (mag * freqs).sum(1) / mag.sum(1)
        times = (np.arange(len(frames)) * hop + n_fft / 2) / SR
        fc = np.log(cutoff_hz(sample_param(cutoff, times)))
        assert np.corrcoef(np.log(centroid), fc)[0, 1] > 0.95, clip.name


def test_bad_arguments():
    with pytest.raises(InvalidArgument, match="unknown dataset 'rain'"):
        generate("rain")
    with pytest.raises(InvalidArgument, match="n_files"):
        generate("tones", n_files=0)


# ------------------------------------------------------------------------------------------------ in the store


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}/store")


def test_make_dataset_writes_wav_params_and_manifest(store, tmp_path):
    aid = make_dataset("tones", store, n_files=4, duration=0.25, seed=1)
    assert aid == "datasets/tones"
    verify_artifact(store, aid)
    manifest = read_manifest(store, aid)
    assert manifest.kind == "datasets" and manifest.config["seed"] == 1
    assert manifest.config["params"] == ["normPitch", "brightness"]
    pairs = list_dataset_files(store, aid)
    assert [w for w, _ in pairs] == [f"datasets/tones/tones_{k:03d}.wav" for k in range(4)]
    for wav_key, params_key in pairs:
        assert params_key == wav_key[:-4] + ".params"
        info = sf.info(io.BytesIO(store.get_bytes(wav_key)))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 1, "PCM_16", SR // 4)
        pf = read_params(store.get_bytes(params_key), name=params_key)
        assert pf.filename == wav_key.rsplit("/", 1)[1]

    # same seed in another store -> byte-identical files
    other = open_store(f"file://{tmp_path}/other")
    make_dataset("tones", other, n_files=4, duration=0.25, seed=1)
    assert read_manifest(other, aid).files == manifest.files

    # same call again: no-op; another config under the same name: refused unless overwrite
    assert make_dataset("tones", store, n_files=4, duration=0.25, seed=1) == aid
    assert read_manifest(store, aid).created_at == manifest.created_at
    with pytest.raises(AlreadyExists):
        make_dataset("tones", store, n_files=3, duration=0.25, seed=1)
    make_dataset("tones", store, n_files=3, duration=0.25, seed=2, overwrite=True)
    assert len(list_dataset_files(store, aid)) == 3


def test_make_dataset_other_name(store):
    aid = make_dataset("wind", store, n_files=2, duration=0.25, out_name="breeze")
    assert aid == "datasets/breeze" and len(list_dataset_files(store, "breeze")) == 2


def test_cli_make_and_ls(tmp_path, capsys):
    from smf.cli import main

    uri = f"file://{tmp_path}/store"
    assert main(["datasets", "make", "pops", "--n", "2", "--duration", "0.25", "--store", uri]) == 0
    assert f"wrote 2 wav + .params files to {uri}/datasets/pops" in capsys.readouterr().out
    assert main(["datasets", "make", "pops", "--n", "3", "--duration", "0.25", "--store", uri]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["datasets", "ls", "--store", uri]) == 0
    out = capsys.readouterr().out
    assert "datasets/pops" in out and "params: rate pitch" in out
