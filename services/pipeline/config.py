"""The pipeline config: what `smf pipeline run CONFIG` builds, stage by stage, as one JSON file.

    cfg = load_config("services/pipeline/configs/demo.json")       # or parse_config(dict, source="...")
    cfg.name, cfg.dataset, cfg.gan, cfg.grid ...                  # plain dicts handed to the stages

    {
      "name": "demo",                                              # the run: pipelines/<name>/ in the store
      "dataset": {"builtin": "tones", "n_files": 25, "seed": 0},   # or {"folder": "~/sounds", "name": "mine",
                                                                   #  "sample_rate": 16000, "mono": "mean",
                                                                   #  "on_bad_file": "skip"}: the import policies
      "gan": "../../gan/configs/tiny.json",                         # SMF GAN config: a path (relative to this
                                                                   # file) or the JSON object itself
      "samples": {"count": 16, "seed": 0},
      "corners": "auto",                                           # or four sample indices [0, 3, 7, 12]
      "grid": {"d0": 5, "d1": 5},
      "som": {"iterations": 20},                                   # fields of SomService.StartLinearize
      "rnn": {"hidden": 32, "layers": 1, "steps": 200, ...},       # TrainingOptions / TrainConfig fields
      "gestures": [{"name": "ramp-dim0", "columns": ["ramp:0,1", "const:0.5"], "duration": 2.0}]
    }

Unknown keys are an error that names them: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smf.common.errors import InvalidArgument

__all__ = ["DEMO_CONFIG", "PipelineConfig", "load_config", "parse_config"]

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.json"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}")
GESTURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
DATASET_KEYS = {"builtin", "n_files", "seed", "sample_rate", "duration", "folder", "name", "mono", "on_bad_file"}
FOLDER_ONLY = {"mono", "on_bad_file"}  # import policies: a built-in set is made clean


@dataclass
class PipelineConfig:
    name: str = "pipeline"
    dataset: dict = field(default_factory=lambda: {"builtin": "tones"})
    gan: dict = field(default_factory=dict)  # the SMF GAN config itself (resolved)
    samples: dict = field(default_factory=lambda: {"count": 16, "seed": 0})
    corners: Any = "auto"  # "auto" or 4 sample indices
    grid: dict = field(default_factory=lambda: {"d0": 5, "d1": 5})
    som: dict = field(default_factory=dict)
    rnn: dict = field(default_factory=dict)
    gestures: list = field(default_factory=list)
    control: dict = field(default_factory=dict)  # control-following score: duration, seed, precision
    # the parameter tier (dim0, dim1 -> analysis controls) the audio tier renders; {} = one audio tier on dim0, dim1
    controls: dict = field(default_factory=dict)
    report: dict = field(default_factory=lambda: {"max_cells": 25})
    source: str = ""  # where the config came from (not hashed)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("source")
        return d


def load_config(path: str | os.PathLike) -> PipelineConfig:
    """Read a pipeline config file; a `gan` given as a path is resolved relative to that file."""
    path = Path(os.path.expanduser(os.fspath(path)))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidArgument(str(path), "pipeline config not found") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(str(path), f"not a readable JSON file: {exc}") from None
    raw.setdefault("name", path.stem)
    return parse_config(raw, source=str(path), base_dir=path.parent)


def parse_config(raw: dict, *, source: str = "config", base_dir: Path | None = None) -> PipelineConfig:
    """Validate a config dict (see the module docstring); errors name the field and the source."""
    if not isinstance(raw, dict):
        raise InvalidArgument(source, "a pipeline config is a JSON object")
    known = set(PipelineConfig.__dataclass_fields__) - {"source"}
    unknown = sorted(set(raw) - known - {"comments"})
    if unknown:
        raise InvalidArgument(source, f"unknown keys {unknown}; known: {sorted(known)}")
    raw = {k: v for k, v in raw.items() if k != "comments"}
    cfg = PipelineConfig(**raw, source=source)

    def bad(fieldname: str, msg: str) -> InvalidArgument:
        return InvalidArgument(f"{source}: {fieldname}", msg)

    if not isinstance(cfg.name, str) or not NAME.fullmatch(cfg.name):
        raise bad("name", f"{cfg.name!r} must be 1-41 characters of [A-Za-z0-9._-]")
    _check_dataset(cfg, bad, base_dir)
    _load_gan(cfg, bad, base_dir)
    _check_grid(cfg, bad)
    _check_gestures(cfg, bad)
    _check_control(cfg, bad)
    _check_controls(cfg, bad)
    return cfg


_Bad = Callable[[str, str], InvalidArgument]  # (field, message) -> the error naming the config's source too


def _check_dataset(cfg: PipelineConfig, bad: _Bad, base_dir: Path | None) -> None:
    """One of builtin / folder; a relative folder is made absolute against the config file's folder."""
    ds = cfg.dataset
    if not isinstance(ds, dict) or ("builtin" in ds) == ("folder" in ds):
        raise bad("dataset", 'give exactly one of {"builtin": "tones"|"pops"|"wind"} or {"folder": PATH}')
    extra = sorted(set(ds) - DATASET_KEYS)
    if extra:
        raise bad("dataset", f"unknown keys {extra}; known: {sorted(DATASET_KEYS)}")
    rate = ds.get("sample_rate")
    if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool) or not 1000 <= rate <= 384000):
        raise bad("dataset.sample_rate", f"Hz in 1000..384000 (a folder: omit or null keeps its rate), got {rate!r}")
    if "folder" in ds:
        _check_folder_policies(ds, bad)
        folder = Path(os.path.expanduser(ds["folder"]))
        if not folder.is_absolute() and base_dir is not None:
            folder = (base_dir / folder).resolve()
        ds["folder"] = str(folder)
        ds.setdefault("name", folder.name)
    elif FOLDER_ONLY & set(ds):
        raise bad("dataset", f"{sorted(FOLDER_ONLY & set(ds))} are import policies of a folder, not of a built-in set")


