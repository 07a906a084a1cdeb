"""A user's folder as it is: every kind of file a real collection holds either imports (converted, reported) or
stops the import with an InvalidArgument naming the file and saying what to do — and nothing is half-written: no
dataset id in the store, no staging folder left behind. With on_bad_file="skip" the bad files are left out and
listed in the manifest (and printed by `smf datasets import`)."""

from __future__ import annotations

import io
import json
import os
import tempfile

import numpy as np
import pytest
import soundfile as sf
from smf.common.audio import READABLE_FORMATS
from smf.common.errors import InvalidArgument
from smf.common.lineage import read_manifest
from smf.common.store import open_store
from smf.datasets import import_dataset, list_dataset_files


def note(sr=16000, seconds=0.3, channels=1, freq=440.0):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.4 * np.sin(2 * np.pi * freq * t) * np.exp(-3 * t)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def plain_folder(root, n=3, sr=16000):
    """n plain mono notes, no .params (what a user who recorded some sounds has)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(root / f"note{i}.wav", note(sr, freq=220.0 * (i + 1)), sr)
    return root


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}/store")


@pytest.fixture
def staging_root(tmp_path, monkeypatch):
    """Where the importer stages: checked empty after every import, failed or not."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _corrupt(d):
    (d / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not audio")
    return "broken.wav", "not a readable sound file"


def _zero_length(d):
    (d / "empty.wav").write_bytes(b"")
    return "empty.wav", "empty file"


def _not_audio(d):
    (d / "notes.wav").write_text("shopping list: strings, rosin\n")
    return "notes.wav", "not a readable sound file"


def _silence(d):
    sf.write(d / "quiet.wav", np.zeros(8000), 16000)
    return "quiet.wav", "is silent"


BAD = {
    "corrupt": _corrupt,
    "zero-length": _zero_length,
    "not-audio-named-wav": _not_audio,
    "silence-only": _silence,
}  # stereo and a second rate: tests/datasets/test_importer.py (refused) and test_real_collection (policies)


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_file_is_named_with_what_to_do_and_nothing_is_written(tmp_path, store, staging_root, case):
    src = plain_folder(tmp_path / "src")
    culprit, why = BAD[case](src)
    with pytest.raises(InvalidArgument) as err:
        import_dataset(src, store, name="mine")
    assert err.value.field == str(src / culprit)
    assert why in err.value.message
    # what to do: a policy or an action, never a bare complaint
    assert "remove it" in err.value.message and "on_bad_file skip" in err.value.message
    assert store.list("") == []
    assert list(staging_root.iterdir()) == []


def test_skip_policy_leaves_bad_files_out_and_lists_them(tmp_path, store, staging_root, capsys):
    src = plain_folder(tmp_path / "src")
    culprits = sorted(BAD[c](src)[0] for c in ("corrupt", "zero-length", "not-audio-named-wav", "silence-only"))
    aid = import_dataset(src, store, name="mine", on_bad_file="skip")
    cfg = read_manifest(store, aid).config
    assert sorted(s["file"] for s in cfg["skipped"]) == culprits and cfg["n_skipped"] == 4
    assert cfg["n_files"] == 3 and len(list_dataset_files(store, aid)) == 3
    assert list(staging_root.iterdir()) == []
    from smf.cli import main

    assert main(["datasets", "import", str(src), "--name", "cli", "--on-bad-file", "skip", "--store", store.uri]) == 0
    out = capsys.readouterr().out
    assert all(f"skipped {c}: " in out for c in culprits) and "imported 3 audio files (0 with .params)" in out


def test_skip_policy_with_nothing_usable_is_an_error(tmp_path, store):
    src = tmp_path / "src"
    src.mkdir()
    _corrupt(src)
    _silence(src)
    with pytest.raises(InvalidArgument, match="none of its 2 audio files is usable") as err:
        import_dataset(src, store, name="mine", on_bad_file="skip")
    assert err.value.field == str(src)
    assert store.list("") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_unreadable_file_is_named(tmp_path, store):
    src = plain_folder(tmp_path / "src")
    (src / "note1.wav").chmod(0)
    try:
        with pytest.raises(InvalidArgument, match="permission denied") as err:
            import_dataset(src, store, name="mine")
        assert err.value.field == str(src / "note1.wav")
    finally:
        (src / "note1.wav").chmod(0o644)
    assert store.list("") == []


def test_folder_with_no_audio_names_the_folder(tmp_path, store):
    src = tmp_path / "photos"
    src.mkdir()
    (src / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a sound")
    (src / "readme.txt").write_text("hello")
    with pytest.raises(InvalidArgument, match="no audio files") as err:
        import_dataset(src, store, name="mine")
    assert err.value.field == str(src)


def test_real_collection_imports_as_it_is(tmp_path, store):
    """Stereo 44.1 kHz, 48 kHz mono, 24-bit flac, aiff, ogg, mp3 (if libsndfile decodes it), a 60 s recording,
    nested folders and odd names: one import with a rate and a downmix policy, every file converted."""
    src = tmp_path / "my sounds"
    (src / "strings" / "cello é").mkdir(parents=True)
    sf.write(src / "strings" / "violin A4 (take 2).wav", note(44100, channels=2), 44100)
    sf.write(src / "strings" / "cello é" / "C2 ♪.wav", note(48000, freq=65.4), 48000)
    sf.write(src / "hi-res.flac", note(96000), 96000, subtype="PCM_24")
    sf.write(src / "bell.aiff", note(22050, freq=880.0), 22050)
    sf.write(src / "pluck.ogg", note(16000), 16000)
    sf.write(src / "rain.wav", 0.1 * np.random.default_rng(0).standard_normal(60 * 16000), 16000)
    if "MP3" in READABLE_FORMATS:
        sf.write(src / "voice.mp3", note(16000), 16000, format="MP3")
    aid = import_dataset(src, store, name="mine", sample_rate=16000, mono="mean")
    names = sorted(k.split("/", 2)[2] for k, _ in list_dataset_files(store, aid))
    expected = ["bell.wav", "hi-res.wav", "pluck.wav", "rain.wav", "strings/cello__/C2__.wav"]
    expected += ["strings/violin_A4__take_2_.wav"] + (["voice.wav"] if "MP3" in READABLE_FORMATS else [])
    assert names == sorted(expected)
    cfg = read_manifest(store, aid).config
    assert cfg["sample_rate"] == 16000 and cfg["params"] == [] and cfg["n_skipped"] == 0
    # the long recording is kept whole: cutting it into clips is the GAN loader's work
    assert sf.info(io.BytesIO(store.get_bytes(f"{aid}/rain.wav"))).frames == 60 * 16000


def test_odd_names_that_collide_are_named(tmp_path, store):
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "a b.wav", note(), 16000)
    sf.write(src / "a_b.wav", note(), 16000)
    with pytest.raises(InvalidArgument, match="would be stored as 'a_b.wav'") as err:
        import_dataset(src, store, name="mine")
    assert "a b.wav" in err.value.message and "a_b.wav" in err.value.message


# --- the same folder handed to `smf gan train` as loaderConfig.data_path (the original configs' way) ------------------
def _gan_config(tmp_path, folder, **model) -> str:
    from support.tiny_gan import tiny_dict

    cfg = tiny_dict(steps=(1, 1, 1, 1))
    cfg["loaderConfig"]["data_path"] = str(folder)
    cfg["modelConfig"].update(model)
    path = tmp_path / "gan.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_gan_train_takes_a_plain_folder(tmp_path, store, capsys, one_thread):
    from smf.cli import main

    src = plain_folder(tmp_path / "src", n=4)
    assert main(["gan", "train", "-n", "plain", _gan_config(tmp_path, src), "--store", store.uri]) == 0
    captured = capsys.readouterr()
    assert "4 audio files, 16000 Hz, mono" in captured.err and "no .params" in captured.err
    assert "succeeded: " in captured.out


@pytest.mark.parametrize("case", ["corrupt", "ac-gan-without-params"])
def test_gan_train_refuses_a_bad_folder_before_writing_anything(tmp_path, store, capsys, case):
    from smf.cli import main

    src = plain_folder(tmp_path / "src")
    if case == "corrupt":
        culprit, why = _corrupt(src)
        cfg = _gan_config(tmp_path, src)
    else:
        culprit, why = "note0.wav", "has no .params beside it, but an AC-GAN"
        cfg = _gan_config(tmp_path, src, ac_gan=True, attribKeysOrder={"pitch": 0})
    assert main(["gan", "train", "-n", "bad", cfg, "--store", store.uri]) != 0
    err = capsys.readouterr().err
    assert f"{src / culprit}: " in err and why in err
    assert store.list("") == []  # not even gan/bad/config.json
