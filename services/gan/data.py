"""The clips a GAN trains on: audio files -> (attribute filters) -> clips -> spectrograms in a local cache -> batches.

    data = load_training_data(cfg, store)            # reads every file once; later loads hit the cache
    print(data.counts.line())                        # "3 files → 40 clips (2 dropped as silent)"
    batches = ClipBatches(data.clips, seed=0, batch_size=lambda step: 8)
    idx = batches.indices(step)                      # the step's global batch: drawn from (seed, step) alone
    specs = batches.specs(step)                      # [B / world_size, F, N]: this rank's strided shard of it

Files: `loaderConfig.data_path` names a store dataset, a store URI or a local folder. With `att_dict_path` (an
NSynth-style `{file_stem: {attr: value}}` JSON, or a CSV) `filter_keys` and `pitch_range` pick the files as the
original sonyGanFork loader did, and the AC-GAN labels come from it; otherwise labels come from `.params`.

Clips: each file is cut into clips of the transform's length every `clip_hop` samples; quiet clips (RMS below
`silence_db` dB re full scale) are dropped and counted; `pad` decides what a file or tail shorter than a clip
becomes (see smf.gan.config). The cut is a pure function of the file's length: `plan_clips`.

Cache: a file's kept clips are transformed once and written to a local cache entry (`$SMF_SPEC_CACHE`, else
`$SMF_CACHE_DIR/specs`, else ~/.cache/smf/specs) keyed by the file's identity (store URI + key + size + recorded
sha256, or a local path + size + mtime), the clip options and the transform's parameters; an entry holds the
spectrograms of that file's clips and their offsets. A clip is then one read of F*N float32 at a known position.

Memory: if all spectrograms fit in `memory_budget_mb` they are held in RAM (what the trainer always did: the
fastest per step); otherwise `CachedClips` keeps only the clip descriptors (entry, row, offset: ~20 bytes a clip)
and each batch reads its clips from the cache, in DataLoader workers when `num_workers` > 0.

Sampling: the batch of step s is drawn from a generator seeded by (seed, s), so it is the same on every rank and
for any world size, and a resumed run continues with exactly the batches it would have had; each rank keeps
rows rank, rank + W, ... (smf.common.distributed.Dist.shard), the DistributedSampler of this trainer.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from smf.common import refs
from smf.common.audio import AUDIO_EXTENSIONS
from smf.common.distributed import Dist
from smf.common.errors import FailedPrecondition, InvalidArgument
from smf.common.files import atomic_write
from smf.common.store import Store
from smf.gan.config import GanConfig

CACHE_VERSION = 1  # bump when the cache entry's layout or the clip cutting changes
LSD_SAMPLE = 512  # clips the LSD metric compares against (evenly spread over the data)
TRANSFORM_CHUNK = 64  # clips transformed at once while filling the cache


# --- files ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One audio file of the training data."""

    name: str  # store key or local path: errors and attribute lookups use it
    identity: str  # what the cache is keyed by: changes whenever the file's content may have changed
    audio: Callable[[], bytes | str]  # its bytes, or its local path, for smf.common.audio.load_audio
    params: Callable[[], bytes | str] | None = None  # its .params, if there is one

    @property
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.name))[0]


def list_sources(cfg: GanConfig, store: Store) -> list[Source]:
    """The audio files named by loaderConfig.data_path, sorted by name."""
    path = cfg.loader.data_path
    field_name = "loaderConfig.data_path"
    if refs.is_uri(path):  # a full store URI: the data may live in another store than the run
        store, prefix = refs.resolve_key(store, path, field=field_name, allowed=refs.ANY)
    elif refs.is_local_path(path):  # a local folder of audio, as in the original configs
        return _folder_sources(Path(os.path.expanduser(path)), field_name)
    else:
        prefix = path.strip("/")
    keys = store.list(prefix)
    wavs = [k for k in keys if k.lower().endswith(AUDIO_EXTENSIONS)]
    if not wavs:
        raise InvalidArgument(field_name, f"no audio files under {prefix!r} in {store.uri}")
    key_set = set(keys)
    sources = []
    for k in wavs:
        info = store.stat(k)
        p = k.rsplit(".", 1)[0] + ".params"
        sources.append(
            Source(
                name=k,
                identity=f"{store.uri}/{k}:{info.size}:{info.sha256 or info.modified}",
                audio=functools.partial(store.get_bytes, k),
                params=functools.partial(store.get_bytes, p) if p in key_set else None,
            )
        )
    return sources


