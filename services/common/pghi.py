"""Phase reconstruction from STFT magnitude: Phase Gradient Heap Integration (PGHI), batched in torch.

PGHI (Prusa, Balazs & Sondergaard 2017, "A noniterative method for reconstruction of phase from STFT magnitude")
estimates the phase gradient of an STFT from the gradient of its log-magnitude (exact for a Gaussian window) and
integrates it, starting from the loudest coefficients. This module turns a magnitude spectrogram [B, F, N] into
audio [B, N * hop] on CPU or CUDA:

    audio = reconstruct(magnitude, n_fft=512, hop=256)          # magnitude from stft(...).abs()
    sc = spectral_convergence(magnitude, audio, n_fft=512, hop=256)

Conventions shared with `smf.common.audio.SpectrogramTransform`:
- The STFT is *circular* (like ltfat's dgtreal, which the original SMF transform used through tifresi): a clip of
  T = N * hop samples has exactly N frames, frame n is centred on sample n * hop and wraps around the clip ends. That
  gives the [F, n_frames] shape of the original configs and a reconstruction that is well conditioned everywhere.
- Window: periodic Hann of length n_fft. PGHI needs the window's time-frequency ratio lambda; for Hann we use the
  ltfat/tifresi value lambda = 0.25645 * n_fft**2 (the Gaussian that best matches a Hann window of that length).
- Phase is referenced to the start of each frame (torch.stft's convention), which adds pi per bin to the
  frequency-direction phase step of the window-centred formulas.

The integration is the frame-by-frame variant of PGHI (Prusa &
Holighaus 2017, "Toward high-quality real-time signal reconstruction from STFT magnitude"), vectorised over the
batch and all bins. Within a frame, the heap of the original spreads phase across frequency from each spectral peak
and takes a peak's phase from the previous frame. We reproduce that without a heap:
1. split every frame into peak regions (bins between two spectral valleys), all frames at once;
2. a region is "fed" from the previous frame (time-direction step) at its loudest bin of the previous frame if
   that bin is significant and louder than the region's higher valley, i.e. the heap would pop it before the
   flood of the current frame reaches the region; an unfed region (an onset, a new partial) is merged into its
   neighbour across its higher valley, which is where the flood reaches it from;
3. inside a merged region, phase = anchor phase + frequency-direction integral (cumulative trapezoid sum) from the
   anchor (the loudest fed entry bin, else the loudest bin, whose phase then starts at 0).
Steps 1-3 depend only on the magnitude, so they run on the whole [B, F, N] tensor at once; the only sequential part
is a gather + add per frame (N steps), which keeps CPU and GPU fast. Bins below `tol` * max get phase from the same
rule; they are inaudible and do not matter.

Griffin-Lim (`griffin_lim`) on the same circular STFT is the fallback and an optional refinement started from the
PGHI phase (`reconstruct(..., refine_iters=k)`, 2 steps by default: at the SMF redundancy of 2 they lift noise
and clicks, where PGHI alone trails Griffin-Lim).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from smf.common.errors import InvalidArgument

DEFAULT_REFINE = 2  # fast Griffin-Lim steps after PGHI, see reconstruct()
HANN_GAMMA = 0.25645  # lambda / win_len**2 for a Hann window (ltfat pghi.m, tifresi)


def check_stft_args(n_fft: int, hop: int) -> None:
    if not isinstance(n_fft, int) or n_fft < 4 or n_fft % 2:
        raise InvalidArgument("n_fft", f"must be an even integer >= 4, got {n_fft!r}")
    if not isinstance(hop, int) or not 1 <= hop <= n_fft:
        raise InvalidArgument("hop", f"must be an integer in [1, n_fft={n_fft}], got {hop!r}")


@lru_cache(maxsize=32)
def _frame_index(n_frames: int, n_fft: int, hop: int, device: str) -> torch.Tensor:
    """[N, n_fft] sample index of every frame position in the circular STFT (frame n centred on n * hop)."""
    t = n_frames * hop
    idx = torch.arange(n_frames).unsqueeze(1) * hop - n_fft // 2 + torch.arange(n_fft).unsqueeze(0)
    return (idx % t).to(device)


@lru_cache(maxsize=32)
def _windows(n_frames: int, n_fft: int, hop: int, device: str, dtype: torch.dtype):
    """Analysis window and its canonical dual (synthesis) window for the circular frame layout."""
    win = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    idx = _frame_index(n_frames, n_fft, hop, "cpu")
    envelope = torch.zeros(n_frames * hop, dtype=torch.float64)
    envelope.index_add_(0, idx.flatten(), (win**2).repeat(n_frames))
    if envelope.min() < 1e-6:
        raise InvalidArgument("hop", f"hop {hop} leaves gaps between Hann windows of length {n_fft}")
    # The dual differs per frame only through the envelope; keep it as [N, n_fft].
    dual = win.unsqueeze(0) / envelope[idx]
    return win.to(device, dtype), dual.to(device, dtype)


def _as_batch(x: torch.Tensor, dims: int, name: str) -> tuple[torch.Tensor, bool]:
    if not isinstance(x, torch.Tensor):
        raise InvalidArgument(name, f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == dims - 1:
        return x.unsqueeze(0), True
    if x.dim() != dims:
        raise InvalidArgument(name, f"expected {dims - 1} or {dims} dimensions, got shape {tuple(x.shape)}")
    return x, False


def stft(audio: torch.Tensor, *, n_fft: int, hop: int) -> torch.Tensor:
    """Circular STFT: audio [B, T] (T a multiple of hop) -> complex [B, n_fft//2+1, T//hop]."""
    check_stft_args(n_fft, hop)
    x, single = _as_batch(audio, 2, "audio")
    if x.shape[-1] % hop or x.shape[-1] == 0:
        raise InvalidArgument("audio", f"length {x.shape[-1]} is not a positive multiple of hop {hop}")
    if not x.is_floating_point():
        x = x.float()
    n_frames = x.shape[-1] // hop
    win, _ = _windows(n_frames, n_fft, hop, str(x.device), x.dtype)
    frames = x[:, _frame_index(n_frames, n_fft, hop, str(x.device))] * win  # [B, N, n_fft]
    spec = torch.fft.rfft(frames, dim=-1).transpose(1, 2)
    return spec[0] if single else spec


def istft(spec: torch.Tensor, *, n_fft: int, hop: int) -> torch.Tensor:
    """Inverse of `stft` (canonical dual window, circular overlap-add): complex [B, F, N] -> [B, N * hop]."""
    check_stft_args(n_fft, hop)
    s, single = _as_batch(spec, 3, "spec")
    if s.shape[1] != n_fft // 2 + 1:
        raise InvalidArgument("spec", f"expected {n_fft // 2 + 1} frequency bins for n_fft={n_fft}, got {s.shape[1]}")
    b, _, n_frames = s.shape
    real_dtype = s.real.dtype
    _, dual = _windows(n_frames, n_fft, hop, str(s.device), real_dtype)
    frames = torch.fft.irfft(s.transpose(1, 2), n=n_fft, dim=-1) * dual  # [B, N, n_fft]
    out = torch.zeros(b, n_frames * hop, dtype=real_dtype, device=s.device)
    out.index_add_(1, _frame_index(n_frames, n_fft, hop, str(s.device)).flatten(), frames.reshape(b, -1))
    return out[0] if single else out


def spectral_convergence(magnitude: torch.Tensor, audio: torch.Tensor, *, n_fft: int, hop: int) -> torch.Tensor:
    """||S - |STFT(audio)|||_F / ||S||_F per clip (linear magnitude; lower is better; 0 = consistent).

    magnitude [B, F, N] is the target S, audio [B, N * hop] the reconstruction. Returns [B] (or a scalar for
    unbatched input). In dB: 20 * log10(sc).
    """
    mag, single = _as_batch(magnitude, 3, "magnitude")
    x, _ = _as_batch(audio, 2, "audio")
    rec = stft(x.to(mag.dtype), n_fft=n_fft, hop=hop).abs()
    if rec.shape != mag.shape:
        raise InvalidArgument("audio", f"its STFT has shape {tuple(rec.shape)}, magnitude has {tuple(mag.shape)}")
    sc = torch.linalg.vector_norm(mag - rec, dim=(1, 2)) / torch.linalg.vector_norm(mag, dim=(1, 2)).clamp_min(1e-20)
    return sc[0] if single else sc


def phase_gradients(log_mag: torch.Tensor, *, n_fft: int, hop: int, gamma: float):
    """Phase steps estimated from log-magnitude (Gaussian-window relations, frame-start phase convention).

    log_mag is frame-major [B, N, F] (natural log). Returns (time_step, freq_step), both [B, N, F]: the phase advance
    from frame n to n+1 at a bin (radians per hop) and from bin m to m+1 within a frame (radians per bin), each
    evaluated at the coefficient itself. With s = log|V|, window-centred phase and lambda = gamma (samples^2):
        dphi/dt = 2*pi*m/M + (M/lambda) * ds/dm      (per sample)   -> time_step = hop * that
        dphi/dm = -(lambda/(M*hop)) * ds/dn                          -> + pi for frame-start phase
    """
    s = log_mag
    # d/dm: central differences, one-sided at DC and Nyquist (as in ltfat/pghipy).
    ds_dm = torch.cat([s[..., 1:2] - s[..., :1], (s[..., 2:] - s[..., :-2]) / 2, s[..., -1:] - s[..., -2:-1]], -1)
    # d/dn: central differences, circular like the STFT itself.
    ds_dn = (torch.roll(s, -1, dims=1) - torch.roll(s, 1, dims=1)) / 2
    m = torch.arange(s.shape[-1], device=s.device, dtype=s.dtype)
    time_step = torch.add(m * (2 * math.pi * hop / n_fft), ds_dm, alpha=hop * n_fft / gamma)
    freq_step = ds_dn * (-gamma / (n_fft * hop)) + math.pi
    return time_step, freq_step


def _segment_argmax(key: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """Index of the largest `key` within each bin's contiguous segment; rows [R, F], key in [0, 4), segment sorted.

    A segmented scan without scatter: offsetting keys by 4 * segment id makes a running max restart at each
    segment boundary, so one forward and one backward cummax cover [start, m] and [m, end].
    """
    f = key.shape[-1]
    off = 4.0 * segment.to(key.dtype)
    fwd_val, fwd_idx = torch.cummax(key + off, dim=-1)
    bwd_val, bwd_idx = torch.cummax((key - off).flip(-1), dim=-1)  # later segments rank lower going backwards
    better = bwd_val.flip(-1) + 2 * off > fwd_val  # both on the key + off scale
    return torch.where(better, (f - 1) - bwd_idx.flip(-1), fwd_idx)


def _anchors(key: torch.Tensor, prev: torch.Tensor, floor: float):
    """For every bin, the bin its phase is integrated from (see module docstring); rows are frames [R, F].

    key and prev are the current and previous frame's log-magnitudes mapped monotonically into [0, 1] (the loudest
    bin of the clip is 1); floor is the significance threshold on that scale. Returns (anchor [R, F] long,
    fed [R, F] bool: the anchor takes its phase from the previous frame).
    """
    r, f = key.shape
    idx = torch.arange(f, device=key.device)
    below = torch.full((r, 1), -1.0, device=key.device, dtype=key.dtype)
    left = torch.cat([below, key[:, :-1]], 1)
    right = torch.cat([key[:, 1:], below], 1)
    # A valley (local minimum) opens a new region; region = peak plus its slopes down to the valleys.
    start = (key <= left) & (key < right)
    start[:, 0] = True
    region = torch.cumsum(start, 1, dtype=torch.int32)
    startf = start.to(key.dtype)
    first = torch.cummax(startf * idx, 1).values.long()  # start bin of each bin's region
    # start bin of the next region: backward running min over starts strictly to the right
    later = torch.where(start[:, 1:], idx[1:].to(key.dtype), float(f))
    nxt = torch.cummin(torch.cat([later, below.new_full((r, 1), float(f))], 1).flip(-1), 1).values.flip(-1)
    nxt = nxt.gather(1, first).long()  # the region's next start, seen from each of its bins
    padded = torch.cat([key, below], 1)
    left_valley = torch.where(first > 0, key.gather(1, first), -1.0)
    right_valley = padded.gather(1, nxt)
    # The previous frame feeds a region at its loudest previous-frame bin if that bin is popped from the heap before
    # the current frame's flood crosses the region's higher valley.
    ptop = _segment_argmax(prev, region)
    pval = prev.gather(1, ptop)
    fed_reg = (pval > floor) & (pval > torch.maximum(left_valley, right_valley))
    # An unfed region (onset, new partial) joins the neighbour behind its higher valley: drop that boundary.
    join_left = (first > 0) & (left_valley >= right_valley) & ~fed_reg
    join_right = (nxt < f) & (right_valley > left_valley) & ~fed_reg
    keep = start & ~join_left
    keep[:, 1:] &= ~join_right[:, :-1]
    segment = torch.cumsum(keep, 1, dtype=torch.int32)
    # Segment anchor: the loudest fed entry point (ranked above everything), else the loudest bin.
    entry = fed_reg & (idx == ptop)
    anchor = _segment_argmax(torch.where(entry, 2.0 + prev, key), segment)
    return anchor, entry.gather(1, anchor)


def pghi_phase(magnitude: torch.Tensor, *, n_fft: int, hop: int, gamma: float | None = None,
               tol: float = 1e-5) -> torch.Tensor:
    """Phase [B, F, N] for a magnitude spectrogram [B, F, N] of the circular STFT (frame-wise PGHI, see module doc).

    tol: bins below tol * (loudest bin of the clip) are not trusted to carry phase from the previous frame.
    """
    check_stft_args(n_fft, hop)
    mag, single = _as_batch(magnitude, 3, "magnitude")
    if mag.shape[1] != n_fft // 2 + 1:
        raise InvalidArgument("magnitude", f"expected {n_fft // 2 + 1} bins for n_fft={n_fft}, got {mag.shape[1]}")
    if not mag.is_floating_point() or mag.is_complex():
        raise InvalidArgument("magnitude", f"expected a real floating tensor, got {mag.dtype}")
    gamma = HANN_GAMMA * n_fft**2 if gamma is None else gamma
    b, f, n = mag.shape
    # Work frame-major ([B, N, F], one row per frame) so per-frame ops touch contiguous memory.
    s = torch.log(mag.transpose(1, 2).clamp_min(1e-30)).contiguous()
    time_step, freq_step = phase_gradients(s, n_fft=n_fft, hop=hop, gamma=gamma)
    # Ranking key for the heap emulation: log-magnitude over a 300 dB range, loudest bin of the clip = 1. float32
    # is precise enough on this scale for the segmented scans.
    span = math.log(1e15)
    key = (s - s.amax(dim=(1, 2), keepdim=True)).div_(span).add_(1.0).clamp_(0.0, 1.0)
    prev = torch.roll(key, 1, dims=1)
    anchor, fed = _anchors(key.view(b * n, f), prev.view(b * n, f), 1.0 + math.log(tol) / span)
    anchor, fed = anchor.view(b, n, f), fed.view(b, n, f)
    # Frequency integral inside a frame (trapezoid rule), taken relative to each bin's anchor.
    cum = torch.cumsum(torch.cat([torch.zeros_like(freq_step[..., :1]),
                                  (freq_step[..., 1:] + freq_step[..., :-1]) / 2], -1), -1)
    # Time step into a fed anchor from the previous frame (trapezoid rule).
    step_in = (time_step + torch.roll(time_step, 1, dims=1)) / 2
    add = torch.where(fed, step_in.gather(2, anchor), 0.0).sub_(cum.gather(2, anchor)).add_(cum)
    fed_f = fed.to(mag.dtype)
    # The sequential part: phase_n = phase_{n-1}[anchor_n] + add_n where fed, add_n (anchor phase 0) where not.
    phase = torch.empty_like(add)
    cur = add[:, 0]
    phase[:, 0] = cur
    for i in range(1, n):
        cur = torch.addcmul(add[:, i], cur.gather(1, anchor[:, i]), fed_f[:, i], out=phase[:, i])
    phase = phase.transpose(1, 2)
    return phase[0] if single else phase


def griffin_lim(magnitude: torch.Tensor, *, n_fft: int, hop: int, n_iter: int = 32,
                init_phase: torch.Tensor | None = None, momentum: float = 0.99, seed: int = 0) -> torch.Tensor:
    """(Fast) Griffin-Lim on the circular STFT: magnitude [B, F, N] -> audio [B, N * hop].

    momentum 0.99 is the "fast Griffin-Lim" of Perraudin et al. 2013 (torchaudio's default too); 0 is plain GL.
    init_phase (e.g. from `pghi_phase`) replaces the random start.
    """
    mag, single = _as_batch(magnitude, 3, "magnitude")
    if init_phase is None:
        g = torch.Generator(device="cpu").manual_seed(seed)
        init_phase = (torch.rand(mag.shape, generator=g, dtype=mag.dtype) * 2 * math.pi).to(mag.device)
    spec = torch.polar(mag, init_phase.reshape(mag.shape).to(mag.dtype))
    prev = spec
    for _ in range(n_iter):
        rebuilt = stft(istft(spec, n_fft=n_fft, hop=hop), n_fft=n_fft, hop=hop)
        accel = rebuilt + (momentum / (1 + momentum)) * (rebuilt - prev) if momentum else rebuilt
        prev = rebuilt
        spec = mag * accel / accel.abs().clamp_min(1e-16)
    out = istft(spec, n_fft=n_fft, hop=hop)
    return out[0] if single else out


def reconstruct(magnitude: torch.Tensor, *, n_fft: int, hop: int, gamma: float | None = None, tol: float = 1e-5,
                refine_iters: int = DEFAULT_REFINE) -> torch.Tensor:
    """Audio [B, N * hop] from a magnitude spectrogram [B, F, N] of the circular STFT, via PGHI phase.

    refine_iters fast Griffin-Lim steps (each one STFT + iSTFT) polish the PGHI phase; 0 gives plain PGHI. At the
    SMF transform's redundancy of 2 (hop = n_fft/2) two steps lift noisy and impulsive sounds, where PGHI's
    gradient estimates are weakest, past 32 Griffin-Lim iterations (docs/benchmarks.md).
    """
    phase = pghi_phase(magnitude, n_fft=n_fft, hop=hop, gamma=gamma, tol=tol)
    if refine_iters:
        return griffin_lim(magnitude, n_fft=n_fft, hop=hop, n_iter=refine_iters, init_phase=phase)
    return istft(torch.polar(magnitude, phase), n_fft=n_fft, hop=hop)
