"""The tiny GAN recipe every test that needs a trained GAN shares: the shipped tiny config with a short schedule."""

from __future__ import annotations

import copy
import json
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "services" / "gan" / "configs"


def tiny_dict(steps=(6, 6, 6, 6), **train) -> dict:
    """services/gan/configs/tiny.json with `steps` per scale (and trainConfig overrides)."""
    cfg = copy.deepcopy(json.loads((CONFIGS / "tiny.json").read_text()))
    cfg["modelConfig"].update(
        maxIterAtScale=list(steps), alphaNJumps=[2] * 4, alphaSizeJumps=[1] * 4, miniBatchSize=[8] * 4
    )
    cfg["trainConfig"].update({"checkpointEvery": 12, "logEvery": 2, "previewCount": 4, **train})
    return cfg
