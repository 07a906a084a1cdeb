"""Linearize a stored grid with the GAN in the loop, and render the result as a new grid.

The orchestration around `smf.som.som.relax`: read the grid artifact (its latents and model), relax the mesh with a
render + features function, store `som/<id>/` (linearized.pt, metrics.json, plots/, manifest with inputs
[grid, model]); then `render_linearized` turns som/<id> into a grid artifact the auditioner opens.

    render = lambda z: gan.render_latents("run1", z, output="inline").audio       # np [N, dim] -> np [N, T]
    grid = load_grid(store, "grids/20261125-203000-ab12cd")
    out = linearize(store, grid, render, features="spectrogram", transform=model_transform(store, grid.model),
                    config=SomConfig(iterations=50))
    out.som_id, out.metrics["before"]["cov"], out.metrics["after"]["cov"]
    manifest = render_linearized(store, out.som_id, render, d0=21, d1=21, pm=True)   # grids/<new id>, "som-grid"

Functions take a store and a render function; gRPC lives in server.py. Departure from the original: the
"spectrogram" feature is the model's own transform applied to the rendered (PGHI-reconstructed) audio, not the
generator's raw output spectrogram, because the GAN service returns audio; re-analysing a consistent signal gives
the spectrogram the listener hears, close to but not bit-equal with the generator's output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from smf.common import refs
from smf.common.errors import AlreadyExists, Cancelled, FailedPrecondition, InvalidArgument, NotFound
from smf.common.latents import tensor_bytes, tensor_from_bytes
from smf.common.lineage import Manifest, new_id, read_json_file, read_manifest, write_artifact
from smf.common.store import Store
from smf.gan.runs import checkpoint_keys, model_transform
from smf.grid.render import read_grid, render_grid
from smf.som import plots
from smf.som.features import FeatureExtractor
from smf.som.som import DIRECTIONS, SomConfig, SomResult, relax

LINEARIZED = "linearized.pt"
METRICS = "metrics.json"
PLOT_FILES = {"mesh": "plots/mesh.png", "distances": "plots/distances.png", "convergence": "plots/convergence.png"}
RENDER_CHUNK = 1024  # latents per render call: below the GAN service's 4096 per request, and a bounded message

RenderFn = Callable[[np.ndarray], np.ndarray]  # latents [N, dim] float32 -> audio [N, T] float32


@dataclass
class GridSource:
    """What linearizing needs from a stored grid."""

    grid_id: str
    model: str  # "gan/<name>"
    d0: int
    d1: int
    sample_rate: int
    latents: torch.Tensor  # [d1, d0, dim]; variation 0 of each cell (the cell's own latent)
    doc: dict = field(repr=False, default_factory=dict)

    @property
    def latent_dim(self) -> int:
        return int(self.latents.shape[-1])


@dataclass
class Linearized:
    som_id: str
    manifest: Manifest
    metrics: dict
    result: SomResult


# --- ids -------------------------------------------------------------------------------------------------------------
def artifact_ref(store: Store, raw: str, kind: str, *, field: str) -> str:
    """'<kind>/<id>', '<id>' or an artifact URI in this store -> '<kind>/<id>' (InvalidArgument naming `field`;
    PermissionDenied for a URI in another store)."""
    return refs.resolve(store, raw, kind, field=field)[1]


def new_artifact_id(store: Store, raw: str, kind: str, *, field: str) -> str:
    """The id for a new artifact: `raw` checked (ALREADY_EXISTS if committed), or a fresh '<kind>/<id>'."""
    if not raw:
        return new_id(f"{kind}/")
    aid = artifact_ref(store, raw, kind, field=field)
    try:
        read_manifest(store, aid)
    except NotFound:
        return aid
    raise AlreadyExists(f"{field}: {aid} already exists in {store.uri}")


# --- inputs ----------------------------------------------------------------------------------------------------------
def _load_tensor(store: Store, key: str) -> torch.Tensor:
    return tensor_from_bytes(store.get_bytes(key), source=key)  # a stored artifact: FailedPrecondition if bad


def load_grid(store: Store, grid_id: str) -> GridSource:
    """Read a committed grid (NOT_FOUND if absent) and its latents."""
    doc = read_grid(store, grid_id)
    latents = _load_tensor(store, f"{grid_id}/{doc.get('latents') or 'latents.pt'}")
    if latents.dim() == 4:
        latents = latents[:, :, 0]  # variation 0 is the cell's own latent; the others are noise around it
    d0, d1 = int(doc["d0"]), int(doc["d1"])
    if latents.dim() != 3 or tuple(latents.shape[:2]) != (d1, d0):
        raise FailedPrecondition(f"{grid_id}: latents of shape {tuple(latents.shape)} do not match d1={d1}, d0={d0}")
    model = doc.get("model") or ""
    if not model:
        raise FailedPrecondition(f"{grid_id}: grid.json names no model")
    return GridSource(
        grid_id=grid_id,
        model=model,
        d0=d0,
        d1=d1,
        sample_rate=int(doc["sample_rate"]),
        latents=latents.float(),
        doc=doc,
    )


def require_model(store: Store, model: str, *, used_by: str) -> None:
    """FAILED_PRECONDITION naming the model when it has no checkpoint left (deleted, or never trained here)."""
    if not checkpoint_keys(store, model):
        raise FailedPrecondition(
            f"{used_by} was made with model {model}, which no longer exists in {store.uri} "
            "(deleted?); linearize a grid of an existing model"
        )


def render_in_chunks(render_fn: RenderFn, latents: torch.Tensor | np.ndarray) -> np.ndarray:
    """Render [N, dim] latents RENDER_CHUNK at a time; FAILED_PRECONDITION on NaN/inf audio (never passed on)."""
    z = np.asarray(torch.as_tensor(latents).detach().float().cpu().numpy(), dtype=np.float32)
    parts = [np.asarray(render_fn(z[i : i + RENDER_CHUNK]), dtype=np.float32) for i in range(0, len(z), RENDER_CHUNK)]
    audio = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    if audio.ndim != 2 or len(audio) != len(z):
        raise FailedPrecondition(f"the renderer returned audio of shape {audio.shape} for {len(z)} latents")
    if not np.isfinite(audio).all():
        raise FailedPrecondition("the model rendered NaN/inf audio for this mesh")
    return audio


def features_fn(render_fn: RenderFn, extractor: FeatureExtractor) -> Callable[[torch.Tensor], torch.Tensor]:
    """latents [N, dim] -> features [N, K]: render through the GAN, then measure."""

    def measure(latents: torch.Tensor) -> torch.Tensor:
        return extractor(torch.from_numpy(render_in_chunks(render_fn, latents)))

    return measure


# --- linearize -------------------------------------------------------------------------------------------------------
def adjacent_maps(dist: torch.Tensor) -> dict[str, list]:
    """Feature distances between 4-adjacent cells from relax's [R, C, 8]: horizontal [R, C-1], vertical [R-1, C]."""
    right = DIRECTIONS.index((0, -1))  # shift (0, -1) = the neighbour at j + 1
    down = DIRECTIONS.index((-1, 0))  # shift (-1, 0) = the neighbour at i + 1
    return {"horizontal": dist[:, :-1, right].tolist(), "vertical": dist[:-1, :, down].tolist()}


