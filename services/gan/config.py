"""The GAN training config: the SMF JSON shape (`output_path`, `loaderConfig`, `transformConfig`, `modelConfig`).

A config written for the original SMF GAN (sonyGanFork, e.g. `oreilly_uncond.json`) loads as it is; every problem
is an `InvalidArgument` whose field is the dotted path of the key at fault:

    cfg = load_config("services/gan/configs/tiny.json")
    cfg.model.depthScales, cfg.transform.stft_channels, cfg.to_dict()

Keys the original accepted only for its own plumbing (`dataloader`, `imagefolderDataset`, ...) are accepted and
listed in `cfg.ignored`, so an old config still loads; a key that would change what is trained is honoured or refused,
never ignored; keys neither knows are an error naming them. smf's own training knobs (seed, checkpoint interval, EMA
decay) live in an optional top-level `trainConfig` section so that the original sections keep their meaning.

loaderConfig (what smf.gan.data does with each key; the original's keys keep their meaning):
- `data_path`: a store dataset id ("datasets/tones"), a full store URI or a local folder of audio (wav, flac, ...).
- `size` (files kept, after filtering; null = all), `shuffle` (shuffle the files before taking `size`).
- `att_dict_path`: NSynth-style attributes `{file_stem: {attr: value}}` as JSON, or a CSV whose first column is the
  file (stem or name) and whose header names the attributes. Needed by `filter_keys` and `pitch_range`; with it,
  the AC-GAN labels (modelConfig.attribKeysOrder) come from it instead of the `.params` files.
- `filter_keys`: `{attr: [values]}`; as in the original, a file is kept when ANY key matches, and a list of exactly
  two integers is the range lo <= value < hi.
- `pitch_range`: `[lo, hi]` MIDI pitches kept, inclusive, read from the `pitch` attribute; `[]` or `["all"]`: all.
- Clips: every file is cut into clips of the transform's length (n_frames * hop_size samples), starting every
  `clip_hop` samples (default null = the clip length: no overlap). `silence_db` (default -60): a clip whose RMS is
  below this many dB re full scale (0 dB = RMS 1.0) is dropped and counted; null keeps every clip.
  `max_clips_per_file` (default null = all): at most this many per file, evenly spread over the file. `pad`
  ("zero" | "repeat" | "drop", default "zero"): a file, or the tail of a file, shorter than a clip is zero-padded,
  looped, or dropped.
- `num_workers` (default 0): DataLoader worker processes reading clips from the local spectrogram cache.
- `memory_budget_mb` (default 256): when every clip's spectrogram fits in this many MiB they are held in RAM
  (fastest); above it they are read from the cache per batch, so memory does not grow with the data.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from smf.common.errors import InvalidArgument

_REQUIRED = object()  # marks a key without a default

# --- loaderConfig ----------------------------------------------------------------------------------------------------
# (key -> default); what each key means: the module docstring.
_LOADER_USED: dict[str, Any] = {
    "data_path": _REQUIRED,
    "size": None,
    "shuffle": True,
    "att_dict_path": None,
    "filter_keys": None,
    "pitch_range": None,
    "clip_hop": None,
    "silence_db": -60.0,
    "max_clips_per_file": None,
    "pad": "zero",
    "num_workers": 0,
    "memory_budget_mb": 256,
}
PAD_POLICIES = ("zero", "repeat", "drop")
# Accepted for compatibility with sonyGanFork configs, not used: they only steered the original's own plumbing.
_LOADER_IGNORED = {
    "load_metadata",  # the original read att_dict only when this was true; smf reads it whenever att_dict_path is set
    "dataloader",  # {filename, classname}: which of the original's Python loader classes to import
}
# Keys of the original's NSynth loader that select or weight the data: a no-op value (null, false, [], ["all"])
# is accepted; any other value is refused with the filter_keys spelling that does it, so nothing is silently ignored.
_LOADER_NO_OP_ONLY = {
    "filter": 'use "filter_keys": {"instrument_source_str": [...]}',
    "instrument_labels": 'use "filter_keys": {"instrument_family_str": [...]}',
    "balance_att": "balanced sampling by attribute is not supported; remove the key",
    "attributes": "the AC-GAN's attributes are modelConfig.attribKeysOrder; remove the key",
    "attribute_list": "the AC-GAN's attributes are modelConfig.attribKeysOrder; remove the key",
}


# --- transformConfig -------------------------------------------------------------------------------------------------
_TRANSFORM_USED = {"transform": _REQUIRED, "stft_channels": 512, "n_frames": 128, "hop_size": 256, "sample_rate": 22050}
# Keys of the original's other transforms ("specgrams", "mel", ...): known, so the error is about `transform`.
_TRANSFORM_OTHER = {
    "fade_out",
    "fft_size",
    "win_size",
    "log",
    "ifreq",
    "audio_length",
    "mel_bins",
    "mfcc_bins",
    "n_mel",
    "n_mfcc",
}

# --- modelConfig -----------------------------------------------------------------------------------------------------
_MODEL_USED: dict[str, Any] = {
    "downSamplingFactor": _REQUIRED,
    "maxIterAtScale": _REQUIRED,
    "alphaNJumps": _REQUIRED,
    "alphaSizeJumps": _REQUIRED,
    "depthScales": _REQUIRED,
    "miniBatchSize": _REQUIRED,
    "dimLatentVector": _REQUIRED,
    "alphaJumpMode": "linear",
    "formatLayerType": "gansynth",
    "transposed": False,
    "ac_gan": False,
    "perChannelNormalization": True,
    "lossMode": "WGANGP",
    "lambdaGP": 10.0,
    "epsilonD": 0.001,  # PGGAN's drift term on D(real)^2 (pytorch_GAN_zoo default)
    "leakyness": 0.2,
    "miniBatchStdDev": True,
    "baseLearningRate": 0.001,
    "dimOutput": 1,
    "weightConditionG": 0.0,
    "weightConditionD": 0.0,
    "attribKeysOrder": None,
    "startScale": 0,
    "skipAttDfake": [],
}
_MODEL_IGNORED = {
    "imagefolderDataset",
    "iterAlphaJump",
    "alphaJumpVals",
    "equalizedlR",
    "initBiasToZero",
    "GDPP",
    "learning_rate",
    "dimG",
    "dimD",
    "generationActivation",
}

# --- trainConfig (smf only, optional) --------------------------------------------------------------------------------
_TRAIN_USED = {
    "seed": 0,
    "checkpointEvery": 1000,  # steps between checkpoints (a final one is always written)
    "emaDecay": 0.999,  # EMA of the generator used for sampling; warmed up over the first steps
    "previewCount": 16,  # preview samples drawn into the mosaic at each checkpoint
    "logEvery": 50,  # steps between progress.json updates
    "device": "auto",  # "auto" (CUDA when present), "cpu", "cuda"
}

_TOP_USED = {
    "output_path": "output",
    "loaderConfig": _REQUIRED,
    "transformConfig": _REQUIRED,
    "modelConfig": _REQUIRED,
    "trainConfig": None,
}
_TOP_IGNORED = {"comments", "comment", "name"}


@dataclass(frozen=True)
class LoaderConfig:
    data_path: str
    size: int | None = None
    shuffle: bool = True
    att_dict_path: str | None = None
    filter_keys: dict[str, list] | None = None
    pitch_range: list[int] | None = None  # [lo, hi] inclusive; None = every pitch
    clip_hop: int | None = None  # samples between clip starts; None = the clip length
    silence_db: float | None = -60.0
    max_clips_per_file: int | None = None
    pad: str = "zero"
    num_workers: int = 0
    memory_budget_mb: int = 256


@dataclass(frozen=True)
class TransformConfig:
    transform: str
    stft_channels: int = 512
    n_frames: int = 128
    hop_size: int = 256
    sample_rate: int = 22050

    @property
    def n_bins(self) -> int:
        """Frequency bins of the transform's spectrogram (stft_channels//2 + 1, e.g. 257)."""
        return self.stft_channels // 2 + 1

    @property
    def audio_length(self) -> int:
        return self.n_frames * self.hop_size


