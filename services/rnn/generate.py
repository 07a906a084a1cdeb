"""Generate audio from a trained audio tier: conditioning arrays played over a duration, or live, B voices at once.

    gen = Generator(model)                                   # backend "auto": compiled C++ loop, else pure torch
    audio = gen.generate(arr, 10.0, seed=1)                  # arr [N, C] or [B, N, C] -> float32 [B, 160000]
    live = gen.stream(voices=2, seed=1)
    live.set_params([0.2, 0.9]); block = live.next_chunk()   # [2, 1024]; the GRU state carries across chunks

How a sample is made (identical in every backend and in the TorchScript export, see smf.rnn.fastgen):
- The N conditioning points are stretched over the duration by linear interpolation (`stretch`, float rate N/duration).
- Generation starts from a zero hidden state and the mu-law class of silence as the first "previous sample". The
  reference primed with one random vector (random audio *and* random conditioning for the first step, §3.2 of the
  reference notes); a fixed start makes a seed fully determine the output and avoids a click of random conditioning.
- Each step samples its class by inverse CDF of softmax(logits / temperature) at a uniform u(seed, voice, step) from
  a counter-based hash (fastgen/rng.py), so chunked live generation draws what one-shot generation draws, and the
  pure-torch loop and the export agree bit for bit. temperature <= 0 is argmax.
- Backends: "torch" (any device; the reference semantics), "cpp" (compiled loop, CPU; `precision` "fp32", "bf16",
  "int8"). The fp32 kernel computes the same maths in another summation order (|dlogit| ~1e-6), so its samples equal
  the torch loop's until a uniform lands within that error of a CDF boundary (observed: once per ~10^3-10^4 steps on
  small random models), after which the voice continues as an equally valid but different draw. Use
  backend="torch" where sample-exact agreement with the export matters.
- Output: one preallocated [B, T] class tensor per call; mu-law decoding once at the end; no per-step host sync on
  CUDA (the torch loop keeps everything on the device).

Multi-tier chaining (MTCRNN): a parameter tier turns the user's params into control trajectories (e.g. rms,
centroid) at its low rate, and an audio tier conditioned on those controls renders them:

    audio, controls = generate_chain(param_tier, audio_tier, arr, 4.0, seed=1)   # arr columns = param tier's props

The audio tier's params are names the parameter tier generates (rms, centroid) and, optionally, the parameter tier's
own params (the knobs, e.g. dim0, dim1) passed through beside them: a tier trained on dim0, dim1, rms, centroid hears
the trajectory the parameter tier planned *and* where the knobs are, for what rms and centroid do not tell apart.
"""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import torch
from smf.common.errors import InvalidArgument
from smf.rnn.conditioning import POINTS, check_array, stretch
from smf.rnn.fastgen.rng import uniforms
from smf.rnn.fastgen.torch_loop import StepLoop
from smf.rnn.model import mulaw_encode
from smf.rnn.oscillator import oscillator_for
from torch import Tensor, nn

__all__ = [
    "BACKENDS",
    "ControlStream",
    "chain_columns",
    "chain_conditioning",
    "Generator",
    "LiveSession",
    "generate",
    "generate_chain",
    "generate_controls",
    "silence_class",
    "stretch",
]

BACKENDS = ("auto", "torch", "cpp")
MAX_SEED = 2**63 - 1


def silence_class(classes: int) -> int:
    """The mu-law class of 0.0: the first 'previous sample' of every voice."""
    return int(mulaw_encode(torch.zeros(1), classes)[0])


def _new_seed() -> int:
    return int.from_bytes(os.urandom(8), "little") & MAX_SEED


