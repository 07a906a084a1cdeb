"""The `rnn/<run>` layout as RnnService and `smf rnn` use it: naming, listing, loading, exporting, submitting runs.

    store, run_id = resolve_run(store, "tones")              # (store, "rnn/tones"); a URI names its own store
    summaries = list_runs(store)                             # [RunSummary]: runs with checkpoints, no weights read
    models = ModelCache(store, device="cpu", precision="fp32")
    loaded = models.load("rnn/tones")                        # LoadedRnn: newest checkpoint + its generator, cached
    uri = export_run(store, run_id, loaded)                  # TorchScript archive at rnn/tones/export/model.ts

    cfg, run_id = prepare_run(fields, "tones")               # submitting (StartTraining, `smf rnn train`): check
    job = launch_training(store, cfg, run_id, gpus=1)        #   (the service) train as a job
    progress = read_progress(store, run_id, since=started)   #   what the job reported, once it is this job's

The servicer turns requests into these calls and their results into messages; the command line calls them directly
(local mode) instead of building a servicer. The layout itself (config.json, ckpt/step-<n>.pt, progress.json, plots/,
manifest.json) is written by `smf.rnn.train` through `smf.common.training`.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from smf.common import jobs, lineage, refs
from smf.common.errors import InvalidArgument, NotFound
from smf.common.store import Store
from smf.common.training import checkpoint_steps
from smf.rnn.model import RNNConfig, build_model
from smf.rnn.train import TrainConfig, load_run

__all__ = [
    "LoadedRnn",
    "ModelCache",
    "RunSummary",
    "export_run",
    "launch_training",
    "list_runs",
    "prepare_run",
    "read_json",
    "read_progress",
    "resolve_run",
    "run_id_for",
    "run_id_of",
    "run_ids",
]


# --- naming a run ----------------------------------------------------------------------------------------------------
def run_id_of(model: str) -> str:
    """'name', 'rnn/name' or 'rnn/name/' -> 'rnn/name' (the run's artifact id)."""
    return refs.artifact_id(model.strip(), "rnn", field="model")


def resolve_run(store: Store, model: str, *, allowed: refs.Allowed = None) -> tuple[Store, str]:
    """(store holding it, 'rnn/<name>') for a run name, id or artifact URI (in `store`, or in `allowed`: ANY for
    the CLI)."""
    return refs.resolve(store, model.strip(), "rnn", field="model", allowed=allowed)


def run_id_for(name: str = "") -> str:
    """The run id a submission trains: `rnn/<name>` (the same name resumes), a new `rnn/<id>` when none is given."""
    return run_id_of(name) if name else lineage.new_id("rnn/")


# --- listing ---------------------------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """What ListModels / `smf rnn ls` show of a run, from its config.json and progress.json (no weights read)."""

    run_id: str
    uri: str
    param_names: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    sample_rate: int = 0
    hidden: int = 0
    layers: int = 0
    state: str = ""
    loss: float = 0.0


def read_json(store: Store, key: str) -> dict:
    """A JSON object of the store, {} when absent."""
    try:
        return json.loads(store.get_bytes(key))
    except NotFound:
        return {}


def run_ids(store: Store) -> list[str]:
    """Ids of the runs that have a checkpoint, sorted."""
    return sorted(
        {"/".join(p[:2]) for p in (k.split("/") for k in store.list("rnn/")) if len(p) >= 4 and p[2] == "ckpt"}
    )


def list_runs(store: Store) -> list[RunSummary]:
    """Every run that has a checkpoint, by id."""
    out = []
    for run_id in run_ids(store):
        config = read_json(store, f"{run_id}/config.json")
        progress = read_json(store, f"{run_id}/progress.json")
        mcfg = config.get("model", {})
        out.append(
            RunSummary(
                run_id=run_id,
                uri=store.key_uri(run_id),
                param_names=list(mcfg.get("param_names", config.get("props", []))),
                steps=checkpoint_steps(store, run_id),
                sample_rate=mcfg.get("sample_rate", 0),
                hidden=mcfg.get("hidden", 0),
                layers=mcfg.get("layers", 0),
                state=progress.get("state", ""),
                loss=progress.get("loss") or 0.0,
            )
        )
    return out


# --- loading for generation ------------------------------------------------------------------------------------------
class LoadedRnn:
    """A checkpoint in memory plus its generator (built once: the compiled kernel packs the weights)."""

    def __init__(self, run_id: str, step: int, model: torch.nn.Module, config: RNNConfig, precision: str = "fp32"):
        self.run_id, self.step, self.model, self.config = run_id, step, model, config
        self.precision = precision
        self._generator = None
        self._lock = threading.Lock()

    @property
    def generator(self):
        from smf.rnn.generate import Generator

        with self._lock:
            if self._generator is None:
                self._generator = Generator(self.model, precision=self.precision)
            return self._generator


class ModelCache:
    """Loaded runs by (run URI, step), least recently used evicted beyond `size`. Thread-safe."""

    def __init__(self, store: Store, *, device: str | torch.device = "cpu", precision: str = "fp32", size: int = 4):
        self.store, self.device, self.precision, self.size = store, torch.device(device), precision, size
        self._cache: OrderedDict[tuple[str, int], LoadedRnn] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, model: str, step: int = 0) -> LoadedRnn:
        """A run's checkpoint as an eval-mode model (newest when step is 0); NotFound when it has none."""
        store, run_id = resolve_run(self.store, model)
        steps = checkpoint_steps(store, run_id)
        if not steps:
            raise NotFound(f"model {run_id} has no checkpoints in {store.uri}")
        step = step or steps[-1]
        key = (store.key_uri(run_id), step)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        net, step = load_run(store, run_id, step)
        loaded = LoadedRnn(run_id, step, net.to(self.device), net.config, self.precision)
        with self._lock:
            self._cache[key] = loaded
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return loaded


