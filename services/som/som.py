"""Mesh relaxation of a latent grid (the SMF "kmap" SOM), vectorised in torch.

A d1 x d0 mesh of latent points starts as the 4-corner grid. Every iteration renders each point (through the GAN,
via `features_fn`), measures the feature distance from each point to its 8 neighbours, and moves each point by a
weighted sum of the vectors to its neighbours; corners stay pinned, edge points slide along their edge lines.

Two update rules:

* ``rule="original"`` — the seed notebook's rule, bit-compatible with its quirks (edge-replicated feature padding,
  unnormalised edge projection, raw step): ``pos += step * sum_d dist_d * (pos_d - pos)``.
  At equilibrium ``dist * gap`` balances, and the step must be hand-tuned per model (1e-8 ... 0.025).
* ``rule="even"`` (default) — scale-free: ``pos += step * h * sum_d (dist_d / mean_dist) * unit(pos_d - pos)``,
  h = initial mesh spacing. At equilibrium the feature distances themselves balance (what "perceptually equidistant"
  asks for), and the same step works on any model because distances and moves are both normalised. Each move is
  capped at `max_move` x the distance to the nearest 4-neighbour so the mesh cannot fold over.

    result = relax(features_fn, latents0, iterations=200)     # latents0: [d1, d0, dim], e.g. grid_latents(...)
    result.latents                                            # [d1, d0, dim] -> linearized.pt
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from smf.common.errors import FailedPrecondition, InvalidArgument

# The 8 neighbour directions as np.roll shifts, in the seed notebook's order. A shift (-1, 0) brings the point at
# row i+1 to row i, i.e. the neighbour offset is the negated shift.
DIRECTIONS = [(-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1), (0, 1), (-1, 1)]
RULES = ("even", "original")
AXES = ("both", "dim0", "dim1")


def neighbour(t: torch.Tensor, shift: tuple[int, int]) -> torch.Tensor:
    """Each mesh point's neighbour in direction `shift` (np.roll convention), edges replicated: [R, C, ...]."""
    di, dj = -shift[0], -shift[1]
    R, C = t.shape[:2]
    rows = torch.arange(R).add(di).clamp(0, R - 1)
    cols = torch.arange(C).add(dj).clamp(0, C - 1)
    return t[rows][:, cols]


def padding_weights(shape: tuple[int, ...], dtype=torch.float64) -> torch.Tensor:
    """How often np.pad(..., 1, mode='edge') counts each feature element: the seed tool pads feature axes too."""
    w = torch.ones((), dtype=dtype)
    for n in shape:
        axis = torch.ones(n, dtype=dtype)
        axis[0] += 1
        axis[-1] += 1
        w = w.unsqueeze(-1) * axis
    return w


@functools.lru_cache(maxsize=16)
def _border_lookup(R: int, C: int) -> list[list[tuple[tuple[int, int], torch.Tensor]]]:
    """Per direction, which true offset each point's clamped neighbour sits at (as masks over the mesh)."""
    ii = torch.arange(R).unsqueeze(1).expand(R, C)
    jj = torch.arange(C).unsqueeze(0).expand(R, C)
    lookup = []
    for si, sj in DIRECTIONS:
        a = (ii - si).clamp(0, R - 1) - ii
        b = (jj - sj).clamp(0, C - 1) - jj
        parts = []
        for oa in (-1, 0, 1):
            for ob in (-1, 0, 1):
                mask = (a == oa) & (b == ob)
                if (oa, ob) != (0, 0) and mask.any():
                    parts.append(((oa, ob), mask))
        lookup.append(parts)
    return lookup


