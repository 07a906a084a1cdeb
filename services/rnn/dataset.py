"""Training data for an MTCRNN tier: wav + .params files, validated once, served as random windows.

Every file is checked up front (every conditioning param present, values in [0, 1], mono, the model's sample rate,
long enough for a window) and a problem raises InvalidArgument naming the file — the reference skipped missing
params silently and re-parsed the JSON for every window. Here the params are parsed once and pre-sampled at every
step time of the tier (every audio sample for the audio tier), so drawing a window is two tensor slices:

    data = load_dataset("datasets/tones", config, 512, store)       # or "grids/<id>", a URI, a local folder
    x, target = data.sample(batch=32, seq_len=512, generator=g)      # x [B, T, 1+C], target [B, T] classes

Analysis controls (`rms`, `centroid`, smf.rnn.features) named by the tier are computed from the audio at load,
normalised over the dataset and added to each file's params, so a parameter tier generating them (or an audio tier
conditioned on them) is windowed like any other param. `data.features` holds their normalisation.

Windows never straddle files; files may have different lengths (a window start is uniform over all valid
positions of the corpus). The conditioning at step t is the params' value at the time of input sample t.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from smf.common import refs
from smf.common.errors import InvalidArgument
from smf.rnn.model import RNNConfig, audio_input, decode_audio, encode_audio
from torch import Tensor


@dataclass
class TrainFile:
    """One file at the tier's rate: `series` [n] mu-law classes (audio tier) or [n, G] controls (param tier), and
    `cond` [n, C] conditioning sampled at the same step times; `phase` [n] the fundamental's measured phase when
    the tier has a pitch oscillator (smf.rnn.oscillator), else None."""

    name: str
    series: Tensor
    cond: Tensor
    phase: Tensor | None = None

    def __len__(self) -> int:
        return len(self.cond)


def prepare_file(name: str, audio: np.ndarray | Tensor, sample_rate: int, params, config: RNNConfig) -> TrainFile:
    """Validate one (audio, ParamFile) pair against the config and pre-sample its params. Errors name `name`."""
    from smf.common.params import sample_param, validate_params

    audio = torch.as_tensor(audio, dtype=torch.float32)
    if audio.ndim != 1:
        raise InvalidArgument(name, f"audio must be mono, got shape {list(audio.shape)}")
    if sample_rate != config.sample_rate:
        raise InvalidArgument(name, f"sample rate is {sample_rate} Hz, the model needs {config.sample_rate} Hz")
    if params is None:
        raise InvalidArgument(name, f"has no .params file; needs params {config.param_names + config.generate}")
    # names the file and the param at fault: missing, < 2 points, non-increasing times, values outside [0, 1]
    validate_params(params, config.param_names + config.generate, source=name)
    present = params.params

    duration = len(audio) / sample_rate
    n = len(audio) if config.is_audio else int(duration * config.step_rate)
    times = np.arange(n, dtype=np.float64) / config.step_rate

    def sampled(names: list[str]) -> Tensor:  # [n, len(names)], held (not extrapolated) past the last point
        cols = [sample_param(present[p], times, clamp=True) for p in names]
        return torch.as_tensor(np.stack(cols, axis=1) if cols else np.zeros((n, 0)), dtype=torch.float32)

    # classes kept as int16 (half the memory of int64; widened per window); a source-filter tier keeps the audio
    # itself (its targets depend on the envelope, fitted after loading: smf.rnn.source_filter.tier_batch)
    if config.is_audio and config.lpc:
        series = audio.clone()
    elif config.is_audio:
        series = encode_audio(audio, config.classes, config.preemphasis).to(torch.int16)
    else:
        series = sampled(config.generate)
    cond = sampled(config.param_names)
    return TrainFile(name, series, cond)


class WindowDataset:
    """Random training windows over a list of prepared files."""

    def __init__(self, files: Sequence[TrainFile], config: RNNConfig, seq_len: int, *, cross: float = 0.0):
        if not files:
            raise InvalidArgument("data", "dataset has no files")
        # with every window crossing file ends (cross = 1) a file may be shorter than a window: windows chain files
        # (a source-filter tier's windows also hold the lpc samples its first prediction needs)
        short = [f for f in files if len(f) < (seq_len + 1 + config.lpc if cross < 1.0 else 2)]
        if short:
            f = short[0]
            raise InvalidArgument(
                f.name,
                f"has {len(f)} steps, shorter than one training window (seq_len "
                f"{seq_len} + {1 + config.lpc}); lower seq_len below {len(f) - config.lpc}, or let every window run "
                "across file ends (cross 1)",
            )
        self.files = list(files)
        self.config = config
        self.seq_len = seq_len
        starts = torch.tensor([max(len(f) - seq_len, 1) for f in files], dtype=torch.float64)  # valid starts per file
        self.weights = starts / starts.sum()
        if not 0.0 <= cross <= 1.0:
            raise InvalidArgument("cross", f"must be in [0, 1], got {cross}")
        self.cross = cross  # fraction of windows that run on across a file's end into a random next file
        self.features: dict = {}  # normalisation of analysis controls (smf.rnn.features), set by prepare_files
        self.ranges: dict[str, dict] = {}  # physical range of each conditioning param, set by prepare_files
        self.pitch: list[float] | None = None  # normPitch's MIDI range, set by prepare_files for a pitch oscillator

    def __len__(self) -> int:
        return len(self.files)

    def sample(
        self, batch: int, seq_len: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """A batch of random windows -> (x [B, T, G+C] float32, target): target [B, T] int64 classes (audio tier)
        or [B, T, G] float32 (param tier). x row t = [series t, cond t]; target row t = series t+1."""
        from smf.rnn.oscillator import net_conditioning

        T = seq_len or self.seq_len
        xs, ys = [], []
        for s, c in zip(*self.windows(batch, T + 1, generator), strict=True):
            c = net_conditioning(c, self.config.cond_size, self.config.oscillator)  # [T, C (+ 2K)]
            if self.config.is_audio:
                s = s.long()
                xs.append(torch.cat([audio_input(s[:-1], self.config.classes)[:, None], c], 1))
            else:
                xs.append(torch.cat([s[:-1], c], 1))
            ys.append(s[1:])
        return torch.stack(xs), torch.stack(ys)

    def windows(self, batch: int, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A batch of random raw windows of n steps -> (series [B, n, ...], cond [B, n, C]): what `sample` turns
        into inputs and targets (a source-filter tier's trainer does it with its envelope instead). With a pitch
        oscillator, cond has one more column: the phase (smf.rnn.oscillator.net_conditioning turns it into inputs)."""
        idx = torch.multinomial(self.weights, batch, replacement=True, generator=generator)
        crossing = (
            torch.rand(batch, generator=generator) < self.cross if self.cross > 0 else torch.zeros(batch, dtype=bool)
        )
        ss, cs = [], []
        for i, across in zip(idx.tolist(), crossing.tolist(), strict=True):
            s, c = self._across(i, n, generator) if across else self._within(i, n, generator)
            ss.append(s)
            cs.append(c)
        return torch.stack(ss), torch.stack(cs)

    def audio(self, i: int) -> np.ndarray:
        """File i's audio as the tier learns it, decoded back to float32 [n] (the control score's reference)."""
        f, cfg = self.files[i], self.config
        if cfg.lpc:
            return f.series.numpy()
        return decode_audio(f.series.long(), cfg.classes, cfg.preemphasis).numpy()

    def _within(self, i: int, n: int, generator) -> tuple[Tensor, Tensor]:
        f = self.files[i]
        off = int(torch.randint(0, len(f) - n + 1, (1,), generator=generator))
        return f.series[off : off + n], _cond(f)[off : off + n]

    def _across(self, i: int, n: int, generator) -> tuple[Tensor, Tensor]:
        """n steps starting anywhere in file i and running on into random next files (from their start) at its end:
        the conditioning switches where the sound does, so the net learns that a change of knobs changes the sound
        (within one grid cell the knobs are constant and the past samples alone predict the next one)."""
        f = self.files[i]
        off = int(torch.randint(0, len(f), (1,), generator=generator))
        parts_s, parts_c, have = [f.series[off:]], [_cond(f)[off:]], len(f) - off
        while have < n:
            f = self.files[int(torch.multinomial(self.weights, 1, generator=generator))]
            parts_s.append(f.series[: n - have])
            parts_c.append(_cond(f)[: n - have])
            have += len(parts_s[-1])
        return torch.cat(parts_s)[:n], torch.cat(parts_c)[:n]


