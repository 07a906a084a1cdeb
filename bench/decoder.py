"""Is the control score's ear right? Decode GAN sounds the grid does not hold and compare with where they are.

    .venv/bin/python bench/decoder.py --store file://$HOME/.smf/store --grid grids/demo-lin-<id>

The control-following score (smf.rnn.evaluate) hears a window as the nearest training cell by log-mel mean and
std over time. That choice is tested here without any RNN: the grid's GAN renders sounds at positions *between*
the cells (bilinear in the grid's stored latents, a 2 x finer lattice, the cells themselves left out), each is
decoded against the grid, and Spearman / mean |error| between true and decoded position say how well each feature
set hears a sound it was not given. Side by side: the score's features (mean + std), mean only, std only.
The GAN's sounds are mu-law quantized first, as the reference cells are (a plain audio tier's reference, 256
classes, no pre-emphasis): every render the score hears carries that noise floor, and raw GAN audio would not.
A feature set that decodes held-out sounds worse would mis-hear a synth that does move between cells.

`--gestures` also scores **the GAN itself as a synth** on the score's own gestures: each window of a gesture is the
GAN's sound at the requested position (bilinear in the grid's latents), so the knobs move the very generator that
made the cells, continuously. Scored by `smf.rnn.evaluate.evaluate` exactly as a model is (same windows, oracle and
chance), its model/oracle ratio is what a synth that reproduced the GAN between the cells would reach with this ear:
a ceiling for an RNN trained on the cells, below 1 where the ear hears in-between sounds as the wrong cell.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass

import numpy as np
import torch


def lattice_latents(latents: torch.Tensor, fine: int) -> tuple[torch.Tensor, np.ndarray]:
    """Grid latents [d1, d0, Z] -> latents of the in-between points of a lattice `fine` x finer, and their (dim0,
    dim1) positions [n, 2]; the cells' own positions are left out. Each cell-to-cell patch is interpolated by the
    grid service's own `grid_latents` (linear, its four neighbouring cells as corners)."""
    from smf.grid.grid import grid_latents

    d1, d0 = latents.shape[0], latents.shape[1]
    mesh = torch.empty((d1 - 1) * fine + 1, (d0 - 1) * fine + 1, latents.shape[-1])
    for i in range(d1 - 1):
        for j in range(d0 - 1):
            corners = latents[i, j], latents[i, j + 1], latents[i + 1, j], latents[i + 1, j + 1]
            mesh[i * fine : (i + 1) * fine + 1, j * fine : (j + 1) * fine + 1] = grid_latents(
                *corners, d0=fine + 1, d1=fine + 1
            )
    b, a = np.meshgrid(np.arange(mesh.shape[0]), np.arange(mesh.shape[1]), indexing="ij")
    between = ~((a % fine == 0) & (b % fine == 0))
    pts = np.stack([a[between] / (mesh.shape[1] - 1), b[between] / (mesh.shape[0] - 1)], axis=1)
    return mesh[torch.from_numpy(between)], pts


def quantized(x: torch.Tensor, cfg) -> np.ndarray:
    """GAN audio in the reference's domain: the cells as an audio tier of `cfg` learns them (mu-law, and
    pre-emphasis when set), i.e. with the quantization noise a model's render and the reference both carry. Raw GAN
    audio has none and its quiet bands read darker than any cell (the lattice check below read rho 0.80 / 0.90 on
    the 9x9 soundfont grid unquantized, against 0.96 / 0.98 quantized)."""
    from smf.rnn.model import decode_audio, encode_audio

    classes = encode_audio(x.clamp(-1, 1), cfg.classes, cfg.preemphasis)
    return decode_audio(classes, cfg.classes, cfg.preemphasis).numpy()


@dataclass
class GridParts:
    """What both checks need from a 2-D grid: its stored latents [d1, d0, Z], its GAN, the plain audio tier config
    the reference is built for, and the reference (the cells as the score hears them)."""

    grid: str
    latents: torch.Tensor
    gan: object
    cfg: object
    ref: object


def load_grid(store, grid: str) -> GridParts:
    """Read `grid` once for both checks. InvalidArgument for a grid without latents or with one row / column."""
    from smf.common.errors import InvalidArgument
    from smf.gan.runs import load_model
    from smf.rnn.dataset import load_dataset
    from smf.rnn.evaluate import reference_from_dataset
    from smf.rnn.model import RNNConfig

    meta = json.loads(store.get_bytes(f"{grid}/grid.json"))
    if meta.get("d1", 1) < 2 or meta.get("d0", 1) < 2 or not meta.get("latents"):
        raise InvalidArgument("grid", f"{grid}: needs a 2-D grid with stored latents")
    latents = torch.load(io.BytesIO(store.get_bytes(f"{grid}/{meta['latents']}")), weights_only=True)
    cfg = RNNConfig(param_names=["dim0", "dim1"])
    ref = reference_from_dataset(load_dataset(grid, cfg, 1, store))
    return GridParts(grid, latents, load_model(store, meta["model"]), cfg, ref)