def neighbour_distances(features: torch.Tensor, *, faithful: bool = False, norm: str = "l2") -> torch.Tensor:
    """Feature distance from every point to each of its 8 neighbours: [R, C, 8] (0 across the mesh border).

    Only the 4 forward directions are computed; the other 4 are the same numbers seen from the other side.
    `faithful` reproduces the seed tool's double counting of the first/last entry of each feature axis.
    """
    R, C = features.shape[:2]
    feats = features.reshape(R, C, -1)
    weight = padding_weights(features.shape[2:], feats.dtype).reshape(-1) if faithful else None

    if weight is None:
        weight = feats.new_ones(feats.shape[-1])

    def dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # Row by row so each difference block stays small (cache-resident) and is reduced by one mat-vec:
        # whole-spectrogram features are large (441 x 33k doubles) and this is memory-bound.
        out = a.new_empty(a.shape[:2])
        for r in range(a.shape[0]):
            d = torch.sub(a[r], b[r])
            if norm == "l1":
                d.abs_()
            else:
                d.square_()
            out[r] = torch.mv(d, weight)
        return out if norm == "l1" else out.sqrt_()

    # distance from (i, j) to (i + a, j + b) for each offset, 0 where the neighbour is off the mesh
    down = dist(feats[:-1], feats[1:])  # (i,j) <-> (i+1,j)
    right = dist(feats[:, :-1], feats[:, 1:])  # (i,j) <-> (i,j+1)
    diag = dist(feats[:-1, :-1], feats[1:, 1:])  # (i,j) <-> (i+1,j+1)
    anti = dist(feats[:-1, 1:], feats[1:, :-1])  # (i,j+1) <-> (i+1,j)
    by_offset = {(a, b): features.new_zeros((R, C)) for a in (-1, 0, 1) for b in (-1, 0, 1)}
    by_offset[(1, 0)][:-1] = down
    by_offset[(-1, 0)][1:] = down
    by_offset[(0, 1)][:, :-1] = right
    by_offset[(0, -1)][:, 1:] = right
    by_offset[(1, 1)][:-1, :-1] = diag
    by_offset[(-1, -1)][1:, 1:] = diag
    by_offset[(1, -1)][:-1, 1:] = anti
    by_offset[(-1, 1)][1:, :-1] = anti
    # Edge replication: a neighbour off the mesh is the clamped point, so a diagonal across the border becomes the
    # lateral neighbour (and a straight step across it the point itself, distance 0) -- as np.pad(mode='edge') did.
    out = features.new_zeros((R, C, 8))
    for k, parts in enumerate(_border_lookup(R, C)):
        for offset, mask in parts:
            out[..., k] = torch.where(mask, by_offset[offset], out[..., k])
    return out


def adjacent_distances(features: torch.Tensor) -> torch.Tensor:
    """Plain L2 feature distances between 4-adjacent cells (horizontal then vertical), flattened."""
    R, C = features.shape[:2]
    f = features.reshape(R, C, -1).double()
    return torch.cat([(f[:, 1:] - f[:, :-1]).norm(dim=-1).reshape(-1), (f[1:] - f[:-1]).norm(dim=-1).reshape(-1)])


def evenness(features: torch.Tensor) -> dict[str, float]:
    """How even the grid sounds: coefficient of variation and max/min ratio of adjacent feature distances."""
    d = adjacent_distances(features)
    mean = d.mean().item()
    return {
        "cov": (d.std(unbiased=False).item() / mean) if mean > 0 else 0.0,
        "max_min_ratio": (d.max() / d.min().clamp_min(1e-12)).item(),
        "mean_distance": mean,
    }


def clamp_to_edges(dv: torch.Tensor, pos: torch.Tensor, *, faithful: bool) -> torch.Tensor:
    """Pin the corners; let edge points move only along their edge line."""
    dv = dv.clone()
    edges = [
        ((0, slice(1, -1)), pos[0, -1] - pos[0, 0]),  # top row
        ((-1, slice(1, -1)), pos[-1, -1] - pos[-1, 0]),  # bottom row
        ((slice(1, -1), 0), pos[-1, 0] - pos[0, 0]),  # left column
        ((slice(1, -1), -1), pos[-1, -1] - pos[0, -1]),  # right column
    ]
    for index, edge in edges:
        length = edge.norm()
        if length == 0:
            dv[index] = 0
            continue
        unit = edge / length
        # the seed tool dots with the unnormalised edge vector (moves then scale with the edge length)
        along = dv[index] @ (edge if faithful else unit)
        dv[index] = along.unsqueeze(-1) * unit
    for i in (0, -1):
        for j in (0, -1):
            dv[i, j] = 0
    return dv


def move_vectors(pos: torch.Tensor, dist: torch.Tensor, *, rule: str, directions: list[int]) -> torch.Tensor:
    """Σ_d weight_d · (neighbour_d − pos) for the chosen rule, before edge clamping: [R, C, D]."""
    dv = torch.zeros_like(pos)
    mean = None
    if rule == "even":
        positive = dist[dist > 0]
        mean = positive.mean() if positive.numel() else dist.new_tensor(1.0)
    for d in directions:
        gap = neighbour(pos, DIRECTIONS[d]) - pos
        w = dist[..., d].to(pos.dtype).unsqueeze(-1)
        if rule == "original":
            dv += w * gap
        else:
            length = gap.norm(dim=-1, keepdim=True)
            dv += (w / mean) * torch.where(length > 0, gap / length.clamp_min(1e-30), torch.zeros_like(gap))
    return dv