def export_run(store: Store, run_id: str, loaded: LoadedRnn) -> str:
    """Write the TorchScript archive of a loaded run to `<run>/export/model.ts` in `store`; returns its URI."""
    from smf.rnn.export import export_to_store

    # export from a CPU copy: the archive must load in a plain CPU torch process
    model = build_model(loaded.config)
    model.load_state_dict({k: v.cpu() for k, v in loaded.model.state_dict().items()})
    return export_to_store(model.eval(), store, f"{run_id}/export/model.ts")


# --- submitting a run ------------------------------------------------------------------------------------------------
def prepare_run(fields: dict, name: str = "") -> tuple[TrainConfig, str]:
    """Check a training submission: its TrainConfig fields and the run it trains -> (config, run id).

    Shared by StartTraining (which then launches the job) and `smf rnn train` (which then trains here): no data is
    INVALID_ARGUMENT "data"; unknown keys and bad values fail in TrainConfig.from_dict, before any job starts.
    """
    if "data" not in fields:
        raise InvalidArgument("data", "is required: a dataset or grid id (datasets/tones, grids/<id>) or store URI")
    cfg = TrainConfig.from_dict(fields)
    return cfg, run_id_for(name)


def launch_training(
    store: Store,
    cfg: TrainConfig,
    run_id: str,
    *,
    env: dict[str, str] | None = None,
    gpus: int = 0,
    backend=None,
) -> jobs.JobHandle:
    """Start `python -m smf.rnn.train` for a prepared run as a job (the config travels inline)."""
    return jobs.launch(
        "rnn",
        ["--config", json.dumps(cfg.__dict__), "--out", store.key_uri(run_id)],
        name=run_id.split("/", 1)[1][:63].strip("._-") or "rnn",
        env=env,
        gpus=gpus,
        backend=backend,
    )


def read_progress(store: Store, run_id: str, *, since: float = 0.0) -> dict:
    """The run's progress.json, {} when there is none or it is older than `since` (Unix seconds): a progress.json
    left by an earlier run of the same id says nothing about the job started at `since`."""
    p = read_json(store, f"{run_id}/progress.json")
    return p if p.get("updated_at", 0) >= since - 1 else {}