class Generator:
    """A model ready to generate on one device. Reusable; one call (or one live session) at a time.

    backend: "auto" (the compiled loop on CPU when it builds, else torch), "torch", or "cpp".
    precision: number format of the compiled loop: "fp32", "bf16" (weights; fp32 activations) or "int8" (int8
        weights and per-step int8 activations: the fast one, real time at the SMF size on one Zen 4 core with
        AVX-512 VNNI); ignored by the torch backend. See smf.rnn.fastgen.quant.
    threads: CPU threads for the compiled loop (voices are split across them); default torch.get_num_threads().
    split: with fewer voices than threads, let the threads share a voice (row split, a barrier per layer): faster
        for one voice on idle cores, much slower on a loaded machine, hence off by default.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device | None = None,
        backend: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        split: bool = False,
    ):
        if backend not in BACKENDS:
            raise InvalidArgument("backend", f"must be one of {list(BACKENDS)}, got {backend!r}")
        cfg = model.config
        if not cfg.is_audio:
            raise InvalidArgument("model", "generation needs an audio tier (config.generate == [])")
        self.config = cfg
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.lock = threading.Lock()
        self.engine = None
        if backend in ("auto", "cpp") and self.device.type == "cpu":
            from smf.rnn.fastgen.cpp import CppEngine, kernel_error, load_kernel

            if load_kernel() is not None:
                self.engine = CppEngine(model, precision=precision, threads=threads, split=split)
            elif backend == "cpp":
                raise RuntimeError(f"backend 'cpp' requested but the kernel is unavailable: {kernel_error()}")
        elif backend == "cpp":
            raise InvalidArgument("backend", f"'cpp' runs on the CPU only, the device is {self.device}")
        if self.engine is None and precision != "fp32":
            warnings.warn(
                f"precision {precision!r} applies to the compiled loop only; the torch loop runs fp32",
                RuntimeWarning,
                stacklevel=2,
            )
        self.backend = "cpp" if self.engine is not None else "torch"
        self.precision = precision if self.engine is not None else "fp32"
        self.loop = StepLoop(model).to(self.device).eval() if self.engine is None else None
        self.oscillator = oscillator_for(cfg)  # a pitch oscillator's inputs are made here, for either backend
        self.silence = silence_class(cfg.classes)

    # -- the core: T steps for B voices from a state -------------------------------------------------------------

    def new_state(self, voices: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(h [L, B, H] zeros, prev [B] = silence class, hist [B, config.history] zeros: the last audio samples,
        newest first, which a source-filter predicts from and de-emphasis starts from, phase [B] float64 zeros: the
        pitch oscillator's, unused without one)."""
        cfg = self.config
        h = torch.zeros(cfg.layers, voices, cfg.hidden, device=self.device)
        hist = torch.zeros(voices, cfg.history, device=self.device)
        phase = torch.zeros(voices, dtype=torch.float64, device=self.device)
        return h, torch.full((voices,), self.silence, dtype=torch.int64, device=self.device), hist, phase

    @torch.no_grad()
    def run(
        self, cond: Tensor, state: tuple[Tensor, Tensor, Tensor, Tensor], *, seed: int, t0: int, temperature: float
    ) -> Tensor:
        """cond [B, T, C] at the sample rate -> audio [B, T] float32; `state` (h, prev, hist, phase) is updated in
        place and `t0` is the absolute step of cond[:, 0] (it keys the uniforms)."""
        h, prev, hist, phase = state
        B, T = cond.shape[0], cond.shape[1]
        u = uniforms(seed, B, t0, T, self.device)
        cond, phase_new = self.oscillator(cond.to(self.device, torch.float32), phase)  # [B, T, C (+ 2K)]
        phase.copy_(phase_new)
        if self.engine is not None:
            return self.engine.run(cond, u, h, prev, hist, temperature)
        audio, h_new, prev_new, hist_new = self.loop(cond, h, prev, hist, u, float(temperature))
        h.copy_(h_new)
        prev.copy_(prev_new)
        hist.copy_(hist_new)
        return audio

    # -- offline generation ----------------------------------------------------------------------------------------

    def prepare(self, conditioning: np.ndarray, duration: float | None, voices: int | None) -> np.ndarray:
        """Validate and stretch a conditioning array -> float32 [B, round(duration*sr), C]."""
        arr = check_array(conditioning, self.config.param_names)
        if voices is not None:
            if voices < 1:
                raise InvalidArgument("voices", f"must be >= 1, got {voices}")
            if arr.shape[0] == 1 and voices > 1:
                arr = np.repeat(arr, voices, axis=0)
            elif arr.shape[0] != voices:
                raise InvalidArgument(
                    "voices", f"is {voices} but the conditioning has {arr.shape[0]} voices (give 1 or {arr.shape[0]})"
                )
        if duration is None:  # the original convention: 1000 points per nominal second
            duration = arr.shape[1] / POINTS
        if not duration > 0:
            raise InvalidArgument("duration", f"must be > 0 seconds, got {duration}")
        return stretch(arr, duration, self.config.sample_rate)

    def generate(
        self,
        conditioning: np.ndarray,
        duration: float | None = None,
        *,
        temperature: float = 1.0,
        seed: int | None = None,
        voices: int | None = None,
    ) -> np.ndarray:
        """conditioning [N, C] or [B, N, C] in [0, 1], played over `duration` seconds (None: N/1000 s) ->
        float32 audio [B, round(duration * sample_rate)]. seed None draws a fresh one."""
        cond = torch.from_numpy(self.prepare(conditioning, duration, voices))
        seed = _new_seed() if seed is None else int(seed)
        with self.lock:
            state = self.new_state(cond.shape[0])
            audio = self.run(cond, state, seed=seed, t0=0, temperature=temperature)
        return audio.cpu().numpy().astype(np.float32)

    def stream(
        self,
        *,
        voices: int = 1,
        temperature: float = 1.0,
        seed: int | None = None,
        chunk: int = 1024,
        values: np.ndarray | None = None,
    ) -> LiveSession:
        """A live session: parameters change between chunks, the GRU state and the step counter carry over."""
        return LiveSession(self, voices=voices, temperature=temperature, seed=seed, chunk=chunk, values=values)