def _cond(f: TrainFile) -> Tensor:
    """A file's conditioning as windows carry it: with the measured phase as a last column when it has one."""
    return f.cond if f.phase is None else torch.cat([f.cond, f.phase[:, None].to(f.cond.dtype)], 1)


def artifact_id(data: str) -> str:
    """The store artifact a `data` string names: "datasets/tones", "grids/<id>" (2D4pt or SOM-rendered) … as given;
    a bare name ("tones") is a dataset, as before grids were accepted."""
    if data.startswith("/"):  # meant as a folder, and there is none
        raise InvalidArgument("data", f"{data!r} is not a folder, an artifact id or a store URI")
    return refs.artifact_id(data, "datasets", field="data", any_kind=True)


def resolve_data(data: str, store=None):
    """(store, artifact id) of a `data` string that is not a local folder: an id in `store` (default: the
    configured store) or a full artifact URI, whose store is opened (the trainer reads what its config names)."""
    if refs.is_uri(data):
        return refs.resolve(store, data, "datasets", field="data", allowed=refs.ANY, any_kind=True)
    return refs.resolve(store, artifact_id(data), "datasets", field="data", any_kind=True)


def lineage_input(data: str, store) -> str | None:
    """What an RNN run records as its input: the artifact id when the data is an artifact of the run's own store,
    the full URI when it sits in another store, nothing for a local folder (it is not an artifact)."""
    if os.path.isdir(data) or data.startswith(("/", ".")):
        return None
    data_store, aid = resolve_data(data, store)
    return aid if data_store.uri == store.uri else data_store.key_uri(aid)


