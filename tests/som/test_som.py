"""SOM relaxation math: known-answer fields, pinned corners, edges on their lines, the seed tool's rule reproduced."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from smf.common.errors import InvalidArgument
from smf.grid.grid import grid_latents
from smf.som.som import SomConfig, evenness, mesh_2d, mesh_spacing, neighbour_distances, relax, som_step

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from kmap_reference import KMap


def cube_field(latents: torch.Tensor) -> torch.Tensor:
    """A feature map that warps the plane: equal latent steps are very unequal steps in 'sound'."""
    return latents[:, :2] ** 3


def square_mesh(d0=11, d1=9, dim=2, seed=0):
    if dim == 2:
        z = [torch.tensor(v, dtype=torch.float32) for v in ([0.1, 0.1], [1.0, 0.1], [0.1, 1.0], [1.0, 1.0])]
    else:
        g = torch.Generator().manual_seed(seed)
        z = [torch.randn(dim, generator=g) for _ in range(4)]
    return grid_latents(*z, d0=d0, d1=d1)


def on_segment(p, a, b, tol=1e-6):
    ab, ap = b - a, p - a
    cross = ab[0] * ap[1] - ab[1] * ap[0]
    return abs(cross) < tol


def test_even_rule_halves_unevenness_and_keeps_corners_and_edges():
    mesh = square_mesh()
    result = relax(cube_field, mesh, SomConfig(iterations=300))
    assert result.after["cov"] <= 0.5 * result.before["cov"], (result.before, result.after)
    out = result.latents.double()
    m = mesh.double()
    for i in (0, -1):
        for j in (0, -1):
            assert torch.equal(out[i, j], m[i, j])
    for j in range(out.shape[1]):
        assert on_segment(out[0, j], m[0, 0], m[0, -1]) and on_segment(out[-1, j], m[-1, 0], m[-1, -1])
    for i in range(out.shape[0]):
        assert on_segment(out[i, 0], m[0, 0], m[-1, 0]) and on_segment(out[i, -1], m[0, -1], m[-1, -1])


def test_even_rule_is_scale_free():
    """The same default step works when features are a million times larger."""
    mesh = square_mesh()
    a = relax(cube_field, mesh, SomConfig(iterations=100))
    b = relax(lambda z: 1e6 * cube_field(z), mesh, SomConfig(iterations=100))
    assert torch.allclose(a.latents, b.latents, atol=1e-3)


def test_even_rule_does_not_fold_over():
    mesh = square_mesh()
    result = relax(cube_field, mesh, SomConfig(iterations=200, step=5.0))  # absurd step, capped moves
    x = result.latents[..., 0]
    y = result.latents[..., 1]
    assert (x[:, 1:] > x[:, :-1]).all() and (y[1:] > y[:-1]).all()


def test_dim0_axis_moves_only_along_rows():
    mesh = square_mesh()
    result = relax(cube_field, mesh, SomConfig(iterations=50, axes="dim0"))
    assert torch.allclose(result.latents[..., 1], mesh[..., 1])


def test_deterministic():
    mesh = square_mesh(dim=8)

    def f(z):
        return torch.tanh(z * 3)

    a = relax(f, mesh, SomConfig(iterations=20))
    b = relax(f, mesh, SomConfig(iterations=20))
    assert torch.equal(a.latents, b.latents)


@pytest.mark.parametrize("clamp", [True, False])
def test_original_rule_matches_seed_kmap(clamp):
    rng = np.random.default_rng(0)
    mesh = square_mesh(d0=7, d1=5, dim=6).double()
    ref = KMap(mesh.numpy(), step=1e-3, clampedges=clamp)
    config = SomConfig(rule="original", step=1e-3, clamp_edges=clamp, faithful_features=True)
    pos, m2 = mesh.clone(), mesh_2d(5, 7, mesh)
    assert np.allclose(m2.numpy(), ref.weights2D)
    spacing = mesh_spacing(pos)
    for _ in range(3):
        vals = rng.normal(size=(5, 7, 4, 3))
        conv = ref.update(vals)
        dist = neighbour_distances(torch.from_numpy(vals), faithful=True)
        assert np.allclose(dist.numpy(), ref.getDifferences(vals))
        pos, m2, move2d, _ = som_step(pos, m2, dist, config, spacing)
        assert np.allclose(pos.numpy(), ref.weights)
        assert np.allclose(m2.numpy(), ref.weights2D)
        assert np.isclose(move2d, conv)


def test_diverging_step_is_a_clear_error():
    mesh = square_mesh()
    with pytest.raises(InvalidArgument, match="step"):
        relax(lambda z: 1e4 * cube_field(z), mesh, SomConfig(rule="original", step=10.0, iterations=50))


def test_bad_inputs():
    with pytest.raises(InvalidArgument, match="rule"):
        relax(cube_field, square_mesh(), SomConfig(rule="nope"))
    with pytest.raises(InvalidArgument, match="latents"):
        relax(cube_field, torch.zeros(1, 5, 2))
    bad = square_mesh()
    bad[2, 2, 0] = float("nan")
    with pytest.raises(InvalidArgument, match="latents"):
        relax(cube_field, bad)


def test_evenness_of_even_grid_is_zero():
    mesh = square_mesh(d0=10, d1=10)
    assert evenness(mesh)["cov"] < 1e-6
