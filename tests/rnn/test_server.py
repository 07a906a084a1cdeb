"""RnnService over real loopback gRPC, a real store and real training subprocesses (smf.common.jobs, local):
train -> checkpoint -> resume -> generate, live play with mid-stream updates, export, errors as status codes."""

from __future__ import annotations

import json
import queue
import time

import numpy as np
import pytest
import torch
from smf.common.errors import Cancelled, InvalidArgument, NotFound, ResourceExhausted
from smf.common.store import open_store
from smf.rnn import conditioning as cond
from smf.rnn.client import RnnClient
from smf.rnn.server import SERVICE_NAME, RnnServicer, servicers
from smf.rnn.train import checkpoint_steps, load_checkpoint
from support.loopback import loopback_server

TOKEN = "rnn-test-token"
TINY = {"hidden": 16, "layers": 1, "seq_len": 64, "batch": 4, "checkpoint_every": 2}
EXTRA = {"device": "cpu", "progress_every": 1}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from smf.datasets import make_dataset

    root = tmp_path_factory.mktemp("rnn-server")
    store = open_store(f"file://{root}/store")
    make_dataset("tones", store, n_files=3, duration=0.3)
    mp = pytest.MonkeyPatch()
    mp.setenv("SMF_JOB_DIR", str(root / "jobs"))
    mp.setenv("OMP_NUM_THREADS", "1")  # the 2-core box: one thread per trainer
    servicer = RnnServicer(store)
    srv = loopback_server("rnn", servicers(servicer), [SERVICE_NAME], TOKEN).start()
    client = RnnClient(f"127.0.0.1:{srv.port}", token=TOKEN)
    yield store, client, servicer
    client.close()
    srv.stop()
    mp.undo()


@pytest.fixture(scope="module")
def trained(env):
    """Train 4 steps, then resume the same run to 6 (a second job); both over gRPC."""
    store, rnn, _ = env
    op = rnn.start_training("datasets/tones", ["normPitch"], run_id="tones", steps=4, **TINY, **EXTRA)
    assert op.metadata["run"] == "rnn/tones"
    seen = []
    done = rnn.wait(op.id, on_progress=lambda o: seen.append(o.progress.step), timeout=300)
    assert done.result_uris == [store.key_uri("rnn/tones")]
    assert max(seen) == 4 and done.progress.total == 4
    assert checkpoint_steps(store, "rnn/tones") == [2, 4]
    first = load_checkpoint(store, "rnn/tones")["metrics"]["loss"]

    op = rnn.start_training("datasets/tones", ["normPitch"], run_id="tones", steps=6, **TINY, **EXTRA)
    rnn.wait(op.id, timeout=300)
    ck = load_checkpoint(store, "rnn/tones")
    assert ck["step"] == 6 and len(ck["metrics"]["loss"]) == 6
    assert ck["metrics"]["loss"][:4] == first  # resumed: history kept, counting continued
    return "rnn/tones"


def test_list_models(env, trained):
    _, rnn, _ = env
    models = {m.ref.id: m for m in rnn.list_models()}
    m = models[trained]
    assert list(m.param_names) == ["normPitch"] and list(m.steps) == [2, 4, 6]
    assert m.state == "succeeded" and m.hidden == 16 and m.sample_rate == 16000


def test_generate_streamed_stored_and_reproducible(env, trained):
    store, rnn, _ = env
    arr = cond.columns(cond.ramp(0.0, 1.0))  # [1000, 1]
    result, audio = rnn.generate(trained, arr, 0.05, seed=7, voices=2, stream=True)
    assert audio.shape == (2, 800) and audio.dtype == np.float32
    assert result.voices == 2 and result.samples == 800 and len(result.wav_uris) == 2
    from smf.common.audio import load_audio

    wav, sr = load_audio(store.get_bytes(result.wav_uris[0].split(store.uri + "/")[1]))
    assert sr == 16000 and np.allclose(wav.numpy(), audio[0], atol=1 / 32768 + 1e-6)  # PCM_16 of the stream
    _, audio2 = rnn.generate(trained, arr, 0.05, seed=7, voices=2, stream=True)
    np.testing.assert_array_equal(audio, audio2)
    _, other = rnn.generate(trained, arr, 0.05, seed=8, voices=2, stream=True)
    assert not np.array_equal(audio, other)
    manifest = json.loads(store.get_bytes(f"{result.render.id}/manifest.json"))
    assert manifest["inputs"] == [trained] and manifest["config"]["param_names"] == ["normPitch"]
    # a .npy in the store works the same as an inline array
    store.put_bytes("arrays/ramp.npy", cond.array_bytes(arr))
    _, audio3 = rnn.generate(trained, "arrays/ramp.npy", 0.05, seed=7, voices=2, stream=True)
    np.testing.assert_array_equal(audio, audio3)


def test_bad_arrays_are_invalid_argument_naming_params(env, trained):
    _, rnn, _ = env
    with pytest.raises(InvalidArgument, match=r"2 columns.*\['normPitch'\]"):
        rnn.generate(trained, np.zeros((10, 2)), 0.01)
    with pytest.raises(InvalidArgument, match=r"NaN.*normPitch"):
        rnn.generate(trained, np.full((10, 1), np.nan), 0.01)
    with pytest.raises(InvalidArgument, match=r"\[0, 1\].*normPitch"):
        rnn.generate(trained, np.full((10, 1), 1.5), 0.01)
    with pytest.raises(InvalidArgument, match="duration"):
        rnn.generate(trained, np.zeros((10, 1)), 0.0)
    with pytest.raises(NotFound):
        rnn.generate("rnn/nope", np.zeros((10, 1)), 0.01)


