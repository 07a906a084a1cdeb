"""--remote parsing and stage keys (the local spawning is exercised by test_pipeline.py and tests/e2e)."""

from __future__ import annotations

import pytest
from smf.common.errors import InvalidArgument
from smf.pipeline.pipeline import stage_key
from smf.pipeline.services import parse_remote


def test_parse_remote():
    spec = "gan=h1:50051, grid=h2:50052,som=h3:50053,rnn=h4:50054"
    assert parse_remote(spec) == {"gan": "h1:50051", "grid": "h2:50052", "som": "h3:50053", "rnn": "h4:50054"}
    with pytest.raises(InvalidArgument, match="no target for som, rnn"):
        parse_remote("gan=h:1,grid=h:2")
    with pytest.raises(InvalidArgument, match="SVC=HOST:PORT"):
        parse_remote("gan=h:1,grid=h:2,som=h:3,rnn=h:4,web=h:5")


def test_stage_key_is_content_addressed():
    k = stage_key("grid", {"d0": 5, "d1": 5}, ["gan/a", "pipelines/x/corners"])
    assert k == stage_key("grid", {"d1": 5, "d0": 5}, ["pipelines/x/corners", "gan/a"])  # order-free
    assert k != stage_key("grid", {"d0": 5, "d1": 6}, ["gan/a", "pipelines/x/corners"])
    assert k != stage_key("grid", {"d0": 5, "d1": 5}, ["gan/b", "pipelines/x/corners"])
    assert k != stage_key("som", {"d0": 5, "d1": 5}, ["gan/a", "pipelines/x/corners"])
