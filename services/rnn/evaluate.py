"""Control-following: does the synth go where its knobs say? Render fixed gestures, hear where each window lands
among the sounds the model was trained on, and compare with the requested trajectory.

    ref = reference_from_dataset(load_dataset("grids/x", model.config, 1, store))   # the training sounds
    gen = Generator(model)
    report = evaluate(lambda arr, dur, seed: gen.generate(arr, dur, seed=seed), ref)
    print(format_table(report))              # per gesture and moved param: model, oracle and chance Spearman

How a position is heard: the render is cut into windows of one training file's length (a grid cell); each window's
features are the mean and the standard deviation over time of its log-mel spectrum (32 bands, dB), z-scored per
feature over the reference windows so that no band dominates; the nearest reference window (Euclidean) is the
sound heard, and its param values (their mean over the window) are the heard position. Mean log-mel says which
timbre and pitch region a window is in; the std over time separates steady from moving sounds (a tone from a
pop train at the same spectral balance). No learned embedding: the score must mean the same thing for every
model and dataset, and be cheap on a CPU.

Two references are scored the same way, so a number is read against what is reachable and what is luck:
- oracle: the training windows themselves concatenated along the path (for each window, the training window whose
  position is nearest the requested one) — what a perfect lookup synth over the training data would score.
- chance: the model's heard windows shuffled in time (mean and 95th percentile over 200 shuffles).
Constant gestures (knobs held on a training position) report how often the render is heard at that very
position (`hit`) and its feature distance to it, next to the median distance between neighbouring positions.

A sampled synth is a random variable, and one render of a 3 s gesture decides a row's Spearman to within about
+-0.1 (measured on the demo: one row read 0.73 to 0.93 of the oracle across three seeds). `voices` renders every
gesture that many times (distinct sampling streams, one batched call) and reports the mean with its range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from smf.common.errors import InvalidArgument
from smf.rnn.conditioning import POINTS, stretch
from smf.rnn.pitch import PITCH_PARAM, pitch_range

__all__ = [
    "Gesture",
    "Reference",
    "default_gestures",
    "evaluate",
    "format_summary",
    "format_table",
    "plot_report",
    "reference_from_dataset",
    "reference_from_windows",
    "spearman",
]

BANDS = 32
MIN_WINDOW_S, MAX_WINDOW_S = 0.05, 0.5
MAX_REFERENCE = 4096  # reference windows kept (evenly spaced) so decoding stays cheap on a big dataset
SHUFFLES = 200
STEP_LEVELS = (0.0, 1.0, 0.25, 0.75, 0.5)  # not monotonic: a steps gesture is not a ramp in disguise

Render = Callable[[np.ndarray, float, int], np.ndarray]  # (conditioning [B, N, C], duration s, seed) -> [B, T]


# --- features and ranks --------------------------------------------------------------------------------------------


def window_features(windows: np.ndarray, sample_rate: int) -> np.ndarray:
    """[N, W] audio windows -> [N, 2 * BANDS]: mean and std over time of the log-mel spectrum (dB, floor -80)."""
    import torchaudio

    x = torch.as_tensor(np.asarray(windows, dtype=np.float32))
    n_fft = 512 if sample_rate >= 16000 else 256
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=BANDS, f_min=30.0, power=2.0, center=True
    )
    with torch.no_grad():
        db = 10.0 * torch.log10(mel(x) + 1e-8).clamp(min=-8.0)  # [N, BANDS, frames]
    return torch.cat([db.mean(-1), db.std(-1, unbiased=False)], dim=1).numpy().astype(np.float64)


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    # ties share their mean rank
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with tied ranks averaged; 0.0 when either side is constant (a heard position that
    never moves follows nothing)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / math.sqrt((ra * ra).sum() * (rb * rb).sum()))


# --- the reference: the training sounds as windows with positions ---------------------------------------------------


@dataclass
class Reference:
    """Training windows: audio [K, W], their positions [K, C] (param means), z-scored features [K, D]."""

    param_names: list[str]
    sample_rate: int
    audio: np.ndarray
    positions: np.ndarray
    mean: np.ndarray = field(init=False, repr=False)  # feature z-scoring, from the reference windows
    std: np.ndarray = field(init=False, repr=False)
    features: np.ndarray = field(init=False, repr=False)  # [K, D] z-scored

    def __post_init__(self) -> None:
        raw = window_features(self.audio, self.sample_rate)
        self.mean = raw.mean(0)
        self.std = raw.std(0) + 1e-3 * (raw.std(0).max() + 1e-9)
        self.features = (raw - self.mean) / self.std

    @property
    def window(self) -> int:
        return self.audio.shape[1]

    def featurize(self, audio: np.ndarray) -> np.ndarray:
        """Audio [T] -> z-scored features of its whole windows [n, D] (a partial last window is dropped)."""
        n = len(audio) // self.window
        if n < 1:
            raise InvalidArgument("duration", f"a render shorter than one window ({self.window} samples) says nothing")
        return (window_features(audio[: n * self.window].reshape(n, self.window), self.sample_rate) - self.mean) / (
            self.std
        )

    def decode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Audio [T] -> (heard positions [n, C], index of the nearest reference window [n], its distance [n])."""
        return self.decode_features(self.featurize(audio))

    def decode_features(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`decode` for windows already featurized ([n, D], see `featurize`)."""
        d = distances(f, self.features)  # [n, K]
        idx = d.argmin(1)
        return self.positions[idx], idx, d[np.arange(len(idx)), idx]

    def nearest_position(self, position: np.ndarray) -> int:
        """The reference window whose position is nearest `position` [C] (first of equals)."""
        return int(((self.positions - position[None]) ** 2).sum(1).argmin())

    def neighbour_scale(self) -> float:
        """Median feature distance from each distinct position's window to the nearest window elsewhere."""
        d = distances(self.features, self.features)
        same = np.all(np.isclose(self.positions[:, None], self.positions[None]), axis=-1)
        d[same] = np.inf
        best = d.min(1)
        return float(np.median(best[np.isfinite(best)])) if np.isfinite(best).any() else float("nan")


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [n, m] between feature rows a [n, D] and b [m, D], without an [n, m, D] intermediate (the
    reference may hold 4096 windows)."""
    return torch.cdist(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def reference_from_windows(
    files: Sequence[tuple[np.ndarray, np.ndarray]], param_names: Sequence[str], sample_rate: int
) -> Reference:
    """(audio [n], conditioning [n, C] at the audio rate) per training file -> Reference. The window is the shortest
    file's length, clamped to [0.05, 0.5] s; longer files give several non-overlapping windows."""
    if not files:
        raise InvalidArgument("grid", "no training files to compare renders with")
    shortest = min(len(a) for a, _ in files)
    w = int(np.clip(shortest, MIN_WINDOW_S * sample_rate, MAX_WINDOW_S * sample_rate))
    audio, pos = [], []
    for a, c in files:
        for k in range(len(a) // w):
            audio.append(np.asarray(a[k * w : (k + 1) * w], dtype=np.float32))
            pos.append(np.asarray(c[k * w : (k + 1) * w], dtype=np.float64).mean(0))
    if not audio:
        raise InvalidArgument("grid", f"every training file is shorter than {MIN_WINDOW_S} s")
    if len(audio) > MAX_REFERENCE:
        keep = np.linspace(0, len(audio) - 1, MAX_REFERENCE).round().astype(int)
        audio, pos = [audio[i] for i in keep], [pos[i] for i in keep]
    return Reference(list(param_names), sample_rate, np.stack(audio), np.stack(pos))


def reference_from_dataset(data) -> Reference:
    """A loaded training set (smf.rnn.dataset.WindowDataset of an audio tier) -> Reference."""
    cfg = data.config
    if not cfg.is_audio:
        raise InvalidArgument("model", "control-following is measured on an audio tier")
    files = [(data.audio(i), f.cond.numpy()) for i, f in enumerate(data.files)]
    return reference_from_windows(files, cfg.param_names, cfg.sample_rate)


# --- gestures -------------------------------------------------------------------------------------------------------


@dataclass
class Gesture:
    """A conditioning array [POINTS, C] with the params it moves (`moved`, column indices) or, for a constant, the
    training position it sits on (`target`)."""

    name: str
    columns: np.ndarray
    moved: list[int] = field(default_factory=list)
    target: np.ndarray | None = None


def _held(C: int, n: int = POINTS) -> np.ndarray:
    return np.full((n, C), 0.5, dtype=np.float32)


def default_gestures(param_names: Sequence[str], reference: Reference | None = None) -> list[Gesture]:
    """A ramp and a steps gesture on each param (the others held at 0.5), a 2-D glide on the first two params (one
    up, one down), and constants on up to five training positions (the corners and centre of the first two params)."""
    C = len(param_names)
    out = []
    ramp = np.linspace(0.0, 1.0, POINTS, dtype=np.float32)
    stairs = np.repeat(np.asarray(STEP_LEVELS, dtype=np.float32), -(-POINTS // len(STEP_LEVELS)))[:POINTS]
    for p, name in enumerate(param_names):
        g = _held(C)
        g[:, p] = ramp
        out.append(Gesture(f"ramp-{name}", g, [p]))
    if C >= 2:
        g = _held(C)
        g[:, 0], g[:, 1] = ramp, ramp[::-1]
        out.append(Gesture(f"glide-{param_names[0]}-{param_names[1]}", g, [0, 1]))
    for p, name in enumerate(param_names):
        g = _held(C)
        g[:, p] = stairs
        out.append(Gesture(f"steps-{name}", g, [p]))
    if reference is not None:
        wanted = [(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.5, 0.5)] if C >= 2 else [(v,) for v in STEP_LEVELS]
        seen: set[tuple] = set()
        for w in wanted:
            q = np.full(C, 0.5)
            q[: len(w)] = w
            target = reference.positions[reference.nearest_position(q)]
            key = tuple(np.round(target, 6))
            if key in seen:
                continue
            seen.add(key)
            g = np.repeat(target[None].astype(np.float32), POINTS, axis=0)
            label = ",".join(f"{v:.2f}" for v in target)
            out.append(Gesture(f"const-{label}", g, [], target))
    return out


# --- scoring --------------------------------------------------------------------------------------------------------


def requested_windows(columns: np.ndarray, duration: float, sample_rate: int, window: int) -> np.ndarray:
    """The requested position per whole window of the render: [n, C] means of the stretched conditioning."""
    full = stretch(columns[None], duration, sample_rate)[0]
    n = len(full) // window
    return full[: n * window].reshape(n, window, -1).mean(1)


def oracle_audio(reference: Reference, requested: np.ndarray) -> np.ndarray:
    """The training windows nearest (in position) each requested window, concatenated: [n * W]."""
    return np.concatenate([reference.audio[reference.nearest_position(q)] for q in requested])


def _follow(requested: np.ndarray, heard: list[np.ndarray], moved: list[int]) -> dict:
    """Per moved param: Spearman and mean |error| of each voice's heard trajectory, their mean and range."""
    out = {}
    for p in moved:
        rs = [spearman(requested[:, p], h[:, p]) for h in heard]
        out[str(p)] = {
            "spearman": float(np.mean(rs)),
            "mae": float(np.mean([np.abs(requested[:, p] - h[:, p]).mean() for h in heard])),
            "spearman_min": float(min(rs)),
            "spearman_max": float(max(rs)),
        }
    return out


def _chance(requested: np.ndarray, heard: list[np.ndarray], moved: list[int], rng: np.random.Generator) -> dict:
    """The same statistic as `_follow` (the mean over voices) with every voice's windows shuffled in time."""
    out = {}
    for p in moved:
        rs = [
            np.mean([spearman(requested[:, p], h[rng.permutation(len(h)), p]) for h in heard]) for _ in range(SHUFFLES)
        ]
        out[str(p)] = {"spearman": float(np.mean(rs)), "spearman_p95": float(np.percentile(rs, 95))}
    return out


def _constant(reference: Reference, g: Gesture, idx: np.ndarray, dist: np.ndarray, f: np.ndarray) -> dict:
    """Knobs held on g.target: idx, dist, f are every voice's windows stacked."""
    assert g.target is not None
    hits = np.all(np.isclose(reference.positions[idx], g.target[None], atol=1e-6), axis=1)
    targets = np.all(np.isclose(reference.positions, g.target[None], atol=1e-6), axis=1)
    to_target = distances(f, reference.features[targets]).min(1)
    distinct = len(np.unique(np.round(reference.positions, 6), axis=0))
    return {
        "target": [float(v) for v in g.target],
        "hit": float(hits.mean()),
        "hit_chance": 1.0 / max(distinct, 1),
        "distance": float(to_target.mean()),
        "nearest_distance": float(dist.mean()),
    }


MAX_VOICES = 16
DEFAULT_VOICES = 4  # evaluate_run, the CLI and the pipeline: a row's figure read to about +-0.05 instead of +-0.1


def evaluate(
    render: Render,
    reference: Reference,
    gestures: Sequence[Gesture] | None = None,
    *,
    duration: float = 3.0,
    seed: int = 0,
    voices: int = 1,
) -> dict:
    """Render every gesture `voices` times (one batched call; voice v of every gesture is batch block v, so voice 0
    is the same render whatever `voices` is) and score it; see the module docstring. A sampled synth is a random
    variable: with several voices a row's figure is the mean Spearman over them, with its range beside it, and
    chance is the same mean over shuffled voices.

    Returns {"window_s", "duration", "voices", "gestures": {name: {...}}, "summary": {...}} with, per moving gesture
    and param, model / oracle / chance Spearman and mean |error|, and the requested and heard trajectories (voice 0's
    as `heard`, every voice's as `heard_voices`) for plotting."""
    gestures = list(gestures) if gestures is not None else default_gestures(reference.param_names, reference)
    C = len(reference.param_names)
    for g in gestures:
        if g.columns.ndim != 2 or g.columns.shape[1] != C:
            raise InvalidArgument("gestures", f"{g.name}: needs [N, {C}] columns ({reference.param_names})")
    if duration * reference.sample_rate < 3 * reference.window:
        raise InvalidArgument("duration", f"must cover at least 3 windows ({3 * reference.window} samples)")
    voices = int(voices)
    if not 1 <= voices <= MAX_VOICES:
        raise InvalidArgument("voices", f"must be 1..{MAX_VOICES}, got {voices}")
    n_points = max(len(g.columns) for g in gestures)
    batch = np.stack([stretch(g.columns[None], n_points / POINTS, POINTS)[0][:n_points] for g in gestures])
    batch = np.concatenate([batch] * voices)
    audio = np.asarray(render(batch.astype(np.float32), float(duration), int(seed)))
    rng = np.random.default_rng(seed)
    out: dict = {
        "window_s": reference.window / reference.sample_rate,
        "duration": float(duration),
        "voices": voices,
        "param_names": list(reference.param_names),
        "gestures": {},
    }
    G = len(gestures)
    for k, g in enumerate(gestures):
        req = requested_windows(g.columns, duration, reference.sample_rate, reference.window)
        fs = [reference.featurize(audio[v * G + k]) for v in range(voices)]
        decoded = [reference.decode_features(f) for f in fs]
        heard = [h for h, _, _ in decoded]
        req = req[: len(heard[0])]
        o_heard, _, _ = reference.decode(oracle_audio(reference, req))
        entry: dict = {
            "moved": [reference.param_names[p] for p in g.moved],
            "requested": req.tolist(),
            "heard": heard[0].tolist(),
            "heard_voices": [h.tolist() for h in heard],
            "oracle_heard": o_heard.tolist(),
            "rms": float(np.sqrt(np.mean(np.square(audio[k::G])))),
        }
        if g.moved:
            entry["model"] = _follow(req, heard, g.moved)
            entry["oracle"] = _follow(req, [o_heard], g.moved)
            entry["chance"] = _chance(req, heard, g.moved, rng)
        if g.target is not None:
            idx = np.concatenate([i for _, i, _ in decoded])
            dist = np.concatenate([d for _, _, d in decoded])
            entry["constant"] = _constant(reference, g, idx, dist, np.concatenate(fs))
        out["gestures"][g.name] = entry
    out["summary"] = summarize(out, reference.param_names)
    out["neighbour_distance"] = reference.neighbour_scale()
    return out


def summarize(report: dict, param_names: Sequence[str]) -> dict:
    """One row per (gesture, moved param) plus the worst model/oracle ratio and the constants' mean hit rate."""
    rows, ratios = [], []
    for name, e in report["gestures"].items():
        for p in e.get("model", {}):
            m, o, c = e["model"][p], e["oracle"][p], e["chance"][p]
            ratio = m["spearman"] / o["spearman"] if o["spearman"] > 0 else float("nan")
            rows.append(
                {
                    "gesture": name,
                    "param": param_names[int(p)],
                    "model": m["spearman"],
                    "model_min": m.get("spearman_min", m["spearman"]),
                    "model_max": m.get("spearman_max", m["spearman"]),
                    "oracle": o["spearman"],
                    "chance": c["spearman"],
                    "chance_p95": c["spearman_p95"],
                    "ratio": ratio,
                    "model_mae": m["mae"],
                    "oracle_mae": o["mae"],
                }
            )
            if math.isfinite(ratio):
                ratios.append(ratio)
    consts = [e["constant"] for e in report["gestures"].values() if "constant" in e]
    return {
        "rows": rows,
        "voices": int(report.get("voices", 1)),
        "min_ratio": min(ratios) if ratios else float("nan"),
        "mean_ratio": float(np.mean(ratios)) if ratios else float("nan"),
        "constant_hit": float(np.mean([c["hit"] for c in consts])) if consts else float("nan"),
        "constant_hit_chance": float(np.mean([c["hit_chance"] for c in consts])) if consts else float("nan"),
    }


def format_table(report: dict) -> str:
    """The control-following table: one line per gesture and moved param."""
    head = (
        f"control-following (window {report['window_s'] * 1000:.0f} ms, {report['duration']:.1f} s renders; "
        "Spearman of requested vs heard position)"
    )
    return head + "\n" + format_summary(report["summary"])


FOLLOWS = 0.8  # model/oracle Spearman from which a moved param counts as following (the knobs issue's target)


def format_summary(s: dict) -> str:
    """The rows of a summary (see `summarize`) as a text table."""
    many = s.get("voices", 1) > 1
    rng_head = f" {'range':>11}" if many else ""
    lines = [
        f"{'gesture':<28} {'param':<10} {'model':>7}{rng_head} {'oracle':>7} {'chance':>7} {'p95':>6} {'ratio':>6} "
        f"{'|err|':>6} {'oracle|err|':>11}",
    ]
    for r in s["rows"]:
        span = f" {r['model_min']:5.2f}-{r['model_max']:<5.2f}" if many else ""
        lines.append(
            f"{r['gesture']:<28} {r['param']:<10} {r['model']:7.2f}{span} {r['oracle']:7.2f} {r['chance']:7.2f} "
            f"{r['chance_p95']:6.2f} {r['ratio']:6.2f} {r['model_mae']:6.2f} {r['oracle_mae']:11.2f}"
        )
    over = f" (model: the mean over {s['voices']} voices, range beside it)" if many else ""
    lines.append(f"worst model/oracle ratio {s['min_ratio']:.2f}, mean {s['mean_ratio']:.2f}{over}")
    beats = [r for r in s["rows"] if r["model"] > r["chance_p95"]]
    following = [r for r in s["rows"] if r["ratio"] >= FOLLOWS]
    verdict = (
        "the knobs follow"
        if s["rows"] and len(following) == len(s["rows"])
        else "the knobs do not follow yet"
        if not beats
        else "the knobs follow in part"
    )
    lines.append(
        f"{verdict}: {len(following)} of {len(s['rows'])} moved params at >= {FOLLOWS:g} x the oracle, "
        f"{len(beats)} above chance (p95)"
    )
    if math.isfinite(s["constant_hit"]):
        lines.append(
            f"constant knobs on a training position: heard there {s['constant_hit'] * 100:.0f}% of windows "
            f"(chance {s['constant_hit_chance'] * 100:.0f}%)"
        )
    return "\n".join(lines)


def plot_report(report: dict) -> bytes:
    """PNG: requested vs heard (model, oracle) per moving gesture and param."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(n, e, int(col)) for n, e in report["gestures"].items() for col in e.get("model", {})]
    cols = min(3, max(len(panels), 1))
    rows = -(-max(len(panels), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    w = report["window_s"]
    names = report.get("param_names") or []
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (name, e, col) in zip(axes.flat, panels, strict=False):
        param = names[col] if col < len(names) else str(col)
        t = (np.arange(len(e["requested"])) + 0.5) * w
        ax.plot(t, np.asarray(e["requested"])[:, col], "k-", lw=2, label="requested")
        ax.plot(t, np.asarray(e["oracle_heard"])[:, col], "g.--", alpha=0.7, label="oracle heard")
        for v, h in enumerate(e.get("heard_voices", [])[1:]):
            ax.plot(t, np.asarray(h)[:, col], "r-", alpha=0.25, lw=0.8, label="other voices" if v == 0 else None)
        ax.plot(t, np.asarray(e["heard"])[:, col], "r.-", label="model heard (voice 0)")
        rho = e["model"][str(col)]["spearman"]
        ax.set_title(f"{name}: {param} (mean ρ {rho:.2f})", fontsize=9)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("s")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


# --- pitch ----------------------------------------------------------------------------------------------------------

PITCH_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)


def pitch_errors(
    render: Render, param_names: Sequence[str], sample_rate: int, midi_range: tuple[float, float], *, seed: int = 0
) -> dict:
    """Constant renders at five normPitch values (other params at 0.5): f0 of the second half against the MIDI pitch
    the value names -> rows and the median / max |cents|."""
    from smf.rnn.pitch import cents, estimate_f0, requested_hz

    p = list(param_names).index(PITCH_PARAM)
    arr = np.full((len(PITCH_VALUES), POINTS, len(param_names)), 0.5, dtype=np.float32)
    for k, v in enumerate(PITCH_VALUES):
        arr[k, :, p] = v
    duration = 1.5
    audio = np.asarray(render(arr, duration, seed))
    rows = []
    for v, a in zip(PITCH_VALUES, audio, strict=True):
        target = requested_hz(v, orig_minval=midi_range[0], orig_maxval=midi_range[1])
        f0 = estimate_f0(a[len(a) // 2 :], sample_rate)
        rows.append({"value": v, "target_hz": target, "measured_hz": f0, "cents": cents(f0, target)})
    errs = np.abs([r["cents"] for r in rows])
    errs = np.where(np.isfinite(errs), errs, 1200.0)  # no pitch found counts as an octave off
    return {"rows": rows, "median_cents": float(np.median(errs)), "max_cents": float(errs.max())}


# --- the whole evaluation of a stored run (I/O at the edge) ---------------------------------------------------------


def evaluate_run(
    store,
    model: str,
    *,
    chain: str | None = None,
    data: str | None = None,
    step: int = 0,
    duration: float = 3.0,
    seed: int = 0,
    precision: str = "fp32",
    zero_conditioning: bool = False,
    voices: int = DEFAULT_VOICES,
) -> dict:
    """Score a stored RNN run against the data it was trained on (or `data`: a grid / dataset it should follow).

    `chain`: a parameter tier that turns the knobs into the audio tier's controls (smf.rnn.generate.generate_chain);
    the knobs are then its params. `zero_conditioning` renders with every knob at 0 whatever the gesture asks: the
    "does it listen at all" check."""
    from dataclasses import replace

    from smf.rnn.dataset import load_dataset
    from smf.rnn.generate import Generator, generate_chain
    from smf.rnn.runs import ModelCache, read_json, resolve_run

    store, run_id = resolve_run(store, model)
    cache = ModelCache(store, precision=precision)
    loaded = cache.load(run_id, step)
    if not loaded.config.is_audio:
        raise InvalidArgument("model", f"{run_id} is a parameter tier; control-following is measured on audio tiers")
    tier = cache.load(resolve_run(store, chain)[1]).model if chain else None
    knobs = list(tier.config.param_names) if tier is not None else list(loaded.config.param_names)
    data = data or read_json(store, f"{run_id}/config.json").get("data")
    if not data:
        raise InvalidArgument("grid", f"{run_id} does not record its training data; name it with --grid")
    # the training sounds with the knobs' values (for a chain: the parameter tier's params, not the controls)
    # (without the oscillator's phase analysis: the reference needs the sounds and their params only)
    dataset = load_dataset(data, replace(loaded.config, param_names=knobs, oscillator=0), 1, store)
    reference = reference_from_dataset(dataset)
    gen = Generator(loaded.model, precision=precision)

    def render(arr: np.ndarray, dur: float, sd: int) -> np.ndarray:
        arr = np.zeros_like(arr) if zero_conditioning else arr
        if tier is not None:
            return generate_chain(tier, gen, arr, dur, seed=sd)[0]
        return gen.generate(arr, dur, seed=sd)

    report = evaluate(render, reference, duration=duration, seed=seed, voices=voices)
    report.update({"model": run_id, "chain": chain, "step": loaded.step, "data": data, "precision": precision})
    if PITCH_PARAM in knobs:
        midi = pitch_range(dataset.ranges)
        if midi is not None:
            report["pitch"] = pitch_errors(render, knobs, loaded.config.sample_rate, midi, seed=seed)
    return report
