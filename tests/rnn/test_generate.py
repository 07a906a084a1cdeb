"""Fast generation: shapes, stretching, seeds, backends, temperature, live streaming (tiny models, CPU)."""

import numpy as np
import pytest
import torch
from smf.common.errors import InvalidArgument
from smf.rnn import conditioning
from smf.rnn.fastgen import cpp
from smf.rnn.fastgen.cpp import CppEngine
from smf.rnn.fastgen.quant import int8_forward, teacher_forced_logits
from smf.rnn.fastgen.rng import uniforms
from smf.rnn.generate import Generator, generate, silence_class
from smf.rnn.model import AudioTier, RNNConfig, audio_input, mulaw_encode

SR = 16000
HAS_KERNEL = cpp.load_kernel() is not None
BACKENDS = ["torch"] + (["cpp"] if HAS_KERNEL else [])


def tiny(hidden=16, layers=2, params=("a", "b"), seed=0, preemphasis=0.0):
    torch.manual_seed(seed)
    config = RNNConfig(param_names=list(params), hidden=hidden, layers=layers, preemphasis=preemphasis)
    model = AudioTier(config).eval()
    with torch.no_grad():  # larger output weights: peaked distributions, so sampling errors would show
        model.out.weight.mul_(8)
    return model


def teacher_inputs(model, classes, cond):
    """The model input [B, T, 1 + C] when the generated classes are fed back."""
    B = classes.shape[0]
    first = torch.full((B, 1), silence_class(model.config.classes), dtype=torch.int64)
    prev = torch.cat([first, classes[:, :-1]], 1)
    return torch.cat([audio_input(prev, model.config.classes)[..., None], cond], -1)


def teacher_logits(model, classes, cond, precision="fp32"):
    """Logits the model gives when the generated classes are fed back, as the kernel's `precision` computes them
    (fp32: the fused nn.GRU itself): [B, T, Q]."""
    return teacher_forced_logits(model, teacher_inputs(model, classes, cond), precision)


def assert_consistent_samples(model, classes, cond, seed, temperature, tol=2e-4, precision="fp32"):
    """Every generated class must be the inverse-CDF pick of softmax(logits/temp) at its uniform (up to ties)."""
    logits = teacher_logits(model, classes, cond, precision)
    cdf = torch.softmax(logits / temperature, -1).cumsum(-1)
    u = uniforms(seed, classes.shape[0], 0, classes.shape[1], torch.device("cpu"))
    target = (u * cdf[..., -1])[..., None]
    c = classes[..., None]
    hi = cdf.gather(-1, c)
    lo = torch.where(c > 0, cdf.gather(-1, (c - 1).clamp(min=0)), torch.zeros_like(hi))
    assert bool(((lo <= target + tol) & (target <= hi + tol)).all())


def per_sample(model, arr, duration):
    return torch.from_numpy(conditioning.stretch(arr, duration, model.config.sample_rate))


@pytest.mark.parametrize("backend", BACKENDS)
def test_shapes_for_2d_and_3d_arrays(backend):
    gen = Generator(tiny(), backend=backend)
    out = gen.generate(np.full((5, 2), 0.3), 0.01, seed=1)
    assert out.shape == (1, 160) and out.dtype == np.float32
    out = gen.generate(np.random.rand(3, 4, 2), 0.0123, seed=1)
    assert out.shape == (3, round(0.0123 * SR))
    assert np.all(np.abs(out) <= 1)
    assert gen.generate(np.full((1, 4, 2), 0.5), 0.01, seed=1, voices=2).shape == (2, 160)
    assert gen.generate(np.full((10, 2), 0.5), None, seed=1).shape == (1, 160)  # 10 points at 1000/s


@pytest.mark.parametrize("duration,expected", [(3, 48000), (7, 112000), (10.5, 168000)])
def test_stretching_uses_float_rate(duration, expected):
    gen = Generator(tiny(), backend="torch")
    arr = conditioning.columns(conditioning.ramp(0.0, 1.0), conditioning.constant(0.25))
    cond = gen.prepare(arr, duration, None)
    assert cond.shape == (1, expected, 2)
    np.testing.assert_array_equal(cond, conditioning.stretch(arr, duration, SR))
    assert cond[0, 0, 0] == 0.0 and cond[0, -1, 0] == pytest.approx(1.0)