def test_play_live_updates_take_effect_next_chunk(env, trained):
    _, rnn, _ = env
    q: queue.Queue = queue.Queue()
    chunks = []
    for audio, values in rnn.play(
        trained, [0.2], updates=q, chunk_samples=160, seed=3, max_ahead_ms=20, max_seconds=0.1
    ):
        chunks.append((audio, values))
        if len(chunks) == 2:
            q.put({"normPitch": 0.9})
    q.put(None)
    assert len(chunks) == 10 and all(a.shape == (160,) for a, _ in chunks)
    assert chunks[0][1] == pytest.approx([0.2])
    assert chunks[-1][1] == pytest.approx([0.9])
    # a bad update ends the stream with INVALID_ARGUMENT naming the params
    with pytest.raises(InvalidArgument, match="normPitch"):
        for _ in rnn.play(trained, [0.2], updates=[{"loudness": 0.5}], chunk_samples=160, max_seconds=0.5):
            pass


def test_play_streams_past_the_voice_budget_are_refused(env, trained, monkeypatch):
    import threading

    _, rnn, servicer = env
    monkeypatch.setattr(servicer, "max_voices", 1)
    monkeypatch.setattr(servicer, "voices", threading.BoundedSemaphore(1))
    q: queue.Queue = queue.Queue()
    playing = rnn.play(trained, [0.2], updates=q, chunk_samples=160, max_ahead_ms=20)
    next(iter(playing))  # one voice holds the budget
    with pytest.raises(ResourceExhausted, match="all 1 live voices"):
        next(iter(rnn.play(trained, [0.5], chunk_samples=160, max_seconds=0.05)))
    q.put(None)  # the first stream ends: its voice is given back
    playing.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            assert len(list(rnn.play(trained, [0.5], chunk_samples=160, max_seconds=0.02))) >= 1
            break
        except ResourceExhausted:
            time.sleep(0.1)
    else:
        pytest.fail("the budget was not given back when the first stream ended")


def test_export_matches_service_for_same_seed(env, trained):
    store, rnn, _ = env
    uri = rnn.export(trained)
    assert uri == store.key_uri(f"{trained}/export/model.ts")
    module = torch.jit.load(__import__("io").BytesIO(store.get_bytes(f"{trained}/export/model.ts")))
    arr = cond.columns(cond.glide([0.1, 0.9, 0.3], 50))
    # the service's generator may use the compiled kernel; compare against the torch backend's exact samples
    from smf.rnn.generate import Generator
    from smf.rnn.train import load_run

    model, _ = load_run(store, trained)
    ours = Generator(model, backend="torch").generate(arr, 0.02, seed=5)
    theirs = module.generate(torch.from_numpy(arr), 0.02, 5).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert list(module.param_names) == ["normPitch"]


def test_training_errors_and_cancel(env):
    store, rnn, _ = env
    # a param the dataset lacks: the job fails validation and the operation says which file
    op = rnn.start_training("datasets/tones", ["rate"], run_id="bad", steps=2, **TINY, **EXTRA)
    with pytest.raises(InvalidArgument, match=r"datasets/tones/tones_000\.wav.*'rate'"):
        rnn.wait(op.id, timeout=300)
    with pytest.raises(InvalidArgument, match="unknown keys.*'hiden'"):
        rnn.start_training("datasets/tones", ["normPitch"], hiden=3)
    # cancel = SIGTERM: the trainer saves a checkpoint where it stopped
    op = rnn.start_training(
        "datasets/tones", ["normPitch"], run_id="long", steps=100000, **{**TINY, "checkpoint_every": 100000}, **EXTRA
    )
    deadline = time.monotonic() + 120
    while not store.exists("rnn/long/progress.json") and time.monotonic() < deadline:
        time.sleep(0.2)
    from smf.common.client import call
    from smf.common.v1 import operations_pb2, operations_pb2_grpc

    ops = operations_pb2_grpc.OperationServiceStub(rnn.channel)
    call(ops.CancelOperation, operations_pb2.CancelOperationRequest(operation_id=op.id))
    with pytest.raises(Cancelled):
        rnn.wait(op.id, timeout=120)
    steps = checkpoint_steps(store, "rnn/long")
    assert len(steps) == 1 and 0 < steps[0] < 100000
    assert json.loads(store.get_bytes("rnn/long/progress.json"))["state"] == "stopped"


def test_int8_service_generates_reproducibly(env, trained):
    """A service started with --precision int8 serves the same model through the int8 loop: valid, seeded audio."""
    store, _, _ = env
    servicer = RnnServicer(store, precision="int8")
    srv = loopback_server("rnn", servicers(servicer), [SERVICE_NAME], TOKEN).start()
    try:
        with RnnClient(f"127.0.0.1:{srv.port}", token=TOKEN) as rnn:
            arr = cond.columns(cond.ramp(0.0, 1.0))
            _, a = rnn.generate(trained, arr, 0.05, seed=3, stream=True)
            _, b = rnn.generate(trained, arr, 0.05, seed=3, stream=True)
        assert a.shape == (1, 800) and np.isfinite(a).all() and np.abs(a).max() <= 1.0
        np.testing.assert_array_equal(a, b)
        loaded = next(iter(servicer.models._cache.values()))
        assert loaded.precision == "int8"
        assert loaded.generator.precision in ("int8", "fp32")  # fp32 only where the compiled loop cannot build
    finally:
        srv.stop()
