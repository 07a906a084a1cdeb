"""The one progress bar for long work run from a terminal (tqdm on stderr, so stdout stays the command's output).

    with progress_bar(total=441, desc="rendering", unit="cell") as bar:
        render_grid(..., on_progress=lambda done, total: bar.update(done - bar.n))

Library functions take `progress=` / `on_progress=` callbacks and stay silent; commands pass a bar's update.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["progress_bar"]


def progress_bar(*, total: int | None, desc: str, unit: str = "it", disable: bool = False, iterable=None) -> tqdm:
    """A tqdm bar on stderr that fits the terminal; `iterable` wraps a loop (`for x in progress_bar(...)`)."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=disable)
