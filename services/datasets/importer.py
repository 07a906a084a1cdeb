"""Import a folder of the user's sounds (with optional paramManager `.params`) as a store dataset.

    aid = import_dataset("~/sounds/rain", store, name="rain", sample_rate=16000)   # -> "datasets/rain"

Every audio file (AUDIO_EXTENSIONS: .wav .flac .ogg .aiff .aif .mp3 as far as the installed libsndfile decodes them;
hidden files and folders skipped; subfolders kept as they are) is checked — readable, decodable, mono (or the `mono`
policy), not empty, not silent, at most MAX_FILE_SECONDS long, a sample rate that matches the others unless
`sample_rate` is given, a readable `.params` beside it whose meta filename names it — and converted into a local
staging folder. `.params` are optional: only the stages that use them (AC-GAN labels, RNN props) need them.
The store is written only once every file has passed, files first and manifest last; if writing fails, what was
written is removed. Errors are InvalidArgument naming the offending file and saying what to do.

A file that is not usable audio (unreadable, corrupt, empty, silent, too long, several channels under mono="error")
stops the import by default; `on_bad_file="skip"` leaves it out instead, and the manifest's config lists each
skipped file with the reason (`skipped`), for the CLI and the pipeline to print.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from smf.common.audio import AUDIO_EXTENSIONS, load_audio, probe_audio, resample, save_wav
from smf.common.errors import AlreadyExists, InvalidArgument, SmfError
from smf.common.params import ParamFile, read_params, validate_params, write_params
from smf.common.progress import progress_bar
from smf.common.store import Store
from smf.datasets.files import _existing, commit, dataset_id

MONO_POLICIES = ("error", "mean", "first")
ON_BAD_FILE = ("error", "skip")
SILENT_DBFS = -80.0  # a file whose peak stays below this holds nothing a model can learn from
MAX_FILE_SECONDS = 3600.0  # one file is decoded whole: bound what one file may cost (a 1 h stereo 48 kHz = 1.4 GB)
MAX_LISTED_SKIPS = 100  # the manifest lists this many skipped files (and counts them all)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def find_audio(src: Path, *, hidden: bool = False) -> list[Path]:
    """Audio files under `src` (relative paths, sorted), by extension; hidden files and folders skipped unless
    `hidden`."""
    found = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if hidden or not d.startswith("."))
        for fname in sorted(files):
            if (hidden or not fname.startswith(".")) and os.path.splitext(fname)[1].lower() in AUDIO_EXTENSIONS:
                found.append(Path(root, fname).relative_to(src))
    return found


@dataclass
class FolderSurvey:
    """What the headers of a folder's audio files say (see survey_folder)."""

    files: int
    with_params: int
    sample_rates: list[int]  # distinct, sorted
    channels: list[int]  # distinct, sorted
    seconds: float  # total duration

    def summary(self) -> str:
        rates = "/".join(str(r) for r in self.sample_rates)
        chans = "mono" if self.channels == [1] else "/".join(f"{c} ch" for c in self.channels)
        params = "no .params" if not self.with_params else f"{self.with_params} with .params"
        return f"{self.files} audio files, {rates} Hz, {chans}, {self.seconds:.1f} s in all, {params}"