def linearize(
    store: Store,
    grid: GridSource,
    render_fn: RenderFn,
    *,
    config: SomConfig | None = None,
    features: str = "spectrogram",
    feature_weights: dict[str, float] | None = None,
    transform=None,
    seed: int = 0,
    som_id: str = "",
    on_iteration: Callable[[int, dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Linearized:
    """Relax `grid`'s latents with `render_fn` in the loop and store som/<id>; returns it with its metrics.

    `should_stop()` returning True cancels the run: nothing is stored (CANCELLED). Divergence is INVALID_ARGUMENT
    naming "step" (from relax), raised before the diverged mesh is ever rendered.
    """
    config = config or SomConfig()
    config.validate()
    if features == "spectrogram" and transform is None:
        transform = model_transform(store, grid.model)
    extractor = FeatureExtractor(features, sample_rate=grid.sample_rate, weights=feature_weights, transform=transform)
    som_id = new_artifact_id(store, som_id, "som", field="linearization_id")
    started = time.monotonic()
    result = relax(
        features_fn(render_fn, extractor), grid.latents, config, on_iteration=on_iteration, should_stop=should_stop
    )
    if should_stop is not None and should_stop():
        raise Cancelled(f"linearization of {grid.grid_id} cancelled after {result.iterations} iterations")
    elapsed = time.monotonic() - started
    latents = result.latents.float().contiguous()
    before, after = result.before, result.after
    metrics = {
        "grid": grid.grid_id,
        "model": grid.model,
        "d0": grid.d0,
        "d1": grid.d1,
        "latent_dim": grid.latent_dim,
        "sample_rate": grid.sample_rate,
        "features": extractor.describe(),
        "config": {**asdict(config), "effective_step": config.effective_step},
        "seed": seed,
        "iterations": result.iterations,
        "converged": result.converged,
        "elapsed_s": round(elapsed, 3),
        "before": before,
        "after": after,
        "cov_reduction": (1 - after["cov"] / before["cov"]) if before["cov"] > 0 else 0.0,
        "max_min_ratio_reduction": 1 - after["max_min_ratio"] / before["max_min_ratio"],
        "history": result.history,
        "adjacent_distances": {
            "before": adjacent_maps(result.distances_before),
            "after": adjacent_maps(result.distances_after),
        },
        "corners": grid.doc.get("corners"),
        "plots": list(PLOT_FILES.values()),
    }
    files: dict[str, bytes] = {
        LINEARIZED: tensor_bytes(latents),
        METRICS: json.dumps(metrics, indent=1).encode(),
        PLOT_FILES["mesh"]: plots.mesh_png(result.mesh2d_initial, result.mesh2d),
        PLOT_FILES["distances"]: plots.distances_png(metrics["adjacent_distances"]),
        PLOT_FILES["convergence"]: plots.convergence_png(result.history),
    }
    summary = {
        k: metrics[k]
        for k in (
            "grid",
            "model",
            "d0",
            "d1",
            "latent_dim",
            "sample_rate",
            "features",
            "config",
            "seed",
            "iterations",
            "converged",
            "before",
            "after",
        )
    }
    manifest = write_artifact(
        store, "som", som_id, files, config=summary, inputs=[grid.grid_id, grid.model], service="som"
    )
    return Linearized(som_id=som_id, manifest=manifest, metrics=metrics, result=result)


def read_metrics(store: Store, som_id: str) -> dict:
    """metrics.json of a committed linearization (NOT_FOUND if it has no manifest), with its creation time."""
    doc, manifest = read_json_file(store, som_id, METRICS, what="a linearization")
    doc["created_at"] = manifest.created_at
    return doc


# --- render ----------------------------------------------------------------------------------------------------------
def load_linearized(store: Store, som_id: str, *, d0: int = 0, d1: int = 0) -> tuple[torch.Tensor, dict]:
    """linearized.pt [d1, d0, dim] and metrics.json; d0/d1 (0 = any) must match the tensor, as in the original."""
    metrics = read_metrics(store, som_id)
    latents = _load_tensor(store, f"{som_id}/{LINEARIZED}")
    if latents.dim() != 3:
        raise FailedPrecondition(f"{som_id}/{LINEARIZED} has shape {tuple(latents.shape)}, not [d1, d0, dim]")
    rows, cols = latents.shape[:2]
    if d0 < 0 or (d0 and d0 != cols):
        raise InvalidArgument("d0", f"{som_id} is {cols} columns wide (d0={cols}), got d0={d0}")
    if d1 < 0 or (d1 and d1 != rows):
        raise InvalidArgument("d1", f"{som_id} has {rows} rows (d1={rows}), got d1={d1}")
    return latents.float(), metrics


def render_linearized(
    store: Store,
    som_id: str,
    render_fn: RenderFn,
    *,
    d0: int = 0,
    d1: int = 0,
    pm: bool = True,
    grid_id: str = "",
    on_progress: Callable[[int, int], None] | None = None,
    batch_size: int = 64,
) -> Manifest:
    """Render som/<id> through `render_fn` into a new grid artifact (kind "som-grid"), exactly like a grid."""
    latents, metrics = load_linearized(store, som_id, d0=d0, d1=d1)
    grid_id = new_artifact_id(store, grid_id, "grids", field="grid_id")
    model = metrics["model"]
    config = {
        "interpolation": "som",
        "linearization": som_id,
        "source_grid": metrics["grid"],
        "corners": metrics.get("corners") or [],
        "features": metrics["features"]["kind"],
        "evenness": {"before": metrics["before"], "after": metrics["after"]},
    }
    return render_grid(
        store,
        grid_id,
        latents,
        render_fn,
        model=model,
        sample_rate=int(metrics["sample_rate"]),
        inputs=[som_id, model],
        config=config,
        kind="som-grid",
        pm=pm,
        on_progress=on_progress,
        batch_size=batch_size,
        service="som",
    )
