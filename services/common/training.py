"""The training-run writer every trainer uses: checkpoints, progress.json, the loss plot, the stop signal, exit codes.

    store, run_id = run_location(args.out, store=args.store, run=args.run, kind="rnn")   # --out / --run
    stop = StopSignal().install()                         # SIGTERM/SIGINT: finish the step, save, exit
    run = RunWriter(store, run_id, kind="rnn", dist=dist, keep=3)
    found = run.latest_checkpoint(map_location=device)    # (key, dict) of the newest checkpoint, or None
    clock = RunClock(step)                                # steps/s and ETA since this process started
    while step < total and not stop.any_rank(dist): ...
        run.save_checkpoint(step, {"model": ..., "optimizer": ..., "step": step, ...})   # then the oldest go
        run.put_png("plots/loss.png", loss_plot(steps, {"batch loss": losses}, smooth=True))
        run.progress("running", step=step, total=total, loss=loss, eta_seconds=clock.eta(step, total), ...)
    return stop.exit_code()                               # 0, or 128 + the signal that stopped the run

Layout under the run prefix: `ckpt/step-<n>.pt` (one torch dict, loaded with weights_only=True), `progress.json`,
`plots/*.png`, `manifest.json` (commit). Only rank 0 writes: on the other ranks of a torchrun job every write method
of RunWriter does nothing, so a trainer calls them without asking which rank it is.

progress.json holds what `smf.common.operations.ExternalStatus.from_progress` relays (step, total, loss, message,
metrics, eta_seconds, samples_per_second, result_uris, error, error_code, state) plus `run` and `updated_at` (Unix
seconds, so a service can tell a progress.json of this job from one an earlier job of the same run left) and
whatever the trainer adds (scale, tfr, device, ...).

Exit codes of `python -m smf.<kind>.train` (what a Kubernetes podFailurePolicy or a local job reads):
    0            done: the schedule ended, or the --max-steps asked for were trained
    1            a bug (an uncaught exception: Python's own status) or a dependency down (Unavailable): a retry may help
    2            the command line, config or data is wrong (any other SmfError): a retry cannot help, the Job fails
    128 + signum stopped by SIGTERM (143) or SIGINT (130) after saving a checkpoint: not finished, resume me
"""

from __future__ import annotations

import io
import json
import re
import signal
import tempfile
import threading
import time
from pathlib import Path

import torch
from smf.common import refs
from smf.common.distributed import Dist
from smf.common.errors import InvalidArgument, SmfError, Unavailable
from smf.common.store import Store

EXIT_DONE = 0
EXIT_BUG = 1
EXIT_USER_ERROR = 2


def exit_code(exc: BaseException) -> int:
    """The exit status for an exception that ended a trainer: `sys.exit(exit_code(exc))`."""
    if isinstance(exc, SmfError) and not isinstance(exc, Unavailable):
        return EXIT_USER_ERROR
    return EXIT_BUG


# --- where the run lives ----------------------------------------------------------------------------------------------
def run_location(out: str | None, *, store: str | None = None, run: str | None = None, kind: str) -> tuple[Store, str]:
    """(store, run id) from a trainer's command line: `--out URI` (store and run in one), `--out <kind>/<run>` or
    `--run <run>` in `--store` (default $SMF_STORE). `run_location(None, run="r1", kind="gan")` -> (store, "gan/r1")."""
    if out:  # the trainer writes where its command line says: any store
        return refs.resolve(store, out, kind, field="--out", allowed=refs.ANY)
    if run:
        return refs.resolve(store, run, kind, field="--run")
    raise InvalidArgument("--out", "give --out ARTIFACT_URI or --run NAME")


# --- checkpoints (also what readers of a run use) ---------------------------------------------------------------------
def ckpt_key(run_id: str, step: int) -> str:
    return f"{run_id}/ckpt/step-{step}.pt"