def artifact_files(store, aid: str) -> list[tuple[str, str | None]]:
    """(audio key, .params key or None) for every audio file a committed artifact lists in its manifest, sorted.

    Any artifact holding wav (+ .params) pairs works: a dataset (files at its top level), a grid or a SOM-rendered
    grid (cells under `cells/`). Files not in the manifest are never read, so a grid still being rendered (or left
    by a crashed render: files, no manifest) is refused rather than trained on half.
    """
    from smf.common.errors import FailedPrecondition, NotFound
    from smf.common.lineage import MANIFEST, read_manifest
    from smf.datasets.files import audio_pairs

    try:
        manifest = read_manifest(store, aid)
    except NotFound:
        if store.list(aid):
            raise FailedPrecondition(
                f"{aid} in {store.uri} has files but no {MANIFEST}: it is still being written "
                "or its writer stopped half-way; wait for it to finish or create it again"
            ) from None
        raise NotFound(f"training data {aid!r} not found in {store.uri}") from None
    out = audio_pairs(aid, manifest.files)
    if not out:
        raise InvalidArgument("data", f"{aid} in {store.uri} (a {manifest.kind!r} artifact) holds no audio files")
    return out


def add_features(entries: list[tuple[str, np.ndarray | Tensor, int, object]], config: RNNConfig) -> dict:
    """Compute the analysis controls the tier needs (smf.rnn.features: rms, centroid) for every file, normalise them
    over the whole dataset and add them to each file's ParamFile (in memory; nothing is written back). Returns the
    normalisation stats ({} when the tier needs none). A feature some file's .params already records is taken from
    the files (the original notebooks wrote rms/centroid into .params); if only some files have it, the others are
    named as missing it by the usual validation."""
    from smf.common.params import ParamFile
    from smf.rnn import features

    names = [n for n in features.wanted(config) if not any(p is not None and n in p.params for _, _, _, p in entries)]
    if not names:
        return {}
    rate = features.feature_rate(config)
    raw = []
    for name, audio, sr, _ in entries:
        if sr != config.sample_rate:  # prepare_file names the file; analysing at a wrong rate would mislead
            raise InvalidArgument(name, f"sample rate is {sr} Hz, the model needs {config.sample_rate} Hz")
        if torch.as_tensor(audio).ndim != 1:
            raise InvalidArgument(name, f"audio must be mono, got shape {list(torch.as_tensor(audio).shape)}")
        raw.append(features.analyse(audio, sr, rate, names))
    stats = features.fit_stats(raw)
    for i, ((name, audio, sr, params), tracks) in enumerate(zip(entries, raw, strict=False)):
        if params is None:  # a tier on analysis controls alone needs no .params file
            params = ParamFile(name, {})
        params.params.update(features.to_params(tracks, stats, sr, rate))
        entries[i] = (name, audio, sr, params)
    return {n: {**s, "rate": rate} for n, s in stats.items()}


