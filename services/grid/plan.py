"""A grid request checked and resolved: corner latents read, models compared, the latent grid built.

Shared by the grid service (CreateGrid) and `smf grid 2d4pt` run locally; everything is validated before anything
is rendered or written, and every error names the request field at fault:

    plan = plan_grid(store, model="run1", corners=["samples/<id>/0", "samples/<id>/1", z2_tensor, "s3://…/3.pt"],
                     d0=21, d1=21, latent_dim=lambda model: 16)
    render_plan(store, plan, render_fn, sample_rate=16000)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from smf.common.errors import InvalidArgument, NotFound
from smf.common.latents import latent_from_bytes, read_latent
from smf.common.lineage import Manifest, new_id, read_manifest
from smf.common.refs import Allowed, artifact_id, is_uri, resolve, resolve_key
from smf.common.store import Store
from smf.grid.grid import INTERPOLATIONS, grid_latents, validate_corners, validate_shape, variations
from smf.grid.render import render_grid

MAX_VARIATIONS = 16
MAX_CELLS = 65536  # sounds per grid, variations included
DEFAULT_SPREAD = 0.1


@dataclass
class Corner:
    latent: torch.Tensor
    source: str  # what the user gave ("inline" for values)
    artifact: str | None = None  # the samples/<id> artifact it came from, when there is one
    model: str | None = None  # "gan/<name>" that made it, when its manifest says so


@dataclass
class GridPlan:
    grid_id: str
    model: str  # "gan/<name>"
    latents: torch.Tensor  # [d1, d0, K, dim]
    pm: bool
    inputs: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def model_id(model: str, store: Store | None = None, *, allowed: Allowed = None) -> str:
    """'run1', 'gan/run1' or an artifact URI (in `store` or `allowed`) -> 'gan/run1' (the form manifests use)."""
    if is_uri(model):
        return resolve(store, model, "gan", field="model", allowed=allowed)[1]
    return artifact_id(model, "gan", field="model")


def _corner_model(store: Store, artifact: str) -> str | None:
    """The model a samples/renders artifact was made with, from its manifest (None when it does not say)."""
    try:
        manifest = read_manifest(store, artifact)
    except (NotFound, InvalidArgument):
        return None
    cfg = manifest.config if isinstance(manifest.config, dict) else {}
    if isinstance(cfg.get("model"), str):
        return model_id(cfg["model"])
    gans = [i for i in manifest.inputs if i.startswith("gan/")]
    return gans[0] if len(gans) == 1 else None


def resolve_corner(store: Store, corner, *, fld: str, allow_local: bool = False, allowed: Allowed = None) -> Corner:
    """One corner from a tensor / list of floats, a store URI or key, a sample id ('samples/<id>/3'), or (CLI
    only, `allow_local`) a local .pt file. A URI outside `store` must be in `allowed` (ANY for the CLI)."""
    if isinstance(corner, torch.Tensor) or (isinstance(corner, (list, tuple)) and corner):
        return Corner(torch.as_tensor(corner, dtype=torch.float32).flatten(), "inline")
    if not isinstance(corner, str) or not corner:
        raise InvalidArgument(fld, "give a latent: a store URI, a sample id like samples/<id>/3, or values")
    if allow_local and not is_uri(corner) and Path(corner).is_file():
        path = os.path.abspath(corner)
        return Corner(latent_from_bytes(Path(path).read_bytes(), source=path, field=fld), path)
    src_store, key = resolve_key(store, corner, field=fld, allowed=allowed)
    if not key.endswith(".pt"):
        key += ".pt"  # sample id samples/<id>/3 -> its latent samples/<id>/3.pt
    latent = read_latent(src_store, key, field=fld)
    artifact = key.rsplit("/", 1)[0] if "/" in key else None
    model = _corner_model(src_store, artifact) if artifact else None
    return Corner(latent, corner, artifact if src_store is store else src_store.key_uri(artifact or ""), model)


def plan_grid(
    store: Store,
    *,
    corners: Sequence,
    d0: int,
    d1: int,
    model: str = "",
    pm: bool = True,
    n_variations: int = 1,
    spread: float = 0.0,
    seed: int = 0,
    interpolation: str = "linear",
    grid_id: str = "",
    latent_dim: Callable[[str], int] | None = None,
    allow_local: bool = False,
    allowed: Allowed = None,
) -> GridPlan:
    """Check a grid request and build its latents. `latent_dim(model)` gives the model's latent length (NotFound
    for an unknown model); corners must match it. URIs (of corners, of the model) outside `store` must lie in
    `allowed`: None for a service, ANY for the CLI."""
    interpolation, n_variations, spread = _check_options(d0, d1, n_variations, spread, interpolation)
    grid_id = _new_grid_id(store, grid_id)
    if len(corners) != 4:
        raise InvalidArgument("corners", f"need exactly 4 corners (z0, z1, z2, z3), got {len(corners)}")
    fields = tuple(f"corners[{n}]" for n in range(4))
    resolved = [
        resolve_corner(store, c, fld=f, allow_local=allow_local, allowed=allowed)
        for c, f in zip(corners, fields, strict=False)
    ]
    dim = validate_corners([c.latent for c in resolved], fields=fields)
    run = _grid_model(store, model, dict(zip(fields, resolved, strict=False)), allowed)
    if latent_dim is not None:
        want = latent_dim(run)
        if want and dim != want:
            raise InvalidArgument(fields[0], f"latents have {dim} values, {run} takes {want}")

    z = grid_latents(*[c.latent for c in resolved], d0=d0, d1=d1, interpolation=interpolation)
    z = variations(z, n_variations, spread=spread, seed=seed)
    inputs = [run] + sorted({c.artifact for c in resolved if c.artifact})
    config = {
        "corners": [c.source for c in resolved],
        "corner_latents": [c.latent.tolist() for c in resolved],
        "interpolation": interpolation,
        "variation_spread": spread if n_variations > 1 else 0.0,
        "seed": seed,
    }
    return GridPlan(grid_id=grid_id, model=run, latents=z, pm=pm, inputs=inputs, config=config)


def render_plan(store: Store, plan: GridPlan, render_fn: Callable, *, sample_rate: int, **options) -> Manifest:
    """render_grid of what `plan` resolved (its latents, model, inputs, config, pm); `options` are render_grid's
    (on_progress, batch_size, service)."""
    return render_grid(
        store,
        plan.grid_id,
        plan.latents,
        render_fn,
        model=plan.model,
        sample_rate=sample_rate,
        inputs=plan.inputs,
        config=plan.config,
        pm=plan.pm,
        **options,
    )


def _check_options(d0: int, d1: int, n_variations: int, spread: float, interpolation: str) -> tuple[str, int, float]:
    """The grid's shape and variation options checked, defaults filled in: (interpolation, variations, spread)."""
    validate_shape(d0, d1)
    interpolation = interpolation or "linear"
    if interpolation not in INTERPOLATIONS:
        raise InvalidArgument("interpolation", f"must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    n_variations = n_variations or 1
    if not 1 <= n_variations <= MAX_VARIATIONS:
        raise InvalidArgument("variations", f"must be in 1..{MAX_VARIATIONS}, got {n_variations}")
    if d0 * d1 * n_variations > MAX_CELLS:
        raise InvalidArgument(
            "variations",
            f"{d0} x {d1} x {n_variations} = {d0 * d1 * n_variations} sounds; at most {MAX_CELLS} per grid",
        )
    spread = spread or DEFAULT_SPREAD
    if not (spread > 0 and spread < 100):
        raise InvalidArgument("variation_spread", f"must be a finite number > 0, got {spread}")
    return interpolation, n_variations, spread


def _new_grid_id(store: Store, grid_id: str) -> str:
    """The id the grid will have: the one asked for (refused if committed already), else a fresh one."""
    if not grid_id:
        return new_id("grids/")
    grid_id = resolve(store, grid_id, "grids", field="grid_id")[1]
    if store.exists(f"{grid_id}/manifest.json"):
        raise InvalidArgument("grid_id", f"{grid_id} already exists; choose another id")
    return grid_id


def _grid_model(store: Store, model: str, corners: dict[str, Corner], allowed: Allowed) -> str:
    """The grid's model: the one asked for, else the one the corners' manifests name; every corner that names
    one must agree (field, e.g. 'corners[2]', names the one that does not)."""
    known = [(f, c.model) for f, c in corners.items() if c.model]
    if model:
        run = model_id(model, store, allowed=allowed)
        for f, m in known:
            if m != run:
                raise InvalidArgument(f, f"was made with {m}, not with the grid's model {run}")
        return run
    if not known:
        raise InvalidArgument("model", "give the model: the corners do not say which model made them")
    first, run = known[0]
    for f, m in known[1:]:
        if m != run:
            raise InvalidArgument(f, f"corners come from different models: {first} from {run}, {f} from {m}")
    return run
