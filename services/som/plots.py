"""The SOM's figures, as PNG bytes (matplotlib, Agg backend — servers have no display).

mesh_png(result.mesh2d_initial, result.mesh2d)          # the 2-D visualisation mesh before / after
distances_png(metrics["adjacent_distances"])            # heatmaps of adjacent-cell feature distances
convergence_png(result.history)                         # CoV and max/min ratio per iteration
"""

from __future__ import annotations

import io

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return buf.getvalue()


def _draw_mesh(ax, mesh: np.ndarray, **style) -> None:
    for row in mesh:  # lines along dim0
        ax.plot(row[:, 0], row[:, 1], **style)
    for col in mesh.transpose(1, 0, 2):  # lines along dim1
        ax.plot(col[:, 0], col[:, 1], **style)


def mesh_png(before, after) -> bytes:
    """The 2-D mesh [d1, d0, 2] before (grey) and after (blue) relaxation, on the same axes."""
    plt = _pyplot()
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 5))
    _draw_mesh(ax, before, color="0.75", linewidth=0.8)
    _draw_mesh(ax, after, color="tab:blue", linewidth=1.0, marker=".", markersize=3)
    ax.set_aspect("equal", adjustable="datalim")
    ax.invert_yaxis()  # row 0 at the top, like the grid page
    ax.set_xlabel("dim0 (columns)")
    ax.set_ylabel("dim1 (rows)")
    ax.set_title("SOM mesh: before (grey), after (blue)")
    fig.tight_layout()
    return _png(fig)


def distances_png(adjacent: dict) -> bytes:
    """Heatmaps of horizontal [R, C-1] and vertical [R-1, C] neighbour distances, before and after, each divided
    by its mean (so 1 = average; an even grid is one flat colour)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(8, 7))
    for r, when in enumerate(("before", "after")):
        maps = adjacent[when]
        mean = np.mean(np.concatenate([np.ravel(maps["horizontal"]), np.ravel(maps["vertical"])])) or 1.0
        for c, direction in enumerate(("horizontal", "vertical")):
            ax = axes[r, c]
            im = ax.imshow(np.asarray(maps[direction], dtype=float) / mean, cmap="viridis", vmin=0, vmax=2)
            ax.set_title(f"{when}: {direction} neighbours")
            ax.set_xlabel("j (dim0)")
            ax.set_ylabel("i (dim1)")
            fig.colorbar(im, ax=ax, fraction=0.046, label="distance / mean")
    fig.tight_layout()
    return _png(fig)


def convergence_png(history: list[dict]) -> bytes:
    """Coefficient of variation (left axis) and max/min ratio (right axis) of adjacent distances per iteration."""
    plt = _pyplot()
    it = [h["iteration"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(it, [h["cov"] for h in history], color="tab:blue", marker="." if len(it) < 50 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("CoV of adjacent distances", color="tab:blue")
    ax.set_ylim(bottom=0)
    right = ax.twinx()
    right.plot(it, [h["max_min_ratio"] for h in history], color="tab:orange", linestyle="--")
    right.set_yscale("log")  # identical neighbours make the ratio explode
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    right.yaxis.set_major_formatter(ScalarFormatter())
    right.yaxis.set_minor_formatter(NullFormatter())
    right.set_ylabel("max / min distance", color="tab:orange")
    ax.set_title("SOM convergence")
    fig.tight_layout()
    return _png(fig)