def prepare_files(
    entries: list[tuple[str, np.ndarray | Tensor, int, object]], config: RNNConfig, seq_len: int, *, cross: float = 0.0
) -> WindowDataset:
    """(name, audio, sample rate, ParamFile or None) for every file -> the validated WindowDataset, with analysis
    controls computed first when the tier asks for them (its `features` attribute holds their normalisation)."""
    stats = add_features(entries, config)
    data = WindowDataset([prepare_file(*e, config) for e in entries], config, seq_len, cross=cross)
    data.features = stats
    data.ranges = physical_ranges(entries, config.param_names)
    if config.oscillator:  # its MIDI range into data.pitch (and data.config), every file's phase measured
        from smf.rnn.oscillator import require_oscillator

        require_oscillator(config, data)
    return data


def physical_ranges(entries, names: list[str]) -> dict[str, dict]:
    """{param: {units, min, max}}: paramManager's origUnits/origMinval/origMaxval of each conditioning param, from the
    first file that states them (e.g. normPitch over MIDI 48..72), so a score can map 0..1 back to Hz."""
    out: dict[str, dict] = {}
    for *_, pf in entries:
        for n in names:
            p = pf.params.get(n) if pf is not None else None
            if n not in out and p is not None and p.orig_minval is not None and p.orig_maxval is not None:
                out[n] = {"units": p.orig_units, "min": float(p.orig_minval), "max": float(p.orig_maxval)}
    return out


def load_dataset(data: str, config: RNNConfig, seq_len: int, store=None, *, cross: float = 0.0) -> WindowDataset:
    """Load and validate every file of the training data: a store artifact holding wav + .params pairs
    ("datasets/tones", a grid "grids/<id>" rendered with --pm, 2D4pt or by the SOM), a full artifact URI
    ("file:///store/grids/x", "s3://bucket/prefix/datasets/x") or a local folder of wav + .params.
    Analysis controls (rms, centroid) named by the tier are computed here, once, normalised over the dataset."""
    from smf.common.audio import load_audio
    from smf.common.params import read_params

    entries = []
    if os.path.isdir(data):
        for root, _, names in sorted(os.walk(data)):
            for n in sorted(names):
                if os.path.splitext(n)[1].lower() != ".wav":  # exact extension (the reference took '.DS_Store')
                    continue
                path = os.path.join(root, n)
                ppath = os.path.splitext(path)[0] + ".params"
                audio, sr = load_audio(path, mono="error")
                params = read_params(ppath) if os.path.exists(ppath) else None
                entries.append((path, audio, sr, params))
        if not entries:
            raise InvalidArgument("data", f"no .wav files under {data}")
        return prepare_files(entries, config, seq_len, cross=cross)

    store, aid = resolve_data(data, store)
    for wav_key, params_key in artifact_files(store, aid):
        audio, sr = load_audio(store.get_bytes(wav_key), mono="error", name=wav_key)
        params = read_params(store.get_bytes(params_key), name=params_key) if params_key else None
        entries.append((wav_key, audio, sr, params))
    return prepare_files(entries, config, seq_len, cross=cross)
