"""Control-following: does the synth `make demo` builds follow its knobs, and how do the RNN recipes compare?

    .venv/bin/python bench/control.py                  # the demo from an empty store (~10 min on 2 cores) + recipes
    .venv/bin/python bench/control.py --quick          # a short demo-like run (minutes), same tables
    .venv/bin/python bench/control.py --pitch          # also: an audio tier on `tones` with normPitch, pitch error
    .venv/bin/python bench/control.py --json out.json  # everything measured, as JSON

Prints, side by side in one run, on the demo's linearized grid (smf.rnn.evaluate: render gestures, hear each window
as the nearest grid cell by log-mel mean + spread, Spearman of requested vs heard position):
1. the demo as `make demo` runs it (empty store, wall time): its control table and whether every moved param
   reaches 0.8 x the oracle's Spearman (the target); then the score's ear on that grid (bench/decoder.py: GAN
   sounds between the cells, decoded by each feature set);
2. recipes trained on that same grid with the same budget (steps, size): `reference` (one audio tier conditioned on
   dim0, dim1 — the MTCRNN recipe the original SMF trained), `reference+cross` (the same with windows that cross
   cell boundaries), `tiered` (a parameter tier making rms, centroid from dim0, dim1; an audio tier rendering them),
   `preemph` (one pre-emphasised audio tier on dim0, dim1), `tiered+knobs` (the demo's default: the parameter
   tier, and a pre-emphasised audio tier hearing its controls and the knobs), each also with its conditioning
   zeroed at generation (a model that ignores its knobs);
3. with --pitch: median and worst pitch error (cents) of an audio tier trained on `tones` (or the soundfont notes)
   with normPitch, plain and with a pitch oscillator (smf.rnn.oscillator) side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SMF = os.path.join(os.path.dirname(HERE), ".venv", "bin", "smf")


def run_demo(store_uri: str, config: str | None) -> tuple[float, dict]:
    cmd = [SMF if os.path.exists(SMF) else "smf", "pipeline", "run", "--store", store_uri]
    cmd += [config] if config else ["--demo"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"demo failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    from smf.common.store import open_store
    from smf.pipeline.pipeline import read_state

    name = json.load(open(config))["name"] if config else "demo"
    return wall, read_state(open_store(store_uri), name)


def target_rows(summary: dict, factor: float = 0.8) -> list[tuple[str, str, float, float, bool]]:
    return [
        (r["gesture"], r["param"], r["model"], r["oracle"], r["model"] >= factor * r["oracle"]) for r in summary["rows"]
    ]


# The recipes compared on the demo grid, each at the demo's steps, size, window and learning rate:
#   reference        the MTCRNN recipe the original SMF trains: one audio tier on dim0, dim1, teacher forcing 0.9
#   reference+cross  the same with half the windows crossing cell boundaries
#   tiered           two tiers: a parameter tier makes rms, centroid from dim0, dim1; an audio tier renders them
#                    (the demo's default until the GAN's spectrogram cap made the grid tonal)
#   preemph          one audio tier on dim0, dim1 with the demo's rnn block (pre-emphasised, teacher forcing 1, b32)
#   tiered+knobs     the demo's own recipe: its controls block (a parameter tier making rms, centroid) and an audio
#                    tier with the demo's rnn block hearing those controls and dim0, dim1 beside them
FAITHFUL = {"tfr": 0.9, "batch": 16, "preemphasis": 0.0, "cross": 0.0}
RECIPES = ("reference", "reference+cross", "tiered", "preemph", "tiered+knobs")


def train_recipe(store, grid: str, name: str, recipe: str, rnn: dict, controls: dict) -> tuple[str, str | None, float]:
    from smf.rnn.train import TrainConfig, train

    budget = {k: rnn[k] for k in ("hidden", "layers", "seq_len", "steps", "lr", "seed") if k in rnn}
    budget.update(data=grid, progress_every=10**6, checkpoint_every=10**6)
    t0 = time.monotonic()
    quiet = lambda *a: None  # noqa: E731
    if recipe in ("tiered", "tiered+knobs"):
        from smf.pipeline.config import CONTROL_FEATURES, chain_props, controls_tier

        controls = controls or {"features": CONTROL_FEATURES}
        if recipe == "tiered":  # the controls alone, rendered by the faithful audio tier
            controls = {**controls, "knobs": False}
        tier = controls_tier(controls)  # as the pipeline trains it
        tier.update(data=grid, props=["dim0", "dim1"], progress_every=10**6, checkpoint_every=10**6)
        train(TrainConfig.from_dict(tier), store, f"rnn/{name}-controls", log=quiet)
        fields = {**budget, **FAITHFUL, "cross": 0.5} if recipe == "tiered" else {**rnn, **budget}
        train(TrainConfig.from_dict({**fields, "props": chain_props(controls)}), store, f"rnn/{name}", log=quiet)
        return f"rnn/{name}", f"rnn/{name}-controls", time.monotonic() - t0
    if recipe == "preemph":
        fields = {**rnn, **budget}
    else:
        fields = {**budget, **FAITHFUL, "cross": 0.5 if recipe == "reference+cross" else 0.0}
    train(TrainConfig.from_dict({**fields, "props": ["dim0", "dim1"]}), store, f"rnn/{name}", log=quiet)
    return f"rnn/{name}", None, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a shorter demo-like run")
    ap.add_argument("--pitch", action="store_true", help="also train on tones with normPitch and report cents")
    ap.add_argument("--pitch-steps", type=int, default=3000)
    ap.add_argument("--no-recipes", action="store_true")
    ap.add_argument("--no-demo", action="store_true", help="skip the demo and the recipes (with --pitch: only pitch)")
    ap.add_argument("--pitch-hidden", type=int, default=96)
    ap.add_argument(
        "--pitch-oscillator",
        type=int,
        nargs="*",
        default=[2],
        help="pitch-oscillator harmonics to train beside the plain tier (smf.rnn.oscillator; none: plain only)",
    )
    ap.add_argument(
        "--pitch-data",
        choices=("tones", "soundfont"),
        default="tones",
        help="tones (synthetic) or soundfont (GM notes of 4 instruments from the Debian TimGM6mb font, rendered by "
        "fluidsynth; trained on normPitch + instID, pitch error measured per instrument)",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    out: dict = {"machine": f"{os.cpu_count()} CPU, load {os.getloadavg()[0]:.1f}", "at": time.strftime("%F %T")}
    tmp = tempfile.mkdtemp(prefix="smf-control-")
    store_uri = f"file://{tmp}/store"
    config = None
    if args.quick:
        from smf.pipeline.config import DEMO_CONFIG

        cfg = json.loads(DEMO_CONFIG.read_text())
        cfg["gan"] = str(DEMO_CONFIG.parent / cfg["gan"])
        cfg["rnn"]["steps"] = 300
        if cfg.get("controls"):  # a two-tier config: its parameter tier too
            cfg["controls"]["steps"] = 300
        cfg["name"] = "quick"
        config = os.path.join(tmp, "quick.json")
        json.dump(cfg, open(config, "w"))
    if args.no_demo:
        args.no_recipes = True
    else:
        demo_and_recipes(args, store_uri, config, out)
    if args.pitch:
        pitch(args, store_uri, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    print(f"\nstore kept at {tmp}/store")
    return 0


def demo_and_recipes(args, store_uri: str, config: str | None, out: dict) -> None:
    from smf.common.store import open_store
    from smf.rnn.evaluate import evaluate_run, format_summary

    wall, state = run_demo(store_uri, config)
    st = {k: v.get("outputs", {}) for k, v in state["stages"].items()}
    summary = st["control"]["summary"]
    print(f"== 1. the demo from an empty store: {wall:.0f} s wall ({out['machine']})")
    print(st["control"]["table"])
    rows = target_rows(summary)
    print(f"target (every moved param >= 0.8 x oracle): {sum(r[4] for r in rows)}/{len(rows)} rows reach it")
    out["demo"] = {
        "wall_s": wall,
        "summary": summary,
        "stage_seconds": {k: v.get("seconds") for k, v in state["stages"].items()},
    }
    # the score's ear on this grid: GAN sounds between the cells, decoded (bench/decoder.py)
    sys.path.insert(0, HERE)
    from decoder import decoder_check, format_check, load_grid

    out["decoder"] = decoder_check(load_grid(open_store(store_uri), st["rnn"]["data"]))
    print("\n== 1b. the score's ear: " + format_check(out["decoder"]))

    if not args.no_recipes:
        store = open_store(store_uri)
        grid = st["rnn"]["data"]
        cfg = state["config"]
        print(
            f"\n== 2. recipes on the demo grid {grid}, budget {cfg['rnn'].get('steps')} steps, "
            f"H{cfg['rnn'].get('hidden')}"
        )
        print(
            f"{'recipe':<18} {'train s':>8} {'worst ratio':>11} {'mean ratio':>10} {'const hit':>9}   "
            f"{'zeroed: mean ratio':>18}"
        )
        out["recipes"] = {}
        for recipe in RECIPES:
            model, chain, secs = train_recipe(
                store, grid, f"bench-{recipe.replace('+', '-')}", recipe, cfg["rnn"], cfg.get("controls") or {}
            )
            rep = evaluate_run(store, model, chain=chain, data=grid)
            zero = evaluate_run(store, model, chain=chain, data=grid, zero_conditioning=True)
            s, z = rep["summary"], zero["summary"]
            print(
                f"{recipe:<18} {secs:8.0f} {s['min_ratio']:11.2f} {s['mean_ratio']:10.2f} "
                f"{s['constant_hit'] * 100:8.0f}%   {z['mean_ratio']:18.2f}"
            )
            out["recipes"][recipe] = {"train_s": secs, "summary": s, "zeroed": z}
        for recipe, r in out["recipes"].items():
            print(f"\n{recipe}:")
            print(format_summary(r["summary"]))


def pitch(args, store_uri: str, out: dict) -> None:
    """Section 3: the same audio tier trained on the notes with and without a pitch oscillator, side by side."""
    from smf.common.store import open_store
    from smf.datasets import make_dataset

    store = open_store(store_uri)
    real = args.pitch_data == "soundfont"
    if real:
        make_dataset("soundfont", store, duration=1.0)  # 4 GM programs x 13 pitches (C3..C5), 52 notes
    else:
        make_dataset("tones", store, n_files=50, duration=1.0)
    variants = [("plain", 0)] + [(f"oscillator {k}", k) for k in args.pitch_oscillator if k]
    out["pitch"] = {"data": args.pitch_data, "steps": args.pitch_steps, "variants": {}}
    for label, harmonics in variants:
        res = pitch_variant(args, store, real, harmonics)
        out["pitch"]["variants"][label] = res
        print(
            f"\n== 3. {args.pitch_data} + {', '.join(res['props'])}, {label}: {args.pitch_steps} steps, "
            f"H{args.pitch_hidden}, trained in {res['train_s']:.0f} s"
        )
        for name, p in res["results"].items():
            if real and name == "all":
                continue  # instID 0.5 lies between two instruments: not a note anyone asked for
            cents = ", ".join(f"{r['cents']:+.0f}" for r in p["rows"])
            print(
                f"  {name:>12}: median |error| {p['median_cents']:.0f} cents, worst {p['max_cents']:.0f} "
                f"(target <= 25, none > 100); per normPitch 0, .25, .5, .75, 1: {cents}"
            )


def pitch_variant(args, store, real: bool, harmonics: int) -> dict:
    """Train one pitch model (oscillator `harmonics`, 0 = none) on the notes and measure its pitch errors."""
    from smf.rnn.evaluate import evaluate_run, pitch_errors, pitch_range
    from smf.rnn.train import TrainConfig, train

    props = ["normPitch", "instID"] if real else ["normPitch"]
    run = f"rnn/bench-pitch-osc{harmonics}"
    t0 = time.monotonic()
    cfg = TrainConfig.from_dict(
        {
            "data": f"datasets/{args.pitch_data}",
            "props": props,
            "hidden": args.pitch_hidden,
            "layers": 1,
            "seq_len": 256,
            "batch": 16,
            "lr": 2e-3,
            "steps": args.pitch_steps,
            "checkpoint_every": args.pitch_steps,
            "progress_every": 10**6,
            "oscillator": harmonics,
        }
    )
    train(cfg, store, run, log=lambda *a: None)
    secs = time.monotonic() - t0
    rep = evaluate_run(store, run)
    results = {"all": rep["pitch"]}
    if real:  # the same five pitches played on each instrument (instID held on the program's value)
        from smf.rnn.dataset import load_dataset
        from smf.rnn.generate import Generator
        from smf.rnn.runs import ModelCache

        loaded = ModelCache(store).load(run, 0)
        midi = pitch_range(load_dataset(cfg.data, loaded.config, 1, store).ranges)
        gen = Generator(loaded.model)
        programs = ("piano", "nylon guitar", "violin", "flute")
        for k, name in enumerate(programs):

            def render(arr, dur, sd, inst=k / 3):  # instID = index / (4 programs - 1)
                arr = arr.copy()
                arr[..., 1] = inst
                return gen.generate(arr, dur, seed=sd)

            results[name] = pitch_errors(render, props, loaded.config.sample_rate, midi)
    return {"props": props, "harmonics": harmonics, "train_s": secs, "results": results}


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
