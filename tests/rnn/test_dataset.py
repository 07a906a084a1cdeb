"""Training data: up-front validation naming the file, window alignment, local folders, store datasets and grid
artifacts (2D4pt and SOM-rendered, written by the real grid renderer), refusal of a grid without a manifest."""

import numpy as np
import pytest
import torch
from smf.common.audio import save_wav
from smf.common.errors import FailedPrecondition, InvalidArgument, NotFound
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
            off = int(np.argmax([torch.equal(classes[o + 1 : o + 101], y[b]) for o in range(n - 100)]))
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


GRID_T = 1600  # samples per cell: 0.1 s at 16 kHz


def chirp(latents: np.ndarray) -> np.ndarray:
    """A trivial render_fn for render_grid: a tone whose pitch follows the latent (stands in for the GAN)."""
    f = 200 + 300 * np.abs(latents).mean(axis=1, keepdims=True)
    return (0.5 * np.sin(2 * np.pi * f * np.arange(GRID_T) / SR)).astype(np.float32)


def make_grid(store, grid_id, *, kind="grid", pm=True, d0=3, d1=2):
    from smf.grid.grid import grid_latents
    from smf.grid.render import render_grid

    z = grid_latents(*torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), d0=d0, d1=d1)
    return render_grid(store, grid_id, z, chirp, model="gan/m", sample_rate=SR, inputs=["gan/m"], kind=kind, pm=pm)


GRID_CFG = RNNConfig(param_names=["dim0", "dim1"], hidden=16, layers=1)


@pytest.mark.parametrize("kind", ["grid", "som-grid"])
def test_grid_artifact(store, kind):
    make_grid(store, "grids/g1", kind=kind)
    data = load_dataset("grids/g1", GRID_CFG, seq_len=64, store=store)
    assert len(data) == 6 and all(len(f) == GRID_T for f in data.files)
    for f in data.files:  # cells/grid_d1.<i>_d0.<j>_v.0.wav carries dim0 = j/2, dim1 = i/1 at every step
        i, j = int(f.name.split("_d1.")[1][0]), int(f.name.split("_d0.")[1][0])
        assert f.name.startswith("grids/g1/cells/")
        torch.testing.assert_close(f.cond, torch.tensor([[j / 2, i / 1]]).expand(GRID_T, 2))
    x, _ = data.sample(4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 64, 3)
    if kind == "grid":  # a full artifact URI and a trailing '/' work too
        assert len(load_dataset(store.key_uri("grids/g1"), GRID_CFG, seq_len=64)) == 6
        assert len(load_dataset("grids/g1/", GRID_CFG, seq_len=64, store=store)) == 6


def test_grid_without_manifest_is_refused(store):
    make_grid(store, "grids/half")
    store.delete("grids/half/manifest.json")  # what a render still running (or killed) leaves: files, no manifest
    with pytest.raises(FailedPrecondition, match=r"grids/half .*no manifest\.json"):
        load_dataset("grids/half", GRID_CFG, seq_len=64, store=store)
    with pytest.raises(NotFound, match="grids/nothing"):
        load_dataset("grids/nothing", GRID_CFG, seq_len=64, store=store)


def test_grid_without_params_names_the_cell(file_store):
    make_grid(file_store, "grids/nopm", pm=False)
    with pytest.raises(InvalidArgument, match=r"grids/nopm/cells/grid_d1\.0_d0\.0_v\.0\.wav.*no \.params"):
        load_dataset("grids/nopm", GRID_CFG, seq_len=64, store=file_store)


def test_train_on_a_grid_records_it_as_input(file_store):
    from smf.common.lineage import read_manifest
    from smf.rnn.train import TrainConfig, load_checkpoint, train

    make_grid(file_store, "grids/g2", kind="som-grid")
    cfg = TrainConfig.from_dict(
        {
            "data": "grids/g2",
            "props": ["dim0", "dim1"],
            "hidden": 8,
            "layers": 1,
            "seq_len": 32,
            "batch": 2,
            "steps": 3,
            "checkpoint_every": 3,
            "device": "cpu",
        }
    )
    progress = train(cfg, file_store, "rnn/ongrid", log=lambda m: None)
    assert progress["state"] == "succeeded" and load_checkpoint(file_store, "rnn/ongrid")["step"] == 3
    manifest = read_manifest(file_store, "rnn/ongrid")
    assert manifest.inputs == ["grids/g2"] and manifest.config["param_names"] == ["dim0", "dim1"]
    # a half-written grid fails the run before it writes anything
    make_grid(file_store, "grids/half")
    file_store.delete("grids/half/manifest.json")
    with pytest.raises(FailedPrecondition, match="grids/half"):
        train(
            TrainConfig.from_dict({**cfg.__dict__, "data": "grids/half"}), file_store, "rnn/onhalf", log=lambda m: None
        )
    assert file_store.list("rnn/onhalf") == []
