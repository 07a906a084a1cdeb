"""Train one MTCRNN tier on wav + .params, writing checkpoints and progress to the artifact store.

    python -m smf.rnn.train --config run.json --out rnn/my-run            # store from $SMF_STORE
    python -m smf.rnn.train --config run.json --out file:///data/store/rnn/my-run

`run.json` holds TrainConfig fields ({"data": "datasets/tones", "props": ["normPitch"], "hidden": 256, ...}).
Running the same command again resumes from the newest checkpoint of the run (weights, Adam moments, step, RNG
streams and loss history), so a killed or preempted job simply continues. SIGTERM saves a checkpoint and exits
143 (exit codes and the run layout: smf.common.training, shared with the GAN trainer).

What the loop does, per step: draw random windows (conditioning pre-sampled at every sample time), draw one
teacher-forcing coin per time step (shared by the batch, as the reference; P(TF) = the current ratio, which
moves linearly from `tfr` to `tfr_end` for scheduled sampling), then run the window as alternating chunks:
a contiguous teacher-forced span goes through nn.GRU in ONE call (cuDNN's fused kernel on GPU); a free-running step
samples the model's previous output, feeds it back and advances one step. With tfr = 1 the whole window is one call.
The reference stepped the GRU one sample at a time even when every input was ground truth. In code: `Trainer`'s
`sample_batch` (the draws) and `loss` (`window_loss`), called by `train_step`; `train(...)` runs one Trainer.

Several GPUs (or CPU processes, gloo):
`torchrun --standalone --nproc-per-node 4 -m smf.rnn.train --config ... --out ...`.
`batch` stays the GLOBAL batch: every rank draws the whole batch's windows, TF coins and free-running noise from the
same generators and keeps its strided shard (smf.common.distributed), the model is wrapped in DistributedDataParallel
and rank 0 alone writes. Free-running samples are drawn by inverse CDF from one uniform per row of the global batch,
so even with tfr < 1 the training is the one-process training up to float summation order (tests/rnn/test_ddp.py),
and a checkpoint resumes with any number of processes.

Store layout: rnn/<run>/config.json, ckpt/step-<n>.pt ({model, optimizer, step, config, rng, metrics}),
progress.json, plots/loss.png, manifest.json (lists param_names and, for a parameter tier, generate; rewritten at
every checkpoint). Analysis controls (`rms`, `centroid`: smf.rnn.features) named in props or generate are computed
from the audio when the data is loaded; their dataset normalisation is stored as checkpoint["config"]["features"].

A parameter tier (MTCRNN's upper tier): {"generate": ["rms", "centroid"], "rate": 125, "props": ["normPitch"]}
learns control trajectories at 125 Hz from the user's params; an audio tier with {"props": ["rms", "centroid"]}
learns audio from those controls; smf.rnn.generate.generate_chain plays one into the other.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from smf.common.distributed import Dist, init, unwrap
from smf.common.errors import InvalidArgument, NotFound, SmfError
from smf.common.training import (
    EXIT_DONE,
    RunClock,
    RunWriter,
    StopSignal,
    checkpoint_steps,
    ckpt_key,
    exit_code,
    loss_plot,
    read_checkpoint,
    run_location,
)
from smf.rnn.model import RNNConfig, audio_input, build_model
from torch import Tensor

MAX_LPC = 32


@dataclass
class TrainConfig:
    data: str = "datasets/tones"  # artifact of wav + .params (datasets/<name>, grids/<id>), artifact URI, or folder
    props: list[str] = field(default_factory=lambda: ["normPitch"])  # conditioning params, in column order
    generate: list[str] = field(default_factory=list)  # [] = audio tier; else the control names a param tier makes
    rate: int | None = None  # param tier step rate (Hz)
    hidden: int = 256
    layers: int = 4
    classes: int = 256
    sample_rate: int = 16000
    seq_len: int = 512  # window length T (steps)
    batch: int = 32
    lr: float = 5e-4
    lr_end: float | None = None  # learning rate at the last step, reached by a cosine from lr (None = constant lr)
    steps: int = 10000
    tfr: float = 0.9  # teacher-forcing ratio at step 0 (SMF runs: constant 0.9)
    tfr_end: float | None = None  # scheduled sampling: ratio at the last step (None = constant)
    temperature: float = 1.0  # sampling temperature of free-running steps
    cross: float = 0.0  # fraction of windows that run across a file's end into a random next file (knob changes)
    preemphasis: float = 0.0  # audio tier: learn x[t] - p*x[t-1], generation undoes it (smf.rnn.model.preemphasis)
    lpc: int = 0  # audio tier: source-filter of this LPC order (smf.rnn.source_filter; 0 = off, 16 is LPCNet's)
    # audio tier: pitch oscillator of this many harmonics (smf.rnn.oscillator); None = auto: on (2) when normPitch is
    # among the props and the data's .params give its MIDI range, else off; 0 = off
    oscillator: int | None = None
    grad_clip: float | None = 1.0
    checkpoint_every: int = 1000
    progress_every: int = 10
    keep_checkpoints: int = 3  # newest N kept in the store (0 = keep all)
    seed: int = 0
    device: str = "auto"  # auto -> cuda if present else cpu

    def model_config(self) -> RNNConfig:
        return RNNConfig(
            param_names=list(self.props),
            hidden=self.hidden,
            layers=self.layers,
            classes=self.classes,
            sample_rate=self.sample_rate,
            generate=list(self.generate),
            rate=self.rate,
            preemphasis=self.preemphasis if not self.generate else 0.0,
            lpc=self.lpc if not self.generate else 0,
            oscillator=self.oscillator or 0,  # auto (None) is decided once the data is loaded
        )

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidArgument("config", f"unknown keys {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        cfg = cls(**d)
        if not cfg.props and not cfg.generate:
            raise InvalidArgument("props", "an audio tier needs at least one conditioning param (--prop)")
        for name in ("tfr", "tfr_end", "cross"):
            v = getattr(cfg, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise InvalidArgument(name, f"must be in [0, 1], got {v}")
        for name in ("hidden", "layers", "seq_len", "batch", "steps", "checkpoint_every", "progress_every"):
            if getattr(cfg, name) < 1:
                raise InvalidArgument(name, f"must be >= 1, got {getattr(cfg, name)}")
        if not cfg.lr > 0:
            raise InvalidArgument("lr", f"must be > 0, got {cfg.lr}")
        if cfg.lr_end is not None and not 0.0 <= cfg.lr_end <= cfg.lr:
            raise InvalidArgument(
                "lr_end", f"must be in [0, lr = {cfg.lr}] (a decay; null = constant), got {cfg.lr_end}"
            )
        if not 0.0 <= cfg.preemphasis < 1.0:
            raise InvalidArgument("preemphasis", f"must be in [0, 1) (0 = off; 0.9 is typical), got {cfg.preemphasis}")
        cfg._check_lpc()
        cfg._check_oscillator()
        if cfg.generate and not cfg.rate:
            raise InvalidArgument("rate", "a parameter tier needs its step rate (e.g. 125)")
        if cfg.rate and not cfg.generate:
            raise InvalidArgument(
                "rate",
                "only a parameter tier (--generate NAMES) has its own rate; the audio "
                f"tier runs at sample_rate ({cfg.sample_rate} Hz)",
            )
        overlap = sorted(set(cfg.props) & set(cfg.generate))
        if overlap:
            raise InvalidArgument("generate", f"{overlap} are both generated and conditioning (props {cfg.props})")
        return cfg

    def _check_oscillator(self) -> None:
        from smf.rnn.oscillator import MAX_HARMONICS, pitch_param_of

        if self.oscillator is None:  # auto: decided by the data (smf.rnn.oscillator.auto_oscillator)
            return
        if not 0 <= self.oscillator <= MAX_HARMONICS:
            raise InvalidArgument(
                "oscillator",
                f"must be in [0, {MAX_HARMONICS}] harmonics (0 = off; 2-4 is typical), got {self.oscillator}",
            )
        if not self.oscillator:
            return
        if self.generate:
            raise InvalidArgument("oscillator", "a pitch oscillator is an audio-tier option; a parameter tier has none")
        pitch_param_of(self.props)

    def _check_lpc(self) -> None:
        if not 0 <= self.lpc <= MAX_LPC:
            raise InvalidArgument("lpc", f"must be in [0, {MAX_LPC}] (0 = off; 12-16 is typical), got {self.lpc}")
        if not self.lpc:
            return
        if self.generate:
            raise InvalidArgument("lpc", "a source-filter (lpc) is an audio-tier option; a parameter tier has none")
        if self.preemphasis:
            raise InvalidArgument(
                "lpc", f"use lpc or preemphasis, not both (got lpc {self.lpc}, preemphasis {self.preemphasis})"
            )
        if self.tfr < 1.0 or (self.tfr_end is not None and self.tfr_end < 1.0):
            raise InvalidArgument(
                "tfr", f"a source-filter tier (lpc {self.lpc}) trains teacher-forced: set tfr 1 and no tfr_end"
            )


# --- the loss of one window -----------------------------------------------------------------------------------


def tf_mask(T: int, tfr: float, generator: torch.Generator | None = None) -> Tensor:
    """One teacher-forcing coin per time step (bool [T]); step 0 always uses the ground-truth input."""
    mask = torch.rand(T, generator=generator) < tfr
    mask[0] = True
    return mask


def _feedback(model, out, temperature: float, generator, dist: Dist | None = None) -> Tensor:
    """The model's own next input from its last output step, detached: [B, G].

    The noise is drawn for the global batch (B x world size rows) and sharded like the data, so every rank's
    generator stays in step with one process's; the audio tier samples its class by inverse CDF from one uniform per
    row for the same reason (torch.multinomial's draws depend on the rows it is given)."""
    dist = dist or Dist()
    config = unwrap(model).config
    with torch.no_grad():
        if config.is_audio:
            probs = torch.softmax(out[:, -1].float() / temperature, dim=-1)
            u = torch.rand(len(probs) * dist.world_size, 1, generator=generator, device=probs.device)
            cdf = probs.cumsum(-1)
            c = torch.searchsorted(cdf, dist.shard(u), right=True).clamp_(max=config.classes - 1)  # [B, 1]
            return audio_input(c, config.classes)
        mean, std = out
        shape = (len(mean) * dist.world_size, *mean.shape[2:])
        eps = dist.shard(torch.randn(shape, generator=generator, device=mean.device))
        return mean[:, -1] + temperature * std[:, -1] * eps


def _loss(model, outs, target: Tensor) -> Tensor:
    if unwrap(model).config.is_audio:
        logits = torch.cat(outs, dim=1)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    # Gaussian NLL (the reference's MSE of a reparameterised sample ignores the std head's calibration)
    mean = torch.cat([o[0] for o in outs], dim=1)
    std = torch.cat([o[1] for o in outs], dim=1)
    return (torch.log(std) + 0.5 * ((target - mean) / std) ** 2).mean() + 0.5 * math.log(2 * math.pi)


def _run(model, x, h):
    """model forward returning (out, h), where out is logits or (mean, std)."""
    if unwrap(model).config.is_audio:
        return model(x, h)
    mean, std, h = model(x, h)
    return (mean, std), h


def window_loss(
    model,
    x: Tensor,
    target: Tensor,
    tf: Tensor,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    dist: Dist | None = None,
) -> Tensor:
    """Mean loss of one batch of windows with teacher forcing `tf` [T]: teacher-forced spans run as one fused GRU
    call each, free-running steps one at a time on the model's own (sampled, detached) previous output.
    `model` may be DDP-wrapped; with `dist`, x/target are this rank's shard of the global batch."""
    G = unwrap(model).config.gen_size
    T = x.shape[1]
    cuts = torch.nonzero(~tf).flatten().tolist()  # free-running positions split the window
    outs, h, fed = [], None, None
    bounds = sorted(set([0] + cuts + [c + 1 for c in cuts] + [T]))  # every cut c is a span [c, c+1) of its own
    for a, b in itertools.pairwise(bounds):
        if not bool(tf[a]):  # one free-running step: own sample + true conditioning of step a
            xa = torch.cat([fed, x[:, a, G:]], dim=-1)[:, None]
        else:  # a teacher-forced span: one fused call
            xa = x[:, a:b]
        out, h = _run(model, xa, h)
        outs.append(out)
        if b < T and not bool(tf[b]):
            fed = _feedback(model, out, temperature, generator, dist)
    return _loss(model, outs, target)


def stepwise_loss(
    model, x: Tensor, target: Tensor, tf: Tensor, *, temperature: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """The reference's training loop: the GRU called once per sample (seq len 1). Same result as `window_loss`
    for the same `tf` and generator state; kept as the baseline for tests and bench/rnn.py."""
    G = unwrap(model).config.gen_size
    outs, h, fed = [], None, None
    for t in range(x.shape[1]):
        xt = x[:, t : t + 1] if bool(tf[t]) else torch.cat([fed, x[:, t, G:]], dim=-1)[:, None]
        out, h = _run(model, xt, h)
        outs.append(out)
        if t + 1 < x.shape[1] and not bool(tf[t + 1]):
            fed = _feedback(model, out, temperature, generator)
    return _loss(model, outs, target)


# --- reading a run --------------------------------------------------------------------------------------------


def load_checkpoint(store, run_id: str, step: int | None = None, map_location="cpu") -> dict:
    """The checkpoint dict of a run (newest if step is None); weights_only load (no pickled code)."""
    steps = checkpoint_steps(store, run_id)
    if not steps:
        raise NotFound(f"run {run_id} in {store.uri} has no checkpoints")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise NotFound(f"run {run_id} has no checkpoint at step {step} (has {steps})")
    return read_checkpoint(store, ckpt_key(run_id, step), map_location=map_location)


def load_run(store, run_id: str, step: int | None = None, map_location="cpu"):
    """A run's checkpoint as an eval-mode model (newest when step is None) -> (model, step)."""
    ck = load_checkpoint(store, run_id, step, map_location=map_location)
    model = build_model(RNNConfig(**ck["config"]["model"]))
    model.load_state_dict(ck["model"])
    return model.eval(), ck["step"]


# --- the loop -------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """One training run of a tier: `Trainer(cfg, store, "rnn/my-run").run()` -> the final progress dict; resumes
    from the run's newest checkpoint.

    `data` may be a prepared WindowDataset (tests); otherwise cfg.data is loaded and validated first.
    `on_step(step, loss)` is called after every step (the CLI's progress bar); `stop` (a StopSignal) ends the run
    after the current step with a checkpoint. With `dist` (smf.common.distributed.init() under torchrun) this
    process trains its shard of every batch.

    A step is `sample_batch()` (every random draw of the data side, from `data_gen`) then `loss(...)` (the model
    side, free-running noise from `sample_gen`) then the optimizer: a subclass changes what a batch holds or what
    the loss is by overriding one of them."""

    def __init__(
        self,
        cfg: TrainConfig,
        store,
        run_id: str,
        *,
        data=None,
        log=print,
        stop: StopSignal | None = None,
        on_step=None,
        dist: Dist | None = None,
    ):
        from smf.rnn.dataset import load_dataset

        self.dist = dist = dist or Dist()
        self.cfg, self.mcfg, self.run_id = cfg, cfg.model_config(), run_id.strip("/")
        self.device = dist.device if dist.enabled else resolve_device(cfg.device)
        dist.local_batch(cfg.batch, "batch")  # the global batch must split evenly over the ranks
        self.store = dist.store(store)  # read-only on ranks other than 0: one writer
        self.writer = RunWriter(self.store, self.run_id, kind="rnn", dist=dist, keep=cfg.keep_checkpoints)
        self.log = log if dist.is_main else (lambda *_: None)
        self.stop = stop or StopSignal()
        self.on_step = on_step

        # Validate the data before anything is written: a bad file fails the job in seconds, not after an hour.
        self.data = (
            data if data is not None else load_dataset(cfg.data, self.mcfg, cfg.seq_len, self.store, cross=cfg.cross)
        )
        self.features = getattr(self.data, "features", {})  # analysis-control normalisation, in every checkpoint
        if self.mcfg.oscillator and self.mcfg.pitch is None:  # normPitch's MIDI range, read from the data's .params
            self.mcfg = replace(self.mcfg, pitch=self.data.pitch)
        elif cfg.oscillator is None:  # auto: an oscillator when the data says which pitch normPitch names
            from smf.rnn.oscillator import auto_oscillator

            self.mcfg = auto_oscillator(self.mcfg, self.data)

        torch.manual_seed(cfg.seed)
        self.model = build_model(self.mcfg).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.data_gen = torch.Generator().manual_seed(cfg.seed)  # windows + TF coins (CPU)
        self.sample_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)  # free-running samples
        self.step = 0
        self.metrics: dict[str, list] = {"steps": [], "loss": []}
        self._resume()
        if self.mcfg.lpc and self.step == 0:  # a source-filter tier: its envelope first (seconds), then the GRU
            from smf.rnn.source_filter import fit_envelope

            self.metrics["envelope"] = fit_envelope(self.model.envelope, self.data, seed=cfg.seed, log=self.log)
        # what the loop calls: DDP averages gradients over ranks (the same parameters as self.model)
        self.net = dist.wrap(self.model)
        self.last_ckpt = self.step
        self.clock = RunClock(self.step)

    def _resume(self) -> None:
        found = self.writer.latest_checkpoint(map_location=self.device)
        if found is None:
            return
        _, ck = found
        saved = ck["config"]
        was = RNNConfig.from_dict(saved["model"]).to_dict()  # a run from before a config key reads its default
        if was != self.mcfg.to_dict():
            hint = (
                "; it has no pitch oscillator, which this config now adds by default: set oscillator 0 to resume it"
                if self.cfg.oscillator is None and was["oscillator"] != self.mcfg.oscillator
                else ""
            )
            raise InvalidArgument(
                "config",
                f"run {self.run_id} was trained with model {saved['model']}, "
                f"this config asks for {self.mcfg.to_dict()}{hint}; use a new --out",
            )
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.step, self.metrics = ck["step"], ck["metrics"]
        # generator states are CPU ByteTensors, whatever map_location did
        self.data_gen.set_state(ck["rng"]["data"].cpu())
        self.sample_gen.set_state(ck["rng"]["sample"].cpu())
        self.log(f"resumed {self.run_id} at step {self.step}")

    def tfr_at(self, step: int) -> float:
        """The teacher-forcing ratio at a step: constant, or linear from tfr to tfr_end (scheduled sampling)."""
        cfg = self.cfg
        if cfg.tfr_end is None:
            return cfg.tfr
        return cfg.tfr + (cfg.tfr_end - cfg.tfr) * min(step / max(cfg.steps - 1, 1), 1.0)

    def lr_at(self, step: int) -> float:
        """The learning rate at a step: constant, or a cosine from lr (step 0) to lr_end (the last step)."""
        cfg = self.cfg
        if cfg.lr_end is None:
            return cfg.lr
        t = min(step / max(cfg.steps - 1, 1), 1.0)
        return cfg.lr_end + (cfg.lr - cfg.lr_end) * 0.5 * (1.0 + math.cos(math.pi * t))

    # --- one step ---
    def sample_batch(self) -> tuple[Tensor, Tensor, Tensor]:
        """The step's global batch (x [B, T, in], target) and TF coins [T]. Every rank draws the whole batch from
        the same generator state and later keeps its shard, so the draws do not depend on the world size."""
        cfg = self.cfg
        if self.mcfg.lpc:
            from smf.rnn.source_filter import tier_batch

            audio, cond = self.data.windows(cfg.batch, cfg.seq_len + self.mcfg.lpc + 1, generator=self.data_gen)
            x, target = tier_batch(
                self.model.envelope,
                audio.to(self.device),
                cond.to(self.device),
                self.mcfg.classes,
                self.mcfg.oscillator,
            )
        else:
            x, target = self.data.sample(cfg.batch, cfg.seq_len, generator=self.data_gen)
        tf = tf_mask(cfg.seq_len, self.tfr_at(self.step), generator=self.data_gen)
        return x, target, tf

    def loss(self, x: Tensor, target: Tensor, tf: Tensor) -> Tensor:
        """This rank's loss of its shard of the global batch."""
        shard = self.dist.shard
        return window_loss(
            self.net,
            shard(x).to(self.device),
            shard(target).to(self.device),
            tf,
            temperature=self.cfg.temperature,
            generator=self.sample_gen,
            dist=self.dist,
        )

    def train_step(self) -> float:
        """One optimizer step; returns (and records) the global batch's loss."""
        loss = self.loss(*self.sample_batch())
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:  # after DDP's all-reduce: the global batch's gradient, clipped the same on every rank
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        value = float(self.dist.mean(loss.detach()[None]))
        self.metrics["steps"].append(self.step)
        self.metrics["loss"].append(value)
        return value

    # --- outputs ---
    def save(self) -> None:
        """Checkpoint + loss plot (rank 0), then the checkpoint counts as the run's latest."""
        cfg, m = self.cfg, self.metrics
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "config": {"train": asdict(cfg), "model": self.mcfg.to_dict(), "features": self.features},
            "rng": {"data": self.data_gen.get_state(), "sample": self.sample_gen.get_state().cpu()},
            "metrics": m,
        }
        if self.writer.writes:
            self.writer.save_checkpoint(self.step, state)
            if m["loss"]:
                self.writer.put_png(
                    "plots/loss.png",
                    loss_plot(m["steps"], {"batch loss": m["loss"]}, ylabel="loss (nats per step)", smooth=True),
                )
        self.last_ckpt = self.step

    def commit(self) -> None:
        """manifest.json of the run, listing every file now under it (= the commit point of this checkpoint);
        records the features normalisation and the dataset or grid artifact trained on (none for a folder)."""
        if not self.writer.writes:
            return
        from smf.rnn.dataset import lineage_input

        cfg = self.cfg
        config = {
            **asdict(cfg),
            "param_names": list(cfg.props),
            "generate": list(cfg.generate),
            "model": self.mcfg.to_dict(),
            "features": self.features or {},
            "latest_step": self.step,
        }
        data = lineage_input(cfg.data, self.store)
        self.writer.commit(config=config, inputs=[data] if data else [])

    def report(self, state: str) -> dict:
        """Write progress.json (rank 0); returns it on every rank."""
        cfg, step = self.cfg, self.step
        rate = self.clock.rate(step)
        loss = self.metrics["loss"][-1] if self.metrics["loss"] else None
        return self.writer.progress(
            state,
            step=step,
            total=cfg.steps,
            loss=loss,
            message=f"step {step}/{cfg.steps}" + (f" loss {loss:.4f}" if loss is not None else ""),
            metrics={"tfr": self.tfr_at(step), "steps_per_second": rate},
            samples_per_second=rate * cfg.batch * cfg.seq_len,
            eta_seconds=self.clock.eta(step, cfg.steps),
            elapsed_seconds=self.clock.elapsed(),
            checkpoint=ckpt_key(self.run_id, self.last_ckpt) if self.last_ckpt else None,
            device=str(self.device),
            param_names=list(cfg.props),
            generate=list(cfg.generate),
        )

    # --- the loop ---
    def run(self) -> dict:
        """Train to cfg.steps (or until a stop request). Returns the final progress dict: state "succeeded" or
        "stopped" (resumable)."""
        cfg = self.cfg
        self.writer.put_json("config.json", {**asdict(cfg), "model": self.mcfg.to_dict()})
        self.clock = RunClock(self.step)
        progress: dict = {}
        self.model.train()
        while self.step < cfg.steps and not self.stop.any_rank(self.dist):
            loss = self.train_step()
            if self.on_step is not None:
                self.on_step(self.step, loss)
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save()
                progress = self.report("running" if self.step < cfg.steps else "succeeded")
                self.commit()
            elif self.step % cfg.progress_every == 0:
                progress = self.report("running")
            if self.step % cfg.progress_every == 0:
                self.log(
                    f"step {self.step}/{cfg.steps} loss {loss:.4f} tfr {self.tfr_at(self.step):.3f} "
                    f"{progress.get('samples_per_second', 0):.0f} samples/s"
                )
        if self.last_ckpt != self.step:  # stopped early (SIGTERM): make the current state durable
            self.save()
            progress = self.report("stopped" if self.step < cfg.steps else "succeeded")
            self.commit()
        elif not progress:
            progress = self.report("succeeded" if self.step >= cfg.steps else "stopped")
        self.dist.barrier()  # no rank reports done before rank 0's last write
        self.log(f"{progress['state']} at step {self.step}: {self.store.key_uri(ckpt_key(self.run_id, self.step))}")
        return progress


def train(cfg: TrainConfig, store, run_id: str, **options) -> dict:
    """Train (or resume) run `run_id` ("rnn/<run>") in `store`; returns the final progress dict. The keyword
    options are Trainer's (data, log, stop, on_step, dist): `train(cfg, store, "rnn/tones", on_step=bar)`."""
    return Trainer(cfg, store, run_id, **options).run()


def _read_config(src: str) -> TrainConfig:
    """TrainConfig from a JSON file or an inline JSON object (what the service hands to a job)."""
    try:
        if src.lstrip().startswith("{"):
            text = src
        else:
            with open(src) as f:
                text = f.read()
        return TrainConfig.from_dict(json.loads(text))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidArgument("--config", str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    """The job's entry point; its exit status follows smf.common.training (0 done, 2 bad config/data, 128 + signum
    when stopped after a checkpoint)."""
    ap = argparse.ArgumentParser(prog="python -m smf.rnn.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="JSON file (or inline JSON object) of TrainConfig fields")
    ap.add_argument("--out", help="run artifact: rnn/<run> in $SMF_STORE, or a full store URI")
    ap.add_argument("--store", default=None, help="store URI when --out is a bare artifact id (or with --run)")
    ap.add_argument("--run", help="run name; the run is rnn/<run> in the store")
    args = ap.parse_args(argv)

    try:
        cfg = _read_config(args.config)
        store, run_id = run_location(args.out, store=args.store, run=args.run, kind="rnn")
    except SmfError as exc:
        print(f"smf.rnn.train: error: {exc.message}", file=sys.stderr)
        return exit_code(exc)
    stop = StopSignal().install()
    dist = Dist()
    try:
        dist = init(cfg.device)  # one process, or this rank of a torchrun job
        progress = train(cfg, store, run_id, stop=stop, log=lambda m: print(m, flush=True), dist=dist)
    except SmfError as exc:
        # the service relays this to the operation with its status code (e.g. INVALID_ARGUMENT naming a file)
        RunWriter(store, run_id, kind="rnn", dist=dist).fail(exc)
        print(f"smf.rnn.train: error: {exc.message}", file=sys.stderr)
        return exit_code(exc)
    finally:
        dist.close()
    # stopped by a signal: a non-zero exit, so a preempted Kubernetes pod is retried (and resumes) and a cancelled
    # local job reads as ended-not-finished
    return EXIT_DONE if progress["state"] == "succeeded" else stop.exit_code()


if __name__ == "__main__":
    sys.exit(main())