class LiveSession:
    """Chunk-by-chunk generation with parameters that change while it plays.

    set_params(values [C] or [B, C]) sets the target; next_chunk() renders `chunk` samples, gliding linearly from the
    previous values to the target over the chunk (no zipper steps). next(cond [B, n, C]) renders n samples with
    explicit per-sample conditioning instead. The same seed, voices and per-sample conditioning give the same audio
    as one Generator.generate call over the concatenated conditioning (the uniforms are keyed by absolute step).
    """

    def __init__(
        self,
        gen: Generator,
        *,
        voices: int,
        temperature: float,
        seed: int | None,
        chunk: int,
        values: np.ndarray | None = None,
    ):
        if voices < 1:
            raise InvalidArgument("voices", f"must be >= 1, got {voices}")
        if chunk < 1:
            raise InvalidArgument("chunk", f"must be >= 1, got {chunk}")
        self.gen = gen
        self.voices = voices
        self.chunk = chunk
        self.temperature = temperature
        self.seed = _new_seed() if seed is None else int(seed)
        self.t = 0  # absolute step of the next sample
        self.state = gen.new_state(voices)  # (h, prev, past samples, phase): everything a chunk hands the next
        C = gen.config.cond_size
        self.values = np.full((voices, C), 0.5, dtype=np.float32)  # mid-range until told otherwise
        if values is not None:
            self.values = self._check(values)
        self.target = self.values.copy()
        self._lock = threading.Lock()

    def _check(self, values) -> np.ndarray:
        names = self.gen.config.param_names
        v = np.asarray(values, dtype=np.float32)
        if v.ndim == 1:
            v = np.broadcast_to(v, (self.voices, v.shape[0]))
        if v.shape != (self.voices, len(names)):
            raise InvalidArgument(
                "values",
                f"must be [C] or [B, C] = [{self.voices}, {len(names)}] for params "
                f"{names}, got shape {list(np.shape(values))}",
            )
        if not np.all(np.isfinite(v)) or v.min() < 0 or v.max() > 1:
            raise InvalidArgument("values", f"must be finite and in [0, 1] (params {names})")
        return v.copy()

    def set_params(self, values) -> None:
        with self._lock:
            self.target = self._check(values)

    def next(self, cond: np.ndarray) -> np.ndarray:
        """Render len(cond[0]) samples with per-sample conditioning cond [B, n, C] -> float32 [B, n]."""
        c = np.asarray(cond, dtype=np.float32)
        if c.ndim != 3 or c.shape[0] != self.voices or c.shape[2] != self.gen.config.cond_size:
            raise InvalidArgument(
                "conditioning", f"must be [{self.voices}, n, {self.gen.config.cond_size}], got {list(c.shape)}"
            )
        with self._lock, self.gen.lock:
            audio = self.gen.run(
                torch.from_numpy(c), self.state, seed=self.seed, t0=self.t, temperature=self.temperature
            )
            self.t += c.shape[1]
            if c.shape[1]:
                self.values = c[:, -1].copy()
        return audio.cpu().numpy().astype(np.float32)

    def next_chunk(self) -> np.ndarray:
        """Render `chunk` samples, gliding from the current values to the target -> float32 [B, chunk]."""
        with self._lock:
            start, target = self.values, self.target
        w = (np.arange(1, self.chunk + 1, dtype=np.float32) / self.chunk)[None, :, None]
        cond = start[:, None, :] + (target - start)[:, None, :] * w
        return self.next(cond)


def generate(model: nn.Module, conditioning: np.ndarray, duration: float | None = None, **kw) -> np.ndarray:
    """One-shot convenience: Generator(model).generate(conditioning, duration, **kw). Generator options (backend,
    precision, device, threads) may be passed too."""
    opts = {k: kw.pop(k) for k in ("backend", "precision", "device", "threads", "split") if k in kw}
    return Generator(model, **opts).generate(conditioning, duration, **kw)


