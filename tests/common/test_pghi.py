"""PGHI phase reconstruction: quality against torchaudio Griffin-Lim, batching, shapes, devices."""

import sys
from pathlib import Path

import pytest
import torch
from smf.common import pghi
from smf.common.audio import griffin_lim_torchaudio
from smf.common.errors import InvalidArgument

# The test sounds are the benchmark's (bench/pghi.py), so the quality asserted here is the quality it reports.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from pghi import HOP, N_FFT, N_FRAMES
from pghi import signals as _signals


@pytest.fixture(scope="module")
def batch():
    sig = _signals()
    x = torch.stack(list(sig.values()))
    return list(sig), x, pghi.stft(x, n_fft=N_FFT, hop=HOP).abs()


def _sc_db(mag, audio):
    return 20 * torch.log10(pghi.spectral_convergence(mag, audio, n_fft=N_FFT, hop=HOP))


def test_stft_istft_perfect_reconstruction(batch):
    _, x, _ = batch
    spec = pghi.stft(x, n_fft=N_FFT, hop=HOP)
    assert spec.shape == (x.shape[0], N_FFT // 2 + 1, N_FRAMES)
    assert torch.allclose(pghi.istft(spec, n_fft=N_FFT, hop=HOP), x, atol=1e-5)


def test_true_phase_has_zero_spectral_convergence(batch):
    _, x, mag = batch
    assert pghi.spectral_convergence(mag, x, n_fft=N_FFT, hop=HOP).max() < 1e-5


def test_pghi_beats_griffin_lim_32(batch):
    torch.manual_seed(0)  # torchaudio's Griffin-Lim starts from a random phase
    names, _, mag = batch
    ours = _sc_db(mag, pghi.reconstruct(mag, n_fft=N_FFT, hop=HOP))
    gl = _sc_db(mag, griffin_lim_torchaudio(mag, n_fft=N_FFT, hop=HOP, n_iter=32))
    report = ", ".join(
        f"{n}: {o:.1f} vs {g:.1f} dB" for n, o, g in zip(names, ours.tolist(), gl.tolist(), strict=False)
    )
    assert ours.mean() < gl.mean() - 1.0, report
    assert (ours < gl).sum() > len(names) / 2, report
    assert ours.max() < -15.0, report  # no signal falls apart


def test_plain_pghi_on_tonal_sounds(batch):
    """Without Griffin-Lim refinement, PGHI alone reconstructs steady partials well (where it is strongest)."""
    names, _, mag = batch
    sc = _sc_db(mag, pghi.reconstruct(mag, n_fft=N_FFT, hop=HOP, refine_iters=0))
    by_name = dict(zip(names, sc.tolist(), strict=False))
    for name in ("note_a3", "note_e5", "tone"):
        assert by_name[name] < -25.0, by_name
    assert all(v < -10.0 for v in by_name.values()), by_name


def test_batched_equals_one_by_one(batch):
    _, _, mag = batch
    together = pghi.reconstruct(mag, n_fft=N_FFT, hop=HOP)
    for i in range(mag.shape[0]):
        alone = pghi.reconstruct(mag[i : i + 1], n_fft=N_FFT, hop=HOP)
        assert torch.allclose(together[i], alone[0], atol=1e-4)
    assert torch.allclose(pghi.reconstruct(mag[0], n_fft=N_FFT, hop=HOP), together[0], atol=1e-4)


def test_other_sizes_and_silence():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64 * 16, generator=g) * torch.hann_window(64 * 16)
    mag = pghi.stft(x, n_fft=64, hop=16).abs()  # redundancy 4
    y = pghi.reconstruct(mag, n_fft=64, hop=16)
    assert y.shape == x.shape and torch.isfinite(y).all()
    silent = pghi.reconstruct(torch.zeros(1, 33, 8), n_fft=64, hop=16)
    assert silent.shape == (1, 128) and torch.count_nonzero(silent) == 0


