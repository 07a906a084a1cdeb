"""Training data: up-front validation naming the file, window alignment, local folders and store datasets."""
import numpy as np
import pytest
import torch
from smf.common.audio import save_wav
from smf.common.errors import InvalidArgument
from smf.common.params import Param, ParamFile, constant_param, write_params
from smf.common.store import open_store
from smf.rnn.dataset import WindowDataset, load_dataset, prepare_file
from smf.rnn.model import RNNConfig, audio_input, mulaw_encode

SR = 16000
CFG = RNNConfig(param_names=["a", "b"], hidden=16, layers=1)


def pfile(n, **params):
    dur = n / SR
    return ParamFile("x.wav", {k: (v if isinstance(v, Param) else constant_param(v, dur)) for k, v in params.items()})


def test_validation_errors_name_the_file():
    audio = torch.zeros(1000)
    good = pfile(1000, a=0.2, b=0.7)
    prepare_file("ok.wav", audio, SR, good, CFG)
    with pytest.raises(InvalidArgument, match=r"missing\.wav.*'b'") as e:
        prepare_file("missing.wav", audio, SR, pfile(1000, a=0.2), CFG)
    assert e.value.field == "missing.wav"
    with pytest.raises(InvalidArgument, match=r"range\.wav.*'a'.*outside \[0, 1\]"):
        prepare_file("range.wav", audio, SR, pfile(1000, a=1.5, b=0.0), CFG)
    with pytest.raises(InvalidArgument, match=r"stereo\.wav.*mono"):
        prepare_file("stereo.wav", torch.zeros(2, 1000), SR, good, CFG)
    with pytest.raises(InvalidArgument, match=r"rate\.wav.*22050 Hz.*16000"):
        prepare_file("rate.wav", audio, 22050, good, CFG)
    with pytest.raises(InvalidArgument, match=r"noparams\.wav.*no \.params"):
        prepare_file("noparams.wav", audio, SR, None, CFG)


def test_short_file_named():
    f = prepare_file("short.wav", torch.zeros(50), SR, pfile(50, a=0, b=0), CFG)
    with pytest.raises(InvalidArgument, match=r"short\.wav.*shorter than one training window"):
        WindowDataset([f], CFG, seq_len=64)


def test_windows_align_input_target_and_conditioning():
    n = 4000
    audio = 0.5 * torch.randn(n, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)  # no repeats: offsets
    ramp = Param(times=[0.0, n / SR], values=[0.0, 1.0])  # time-varying: checks interpolation at sample times
    f = prepare_file("ramp.wav", audio, SR, pfile(n, a=ramp, b=0.25), CFG)
    f2 = prepare_file("long.wav", torch.cat([audio, audio]), SR, pfile(2 * n, a=0.5, b=0.5), CFG)
    data = WindowDataset([f, f2], CFG, seq_len=100)
    g = torch.Generator().manual_seed(0)
    x, y = data.sample(16, generator=g)
    assert x.shape == (16, 100, 3) and y.shape == (16, 100) and y.dtype == torch.int64
    # input t+1 is the target of step t (teacher forcing), as the mu-law input scalar
    torch.testing.assert_close(x[:, 1:, 0], audio_input(y[:, :-1]))
    classes = mulaw_encode(audio)
    for b in range(16):
        if float(x[b, 0, 2]) == 0.25:  # a window of ramp.wav: find its offset, check the ramp at those times
            off = int(np.argmax([torch.equal(classes[o + 1:o + 101], y[b]) for o in range(n - 100)]))
            torch.testing.assert_close(x[b, :, 1], torch.arange(off, off + 100) / n, atol=1e-5, rtol=0)
    # longer files get proportionally more windows (uniform over valid positions)
    assert data.weights[1] > 1.9 * data.weights[0]


def test_local_folder_and_bad_file(tmp_path):
    for i in range(2):
        save_wav(tmp_path / f"f{i}.wav", torch.zeros(2000), SR)
        write_params(tmp_path / f"f{i}.params", pfile(2000, a=i / 2, b=0.5))
    (tmp_path / ".DS_Store").write_bytes(b"junk")  # the reference read this as audio
    data = load_dataset(str(tmp_path), CFG, seq_len=64)
    assert len(data) == 2
    write_params(tmp_path / "f1.params", pfile(2000, a=0.1))
    with pytest.raises(InvalidArgument, match=r"f1\.wav.*'b'"):
        load_dataset(str(tmp_path), CFG, seq_len=64)


def test_store_dataset_tones(tmp_path):
    from smf.datasets import make_dataset

    store = open_store(f"file://{tmp_path}/store")
    aid = make_dataset("tones", store, n_files=3, duration=0.2)
    cfg = RNNConfig(param_names=["normPitch", "brightness"], hidden=16, layers=1)
    data = load_dataset(aid, cfg, seq_len=128, store=store)
    assert len(data) == 3 and all(len(f) == int(0.2 * SR) for f in data.files)
    x, _ = data.sample(4, generator=torch.Generator().manual_seed(1))
    assert x.shape == (4, 128, 3)
    with pytest.raises(InvalidArgument, match=r"datasets/tones/.*\.wav.*'rate'"):
        load_dataset(aid, RNNConfig(param_names=["rate"]), seq_len=128, store=store)
    uri_data = load_dataset(store.key_uri(aid), cfg, seq_len=128)
    assert len(uri_data) == 3
