"""smf.common.training, the run writer both trainers use: --out/--run, checkpoint listing and rotation, progress.json,
the loss plot, the stop signal (any rank stops every rank) and the exit codes. Pure: a file store in tmp_path."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from smf.common.distributed import Dist
from smf.common.errors import InvalidArgument, NotFound, Unavailable
from smf.common.training import (
    EXIT_BUG,
    EXIT_DONE,
    EXIT_USER_ERROR,
    RunClock,
    RunWriter,
    StopSignal,
    checkpoint_keys,
    checkpoint_steps,
    exit_code,
    loss_plot,
    read_checkpoint,
    run_location,
)

PNG = b"\x89PNG\r\n\x1a\n"


def test_run_location_from_out_uri_bare_id_or_run_name(file_store):
    store, run_id = run_location(file_store.key_uri("rnn/a"), kind="rnn")
    assert (store.uri, run_id) == (file_store.uri, "rnn/a")
    store, run_id = run_location("rnn/b/", store=file_store.uri, kind="rnn")
    assert (store.uri, run_id) == (file_store.uri, "rnn/b")
    store, run_id = run_location(None, store=file_store.uri, run="c", kind="gan")
    assert (store.uri, run_id) == (file_store.uri, "gan/c")
    with pytest.raises(InvalidArgument) as exc:
        run_location(None, kind="gan")
    assert exc.value.field == "--out"


def test_checkpoints_listed_by_step_number_and_rotated(file_store):
    run = RunWriter(file_store, "rnn/r", kind="rnn", keep=2)
    assert run.latest_checkpoint() is None
    for step in (9, 10, 100):
        key = run.save_checkpoint(step, {"step": step, "w": torch.full((2,), float(step))})
        assert key == f"rnn/r/ckpt/step-{step}.pt"
    file_store.put_bytes("rnn/r/ckpt/notes.txt", b"not a checkpoint")
    file_store.put_bytes("rnn/r10/ckpt/step-1.pt", b"another run's")  # a prefix is a folder, not a string prefix
    assert checkpoint_steps(file_store, "rnn/r") == [10, 100]  # step-9 rotated out; numeric, not string, order
    assert checkpoint_keys(file_store, "rnn/r") == ["rnn/r/ckpt/step-10.pt", "rnn/r/ckpt/step-100.pt"]
    key, ck = run.latest_checkpoint()
    assert key == "rnn/r/ckpt/step-100.pt" and ck["step"] == 100
    torch.testing.assert_close(read_checkpoint(file_store, key)["w"], torch.full((2,), 100.0))
    with pytest.raises(NotFound):
        read_checkpoint(file_store, "rnn/r/ckpt/step-9.pt")


def test_keep_zero_keeps_every_checkpoint(file_store):
    run = RunWriter(file_store, "gan/all", kind="gan", keep=0)
    for step in range(1, 6):
        run.save_checkpoint(step, {"step": step})
    assert checkpoint_steps(file_store, "gan/all") == [1, 2, 3, 4, 5]


def test_checkpoints_load_weights_only(file_store):
    """A checkpoint holding an arbitrary object is refused, not unpickled."""
    RunWriter(file_store, "rnn/evil", kind="rnn").save_checkpoint(1, {"step": 1, "obj": object()})
    with pytest.raises(Exception, match="[Ww]eights only"):
        read_checkpoint(file_store, "rnn/evil/ckpt/step-1.pt")


def test_progress_json_names_the_run_and_its_result_only_when_succeeded(file_store):
    run = RunWriter(file_store, "rnn/p", kind="rnn")
    p = run.progress("running", step=3, total=10, loss=1.5, message="step 3/10", eta_seconds=7.0, device="cpu")
    stored = json.loads(file_store.get_bytes("rnn/p/progress.json"))
    assert stored == p
    assert p["run"] == "rnn/p" and p["state"] == "running" and (p["step"], p["total"]) == (3, 10)
    assert p["eta_seconds"] == 7.0 and p["device"] == "cpu" and p["result_uris"] == []
    assert isinstance(p["updated_at"], float)  # Unix seconds: services compare it with when they launched the job
    done = run.progress("succeeded", step=10, total=10, loss=1.0, message="done")
    assert done["result_uris"] == [file_store.key_uri("rnn/p")]


def test_fail_records_the_error_and_its_code(file_store):
    RunWriter(file_store, "gan/f", kind="gan").fail(InvalidArgument("loaderConfig.data_path", "no audio"), step=0)
    p = json.loads(file_store.get_bytes("gan/f/progress.json"))
    assert p["state"] == "failed" and p["error_code"] == "INVALID_ARGUMENT" and p["step"] == 0
    assert p["error"] == "loaderConfig.data_path: no audio"


def test_only_rank_0_writes(file_store):
    """On another rank every write is a no-op (its store is read-only: a write there would raise)."""
    rank1 = Dist(rank=1, world_size=2)
    run = RunWriter(rank1.store(file_store), "rnn/ddp", kind="rnn", dist=rank1)
    assert run.save_checkpoint(4, {"step": 4}) == "rnn/ddp/ckpt/step-4.pt"
    run.put_json("config.json", {})
    run.put_png("plots/loss.png", PNG)
    assert run.progress("running", step=4, total=8, loss=None, message="")["step"] == 4
    run.fail(InvalidArgument("x", "y"))
    run.commit(config={}, inputs=[])
    assert file_store.list("rnn/ddp") == []


def test_commit_lists_the_run_files(file_store):
    run = RunWriter(file_store, "rnn/c", kind="rnn")
    run.save_checkpoint(2, {"step": 2})
    run.put_json("config.json", {"a": 1})
    run.commit(config={"a": 1}, inputs=["datasets/tones"])
    manifest = json.loads(file_store.get_bytes("rnn/c/manifest.json"))
    assert manifest["kind"] == "rnn" and manifest["inputs"] == ["datasets/tones"]
    assert {"ckpt/step-2.pt", "config.json"} <= set(manifest["files"])


def test_loss_plot_is_a_png():
    steps = list(range(1, 41))
    assert loss_plot(steps, {"batch loss": [1 / s for s in steps]}, smooth=True).startswith(PNG)
    gan = loss_plot(steps, {"loss_d": steps, "loss_g": steps}, title="t", right=("lsd", [0, 40], [1.0, 0.5]))
    assert gan.startswith(PNG)


def test_stop_signal_exit_codes():
    stop = StopSignal()
    assert not stop.requested and stop.exit_code() == EXIT_DONE
    stop(signal.SIGINT, None)  # as the handler is called
    stop.set(signal.SIGTERM)  # the first signal is the one reported
    assert stop.requested and stop.is_set() and stop.exit_code() == 128 + signal.SIGINT == 130
    assert StopSignal().any_rank(Dist()) is False


def test_installed_stop_signal_catches_sigterm():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        stop = StopSignal().install()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.any_rank(Dist()) and stop.exit_code() == 143
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])


def test_a_signal_on_any_rank_stops_every_rank():
    class OtherRankSawIt(Dist):
        def any(self, flag: bool) -> bool:  # what the all-reduce returns when another rank's flag is set
            return True

    stop = StopSignal()
    assert stop.any_rank(OtherRankSawIt(rank=0, world_size=2))
    assert stop.requested and stop.exit_code() == 128 + signal.SIGTERM  # torchrun forwards SIGTERM


def test_exit_codes_of_errors():
    assert exit_code(InvalidArgument("--config", "bad")) == EXIT_USER_ERROR == 2
    assert exit_code(NotFound("no such dataset")) == EXIT_USER_ERROR
    assert exit_code(Unavailable("store down")) == EXIT_BUG == 1  # a retry may help: not a user error
    assert exit_code(RuntimeError("bug")) == EXIT_BUG


def test_run_clock():
    clock = RunClock(start_step=5)
    assert clock.eta(5, 10) is None and clock.rate(5) == 0.0
    clock.t0 -= 2.0  # two seconds ago
    assert 1.9 < clock.elapsed() < 3.0
    clock.elapsed = lambda: 2.0  # the arithmetic on a fixed clock (a loaded box once took 0.26 s between two calls)
    assert clock.rate(9) == pytest.approx(2.0)
    assert clock.eta(9, 13) == pytest.approx(2.0)