def nearest_neighbour_gap(pos: torch.Tensor) -> torch.Tensor:
    """Distance from each point to its nearest distinct 4-neighbour: [R, C]."""
    gaps = []
    for d in (0, 2, 4, 6):
        g = (neighbour(pos, DIRECTIONS[d]) - pos).norm(dim=-1)
        gaps.append(torch.where(g > 0, g, torch.full_like(g, float("inf"))))
    return torch.stack(gaps).min(dim=0).values


def mesh_2d(rows: int, cols: int, pos: torch.Tensor, *, dtype=torch.float64) -> torch.Tensor:
    """The seed tool's visualisation mesh: indices scaled by its (quirky) x/y spacings: [R, C, 2]."""
    xspacing = (pos[0, 1] - pos[0, 0]).norm()
    yspacing = (pos[1] - pos[0]).norm()  # over a whole row, as the seed tool did (~sqrt(cols) x node spacing)
    i, j = torch.meshgrid(torch.arange(rows, dtype=dtype), torch.arange(cols, dtype=dtype), indexing="ij")
    return torch.stack([j * xspacing.to(dtype), i * yspacing.to(dtype)], dim=-1)


@dataclass
class SomConfig:
    rule: str = "even"
    step: float | None = None  # None -> 0.1 for "even", 0.025 for "original"
    iterations: int = 200
    tolerance: float = 1e-4  # stop when the mean move (in mesh spacings) falls below this
    clamp_edges: bool = True
    axes: str = "both"  # "dim0": move only along rows (e.g. dim1 is pitch), "dim1": only along columns
    max_move: float = 0.25  # "even": cap a move at this fraction of the nearest-neighbour gap
    faithful_features: bool = False  # reproduce the seed tool's feature-axis padding quirk

    def validate(self) -> None:
        if self.rule not in RULES:
            raise InvalidArgument("rule", f"must be one of {RULES}, got {self.rule!r}")
        if self.axes not in AXES:
            raise InvalidArgument("axes", f"must be one of {AXES}, got {self.axes!r}")
        if self.step is not None and not (0 < self.step < float("inf")):
            raise InvalidArgument("step", f"must be a positive finite number, got {self.step}")
        if not 0 <= self.iterations <= 100_000:
            raise InvalidArgument("iterations", f"must be between 0 and 100000, got {self.iterations}")
        if not 0 < self.max_move <= 1:
            raise InvalidArgument("max_move", f"must be in (0, 1], got {self.max_move}")

    @property
    def effective_step(self) -> float:
        return self.step if self.step is not None else (0.1 if self.rule == "even" else 0.025)

    def direction_indices(self) -> list[int]:
        if self.axes == "dim0":
            return [2, 6]  # left/right neighbours only: points slide along their row
        if self.axes == "dim1":
            return [0, 4]
        return list(range(8))


@dataclass
class SomResult:
    latents: torch.Tensor  # [d1, d0, dim]
    mesh2d: torch.Tensor  # [d1, d0, 2], the visualisation mesh after relaxation
    mesh2d_initial: torch.Tensor
    before: dict[str, float]
    after: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    distances_before: torch.Tensor | None = None  # [R, C, 8]
    distances_after: torch.Tensor | None = None
    iterations: int = 0
    converged: bool = False


def som_step(pos, mesh, dist, config: SomConfig, spacing: float, step: float | None = None):
    """One relaxation step: returns (new_pos, new_mesh, move of the 2-D mesh, mean latent move in spacings)."""
    directions = config.direction_indices()
    step = config.effective_step if step is None else step
    dv = move_vectors(pos, dist, rule=config.rule, directions=directions)
    dv2 = move_vectors(mesh, dist, rule=config.rule, directions=directions)
    faithful = config.rule == "original"
    if config.clamp_edges:
        dv, dv2 = clamp_to_edges(dv, pos, faithful=faithful), clamp_to_edges(dv2, mesh, faithful=faithful)
    else:  # the seed tool pins the corners even without clamping
        for i in (0, -1):
            for j in (0, -1):
                dv[i, j] = 0
                dv2[i, j] = 0
    if config.rule == "even":
        dv, dv2 = dv * spacing, dv2 * (mesh_spacing(mesh))
        move = (step * dv).norm(dim=-1)
        cap = config.max_move * nearest_neighbour_gap(pos)
        scale = torch.where(move > cap, cap / move.clamp_min(1e-30), torch.ones_like(move)).unsqueeze(-1)
        move2 = (step * dv2).norm(dim=-1)
        cap2 = config.max_move * nearest_neighbour_gap(mesh)
        scale2 = torch.where(move2 > cap2, cap2 / move2.clamp_min(1e-30), torch.ones_like(move2)).unsqueeze(-1)
        delta, delta2 = step * dv * scale, step * dv2 * scale2
    else:
        delta, delta2 = step * dv, step * dv2
    return pos + delta, mesh + delta2, delta2.norm(dim=-1).sum().item(), delta.norm(dim=-1).mean().item() / spacing


