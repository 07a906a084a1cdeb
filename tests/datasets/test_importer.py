"""Importing a folder: every file checked before the store is touched, resampling, nothing half-imported."""

import io
import json

import numpy as np
import pytest
import soundfile as sf
from smf.common.errors import AlreadyExists, InvalidArgument
from smf.common.lineage import read_manifest, verify_artifact
from smf.common.params import ParamFile, constant_param, params_json, read_params
from smf.common.store import open_store
from smf.datasets import import_dataset, list_dataset_files


def sine(freq=1000.0, sr=22050, seconds=0.5, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_pair(folder, name, *, sr=22050, params=True, channels=1, fmt=None, value=0.3):
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / name, sine(sr=sr, channels=channels), sr, format=fmt)
    if params:
        pf = ParamFile(name, {"rate": constant_param(value, 0.5)})
        (folder / name).with_suffix(".params").write_text(params_json(pf))


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}/store")


def assert_store_empty(store):
    assert store.list("") == []


def test_import_resamples_converts_and_keeps_params(tmp_path, store):
    src = tmp_path / "src"
    write_pair(src, "a.wav")
    write_pair(src / "sub dir", "b.flac", fmt="FLAC", value=0.9)
    (src / "README").write_text("not audio")
    (src / "notes.wav.txt").write_text("not audio either")
    (src / ".hidden.wav").write_bytes(b"garbage")  # hidden: skipped, so its garbage does not matter
    (src / ".git").mkdir()
    (src / ".git" / "x.wav").write_bytes(b"garbage")

    aid = import_dataset(src, store, name="mine", sample_rate=16000)
    assert aid == "datasets/mine"
    verify_artifact(store, aid)
    pairs = list_dataset_files(store, aid)
    assert pairs == [
        ("datasets/mine/a.wav", "datasets/mine/a.params"),
        ("datasets/mine/sub_dir/b.wav", "datasets/mine/sub_dir/b.params"),
    ]
    for wav_key, _params_key in pairs:
        data = store.get_bytes(wav_key)
        info = sf.info(io.BytesIO(data))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "WAV")
        assert abs(info.frames - 8000) <= 1
        audio, _ = sf.read(io.BytesIO(data))
        mag = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
        assert np.argmax(mag) * 16000 / len(audio) == pytest.approx(1000, abs=4)  # the tone survived resampling
    b = read_params(store.get_bytes("datasets/mine/sub_dir/b.params"))
    assert b.filename == "b.wav" and b.params["rate"].values == [0.9, 0.9]
    manifest = read_manifest(store, aid)
    assert manifest.config["sample_rate"] == 16000 and manifest.config["params"] == ["rate"]
    assert manifest.config["n_files"] == 2


def test_import_keeps_the_common_rate_without_params(tmp_path, store):
    src = tmp_path / "src"
    write_pair(src, "a.wav", params=False)
    write_pair(src, "b.wav", params=False)
    aid = import_dataset(src, store, name="plain")
    assert [p for _, p in list_dataset_files(store, aid)] == [None, None]
    assert sf.info(io.BytesIO(store.get_bytes("datasets/plain/a.wav"))).samplerate == 22050


def bad_case(src, case):
    write_pair(src, "a.wav")
    if case == "corrupt":
        (src / "b.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
        (src / "b.params").write_text(params_json(ParamFile("b.wav", {"rate": constant_param(0.5, 0.5)})))
        return "b.wav"
    if case == "stereo":
        write_pair(src, "b.wav", channels=2)
        return "b.wav"
    if case == "missing params":
        write_pair(src, "b.wav", params=False)
        return "b.wav"
    if case == "params for another file":
        write_pair(src, "b.wav")
        (src / "b.params").write_text(params_json(ParamFile("c.wav", {"rate": constant_param(0.5, 0.5)})))
        return "b.params"
    if case == "params out of range":
        write_pair(src, "b.wav", value=1.5)
        return "b.params"
    if case == "unreadable params":
        write_pair(src, "b.wav")
        (src / "b.params").write_text("{")
        return "b.params"
    if case == "other param names":
        write_pair(src, "b.wav")
        doc = json.loads((src / "b.params").read_text())
        doc["pitch"] = doc.pop("rate")
        (src / "b.params").write_text(json.dumps(doc))
        return "b.params"
    if case == "rate mismatch":
        write_pair(src, "b.wav", sr=16000)
        return "b.wav"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "corrupt",
        "stereo",
        "missing params",
        "params for another file",
        "params out of range",
        "unreadable params",
        "other param names",
        "rate mismatch",
    ],
)
def test_bad_file_is_named_and_nothing_is_written(tmp_path, store, case):
    src = tmp_path / "src"
    bad = bad_case(src, case)
    with pytest.raises(InvalidArgument) as err:
        import_dataset(src, store, name="bad")
    assert str(src / bad) in err.value.message, err.value.message
    assert_store_empty(store)


def test_stereo_with_a_mono_policy_is_downmixed(tmp_path, store):
    src = tmp_path / "src"
    write_pair(src, "a.wav", channels=2)
    aid = import_dataset(src, store, name="st", mono="mean", require_params=True)
    assert sf.info(io.BytesIO(store.get_bytes(f"{aid}/a.wav"))).channels == 1


def test_require_params(tmp_path, store):
    src = tmp_path / "src"
    write_pair(src, "a.wav", params=False)
    with pytest.raises(InvalidArgument, match="a.wav.*no matching .params"):
        import_dataset(src, store, name="x", require_params=True)
    assert_store_empty(store)


def test_empty_folder_and_existing_name(tmp_path, store):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgument, match="no audio files"):
        import_dataset(tmp_path / "empty", store, name="x")
    src = tmp_path / "src"
    write_pair(src, "a.wav")
    import_dataset(src, store, name="x")
    with pytest.raises(AlreadyExists):
        import_dataset(src, store, name="x")
    write_pair(src, "b.wav")
    import_dataset(src, store, name="x", overwrite=True)
    assert len(list_dataset_files(store, "x")) == 2


class FailingStore:
    """The real store, except that the third upload fails (a network drop halfway through an import)."""

    def __init__(self, inner):
        self.inner, self.puts = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_file(self, key, path, **kw):
        self.puts += 1
        if self.puts == 3:
            raise OSError("connection reset")
        return self.inner.put_file(key, path, **kw)


def test_failed_upload_leaves_nothing(tmp_path, store):
    src = tmp_path / "src"
    for name in ("a.wav", "b.wav", "c.wav"):
        write_pair(src, name)
    with pytest.raises(OSError):
        import_dataset(src, FailingStore(store), name="x")
    assert_store_empty(store)
