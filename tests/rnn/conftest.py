"""Fixtures shared by the RNN tests."""

import numpy as np
import pytest


@pytest.fixture
def chunked_live():
    """render(gen, arr, duration, seed, chunk) -> (one-shot audio, the same played by a live session over chunks of
    `chunk` samples of the same per-sample conditioning): what must agree whatever state a tier carries."""

    def render(gen, arr, duration, seed, chunk):
        full = gen.generate(arr, duration, seed=seed)
        cond = gen.prepare(arr, duration, None)
        live = gen.stream(voices=cond.shape[0], seed=seed)
        parts = [live.next(cond[:, i : i + chunk]) for i in range(0, cond.shape[1], chunk)]
        return full, np.concatenate(parts, 1)

    return render