def _folder_sources(folder: Path, field_name: str) -> list[Source]:
    if not folder.is_dir():
        raise InvalidArgument(field_name, f"{folder} is not a folder")
    from smf.datasets import find_audio

    wavs = [folder / rel for rel in sorted(find_audio(folder, hidden=True))]  # hidden files too, as before
    if not wavs:
        raise InvalidArgument(field_name, f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {folder}")
    sources = []
    for p in wavs:
        st = p.stat()
        params = p.with_suffix(".params")
        sources.append(
            Source(
                name=str(p),
                identity=f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}",
                audio=functools.partial(str, p),
                params=functools.partial(str, params) if params.exists() else None,
            )
        )
    return sources


# --- attributes (att_dict_path, filter_keys, pitch_range) -------------------------------------------------------------
def read_attributes(raw: str, store: Store) -> dict[str, dict]:
    """The attribute table named by loaderConfig.att_dict_path: `{file stem or name: {attr: value}}`, from JSON
    (NSynth's examples.json shape) or CSV (first column the file, the header names the attributes)."""
    field_name = "loaderConfig.att_dict_path"
    try:
        if refs.is_uri(raw):
            home, key = refs.resolve_key(store, raw, field=field_name, allowed=refs.ANY)
            data = home.get_bytes(key)
        elif refs.is_local_path(raw):
            data = Path(os.path.expanduser(raw)).read_bytes()
        else:
            data = store.get_bytes(raw.strip("/"))
    except OSError as exc:
        raise InvalidArgument(field_name, f"cannot read {raw}: {exc.strerror or exc}") from None
    if raw.lower().endswith(".csv"):
        return _csv_attributes(data, raw)
    try:
        table = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            field_name, f"{raw} is not valid JSON ({exc}); expected {{file: {{attr: value}}}}"
        ) from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise InvalidArgument(field_name, f"{raw} must be a JSON object {{file: {{attr: value}}}}")
    return table


def _csv_attributes(data: bytes, raw: str) -> dict[str, dict]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig", errors="replace"))))
    if len(rows) < 2 or len(rows[0]) < 2:
        raise InvalidArgument("loaderConfig.att_dict_path", f"{raw}: expected a header (file, attr, ...) and rows")
    header = rows[0]
    return {r[0]: {a: _number(v) for a, v in zip(header[1:], r[1:], strict=False)} for r in rows[1:] if r}


def _number(text: str):
    """CSV cells are text: a number stays a number, so pitch_range and integer filter ranges work on them."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def attributes_of(source: Source, table: dict[str, dict], raw: str) -> dict:
    """A file's attributes: looked up by stem (NSynth's keys), then by file name."""
    atts = table.get(source.stem, table.get(os.path.basename(source.name)))
    if atts is None:
        raise InvalidArgument(
            "loaderConfig.att_dict_path",
            f"{raw} has no entry for {source.name} (keys are file stems, e.g. {source.stem!r})",
        )
    return atts


def matches(atts: dict, filter_keys: dict[str, list] | None, pitch_range: list[int] | None, name: str) -> bool:
    """Whether a file with these attributes is kept. As in the original (utils.filter_keys_in_json): the file is
    kept when ANY filter key matches; a list of exactly two integers is the range lo <= value < hi. pitch_range
    (inclusive, the original's NSynth loader) must hold as well."""
    if filter_keys:
        hit = False
        for k, vals in filter_keys.items():
            if k not in atts:
                raise InvalidArgument(
                    f"loaderConfig.filter_keys.{k}", f"{name} has no attribute {k!r} (it has {', '.join(sorted(atts))})"
                )
            v = atts[k]
            if len(vals) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in vals):
                hit = hit or (isinstance(v, (int, float)) and vals[0] <= v < vals[1])
            else:
                hit = hit or v in vals
        if not hit:
            return False
    if pitch_range:
        if not isinstance(atts.get("pitch"), (int, float)):
            raise InvalidArgument("loaderConfig.pitch_range", f"{name} has no numeric 'pitch' attribute")
        return pitch_range[0] <= atts["pitch"] <= pitch_range[1]
    return True


