"""Turn latents into sounds with a trained GAN: random sampling and batched rendering of given latents.

    model = load_model(store, "run1")                       # smf.gan.runs: newest checkpoint, EMA generator
    z = model.random_latents(16, seed=0)                    # [16, latent_dim]
    audio = model.render(z)                                 # [16, audio_length], PGHI phase, batched
    aid = write_sounds(store, model, z, audio)              # samples/<id>/<i>.wav + <i>.pt + manifest
    aid = sample_random(store, "run1", 16, seed=0)          # all of the above

The latent of a conditioned model (ac_gan) is noise followed by the one-hot labels, so `<i>.pt` holds everything a
grid needs to interpolate. Latents from callers are checked (`validate_latents`): a wrong length, NaN or inf is an
InvalidArgument naming the latent.
"""

from __future__ import annotations

import torch
from smf.common.errors import InvalidArgument
from smf.common.latents import tensor_bytes
from smf.common.lineage import new_id, write_artifact
from smf.common.refs import Allowed
from smf.common.store import Store
from smf.gan.runs import DEFAULT_BATCH, LoadedModel, load_model


def validate_latents(latents, dim: int, *, field: str = "latents") -> torch.Tensor:
    """Latents as a float32 tensor [B, dim]; InvalidArgument naming e.g. 'latents[3]' when one is bad."""
    if isinstance(latents, torch.Tensor):
        x = latents.detach().float().cpu()
        if x.ndim == 1:
            x = x[None]
        rows = list(x)
    else:
        rows = [torch.as_tensor(r, dtype=torch.float32).flatten() for r in latents]
    if not rows:
        raise InvalidArgument(field, "no latents given")
    for i, r in enumerate(rows):
        if r.ndim != 1 or r.numel() != dim:
            raise InvalidArgument(f"{field}[{i}]", f"has {r.numel()} values, the model's latents have {dim}")
        if not torch.isfinite(r).all():
            bad = int((~torch.isfinite(r)).nonzero()[0])
            raise InvalidArgument(f"{field}[{i}]", f"value {bad} is {float(r[bad])}; latents must be finite")
    return torch.stack(rows)


def sound_files(model: LoadedModel, latents: torch.Tensor, audio: torch.Tensor, start: int = 0) -> dict[str, bytes]:
    """{'<i>.wav': wav, '<i>.pt': latent} for a batch of sounds, numbered from `start`."""
    from smf.common.audio import wav_bytes

    files = {}
    for j, (z, a) in enumerate(zip(latents, audio, strict=False)):
        files[f"{start + j}.wav"] = wav_bytes(a, model.sample_rate)
        files[f"{start + j}.pt"] = tensor_bytes(z)
    return files


def sounds_config(model: LoadedModel, count: int, config: dict | None = None) -> dict:
    """The config of an artifact of `count` sounds made by `model` (its manifest and the service's streamed ones)."""
    return {
        "model": model.run_id,
        "checkpoint": model.checkpoint,
        "step": model.step,
        "sample_rate": model.sample_rate,
        "count": count,
        **(config or {}),
    }


def write_sounds(
    store: Store,
    model: LoadedModel,
    latents: torch.Tensor,
    audio: torch.Tensor,
    *,
    artifact_id: str | None = None,
    kind: str = "samples",
    config: dict | None = None,
) -> str:
    """Write `<i>.wav` + `<i>.pt` pairs and a manifest naming the model; returns the artifact id."""
    aid = artifact_id or new_id(f"{kind}/")
    write_artifact(
        store,
        kind,
        aid,
        sound_files(model, latents, audio),
        config=sounds_config(model, len(latents), config),
        inputs=[model.run_id],
        service="gan",
    )
    return aid


def sample_random(
    store: Store,
    model: str | LoadedModel,
    count: int,
    *,
    seed: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress=None,
    allowed: Allowed = None,
) -> str:
    """Random latents -> sounds -> samples/<id> (wav + latent pairs); returns the artifact id. A model URI outside
    `store` must lie in `allowed` (ANY for the CLI)."""
    if not 1 <= count <= 4096:
        raise InvalidArgument("count", f"must be in 1..4096, got {count}")
    m = model if isinstance(model, LoadedModel) else load_model(store, model, allowed=allowed)
    seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed
    z = m.random_latents(count, seed)
    parts = []
    for i in range(0, count, batch_size):
        parts.append(m.render(z[i : i + batch_size], batch_size=batch_size))
        if progress:
            progress(min(i + batch_size, count), count)
    return write_sounds(store, m, z, torch.cat(parts), config={"seed": seed})
