"""The `gan/<run>` layout, read: what other services may know about a trained GAN, and how a run is submitted.

    names = run_names(store)                                # ["run1", ...]: every run with files under gan/
    info = model_summary(store, "gan/run1")                 # state, step, latent_dim, sample_rate ... (no weights)
    keys = checkpoint_keys(store, "gan/run1")               # ckpt/step-<n>.pt keys, oldest first
    model = load_model(store, "run1")                       # the newest checkpoint's EMA generator, ready to render
    transform = model_transform(store, "gan/run1")          # the SpectrogramTransform it was trained with

    run_id = run_id_for("run1")                             # submitting (StartTraining, `smf gan train`):
    prepare_run(store, run_id, cfg)                         #   check, write config.json
    job = launch_training(store, run_id, gpus=1)            #   (the service) train as a job

The layout (written by `smf.gan.train`): `config.json` (the SMF config), `ckpt/step-<n>.pt` (one torch dict: model,
step, scale, alpha, config, args, classes, ...), `model.json` (the newest checkpoint's network shape), `progress.json`,
`plots/`, `manifest.json`. This module is the one reader of it: the GAN's own sampler and server use it, and grid and
som import it (besides `smf.gan.client` and `smf.gan.v1`) instead of the trainer.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass

import torch
from smf.common import jobs, refs
from smf.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from smf.common.lineage import read_manifest
from smf.common.store import Store
from smf.common.training import checkpoint_keys, read_checkpoint
from smf.gan.config import GanConfig, parse_config
from smf.gan.model import GanArgs, ProgressiveGAN, random_latents

DEFAULT_BATCH = 32
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # a store key segment and a job name

__all__ = [
    "DEFAULT_BATCH",
    "RUN_NAME",
    "LoadedModel",
    "checkpoint_keys",
    "launch_training",
    "load_model",
    "model_summary",
    "model_transform",
    "prepare_run",
    "read_config",
    "read_progress",
    "resolve_model",
    "run_id_for",
    "run_names",
]


# --- naming a run -----------------------------------------------------------------------------------------------------
def resolve_model(store: Store, model: str, *, allowed: refs.Allowed = None) -> tuple[Store, str]:
    """'run1', 'gan/run1' or an artifact URI (in `store` or `allowed`) -> (store holding it, 'gan/<name>')."""
    return refs.resolve(store, model, "gan", field="model", allowed=allowed)


def run_names(store: Store) -> list[str]:
    """Names of the runs that have files under gan/ (trained, training, or only submitted), sorted."""
    return sorted({k.split("/")[1] for k in store.list("gan") if k.count("/") >= 2})


# --- reading a run without its weights --------------------------------------------------------------------------------
def read_config(store: Store, run_id: str) -> GanConfig:
    """The run's config.json, checked; NotFound when the run has none."""
    return parse_config(store.get_bytes(f"{run_id}/config.json"), source=f"{run_id}/config.json")


def model_transform(store: Store, run_id: str):
    """The SpectrogramTransform a run was trained with (from config.json); FAILED_PRECONDITION when it has none."""
    from smf.common.audio import SpectrogramTransform

    try:
        t = read_config(store, run_id).transform
    except NotFound:
        raise FailedPrecondition(
            f"model {run_id} has no config.json in {store.uri}: its transform is unknown"
        ) from None
    return SpectrogramTransform(t.stft_channels, t.hop_size, t.n_frames, t.sample_rate)


def model_summary(store: Store, run_id: str) -> dict:
    """What ListModels / `smf gan ls` show, from the manifest, progress.json and config.json (no weights read)."""
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
        cfg = read_config(store, run_id)
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


# --- a run ready to render --------------------------------------------------------------------------------------------
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


def load_model(
    store: Store,
    model: str,
    *,
    device: str | torch.device = "cpu",
    checkpoint: str | None = None,
    allowed: refs.Allowed = None,
) -> LoadedModel:
    """Load the newest checkpoint of a model (or `checkpoint`, a key); NotFound if it has none yet. A model URI
    outside `store` must lie in `allowed` (ANY for the CLI)."""
    store, run_id = resolve_model(store, model, allowed=allowed)
    key = checkpoint
    if key is None:
        keys = checkpoint_keys(store, run_id)
        if not keys:
            raise NotFound(f"model {run_id!r} has no checkpoint in {store.uri} (not trained yet?)")
        key = keys[-1]
    ck = read_checkpoint(store, key, map_location=device)
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


# --- submitting a run -------------------------------------------------------------------------------------------------
def run_id_for(name: str) -> str:
    """The run id `gan/<name>` of a submission's name; INVALID_ARGUMENT "name" unless 1-63 of [A-Za-z0-9._-]."""
    if not RUN_NAME.fullmatch(name or ""):
        raise InvalidArgument("name", f"{name!r} must be 1-63 characters of [A-Za-z0-9._-]")
    return f"gan/{name}"


def prepare_run(store: Store, run_id: str, cfg: GanConfig) -> str:
    """Check a training submission for `run_id` (from `run_id_for`) and write its config.json; returns the key.

    Shared by StartTraining (which then launches the job) and `smf gan train` (which then trains here), so both
    refuse the same things: a store-relative data_path with nothing under it (INVALID_ARGUMENT
    "loaderConfig.data_path") and a run that has checkpoints from another config (ALREADY_EXISTS; the same config
    resumes). A progress.json left by a finished run is removed, so whoever follows the new run does not read the
    old one's end state.
    """
    _check_data(store, cfg)
    config_key = f"{run_id}/config.json"
    if checkpoint_keys(store, run_id):
        try:
            old = json.loads(store.get_bytes(config_key))
        except NotFound:
            old = None
        if old != cfg.to_dict():
            raise AlreadyExists(f"model {run_id!r} exists with another config; pick a new name (same config = resume)")
    canonical = json.dumps(cfg.to_dict(), indent=2) + "\n"
    store.put_bytes(config_key, canonical.encode(), content_type="application/json")
    if store.exists(f"{run_id}/progress.json"):
        store.delete(f"{run_id}/progress.json")
    return config_key


def _check_data(store: Store, cfg: GanConfig) -> None:
    path = cfg.loader.data_path
    if refs.is_uri(path) or path.startswith(("/", ".")):
        return  # another store or a local folder: the trainer checks it
    if not store.list(path.strip("/")):
        raise InvalidArgument("loaderConfig.data_path", f"nothing under {path!r} in {store.uri}")


def launch_training(store: Store, run_id: str, *, gpus: int = 0, backend: str | None = None) -> jobs.JobHandle:
    """Start `python -m smf.gan.train` on a prepared run (its config.json in the store) as a job."""
    return jobs.launch(
        "gan",
        ["--config", store.key_uri(f"{run_id}/config.json"), "--out", store.key_uri(run_id)],
        name=run_id.split("/", 1)[1],
        gpus=max(gpus, 0),
        backend=backend,
    )


def read_progress(store: Store, run_id: str) -> dict | None:
    """The run's progress.json, None while there is none (or it is being replaced)."""
    try:
        return json.loads(store.get_bytes(f"{run_id}/progress.json"))
    except (NotFound, ValueError):
        return None