# --- multi-tier chaining ------------------------------------------------------------------------------------------

CONTROL_START = 0.5  # the "previous controls" of a parameter tier's first step: mid-range (training starts on data)


@torch.no_grad()
def generate_controls(
    param_tier: nn.Module,
    conditioning: np.ndarray,
    duration: float,
    *,
    seed: int,
    temperature: float = 1.0,
    voices: int | None = None,
) -> np.ndarray:
    """Run a parameter tier at its own rate: conditioning [N, C] / [B, N, C] (columns = its props) played over
    `duration` s -> controls float32 [B, round(duration * rate), G] in [0, 1] (columns = config.generate).

    Control k is the value at time k / rate: row 0 is CONTROL_START, row k+1 a draw from the tier's Gaussian at step
    k (mean + temperature * std * eps, eps from torch.Generator(seed)), clamped to [0, 1] and fed back as the next
    step's input, exactly as in training. A plain torch loop: a few hundred steps per second of audio."""
    cfg = param_tier.config
    if cfg.is_audio:
        raise InvalidArgument("param_tier", "is an audio tier; a parameter tier has config.generate (e.g. rms)")
    arr = check_array(conditioning, cfg.param_names)
    if voices is not None and voices > 1 and arr.shape[0] == 1:
        arr = np.repeat(arr, voices, axis=0)
    if not duration > 0:
        raise InvalidArgument("duration", f"must be > 0 seconds, got {duration}")
    device = next(param_tier.parameters()).device
    cond = torch.from_numpy(stretch(arr, duration, cfg.step_rate)).to(device)  # [B, T, C] at the tier's rate
    B, T, G = cond.shape[0], cond.shape[1], cfg.gen_size
    eps = torch.randn(B, T, G, generator=torch.Generator().manual_seed(int(seed))).to(device)  # fixed draws: seed
    out = torch.empty(B, T, G, device=device)
    prev = torch.full((B, G), CONTROL_START, device=device)
    out[:, 0] = prev
    h = None
    for t in range(T - 1):
        mean, std, h = param_tier(torch.cat([prev, cond[:, t]], dim=-1)[:, None], h)
        prev = (mean[:, 0] + temperature * std[:, 0] * eps[:, t]).clamp_(0.0, 1.0)
        out[:, t + 1] = prev
    return out.cpu().numpy()


def generate_chain(
    param_tier: nn.Module,
    audio_tier: nn.Module | Generator,
    conditioning: np.ndarray,
    duration: float,
    *,
    seed: int | None = None,
    temperature: float = 1.0,
    param_temperature: float | None = None,
    voices: int | None = None,
    **generator_opts,
) -> tuple[np.ndarray, np.ndarray]:
    """Two tiers chained: the parameter tier makes controls from the user's `conditioning` (columns = its props) at
    its rate; they are stretched to the audio rate by linear interpolation and condition the audio tier, whose props
    must be the parameter tier's generated names (same order). -> (audio float32 [B, round(duration * sr)],
    controls float32 [B, round(duration * rate), G]). The same seed gives the same controls and audio.

    `audio_tier` may be a ready Generator (the service's cached one); otherwise one is built with `generator_opts`
    (backend, precision, device, threads). `param_temperature` defaults to `temperature`."""
    if param_tier.config.is_audio:
        raise InvalidArgument(
            "chain",
            "the parameter tier given is an audio tier (it generates audio, not "
            f"controls; its params are {param_tier.config.param_names})",
        )
    columns = chain_columns(param_tier.config, audio_tier.config)  # checked before the audio tier's kernel is built
    gen = audio_tier if isinstance(audio_tier, Generator) else Generator(audio_tier, **generator_opts)
    seed = _new_seed() if seed is None else int(seed)
    controls = generate_controls(
        param_tier,
        conditioning,
        duration,
        seed=seed,
        voices=voices,
        temperature=temperature if param_temperature is None else param_temperature,
    )
    knobs = None  # at the controls' rate, only when the audio tier also hears the knobs
    if not all(made for made, _ in columns):
        knobs = stretch(check_array(conditioning, param_tier.config.param_names), duration, param_tier.config.step_rate)
    cond = chain_conditioning(columns, controls, knobs)
    audio = gen.generate(cond, duration, temperature=temperature, seed=seed)
    return audio, controls


