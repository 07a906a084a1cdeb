"""torch on one CPU thread for a block or a test: the dev box has 2 cores shared by several test runs, and tiny
models gain nothing from more threads.

    with one_torch_thread():                              # in a fixture that trains a tiny model
        Trainer(...).run()
    pytestmark = pytest.mark.usefixtures("one_thread")    # every test of a module (fixture in tests/conftest.py)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Set torch's intra-op threads to 1 inside the block and restore the count after it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
