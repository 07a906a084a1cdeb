"""Train one MTCRNN tier on wav + .params, writing checkpoints and progress to the artifact store.

    python -m smf.rnn.train --config run.json --out rnn/my-run            # store from $SMF_STORE
    python -m smf.rnn.train --config run.json --out file:///data/store/rnn/my-run

`run.json` holds TrainConfig fields ({"data": "datasets/tones", "props": ["normPitch"], "hidden": 256, ...}).
Running the same command again resumes from the newest checkpoint of the run (weights, Adam moments, step, RNG
streams and loss history), so a killed or preempted job simply continues. SIGTERM saves a checkpoint and exits.

What the loop does, per step: draw random windows (conditioning pre-sampled at every sample time), draw one
teacher-forcing coin per time step (shared by the batch, as the reference; P(TF) = the current ratio, which
moves linearly from `tfr` to `tfr_end` for scheduled sampling), then run the window as alternating chunks:
a contiguous teacher-forced span goes through nn.GRU in ONE call (cuDNN's fused kernel on GPU); a free-running step
samples the model's previous output, feeds it back and advances one step. With tfr = 1 the whole window is one call.
The reference stepped the GRU one sample at a time even when every input was ground truth.

Several GPUs (or CPU processes, gloo): `torchrun --standalone --nproc-per-node 4 -m smf.rnn.train --config ... --out ...`.
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
import io
import itertools
import json
import math
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from smf.common.distributed import Dist, init, unwrap
from smf.common.errors import InvalidArgument, SmfError
from smf.rnn.model import RNNConfig, audio_input, build_model
from torch import Tensor


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
    steps: int = 10000
    tfr: float = 0.9  # teacher-forcing ratio at step 0 (SMF runs: constant 0.9)
    tfr_end: float | None = None  # scheduled sampling: ratio at the last step (None = constant)
    temperature: float = 1.0  # sampling temperature of free-running steps
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
        )

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidArgument("config", f"unknown keys {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        cfg = cls(**d)
        if not cfg.props and not cfg.generate:
            raise InvalidArgument("props", "an audio tier needs at least one conditioning param (--prop)")
        for name in ("tfr", "tfr_end"):
            v = getattr(cfg, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise InvalidArgument(name, f"must be in [0, 1], got {v}")
        for name in ("hidden", "layers", "seq_len", "batch", "steps", "checkpoint_every", "progress_every"):
            if getattr(cfg, name) < 1:
                raise InvalidArgument(name, f"must be >= 1, got {getattr(cfg, name)}")
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


# --- store I/O ------------------------------------------------------------------------------------------------


def _ckpt_key(run_id: str, step: int) -> str:
    return f"{run_id}/ckpt/step-{step}.pt"


def checkpoint_steps(store, run_id: str) -> list[int]:
    """Steps of the checkpoints stored for a run, ascending."""
    steps = []
    for key in store.list(f"{run_id}/ckpt/"):
        m = re.fullmatch(re.escape(run_id) + r"/ckpt/step-(\d+)\.pt", key)
        if m:
            steps.append(int(m.group(1)))
    return sorted(steps)


def load_checkpoint(store, run_id: str, step: int | None = None, map_location="cpu") -> dict:
    """The checkpoint dict of a run (newest if step is None); weights_only load (no pickled code)."""
    from smf.common.errors import NotFound

    steps = checkpoint_steps(store, run_id)
    if not steps:
        raise NotFound(f"run {run_id} in {store.uri} has no checkpoints")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise NotFound(f"run {run_id} has no checkpoint at step {step} (has {steps})")
    return torch.load(
        io.BytesIO(store.get_bytes(_ckpt_key(run_id, step))), map_location=map_location, weights_only=True
    )


def load_run(store, run_id: str, step: int | None = None, map_location="cpu"):
    """A run's checkpoint as an eval-mode model (newest when step is None) -> (model, step)."""
    ck = load_checkpoint(store, run_id, step, map_location=map_location)
    model = build_model(RNNConfig(**ck["config"]["model"]))
    model.load_state_dict(ck["model"])
    return model.eval(), ck["step"]


