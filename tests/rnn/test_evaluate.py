"""The control-following score can tell a synth that follows its knobs from one that does not (pure, no gRPC)."""

import numpy as np
import pytest
from smf.common.errors import InvalidArgument
from smf.rnn.evaluate import (
    default_gestures,
    evaluate,
    format_table,
    plot_report,
    reference_from_windows,
    spearman,
)
from smf.rnn.pitch import cents, estimate_f0, requested_hz

SR = 8000
W = 800  # one cell: 0.1 s


def cell_sound(d0: float, d1: float, n: int, phase: int = 0) -> np.ndarray:
    """A cell of a strongly contrasted 5x5 grid: dim0 sets the pitch (200..800 Hz), dim1 the brightness."""
    t = (np.arange(n) + phase) / SR
    f0 = 200.0 * 4.0**d0
    harmonics = sum((0.15 + 0.85 * d1) ** k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(6))
    return (0.3 * harmonics / 3).astype(np.float32)


@pytest.fixture(scope="module")
def reference():
    files = []
    for i in range(5):
        for j in range(5):
            d0, d1 = j / 4, i / 4
            files.append((cell_sound(d0, d1, W), np.tile([d0, d1], (W, 1))))
    return reference_from_windows(files, ["dim0", "dim1"], SR)


def follower(arr: np.ndarray, duration: float, seed: int) -> np.ndarray:
    """A lookup synth that follows: each 20 ms block plays the grid cell nearest the position asked for then."""
    from smf.rnn.conditioning import stretch

    cond = stretch(arr, duration, SR)
    out = np.zeros(cond.shape[:2], dtype=np.float32)
    block = 160
    for b in range(cond.shape[0]):
        for s in range(0, cond.shape[1], block):
            d0, d1 = np.round(cond[b, s] * 4) / 4
            out[b, s : s + block] = cell_sound(d0, d1, min(block, cond.shape[1] - s), phase=s)
    return out


def ignorer(arr: np.ndarray, duration: float, seed: int) -> np.ndarray:
    """The same synth with its conditioning zeroed: one sound whatever the knobs say."""
    return follower(np.zeros_like(arr), duration, seed)


def test_spearman_known_values():
    assert spearman(np.arange(10), np.arange(10) ** 3) == pytest.approx(1.0)
    assert spearman(np.arange(10), -np.arange(10)) == pytest.approx(-1.0)
    assert spearman(np.arange(5), np.ones(5)) == 0.0  # a heard position that never moves follows nothing
    # ties share their mean rank (scipy.stats.spearmanr([1, 2, 3, 4], [1, 1, 2, 2]) = 0.894...)
    assert spearman(np.array([1, 2, 3, 4]), np.array([1, 1, 2, 2])) == pytest.approx(0.8944, abs=1e-4)


def test_reference_windows_and_positions(reference):
    assert reference.audio.shape == (25, W)
    assert reference.positions.shape == (25, 2)
    # every cell decodes to itself
    for k in range(25):
        heard, idx, dist = reference.decode(reference.audio[k])
        assert idx.tolist() == [k] and dist[0] == pytest.approx(0.0, abs=1e-6)


def test_follower_scores_near_oracle_and_ignorer_at_chance(reference):
    good = evaluate(follower, reference, duration=2.0)
    bad = evaluate(ignorer, reference, duration=2.0)
    for row in good["summary"]["rows"]:
        assert row["oracle"] > 0.9, row
        assert row["model"] > row["chance_p95"] and row["model"] > 0.8, row
    for row in bad["summary"]["rows"]:
        assert row["model"] <= max(row["chance_p95"], 0.0) + 1e-9, row
    assert good["summary"]["constant_hit"] > 0.8
    assert bad["summary"]["constant_hit"] < 0.5
    table = format_table(good)
    assert "ramp-dim0" in table and "oracle" in table
    n = len(good["summary"]["rows"])
    assert f"the knobs follow: {n} of {n} moved params" in table  # the verdict says it in words
    assert f"the knobs do not follow yet: 0 of {n} moved params at >= 0.8 x the oracle, 0 above" in format_table(bad)
    assert plot_report(good)[:8] == b"\x89PNG\r\n\x1a\n"


def wobbly(arr: np.ndarray, duration: float, seed: int) -> np.ndarray:
    """The follower, but each voice (batch row) jumps to a random cell in a third of its 20 ms blocks, drawn from
    (seed, row): a sampled synth whose renders differ from voice to voice."""
    out = follower(arr, duration, seed)
    block = 160
    for b in range(out.shape[0]):
        rng = np.random.default_rng([seed, b])
        for s in range(0, out.shape[1], block):
            if rng.random() < 1 / 3:
                d0, d1 = rng.integers(0, 5, 2) / 4
                out[b, s : s + block] = cell_sound(d0, d1, min(block, out.shape[1] - s), phase=s)
    return out


