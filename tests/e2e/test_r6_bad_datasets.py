"""R6: bad datasets given to `smf pipeline run` (corrupt wav, zero-length, not audio, silence only, stereo, wrong
rate, missing / extra params, empty folder) fail at the dataset stage with a clear error naming the file, and leave
nothing half-written: no dataset artifact, no stray objects, the state records the failure. With on_bad_file skip
the bad files are left out and reported."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile as sf
from smf.common.errors import SmfError
from smf.common.lineage import read_manifest
from smf.common.params import write_params
from smf.common.store import open_store
from smf.datasets import generate, list_dataset_files
from smf.pipeline.config import DEMO_CONFIG, parse_config
from smf.pipeline.pipeline import Pipeline, read_state
from smf.pipeline.services import Services

from .helpers import record_figures

RESULTS: dict = {}


def _good_folder(root):
    root.mkdir()
    for clip in generate("tones", n_files=4, seed=0, duration=0.3):
        sf.write(root / f"{clip.name}.wav", clip.audio, 16000, subtype="PCM_16")
        write_params(root / f"{clip.name}.params", clip.params)
    return sorted(root.glob("*.wav"))


def _corrupt(wavs):
    wavs[1].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not audio")
    return wavs[1].name


def _zero_length(wavs):
    wavs[2].write_bytes(b"")
    return wavs[2].name


def _not_audio(wavs):
    wavs[3].write_text("not a sound: a text file someone named .wav\n")
    return wavs[3].name


def _silence(wavs):
    a, sr = sf.read(wavs[1])
    sf.write(wavs[1], np.zeros_like(a), sr)
    return wavs[1].name


def _stereo(wavs):
    a, sr = sf.read(wavs[2])
    sf.write(wavs[2], np.stack([a, a], 1), sr)
    return wavs[2].name


def _wrong_rate(wavs):
    a, _ = sf.read(wavs[0])
    sf.write(wavs[0], a[::2], 8000)
    return wavs[0].name


def _missing_params(wavs):
    wavs[3].with_suffix(".params").unlink()
    return wavs[3].with_suffix(".params").name


def _extra_params(wavs):
    p = wavs[1].with_suffix(".params")
    doc = json.loads(p.read_text())
    doc["surprise"] = doc[next(k for k in doc if k != "meta")]
    p.write_text(json.dumps(doc))
    return p.name


def _empty(wavs):
    for f in wavs[0].parent.iterdir():
        f.unlink()
    return wavs[0].parent.name


CASES = {
    "corrupt-wav": _corrupt,
    "zero-length": _zero_length,
    "not-audio": _not_audio,
    "silence-only": _silence,
    "stereo": _stereo,
    "wrong-rate": _wrong_rate,
    "missing-params": _missing_params,
    "extra-params": _extra_params,
    "empty-folder": _empty,
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_dataset_fails_clearly_and_writes_nothing(tmp_path, case):
    wavs = _good_folder(tmp_path / "sounds")
    culprit = CASES[case](wavs)
    raw = json.loads(DEMO_CONFIG.read_text())
    raw.update(name="bad", dataset={"folder": str(tmp_path / "sounds"), "name": "mine", "sample_rate": None})
    raw["dataset"].pop("sample_rate")
    raw["gan"] = str(DEMO_CONFIG.parent / raw["gan"])
    cfg = parse_config(raw, source="bad.json")
    store = open_store(f"file://{tmp_path}/store")
    t0 = time.monotonic()
    with pytest.raises(SmfError) as err:
        # no services are needed: the dataset stage runs in the pipeline process and must fail before any call
        Pipeline(cfg, store, Services(targets={}, token=None), log=lambda m: None).run()
    seconds = time.monotonic() - t0
    message = err.value.message
    assert culprit in message, f"{case}: error does not name {culprit}: {message}"
    keys = store.list()
    assert not [k for k in keys if k.startswith("datasets/")], keys
    assert keys == ["pipelines/bad/state.json"], keys
    state = read_state(store, "bad")
    assert state["status"] == "failed" and state["stages"]["dataset"]["state"] == "failed"
    assert culprit in state["error"]
    RESULTS[case] = {
        "error": message,
        "seconds": round(seconds, 3),
        "objects_left": len(keys) - 1,
        "code": err.value.code.name,
    }
    if len(RESULTS) == len(CASES):
        record_figures("R6", {"cases": RESULTS})


def test_good_folder_passes(tmp_path):
    """The control: the same folder untouched makes a dataset."""
    _good_folder(tmp_path / "sounds")
    raw = json.loads(DEMO_CONFIG.read_text())
    raw.update(name="good", dataset={"folder": str(tmp_path / "sounds"), "name": "mine"})
    raw["gan"] = str(DEMO_CONFIG.parent / raw["gan"])
    cfg = parse_config(raw, source="good.json")
    store = open_store(f"file://{tmp_path}/store")
    p = Pipeline(cfg, store, Services(targets={}, token=None), log=lambda m: None)
    out = p._stage("dataset", p._dataset_config(), [], p._run_dataset)
    assert out["dataset"] == "datasets/mine" and len(store.list("datasets/mine")) == 9


def test_skip_policy_imports_the_rest_and_reports_the_skipped(tmp_path):
    """on_bad_file: skip — the bad files are left out, listed in the dataset's manifest and the stage's log."""
    wavs = _good_folder(tmp_path / "sounds")
    bad = [_corrupt(wavs), _silence(wavs[1:])]  # tones_001 corrupt, tones_002 silent
    raw = json.loads(DEMO_CONFIG.read_text())
    raw.update(name="skip", dataset={"folder": str(tmp_path / "sounds"), "name": "mine", "on_bad_file": "skip"})
    raw["gan"] = str(DEMO_CONFIG.parent / raw["gan"])
    store = open_store(f"file://{tmp_path}/store")
    logs: list[str] = []
    p = Pipeline(parse_config(raw, source="skip.json"), store, Services(targets={}, token=None), log=logs.append)
    out = p._stage("dataset", p._dataset_config(), [], p._run_dataset)
    cfg = read_manifest(store, out["dataset"]).config
    assert [s["file"] for s in cfg["skipped"]] == bad and cfg["n_files"] == 2
    assert len(list_dataset_files(store, out["dataset"])) == 2
    assert any(f"skipped {bad[1]}: " in line and "is silent" in line for line in logs)
    assert any("2 files imported, 2 skipped" in line for line in logs)