@dataclass(frozen=True)
class ModelConfig:
    downSamplingFactor: list[list[int]]
    maxIterAtScale: list[int]
    alphaNJumps: list[int]
    alphaSizeJumps: list[int]
    depthScales: list[int]
    miniBatchSize: list[int]
    dimLatentVector: int
    alphaJumpMode: str = "linear"
    formatLayerType: str = "gansynth"
    transposed: bool = False
    ac_gan: bool = False
    perChannelNormalization: bool = True
    lossMode: str = "WGANGP"
    lambdaGP: float = 10.0
    epsilonD: float = 0.001
    leakyness: float = 0.2
    miniBatchStdDev: bool = True
    baseLearningRate: float = 0.001
    dimOutput: int = 1
    weightConditionG: float = 0.0
    weightConditionD: float = 0.0
    attribKeysOrder: dict[str, int] | None = None
    startScale: int = 0
    skipAttDfake: list = field(default_factory=list)

    @property
    def n_scales(self) -> int:
        return len(self.downSamplingFactor)

    @property
    def attributes(self) -> list[str]:
        """Conditioning attributes in latent order (empty unless ac_gan)."""
        if not self.ac_gan or not self.attribKeysOrder:
            return []
        return sorted(self.attribKeysOrder, key=lambda k: self.attribKeysOrder[k])


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    checkpointEvery: int = 1000
    emaDecay: float = 0.999
    previewCount: int = 16
    logEvery: int = 50
    device: str = "auto"


