"""paramManager `.params` compatibility: round trips, seed-tool quirks, grid cells, sampling, validation."""

import json

import numpy as np
import pytest
from smf.common.errors import InvalidArgument
from smf.common.params import (
    Param,
    ParamFile,
    constant_param,
    grid_cell_params,
    params_json,
    read_params,
    resample_param,
    sample_param,
    validate_params,
    write_params,
)

# Shape of the QuickStart pops file (RegularPopRandomPitch_r03.80.params): ints for times, paramManager field order.
QUICKSTART = {
    "meta": {"filename": "RegularPopRandomPitch_r03.80.wav"},
    "rate": {
        "times": [0, 10],
        "values": [0.6, 0.6],
        "units": "norm",
        "nvals": 11,
        "minval": 0,
        "maxval": 1,
        "origMinval": 2,
        "origUnits": "rate pow(2,n), n=[2,5]",
        "origMaxval": 5,
    },
}

# What sonyGanFork 2D4pt.py --pm True wrote: 'null' strings, extra meta key added with addMetaParam, float nvals.
SEED_GRID = """{
    "meta": {"filename": "test_2D4pt_d1.0_d0.3_v.0.wav", "model": "nsynth"},
    "dim0": {"times": [0.0, 0.743], "values": [0.15, 0.15], "units": "norm, interp steps in[0,21]", "nvals": 21,
             "minval": "null", "maxval": "null", "origMinval": null, "origUnits": null, "origMaxval": null},
    "pitch": {"times": [0, 1], "values": [0.1, 0.2], "nvals": 0.0, "myNote": "kept"}
}"""


def test_round_trip_is_byte_identical_to_parammanager(tmp_path):
    text = json.dumps(QUICKSTART, indent=4)  # exactly how paramManager writes a file
    path = tmp_path / "a.params"
    path.write_text(text)
    pf = read_params(path)
    assert pf.filename == "RegularPopRandomPitch_r03.80.wav"
    rate = pf.params["rate"]
    assert (rate.nvals, rate.orig_units, rate.orig_minval, rate.orig_maxval) == (11, "rate pow(2,n), n=[2,5]", 2, 5)
    assert params_json(pf) == text
    write_params(tmp_path / "b.params", pf)
    assert (tmp_path / "b.params").read_text() == text


def test_seed_tool_file_with_null_strings_reads_and_keeps_extras():
    pf = read_params(SEED_GRID)
    dim0 = pf.params["dim0"]
    assert dim0.minval is None and dim0.maxval is None
    assert dim0.values == [0.15, 0.15] and dim0.nvals == 21
    assert pf.meta == {"model": "nsynth"}
    pitch = pf.params["pitch"]  # missing optional fields get paramManager's defaults
    assert (pitch.units, pitch.minval, pitch.maxval, pitch.orig_units) == (None, 0, 1, None)
    assert pitch.extra == {"myNote": "kept"}
    again = json.loads(params_json(read_params(params_json(pf).encode())))
    assert again["meta"] == {"filename": "test_2D4pt_d1.0_d0.3_v.0.wav", "model": "nsynth"}
    assert again["pitch"]["myNote"] == "kept" and again["pitch"]["times"] == [0, 1]
    assert again["dim0"]["minval"] is None


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("{not json", "not valid JSON"),
        ('{"rate": {"times": [0, 1], "values": [0, 1]}}', "meta"),
        ('{"meta": {"filename": "x.wav"}, "rate": {"times": [0, "a"], "values": [0, 1]}}', "'rate'"),
        ('{"meta": {"filename": "x.wav"}, "rate": {"times": [0, 1], "values": [0, 1], "minval": "low"}}', "minval"),
    ],
)
def test_malformed_files_name_the_file_and_param(tmp_path, bad, needle):
    path = tmp_path / "bad.params"
    path.write_text(bad)
    with pytest.raises(InvalidArgument) as err:
        read_params(path)
    assert str(path) in err.value.message and needle in err.value.message


def test_constant_param_is_two_points():
    p = constant_param(0.25, 2.0, nvals=5)
    assert p.times == [0.0, 2.0] and p.values == [0.25, 0.25] and p.nvals == 5 and p.units == "norm"