def _params_labels(sources: list[Source], attrs: list[str]) -> list[list]:
    """The attribute's mean value in each file's .params, rounded, as its class value."""
    from smf.common.params import read_params

    values = []
    for s in sources:
        if s.params is None:
            raise InvalidArgument(
                "modelConfig.attribKeysOrder",
                f"ac_gan needs a .params file next to {s.name} (or labels from loaderConfig.att_dict_path)",
            )
        pf = read_params(s.params())
        row = []
        for a in attrs:
            if a not in pf.params:
                raise InvalidArgument(f"modelConfig.attribKeysOrder.{a}", f"{s.name}.params has no parameter {a!r}")
            v = pf.params[a].values
            row.append(round(float(sum(v) / len(v)), 3))
        values.append(row)
    return values


def _table_labels(atts: list[dict], sources: list[Source], attrs: list[str], raw: str) -> list[list]:
    rows = []
    for a_row, s in zip(atts, sources, strict=True):
        for a in attrs:
            if a not in a_row:
                raise InvalidArgument(f"modelConfig.attribKeysOrder.{a}", f"{raw} has no {a!r} for {s.name}")
        rows.append([a_row[a] for a in attrs])
    return rows


def class_indices(values: list[list], attrs: list[str]) -> tuple[torch.Tensor, dict[str, list]]:
    """Per file and attribute, the index of its value among the attribute's sorted distinct values."""
    classes = {
        a: sorted({row[j] for row in values}, key=lambda v: (isinstance(v, str), v)) for j, a in enumerate(attrs)
    }
    index = {a: {v: i for i, v in enumerate(vals)} for a, vals in classes.items()}
    labels = torch.tensor([[index[a][row[j]] for j, a in enumerate(attrs)] for row in values], dtype=torch.int64)
    return labels.reshape(len(values), len(attrs)), classes


# --- cutting files into clips ----------------------------------------------------------------------------------------
def plan_clips(n_samples: int, clip: int, hop: int, pad: str) -> list[tuple[int, int]]:
    """(offset, length) of the clips of a file of n_samples: full clips every `hop` samples, then the tail that no
    full clip covers; a clip shorter than `clip` (a short file, a tail) is kept unless pad == "drop"."""
    if n_samples <= 0:
        return []
    if n_samples < clip:
        return [] if pad == "drop" else [(0, n_samples)]
    clips = [(o, clip) for o in range(0, n_samples - clip + 1, hop)]
    last_end = clips[-1][0] + clip
    tail = clips[-1][0] + hop
    if last_end < n_samples and pad != "drop" and tail < n_samples:
        clips.append((tail, n_samples - tail))
    return clips


def cut(audio: torch.Tensor, offset: int, length: int, clip: int, pad: str) -> torch.Tensor:
    """One clip of `clip` samples: zero-padded, or (pad == "repeat") read on circularly from the file's start."""
    if length == clip:
        return audio[offset : offset + clip]
    if pad == "repeat":
        return audio[(offset + torch.arange(clip)) % len(audio)]
    out = torch.zeros(clip, dtype=audio.dtype)
    out[:length] = audio[offset : offset + length]
    return out


