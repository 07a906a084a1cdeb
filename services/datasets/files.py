"""Datasets in the store: `datasets/<name>/` holding `<stem>.wav` (+ `<stem>.params`) and a manifest.

aid = make_dataset("tones", open_store())            # -> "datasets/tones"
for wav_key, params_key in list_dataset_files(store, aid): ...
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import torch
from smf.common import refs
from smf.common.audio import AUDIO_EXTENSIONS, wav_bytes
from smf.common.errors import AlreadyExists, InvalidArgument, NotFound
from smf.common.lineage import Manifest, read_manifest, write_artifact
from smf.common.params import params_json
from smf.common.progress import progress_bar
from smf.common.store import Store
from smf.datasets.generators import DEFAULTS, GENERATOR_VERSION, generate

KIND = "datasets"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def dataset_id(name: str) -> str:
    """`tones` or `datasets/tones` -> `datasets/tones`; the name must be a single safe key segment."""
    aid = refs.artifact_id(name, KIND, field="name")
    if not _NAME.match(aid.split("/", 1)[1]):  # stricter than a key: a name never starts with '.', '-' or '_'
        raise InvalidArgument(
            "name", f"dataset names use [A-Za-z0-9._-] and start with a letter or digit, got {name!r}"
        )
    return aid


def _existing(store: Store, aid: str) -> Manifest | None:
    """The committed manifest of `aid`, or None. Uncommitted leftovers (files but no manifest) are removed."""
    try:
        return read_manifest(store, aid)
    except NotFound:
        if store.list(aid + "/"):
            store.delete_prefix(aid + "/")  # a crashed earlier write: never committed, nobody can be using it
        return None


def prepare_target(store: Store, aid: str, config: dict, *, overwrite: bool) -> bool:
    """Make room for writing artifact `aid`. Returns False when an identical one (same config) is already there."""
    manifest = _existing(store, aid)
    if manifest is None:
        return True
    same = isinstance(manifest.config, dict) and all(manifest.config.get(k) == v for k, v in config.items())
    if same and not overwrite:
        return False
    if not overwrite:
        raise AlreadyExists(
            f"dataset {aid!r} already exists in {store.uri} with a different config "
            f"({manifest.config}); pick another name or overwrite it (--force)"
        )
    store.delete_prefix(aid + "/")
    return True


def commit(store: Store, aid: str, files: dict, config: dict, *, inputs: Iterable[str] = ()) -> None:
    """Write the files then the manifest. write_artifact stages them (smf.common.commit), so a failure leaves
    nothing half-made — and no clean-up here may touch `aid/`, which another writer may have committed meanwhile."""
    write_artifact(store, KIND, aid, files, config=config, inputs=inputs, service="datasets")


def make_dataset(
    name: str,
    store: Store,
    *,
    n_files: int | None = None,
    seed: int = 0,
    sample_rate: int = 16000,
    duration: float | None = None,
    out_name: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> str:
    """Generate built-in dataset `name` (pops, tones, wind, soundfont) into the store as `datasets/<out_name or name>`.

    Deterministic given the arguments; calling it again with the same arguments is a no-op that returns the id.
    A different config under the same name raises AlreadyExists unless `overwrite`.
    """
    aid = dataset_id(out_name or name)
    clips = generate(name, n_files=n_files, seed=seed, sample_rate=sample_rate, duration=duration)  # validates
    n_files = DEFAULTS[name][0] if n_files is None else n_files
    duration = DEFAULTS[name][1] if duration is None else duration
    config = {
        "generator": name,
        "generator_version": GENERATOR_VERSION,
        "n_files": int(n_files),
        "seed": int(seed),
        "sample_rate": int(sample_rate),
        "duration": float(duration),
    }
    if not prepare_target(store, aid, config, overwrite=overwrite):
        return aid
    files: dict[str, bytes] = {}
    param_names: list[str] = []
    for clip in progress_bar(iterable=clips, total=n_files, desc=f"making {name}", unit="file", disable=not progress):
        files[f"{clip.name}.wav"] = wav_bytes(torch.from_numpy(clip.audio), sample_rate)
        files[f"{clip.name}.params"] = params_json(clip.params).encode()
        param_names = list(clip.params.params)
    commit(store, aid, files, {**config, "params": param_names})
    return aid


def list_dataset_files(store: Store, dataset_id_: str) -> list[tuple[str, str | None]]:
    """(audio key, .params key or None) for every audio file of a committed dataset, sorted by key.

    Uses the manifest, so only committed files are listed; NotFound if the dataset does not exist.
    """
    aid = dataset_id(dataset_id_)
    return audio_pairs(aid, read_manifest(store, aid).files)


def audio_pairs(artifact_id: str, names: Iterable[str]) -> list[tuple[str, str | None]]:
    """(audio key, .params key or None) for the audio files among `names` (file names in artifact `artifact_id`,
    e.g. its manifest's), sorted by key; hidden files are skipped."""
    names = set(names)
    out = []
    for fname in sorted(names):
        stem, ext = os.path.splitext(fname)
        if ext.lower() in AUDIO_EXTENSIONS and not os.path.basename(fname).startswith("."):
            pname = stem + ".params"
            out.append((f"{artifact_id}/{fname}", f"{artifact_id}/{pname}" if pname in names else None))
    return out