def test_grid_cell_params_match_2d4pt():
    d = 0.743
    doc = json.loads(params_json(grid_cell_params("c.wav", i=2, j=3, d0=21, d1=5, duration=d)))
    assert list(doc) == ["meta", "dim0", "dim1", "envPt"]
    assert doc["meta"] == {"filename": "c.wav"}
    assert doc["dim0"] == {
        "times": [0.0, d],
        "values": [3 / 20, 3 / 20],
        "units": "norm, interp steps in[0,21]",
        "nvals": 21,
        "minval": 0,
        "maxval": 1,
        "origMinval": None,
        "origUnits": None,
        "origMaxval": None,
    }
    assert doc["dim1"]["values"] == [0.5, 0.5] and doc["dim1"]["units"] == "norm, interp steps in[0,5]"
    assert doc["dim1"]["nvals"] == 5
    env = doc["envPt"]
    assert env["units"] == f"norm, duration in[0,{d}]" and env["nvals"] == 0
    assert len(env["times"]) == len(env["values"]) == 22
    seg = d / 11
    for k in range(11):  # segment k: [k*d/11, (k+1)*d/11 - 1e-6] holding k/10
        assert env["times"][2 * k] == pytest.approx(k * seg, abs=1e-12)
        assert env["times"][2 * k + 1] == pytest.approx((k + 1) * seg - 1e-6, abs=1e-12)
        assert env["values"][2 * k] == env["values"][2 * k + 1] == pytest.approx(k / 10, abs=1e-12)
    validate_params(
        read_params(params_json(grid_cell_params("c.wav", 2, 3, 21, 5, d))),
        ["dim0", "dim1", "envPt"],
        source="c.params",
    )


def test_grid_cell_params_1d_has_no_dim1():
    pf = grid_cell_params("c.wav", i=0, j=0, d0=2, d1=1, duration=1.0)
    assert list(pf.params) == ["dim0", "envPt"] and pf.params["dim0"].values == [0.0, 0.0]
    assert grid_cell_params("c.wav", i=0, j=1, d0=2, d1=1, duration=1.0).params["dim0"].values == [1.0, 1.0]


def test_sample_param_interpolates_and_extrapolates():
    p = Param(times=[0, 1, 2], values=[0.0, 0.5, 0.7])
    np.testing.assert_allclose(sample_param(p, np.array([0, 0.5, 1.5, 2])), [0, 0.25, 0.6, 0.7])
    # paramManager (interp1d fill_value="extrapolate") continues the end segments
    np.testing.assert_allclose(sample_param(p, np.array([-1.0, 3.0])), [-0.5, 0.9])
    np.testing.assert_allclose(sample_param(p, np.array([-1.0, 3.0]), clamp=True), [0.0, 0.7])


def test_envpt_samples_as_a_staircase():
    env = grid_cell_params("c.wav", 0, 0, 2, 1, 1.1).params["envPt"]
    mid = (np.arange(11) + 0.5) * 0.1  # middle of each 0.1 s segment
    np.testing.assert_allclose(sample_param(env, mid), np.linspace(0, 1, 11), atol=1e-12)


def test_resample_param():
    p = resample_param(Param(times=[0, 2], values=[0, 1], nvals=3, orig_units="x"), 5, 0, 2)
    np.testing.assert_allclose(p.times, [0, 0.5, 1, 1.5, 2])
    np.testing.assert_allclose(p.values, [0, 0.25, 0.5, 0.75, 1])
    assert p.nvals == 3 and p.orig_units == "x"


@pytest.mark.parametrize(
    "param, needle",
    [
        (None, "missing param 'rate'"),
        (Param(times=[0, 1], values=[0.2, 1.5]), "outside [0, 1]"),
        (Param(times=[0, 1, 1], values=[0.2, 0.3, 0.4]), "times not increasing"),
        (Param(times=[0, 1, 2], values=[0.2, 0.3]), "3 times but 2 values"),
        (Param(times=[0], values=[0.2]), "at least 2 points"),
        (Param(times=[0, 1], values=[0.2, float("nan")]), "outside [0, 1]"),
    ],
)
def test_validate_params_names_file_and_param(param, needle):
    pf = ParamFile("x.wav", {} if param is None else {"rate": param})
    with pytest.raises(InvalidArgument) as err:
        validate_params(pf, ["rate"], source="data/x.params")
    assert err.value.field == "data/x.params"
    assert needle in err.value.message and "rate" in err.value.message


def test_validate_only_required_unless_all_params():
    pf = ParamFile("x.wav", {"rate": constant_param(0.5, 1.0), "hz": Param(times=[0, 1], values=[440, 440])})
    validate_params(pf, ["rate"], source="x.params")
    with pytest.raises(InvalidArgument, match="'hz'"):
        validate_params(pf, [], source="x.params", all_params=True)
