"""Import a folder of the user's sounds (with optional paramManager `.params`) as a store dataset.

    aid = import_dataset("~/sounds/rain", store, name="rain", sample_rate=16000)   # -> "datasets/rain"

Every audio file (.wav .flac .ogg by exact extension; hidden files and folders skipped) is checked — readable, mono
(or the `mono` policy), not empty, a sample rate that matches the others unless `sample_rate` is given, a readable
`.params` beside it whose meta filename names it — and converted into a local staging folder. The store is written
only once every file has passed, files first and manifest last; if writing fails, what was written is removed.
Errors are InvalidArgument naming the offending file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import soundfile as sf
import torch
from smf.common.audio import load_audio, resample, save_wav
from smf.common.errors import AlreadyExists, InvalidArgument, SmfError
from smf.common.params import read_params, validate_params, write_params
from smf.common.store import Store
from smf.datasets.files import AUDIO_EXTS, _existing, commit, dataset_id
from tqdm import tqdm

MONO_POLICIES = ("error", "mean", "first")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def find_audio(src: Path) -> list[Path]:
    """Audio files under `src` (relative paths, sorted), by exact extension; hidden files and folders skipped."""
    found = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fname in sorted(files):
            if not fname.startswith(".") and os.path.splitext(fname)[1].lower() in AUDIO_EXTS:
                found.append(Path(root, fname).relative_to(src))
    return found


def _channels(path: Path) -> int:
    """Channel count from the header; 0 if unreadable (load_audio then reports why)."""
    try:
        return sf.info(str(path)).channels
    except Exception:  # noqa: BLE001 - any decoder complaint is load_audio's to report, with the file named
        return 0


def stored_name(rel: Path) -> str:
    """The dataset-relative name of a source file: always `.wav`, characters outside [A-Za-z0-9._-] -> `_`."""
    parts = [_UNSAFE.sub("_", p) for p in rel.with_suffix(".wav").parts]
    return "/".join(p if p not in (".", "..") and not p.startswith(".smf-") else "_" + p for p in parts)


def import_dataset(
    src_dir: str | os.PathLike,
    store: Store,
    *,
    name: str,
    sample_rate: int | None = None,
    mono: str = "error",
    require_params: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> str:
    """Copy the audio (+ .params) under `src_dir` into the store as `datasets/<name>`; returns the artifact id.

    `sample_rate`: resample every file to it (default: keep the files' common rate). `mono`: "error" rejects
    multi-channel files, "mean" / "first" downmix. `.params` files are optional, but if some files have one, all
    must, with the same param names (a training set with holes would fail later, far from the cause);
    `require_params=True` demands them everywhere.
    """
    src = Path(os.path.expanduser(os.fspath(src_dir)))
    if not src.is_dir():
        raise InvalidArgument(str(src), "is not a folder")
    if mono not in MONO_POLICIES:
        raise InvalidArgument("mono", f"must be one of {', '.join(MONO_POLICIES)}, got {mono!r}")
    if sample_rate is not None and not 1000 <= sample_rate <= 384000:
        raise InvalidArgument("sample_rate", f"must be in [1000, 384000] Hz, got {sample_rate}")
    aid = dataset_id(name)
    if _existing(store, aid) is not None and not overwrite:
        raise AlreadyExists(
            f"dataset {aid!r} already exists in {store.uri}; pick another name or overwrite it (--force)"
        )
    sources = find_audio(src)
    if not sources:
        raise InvalidArgument(str(src), f"no audio files ({' '.join(AUDIO_EXTS)}) found")

    with tempfile.TemporaryDirectory(prefix="smf-import-") as stage_dir:
        stage = Path(stage_dir)
        files: dict[str, Path] = {}
        origin: dict[str, Path] = {}  # stored name -> source file, to report name collisions
        first_rate: tuple[int, Path] | None = None
        with_params: list[Path] = []
        without_params: list[Path] = []
        names_ref: tuple[list[str], Path] | None = None
        for rel in tqdm(sources, desc=f"checking {src.name}", unit="file", disable=not progress):
            path = src / rel
            label = str(path)
            if mono == "error" and _channels(path) > 1:
                raise InvalidArgument(
                    label,
                    f"has {_channels(path)} channels, expected mono (import with "
                    f"mono='mean' or 'first', CLI --mono, to downmix)",
                )
            try:
                audio, sr = load_audio(path, mono=mono)
            except SmfError:
                raise
            except Exception as exc:  # a decoder error the audio module did not wrap: still name the file
                raise InvalidArgument(label, f"cannot read audio: {exc}") from exc
            if audio.ndim != 1:
                raise InvalidArgument(label, f"expected mono audio, got shape {tuple(audio.shape)}")
            if audio.numel() == 0:
                raise InvalidArgument(label, "has no samples (duration 0)")
            if not torch.isfinite(audio).all():
                raise InvalidArgument(label, "contains NaN or infinite samples")
            if sample_rate is None:
                if first_rate is None:
                    first_rate = (sr, path)
                elif sr != first_rate[0]:
                    raise InvalidArgument(
                        label,
                        f"sample rate {sr} Hz differs from {first_rate[0]} Hz of "
                        f"{first_rate[1]}; pass a sample rate to resample every file",
                    )
            out_name = stored_name(rel)
            if out_name in origin:
                raise InvalidArgument(label, f"would be stored as {out_name!r}, like {origin[out_name]}; rename one")
            origin[out_name] = path

            ppath = path.with_suffix(".params")
            pf = None
            if ppath.is_file():
                pf = read_params(ppath)
                if pf.filename != path.name:
                    raise InvalidArgument(
                        str(ppath), f"meta filename is {pf.filename!r} but it sits beside {path.name!r}"
                    )
                validate_params(pf, [], source=str(ppath), all_params=True)
                names = list(pf.params)
                if names_ref is None:
                    names_ref = (names, ppath)
                elif sorted(names) != sorted(names_ref[0]):
                    raise InvalidArgument(
                        str(ppath),
                        f"has params {names} but {names_ref[1]} has {names_ref[0]}; "
                        f"every file of a dataset needs the same params",
                    )
                with_params.append(path)
            elif require_params:
                raise InvalidArgument(label, f"has no matching .params file ({ppath.name})")
            else:
                without_params.append(path)
            if with_params and without_params:
                raise InvalidArgument(
                    str(without_params[0]),
                    f"has no .params file but {with_params[0]} has one; give every file one, or none",
                )

            rate = sample_rate or sr
            if sr != rate:
                audio = resample(audio, sr, rate)
            out = stage / out_name
            out.parent.mkdir(parents=True, exist_ok=True)
            save_wav(out, audio, rate)
            files[out_name] = out
            if pf is not None:
                pf.filename = os.path.basename(out_name)  # may have changed: .flac -> .wav, unsafe characters
                pname = out_name[: -len(".wav")] + ".params"
                write_params(stage / pname, pf)
                files[pname] = stage / pname

        config = {
            "source": str(src.resolve()),
            "sample_rate": int(sample_rate or first_rate[0]),
            "n_files": len(sources),
            "mono": mono,
            "params": names_ref[0] if names_ref else [],
        }
        if overwrite:
            store.delete_prefix(aid + "/")
        commit(store, aid, files, config)
    return aid
