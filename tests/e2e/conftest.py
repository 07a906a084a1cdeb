"""Fixtures of the reliability suite (tests/e2e): a tiny trained GAN in a file store. Helpers: helpers.py."""

from __future__ import annotations

import json

import pytest
from support.torch_threads import one_torch_thread

from .helpers import tiny_gan_config


@pytest.fixture(scope="session")
def gan_store(tmp_path_factory):
    """A file store with datasets/tones and gan/trained (a tiny GAN trained in-process, a few steps)."""
    from smf.common.store import open_store
    from smf.datasets import make_dataset
    from smf.gan.config import parse_config
    from smf.gan.train import Trainer

    store = open_store(f"file://{tmp_path_factory.mktemp('e2e-store')}")
    make_dataset("tones", store, n_files=12, duration=0.3)
    with one_torch_thread():
        Trainer(parse_config(json.dumps(tiny_gan_config())), store, "gan/trained", log=lambda *_: None).run()
    return store
