"""Turn a grid of latents into a stored grid artifact: cell wavs (+ .params), grid.json, latents.pt, mosaic.png.

Used by the grid service (2D4pt grids) and by the SOM service (linearized grids); the caller supplies the render
function, so the same code serves an in-process GAN, one GAN service or several replicas:

    latents = grid_latents(z0, z1, z2, z3, d0=21, d1=21)              # [d1, d0, dim] (or [d1, d0, K, dim])
    manifest = render_grid(store, "grids/20261125-203000-ab12cd", latents, render_fn,
                           model="gan/run1", sample_rate=16000, inputs=["gan/run1", "samples/…"],
                           config={"corners": [...], "interpolation": "linear"}, pm=True)

`render_fn(latents: np.ndarray[B, dim]) -> np.ndarray[B, T]` (float audio in [-1, 1]). Cells are rendered in
batches of `batch_size`, written as they come, and the manifest is written last (the commit point). If anything
fails — or `on_progress` raises (e.g. Cancelled) — everything written under the grid id is deleted again.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from smf.common.audio import wav_bytes
from smf.common.commit import Staging
from smf.common.errors import InvalidArgument
from smf.common.latents import tensor_bytes
from smf.common.lineage import Manifest, read_json_file
from smf.common.params import grid_cell_params, params_json
from smf.common.store import Store, validate_prefix
from smf.grid.grid import cell_filename, validate_shape

log = logging.getLogger("smf.grid")

GRID_JSON = "grid.json"
LATENTS = "latents.pt"
MOSAIC = "mosaic.png"
CELLS = "cells"
TILE_W, TILE_H = 64, 48  # pixels per cell in mosaic.png; the page uses it as a sprite sheet of thumbnails
DEFAULT_BATCH = 64
WRITERS = 8  # concurrent store writes


def cell_table(d0: int, d1: int, variations: int, *, pm: bool, prefix: str = "grid") -> list[dict]:
    """The cell list of grid.json, in the seed tool's order (row i, column j, variation k)."""
    cells = []
    for i in range(d1):
        for j in range(d0):
            for k in range(variations):
                name = cell_filename(i, j, k, prefix=prefix)
                cells.append(
                    {
                        "i": i,
                        "j": j,
                        "k": k,
                        "dim0": j / (d0 - 1),
                        "dim1": i / (d1 - 1),
                        "file": f"{CELLS}/{name}",
                        "params": f"{CELLS}/{name[:-4]}.params" if pm else None,
                    }
                )
    return cells