def rms_db(x: torch.Tensor) -> float:
    """RMS level in dB re full scale (0 dB = RMS 1.0, a full-scale square wave; a full-scale sine is -3 dB)."""
    return 20 * math.log10(max(float(x.double().pow(2).mean().sqrt()), 1e-10))


def spread(n: int, k: int) -> list[int]:
    """k indices of range(n) evenly spread from the first to the last (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


# --- the local spectrogram cache --------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where spectrogram cache entries live: $SMF_SPEC_CACHE, else $SMF_CACHE_DIR/specs, else ~/.cache/smf/specs."""
    if os.environ.get("SMF_SPEC_CACHE"):
        return Path(os.environ["SMF_SPEC_CACHE"])
    root = os.environ.get("SMF_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "smf")
    return Path(root) / "specs"


@dataclass(frozen=True)
class ClipOptions:
    """Everything that decides a file's clips and their spectrograms: the cache key besides the file itself."""

    sample_rate: int
    clip: int  # samples
    hop: int
    pad: str
    silence_db: float | None
    max_clips_per_file: int | None
    stft_channels: int
    hop_size: int
    n_frames: int
    db_floor: float = -100.0

    @classmethod
    def from_config(cls, cfg: GanConfig) -> ClipOptions:
        t, lo = cfg.transform, cfg.loader
        return cls(
            sample_rate=t.sample_rate,
            clip=t.audio_length,
            hop=lo.clip_hop or t.audio_length,
            pad=lo.pad,
            silence_db=lo.silence_db,
            max_clips_per_file=lo.max_clips_per_file,
            stft_channels=t.stft_channels,
            hop_size=t.hop_size,
            n_frames=t.n_frames,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.stft_channels // 2 + 1, self.n_frames

    def entry_key(self, identity: str) -> str:
        text = json.dumps({"v": CACHE_VERSION, "source": identity, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Entry:
    """A file's cache entry: its kept clips' spectrograms in `blob` (float32 [len(offsets), F, N]) and counts."""

    blob: str
    offsets: list[int]
    lengths: list[int]
    silent: int = 0
    short_dropped: int = 0
    capped: int = 0
    hit: bool = False


def cached_entry(source: Source, opts: ClipOptions, root: Path | None = None) -> Entry:
    """The file's entry: read from the cache when there, else made (file read, cut, transformed) and written.
    The JSON index is written after the blob, both atomically: an entry whose index exists is complete."""
    key = opts.entry_key(source.identity)
    folder = (root or cache_dir()) / key[:2]
    blob, index = folder / f"{key}.f32", folder / f"{key}.json"
    f, n = opts.shape
    try:
        meta = json.loads(index.read_text())
        if blob.stat().st_size == len(meta["offsets"]) * f * n * 4:
            del meta["source"]
            return Entry(blob=str(blob), **meta, hit=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, or left unreadable by something outside smf: made again below
    from smf.common.audio import SpectrogramTransform, load_audio

    audio, _ = load_audio(source.audio(), sample_rate=opts.sample_rate, name=source.name)
    planned = plan_clips(len(audio), opts.clip, opts.hop, opts.pad)
    # pad == "drop": the short file or tail that "zero" would have kept
    short_dropped = len(plan_clips(len(audio), opts.clip, opts.hop, "zero")) - len(planned)
    loud = [opts.silence_db is None or rms_db(audio[o : o + k]) >= opts.silence_db for o, k in planned]
    kept = [c for c, keep in zip(planned, loud, strict=True) if keep]
    silent = len(planned) - len(kept)
    capped = 0
    if opts.max_clips_per_file is not None and len(kept) > opts.max_clips_per_file:
        capped = len(kept) - opts.max_clips_per_file
        kept = [kept[i] for i in spread(len(kept), opts.max_clips_per_file)]
    transform = SpectrogramTransform(
        opts.stft_channels, opts.hop_size, opts.n_frames, opts.sample_rate, db_floor=opts.db_floor
    )
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(blob) as out:  # chunk by chunk: a long file's spectrograms are never all in memory
        for i in range(0, len(kept), TRANSFORM_CHUNK):
            clips = torch.stack([cut(audio, o, k, opts.clip, opts.pad) for o, k in kept[i : i + TRANSFORM_CHUNK]])
            out.write(transform.to_spectrogram(clips).float().contiguous().numpy().tobytes())
    entry = Entry(str(blob), [o for o, _ in kept], [k for _, k in kept], silent, short_dropped, capped)
    meta = {k: v for k, v in asdict(entry).items() if k not in ("blob", "hit")}
    with atomic_write(index, "w") as out:
        json.dump({"source": source.name, **meta}, out)
    return entry


# --- the clips as a torch Dataset -------------------------------------------------------------------------------------
class InMemoryClips(torch.utils.data.Dataset):
    """Every clip's spectrogram in one tensor [M, F, N]: the fast path, for data under the memory budget."""

    def __init__(self, specs: torch.Tensor):
        self.specs = specs

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.specs.shape[1:])  # type: ignore[return-value]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.specs[i]

    def take(self, idx: torch.Tensor | list[int]) -> torch.Tensor:
        return self.specs[torch.as_tensor(idx, dtype=torch.long)]

    __getitems__ = take


class CachedClips(torch.utils.data.Dataset):
    """The clips as descriptors (cache entry, row; source, offset, length): each item is read from its entry's
    blob on demand, so this object's size is ~20 bytes a clip whatever the spectrogram size."""

    def __init__(self, entries: list[Entry], names: list[str], shape: tuple[int, int]):
        self.blobs = [e.blob for e in entries]
        self.names = names  # the source of each entry
        self.shape = shape
        self.entry = np.concatenate([np.full(len(e.offsets), i, np.int32) for i, e in enumerate(entries)] or [[]])
        self.row = np.concatenate([np.arange(len(e.offsets), dtype=np.int32) for e in entries] or [[]])
        self.offset = np.concatenate([np.asarray(e.offsets, np.int64) for e in entries] or [[]])
        self.length = np.concatenate([np.asarray(e.lengths, np.int32) for e in entries] or [[]])

    def __len__(self) -> int:
        return len(self.entry)

    def describe(self, i: int) -> tuple[str, int, int]:
        """(source name, offset, length in samples) of clip i."""
        return self.names[self.entry[i]], int(self.offset[i]), int(self.length[i])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.take([i])[0]

    def take(self, idx: torch.Tensor | list[int]) -> torch.Tensor:
        f, n = self.shape
        size = f * n * 4
        out = np.empty((len(idx), f, n), np.float32)
        for j, i in enumerate(torch.as_tensor(idx).tolist()):
            path = self.blobs[self.entry[i]]
            try:
                with open(path, "rb") as fh:
                    fh.seek(int(self.row[i]) * size)
                    out[j] = np.frombuffer(fh.read(size), np.float32).reshape(f, n)
            except (OSError, ValueError):
                raise FailedPrecondition(
                    f"spectrogram cache entry {path} (clips of {self.names[self.entry[i]]}) is gone or short: "
                    "it was removed while training; run the same command again (the run resumes, the cache refills)"
                ) from None
        return torch.from_numpy(out)

    __getitems__ = take  # DataLoader's batched fetch: one call per batch

    def load_all(self) -> torch.Tensor:
        """Every clip [M, F, N], one read per cache entry (for data under the memory budget)."""
        out = torch.empty(len(self), *self.shape)
        start = 0
        for blob in self.blobs:
            rows = torch.from_numpy(np.fromfile(blob, np.float32)).view(-1, *self.shape)
            out[start : start + len(rows)] = rows
            start += len(rows)
        return out


Clips = InMemoryClips | CachedClips


# --- the data of a run ------------------------------------------------------------------------------------------------
@dataclass
class DataCounts:
    """What the loader did, for the log line, progress.json and data.json."""

    files: int = 0  # files trained on (after filters and size)
    clips: int = 0
    silent: int = 0  # clips dropped as silent
    short_dropped: int = 0  # short files / tails dropped (pad == "drop")
    capped: int = 0  # clips beyond max_clips_per_file
    filtered_out: int = 0  # files dropped by filter_keys / pitch_range
    cache_hits: int = 0  # files whose clips came from the spectrogram cache
    in_memory: bool = True

    def line(self) -> str:
        extra = [
            f"{v} {what}"
            for v, what in (
                (self.short_dropped, "short dropped"),
                (self.capped, "over max_clips_per_file"),
                (self.filtered_out, "files filtered out"),
            )
            if v
        ]
        tail = "".join(f", {e}" for e in extra)
        where = "in RAM" if self.in_memory else "streamed from the cache"
        return (
            f"{self.files} files → {self.clips} clips ({self.silent} dropped as silent{tail}); "
            f"{self.cache_hits}/{self.files} files from the spectrogram cache, clips {where}"
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingData:
    """The clips a run trains on and, for a conditioned model, each clip's class indices."""

    clips: Clips
    labels: torch.Tensor | None = None  # [M, n_attrs] int64
    classes: dict[str, list] | None = None  # attribute -> class values, in index order
    source: str = ""  # artifact id (or folder) the data came from, for lineage
    counts: DataCounts = field(default_factory=DataCounts)
    files: list[str] = field(default_factory=list)  # the files trained on, in clip order

    @classmethod
    def from_specs(cls, specs: torch.Tensor, **kw) -> TrainingData:
        """Data given as spectrograms [M, F, N] (benches, tests)."""
        return cls(InMemoryClips(specs), counts=DataCounts(clips=len(specs)), **kw)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.clips.shape)  # type: ignore[return-value]

    def sample(self, n: int = LSD_SAMPLE) -> torch.Tensor:
        """At most n clips evenly spread over the data: a bounded stand-in for "all of it" (the LSD metric)."""
        return self.clips.take(spread(len(self.clips), n))


def load_training_data(cfg: GanConfig, store: Store, *, dist: Dist | None = None, log=None) -> TrainingData:
    """Pick the files, cut them into clips, fill the spectrogram cache; in RAM if under the memory budget.
    Under DDP rank 0 fills the cache first, then the other ranks read it (one machine: all hits)."""
    dist = dist or Dist()
    wait = dist.enabled and torch.distributed.is_initialized()
    if wait and not dist.is_main:
        dist.barrier()
    try:
        return _load(cfg, store)
    finally:
        if wait and dist.is_main:
            dist.barrier()


def _load(cfg: GanConfig, store: Store) -> TrainingData:
    lo = cfg.loader
    sources = list_sources(cfg, store)
    counts = DataCounts()
    atts: list[dict] | None = None
    if lo.att_dict_path:
        table = read_attributes(lo.att_dict_path, store)
        atts = [attributes_of(s, table, lo.att_dict_path) for s in sources]
        keep = [matches(a, lo.filter_keys, lo.pitch_range, s.name) for a, s in zip(atts, sources, strict=True)]
        counts.filtered_out = keep.count(False)
        sources = [s for s, k in zip(sources, keep, strict=True) if k]
        atts = [a for a, k in zip(atts, keep, strict=True) if k]
        if not sources:
            raise InvalidArgument("loaderConfig.filter_keys", f"no file of {lo.data_path} passes the filters")
    order = list(range(len(sources)))
    if lo.shuffle:  # the original shuffles before taking `size` files
        random.Random(cfg.train.seed).shuffle(order)
    if lo.size:
        order = order[: lo.size]
    sources = [sources[i] for i in order]
    atts = [atts[i] for i in order] if atts is not None else None

    opts = ClipOptions.from_config(cfg)
    entries = [cached_entry(s, opts) for s in sources]
    counts.files = len(sources)
    counts.clips = sum(len(e.offsets) for e in entries)
    counts.silent = sum(e.silent for e in entries)
    counts.short_dropped = sum(e.short_dropped for e in entries)
    counts.capped = sum(e.capped for e in entries)
    counts.cache_hits = sum(e.hit for e in entries)
    if counts.clips == 0:
        raise InvalidArgument(
            "loaderConfig.pad" if counts.short_dropped > counts.silent else "loaderConfig.silence_db",
            f"{counts.files} files gave no clips ({counts.silent} silent, {counts.short_dropped} too short): "
            'lower loaderConfig.silence_db, or use pad "zero" for files shorter than a clip',
        )
    clips: Clips = CachedClips(entries, [s.name for s in sources], opts.shape)
    f, n = opts.shape
    counts.in_memory = counts.clips * f * n * 4 <= lo.memory_budget_mb * 2**20
    if counts.in_memory:
        clips = InMemoryClips(clips.load_all())
    data = TrainingData(clips=clips, source=lo.data_path, counts=counts, files=[s.name for s in sources])
    attrs = cfg.model.attributes
    if attrs:
        per_file = (
            _table_labels(atts, sources, attrs, lo.att_dict_path)
            if atts is not None
            else _params_labels(sources, attrs)
        )
        file_labels, data.classes = class_indices(per_file, attrs)
        reps = torch.tensor([len(e.offsets) for e in entries])
        data.labels = file_labels.repeat_interleave(reps, dim=0)  # every clip has its file's labels
    return data


# --- batches -------------------------------------------------------------------------------------------------------
def step_indices(seed: int, step: int, batch: int, n: int) -> torch.Tensor:
    """The global batch of a step: `batch` clip indices in [0, n), a function of (seed, step) only."""
    # a hash, not seed + step: the generators of nearby seeds and steps must not overlap
    g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:8], "little"))
    return torch.randint(n, (batch,), generator=g)


class _Shards(torch.utils.data.Sampler):
    """DataLoader batch sampler: this rank's shard of every step's batch, from `start` on."""

    def __init__(self, batches: ClipBatches, start: int):
        self.batches, self.start = batches, start

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield self.batches.dist.shard(self.batches.indices(step)).tolist()
            step += 1


def _as_is(batch):
    return batch


class ClipBatches:
    """The batches of a run: `indices(step)` (global, the same on every rank) and `specs(step)` (this rank's shard,
    [B / W, F, N]). With num_workers > 0 a DataLoader reads the next batches ahead in worker processes."""

    def __init__(
        self,
        clips: Clips,
        *,
        seed: int,
        batch_size: Callable[[int], int],
        dist: Dist | None = None,
        num_workers: int = 0,
    ):
        self.clips, self.seed, self.batch_size = clips, seed, batch_size
        self.dist = dist or Dist()
        self.num_workers = num_workers if isinstance(clips, CachedClips) else 0  # RAM needs no readers
        self._it: Iterator[torch.Tensor] | None = None
        self._next = -1

    def indices(self, step: int) -> torch.Tensor:
        return step_indices(self.seed, step, self.batch_size(step), len(self.clips))

    def specs(self, step: int) -> torch.Tensor:
        if not self.num_workers:
            return self.clips.take(self.dist.shard(self.indices(step)))
        if self._it is None or self._next != step:  # first call, or a jump (resume): read ahead from here
            self.close()
            loader = torch.utils.data.DataLoader(
                self.clips, batch_sampler=_Shards(self, step), num_workers=self.num_workers, collate_fn=_as_is
            )
            self._it = iter(loader)
        self._next = step + 1
        return next(self._it)

    def close(self) -> None:
        """Stop the reader processes (they also stop with this object)."""
        self._it = None