def test_bad_inputs_name_the_field():
    gen = Generator(tiny(), backend="torch")
    with pytest.raises(InvalidArgument, match="'a', 'b'"):
        gen.generate(np.zeros((10, 3)), 0.01)
    with pytest.raises(InvalidArgument, match="voices"):
        gen.generate(np.zeros((2, 10, 2)), 0.01, voices=3)
    with pytest.raises(InvalidArgument, match="duration"):
        gen.generate(np.zeros((10, 2)), -1.0)
    with pytest.raises(InvalidArgument, match="backend"):
        Generator(tiny(), backend="fast")


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_determinism(backend):
    gen = Generator(tiny(), backend=backend)
    arr = np.random.default_rng(0).random((2, 6, 2))
    a = gen.generate(arr, 0.02, seed=7)
    np.testing.assert_array_equal(a, gen.generate(arr, 0.02, seed=7))
    assert not np.array_equal(a, gen.generate(arr, 0.02, seed=8))
    assert not np.array_equal(a[0], a[1])  # voices draw different uniforms


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_samples_follow_the_model(backend, temperature):
    """The step loops implement AudioTier exactly: each class is the pick the fused model's own logits give."""
    model = tiny(hidden=32, layers=2)
    arr = np.random.default_rng(1).random((2, 5, 2))
    gen = Generator(model, backend=backend)
    out = gen.generate(arr, 0.03, seed=3, temperature=temperature)
    classes = mulaw_encode(torch.from_numpy(out))
    assert_consistent_samples(model, classes, per_sample(model, arr, 0.03), 3, temperature)


@pytest.mark.skipif(not HAS_KERNEL, reason="no C++ compiler")
def test_backends_agree():
    model = tiny(hidden=32, layers=2)
    arr = np.random.default_rng(2).random((3, 8, 2))
    a = Generator(model, backend="torch").generate(arr, 0.025, seed=11)
    b = Generator(model, backend="cpp").generate(arr, 0.025, seed=11)
    # same RNG path and maths; only the summation order differs, which flips a sample only at a near-tie
    # (|dlogit| ~1e-6): sample-identical over this run, and at least far past the start in any case
    first = [int(np.argmax(a[i] != b[i])) if not np.array_equal(a[i], b[i]) else a.shape[1] for i in range(3)]
    assert min(first) >= 300, first


@pytest.mark.skipif(not HAS_KERNEL, reason="no C++ compiler")
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_quantised_kernels_follow_their_rounded_weights(precision):
    """bf16: the model with rounded weights; int8: also activations rounded per step (quant.int8_forward)."""
    model = tiny(hidden=40, layers=2)  # 40 units: padded unit blocks and K padded for VNNI
    arr = np.random.default_rng(4).random((2, 5, 2))
    gen = Generator(model, backend="cpp", precision=precision)
    out = gen.generate(arr, 0.04, seed=5)
    classes = mulaw_encode(torch.from_numpy(out))
    assert_consistent_samples(model, classes, per_sample(model, arr, 0.04), 5, 1.0, precision=precision)


@pytest.mark.skipif(not HAS_KERNEL, reason="no C++ compiler")
@pytest.mark.parametrize("hidden,layers,voices", [(40, 2, 1), (48, 3, 5)])
def test_int8_isas_and_split_agree(hidden, layers, voices):
    """The VNNI path (when the CPU has it), the portable path and a split voice give identical int8 samples."""
    model = tiny(hidden=hidden, layers=layers)
    arr = np.random.default_rng(8).random((voices, 5, 2))
    gen = Generator(model, backend="cpp", precision="int8", threads=1)
    best = gen.engine.isa
    ref = gen.generate(arr, 0.02, seed=9)
    gen.engine = CppEngine(model, precision="int8", threads=1, isa="portable")
    np.testing.assert_array_equal(gen.generate(arr, 0.02, seed=9), ref)
    gen.engine = CppEngine(model, precision="int8", threads=2, split=True, isa=best)
    np.testing.assert_array_equal(gen.generate(arr, 0.02, seed=9), ref)
    with pytest.raises(ValueError, match="isa"):
        CppEngine(model, precision="int8", isa="sse9")