def mesh_spacing(pos: torch.Tensor) -> float:
    """Mean distance between 4-adjacent mesh points."""
    return float(adjacent_distances(pos).mean())


def _check_mesh(latents: torch.Tensor) -> None:
    if latents.dim() != 3 or latents.shape[0] < 2 or latents.shape[1] < 2:
        raise InvalidArgument("latents", f"expected a [d1>=2, d0>=2, dim] mesh, got {tuple(latents.shape)}")
    if not torch.isfinite(latents).all():
        raise InvalidArgument("latents", "mesh contains NaN or inf")


def _check_diverged(pos: torch.Tensor, start: torch.Tensor, extent: float, it: int, config: SomConfig) -> None:
    """A mesh that left the neighbourhood of where it started (10x its own extent) is diverging: say which step."""
    if not torch.isfinite(pos).all() or (pos - start).norm(dim=-1).max().item() > 10 * extent + 10:
        raise InvalidArgument(
            "step",
            f"relaxation diverged at iteration {it} with step {config.effective_step}; use a smaller step "
            f"(or rule='even', which is scale-free)",
        )


def relax(
    features_fn: Callable[[torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    config: SomConfig | None = None,
    *,
    on_iteration: Callable[[int, dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SomResult:
    """Relax a [d1, d0, dim] latent mesh so adjacent cells become equally far apart in feature space.

    `features_fn` maps a batch of latents [N, dim] to features [N, ...] (e.g. the GAN's spectrograms). It is called
    once per iteration with the whole mesh, plus once at the end to measure the result.
    """
    config = config or SomConfig()
    config.validate()
    _check_mesh(latents)
    R, C, D = latents.shape
    dtype = torch.float64
    pos = latents.to(dtype).clone()
    mesh = mesh_2d(R, C, pos)
    mesh0 = mesh.clone()
    spacing = mesh_spacing(pos)
    extent = (pos.reshape(-1, D) - pos.reshape(-1, D).mean(0)).norm(dim=-1).max().item()

    def measure(p: torch.Tensor) -> torch.Tensor:
        feats = features_fn(p.to(latents.dtype).reshape(R * C, D))
        feats = torch.as_tensor(feats).to(dtype).reshape(R, C, *feats.shape[1:])
        if not torch.isfinite(feats).all():
            raise FailedPrecondition("features are not finite: the model produced NaN/inf for this mesh")
        return feats

    feats = measure(pos)
    norm_kind = "l2"
    dist = neighbour_distances(feats, faithful=config.faithful_features, norm=norm_kind)
    before = evenness(feats)
    dist_before = dist.clone()
    history = [{"iteration": 0, **before, "move": 0.0, "step": 0.0}]
    if on_iteration:
        on_iteration(0, history[-1])
    converged = False
    it = 0
    step = config.effective_step
    best = (before["cov"], pos.clone(), mesh.clone(), feats, dist)
    for it in range(1, config.iterations + 1):
        pos, mesh, move2d, move = som_step(pos, mesh, dist, config, spacing, step)
        _check_diverged(pos, latents.to(dtype), extent, it, config)
        feats = measure(pos)
        dist = neighbour_distances(feats, faithful=config.faithful_features, norm=norm_kind)
        metrics = {"iteration": it, **evenness(feats), "move": move, "move2d": move2d, "step": step}
        if config.rule == "even":
            # A fixed step ends up hopping around the equilibrium (render noise, discrete mesh): damp it whenever
            # evenness got worse, and keep the most even mesh seen.
            if metrics["cov"] > history[-1]["cov"]:
                step *= 0.7
            if metrics["cov"] < best[0]:
                best = (metrics["cov"], pos.clone(), mesh.clone(), feats, dist)
        history.append(metrics)
        if on_iteration:
            on_iteration(it, metrics)
        if move < config.tolerance:
            converged = True
            break
        if should_stop and should_stop():
            break
    if config.rule == "even":
        _, pos, mesh, feats, dist = best
    return SomResult(
        latents=pos.to(latents.dtype),
        mesh2d=mesh,
        mesh2d_initial=mesh0,
        before=before,
        after=evenness(feats),
        history=history,
        distances_before=dist_before,
        distances_after=dist,
        iterations=it,
        converged=converged,
    )
