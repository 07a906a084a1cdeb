"""Pipeline configs: the shipped ones load; mistakes fail early with the field named."""

from __future__ import annotations

import json

import pytest
from smf.common.errors import InvalidArgument
from smf.pipeline.config import DEMO_CONFIG, load_config, parse_config


def _demo() -> dict:
    return json.loads(DEMO_CONFIG.read_text())


@pytest.mark.parametrize("name", ["demo.json", "tiny.json"])
def test_shipped_configs_load(name):
    cfg = load_config(DEMO_CONFIG.parent / name)
    assert cfg.gan["modelConfig"]["dimLatentVector"] > 0  # the GAN config path was resolved and read
    assert len(cfg.gestures) >= 1 and cfg.grid["d0"] >= 2


@pytest.mark.parametrize(
    "change, field",
    [
        ({"grdi": {}}, "unknown keys ['grdi']"),
        ({"grid": {"d0": 1, "d1": 5}}, "grid.d0"),
        ({"corners": [0, 1, 2]}, "corners"),
        ({"corners": [0, 1, 2, 99]}, "corners"),
        ({"samples": {"count": 2}}, "samples.count"),
        ({"dataset": {"builtin": "tones", "folder": "/x"}}, "dataset"),
        ({"dataset": {"builtin": "tones", "nfiles": 3}}, "nfiles"),
        ({"gestures": []}, "gestures"),
        ({"gestures": [{"name": "a", "columns": ["ramp:0,1", "wobble:3"], "duration": 1}]}, "gestures[0].columns"),
        ({"gestures": [{"name": "a", "columns": ["ramp:0,1"], "duration": 1}]}, "gestures[0].columns"),
        ({"name": "../escape"}, "name"),
    ],
)
def test_bad_configs_name_the_field(tmp_path, change, field):
    raw = {**_demo(), **change}
    raw["gan"] = str(DEMO_CONFIG.parent / raw["gan"])
    with pytest.raises(InvalidArgument) as err:
        parse_config(raw, source="cfg.json")
    assert field in err.value.message and "cfg.json" in err.value.message


def test_missing_file_and_bad_gan_path(tmp_path):
    with pytest.raises(InvalidArgument, match="not found"):
        load_config(tmp_path / "nope.json")
    p = tmp_path / "p.json"
    p.write_text(json.dumps({**_demo(), "gan": "missing-gan.json"}))
    with pytest.raises(InvalidArgument, match="gan"):
        load_config(p)


def test_folder_dataset_is_resolved_relative_to_the_config(tmp_path):
    (tmp_path / "sounds").mkdir()
    raw = {**_demo(), "dataset": {"folder": "sounds"}, "gan": str(DEMO_CONFIG.parent / _demo()["gan"])}
    cfg = parse_config(raw, source="x", base_dir=tmp_path)
    assert cfg.dataset == {"folder": str(tmp_path / "sounds"), "name": "sounds"}


@pytest.mark.parametrize(
    "controls, field",
    [
        ([], "controls"),
        ({"features": ["loudness"]}, "controls.features"),
        ({"features": []}, "controls.features"),
        ({"generate": ["rms"]}, "controls.generate"),
        ({"features": ["rms"], "knobs": "yes"}, "controls.knobs"),
    ],
)
def test_bad_controls_name_the_field(controls, field):
    from smf.pipeline.config import DEMO_CONFIG, load_config, parse_config

    raw = load_config(DEMO_CONFIG).to_dict()
    raw["controls"] = controls
    with pytest.raises(InvalidArgument) as e:
        parse_config(raw, source="x.json")
    assert field in e.value.field


def test_chain_props_put_the_knobs_beside_the_controls_only_when_asked():
    from smf.pipeline.config import chain_props, controls_tier

    assert chain_props({"features": ["rms", "centroid"]}) == ["rms", "centroid"]
    assert chain_props({"features": ["rms"], "knobs": True}) == ["rms", "dim0", "dim1"]
    tier = controls_tier({"features": ["rms"], "knobs": True, "hidden": 32})
    assert "knobs" not in tier and tier["generate"] == ["rms"] and tier["hidden"] == 32


@pytest.mark.parametrize("voices", [0, 17, 2.5, True, "4"])
def test_bad_control_voices(voices):
    from smf.pipeline.config import DEMO_CONFIG, load_config, parse_config

    raw = load_config(DEMO_CONFIG).to_dict()
    raw["control"] = {"voices": voices}
    with pytest.raises(InvalidArgument) as e:
        parse_config(raw, source="x.json")
    assert e.value.field.endswith("control.voices")


def test_bad_control_duration():
    from smf.pipeline.config import DEMO_CONFIG, load_config, parse_config

    raw = load_config(DEMO_CONFIG).to_dict()
    raw["control"] = {"duration": 0.1}
    with pytest.raises(InvalidArgument) as e:
        parse_config(raw, source="x.json")
    assert "control.duration" in e.value.field