def test_bad_arguments_are_named():
    with pytest.raises(InvalidArgument, match="magnitude"):
        pghi.reconstruct(torch.ones(1, 100, 8), n_fft=512, hop=256)
    with pytest.raises(InvalidArgument, match="hop"):
        pghi.reconstruct(torch.ones(1, 257, 8), n_fft=512, hop=0)
    with pytest.raises(InvalidArgument, match="audio"):
        pghi.stft(torch.ones(1, 1000), n_fft=512, hop=256)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(batch):
    _, _, mag = batch
    cpu = pghi.reconstruct(mag, n_fft=N_FFT, hop=HOP)
    gpu = pghi.reconstruct(mag.cuda(), n_fft=N_FFT, hop=HOP)
    assert gpu.device.type == "cuda"
    sc_cpu, sc_gpu = _sc_db(mag, cpu), _sc_db(mag, gpu.cpu())
    assert torch.allclose(sc_cpu, sc_gpu, atol=0.5), (sc_cpu, sc_gpu)


def test_block_integration_matches_frame_by_frame_recursion():
    """_integrate's blocked scan equals phase_n[m] = phase_{n-1}[src_n[m]] + add_n[m] (src == F reads 0)."""
    g = torch.Generator().manual_seed(3)
    for n in (1, 2, 3, 7, 8, 9, 50, 128):
        f = 5
        add = torch.randn(2, n, f, generator=g, dtype=torch.float64)
        src = torch.randint(0, f + 1, (2, n, f), generator=g)
        want = torch.zeros(2, n, f, dtype=torch.float64)
        want[:, 0] = add[:, 0]
        for i in range(1, n):
            prev = torch.cat([want[:, i - 1], torch.zeros(2, 1, dtype=torch.float64)], 1)
            want[:, i] = prev.gather(1, src[:, i]) + add[:, i]
        assert torch.allclose(pghi._integrate(add, src), want, atol=1e-9), n


def test_anchors_are_the_peaks_reached_by_climbing():
    """Each bin anchors to the peak of its region: climb right while rising, else left while not falling."""
    g = torch.Generator().manual_seed(4)
    s = torch.randint(0, 4, (3, 4, 11), generator=g).float()  # small integers: plenty of plateaus
    got = pghi._anchors(s)
    for idx in torch.cartesian_prod(*(torch.arange(d) for d in s.shape[:2])).tolist():
        row = s[idx[0], idx[1]].tolist()
        for m in range(len(row)):
            a = m
            if a + 1 < len(row) and row[a + 1] > row[a]:
                while a + 1 < len(row) and row[a + 1] > row[a]:
                    a += 1
            else:
                while a > 0 and not row[a] > row[a - 1] and not (a + 1 < len(row) and row[a + 1] > row[a]):
                    a -= 1
            assert got[idx[0], idx[1], m] == a, (row, m)


@pytest.mark.parametrize("n_fft, hop, n_frames", [(64, 16, 8), (64, 24, 10), (64, 48, 6), (64, 32, 1), (512, 128, 4)])
def test_stft_paths_match_the_circular_definition(n_fft, hop, n_frames):
    """The sliced/unfolded STFT and the shifted-block overlap-add equal the plain circular definition (frame n is
    samples n*hop - n_fft/2 ... wrapped around, times the Hann window), including windows longer than the clip."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, n_frames * hop, generator=g, dtype=torch.float64)
    idx = (torch.arange(n_frames)[:, None] * hop - n_fft // 2 + torch.arange(n_fft)[None]) % x.shape[1]
    want = torch.fft.rfft(x[:, idx] * torch.hann_window(n_fft, dtype=torch.float64), dim=-1).transpose(1, 2)
    spec = pghi.stft(x, n_fft=n_fft, hop=hop)
    assert torch.allclose(spec, want, atol=1e-9)
    assert torch.allclose(pghi.istft(spec, n_fft=n_fft, hop=hop), x, atol=1e-9)