def _check_folder_policies(ds: dict, bad: _Bad) -> None:
    """The import policies of smf.datasets.import_dataset, checked here so a typo fails before any work."""
    from smf.datasets import MONO_POLICIES, ON_BAD_FILE

    if not isinstance(ds["folder"], str) or not ds["folder"]:
        raise bad("dataset.folder", f"the path of a folder of sounds, got {ds['folder']!r}")
    for key, allowed, default in (("mono", MONO_POLICIES, "error"), ("on_bad_file", ON_BAD_FILE, "error")):
        if ds.get(key, default) not in allowed:
            raise bad(f"dataset.{key}", f"one of {', '.join(allowed)}, got {ds.get(key)!r}")


def _load_gan(cfg: PipelineConfig, bad: _Bad, base_dir: Path | None) -> None:
    """gan: a path (relative to the config file) or the dict itself; the GAN service validates its contents."""
    if isinstance(cfg.gan, str):
        gpath = Path(os.path.expanduser(cfg.gan))
        if not gpath.is_absolute() and base_dir is not None:
            gpath = base_dir / gpath
        try:
            cfg.gan = json.loads(gpath.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise bad("gan", f"cannot read GAN config {gpath}: {exc}") from None
    if not isinstance(cfg.gan, dict) or not cfg.gan:
        raise bad("gan", "give the SMF GAN config (a path or a JSON object)")


CONTROL_KEYS = {"duration", "seed", "precision", "voices"}


def _check_control(cfg: PipelineConfig, bad: _Bad) -> None:
    """control: how the knob-following score renders its gestures (seconds per render 1..30, seed, precision, voices
    per gesture 1..MAX_VOICES of smf.rnn.evaluate)."""
    c = cfg.control
    if not isinstance(c, dict):
        raise bad("control", "a JSON object {duration, seed, precision, voices}")
    extra = sorted(set(c) - CONTROL_KEYS)
    if extra:
        raise bad("control", f"unknown keys {extra}; known: {sorted(CONTROL_KEYS)}")
    d = c.get("duration", 3.0)
    if not isinstance(d, int | float) or not 1.0 <= d <= 30.0:
        raise bad("control.duration", f"seconds per gesture render in 1..30, got {d!r}")
    if c.get("precision", "fp32") not in ("fp32", "bf16", "int8"):
        raise bad("control.precision", f"one of fp32, bf16, int8, got {c.get('precision')!r}")
    if not isinstance(c.get("seed", 0), int):
        raise bad("control.seed", f"an integer, got {c.get('seed')!r}")
    from smf.rnn.evaluate import DEFAULT_VOICES, MAX_VOICES

    v = c.get("voices", DEFAULT_VOICES)
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_VOICES:
        raise bad("control.voices", f"renders per gesture in 1..{MAX_VOICES}, got {v!r}")


CONTROL_FEATURES = ["rms", "centroid"]  # what the parameter tier makes from dim0, dim1 (smf.rnn.features)
CONTROL_TIER = {"cross": 1.0, "seq_len": 64, "rate": 125}  # its defaults: 125 Hz, windows chaining cells


KNOB_PROPS = ["dim0", "dim1"]  # the grid's knobs: what a single audio tier, or a parameter tier, is conditioned on


def controls_tier(controls: dict) -> dict:
    """A `controls` block -> the parameter tier's training fields: CONTROL_TIER, then the block's options, then
    generate = the features it makes. The pipeline and bench/control.py train it from this."""
    ctl = dict(controls)
    ctl.pop("knobs", None)  # not the parameter tier's: see `chain_props`
    features = list(ctl.pop("features", CONTROL_FEATURES))
    return {**CONTROL_TIER, **ctl, "generate": features}


def chain_props(controls: dict) -> list[str]:
    """The audio tier's params under a `controls` block: the features the parameter tier makes, then with
    `knobs: true` dim0, dim1 too, passed through beside them (smf.rnn.generate.chain_columns): the controls give
    the trajectory (loudness, brightness moving in time), the knobs say which timbre it belongs to."""
    features = controls_tier(controls)["generate"]
    return features + KNOB_PROPS if controls.get("knobs", False) else features


def _check_controls(cfg: PipelineConfig, bad: _Bad) -> None:
    """controls: the parameter tier's features (analysis names of smf.rnn.features) and training options; the
    RNN service validates the options themselves."""
    from smf.rnn.features import FEATURES

    c = cfg.controls
    if not isinstance(c, dict):
        raise bad("controls", "a JSON object {features: [...], hidden, steps, ...} or {} for one audio tier")
    feats = c.get("features", CONTROL_FEATURES)
    if not isinstance(feats, list) or not feats or any(f not in FEATURES for f in feats):
        raise bad("controls.features", f"a non-empty list of {sorted(FEATURES)}, got {feats!r}")
    for k in ("generate", "props"):
        if k in c:
            raise bad(f"controls.{k}", "is set by the pipeline (props dim0, dim1; generate = features)")
    if not isinstance(c.get("knobs", False), bool):
        raise bad(
            "controls.knobs", f"true (the audio tier hears dim0, dim1 beside the controls) or false, got {c['knobs']!r}"
        )


def _check_grid(cfg: PipelineConfig, bad: _Bad) -> None:
    """samples.count, the corners chosen among those samples, and the grid's size."""
    count = cfg.samples.get("count", 16)
    if not isinstance(count, int) or not 4 <= count <= 1024:
        raise bad("samples.count", f"must be an integer in 4..1024 (corners are chosen among them), got {count!r}")
    if cfg.corners != "auto":
        c = cfg.corners
        if not (isinstance(c, list) and len(c) == 4 and all(isinstance(i, int) and 0 <= i < count for i in c)):
            raise bad("corners", f'"auto" or four sample indices in 0..{count - 1}, got {c!r}')
    for dim in ("d0", "d1"):
        v = cfg.grid.get(dim)
        if not isinstance(v, int) or not 2 <= v <= 256:
            raise bad(f"grid.{dim}", f"must be an integer in 2..256, got {v!r}")


def _check_gestures(cfg: PipelineConfig, bad: _Bad) -> None:
    """Parsed now, so a bad gesture spec fails before hours of training, not after."""
    from smf.rnn.conditioning import parse_column

    if not isinstance(cfg.gestures, list) or not cfg.gestures:
        raise bad("gestures", "give at least one gesture: {name, columns: [dim0 spec, dim1 spec], duration}")
    names = set()
    for n, g in enumerate(cfg.gestures):
        where = f"gestures[{n}]"
        if not isinstance(g, dict) or set(g) - {"name", "columns", "duration", "seed"}:
            raise bad(where, "expected {name, columns, duration[, seed]}")
        if not GESTURE_NAME.fullmatch(str(g.get("name", ""))) or g["name"] in names:
            raise bad(f"{where}.name", f"{g.get('name')!r}: unique, [A-Za-z0-9._-]")
        names.add(g["name"])
        cols = g.get("columns")
        if not isinstance(cols, list) or len(cols) != 2:
            raise bad(f"{where}.columns", 'two column specs: dim0 then dim1 (e.g. "ramp:0,1", "const:0.5")')
        for spec in cols:
            try:
                parse_column(str(spec))
            except InvalidArgument as exc:
                raise bad(f"{where}.columns", exc.message) from None
        d = g.get("duration", 2.0)
        if not isinstance(d, (int, float)) or not 0.1 <= d <= 600:
            raise bad(f"{where}.duration", f"seconds in [0.1, 600], got {d!r}")