def checkpoint_steps(store: Store, run_id: str) -> list[int]:
    """Steps of the checkpoints stored for a run, ascending."""
    pattern = re.compile(re.escape(run_id) + r"/ckpt/step-(\d+)\.pt")
    return sorted(int(m.group(1)) for key in store.list(f"{run_id}/ckpt/") if (m := pattern.fullmatch(key)))


def checkpoint_keys(store: Store, run_id: str) -> list[str]:
    """Checkpoint keys of a run, oldest first (by step number)."""
    return [ckpt_key(run_id, s) for s in checkpoint_steps(store, run_id)]


def read_checkpoint(store: Store, key: str, map_location="cpu") -> dict:
    """One checkpoint dict; weights_only: tensors and plain containers, never pickled code."""
    return torch.load(io.BytesIO(store.get_bytes(key)), map_location=map_location, weights_only=True)


# --- the stop signal --------------------------------------------------------------------------------------------------
class StopSignal:
    """SIGTERM/SIGINT -> finish the current step, save a checkpoint, exit 128 + signum (a Kubernetes preemption, a
    cancelled job, Ctrl-C). `StopSignal().install()`; `stop.set()` asks the same from code (tests, a CLI)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None

    def install(self, signals=(signal.SIGTERM, signal.SIGINT)) -> StopSignal:
        for s in signals:
            signal.signal(s, self)
        return self

    def __call__(self, signum, frame=None) -> None:  # the signal handler
        self.set(signum)

    def set(self, signum: int = signal.SIGTERM) -> None:
        self.signum = self.signum or signum
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def any_rank(self, dist: Dist) -> bool:
        """True on every rank once any rank saw the signal, so all stop after the same step (a rank that went on
        would wait forever in the next all-reduce). Collective: every rank calls it at the same point."""
        if dist.any(self.is_set()) and not self.is_set():
            self.set()  # another rank's signal; torchrun forwards SIGTERM
        return self.is_set()

    def exit_code(self) -> int:
        """128 + the signal that stopped the run, EXIT_DONE when none did."""
        return 128 + self.signum if self.signum else EXIT_DONE


# --- progress ---------------------------------------------------------------------------------------------------------
class RunClock:
    """Steps per second and ETA of this process's part of a run: `RunClock(start_step)`, `.eta(step, total)`."""

    def __init__(self, start_step: int = 0) -> None:
        self.t0, self.start_step = time.monotonic(), start_step

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def rate(self, step: int) -> float:
        """Steps per second since the clock started (0.0 before the first step)."""
        elapsed = self.elapsed()
        return (step - self.start_step) / elapsed if elapsed > 0 else 0.0

    def eta(self, step: int, total: int) -> float | None:
        """Seconds left at the current rate; None while there is no rate yet."""
        rate = self.rate(step)
        return (total - step) / rate if rate > 0 else None