@dataclass(frozen=True)
class GanConfig:
    output_path: str
    loader: LoaderConfig
    transform: TransformConfig
    model: ModelConfig
    train: TrainConfig
    ignored: tuple[str, ...] = field(
        default=(), compare=False
    )  # dotted paths of accepted-but-unused keys, for a warning

    def to_dict(self) -> dict:
        """The SMF-shaped dict (only the keys smf uses); `parse_config(cfg.to_dict())` gives an equal config."""
        return {
            "output_path": self.output_path,
            "loaderConfig": asdict(self.loader),
            "transformConfig": asdict(self.transform),
            "modelConfig": asdict(self.model),
            "trainConfig": asdict(self.train),
        }

    @property
    def total_steps(self) -> int:
        return sum(self.model.maxIterAtScale[self.model.startScale :])


# --------------------------------------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike) -> GanConfig:
    """Read and validate a config file; a missing or non-JSON file is an InvalidArgument naming the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InvalidArgument(path, f"cannot read config: {exc.strerror}") from None
    return parse_config(data, source=path)


def parse_config(obj: dict | str | bytes, *, source: str = "config") -> GanConfig:
    """Validate an SMF config given as a dict or JSON text. Raises InvalidArgument("<dotted.key>", why)."""
    if isinstance(obj, (str, bytes)):
        try:
            obj = json.loads(obj)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidArgument(source, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidArgument(source, "must be a JSON object with loaderConfig, transformConfig and modelConfig")

    ignored: list[str] = []
    top = _section(obj, "", _TOP_USED, _TOP_IGNORED, ignored)
    ldict = _obj(top["loaderConfig"], "loaderConfig")
    _check_no_ops(ldict)
    loader = _section(ldict, "loaderConfig", _LOADER_USED, _LOADER_IGNORED | set(_LOADER_NO_OP_ONLY), ignored)
    tdict = _obj(top["transformConfig"], "transformConfig")
    if tdict.get("transform") != "pghi":  # checked first: other transforms have other keys
        if "transform" not in tdict:
            raise InvalidArgument("transformConfig.transform", 'missing required key (expected "pghi")')
        raise InvalidArgument(
            "transformConfig.transform",
            f'only "pghi" (log-magnitude + PGHI phase) is supported, got {tdict["transform"]!r}',
        )
    transform = _section(tdict, "transformConfig", _TRANSFORM_USED, _TRANSFORM_OTHER, ignored)
    model = _section(_obj(top["modelConfig"], "modelConfig"), "modelConfig", _MODEL_USED, _MODEL_IGNORED, ignored)
    train = _section(_obj(top["trainConfig"] or {}, "trainConfig"), "trainConfig", _TRAIN_USED, set(), ignored)

    cfg = GanConfig(
        output_path=_str(top["output_path"], "output_path"),
        loader=_check_loader(loader),
        transform=_check_transform(transform),
        model=_check_model(model),
        train=_check_train(train),
        ignored=tuple(ignored),
    )
    _check_shapes(cfg)
    return cfg


# --------------------------------------------------------------------------------------------------------------------
def _obj(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidArgument(path, f"must be a JSON object, got {type(value).__name__}")
    return value


def _section(d: dict, path: str, used: dict, ignored_keys: set, ignored: list) -> dict:
    """Defaults filled in; unknown keys and missing required keys raise InvalidArgument naming them."""
    dot = (path + ".") if path else ""
    unknown = sorted(k for k in d if k not in used and k not in ignored_keys)
    if unknown:
        names = ", ".join(dot + k for k in unknown)
        raise InvalidArgument(dot + unknown[0], f"unknown key(s) {names}; known: {', '.join(sorted(used))}")
    missing = [k for k, default in used.items() if default is _REQUIRED and k not in d]
    if missing:
        raise InvalidArgument(dot + missing[0], "missing required key(s) " + ", ".join(dot + k for k in missing))
    ignored.extend(dot + k for k in d if k in ignored_keys)
    return {k: d.get(k, default) for k, default in used.items()}


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise InvalidArgument(path, f"must be a non-empty string, got {v!r}")
    return v


def _int(v: Any, path: str, *, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgument(path, f"must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise InvalidArgument(path, f"must be >= {lo}, got {v}")
    return v


def _float(v: Any, path: str, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InvalidArgument(path, f"must be a finite number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise InvalidArgument(path, f"must be in [{lo}, {hi}], got {v}")
    return float(v)


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise InvalidArgument(path, f"must be true or false, got {v!r}")
    return v


def _int_list(v: Any, path: str, *, lo: int) -> list[int]:
    if not isinstance(v, list) or not v:
        raise InvalidArgument(path, f"must be a non-empty list of integers, got {v!r}")
    return [_int(x, f"{path}[{i}]", lo=lo) for i, x in enumerate(v)]


def _check_no_ops(d: dict) -> None:
    for key, instead in _LOADER_NO_OP_ONLY.items():
        if key in d and d[key] not in (None, False, [], ["all"], {}):
            raise InvalidArgument(f"loaderConfig.{key}", f"{d[key]!r} would change the training data: {instead}")


def _opt(v: Any, check, path: str, **kw):
    return None if v is None else check(v, path, **kw)


def _check_loader(d: dict) -> LoaderConfig:
    p = "loaderConfig."
    if d["pad"] not in PAD_POLICIES:
        raise InvalidArgument(p + "pad", f"must be one of {', '.join(PAD_POLICIES)}, got {d['pad']!r}")
    for key in ("filter_keys", "pitch_range"):  # both select files by their attributes
        if d[key] not in (None, {}, [], ["all"]) and d["att_dict_path"] is None:
            raise InvalidArgument(p + key, "selects files by their attributes: set loaderConfig.att_dict_path too")
    return LoaderConfig(
        data_path=_str(d["data_path"], p + "data_path"),
        size=_opt(d["size"], _int, p + "size", lo=1),
        shuffle=_bool(d["shuffle"], p + "shuffle"),
        att_dict_path=_opt(d["att_dict_path"], _str, p + "att_dict_path"),
        filter_keys=_check_filter_keys(d["filter_keys"], p + "filter_keys"),
        pitch_range=_check_pitch_range(d["pitch_range"], p + "pitch_range"),
        clip_hop=_opt(d["clip_hop"], _int, p + "clip_hop", lo=1),
        silence_db=_opt(d["silence_db"], _float, p + "silence_db", lo=-200.0, hi=0.0),
        max_clips_per_file=_opt(d["max_clips_per_file"], _int, p + "max_clips_per_file", lo=1),
        pad=d["pad"],
        num_workers=_int(d["num_workers"], p + "num_workers", lo=0),
        memory_budget_mb=_int(d["memory_budget_mb"], p + "memory_budget_mb", lo=0),
    )


def _check_filter_keys(v: Any, path: str) -> dict[str, list] | None:
    if v is None or v == {}:
        return None
    if not isinstance(v, dict):
        raise InvalidArgument(path, f"must be an object {{attribute: [values]}}, got {v!r}")
    for k, vals in v.items():
        if not isinstance(vals, list) or not vals:
            raise InvalidArgument(f"{path}.{k}", f"must be a non-empty list of values, got {vals!r}")
        if not all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in vals):
            raise InvalidArgument(f"{path}.{k}", f"values must be strings or numbers, got {vals!r}")
    return {k: list(vals) for k, vals in v.items()}


def _check_pitch_range(v: Any, path: str) -> list[int] | None:
    if v is None or v in ([], ["all"]):  # the original's spellings of "every pitch"
        return None
    if not (isinstance(v, list) and len(v) == 2):
        raise InvalidArgument(path, f'must be [lo, hi] (MIDI pitches, inclusive), [] or ["all"], got {v!r}')
    lo, hi = _int(v[0], path + "[0]", lo=0), _int(v[1], path + "[1]", lo=0)
    if lo > hi:
        raise InvalidArgument(path, f"lo must be <= hi, got {v!r}")
    return [lo, hi]


def _check_transform(d: dict) -> TransformConfig:
    p = "transformConfig."
    stft = _int(d["stft_channels"], p + "stft_channels", lo=8)
    hop = _int(d["hop_size"], p + "hop_size", lo=1)
    if hop > stft:
        raise InvalidArgument(p + "hop_size", f"must be <= stft_channels ({stft}), got {hop}")
    return TransformConfig(
        transform="pghi",
        stft_channels=stft,
        n_frames=_int(d["n_frames"], p + "n_frames", lo=1),
        hop_size=hop,
        sample_rate=_int(d["sample_rate"], p + "sample_rate", lo=1000),
    )


def _check_model(d: dict) -> ModelConfig:
    p = "modelConfig."
    dsf, lists = _check_scales(d, p)
    _check_supported(d, p)
    ako, ac_gan = _check_attributes(d, p)
    n = len(dsf)
    start = _int(d["startScale"], p + "startScale", lo=0)
    if start >= n:
        raise InvalidArgument(p + "startScale", f"must be < number of scales ({n}), got {start}")
    if not isinstance(d["skipAttDfake"], list):
        raise InvalidArgument(p + "skipAttDfake", "must be a list")
    return ModelConfig(
        downSamplingFactor=[[int(a), int(b)] for a, b in dsf],
        **lists,
        dimLatentVector=_int(d["dimLatentVector"], p + "dimLatentVector", lo=1),
        alphaJumpMode="linear",
        formatLayerType=d["formatLayerType"],
        transposed=False,
        ac_gan=ac_gan,
        perChannelNormalization=_bool(d["perChannelNormalization"], p + "perChannelNormalization"),
        lossMode="WGANGP",
        lambdaGP=_float(d["lambdaGP"], p + "lambdaGP", lo=0.0),
        epsilonD=_float(d["epsilonD"], p + "epsilonD", lo=0.0),
        leakyness=_float(d["leakyness"], p + "leakyness", lo=0.0, hi=1.0),
        miniBatchStdDev=_bool(d["miniBatchStdDev"], p + "miniBatchStdDev"),
        baseLearningRate=_float(d["baseLearningRate"], p + "baseLearningRate", lo=1e-8, hi=1.0),
        dimOutput=1,
        weightConditionG=_float(d["weightConditionG"], p + "weightConditionG", lo=0.0),
        weightConditionD=_float(d["weightConditionD"], p + "weightConditionD", lo=0.0),
        attribKeysOrder=dict(ako) if ako else None,
        startScale=start,
        skipAttDfake=list(d["skipAttDfake"]),
    )


def _check_scales(d: dict, p: str) -> tuple[list, dict[str, list[int]]]:
    """downSamplingFactor (one [freq, time] pair per scale, finest last) and the lists with one entry per scale."""
    dsf = d["downSamplingFactor"]
    if not isinstance(dsf, list) or not dsf:
        raise InvalidArgument(p + "downSamplingFactor", "must be a non-empty list of [freq, time] factors")
    for i, f in enumerate(dsf):
        if not (isinstance(f, list) and len(f) == 2):
            raise InvalidArgument(f"{p}downSamplingFactor[{i}]", f"must be a pair [freq, time], got {f!r}")
        _int(f[0], f"{p}downSamplingFactor[{i}][0]", lo=1)
        _int(f[1], f"{p}downSamplingFactor[{i}][1]", lo=1)
    for i in range(1, len(dsf)):
        if dsf[i][0] > dsf[i - 1][0] or dsf[i][1] > dsf[i - 1][1]:
            raise InvalidArgument(
                f"{p}downSamplingFactor[{i}]", f"scales must grow: {dsf[i]} is coarser than {dsf[i - 1]}"
            )
    n = len(dsf)
    lists = {}
    for key, lo in (
        ("maxIterAtScale", 0),
        ("alphaNJumps", 0),
        ("alphaSizeJumps", 1),
        ("depthScales", 1),
        ("miniBatchSize", 1),
    ):
        lists[key] = _int_list(d[key], p + key, lo=lo)
        if len(lists[key]) != n:
            raise InvalidArgument(p + key, f"has {len(lists[key])} entries, downSamplingFactor has {n} (one per scale)")
    return dsf, lists


def _check_supported(d: dict, p: str) -> None:
    """Keys of the original configs whose other values this port does not implement: refused, not ignored."""
    if d["alphaJumpMode"] != "linear":
        raise InvalidArgument(p + "alphaJumpMode", f'only "linear" is supported, got {d["alphaJumpMode"]!r}')
    if d["formatLayerType"] not in ("gansynth", "default"):
        raise InvalidArgument(p + "formatLayerType", f'must be "gansynth" or "default", got {d["formatLayerType"]!r}')
    if _bool(d["transposed"], p + "transposed"):
        raise InvalidArgument(p + "transposed", "transposed (time x freq) images are not supported; use false")
    if d["lossMode"] != "WGANGP":
        raise InvalidArgument(p + "lossMode", f'only "WGANGP" is supported, got {d["lossMode"]!r}')
    if _int(d["dimOutput"], p + "dimOutput", lo=1) != 1:
        raise InvalidArgument(p + "dimOutput", "the pghi transform has one channel (log-magnitude); use 1")


def _check_attributes(d: dict, p: str) -> tuple[dict | None, bool]:
    """(attribKeysOrder, ac_gan): the conditioning attributes, which an AC-GAN must name."""
    ako = d["attribKeysOrder"]
    if ako is not None:
        if not isinstance(ako, dict) or not all(isinstance(k, str) for k in ako):
            raise InvalidArgument(p + "attribKeysOrder", f"must be an object {{name: order}}, got {ako!r}")
        for k, v in ako.items():
            _int(v, f"{p}attribKeysOrder.{k}", lo=0)
    ac_gan = _bool(d["ac_gan"], p + "ac_gan")
    if ac_gan and not ako:
        raise InvalidArgument(p + "attribKeysOrder", "ac_gan is true: name the conditioning attributes here")
    return ako, ac_gan


def _check_train(d: dict) -> TrainConfig:
    p = "trainConfig."
    if d["device"] not in ("auto", "cpu", "cuda"):
        raise InvalidArgument(p + "device", f'must be "auto", "cpu" or "cuda", got {d["device"]!r}')
    return TrainConfig(
        seed=_int(d["seed"], p + "seed", lo=0),
        checkpointEvery=_int(d["checkpointEvery"], p + "checkpointEvery", lo=1),
        emaDecay=_float(d["emaDecay"], p + "emaDecay", lo=0.0, hi=1.0),
        previewCount=_int(d["previewCount"], p + "previewCount", lo=1),
        logEvery=_int(d["logEvery"], p + "logEvery", lo=1),
        device=d["device"],
    )


def generated_bins(n_bins: int) -> int:
    """Bins the generator makes: an odd STFT bin count (stft_channels//2 + 1, e.g. 257) drops the Nyquist bin so
    the image halves cleanly scale by scale (256 -> 16); model.py appends it back as a copy of the top bin."""
    return n_bins - 1 if n_bins % 2 else n_bins


def _check_shapes(cfg: GanConfig) -> None:
    """Every scale's image size must be a whole number of bins x frames (see model.scale_shapes)."""
    f_gen, n = generated_bins(cfg.transform.n_bins), cfg.transform.n_frames
    for i, (df, dt) in enumerate(cfg.model.downSamplingFactor):
        if f_gen % df or n % dt:
            raise InvalidArgument(
                f"modelConfig.downSamplingFactor[{i}]",
                f"{[df, dt]} does not divide the spectrogram ({f_gen} generated bins x {n} frames, "
                f"from stft_channels={cfg.transform.stft_channels}, n_frames={n})",
            )
