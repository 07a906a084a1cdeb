"""Turn latents into sounds with a trained GAN: random sampling and batched rendering of given latents.

    model = load_model(store, "run1")                       # newest checkpoint of gan/run1, EMA generator
    z = model.random_latents(16, seed=0)                    # [16, latent_dim]
    audio = model.render(z)                                 # [16, audio_length], PGHI phase, batched
    aid = write_sounds(store, model, z, audio)              # samples/<id>/<i>.wav + <i>.pt + manifest
    aid = sample_random(store, "run1", 16, seed=0)          # all of the above

The latent of a conditioned model (ac_gan) is noise followed by the one-hot labels, so `<i>.pt` holds everything a
grid needs to interpolate. Latents from callers are checked (`validate_latents`): a wrong length, NaN or inf is an
InvalidArgument naming the latent.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

import torch
from smf.common.errors import InvalidArgument, NotFound
from smf.common.lineage import new_id, read_manifest, write_artifact
from smf.common.store import Store, open_store, parse_uri
from smf.gan.config import GanConfig, parse_config
from smf.gan.model import GanArgs, ProgressiveGAN, random_latents
from smf.gan.train import checkpoint_keys, load_checkpoint

DEFAULT_BATCH = 32


@dataclass
class LoadedModel:
    """A GAN ready to render: the EMA generator at the checkpoint's scale, and the transform that inverts it."""

    run_id: str  # artifact id, "gan/<name>"
    store_uri: str
    checkpoint: str  # key of the checkpoint it was loaded from
    step: int
    cfg: GanConfig
    args: GanArgs
    classes: dict
    scale: int
    alpha: float
    gan: ProgressiveGAN
    device: torch.device

    def __post_init__(self):
        from smf.common.audio import SpectrogramTransform

        t = self.cfg.transform
        self.transform = SpectrogramTransform(t.stft_channels, t.hop_size, t.n_frames, t.sample_rate)
        self._lock = threading.Lock()  # one forward pass at a time per model: predictable memory, no oversubscription

    @property
    def name(self) -> str:
        return self.run_id.split("/", 1)[1]

    @property
    def latent_dim(self) -> int:
        return self.args.input_dim

    @property
    def sample_rate(self) -> int:
        return self.cfg.transform.sample_rate

    @property
    def audio_length(self) -> int:
        return self.cfg.transform.audio_length

    def random_latents(self, n: int, seed: int) -> torch.Tensor:
        return random_latents(self.args, n, torch.Generator().manual_seed(int(seed)))

    @torch.no_grad()
    def spectrogram(self, latents: torch.Tensor) -> torch.Tensor:
        with self._lock:
            return self.gan.spectrogram(latents.to(self.device), self.scale, self.alpha).cpu()

    @torch.no_grad()
    def render(self, latents: torch.Tensor, *, batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
        """Latents [B, latent_dim] -> audio [B, audio_length] (float32, peak <= 1), `batch_size` at a time."""
        out = []
        for i in range(0, len(latents), batch_size):
            with self._lock:
                spec = self.gan.spectrogram(latents[i : i + batch_size].to(self.device), self.scale, self.alpha)
                audio = self.transform.to_audio(spec).cpu().float()
            out.append(audio)
        audio = torch.cat(out) if out else torch.zeros(0, self.audio_length)
        # PGHI output can exceed full scale slightly; scale down (never up) so a PCM_16 wav does not clip
        peak = audio.abs().amax(dim=1, keepdim=True).clamp_min(1.0)
        return audio / peak


def resolve_model(store: Store, model: str) -> tuple[Store, str]:
    """'run1', 'gan/run1' or a full artifact URI -> (store holding it, 'gan/<name>')."""
    if not model:
        raise InvalidArgument("model", "name a model: 'run1', 'gan/run1' or an artifact URI")
    if "://" in model:
        store_uri, key = parse_uri(model)
        store, model = open_store(store_uri), key
    run_id = model.strip("/") if model.startswith("gan/") else f"gan/{model.strip('/')}"
    if run_id.count("/") != 1:
        raise InvalidArgument("model", f"{model!r} is not a model name (expected 'name' or 'gan/name')")
    return store, run_id


def load_model(
    store: Store, model: str, *, device: str | torch.device = "cpu", checkpoint: str | None = None
) -> LoadedModel:
    """Load the newest checkpoint of a model (or `checkpoint`, a key); NotFound if it has none yet."""
    store, run_id = resolve_model(store, model)
    key = checkpoint
    if key is None:
        keys = checkpoint_keys(store, run_id)
        if not keys:
            raise NotFound(f"model {run_id!r} has no checkpoint in {store.uri} (not trained yet?)")
        key = keys[-1]
    ck = load_checkpoint(store, key, map_location=device)
    cfg = parse_config(ck["config"], source=f"{key}:config")
    args = GanArgs(**ck["args"])
    gan = ProgressiveGAN(args)
    gan.load_state_dict(ck["model"])
    gan.D = None  # sampling never needs the discriminator; free its memory
    gan.eval().to(device)
    return LoadedModel(
        run_id=run_id,
        store_uri=store.uri,
        checkpoint=key,
        step=int(ck["step"]),
        cfg=cfg,
        args=args,
        classes=dict(ck.get("classes") or {}),
        scale=int(ck["scale"]),
        alpha=float(ck["alpha"]),
        gan=gan,
        device=torch.device(device),
    )


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


def read_latent(store: Store, uri_or_key: str, *, field: str) -> torch.Tensor:
    """A latent saved with torch.save (1-D tensor) from a store URI or key (of `store`)."""
    if "://" in uri_or_key:
        store_uri, key = parse_uri(uri_or_key)
        store = open_store(store_uri)
    else:
        key = uri_or_key
    try:
        data = store.get_bytes(key)
    except InvalidArgument:
        raise InvalidArgument(field, f"{uri_or_key!r} is not a valid store key or URI") from None
    except NotFound:
        raise InvalidArgument(field, f"{uri_or_key} does not exist") from None
    try:
        t = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — torch raises many types for a file that is not a tensor
        raise InvalidArgument(field, f"{uri_or_key} is not a torch-saved latent: {exc}") from None
    if not isinstance(t, torch.Tensor):
        raise InvalidArgument(field, f"{uri_or_key} holds a {type(t).__name__}, expected a 1-D tensor")
    return t.float().flatten() if t.ndim <= 2 and min(t.shape or (1,)) == 1 else t.float()


def latent_bytes(latent: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    torch.save(latent.detach().float().cpu().clone().contiguous(), buf)
    return buf.getvalue()


def sound_files(model: LoadedModel, latents: torch.Tensor, audio: torch.Tensor, start: int = 0) -> dict[str, bytes]:
    """{'<i>.wav': wav, '<i>.pt': latent} for a batch of sounds, numbered from `start`."""
    from smf.common.audio import wav_bytes

    files = {}
    for j, (z, a) in enumerate(zip(latents, audio, strict=False)):
        files[f"{start + j}.wav"] = wav_bytes(a, model.sample_rate)
        files[f"{start + j}.pt"] = latent_bytes(z)
    return files


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
        config={
            "model": model.run_id,
            "checkpoint": model.checkpoint,
            "step": model.step,
            "sample_rate": model.sample_rate,
            "count": len(latents),
            **(config or {}),
        },
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
) -> str:
    """Random latents -> sounds -> samples/<id> (wav + latent pairs); returns the artifact id."""
    if not 1 <= count <= 4096:
        raise InvalidArgument("count", f"must be in 1..4096, got {count}")
    m = model if isinstance(model, LoadedModel) else load_model(store, model)
    seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed
    z = m.random_latents(count, seed)
    parts = []
    for i in range(0, count, batch_size):
        parts.append(m.render(z[i : i + batch_size], batch_size=batch_size))
        if progress:
            progress(min(i + batch_size, count), count)
    return write_sounds(store, m, z, torch.cat(parts), config={"seed": seed})


def model_summary(store: Store, run_id: str) -> dict:
    """What ListModels / `smf gan ls` show, from the manifest, progress.json and config.json (no weights read)."""
    import json

    info = {
        "name": run_id.split("/", 1)[1],
        "id": run_id,
        "uri": store.key_uri(run_id),
        "state": "",
        "step": 0,
        "total": 0,
    }
    try:
        progress = json.loads(store.get_bytes(f"{run_id}/progress.json"))
        info.update(
            state=progress.get("state", ""), step=int(progress.get("step", 0)), total=int(progress.get("total", 0))
        )
    except NotFound:
        pass
    try:
        cfg = parse_config(store.get_bytes(f"{run_id}/config.json"), source=f"{run_id}/config.json")
        info.update(
            sample_rate=cfg.transform.sample_rate,
            audio_length=cfg.transform.audio_length,
            latent_dim=cfg.model.dimLatentVector,
            attributes=cfg.model.attributes,
        )
    except NotFound:
        pass
    try:  # written with each checkpoint: the latent length includes the one-hot classes found in the data
        model = json.loads(store.get_bytes(f"{run_id}/model.json"))
        info["latent_dim"] = GanArgs(**model["args"]).input_dim
    except NotFound:
        pass
    try:
        info["created_at"] = read_manifest(store, run_id).created_at
    except NotFound:
        pass
    return info
