"""The live player on a real audio server: PortAudio -> JACK on its dummy backend (no sound card needed).

A separate JACK client (jack_rec) records what the player sends, so "samples arrive" is checked at the server, and
the dummy backend's own clock makes a late generator underrun for real.
"""

from __future__ import annotations

import io
import subprocess
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from smf.common.errors import ResourceExhausted
from smf.rnn.generate import Generator
from smf.rnn.knobs import Knobs
from smf.rnn.live import LiveVoice
from smf.rnn.model import RNNConfig, build_model
from smf.rnn.play import Ensemble, RingBuffer, check_voice_budget, local_chunks, play_device
from support import jackd

SR = 16000
NAMES = ["dim0", "dim1"]


@pytest.fixture(scope="module")
def jack():
    reason = jackd.available()
    if reason:
        pytest.skip(reason)
    with jackd.JackServer(rate=SR) as server:
        yield server


def tiny_ensemble(voices: int = 1) -> Ensemble:
    torch.manual_seed(0)
    model = build_model(RNNConfig(param_names=NAMES, hidden=16, layers=1)).eval()
    gen = Generator(model, precision="int8")  # the compiled loop: a tiny voice runs far above real time
    return Ensemble([LiveVoice(gen, [0.5, 0.5], seed=i) for i in range(voices)], NAMES, SR)


def kept(chunks, into: list):
    """The chunks, passed through, with a copy of each audio chunk kept (what the player was given)."""
    for audio, values in chunks:
        into.append(audio.copy())
        yield audio, values


def record(jack, seconds: float, path) -> subprocess.Popen:
    """jack_rec on the player's output port, once PortAudio has registered it."""
    deadline = time.monotonic() + 10
    while not (ports := [p for p in jack.ports() if p.startswith("PortAudio:")]):
        assert time.monotonic() < deadline, f"no PortAudio port on the JACK server: {jack.ports()}"
        time.sleep(0.02)
    cmd = ["jack_rec", "-f", str(path), "-d", str(seconds), "-b", "32", ports[0]]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_samples_reach_the_jack_server_and_none_underrun(jack, tmp_path):
    knobs, made = Knobs(NAMES), []
    chunks = kept(local_chunks(tiny_ensemble(), knobs, chunk=800, seconds=2.5), made)
    result: dict = {}
    player = threading.Thread(
        target=lambda: result.update(stats=play_device(chunks, SR, device=str(jack.portaudio_device()), blocksize=256))
    )
    player.start()
    rec = record(jack, 1.0, tmp_path / "heard.wav")
    assert rec.wait(20) == 0, rec.stdout.read() if rec.stdout else ""
    player.join(30)
    stats = result["stats"]

    sent = np.concatenate(made)
    assert stats.generated == len(sent) == int(2.5 * SR)
    assert stats.frames == len(sent), stats.summary()  # every frame made went to the device
    assert stats.underruns == 0, stats.summary()
    heard, sr = sf.read(tmp_path / "heard.wav", dtype="float32")
    heard = heard.reshape(len(heard), -1)[:, 0]
    assert sr == SR and len(heard) >= 0.9 * SR and np.abs(heard).max() > 0.01
    # what the server heard is a stretch of what the player was given, sample for sample (one offset throughout)
    # (jack_rec's last disk block may be cut short, so the probes stay inside its first 0.9 s)
    at = [stretch_offset(sent, heard[k : k + 64]) for k in (0, 5000, 14000)]
    assert None not in at and len({a - k for a, k in zip(at, (0, 5000, 14000), strict=True)}) == 1, at


def stretch_offset(sent: np.ndarray, probe: np.ndarray) -> int | None:
    """Where probe occurs in sent (to 32-bit PCM rounding), or None. Full-scale samples are left out: jack_rec's
    float -> PCM_32 conversion wraps +1.0 around to -1.0."""
    windows = np.lib.stride_tricks.sliding_window_view(sent, len(probe))
    errs = np.where(np.abs(windows) < 0.999, np.abs(windows - probe), 0.0).max(axis=1)
    return int(errs.argmin()) if errs.min() < 1e-6 else None