def spectrogram_tile(audio: np.ndarray, *, width: int = TILE_W, height: int = TILE_H) -> np.ndarray:
    """A [height, width] log-magnitude image in [0, 1] (low frequencies at the bottom), for the mosaic."""
    x = torch.as_tensor(audio, dtype=torch.float32).flatten()
    n_fft = 256 if len(x) >= 256 else max(16, 1 << (max(len(x), 2) - 1).bit_length())
    x = torch.nn.functional.pad(x, (0, max(0, n_fft - len(x))))
    hop = max(1, (len(x) - n_fft) // (width - 1) or 1)
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * torch.log10(spec + 1e-5)
    db = (db.clamp_min(db.max() - 80) - (db.max() - 80)) / 80  # top 80 dB of this cell
    img = torch.nn.functional.interpolate(db[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return img[0, 0].flip(0).clamp(0, 1).numpy()


def mosaic_png(tiles: np.ndarray) -> bytes:
    """tiles [d1, d0, H, W] in [0, 1] -> one PNG, row i at the top, 1-pixel dark gutters between cells."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.image

    d1, d0, h, w = tiles.shape
    canvas = np.zeros((d1 * h, d0 * w), np.float32)
    for i in range(d1):
        for j in range(d0):
            t = tiles[i, j].copy()
            t[-1, :] = 0
            t[:, -1] = 0
            canvas[i * h : (i + 1) * h, j * w : (j + 1) * w] = t
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, canvas, cmap="magma", vmin=0, vmax=1, format="png")
    return buf.getvalue()


def render_grid(
    store: Store,
    grid_id: str,
    latents,
    render_fn: Callable[[np.ndarray], np.ndarray],
    *,
    model: str,
    sample_rate: int,
    inputs,
    config: dict | None = None,
    kind: str = "grid",
    pm: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    batch_size: int = DEFAULT_BATCH,
    service: str = "grid",
    file_prefix: str = "grid",
) -> Manifest:
    """Render `latents` [d1, d0, dim] or [d1, d0, K, dim] into the artifact `grid_id`; returns its manifest.

    `on_progress(done, total)` is called after every batch (cells rendered so far); raising from it aborts the
    render (and deletes what was written). `config` (JSON-serialisable) goes into grid.json and the manifest.
    """
    grid_id = validate_prefix(grid_id)
    z = _checked_latents(latents, sample_rate)
    d1, d0, n_var, dim = z.shape
    cells = cell_table(d0, d1, n_var, pm=pm, prefix=file_prefix)
    flat = z.reshape(-1, dim)  # same order as `cells`: i, then j, then k
    total = len(cells)
    tiles = np.zeros((d1, d0, TILE_H, TILE_W), np.float32)
    duration = None
    # Store writes are I/O-bound (fsync on file stores, round trips on S3): a few writer threads run them while
    # the next batch renders. Batch k's writes are awaited after batch k+1 is submitted, which bounds memory.
    pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="grid-write")
    inflight: list[Future] = []
    # Staged, then published with the manifest (smf.common.commit): a failed or cancelled render leaves nothing
    # visible. A committed grid_id is ALREADY_EXISTS here, before anything renders.
    out = Staging(store, grid_id)
    try:
        for start in range(0, total, batch_size):
            batch = flat[start : start + batch_size].numpy()
            audio = np.asarray(render_fn(batch), dtype=np.float32)
            if audio.ndim != 2 or len(audio) != len(batch):
                raise InvalidArgument("render_fn", f"returned shape {audio.shape} for {len(batch)} latents")
            if duration is None:
                duration = audio.shape[1] / sample_rate
            batch_cells = cells[start : start + len(batch)]
            submitted = _submit_cells(pool, out, batch_cells, audio, sample_rate, duration, (d0, d1), pm)
            for cell, a in zip(batch_cells, audio, strict=False):
                if cell["k"] == 0:
                    tiles[cell["i"], cell["j"]] = spectrogram_tile(a)
            for f in inflight:
                f.result()  # re-raises a failed write
            inflight = submitted
            if on_progress is not None:
                on_progress(min(start + batch_size, total), total)
        for f in inflight:
            f.result()
        # the caller's config first, so it cannot overwrite what describes the files
        header = {
            **(config or {}),
            "kind": kind,
            "id": grid_id,
            "model": model,
            "d0": d0,
            "d1": d1,
            "variations": n_var,
            "latent_dim": dim,
            "sample_rate": sample_rate,
            "duration": duration,
            "pm": pm,
            "latents": LATENTS,
            "mosaic": {"file": MOSAIC, "tile_width": TILE_W, "tile_height": TILE_H},
        }
        out.put_bytes(LATENTS, tensor_bytes(z if n_var > 1 else z[:, :, 0]))
        out.put_bytes(MOSAIC, mosaic_png(tiles), content_type="image/png")
        out.put_bytes(
            GRID_JSON, json.dumps({**header, "cells": cells}, indent=1).encode(), content_type="application/json"
        )
        manifest_config = {k: v for k, v in header.items() if k not in ("kind", "id", "latents", "mosaic")}
        return out.commit(kind, config=manifest_config, inputs=list(inputs), service=service)
    except BaseException:
        # nothing half-written becomes visible: drop the staged files — after the writes still running have
        # finished, or they would land after the cleanup
        pool.shutdown(wait=True, cancel_futures=True)
        out.abort()
        raise
    finally:
        pool.shutdown(wait=True)


def _checked_latents(latents, sample_rate: int) -> torch.Tensor:
    """The latents as [d1, d0, K, dim] float32, checked (shape, finite), with the sample rate."""
    z = torch.as_tensor(latents, dtype=torch.float32)
    if z.dim() == 3:
        z = z.unsqueeze(2)
    if z.dim() != 4:
        raise InvalidArgument("latents", f"expected [d1, d0, dim] or [d1, d0, K, dim], got shape {tuple(z.shape)}")
    validate_shape(int(z.shape[1]), int(z.shape[0]))
    if not torch.isfinite(z).all():
        raise InvalidArgument("latents", "contain NaN or inf")
    if sample_rate <= 0:
        raise InvalidArgument("sample_rate", f"must be > 0, got {sample_rate}")
    return z


def _submit_cells(
    pool: ThreadPoolExecutor,
    out: Staging,
    cells: list[dict],
    audio: np.ndarray,
    sample_rate: int,
    duration: float,
    shape: tuple[int, int],
    pm: bool,
) -> list[Future]:
    """Queue the writes of one batch of cells (wav, and .params when `pm`); returns their futures."""
    d0, d1 = shape
    futures = []
    for cell, a in zip(cells, audio, strict=False):
        futures.append(pool.submit(out.put_bytes, cell["file"], wav_bytes(a, sample_rate), content_type="audio/wav"))
        if pm:
            pf = grid_cell_params(cell["file"].rsplit("/", 1)[1], cell["i"], cell["j"], d0, d1, duration)
            futures.append(
                pool.submit(
                    out.put_bytes,
                    cell["params"],
                    params_json(pf).encode(),
                    content_type="application/json",
                )
            )
    return futures


def read_grid(store: Store, grid_id: str) -> dict:
    """grid.json of a committed grid (NotFound if it has no manifest)."""
    doc, manifest = read_json_file(store, grid_id, GRID_JSON, what="a grid")
    doc["created_at"] = manifest.created_at
    doc["inputs"] = manifest.inputs
    return doc
