"""Fixtures of the GAN tests: a tiny config, the `tones` dataset in a file store, a model trained once per session.

Everything runs at tiny capacity on CPU with one torch thread (the dev box has 2 shared cores).
"""

from __future__ import annotations

import pytest
import torch
from support.tiny_gan import CONFIGS, tiny_dict  # noqa: F401  (re-exported for the tests here)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every GAN test runs torch on one thread (`one_thread` in tests/conftest.py)."""


@pytest.fixture(scope="session")
def tones_store(tmp_path_factory):
    """A file store holding datasets/tones (shared by the session: tests add their own runs under unique names)."""
    from smf.common.store import open_store
    from smf.datasets import make_dataset

    store = open_store(f"file://{tmp_path_factory.mktemp('gan-store')}")
    make_dataset("tones", store, n_files=12, duration=0.3)
    return store


@pytest.fixture(scope="session")
def trained(tones_store):
    """gan/trained: the tiny config's short schedule, trained to the end in-process."""
    from smf.gan.config import parse_config
    from smf.gan.train import Trainer

    torch.set_num_threads(1)
    Trainer(parse_config(tiny_dict()), tones_store, "gan/trained", log=lambda *_: None).run()
    return tones_store, "gan/trained"
