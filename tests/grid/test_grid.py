"""The 2D4pt grid math against its formulas: corners exact, rows from z0->z1 to z2->z3, columns along each row."""

from __future__ import annotations

import math

import pytest
import torch
from smf.common.errors import InvalidArgument
from smf.grid.grid import MAX_SIDE, cell_filename, grid_latents, slerp, steps, validate_shape, variations


def corners(dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(dim, generator=g) for _ in range(4)]


@pytest.mark.parametrize("d0, d1", [(2, 2), (5, 3), (3, 7), (21, 21)])
def test_linear_grid_matches_the_seed_formula(d0, d1):
    z0, z1, z2, z3 = corners()
    grid = grid_latents(z0, z1, z2, z3, d0=d0, d1=d1)
    assert grid.shape == (d1, d0, 8)
    # the corners come back bit for bit
    assert torch.equal(grid[0, 0], z0) and torch.equal(grid[0, -1], z1)
    assert torch.equal(grid[-1, 0], z2) and torch.equal(grid[-1, -1], z3)
    for i in range(d1):
        a = i / (d1 - 1)
        left, right = (1 - a) * z0 + a * z2, (1 - a) * z1 + a * z3
        for j in range(d0):
            b = j / (d0 - 1)
            torch.testing.assert_close(grid[i, j], (1 - b) * left + b * right, rtol=0, atol=1e-6)


def test_rows_and_columns_in_the_original_order():
    """Row 0 is the line z0 -> z1 (d0 steps), column 0 the line z0 -> z2 (d1 steps)."""
    z0, z1, z2, z3 = (
        torch.tensor([0.0, 0.0]),
        torch.tensor([1.0, 0.0]),
        torch.tensor([0.0, 1.0]),
        torch.tensor([1.0, 1.0]),
    )
    grid = grid_latents(z0, z1, z2, z3, d0=5, d1=3)
    torch.testing.assert_close(grid[..., 0], torch.tensor([[0, 0.25, 0.5, 0.75, 1]] * 3))  # dim0 = j / (d0 - 1)
    torch.testing.assert_close(grid[..., 1], torch.tensor([[0.0] * 5, [0.5] * 5, [1.0] * 5]))  # dim1 = i / (d1 - 1)


def test_slerp_keeps_norms_and_corners():
    z0, z1, z2, z3 = corners(dim=64, seed=3)
    lin = grid_latents(z0, z1, z2, z3, d0=7, d1=7)
    sph = grid_latents(z0, z1, z2, z3, d0=7, d1=7, interpolation="slerp")
    for a, b in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        assert torch.equal(sph[a, b], lin[a, b])
    # linear midpoints of Gaussian latents shrink towards the origin; slerp keeps them near the corner norms
    mid_lin, mid_sph = lin[3, 3].norm().item(), sph[3, 3].norm().item()
    corner_norm = torch.stack([z.norm() for z in (z0, z1, z2, z3)]).mean().item()
    assert mid_lin < 0.8 * corner_norm and abs(mid_sph - corner_norm) < 0.1 * corner_norm
    u = slerp(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.5)
    torch.testing.assert_close(u, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))


def test_steps_and_filenames():
    assert steps(5) == [0.0, 0.25, 0.5, 0.75, 1.0] and steps(1) == [0.0]
    assert cell_filename(2, 7) == "grid_d1.2_d0.7_v.0.wav"
    assert cell_filename(0, 1, 3, prefix="test_2D4pt") == "test_2D4pt_d1.0_d0.1_v.3.wav"


def test_variations():
    grid = grid_latents(*corners(), d0=3, d1=2)
    v = variations(grid, 4, spread=0.1, seed=5)
    assert v.shape == (2, 3, 4, 8)
    assert torch.equal(v[:, :, 0], grid)  # variation 0 is the cell itself
    assert torch.equal(v, variations(grid, 4, spread=0.1, seed=5))  # seeded
    assert 0.02 < (v[:, :, 1:] - grid.unsqueeze(2)).std().item() < 0.2
    assert variations(grid, 1, spread=0.1, seed=0).shape == (2, 3, 1, 8)
    with pytest.raises(InvalidArgument) as err:
        variations(grid, 0, spread=0.1, seed=0)
    assert err.value.field == "variations"


@pytest.mark.parametrize(
    "d0, d1, field", [(1, 3, "d0"), (3, 1, "d1"), (MAX_SIDE + 1, 3, "d0"), (3, 10**6, "d1"), (0, 0, "d0")]
)
def test_bad_shape(d0, d1, field):
    with pytest.raises(InvalidArgument) as err:
        validate_shape(d0, d1)
    assert err.value.field == field


def test_bad_corners():
    z0, z1, z2, z3 = corners()
    with pytest.raises(InvalidArgument) as err:
        grid_latents(z0, z1, torch.randn(9), z3, d0=3, d1=3)
    assert err.value.field == "z2"
    bad = z3.clone()
    bad[4] = float("nan")
    with pytest.raises(InvalidArgument) as err:
        grid_latents(z0, z1, z2, bad, d0=3, d1=3)
    assert err.value.field == "z3"
    with pytest.raises(InvalidArgument) as err:
        grid_latents(z0.reshape(2, 4), z1, z2, z3, d0=3, d1=3)
    assert err.value.field == "z0"
    with pytest.raises(InvalidArgument) as err:
        grid_latents(z0, z1, z2, z3, d0=3, d1=3, interpolation="cubic")
    assert err.value.field == "interpolation"
