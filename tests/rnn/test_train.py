"""The training loop at tiny capacity on synthetic tensors: fused teacher forcing, learning, checkpoint/resume."""

import io
import json
import math

import pytest
import torch
from smf.common.errors import InvalidArgument
from smf.common.store import open_store
from smf.rnn.dataset import TrainFile, WindowDataset
from smf.rnn.model import RNNConfig, build_model, mulaw_decode, mulaw_encode
from smf.rnn.train import (
    TrainConfig,
    checkpoint_steps,
    load_checkpoint,
    stepwise_loss,
    tf_mask,
    train,
    window_loss,
)


def toy_files(cfg: RNNConfig, n_files=3, seconds=0.25):
    """Sines whose frequency follows the single conditioning param (200..800 Hz), different lengths per file."""
    files = []
    for i in range(n_files):
        n = int(seconds * cfg.sample_rate) + 37 * i
        p = i / max(n_files - 1, 1)
        t = torch.arange(n) / cfg.sample_rate
        audio = 0.6 * torch.sin(2 * math.pi * (200 + 600 * p) * t)
        files.append(TrainFile(f"toy{i}.wav", mulaw_encode(audio, cfg.classes).to(torch.int16), torch.full((n, 1), p)))
    return files


@pytest.mark.parametrize("generate", [[], ["rms"]])
def test_fused_teacher_forcing_equals_stepwise(generate):
    cfg = RNNConfig(param_names=["p"], hidden=16, layers=2, generate=generate, rate=100 if generate else None)
    torch.manual_seed(0)
    model = build_model(cfg)
    B, T = 3, 40
    x = torch.rand(B, T, cfg.input_size)
    target = torch.randint(0, cfg.classes, (B, T)) if not generate else torch.rand(B, T, 1)
    for tfr in (1.0, 0.7, 0.0):
        tf = tf_mask(T, tfr, torch.Generator().manual_seed(3))
        fused = window_loss(model, x, target, tf, generator=torch.Generator().manual_seed(5))
        step = stepwise_loss(model, x, target, tf, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(fused, step, atol=1e-5, rtol=1e-5)
        # gradients agree too (what training actually uses)
        g1 = torch.autograd.grad(fused, model.gru.weight_hh_l0)[0]
        g2 = torch.autograd.grad(step, model.gru.weight_hh_l0)[0]
        torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


def test_tf_mask_ratio():
    m = tf_mask(10000, 0.9, torch.Generator().manual_seed(0))
    assert bool(m[0]) and abs(float(m.float().mean()) - 0.9) < 0.02
    assert bool(tf_mask(5, 0.0)[0]) and not bool(tf_mask(5, 0.0)[1:].any())


def tiny_cfg(**kw):
    base = {
        "props": ["p"],
        "hidden": 24,
        "layers": 1,
        "seq_len": 64,
        "batch": 8,
        "lr": 5e-3,
        "steps": 60,
        "tfr": 0.9,
        "checkpoint_every": 20,
        "progress_every": 10,
        "device": "cpu",
        "data": "toy",
    }
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_loss_decreases_and_artifacts(tmp_path):
    store = open_store(f"file://{tmp_path}/store")
    cfg = tiny_cfg()
    data = WindowDataset(toy_files(cfg.model_config()), cfg.model_config(), cfg.seq_len)
    progress = train(cfg, store, "rnn/toy", data=data, log=lambda m: None)
    ck = load_checkpoint(store, "rnn/toy")
    losses = ck["metrics"]["loss"]
    assert len(losses) == 60 and ck["step"] == 60 and progress["state"] == "succeeded"
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert first > 4.5  # ~ln(256) at init
    assert last < first - 1.5, (first, last)
    assert checkpoint_steps(store, "rnn/toy") == [20, 40, 60]
    assert set(ck) == {"model", "optimizer", "step", "config", "rng", "metrics"}
    p = json.loads(store.get_bytes("rnn/toy/progress.json"))
    assert p["step"] == 60 and p["param_names"] == ["p"] and p["state"] == "succeeded"
    assert store.get_bytes("rnn/toy/plots/loss.png")[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads(store.get_bytes("rnn/toy/manifest.json"))
    assert manifest["kind"] == "rnn" and manifest["config"]["param_names"] == ["p"]
    assert "ckpt/step-60.pt" in manifest["files"]


def test_resume_continues_step_count_and_loss(tmp_path):
    store = open_store(f"file://{tmp_path}/store")
    cfg = tiny_cfg(steps=12, checkpoint_every=6, tfr=0.5)
    mcfg = cfg.model_config()
    data = WindowDataset(toy_files(mcfg), mcfg, cfg.seq_len)
    train(cfg, store, "rnn/straight", data=data, log=lambda m: None)
    straight = load_checkpoint(store, "rnn/straight")["metrics"]["loss"]

    half = tiny_cfg(steps=6, checkpoint_every=6, tfr=0.5)
    train(half, store, "rnn/resumed", data=data, log=lambda m: None)
    logs = []
    train(cfg, store, "rnn/resumed", data=data, log=logs.append)  # same run id, more steps -> resumes
    assert logs[0] == "resumed rnn/resumed at step 6"
    ck = load_checkpoint(store, "rnn/resumed")
    assert ck["step"] == 12 and len(ck["metrics"]["loss"]) == 12
    torch.testing.assert_close(torch.tensor(ck["metrics"]["loss"]), torch.tensor(straight), atol=1e-5, rtol=1e-5)
    # a different architecture under the same run id is refused rather than silently mixed
    with pytest.raises(InvalidArgument, match="hidden"):
        train(tiny_cfg(steps=14, hidden=32), store, "rnn/resumed", data=data, log=lambda m: None)


def test_lr_schedule_cosine_and_resume_mid_schedule(tmp_path):
    """lr_end: a cosine from lr at step 0 to lr_end at the last step; the rate follows the step, so a run resumed
    from a mid-schedule checkpoint (a crash) continues the same schedule and the same losses."""
    from smf.rnn.train import Trainer

    store = open_store(f"file://{tmp_path}/store")
    cfg = tiny_cfg(steps=12, checkpoint_every=6, lr_end=5e-4)
    mcfg = cfg.model_config()
    data = WindowDataset(toy_files(mcfg), mcfg, cfg.seq_len)
    t = Trainer(cfg, store, "rnn/sched", data=data, log=lambda m: None)
    rates = [t.lr_at(s) for s in range(12)]
    assert rates[0] == pytest.approx(5e-3) and rates[-1] == pytest.approx(5e-4)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert rates[6] == pytest.approx(5e-4 + 4.5e-3 * 0.5 * (1 + math.cos(math.pi * 6 / 11)))
    t.run()
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(rates[-1])
    straight = load_checkpoint(store, "rnn/sched")["metrics"]["loss"]
    store.delete("rnn/sched/ckpt/step-12.pt")  # as if it had crashed after the step-6 checkpoint
    logs = []
    train(cfg, store, "rnn/sched", data=data, log=logs.append)
    assert logs[0] == "resumed rnn/sched at step 6"
    resumed = load_checkpoint(store, "rnn/sched")["metrics"]["loss"]
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(straight), atol=1e-5, rtol=1e-5)
    assert Trainer(tiny_cfg(), store, "rnn/flat", data=data, log=lambda m: None).lr_at(59) == 5e-3  # None: constant


def test_config_errors_name_the_key():
    with pytest.raises(InvalidArgument, match="unknown keys.*'hiden'"):
        TrainConfig.from_dict({"props": ["p"], "hiden": 3})
    with pytest.raises(InvalidArgument, match="tfr"):
        TrainConfig.from_dict({"props": ["p"], "tfr": 1.5})
    with pytest.raises(InvalidArgument, match="preemphasis"):
        TrainConfig.from_dict({"props": ["p"], "preemphasis": 1.0})
    for bad in ({"lr_end": 1.0}, {"lr_end": -1e-4}, {"lr": 0.0}):
        with pytest.raises(InvalidArgument) as e:
            TrainConfig.from_dict({"props": ["p"], **bad})
        assert e.value.field in bad


def test_checkpoint_loads_weights_only(tmp_path):
    store = open_store(f"file://{tmp_path}/store")
    cfg = tiny_cfg(steps=2, checkpoint_every=2)
    data = WindowDataset(toy_files(cfg.model_config()), cfg.model_config(), cfg.seq_len)
    train(cfg, store, "rnn/w", data=data, log=lambda m: None)
    raw = store.get_bytes("rnn/w/ckpt/step-2.pt")
    ck = torch.load(io.BytesIO(raw), weights_only=True)
    model = build_model(RNNConfig(**ck["config"]["model"]))
    model.load_state_dict(ck["model"])


def test_source_filter_tier_fits_its_envelope_first_then_learns_and_resumes(tmp_path):
    """lpc: the envelope is fitted once (seconds) before step 1 and frozen; the excitation net learns; a resumed
    run keeps the checkpoint's envelope instead of fitting a new one."""
    store = open_store(f"file://{tmp_path}/store")
    cfg = tiny_cfg(lpc=4, tfr=1.0, steps=40, checkpoint_every=20)
    mcfg = cfg.model_config()
    assert mcfg.lpc == 4 and mcfg.input_size == 3 + 1
    files = [TrainFile(f.name, mulaw_decode(f.series.long()), f.cond) for f in toy_files(mcfg)]  # raw audio
    data = WindowDataset(files, mcfg, cfg.seq_len)
    logs: list[str] = []
    train(cfg, store, "rnn/sf", data=data, log=logs.append)
    assert logs[0].startswith("envelope: LPC order 4 fitted to")
    ck = load_checkpoint(store, "rnn/sf")
    env = ck["metrics"]["envelope"]
    assert env["mse"] < 0.5 * env["variance"]  # the envelope follows the param (three sines, three spectra)
    losses = ck["metrics"]["loss"]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.5
    fitted = {k: v for k, v in ck["model"].items() if k.startswith("envelope.")}
    assert fitted and all(torch.equal(v, load_checkpoint(store, "rnn/sf", 20)["model"][k]) for k, v in fitted.items())
    logs.clear()
    train(tiny_cfg(lpc=4, tfr=1.0, steps=50, checkpoint_every=20), store, "rnn/sf", data=data, log=logs.append)
    assert logs[0] == "resumed rnn/sf at step 40" and not any(m.startswith("envelope") for m in logs)
    after = load_checkpoint(store, "rnn/sf")["model"]
    assert all(torch.equal(after[k], v) for k, v in fitted.items())


def test_source_filter_config_errors_name_the_key():
    for bad, field in (
        ({"lpc": -1}, "lpc"),
        ({"lpc": 33}, "lpc"),
        ({"lpc": 8, "preemphasis": 0.9, "tfr": 1.0}, "lpc"),
        ({"lpc": 8, "tfr": 0.9}, "tfr"),
        ({"lpc": 8, "tfr": 1.0, "tfr_end": 0.5}, "tfr"),
        ({"lpc": 8, "tfr": 1.0, "generate": ["rms"], "rate": 125}, "lpc"),
    ):
        with pytest.raises(InvalidArgument) as e:
            TrainConfig.from_dict({"props": ["p"], **bad})
        assert e.value.field == field, (bad, e.value.field)