def test_int8_emulation_stays_close_to_fp32():
    """Activation rounding (8 bits per vector) moves the logits of an untrained model only a little."""
    model = tiny(hidden=64, layers=2)
    x = torch.cat([torch.rand(2, 50, 1) * 2 - 1, torch.rand(2, 50, 2)], -1)
    with torch.no_grad():
        ref = model(x)[0]
    err = (int8_forward(model, x) - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.05, float(err)


@pytest.mark.parametrize("backend", BACKENDS)
def test_low_temperature_is_argmax(backend):
    model = tiny()
    gen = Generator(model, backend=backend)
    arr = np.random.default_rng(3).random((2, 4, 2))
    greedy = gen.generate(arr, 0.01, temperature=0.0, seed=1)
    np.testing.assert_array_equal(gen.generate(arr, 0.01, temperature=1e-4, seed=99), greedy)
    classes = mulaw_encode(torch.from_numpy(greedy))
    logits = teacher_logits(model, classes, per_sample(model, arr, 0.01))
    picked = logits.gather(-1, classes[..., None])[..., 0]
    assert bool((picked >= logits.amax(-1) - 1e-4).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_chunks_equal_one_shot(backend):
    gen = Generator(tiny(), backend=backend)
    arr = np.random.default_rng(5).random((2, 6, 2))
    full = gen.generate(arr, 0.02, seed=4)
    cond = gen.prepare(arr, 0.02, None)
    live = gen.stream(voices=2, seed=4)
    parts = [live.next(cond[:, i : i + 57]) for i in range(0, cond.shape[1], 57)]
    np.testing.assert_array_equal(np.concatenate(parts, 1), full)


@pytest.mark.parametrize("backend", BACKENDS)
def test_preemphasis_model_is_deemphasised_in_one_shot_and_in_chunks(backend):
    from smf.rnn.model import deemphasis, mulaw_decode

    plain, emph = Generator(tiny(), backend=backend), Generator(tiny(preemphasis=0.9), backend=backend)
    arr = np.random.default_rng(5).random((2, 6, 2))
    raw, full = plain.generate(arr, 0.02, seed=4), emph.generate(arr, 0.02, seed=4)
    # same weights, same draws: the classes are the same, the audio is their de-emphasised decoding
    expected = deemphasis(mulaw_decode(mulaw_encode(torch.from_numpy(raw))).double(), 0.9).numpy()
    np.testing.assert_allclose(full, expected, rtol=0, atol=1e-5)
    cond = emph.prepare(arr, 0.02, None)
    live = emph.stream(voices=2, seed=4)
    parts = [live.next(cond[:, i : i + 57]) for i in range(0, cond.shape[1], 57)]
    np.testing.assert_allclose(np.concatenate(parts, 1), full, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_knob_changes(backend):
    gen = Generator(tiny(), backend=backend)
    live = gen.stream(voices=2, seed=1, chunk=64, values=[0.0, 0.0])
    still = gen.stream(voices=2, seed=1, chunk=64, values=[0.0, 0.0])
    a0, b0 = live.next_chunk(), still.next_chunk()
    np.testing.assert_array_equal(a0, b0)
    live.set_params([[1.0, 0.0], [0.0, 1.0]])
    a1, b1 = live.next_chunk(), still.next_chunk()
    assert a1.shape == (2, 64) and a1.dtype == np.float32
    assert not np.array_equal(a1, b1)  # the change is heard in this very chunk (it glides in)
    np.testing.assert_array_equal(live.values, [[1.0, 0.0], [0.0, 1.0]])
    assert live.t == 128
    with pytest.raises(InvalidArgument, match="values"):
        live.set_params([0.5, 1.5])
    with pytest.raises(InvalidArgument, match="values"):
        live.set_params([0.5, 0.5, 0.5])


def test_missing_compiler_falls_back_to_torch(monkeypatch, tmp_path):
    monkeypatch.setattr(cpp, "_tried", False)
    monkeypatch.setattr(cpp, "_kernel", None)
    monkeypatch.setenv("SMF_CACHE_DIR", str(tmp_path))  # empty cache: it must try to build
    monkeypatch.setenv("CXX", "/bin/false")
    with pytest.warns(RuntimeWarning, match="pure-torch"):
        gen = Generator(tiny(), backend="auto")
    assert gen.backend == "torch"
    assert gen.generate(np.full((2, 2), 0.5), 0.005, seed=0).shape == (1, 80)
    with pytest.raises(RuntimeError, match="unavailable"):
        Generator(tiny(), backend="cpp")


def test_convenience_function_and_silence_start():
    model = tiny()
    out = generate(model, np.full((3, 2), 0.5), 0.005, seed=2, backend="torch")
    assert out.shape == (1, 80)
    assert silence_class(256) == int(mulaw_encode(torch.zeros(1))[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_semantics():
    model = tiny(hidden=32).cuda()
    arr = np.random.default_rng(6).random((2, 5, 2))
    out = Generator(model, backend="torch").generate(arr, 0.02, seed=3)
    classes = mulaw_encode(torch.from_numpy(out))
    assert_consistent_samples(model.cpu(), classes, per_sample(model, arr, 0.02), 3, 1.0)


@pytest.mark.skipif(not HAS_KERNEL, reason="no C++ compiler")
def test_split_voice_across_threads_matches_single_thread():
    """One voice shared by two threads (row split + barriers) computes exactly what one thread computes."""
    model = tiny(hidden=40, layers=2)  # 40 units: 3 blocks of 16, split unevenly
    arr = np.random.default_rng(7).random((1, 5, 2))
    one = Generator(model, backend="cpp", threads=1).generate(arr, 0.01, seed=3)
    two = Generator(model, backend="cpp", threads=2, split=True).generate(arr, 0.01, seed=3)
    np.testing.assert_array_equal(one, two)
    classes = mulaw_encode(torch.from_numpy(two))
    assert_consistent_samples(model, classes, per_sample(model, arr, 0.01), 3, 1.0)