def decoder_check(parts: GridParts, fine: int = 2) -> dict:
    """Decode the GAN sounds between the grid's cells with each feature set -> {"grid", "held_out", "cells",
    "features": {name: {spearman_dim0, spearman_dim1, mae}}}."""
    from smf.rnn.evaluate import BANDS, distances, spearman, window_features

    ref = parts.ref
    zs, true = lattice_latents(parts.latents, fine)
    with torch.no_grad():
        audio = np.stack([quantized(x, parts.cfg) for x in parts.gan.render(zs)[:, : ref.window]])

    held = (window_features(audio, ref.sample_rate) - ref.mean) / ref.std  # z-scored as the score z-scores
    sets = {"mean + std (the score)": slice(None), "mean only": slice(0, BANDS), "std only": slice(BANDS, None)}
    rows = {}
    for name, cols in sets.items():
        heard = ref.positions[distances(held[:, cols], ref.features[:, cols]).argmin(1)]
        rows[name] = {
            "spearman_dim0": spearman(true[:, 0], heard[:, 0]),
            "spearman_dim1": spearman(true[:, 1], heard[:, 1]),
            "mae": float(np.abs(true - heard).mean()),
        }
    return {"grid": parts.grid, "held_out": len(true), "cells": len(ref.audio), "fine": fine, "features": rows}


def latents_at(latents: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
    """Grid latents [d1, d0, Z] (d0, d1 >= 2) and positions [n, 2] (dim0, dim1 in [0, 1]) -> latents [n, Z], each
    the grid service's linear interpolation (`lerp`) of its four neighbouring cells."""
    from smf.grid.grid import lerp

    d1, d0 = latents.shape[0], latents.shape[1]
    x = np.clip(positions[:, 0], 0, 1) * (d0 - 1)
    y = np.clip(positions[:, 1], 0, 1) * (d1 - 1)
    j, i = np.minimum(np.floor(x).astype(int), d0 - 2), np.minimum(np.floor(y).astype(int), d1 - 2)
    fx = torch.from_numpy(x - j).float()[:, None]
    fy = torch.from_numpy(y - i).float()[:, None]
    top = lerp(latents[i, j], latents[i, j + 1], fx)
    return lerp(top, lerp(latents[i + 1, j], latents[i + 1, j + 1], fx), fy)


def gan_gesture_check(parts: GridParts, duration: float = 3.0) -> dict:
    """Score the grid's GAN, moved continuously along the score's default gestures, as if it were the synth ->
    the `evaluate` report (its "model" is the GAN)."""
    from smf.rnn.evaluate import default_gestures, evaluate, requested_windows

    ref = parts.ref

    def render(batch: np.ndarray, seconds: float, seed: int) -> np.ndarray:
        out = []
        for cond in batch:
            req = requested_windows(cond, seconds, ref.sample_rate, ref.window)
            with torch.no_grad():
                sound = parts.gan.render(latents_at(parts.latents, req[:, :2]))[:, : ref.window].reshape(-1)
            out.append(quantized(sound, parts.cfg))
        return np.stack(out)

    return evaluate(render, ref, default_gestures(ref.param_names, ref), duration=duration, voices=1)


def format_check(r: dict) -> str:
    lines = [
        f"{r['grid']}: {r['held_out']} held-out GAN sounds between {r['cells']} cells (lattice x{r['fine']})",
        f"{'features':26s} {'rho dim0':>9s} {'rho dim1':>9s} {'|err|':>7s}",
    ]
    for name, x in r["features"].items():
        lines.append(f"{name:26s} {x['spearman_dim0']:9.3f} {x['spearman_dim1']:9.3f} {x['mae']:7.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="store URI holding the grid and its GAN")
    ap.add_argument("--grid", required=True, help="a 2-D grid with stored latents, e.g. grids/demo-lin-<id>")
    ap.add_argument("--fine", type=int, default=2, help="lattice refinement between cells (default 2)")
    ap.add_argument("--gestures", action="store_true", help="also score the GAN itself along the score's gestures")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    from smf.common.store import open_store

    parts = load_grid(open_store(args.store), args.grid)
    result = decoder_check(parts, args.fine)
    print(format_check(result))
    if args.gestures:
        from smf.rnn.evaluate import format_table

        report = gan_gesture_check(parts)
        print('\nthe GAN as the synth ("model" = the grid\'s GAN at each requested position)')
        print(format_table(report))
        result["gan_gestures"] = report["summary"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
