"""Train the progressive spectrogram GAN from an SMF config, writing everything to the artifact store.

    python -m smf.gan.train --config services/gan/configs/tiny.json --out file:///home/me/.smf/store/gan/run1
    python -m smf.gan.train --config cfg.json --store s3://smf/team --run run1

Writes under `gan/<run>/`: `config.json`, `ckpt/step-<n>.pt` (one dict: model, optimizer, scale, alpha, step,
config, args, classes, rng, metrics; the newest KEEP_CHECKPOINTS are kept), `progress.json` (state, scale, step,
losses, samples/s, ETA), and per checkpoint `plots/loss-step-<n>.png` + `plots/preview-step-<n>.png` (spectrogram
mosaic of EMA samples from fixed latents). A manifest is committed with every checkpoint, so a run can be sampled
while it trains. Running the same command again resumes exactly from the newest checkpoint (same data order, same
noise). SIGTERM (or Ctrl-C) saves a checkpoint and exits with status 143 (130). Checkpoints, progress.json, plots,
the stop signal and the exit codes are smf.common.training's, shared with the RNN trainer.

Several GPUs (or CPU processes, gloo):
`torchrun --standalone --nproc-per-node 4 -m smf.gan.train --config ... --out ...`.
`miniBatchSize` stays the GLOBAL batch: every rank draws the whole batch (latents, GP mixing weights) from the same
generator, and the same clip indices (seeded by (seed, step), smf.gan.data), and keeps its strided shard
(smf.common.distributed), G and D are wrapped in DistributedDataParallel,
and rank 0 alone writes. The training is the one-process training up to float summation order (checked in
tests/gan/test_ddp.py), so a checkpoint resumes with any number of processes. The WGAN-GP penalty differentiates
D(x_hat) with respect to x_hat (autograd.grad, create_graph) and then backpropagates through that gradient: DDP's
reducer hooks the parameters' gradient accumulators, which run once per backward with all contributions summed,
so the double backward goes through the DDP-wrapped D unchanged (gradients checked equal to one process's).
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from smf.common import refs
from smf.common.distributed import Dist, init
from smf.common.errors import InvalidArgument, SmfError
from smf.common.store import Store
from smf.common.training import (
    EXIT_DONE,
    RunClock,
    RunWriter,
    StopSignal,
    exit_code,
    figure_png,
    loss_plot,
    pyplot,
    run_location,
)
from smf.gan.config import GanConfig, load_config, parse_config
from smf.gan.data import ClipBatches, TrainingData, load_training_data
from smf.gan.model import (
    GanArgs,
    ProgressiveGAN,
    alpha_at,
    d_loss,
    g_loss,
    random_latents,
    resize,
    spectrogram_ceiling,
    to_images,
)

KEEP_CHECKPOINTS = 3


# --- metrics ----------------------------------------------------------------------------------------------------------
def log_spectral_distance(generated: torch.Tensor, data: torch.Tensor) -> float:
    """How far generated spectrograms are from the data: for each generated [F, N] spectrogram the RMS difference
    (in normalised log-magnitude units) to its nearest data spectrogram, averaged. Lower is closer."""
    g = generated.flatten(1).double()
    d = data.flatten(1).double()
    dist = torch.cdist(g, d) / math.sqrt(g.shape[1])
    return float(dist.min(dim=1).values.mean())


# --- the loop ---------------------------------------------------------------------------------------------------------
class Trainer:
    """One training run: `Trainer(cfg, store, "gan/run1").run()`; resumes from the run's newest checkpoint.
    With `dist` (smf.common.distributed.init() under torchrun) this process trains its shard of every batch."""

    def __init__(
        self,
        cfg: GanConfig,
        store: Store,
        run_id: str,
        *,
        data: TrainingData | None = None,
        log=print,
        dist: Dist | None = None,
    ):
        self.dist = dist or Dist()
        # ranks other than 0 get a read-only store and no log: one writer, one voice
        self.cfg, self.store, self.run_id = cfg, self.dist.store(store), run_id.strip("/")
        self.log = log if self.dist.is_main else (lambda *_: None)
        self.writer = RunWriter(self.store, self.run_id, kind="gan", dist=self.dist, keep=KEEP_CHECKPOINTS)
        self.stop_requested = StopSignal()  # .set() from a signal handler or a CLI; .install() for SIGTERM/SIGINT
        m = cfg.model
        for s in range(m.startScale, m.n_scales):  # miniBatchSize is the global batch: it must split over ranks
            self.dist.local_batch(m.miniBatchSize[s], f"modelConfig.miniBatchSize[{s}]")
        self.data = data if data is not None else load_training_data(cfg, store, dist=self.dist)
        if self.data.shape != (cfg.transform.n_bins, cfg.transform.n_frames):
            raise InvalidArgument(
                "transformConfig",
                f"data spectrograms are {self.data.shape}, "
                f"config expects {(cfg.transform.n_bins, cfg.transform.n_frames)}",
            )
        self.log(f"{self.run_id}: {self.data.counts.line()}")
        n_classes = [len(v) for v in (self.data.classes or {}).values()]
        self.args = GanArgs.from_config(cfg, n_classes, ceiling=spectrogram_ceiling(self.data.sample()))
        want = cfg.train.device
        self.device = (
            self.dist.device
            if self.dist.enabled
            else torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")
        )
        torch.manual_seed(cfg.train.seed)  # weight init
        self.gan = ProgressiveGAN(self.args).to(self.device)
        betas = (0.0, 0.99)  # PGGAN's Adam settings
        self.opt_g = torch.optim.Adam(self.gan.G.parameters(), lr=m.baseLearningRate, betas=betas, eps=1e-8)
        self.opt_d = torch.optim.Adam(self.gan.D.parameters(), lr=m.baseLearningRate, betas=betas, eps=1e-8)
        # The loop's noise and GP mixing come from this CPU generator, saved in checkpoints (batches: self.batches).
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        self.preview_z = random_latents(
            self.args, cfg.train.previewCount, torch.Generator().manual_seed(cfg.train.seed + 1)
        )
        # The batch of a step comes from (seed, step) alone: resumable, and the same for any number of ranks.
        self.batches = ClipBatches(
            self.data.clips,
            seed=cfg.train.seed,
            batch_size=lambda step: m.miniBatchSize[self.scale_at(step)[0]],
            dist=self.dist,
            num_workers=cfg.loader.num_workers,
        )
        self.step = 0
        self.metrics: dict[str, list[float]] = {
            "step": [],
            "loss_d": [],
            "loss_g": [],
            "wdist": [],
            "gp": [],
            "lsd_step": [],
            "lsd": [],
        }
        self.total = cfg.total_steps
        self._resume()
        # The networks as the loop calls them: DDP wrappers when distributed (the same parameters; checkpoints,
        # optimizers and the EMA use self.gan). Scales not reached yet leave layers without gradients, hence
        # find_unused_parameters.
        self.G = self.dist.wrap(self.gan.G, find_unused_parameters=True)
        self.D = self.dist.wrap(self.gan.D, find_unused_parameters=True)

    # schedule: global step -> (scale, iteration within the scale)
    def scale_at(self, step: int) -> tuple[int, int]:
        m = self.cfg.model
        for s in range(m.startScale, m.n_scales):
            if step < m.maxIterAtScale[s] or s == m.n_scales - 1:
                return s, step
            step -= m.maxIterAtScale[s]
        raise AssertionError("unreachable")

    def alpha_at(self, step: int) -> float:
        s, k = self.scale_at(step)
        return alpha_at(k, s, self.cfg.model.alphaNJumps[s], self.cfg.model.alphaSizeJumps[s])

    def _resume(self) -> None:
        found = self.writer.latest_checkpoint(map_location=self.device)
        if found is None:
            return
        key, ck = found
        if ck["args"] != self.args.to_dict():
            raise InvalidArgument(
                "config",
                f"{key} was trained with another network shape; "
                f"use a new run name or the config stored in {self.run_id}/config.json",
            )
        self.gan.load_state_dict(ck["model"])
        self.opt_g.load_state_dict(ck["optimizer"]["G"])
        self.opt_d.load_state_dict(ck["optimizer"]["D"])
        self.gen.set_state(ck["rng"].cpu())  # map_location moved it to the training device; the generator is CPU
        self.step = int(ck["step"])
        self.metrics = {k: list(v) for k, v in ck["metrics"].items()}
        self.log(f"resumed {self.run_id} from {key} (step {self.step}/{self.total})")

    def train_step(self) -> dict[str, float]:
        m, a, dev = self.cfg.model, self.args, self.device
        scale, _ = self.scale_at(self.step)
        alpha = self.alpha_at(self.step)
        bs = m.miniBatchSize[scale]  # the global batch
        # Every draw of the step, for the whole global batch, in one place; each rank keeps its shard (identity for
        # one process). Same generator, same order on every rank: the state is independent of the world size.
        idx = self.batches.indices(self.step)  # the clips: seeded by (seed, step), see smf.gan.data
        assert len(idx) == bs
        lab_cpu = self.data.labels[idx] if self.data.labels is not None else None
        z_d = random_latents(a, bs, self.gen, labels=lab_cpu)
        t = torch.rand(bs, 1, 1, 1, generator=self.gen)  # gradient-penalty mixing weights
        z_g = random_latents(a, bs, self.gen, labels=lab_cpu)
        shard = self.dist.shard
        z_d, t, z_g = shard(z_d), shard(t), shard(z_g)
        labels = shard(lab_cpu).to(dev) if lab_cpu is not None else None

        real = to_images(self.batches.specs(self.step), a, scale).to(dev)  # this rank's shard of idx
        if alpha > 0:  # real images fade between scales too, so D compares like with like
            real = alpha * resize(resize(real, a.scale_shapes[scale - 1]), a.scale_shapes[scale]) + (1 - alpha) * real
        with torch.no_grad():  # D's step needs no graph through G
            fake = self.gan.G(z_d.to(dev), scale, alpha)
        loss_d, logs = d_loss(
            self.gan,
            real,
            fake,
            scale,
            alpha,
            lambda_gp=m.lambdaGP,
            epsilon_d=m.epsilonD,
            labels=labels,
            weight_condition=m.weightConditionD,
            t=t,
            critic=self.D,
        )
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()  # DDP: gradients averaged over ranks here
        self.opt_d.step()

        self.gan.D.requires_grad_(False)  # G's step must not accumulate grads in D (the plain D: no DDP sync)
        loss_g, logs_g = g_loss(
            self.gan,
            self.G(z_g.to(dev), scale, alpha),
            scale,
            alpha,
            labels=labels,
            weight_condition=m.weightConditionG,
        )
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.gan.D.requires_grad_(True)

        # EMA warm-up: a short run must not sample from (nearly) the initial weights. G is the same on every rank
        # after the step (same averaged gradients, same Adam), so each rank's EMA copy stays in sync by itself.
        self.gan.update_ema(min(self.cfg.train.emaDecay, (1 + self.step) / (10 + self.step)))
        self.step += 1
        logs = {**logs, **logs_g}
        if self.dist.enabled:  # log the global batch's losses (mean of the shards' means), as one process would
            keys = ("loss_d", "wdist", "gp", "loss_g")
            mean = self.dist.mean(torch.tensor([logs[k] for k in keys], dtype=torch.float64))
            logs.update(zip(keys, mean.tolist(), strict=True))
        return {**logs, "scale": scale, "alpha": alpha, "batch": bs}

    def lsd(self, n: int = 64) -> float:
        """Log-spectral distance of n EMA samples (fixed latents) to the data; logged at each checkpoint."""
        scale, _ = self.scale_at(max(self.step - 1, 0))
        z = random_latents(self.args, n, torch.Generator().manual_seed(1234))
        spec = self.gan.spectrogram(z.to(self.device), scale, self.alpha_at(max(self.step - 1, 0))).cpu()
        return log_spectral_distance(spec, self.data.sample())  # at most data.LSD_SAMPLE clips, spread out

    def run(self, max_steps: int | None = None, progress=None) -> str:
        """Train until the schedule ends (or `max_steps` more steps, or a stop request). Returns the final state:
        "succeeded" or "stopped". `progress(step, total, logs)` is called after every step (CLI bar)."""
        self.writer.put_json("config.json", self.cfg.to_dict())
        self.writer.put_json("data.json", self.data.counts.to_dict())  # N files -> M clips, for reports
        if not self.metrics["lsd"] and self.dist.is_main:
            self.metrics["lsd_step"].append(0)
            self.metrics["lsd"].append(self.lsd())
        end = self.total if max_steps is None else min(self.total, self.step + max_steps)
        every, log_every = self.cfg.train.checkpointEvery, self.cfg.train.logEvery
        clock, samples = RunClock(self.step), 0
        logs: dict[str, float] = {}
        self._progress("running", logs, 0.0, clock)
        while self.step < end and not self.stop_requested.any_rank(self.dist):
            logs = self.train_step()
            samples += logs["batch"]
            if progress:
                progress(self.step, self.total, logs)
            if not all(math.isfinite(logs[k]) for k in ("loss_d", "loss_g")):
                self._progress("failed", logs, 0.0, clock, error=f"loss diverged at step {self.step}: {logs}")
                raise SmfError(
                    f"{self.run_id}: loss diverged at step {self.step} (loss_d={logs['loss_d']}); "
                    "lower modelConfig.baseLearningRate"
                )
            if self.step % log_every == 0 or self.step == end:
                for k in ("loss_d", "loss_g", "wdist", "gp"):
                    self.metrics[k].append(logs[k])
                self.metrics["step"].append(self.step)
                self._progress("running", logs, samples / max(clock.elapsed(), 1e-9), clock)
            if self.step % every == 0 and self.step < end:
                self.save_checkpoint(logs)
        stopped = self.step < self.total
        self.save_checkpoint(logs)
        state = "stopped" if stopped else "succeeded"
        # "cancelled" = stopped early (SIGTERM, --max-steps): the run is resumable, nothing failed
        self._progress(
            "cancelled" if stopped else "succeeded",
            logs,
            samples / max(clock.elapsed(), 1e-9),
            clock,
            message=(f"stopped at step {self.step}; run again to resume" if stopped else None),
        )
        self._commit()
        self.batches.close()
        self.dist.barrier()  # no rank reports done before rank 0's last write
        return state

    def save_checkpoint(self, logs: dict | None = None) -> str | None:
        if not self.dist.is_main:
            return None
        self.metrics["lsd_step"].append(self.step)
        self.metrics["lsd"].append(self.lsd())
        scale, _ = self.scale_at(max(self.step - 1, 0))
        ck = {
            "model": self.gan.state_dict(),
            "optimizer": {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()},
            "scale": scale,
            "alpha": self.alpha_at(max(self.step - 1, 0)),
            "step": self.step,
            "config": self.cfg.to_dict(),
            "args": self.args.to_dict(),
            "classes": self.data.classes or {},
            "rng": self.gen.get_state(),
            "metrics": self.metrics,
        }
        key = self.writer.save_checkpoint(self.step, ck)  # and the oldest beyond KEEP_CHECKPOINTS go
        self.writer.put_json(
            "model.json",
            {
                "checkpoint": key,
                "step": self.step,
                "scale": ck["scale"],
                "alpha": ck["alpha"],
                "args": ck["args"],
                "classes": ck["classes"],
            },
        )
        self._plots()
        self._commit()
        self.log(f"{self.run_id}: checkpoint {key} (lsd {self.metrics['lsd'][-1]:.4f})")
        return key

    # --- outputs ---
    def _commit(self) -> None:
        """(Re)write the run's manifest over everything under gan/<run>; progress.json changes afterwards while
        training goes on, so the final commit comes after the final progress.json."""
        self.writer.commit(
            config=self.cfg.to_dict(),
            inputs=[self.data.source] if self.data.source and "://" not in self.data.source else [],
        )

    def _progress(
        self,
        state: str,
        logs: dict,
        sps: float,
        clock: RunClock,
        *,
        error: str | None = None,
        message: str | None = None,
    ) -> None:
        if not self.dist.is_main:
            return
        eta = clock.eta(self.step, self.total) or 0.0
        scale, _ = self.scale_at(max(self.step - 1, 0))
        metrics = {k: float(logs[k]) for k in ("loss_d", "loss_g", "wdist", "gp") if k in logs}
        metrics.update(scale=float(scale), alpha=float(self.alpha_at(max(self.step - 1, 0))))
        if self.metrics["lsd"]:
            metrics["lsd"] = float(self.metrics["lsd"][-1])
        failed = {"error": error, "error_code": "INTERNAL"} if error else {}
        self.writer.progress(
            state,
            step=self.step,
            total=self.total,
            loss=metrics.get("loss_d", 0.0),
            message=message or f"scale {scale}/{self.cfg.model.n_scales - 1}, step {self.step}/{self.total}",
            metrics=metrics,
            samples_per_second=sps,
            eta_seconds=eta if state == "running" else 0.0,
            scale=scale,
            alpha=metrics["alpha"],
            data=self.data.counts.to_dict(),
            **failed,
        )

    def _plots(self) -> None:
        plt = pyplot()
        m = self.metrics
        self.writer.put_png(
            f"plots/loss-step-{self.step}.png",
            loss_plot(
                m["step"],
                {k: m[k] for k in ("loss_d", "loss_g", "wdist")},
                title=f"{self.run_id} — step {self.step}",
                right=("lsd (right)", m["lsd_step"], m["lsd"]),
            ),
        )

        scale, _ = self.scale_at(max(self.step - 1, 0))
        spec = self.gan.spectrogram(self.preview_z.to(self.device), scale, self.alpha_at(max(self.step - 1, 0)))
        spec = spec.cpu()
        cols = min(4, len(spec))
        rows = math.ceil(len(spec) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 1.6 * rows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < len(spec):
                ax.imshow(spec[i].numpy(), origin="lower", aspect="auto", vmin=-1, vmax=1, cmap="magma")
        fig.suptitle(f"preview, step {self.step} (scale {scale})", fontsize=8)
        self.writer.put_png(f"plots/preview-step-{self.step}.png", figure_png(fig))


# --- command line -----------------------------------------------------------------------------------------------------
def _read_config(src: str, store: Store | None = None) -> GanConfig:
    if refs.is_uri(src):  # a config stored in the store (what the server hands to a Job)
        home, key = refs.resolve_key(store, src, field="--config", allowed=refs.ANY)
        return parse_config(home.get_bytes(key), source=src)
    return load_config(src)


def main(argv: list[str] | None = None) -> int:
    """The job's entry point; its exit status follows smf.common.training (0 done or --max-steps reached, 2 bad
    config/data, 128 + signum when stopped after a checkpoint)."""
    p = argparse.ArgumentParser(prog="python -m smf.gan.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="SMF JSON config (path or store URI)")
    p.add_argument("--out", help="artifact URI of the run, e.g. file:///data/store/gan/run1 or s3://b/p/gan/run1")
    p.add_argument("--store", help="store URI (default $SMF_STORE); with --run instead of --out")
    p.add_argument("--run", help="run name; the run is gan/<run> in the store")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (then resume later)")
    args = p.parse_args(argv)
    dist, location = Dist(), None
    try:
        location = store, run_id = run_location(args.out, store=args.store, run=args.run, kind="gan")
        cfg = _read_config(args.config)
        dist = init(cfg.train.device)  # one process, or this rank of a torchrun job
        for key in cfg.ignored if dist.is_main else ():
            print(f"note: {key} is accepted for compatibility but not used by smf", file=sys.stderr)
        trainer = Trainer(cfg, store, run_id, dist=dist, log=lambda *m: print(*m, flush=True))
        stop = trainer.stop_requested.install()  # from here on a signal finishes the step, saves and exits
        trainer.log(
            f"training {run_id} in {store.uri} on {trainer.device}"
            f"{f' x {dist.world_size} processes ({dist.backend})' if dist.enabled else ''}: "
            f"{trainer.total} steps, {len(trainer.data)} clips"
        )
        state = trainer.run(args.max_steps)
    except SmfError as exc:
        print(f"smf.gan.train: error: {exc.message}", file=sys.stderr)
        if location is not None:  # so a service following the run can report it
            RunWriter(*location, kind="gan", dist=dist).fail(exc, step=0, total=0)
        return exit_code(exc)
    finally:
        dist.close()
    trainer.log(f"{state}: {store.key_uri(run_id)} (step {trainer.step}/{trainer.total})")
    return EXIT_DONE if state == "succeeded" else stop.exit_code()


if __name__ == "__main__":
    sys.exit(main())