def _plot_loss(steps: list[int], losses: list[float]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, lw=0.6, alpha=0.5, label="batch loss")
    if len(losses) >= 20:
        k = max(len(losses) // 50, 5)
        smooth = torch.tensor(losses).unfold(0, k, 1).mean(1).tolist()
        ax.plot(steps[k - 1 :], smooth, lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per step)")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _put_json(store, key: str, obj) -> None:
    store.put_bytes(key, json.dumps(obj, indent=2).encode(), content_type="application/json")


def _write_manifest(store, run_id: str, cfg: TrainConfig, ckpt_step: int, features: dict | None = None) -> None:
    """manifest.json of the run, listing every file now under it (= the commit point of this checkpoint).
    `features`: the dataset normalisation of analysis controls (rms, centroid) the tier was trained on."""
    from smf.common import lineage
    from smf.rnn.dataset import lineage_input

    config = {
        **asdict(cfg),
        "param_names": list(cfg.props),
        "generate": list(cfg.generate),
        "model": cfg.model_config().to_dict(),
        "features": features or {},
        "latest_step": ckpt_step,
    }
    data = lineage_input(cfg.data, store)  # the dataset or grid artifact trained on; none for a local folder
    lineage.commit_artifact(store, "rnn", run_id, config=config, inputs=[data] if data else [], service="rnn")


# --- the loop -------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Stop:
    """SIGTERM/SIGINT -> finish the current step, save, exit (a k8s preemption or a cancelled operation)."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True


def train(
    cfg: TrainConfig,
    store,
    run_id: str,
    *,
    data=None,
    log=print,
    stop: _Stop | None = None,
    on_step=None,
    dist: Dist | None = None,
) -> dict:
    """Train (or resume) run `run_id` ("rnn/<run>") in `store`. Returns the final progress dict.

    `data` may be a prepared WindowDataset (tests); otherwise cfg.data is loaded and validated first.
    `on_step(step, loss)` is called after every step (the CLI's progress bar).
    With `dist` (smf.common.distributed.init() under torchrun) this process trains its shard of every batch."""
    from smf.rnn.dataset import load_dataset

    dist = dist or Dist()
    device = dist.device if dist.enabled else resolve_device(cfg.device)
    dist.local_batch(cfg.batch, "batch")  # the global batch must split evenly over the ranks
    store = dist.store(store)  # read-only on ranks other than 0: one writer
    log = log if dist.is_main else (lambda *_: None)
    mcfg = cfg.model_config()
    stop = stop or _Stop()

    # Validate the data before anything is written: a bad file fails the job in seconds, not after an hour.
    data = data if data is not None else load_dataset(cfg.data, mcfg, cfg.seq_len, store)
    features = getattr(data, "features", {})  # analysis-control normalisation, recorded with every checkpoint

    torch.manual_seed(cfg.seed)
    model = build_model(mcfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data_gen = torch.Generator().manual_seed(cfg.seed)  # windows + TF coins (CPU)
    sample_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # free-running samples (on device)
    step, metrics = 0, {"steps": [], "loss": []}

    config_key = f"{run_id}/config.json"
    if checkpoint_steps(store, run_id):
        ck = load_checkpoint(store, run_id, map_location=device)
        saved = ck["config"]
        if saved["model"] != mcfg.to_dict():
            raise InvalidArgument(
                "config",
                f"run {run_id} was trained with model {saved['model']}, "
                f"this config asks for {mcfg.to_dict()}; use a new --out",
            )
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        step, metrics = ck["step"], ck["metrics"]
        data_gen.set_state(ck["rng"]["data"].cpu())  # generator states are CPU ByteTensors, whatever map_location did
        sample_gen.set_state(ck["rng"]["sample"].cpu())
        log(f"resumed {run_id} at step {step}")
    if dist.is_main:
        _put_json(store, config_key, {**asdict(cfg), "model": mcfg.to_dict()})
    net = dist.wrap(model)  # what the loop calls: DDP averages gradients over ranks (same parameters as `model`)

    def save() -> None:
        if not dist.is_main:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "config": {"train": asdict(cfg), "model": mcfg.to_dict(), "features": features},
            "rng": {"data": data_gen.get_state(), "sample": sample_gen.get_state().cpu()},
            "metrics": metrics,
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        store.put_bytes(_ckpt_key(run_id, step), buf.getvalue())
        if metrics["loss"]:
            store.put_bytes(
                f"{run_id}/plots/loss.png", _plot_loss(metrics["steps"], metrics["loss"]), content_type="image/png"
            )
        if cfg.keep_checkpoints:
            for old in checkpoint_steps(store, run_id)[: -cfg.keep_checkpoints]:
                store.delete(_ckpt_key(run_id, old))

    t0, start_step, last_ckpt = time.monotonic(), step, step
    progress = {}

    def report(state: str) -> dict:
        # keys follow smf.common.operations.ExternalStatus.from_progress, so the service can relay them as is
        elapsed = time.monotonic() - t0
        rate = (step - start_step) / elapsed if elapsed > 0 else 0.0
        loss = metrics["loss"][-1] if metrics["loss"] else None
        p = {
            "run": run_id,
            "state": state,
            "step": step,
            "total": cfg.steps,
            "loss": loss,
            "message": f"step {step}/{cfg.steps}" + (f" loss {loss:.4f}" if loss is not None else ""),
            "metrics": {"tfr": tfr_at(step), "steps_per_second": rate},
            "samples_per_second": rate * cfg.batch * cfg.seq_len,
            "eta_seconds": (cfg.steps - step) / rate if rate > 0 else None,
            "elapsed_seconds": elapsed,
            "checkpoint": _ckpt_key(run_id, last_ckpt) if last_ckpt else None,
            "device": str(device),
            "param_names": list(cfg.props),
            "generate": list(cfg.generate),
            "updated_at": time.time(),
            "result_uris": [store.key_uri(run_id)] if state == "succeeded" else [],
        }
        if dist.is_main:
            _put_json(store, f"{run_id}/progress.json", p)
        return p

    def tfr_at(s: int) -> float:
        if cfg.tfr_end is None:
            return cfg.tfr
        return cfg.tfr + (cfg.tfr_end - cfg.tfr) * min(s / max(cfg.steps - 1, 1), 1.0)

    def should_stop() -> bool:  # a SIGTERM seen by any rank stops every rank after the same step
        stop.requested = dist.any(stop.requested)
        return stop.requested

    model.train()
    while step < cfg.steps and not should_stop():
        # every rank draws the global batch (same generator state everywhere) and keeps its shard
        x, target = data.sample(cfg.batch, cfg.seq_len, generator=data_gen)
        tf = tf_mask(cfg.seq_len, tfr_at(step), generator=data_gen)
        loss = window_loss(
            net,
            dist.shard(x).to(device),
            dist.shard(target).to(device),
            tf,
            temperature=cfg.temperature,
            generator=sample_gen,
            dist=dist,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:  # after DDP's all-reduce: the global batch's gradient, clipped the same on every rank
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        metrics["steps"].append(step)
        metrics["loss"].append(float(dist.mean(loss.detach()[None])))  # the global batch's loss
        if on_step is not None:
            on_step(step, metrics["loss"][-1])
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save()
            last_ckpt = step
            progress = report("running" if step < cfg.steps else "succeeded")
            if dist.is_main:
                _write_manifest(store, run_id, cfg, step, features)
        elif step % cfg.progress_every == 0:
            progress = report("running")
        if step % cfg.progress_every == 0:
            log(
                f"step {step}/{cfg.steps} loss {metrics['loss'][-1]:.4f} tfr {tfr_at(step):.3f} "
                f"{progress.get('samples_per_second', 0):.0f} samples/s"
            )
    if last_ckpt != step:  # stopped early (SIGTERM) or nothing left to do: make the current state durable
        save()
        last_ckpt = step
        progress = report("stopped" if step < cfg.steps else "succeeded")
        if dist.is_main:
            _write_manifest(store, run_id, cfg, step, features)
    elif not progress:
        progress = report("succeeded" if step >= cfg.steps else "stopped")
    dist.barrier()  # no rank reports done before rank 0's last write
    log(f"{progress['state']} at step {step}: {store.key_uri(_ckpt_key(run_id, step))}")
    return progress


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m smf.rnn.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="JSON file (or inline JSON object) of TrainConfig fields")
    ap.add_argument("--out", required=True, help="run artifact: rnn/<run> in $SMF_STORE, or a full store URI")
    ap.add_argument("--store", default=None, help="store URI when --out is a bare artifact id")
    args = ap.parse_args(argv)

    from smf.common.store import open_store, parse_uri

    try:
        if args.config.lstrip().startswith("{"):
            text = args.config
        else:
            with open(args.config) as f:
                text = f.read()
        cfg = TrainConfig.from_dict(json.loads(text))
        if "://" in args.out:
            store_uri, run_id = parse_uri(args.out)
            store = open_store(store_uri)
        else:
            store, run_id = open_store(args.store), args.out
        run_id = run_id.strip("/")
    except SmfError as exc:
        print(f"smf.rnn.train: error: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as exc:
        print(f"smf.rnn.train: error: --config: {exc}", file=sys.stderr)
        return 2
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    dist = Dist()
    try:
        dist = init(cfg.device)  # one process, or this rank of a torchrun job
        progress = train(cfg, store, run_id, stop=stop, log=lambda m: print(m, flush=True), dist=dist)
    except SmfError as exc:
        # the service relays this to the operation with its status code (e.g. INVALID_ARGUMENT naming a file)
        if dist.is_main:
            _put_json(
                store,
                f"{run_id}/progress.json",
                {
                    "run": run_id,
                    "state": "failed",
                    "error": exc.message,
                    "error_code": exc.code.name,
                    "updated_at": time.time(),
                },
            )
        print(f"smf.rnn.train: error: {exc.message}", file=sys.stderr)
        return 2
    finally:
        dist.close()
    # stopped by SIGTERM: a non-zero exit, so a preempted Kubernetes pod is retried (and resumes) and a cancelled
    # local job reads as ended-not-finished
    return 0 if progress["state"] == "succeeded" else 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