def survey_folder(
    src: str | os.PathLike, *, labels: list[str] | tuple[str, ...] = (), field: str = "folder"
) -> FolderSurvey:
    """Check every audio file under `src` from its header — readable, decodable format, not empty — without
    decoding it, so a trainer that reads the folder itself is refused before anything is written. Hidden files are
    checked too (a trainer given the folder reads them). `labels`: the attributes an AC-GAN reads from .params,
    so every file needs one. InvalidArgument names the file and what to do.

    survey = survey_folder("~/sounds", labels=["pitch"]); print(survey.summary())
    """
    root = Path(os.path.expanduser(os.fspath(src)))
    if not root.is_dir():
        raise InvalidArgument(field, f"{root} is not a folder")
    rels = find_audio(root, hidden=True)
    if not rels:
        raise InvalidArgument(field, f"no audio files ({' '.join(AUDIO_EXTENSIONS)}) in {root} or its subfolders")
    rates, chans, seconds, with_params = set(), set(), 0.0, 0
    for rel in rels:
        info = probe_audio(root / rel)
        rates.add(info.sample_rate)
        chans.add(info.channels)
        seconds += info.seconds
        has_params = (root / rel).with_suffix(".params").is_file()
        with_params += has_params
        if labels and not has_params:
            raise InvalidArgument(
                str(root / rel),
                f"has no .params beside it, but an AC-GAN (ac_gan) labels each file by {list(labels)} from its "
                ".params: give every file one, or set modelConfig.ac_gan false",
            )
    return FolderSurvey(len(rels), with_params, sorted(rates), sorted(chans), seconds)


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
    on_bad_file: str = "error",
    overwrite: bool = False,
    progress: bool = False,
) -> str:
    """Copy the audio (+ .params) under `src_dir` into the store as `datasets/<name>`; returns the artifact id.

    `sample_rate`: resample every file to it (default: keep the files' common rate). `mono`: "error" rejects
    multi-channel files, "mean" / "first" downmix. `.params` files are optional, but if some files have one, all
    must, with the same param names (a training set with holes would fail later, far from the cause);
    `require_params=True` demands them everywhere. `on_bad_file`: "error" stops at the first file that is not
    usable audio, "skip" leaves such files out and lists them in the manifest's config (`skipped`, `n_skipped`).
    """
    src = Path(os.path.expanduser(os.fspath(src_dir)))
    if not src.is_dir():
        raise InvalidArgument(str(src), "is not a folder")
    if mono not in MONO_POLICIES:
        raise InvalidArgument("mono", f"must be one of {', '.join(MONO_POLICIES)}, got {mono!r}")
    if on_bad_file not in ON_BAD_FILE:
        raise InvalidArgument("on_bad_file", f"must be one of {', '.join(ON_BAD_FILE)}, got {on_bad_file!r}")
    if sample_rate is not None and not 1000 <= sample_rate <= 384000:
        raise InvalidArgument("sample_rate", f"must be in [1000, 384000] Hz, got {sample_rate}")
    aid = dataset_id(name)
    if _existing(store, aid) is not None and not overwrite:
        raise AlreadyExists(
            f"dataset {aid!r} already exists in {store.uri}; pick another name or overwrite it (--force)"
        )
    sources = find_audio(src)
    if not sources:
        raise InvalidArgument(
            str(src),
            f"no audio files ({' '.join(AUDIO_EXTENSIONS)}) found in it or its subfolders; point at the folder "
            "that holds your sounds",
        )

    with tempfile.TemporaryDirectory(prefix="smf-import-") as stage_dir:
        staging = _Staging(
            Path(stage_dir),
            sample_rate=sample_rate,
            mono=mono,
            require_params=require_params,
            skip=on_bad_file == "skip",
        )
        for rel in progress_bar(
            iterable=sources, total=None, desc=f"checking {src.name}", unit="file", disable=not progress
        ):
            staging.add(src, rel)
        if not staging.files:
            first = staging.skipped[0]
            raise InvalidArgument(
                str(src),
                f"none of its {len(sources)} audio files is usable (first: {first['file']}: {first['reason']})",
            )
        config = {
            "source": str(src.resolve()),
            "sample_rate": staging.rate,
            "n_files": len(sources) - len(staging.skipped),
            "mono": mono,
            "params": staging.param_names,
            "on_bad_file": on_bad_file,
            "n_skipped": len(staging.skipped),
            "skipped": staging.skipped[:MAX_LISTED_SKIPS],
        }
        if overwrite:
            store.delete_prefix(aid + "/")
        commit(store, aid, staging.files, config)
    return aid


