"""Latents on disk: the one reader (and writer) of tensors saved with torch.save, as samples, grids and SOMs store them.

    z = read_latent(store, "samples/20261125-203000-ab12cd/3.pt", field="latent_uris[0]")   # 1-D float32
    z = latent_from_bytes(Path("z.pt").read_bytes(), source="z.pt", field="--latents[0]")   # a local file
    grid = tensor_from_bytes(store.get_bytes("grids/g/latents.pt"), source="grids/g/latents.pt")  # any shape
    store.put_bytes("samples/x/0.pt", tensor_bytes(z))

Always `weights_only=True`: a shared store is not trusted to unpickle. A bad file is the caller's fault when the
caller named it (`field` given: InvalidArgument naming that field) and the store's otherwise (FailedPrecondition:
an artifact this service wrote cannot be read back).
"""

from __future__ import annotations

import io

import torch
from smf.common.errors import FailedPrecondition, InvalidArgument, NotFound
from smf.common.refs import Allowed, resolve_key
from smf.common.store import Store

__all__ = ["latent_from_bytes", "read_latent", "tensor_bytes", "tensor_from_bytes"]


def tensor_from_bytes(data: bytes, *, source: str, field: str | None = None) -> torch.Tensor:
    """The tensor in a torch.save file, float32, on the CPU, whatever its shape."""

    def bad(reason: str) -> Exception:
        return InvalidArgument(field, f"{source} {reason}") if field else FailedPrecondition(f"{source} {reason}")

    try:
        value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — torch raises many types for a file that is not a tensor
        raise bad(f"is not a tensor saved with torch.save: {exc}") from None
    if not isinstance(value, torch.Tensor):
        raise bad(f"holds a {type(value).__name__}, expected a tensor")
    return value.float()


def latent_from_bytes(data: bytes, *, source: str, field: str) -> torch.Tensor:
    """One latent: a vector, also when saved as [1, dim] or [dim, 1]; other shapes are left for the caller's
    length check to report."""
    t = tensor_from_bytes(data, source=source, field=field)
    return t.flatten() if t.numel() == max(t.shape or (1,)) else t


def read_latent(store: Store, raw: str, *, field: str, allowed: Allowed = None) -> torch.Tensor:
    """The latent a store key or URI names (a `.pt` object); InvalidArgument naming `field` when it is missing."""
    home, key = resolve_key(store, raw, field=field, allowed=allowed)
    try:
        data = home.get_bytes(key)
    except NotFound:
        raise InvalidArgument(field, f"{raw}: no latent at {home.key_uri(key)}") from None
    return latent_from_bytes(data, source=raw, field=field)


def tensor_bytes(t: torch.Tensor) -> bytes:
    """`t` as torch.save bytes: float32, CPU, contiguous, its own storage (a view would save its whole base)."""
    buf = io.BytesIO()
    torch.save(t.detach().float().cpu().contiguous().clone(), buf)
    return buf.getvalue()
