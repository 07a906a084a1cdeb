"""The 2D4pt latent grid: four corner latents span a d1 x d0 grid, exactly as the original SMF `generate.py 2D4pt`.

Rows i = 0..d1-1 step from the line z0->z1 to the line z2->z3; columns j = 0..d0-1 step along each row; endpoints
included, so the four corners are the given latents bit for bit:

    latents = grid_latents(z0, z1, z2, z3, d0=21, d1=21)      # [d1, d0, latent_dim]
    name = cell_filename(i, j)                                 # "grid_d1.<i>_d0.<j>_v.0.wav"

Spherical interpolation (keeps latent norms, useful for Gaussian latents whose linear midpoints shrink towards the
origin) is offered as `interpolation="slerp"`; linear is the default because it is what the seed tool did.
"""

from __future__ import annotations

import torch
from smf.common.errors import InvalidArgument

MAX_SIDE = 256  # a 256 x 256 grid is already 65k renders; beyond that is a typo, not a request
INTERPOLATIONS = ("linear", "slerp")


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    # (1-t)*a + t*b, written like the seed tool so corners are exact (t=0 -> a, t=1 -> b)
    return (1.0 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of direction, linear interpolation of norm; exact at t = 0 and 1."""
    if t == 0.0:
        return a.clone()
    if t == 1.0:
        return b.clone()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return lerp(a, b, t)
    ua, ub = a / na, b / nb
    omega = torch.acos((ua * ub).sum().clamp(-1.0, 1.0))
    if omega.abs() < 1e-6:
        return lerp(a, b, t)
    so = torch.sin(omega)
    direction = (torch.sin((1.0 - t) * omega) / so) * ua + (torch.sin(t * omega) / so) * ub
    return direction * lerp(na, nb, t)


def steps(n: int) -> list[float]:
    """n evenly spaced positions in [0, 1] with both ends, like numpy.linspace(0, 1, n); [0.0] for n == 1."""
    return [0.0] if n == 1 else [k / (n - 1) for k in range(n)]


def validate_corners(corners: list[torch.Tensor], *, fields=("z0", "z1", "z2", "z3")) -> int:
    """Check four 1-D finite latents of one size; returns the latent dimension."""
    if len(corners) != 4:
        raise InvalidArgument("corners", f"need exactly 4 corner latents, got {len(corners)}")
    dim = None
    for name, z in zip(fields, corners, strict=False):
        if z.dim() != 1:
            raise InvalidArgument(name, f"latent must be a 1-D vector, got shape {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise InvalidArgument(name, "latent contains NaN or inf")
        if dim is None:
            dim = z.numel()
        elif z.numel() != dim:
            raise InvalidArgument(name, f"latent has {z.numel()} dims, z0 has {dim}")
    return int(dim)


def validate_shape(d0: int, d1: int) -> None:
    if not 2 <= d0 <= MAX_SIDE:
        raise InvalidArgument("d0", f"must be between 2 and {MAX_SIDE}, got {d0}")
    if not 2 <= d1 <= MAX_SIDE:
        raise InvalidArgument("d1", f"must be between 2 and {MAX_SIDE}, got {d1}")


def grid_latents(z0, z1, z2, z3, *, d0: int, d1: int, interpolation: str = "linear") -> torch.Tensor:
    """The [d1, d0, dim] grid of latents; row i, column j as in the seed tool's nested loops."""
    corners = [torch.as_tensor(z, dtype=torch.float32) for z in (z0, z1, z2, z3)]
    validate_corners(corners)
    validate_shape(d0, d1)
    if interpolation not in INTERPOLATIONS:
        raise InvalidArgument("interpolation", f"must be one of {INTERPOLATIONS}, got {interpolation!r}")
    mix = lerp if interpolation == "linear" else slerp
    z0, z1, z2, z3 = corners
    rows = []
    for i in steps(d1):
        left, right = mix(z0, z2, i), mix(z1, z3, i)
        rows.append(torch.stack([mix(left, right, j) for j in steps(d0)]))
    return torch.stack(rows)


def variations(latents: torch.Tensor, count: int, *, spread: float, seed: int) -> torch.Tensor:
    """`count` variations per cell: variation 0 is the cell itself, the others add seeded Gaussian noise."""
    if count < 1:
        raise InvalidArgument("variations", f"must be >= 1, got {count}")
    if count == 1:
        return latents.unsqueeze(2)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((*latents.shape[:2], count - 1, latents.shape[-1]), generator=gen) * spread
    return torch.cat([latents.unsqueeze(2), latents.unsqueeze(2) + noise], dim=2)


def cell_filename(i: int, j: int, k: int = 0, *, prefix: str = "grid") -> str:
    """The seed tool's cell naming: `<prefix>_d1.<i>_d0.<j>_v.<k>.wav`."""
    return f"{prefix}_d1.{i}_d0.{j}_v.{k}.wav"
