"""Conditioning arrays: generators, stretching math, and column checks."""

import numpy as np
import pytest
from smf.common.errors import InvalidArgument
from smf.rnn import conditioning as cond


@pytest.mark.parametrize("duration,expected", [(3, 48000), (7, 112000), (10.5, 168000)])
def test_stretch_1000_points_exact_length(duration, expected):
    arr = cond.columns(cond.ramp(1.0, 0.0), cond.constant(0.5))  # [1000, 2]
    out = cond.stretch(arr, duration, 16000)
    assert out.shape == (1, expected, 2)
    # point k sits at k * duration / 1000 s: the ramp passes its k-th value at sample round(k * duration * 16)
    for k in (0, 250, 500, 999):
        m = k * duration * 16
        assert m == int(m)
        assert out[0, int(m), 0] == pytest.approx(arr[k, 0], abs=1e-6)
    assert out[0, -1, 0] == pytest.approx(0.0, abs=1e-6)  # last point held to the end
    np.testing.assert_allclose(out[0, :, 1], 0.5)
    assert np.all(np.diff(out[0, :, 0]) <= 1e-7)  # monotone, no overshoot


def test_stretch_linear_between_points_and_batches():
    arr = np.array([[[0.0], [1.0]], [[1.0], [1.0]]])  # [B=2, N=2, 1]
    out = cond.stretch(arr, 1.0, 4)  # 4 samples: positions 0, .5, 1, 1.5 -> clipped to 1
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(out[1, :, 0], 1.0)
    assert cond.stretch(np.full((1, 3), 0.2), 0.5, 100).shape == (1, 50, 3)  # N=1: a constant


def test_generators():
    np.testing.assert_allclose(cond.ramp(0, 1, 5), [0, 0.25, 0.5, 0.75, 1])
    g = cond.glide([0.2, 0.8, 0.2], 1001)
    assert g[0] == pytest.approx(0.2) and g[500] == pytest.approx(0.8) and g[-1] == pytest.approx(0.2)
    b = cond.bump(0.5, 0.1, 0.1, 0.9, 1001)
    assert b.argmax() == 500 and b.max() == pytest.approx(0.9) and b[0] == pytest.approx(0.1, abs=1e-4)
    s = cond.staircase([0, 0.5, 1], 9)
    np.testing.assert_allclose(s, [0, 0, 0, 0.5, 0.5, 0.5, 1, 1, 1])
    n = cond.note_sequence([56, 66, 76], 56, 76, 6)
    np.testing.assert_allclose(n, [0, 0, 0.5, 0.5, 1, 1])
    with pytest.raises(InvalidArgument, match="outside"):
        cond.note_sequence([50], 56, 76)
    np.testing.assert_allclose(cond.steps(11, 11), np.linspace(0, 1, 11), atol=1e-6)
    np.testing.assert_allclose(cond.parse_column("notes:56,76@56-76", 4), [0, 0, 1, 1])
    np.testing.assert_allclose(cond.parse_column("glide:0,1,0", 3), [0, 1, 0])
    with pytest.raises(InvalidArgument, match="column spec"):
        cond.parse_column("wobble:1")


def test_constant_batch_grid():
    b = cond.constant_batch([[0.0, 1.0], [0.0, 0.5, 1.0]])
    assert b.shape == (6, 2, 2)
    np.testing.assert_allclose(b[:, 0], [[0, 0], [0, 0.5], [0, 1], [1, 0], [1, 0.5], [1, 1]])
    np.testing.assert_allclose(b[:, 0], b[:, 1])


def test_path_array_from_auditioner_cells():
    a = cond.path_array([[0, 0], [10, 20], [20, 0]], 3.0, d0=21, d1=21)
    assert a.shape == (3000, 2)
    np.testing.assert_allclose(a[0], [0, 0])
    np.testing.assert_allclose(a[1500], [0.5, 1.0])
    np.testing.assert_allclose(a[-1], [1.0, 0.0])
    g = cond.path_array([[0.0, 0.0], [1.0, 1.0]], 1.0, points_per_second=11, glide_cells=True)
    np.testing.assert_allclose(g[:, 0], np.linspace(0, 1, 11), atol=1e-6)
    with pytest.raises(InvalidArgument, match="cells"):
        cond.path_array([[3, 0]], 1.0)


def test_check_array_names_expected_params():
    names = ["normPitch", "instID"]
    assert cond.check_array(np.zeros((10, 2)), names).shape == (1, 10, 2)
    with pytest.raises(InvalidArgument, match=r"3 columns.*normPitch.*instID") as e:
        cond.check_array(np.zeros((1, 10, 3)), names)
    assert e.value.field == "conditioning"
    with pytest.raises(InvalidArgument, match="NaN.*normPitch"):
        cond.check_array(np.full((4, 2), np.nan), names)
    with pytest.raises(InvalidArgument, match=r"\[0, 1\].*instID"):
        cond.check_array(np.array([[0.5, 1.5]]), names)
    with pytest.raises(InvalidArgument, match="shape"):
        cond.check_array(np.zeros(5), names)


def test_save_load_roundtrip(tmp_path):
    a = cond.columns(cond.ramp(0, 1))
    cond.save_array(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(cond.load_array(tmp_path / "a.npy"), a)
    np.testing.assert_array_equal(cond.load_array(cond.array_bytes(a)), a)
    with pytest.raises(InvalidArgument):
        cond.load_array(b"not an array")


def test_cli_conditioning_make(tmp_path):
    import argparse
    import json

    from smf.rnn import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())

    def run(*argv):
        args = parser.parse_args(list(argv))
        return args.func(args)

    run(
        "conditioning",
        "make",
        str(tmp_path / "g.npy"),
        "--col",
        "glide:0.2,0.8,0.2",
        "--col",
        "const:0.5",
        "--params-names",
        "normPitch",
        "instID",
    )
    assert np.load(tmp_path / "g.npy").shape == (1000, 2)
    run("conditioning", "make", str(tmp_path / "grid.npy"), "--grid", "0,0.5,1", "--grid", "0,1")
    assert np.load(tmp_path / "grid.npy").shape == (6, 2, 2)
    (tmp_path / "path.json").write_text(json.dumps({"cells": [[0, 0], [20, 10]], "duration": 2, "d0": 21, "d1": 21}))
    run("conditioning", "make", str(tmp_path / "p.npy"), "--path", str(tmp_path / "path.json"))
    p = np.load(tmp_path / "p.npy")
    assert p.shape == (2000, 2) and p[-1].tolist() == [1.0, 0.5]
    with pytest.raises(InvalidArgument, match=r"2 columns.*\['normPitch'\]"):
        run(
            "conditioning",
            "make",
            str(tmp_path / "x.npy"),
            "--col",
            "const:0.1",
            "--col",
            "const:0.2",
            "--params-names",
            "normPitch",
        )
