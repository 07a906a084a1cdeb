"""`smf rnn train / ls / export / play` in local mode against a file store: the same run functions the service
calls (smf.rnn.runs), no servicer built."""

from __future__ import annotations

import io

import pytest
import soundfile as sf
import torch
from smf.cli import main
from smf.common.store import open_store

TINY = ["--hidden", "16", "--layers", "1", "--seq-len", "32", "--batch", "2", "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from smf.datasets import make_dataset

    store = open_store(f"file://{tmp_path_factory.mktemp('rnn-cli')}/store")
    make_dataset("tones", store, n_files=3, duration=0.3)
    s = ["--store", store.uri]
    args = ["rnn", "train", "--data", "datasets/tones", "--prop", "normPitch", "-n", "cli", "--steps", "2", *TINY]
    assert main([*args, "--device", "cpu", *s]) == 0
    return store, s


def test_ls_export_and_play_use_the_run_functions(trained, tmp_path, capsys, monkeypatch):
    store, s = trained
    capsys.readouterr()
    assert main(["rnn", "ls", *s]) == 0
    out = capsys.readouterr().out
    assert "rnn/cli  params=['normPitch']  H16 L1  steps=[2]" in out and "succeeded" in out

    assert main(["rnn", "export", "-m", "cli", *s]) == 0
    assert capsys.readouterr().out.strip() == store.key_uri("rnn/cli/export/model.ts")
    torch.jit.load(io.BytesIO(store.get_bytes("rnn/cli/export/model.ts")))

    monkeypatch.setattr("sys.stdin", io.StringIO("normPitch=0.8 10\n"))
    wav = tmp_path / "live.wav"
    assert main(["rnn", "play", "-m", "rnn/cli", "--seconds", "0.05", "--chunk-ms", "10", "--out", str(wav), *s]) == 0
    audio, sr = sf.read(wav)
    assert sr == 16000 and len(audio) >= 0.05 * sr


def test_train_checks_what_the_service_checks(trained, capsys):
    _, s = trained
    assert main(["rnn", "train", "--data", "datasets/tones", "--prop", "normPitch", "--steps", "0", *s]) != 0
    assert "steps: must be >= 1" in capsys.readouterr().err