def chain_columns(param_config, audio_config) -> list[tuple[bool, int]]:
    """Where each of the audio tier's params comes from in a chain: (True, j) = control j the parameter tier
    generates, (False, j) = the parameter tier's param j (a knob) passed through. INVALID_ARGUMENT "chain" when the
    audio tier needs a name that is neither, or uses none of the generated controls."""
    made, knobs, wanted = list(param_config.generate), list(param_config.param_names), list(audio_config.param_names)
    missing = [n for n in wanted if n not in made and n not in knobs]
    if missing or not set(made) & set(wanted):
        raise InvalidArgument(
            "chain",
            f"the parameter tier generates {made} from {knobs} but the audio tier is conditioned on {wanted}; "
            "chain an audio tier whose params are the generated controls (optionally with the knobs)",
        )
    return [(True, made.index(n)) if n in made else (False, knobs.index(n)) for n in wanted]


def chain_conditioning(columns: list[tuple[bool, int]], controls: np.ndarray, knobs: np.ndarray | None) -> np.ndarray:
    """The audio tier's conditioning [B, T, A] from controls [B, T, G] and knobs [B, T, C] at the same rate
    (`knobs` may be None when no column is a knob)."""
    if all(made for made, _ in columns) and [j for _, j in columns] == list(range(controls.shape[-1])):
        return controls
    if knobs is not None:
        knobs = np.broadcast_to(knobs, controls.shape[:2] + knobs.shape[2:])
    return np.stack([(controls if made else knobs)[..., j] for made, j in columns], axis=-1).astype(np.float32)


class ControlStream:
    """A parameter tier run live: knob values in, its controls out at the audio rate, state carried across chunks.

        controls = ControlStream(param_tier, seed=0)
        ctl = controls.audio_rate(knobs, 16000)        # knobs [B, n, C] at the audio rate -> [B, n, G]

    Frame k (time k / rate) is drawn from the tier with the knobs at that time and fed back, as in
    `generate_controls`; samples between frames are linearly interpolated. One frame is computed ahead (with the
    chunk's last knob values), so a knob change reaches the controls within one frame (8 ms at 125 Hz)."""

    def __init__(self, param_tier: nn.Module, *, voices: int = 1, seed: int | None = None, temperature: float = 1.0):
        cfg = param_tier.config
        if cfg.is_audio:
            raise InvalidArgument("chain", "is an audio tier; a parameter tier has config.generate (e.g. rms)")
        self.tier, self.config, self.temperature = param_tier, cfg, temperature
        self.device = next(param_tier.parameters()).device
        self.rng = torch.Generator().manual_seed(_new_seed() if seed is None else int(seed))
        self.h: Tensor | None = None
        self.frames = [torch.full((voices, cfg.gen_size), CONTROL_START)]  # frames[i] is frame self.first + i
        self.first = 0
        self.t = 0  # absolute audio sample of the next chunk

    @torch.no_grad()
    def _step(self, knobs: np.ndarray) -> None:
        prev = self.frames[-1].to(self.device)
        x = torch.cat([prev, torch.as_tensor(knobs, dtype=torch.float32, device=self.device)], dim=-1)[:, None]
        mean, std, self.h = self.tier(x, self.h)
        eps = torch.randn(prev.shape, generator=self.rng).to(self.device)
        self.frames.append((mean[:, 0] + self.temperature * std[:, 0] * eps).clamp_(0.0, 1.0).cpu())

    def audio_rate(self, knobs: np.ndarray, sample_rate: int) -> np.ndarray:
        """knobs [B, n, C] for the next n audio samples -> controls [B, n, G] float32."""
        knobs = np.array(knobs, dtype=np.float32)  # a copy: torch wants writable memory
        n, rate = knobs.shape[1], self.config.step_rate
        pos = (self.t + np.arange(n)) * rate / sample_rate  # frame position of every sample
        need = int(np.floor(pos[-1])) + 2  # frames up to floor(last) + 1
        while self.first + len(self.frames) < need:
            k = self.first + len(self.frames) - 1  # the frame being stepped from (its time, in samples)
            i = int(np.clip(round(k * sample_rate / rate) - self.t, 0, n - 1))
            self._step(knobs[:, i])
        frames = torch.stack(self.frames, dim=1).numpy()  # [B, F, G]
        lo = np.floor(pos).astype(int) - self.first
        w = (pos - np.floor(pos))[None, :, None].astype(np.float32)
        out = frames[:, lo] * (1 - w) + frames[:, lo + 1] * w
        self.t += n
        drop = int(np.floor(self.t * rate / sample_rate)) - self.first  # keep the frame the next chunk starts in
        if drop > 0:
            self.frames, self.first = self.frames[drop:], self.first + drop
        return out.astype(np.float32)
