"""TorchScript export: same samples as the generator for the same seed; loads without smf installed."""

import io
import json
import subprocess
import sys

import numpy as np
import torch
from smf.rnn.export import export, export_bytes, load_exported
from smf.rnn.generate import Generator
from smf.rnn.model import AudioTier, RNNConfig


def tiny():
    torch.manual_seed(0)
    return AudioTier(RNNConfig(param_names=["dim0", "dim1"], hidden=16, layers=2)).eval()


def test_export_equals_generator_for_same_seed():
    model = tiny()
    arr = np.random.default_rng(0).random((2, 7, 2)).astype(np.float32)
    expected = Generator(model, backend="torch").generate(arr, 0.0213, seed=123, temperature=0.9)
    m = load_exported(export_bytes(model))
    got = m.generate(torch.from_numpy(arr), 0.0213, 123, 0.9)
    np.testing.assert_array_equal(got.numpy(), expected)
    # [N, C] arrays and the per-sample forward give the same
    one = Generator(model, backend="torch").generate(arr[0], 0.01, seed=5)
    np.testing.assert_array_equal(m.generate(torch.from_numpy(arr[0]), 0.01, 5).numpy(), one)
    cond = m.stretch(torch.from_numpy(arr[:1]), 0.01)
    np.testing.assert_array_equal(m(cond, 5).numpy(), one)


def test_export_of_a_preemphasis_model_deemphasises_like_the_generator():
    torch.manual_seed(0)
    model = AudioTier(RNNConfig(param_names=["dim0", "dim1"], hidden=16, layers=1, preemphasis=0.9)).eval()
    arr = np.random.default_rng(1).random((2, 7, 2)).astype(np.float32)
    expected = Generator(model, backend="torch").generate(arr, 0.02, seed=3)
    m = load_exported(export_bytes(model))
    np.testing.assert_array_equal(m.generate(torch.from_numpy(arr), 0.02, 3).numpy(), expected)
    cond = m.stretch(torch.from_numpy(arr), 0.02)
    m.reset(2, 3)
    parts = [m.step(cond[:, i : i + 100]) for i in range(0, cond.shape[1], 100)]
    np.testing.assert_allclose(torch.cat(parts, 1).numpy(), expected, rtol=0, atol=1e-6)


def test_stateful_step_continues_like_one_call():
    m = export(tiny())
    cond = torch.rand(2, 300, 2)
    whole = m(cond, 9)
    m.reset(2, 9)
    parts = [m.step(cond[:, i : i + 100]) for i in range(0, 300, 100)]
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=0, atol=0)


def test_saved_file_runs_in_plain_torch(tmp_path):
    model = tiny()
    path = tmp_path / "model.ts"
    export(model, path)
    assert not list(tmp_path.glob("*.tmp-*"))
    extra = {"config.json": ""}
    torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["config.json"])["param_names"] == ["dim0", "dim1"]
    arr = np.full((1, 3, 2), 0.5, dtype=np.float32)
    np.save(tmp_path / "arr.npy", arr)
    expected = Generator(model, backend="torch").generate(arr, 0.005, seed=1)
    code = (  # smf made unimportable: the archive must not need it
        "import sys; sys.modules['smf'] = None\n"
        "import numpy as np, torch\n"
        f"m = torch.jit.load({str(path)!r})\n"
        f"a = m.generate(torch.from_numpy(np.load({str(tmp_path / 'arr.npy')!r})), 0.005, 1)\n"
        "print(m.param_names, m.sample_rate)\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, a.numpy())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "['dim0', 'dim1'] 16000" in proc.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_export_to_file_object():
    buf = io.BytesIO()
    export(tiny(), buf)
    assert buf.getvalue()[:2] == b"PK"  # a TorchScript zip archive
