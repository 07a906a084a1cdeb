"""Export an audio tier as a self-contained TorchScript module: generation in a plain torch process, no smf needed.

    from smf.rnn.export import export
    export(model, "model.ts")                                   # or export(model, io.BytesIO())
    # elsewhere, with only torch installed:
    m = torch.jit.load("model.ts")
    audio = m.generate(arr, 10.0, 1)          # arr [B, N, C] float32 played over 10 s, seed 1 -> [B, 160000]
    audio = m(cond, 1)                        # cond already at the sample rate [B, T, C] -> [B, T]
    m.reset(2, 1); a = m.step(chunk)          # stateful: chunk [2, n, C] -> [2, n]; state carries over
    m.param_names, m.sample_rate              # column order and rate

The module runs the same code as `Generator(backend="torch")` (smf.rnn.fastgen.torch_loop, counter-based uniforms,
silence start, linear stretch with rate N/duration), so for the same seed, conditioning and duration it returns the
same samples as that backend on the same device. The compiled backend agrees up to the rare near-tie divergence
described in smf.rnn.generate. `generate` takes a duration in seconds (not a sample count) because the stretch is
defined by the duration: n = round(duration * sample_rate).
"""

from __future__ import annotations

import io
import json
import os

import torch
from smf.common.files import atomic_path
from smf.rnn.fastgen.rng import uniforms
from smf.rnn.fastgen.torch_loop import StepLoop
from smf.rnn.generate import silence_class
from smf.rnn.oscillator import oscillator_for
from torch import Tensor, nn


class ExportedGenerator(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        cfg = model.config
        self.loop = StepLoop(model)
        self.oscillator = oscillator_for(cfg)  # a pitch oscillator's inputs, as Generator.run makes them
        self.param_names: list[str] = list(cfg.param_names)
        self.sample_rate: int = int(cfg.sample_rate)
        self.classes: int = int(cfg.classes)
        self.layers: int = int(cfg.layers)
        self.hidden: int = int(cfg.hidden)
        self.silence: int = silence_class(cfg.classes)
        self.history: int = int(cfg.history)
        # live state for reset/step
        self.h = torch.zeros(cfg.layers, 1, cfg.hidden)
        self.prev = torch.full((1,), self.silence, dtype=torch.int64)
        self.hist = torch.zeros(1, self.history)  # last audio samples: de-emphasis and source-filter across steps
        self.phase = torch.zeros(1, dtype=torch.float64)  # the pitch oscillator's (unused without one)
        self.seed: int = 0
        self.t: int = 0

    @torch.jit.export
    def reset(self, voices: int, seed: int):
        device = self.loop.w_a.device
        self.h = torch.zeros(self.layers, voices, self.hidden, device=device)
        self.prev = torch.full([voices], self.silence, dtype=torch.int64, device=device)
        self.hist = torch.zeros([voices, self.history], device=device)
        self.phase = torch.zeros([voices], dtype=torch.float64, device=device)
        self.seed = seed
        self.t = 0

    @torch.jit.export
    def step(self, cond: Tensor, temperature: float = 1.0) -> Tensor:
        """Continue the voices set up by reset: cond [B, n, C] at the sample rate -> audio [B, n]."""
        cond = cond.to(self.loop.w_a.device, torch.float32)
        u = uniforms(self.seed, cond.shape[0], self.t, cond.shape[1], cond.device)
        cond, self.phase = self.oscillator(cond, self.phase)
        audio, self.h, self.prev, self.hist = self.loop(cond, self.h, self.prev, self.hist, u, temperature)
        self.t += cond.shape[1]
        return audio

    def forward(self, cond: Tensor, seed: int, temperature: float = 1.0) -> Tensor:
        """cond [B, T, C] at the sample rate -> audio [B, T] float32, from silence and a zero state."""
        self.reset(cond.shape[0], seed)
        return self.step(cond, temperature)

    @torch.jit.export
    def stretch(self, cond: Tensor, duration: float) -> Tensor:
        """[B, N, C] played over duration seconds -> [B, round(duration * sr), C] (as smf.rnn.conditioning.stretch)."""
        N = cond.shape[1]
        T = round(duration * self.sample_rate)
        pos = torch.arange(T, dtype=torch.float64, device=cond.device) * (N / (duration * self.sample_rate))
        pos = pos.clamp(max=float(N - 1))
        i0 = pos.floor().to(torch.int64)
        i1 = (i0 + 1).clamp(max=N - 1)
        w = (pos - i0.to(torch.float64)).to(torch.float32)[None, :, None]
        c = cond.to(torch.float32)
        return c[:, i0, :] * (1 - w) + c[:, i1, :] * w

    @torch.jit.export
    def generate(self, cond: Tensor, duration: float, seed: int, temperature: float = 1.0) -> Tensor:
        """cond [B, N, C] (or [N, C]) in [0, 1] stretched over duration seconds -> audio [B, round(duration*sr)]."""
        if cond.dim() == 2:
            cond = cond.unsqueeze(0)
        return self.forward(self.stretch(cond, duration), seed, temperature)


def export_module(model: nn.Module) -> torch.jit.ScriptModule:
    """The scripted generator for `model` (on the model's device), not yet saved."""
    model = model.eval()
    return torch.jit.script(ExportedGenerator(model).to(next(model.parameters()).device))


def export(model: nn.Module, path_or_bytes: str | os.PathLike | io.IOBase | None = None) -> torch.jit.ScriptModule:
    """Script `model` and save it to a path (atomically) or a writable binary file object; returns the module.
    The archive also carries `config.json` (the model's RNNConfig) as an extra file."""
    module = export_module(model)
    extra = {"config.json": json.dumps(model.config.to_dict())}
    if path_or_bytes is None:
        return module
    if isinstance(path_or_bytes, (str, os.PathLike)):
        with atomic_path(path_or_bytes) as tmp:
            torch.jit.save(module, tmp, _extra_files=extra)
    else:
        torch.jit.save(module, path_or_bytes, _extra_files=extra)
    return module


def export_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    export(model, buf)
    return buf.getvalue()


def export_to_store(model: nn.Module, store, key: str) -> str:
    """Export into the artifact store at `key` (e.g. rnn/<run>/export/model.ts); returns the artifact URI."""
    store.put_bytes(key, export_bytes(model), content_type="application/octet-stream")
    return store.key_uri(key)


def load_exported(source: str | os.PathLike | bytes, map_location: str | None = None) -> torch.jit.ScriptModule:
    """Load an exported module (path or bytes) — plain torch.jit.load works too."""
    if isinstance(source, bytes):
        return torch.jit.load(io.BytesIO(source), map_location=map_location)
    return torch.jit.load(os.fspath(source), map_location=map_location)