def read_clip(path: Path, mono: str) -> tuple[torch.Tensor, int]:
    """One source file as (mono float audio, sample rate), or InvalidArgument naming the file and what is wrong.

    audio, sr = read_clip(Path("rain/01.flac"), mono="error")
    """
    label = str(path)
    info = probe_audio(path)  # a file that cannot be opened is named here, before anything is decoded
    channels, seconds = info.channels, info.seconds
    if mono == "error" and channels > 1:
        raise InvalidArgument(
            label,
            f"has {channels} channels, expected mono (import with mono='mean' or 'first', CLI --mono, to downmix)",
        )
    if seconds > MAX_FILE_SECONDS:
        raise InvalidArgument(
            label,
            f"is {seconds / 60:.0f} min long; files of at most {MAX_FILE_SECONDS / 60:.0f} min are imported: "
            "cut it into parts",
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
        raise InvalidArgument(label, "has no samples (duration 0): remove it")
    if not torch.isfinite(audio).all():
        raise InvalidArgument(label, "contains NaN or infinite samples: re-export it, or remove it")
    peak = float(audio.abs().max())
    if peak < 10 ** (SILENT_DBFS / 20):
        level = f"{20 * math.log10(peak):.0f} dBFS" if peak > 0 else "digital silence"
        raise InvalidArgument(
            label, f"is silent (peak {level}, below {SILENT_DBFS:.0f} dBFS): nothing to learn from; remove it"
        )
    return audio, sr


class _Staging:
    """The files of one import, each checked against those before it and converted into a local folder.

    What must agree across files (sample rate, stored names, which files have .params and with which params) is
    remembered here, so the first file that disagrees is named together with the one it disagrees with.
    """

    def __init__(self, folder: Path, *, sample_rate: int | None, mono: str, require_params: bool, skip: bool):
        self.folder, self.sample_rate, self.mono, self.require_params = folder, sample_rate, mono, require_params
        self.skip = skip
        self.skipped: list[dict] = []  # {file (relative to the folder), reason} of the files left out
        self.files: dict[str, Path] = {}  # stored name -> staged file
        self._origin: dict[str, Path] = {}  # stored name -> source file, to report name collisions
        self._first_rate: tuple[int, Path] | None = None
        self._with_params: list[Path] = []
        self._without_params: list[Path] = []
        self._names_ref: tuple[list[str], Path] | None = None

    @property
    def rate(self) -> int:
        """The dataset's sample rate: the one asked for, else the files' common one."""
        if self.sample_rate is not None:
            return int(self.sample_rate)
        assert self._first_rate is not None, "no file added yet"
        return int(self._first_rate[0])

    @property
    def param_names(self) -> list[str]:
        return self._names_ref[0] if self._names_ref else []

    def add(self, src: Path, rel: Path) -> None:
        """Check `src/rel` and write it (and its .params) into the staging folder."""
        path = src / rel
        try:
            audio, sr = read_clip(path, self.mono)
        except InvalidArgument as exc:
            reason = exc.message.removeprefix(f"{exc.field}: ")
            if self.skip:
                self.skipped.append({"file": str(rel), "reason": reason})
                return
            # what the user can do about a bad file, whichever front door (CLI, pipeline config) they came by
            raise InvalidArgument(
                exc.field, f"{reason} (or import the other files without it: on_bad_file skip, CLI --on-bad-file skip)"
            ) from None
        self._check_rate(sr, path)
        out_name = stored_name(rel)
        if out_name in self._origin:
            raise InvalidArgument(
                str(path), f"would be stored as {out_name!r}, like {self._origin[out_name]}; rename one"
            )
        self._origin[out_name] = path
        pf = self._params_of(path)

        rate = self.sample_rate or sr
        if sr != rate:
            audio = resample(audio, sr, rate)
        out = self.folder / out_name
        out.parent.mkdir(parents=True, exist_ok=True)
        save_wav(out, audio, rate)
        self.files[out_name] = out
        if pf is not None:
            pf.filename = os.path.basename(out_name)  # may have changed: .flac -> .wav, unsafe characters
            pname = out_name[: -len(".wav")] + ".params"
            write_params(self.folder / pname, pf)
            self.files[pname] = self.folder / pname

    def _check_rate(self, sr: int, path: Path) -> None:
        if self.sample_rate is not None:
            return  # every file is resampled to it
        if self._first_rate is None:
            self._first_rate = (sr, path)
        elif sr != self._first_rate[0]:
            raise InvalidArgument(
                str(path),
                f"sample rate {sr} Hz differs from {self._first_rate[0]} Hz of "
                f"{self._first_rate[1]}; give a sample rate to resample every file to (CLI --rate, pipeline "
                "dataset.sample_rate)",
            )

    def _params_of(self, path: Path) -> ParamFile | None:
        """The .params beside `path` (None if there is none and none is needed), checked against the others."""
        ppath = path.with_suffix(".params")
        pf = None
        if ppath.is_file():
            pf = read_params(ppath)
            if pf.filename != path.name:
                raise InvalidArgument(str(ppath), f"meta filename is {pf.filename!r} but it sits beside {path.name!r}")
            validate_params(pf, [], source=str(ppath), all_params=True)
            names = list(pf.params)
            if self._names_ref is None:
                self._names_ref = (names, ppath)
            elif sorted(names) != sorted(self._names_ref[0]):
                raise InvalidArgument(
                    str(ppath),
                    f"has params {names} but {self._names_ref[1]} has {self._names_ref[0]}; "
                    f"every file of a dataset needs the same params",
                )
            self._with_params.append(path)
        elif self.require_params:
            raise InvalidArgument(str(path), f"has no matching .params file ({ppath.name})")
        else:
            self._without_params.append(path)
        if self._with_params and self._without_params:
            raise InvalidArgument(
                str(self._without_params[0]),
                f"has no .params file ({self._without_params[0].with_suffix('.params').name}) but "
                f"{self._with_params[0]} has one; give every file one, or none",
            )
        return pf