def test_voices_report_the_mean_and_range_and_keep_voice_zero(reference):
    one = evaluate(wobbly, reference, duration=2.0, voices=1)
    three = evaluate(wobbly, reference, duration=2.0, voices=3)
    assert three["voices"] == 3 and three["summary"]["voices"] == 3
    for name, e in three["gestures"].items():
        assert len(e["heard_voices"]) == 3
        assert e["heard_voices"][0] == one["gestures"][name]["heard"] == e["heard"]  # voice 0 is the same render
    rows = three["summary"]["rows"]
    assert all(r["model_min"] <= r["model"] <= r["model_max"] for r in rows)
    assert any(r["model_min"] < r["model_max"] for r in rows)  # the voices differ, and the range shows it
    assert all(r["model"] > r["chance_p95"] for r in rows)
    # the mean over voices is what a row reads; its chance is the mean over shuffled voices (narrower than one's)
    r3 = {(r["gesture"], r["param"]): r for r in rows}
    g = three["gestures"]["ramp-dim0"]
    per_voice = [spearman(np.asarray(g["requested"])[:, 0], np.asarray(h)[:, 0]) for h in g["heard_voices"]]
    assert r3[("ramp-dim0", "dim0")]["model"] == pytest.approx(np.mean(per_voice))
    table = format_table(three)
    assert "range" in table and "mean over 3 voices" in table
    assert "range" not in format_table(one)
    for bad in (0, 17):
        with pytest.raises(InvalidArgument) as e:
            evaluate(wobbly, reference, duration=2.0, voices=bad)
        assert e.value.field == "voices"


def test_default_gestures_cover_each_param(reference):
    names = [g.name for g in default_gestures(["dim0", "dim1"], reference)]
    assert {"ramp-dim0", "ramp-dim1", "glide-dim0-dim1", "steps-dim0", "steps-dim1"} <= set(names)
    consts = [n for n in names if n.startswith("const-")]
    assert len(consts) == 5 and "const-0.50,0.50" in consts


def test_bad_inputs_name_the_field(reference):
    with pytest.raises(InvalidArgument) as e:
        evaluate(follower, reference, duration=0.1)
    assert e.value.field == "duration"
    with pytest.raises(InvalidArgument):
        reference_from_windows([], ["dim0"], SR)


def test_estimate_f0_on_known_tones():
    from smf.datasets import generate as make_clips
    from smf.datasets import tone_f0

    for clip in make_clips("tones", n_files=4, duration=0.5):
        v = clip.params.params["normPitch"].values[0]
        f0 = estimate_f0(np.asarray(clip.audio[2000:]), 16000)
        assert abs(cents(f0, tone_f0(v))) < 10, (v, f0, tone_f0(v))
        assert requested_hz(v, orig_minval=48, orig_maxval=72) == pytest.approx(tone_f0(v))
    assert np.isnan(estimate_f0(np.zeros(4000), 16000))


def test_tiny_trained_model_beats_chance_and_zeroed_does_not(tmp_path):
    """A tiny RNN trained briefly on a 3x3 grid whose dim0 sets the loudness strongly: its steps gesture on dim0
    is heard above chance; the same model with its conditioning zeroed at generation is not."""
    import torch
    from smf.common.params import ParamFile, constant_param
    from smf.common.store import open_store
    from smf.rnn.dataset import prepare_files
    from smf.rnn.evaluate import reference_from_dataset
    from smf.rnn.generate import Generator
    from smf.rnn.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    sr, n = 8000, 800
    rng = np.random.default_rng(0)
    entries = []
    for i in range(3):
        for j in range(3):
            d0, d1 = j / 2, i / 2
            k = int(1 + 30 * (1 - d1))  # dim1: a milder brightness change
            x = np.convolve(rng.standard_normal(n), np.ones(k) / np.sqrt(k), "same") * (0.03 + 0.4 * d0)
            pf = ParamFile(f"c{i}{j}.wav", {"dim0": constant_param(d0, n / sr), "dim1": constant_param(d1, n / sr)})
            entries.append((f"c{i}{j}", x.clip(-1, 1).astype(np.float32), sr, pf))
    cfg = TrainConfig.from_dict(
        {"data": "grid", "props": ["dim0", "dim1"], "hidden": 32, "layers": 1, "seq_len": 128, "batch": 16,
         "steps": 300, "lr": 3e-3, "cross": 0.5, "sample_rate": sr, "checkpoint_every": 10**6,
         "progress_every": 10**6}
    )  # fmt: skip
    data = prepare_files(entries, cfg.model_config(), cfg.seq_len, cross=cfg.cross)
    trainer = Trainer(cfg, open_store(f"file://{tmp_path}/store"), "rnn/tiny", data=data, log=lambda *a: None)
    trainer.run()
    reference = reference_from_dataset(data)
    gen = Generator(trainer.model.eval(), backend="torch")

    def row(zero: bool) -> dict:
        rep = evaluate(
            lambda a, d, s: gen.generate(np.zeros_like(a) if zero else a, d, seed=s), reference, duration=3.0
        )
        return next(r for r in rep["summary"]["rows"] if r["gesture"] == "steps-dim0")

    good, zeroed = row(False), row(True)
    assert good["model"] > good["chance_p95"], good
    assert zeroed["model"] <= zeroed["chance_p95"], zeroed