def test_a_generator_slower_than_real_time_is_counted(jack):
    def slow():  # 10 ms of audio every 30 ms: a third of real time
        for _ in range(25):
            time.sleep(0.03)
            yield np.full(160, 0.1, dtype=np.float32), [0.5, 0.5]

    stats = play_device(slow(), SR, device=str(jack.portaudio_device()), blocksize=256, buffer_ms=20)
    assert stats.generated == 25 * 160
    assert stats.empty > 5 and stats.missing_frames > 0.3 * stats.generated, stats.summary()
    assert f"underruns {stats.underruns}" in stats.summary()


def test_the_cli_plays_to_the_device(jack, trained_store, capsys, monkeypatch):
    from smf.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("normPitch=0.8 10\n"))
    args = ["rnn", "play", "-m", "rnn/live", "--seconds", "1", "--device", str(jack.portaudio_device())]
    assert main([*args, "--chunk-ms", "50", "--blocksize", "256", "--store", trained_store]) == 0
    err = capsys.readouterr().err
    assert "played 1.00 s (16000 frames" in err and "underruns 0 " in err, err
    assert "normPitch=0.800" in err  # the typed knob reached the voice

    assert main(["rnn", "play", "--list-devices"]) == 0
    assert "JACK" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory):
    from smf.cli import main
    from smf.common.store import open_store
    from smf.datasets import make_dataset

    store = open_store(f"file://{tmp_path_factory.mktemp('rnn-play')}/store")
    make_dataset("tones", store, n_files=2, duration=0.3)
    tiny = ["--hidden", "16", "--layers", "1", "--seq-len", "32", "--batch", "2", "--steps", "1"]
    args = ["rnn", "train", "--data", "datasets/tones", "--prop", "normPitch", "-n", "live", *tiny]
    assert main([*args, "--device", "cpu", "--store", store.uri]) == 0
    return store.uri


def test_voices_past_the_budget_are_refused(trained_store, capsys, monkeypatch):
    from smf.cli import main

    assert check_voice_budget(8) == 8
    with pytest.raises(ResourceExhausted, match="voice budget is 8"):
        check_voice_budget(9)
    monkeypatch.setenv("SMF_MAX_VOICES", "2")
    assert main(["rnn", "play", "-m", "rnn/live", "--voices", "3", "--wav", "x.wav", "--store", trained_store]) != 0
    assert "--voices: 3 voices asked, the voice budget is 2" in capsys.readouterr().err


def test_ring_buffer_is_bounded_and_keeps_order():
    ring, stop = RingBuffer(100), threading.Event()
    data = np.arange(1000, dtype=np.float32)
    writer = threading.Thread(target=lambda: [ring.write(data[i : i + 37], stop) for i in range(0, 1000, 37)])
    writer.start()
    got, out = [], np.zeros(23, dtype=np.float32)
    while len(got) < 1000:
        assert ring.fill <= ring.capacity
        n = ring.read_into(out)
        got.extend(out[:n])
        time.sleep(0.0005)
    writer.join(5)
    np.testing.assert_array_equal(np.array(got), data)  # across many wrap-arounds
    assert ring.read_into(out) == 0  # empty: the reader does not wait


def test_remote_play_reaches_the_device(jack, trained_store, capsys, monkeypatch):
    """--remote: RnnService.Play's chunks (over loopback gRPC) into the same buffer, to the same device."""
    from smf.cli import main
    from smf.common.store import open_store
    from smf.rnn.server import SERVICE_NAME, RnnServicer, servicers
    from support.loopback import loopback_server

    monkeypatch.setenv("SMF_TOKEN", "play-token")
    monkeypatch.setattr("sys.stdin", io.StringIO("normPitch=0.8\n"))
    with loopback_server("rnn", servicers(RnnServicer(open_store(trained_store))), [SERVICE_NAME], "play-token") as srv:
        args = ["rnn", "play", "-m", "rnn/live", "--remote", f"127.0.0.1:{srv.port}", "--seconds", "1"]
        assert main([*args, "--device", str(jack.portaudio_device()), "--chunk-ms", "50"]) == 0
    err = capsys.readouterr().err
    assert "played 1.00 s (16000 frames" in err and "underruns 0 " in err, err
    assert "normPitch=0.800" in err