# --- plots ------------------------------------------------------------------------------------------------------------
def pyplot():
    """matplotlib.pyplot on the Agg backend (for figures a trainer draws itself)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a training node
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig, dpi: int = 80) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def loss_plot(
    steps: list[int],
    curves: dict[str, list[float]],
    *,
    ylabel: str = "loss",
    title: str | None = None,
    smooth: bool = False,
    right: tuple[str, list[int], list[float]] | None = None,
) -> bytes:
    """The loss plot of a run as PNG: one line per curve over `steps`; `smooth` adds a running mean per curve (once
    there are 20 points); `right` = (label, steps, values) on a second axis (the GAN's log-spectral distance).
    `loss_plot([1, 2, 3], {"loss": [5.1, 4.0, 3.2]})`"""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in curves.items():
        ax.plot(steps, values, lw=0.6 if smooth else 1, alpha=0.5 if smooth else 1, label=name)
        if smooth and len(values) >= 20:
            k = max(len(values) // 50, 5)
            mean = torch.tensor(values).unfold(0, k, 1).mean(1).tolist()
            ax.plot(steps[k - 1 :], mean, lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)
    if right is not None:
        label, right_steps, values = right
        ax2 = ax.twinx()
        ax2.plot(right_steps, values, "k--o", ms=3, label=label)
        ax2.legend(loc="upper right", fontsize=7)
    if title:
        ax.set_title(title)
    return figure_png(fig, dpi=100)


# --- the writer -------------------------------------------------------------------------------------------------------
class RunWriter:
    """Everything a trainer writes under `<kind>/<run>/` in the store, on rank 0 only (a no-op on the other ranks).

    `RunWriter(store, "gan/run1", kind="gan", dist=dist, keep=3)`; `keep` = how many newest checkpoints stay in the
    store after each save (0 keeps all)."""

    def __init__(self, store: Store, run_id: str, *, kind: str, dist: Dist | None = None, keep: int = 3) -> None:
        self.dist = dist or Dist()
        self.store, self.run_id, self.kind, self.keep = store, run_id.strip("/"), kind, keep

    @property
    def writes(self) -> bool:
        return self.dist.is_main

    def key(self, name: str) -> str:
        return f"{self.run_id}/{name}"

    # reading (every rank)
    def checkpoint_steps(self) -> list[int]:
        return checkpoint_steps(self.store, self.run_id)

    def latest_checkpoint(self, map_location="cpu") -> tuple[str, dict] | None:
        """(key, dict) of the run's newest checkpoint, None for a new run."""
        steps = self.checkpoint_steps()
        if not steps:
            return None
        key = ckpt_key(self.run_id, steps[-1])
        return key, read_checkpoint(self.store, key, map_location=map_location)

    # writing (rank 0)
    def save_checkpoint(self, step: int, state: dict) -> str:
        """Write `ckpt/step-<step>.pt`, then delete all but the newest `keep`. Returns the key."""
        key = ckpt_key(self.run_id, step)
        if not self.writes:
            return key
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ckpt.pt"
            torch.save(state, path)
            self.store.put_file(key, path)  # atomic: readers see the old checkpoint or the whole new one
        if self.keep:
            for old in self.checkpoint_steps()[: -self.keep]:
                self.store.delete(ckpt_key(self.run_id, old))
        return key

    def put_json(self, name: str, obj) -> None:
        if self.writes:
            data = (json.dumps(obj, indent=2) + "\n").encode()
            self.store.put_bytes(self.key(name), data, content_type="application/json")

    def put_png(self, name: str, data: bytes) -> None:
        if self.writes:
            self.store.put_bytes(self.key(name), data, content_type="image/png")

    def progress(
        self,
        state: str,
        *,
        step: int,
        total: int,
        loss: float | None,
        message: str,
        metrics: dict | None = None,
        samples_per_second: float = 0.0,
        eta_seconds: float | None = None,
        **extra,
    ) -> dict:
        """Write progress.json; returns it (on every rank). `state`: running | succeeded | the trainer's word for
        stopped-and-resumable | failed. A succeeded run names its artifact in result_uris."""
        p = {
            "run": self.run_id,
            "state": state,
            "step": step,
            "total": total,
            "loss": loss,
            "message": message,
            "metrics": metrics or {},
            "samples_per_second": samples_per_second,
            "eta_seconds": eta_seconds,
            **extra,
            "updated_at": time.time(),
            "result_uris": [self.store.key_uri(self.run_id)] if state == "succeeded" else [],
        }
        self.put_json("progress.json", p)
        return p

    def fail(self, exc: SmfError, **extra) -> None:
        """Record the error that ended the run in progress.json, so a service following the run reports it (with
        its status code). Best effort: the store may be what failed."""
        body = {
            "run": self.run_id,
            "state": "failed",
            "error": exc.message,
            "error_code": exc.code.name,
            **extra,
            "updated_at": time.time(),
        }
        try:
            self.put_json("progress.json", body)
        except (SmfError, OSError):
            pass

    def commit(self, *, config: dict, inputs: list[str]) -> None:
        """(Re)write the run's manifest over every file now under it: the commit point of the newest checkpoint."""
        if self.writes:
            from smf.common.lineage import commit_artifact

            commit_artifact(self.store, self.kind, self.run_id, config=config, inputs=inputs, service=self.kind)
