"""One voice played live: parameter changes glide in while the model keeps its state from chunk to chunk.

    voice = LiveVoice(loaded.generator, [0.5], temperature=1.0, seed=0)
    voice.update({"normPitch": 0.8}, names, sample_rate, glide_ms=200)    # heard from the next chunk on
    audio = voice.next_chunk(1600, sample_rate)                           # float32 [1600]
    LiveVoice(audio_tier.generator, [0.5, 0.5], chain=param_tier)         # knobs drive a parameter tier's controls

What RnnService.Play and `smf rnn play` both run: the service feeds it a stream's ParameterUpdates, the command the
NAME=VALUE lines typed on stdin.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from smf.common.errors import InvalidArgument

__all__ = ["DEFAULT_VOICE_BUDGET", "LiveVoice", "voice_budget"]

DEFAULT_VOICE_BUDGET = 8  # live voices at once: each is a full RNN running in real time on a CPU core


def voice_budget(given: int | None = None) -> int:
    """The live-voice budget of a player or a server: `given`, else $SMF_MAX_VOICES, else DEFAULT_VOICE_BUDGET."""
    return given or int(os.environ.get("SMF_MAX_VOICES", DEFAULT_VOICE_BUDGET))


class LiveVoice:
    """One live voice: carries the GRU state and the last class from chunk to chunk; parameter changes glide
    linearly from the current values to the new ones over `glide_ms` starting at the next chunk."""

    def __init__(self, generator, values, *, temperature: float = 1.0, seed: int | None = None, chain=None):
        """`chain`: a parameter tier; `values` are then its params (the knobs) and it makes the generator's controls."""
        from smf.rnn.generate import ControlStream, chain_columns

        self.controls = ControlStream(chain, seed=seed, temperature=temperature) if chain is not None else None
        self.columns = chain_columns(chain.config, generator.config) if chain is not None else None
        self.values = np.asarray(values, dtype=np.float32)
        self.target = self.values.copy()
        self.glide_left = 0  # samples until the target is reached
        self.temperature = temperature
        self.stream = generator.stream(voices=1, temperature=temperature, seed=seed)

    def update(
        self,
        values: Mapping[str, float],
        names: list[str],
        sample_rate: int,
        *,
        glide_ms: float = 0.0,
        temperature: float = 0.0,
    ) -> None:
        """New target values for some params (by name, each in [0, 1]); `temperature` > 0 changes it too."""
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise InvalidArgument("update.values", f"unknown params {unknown}; the model's params are {names}")
        for name, v in values.items():
            if not 0.0 <= v <= 1.0:
                raise InvalidArgument(f"update.values[{name}]", f"must be in [0, 1], got {v}")
            self.target[names.index(name)] = v
        self.glide_left = int(glide_ms * sample_rate / 1000)
        if temperature > 0:
            self.temperature = temperature
            self.stream.temperature = temperature

    def next_chunk(self, n: int, sample_rate: int) -> np.ndarray:
        if self.glide_left > 0:
            k = min(n, self.glide_left)
            w = (np.arange(1, n + 1, dtype=np.float32) / self.glide_left).clip(max=1.0)[:, None]
            c = self.values[None] + (self.target - self.values)[None] * w
            self.values = c[-1].copy() if k < self.glide_left else self.target.copy()
            self.glide_left -= k
        else:
            self.values = self.target.copy()
            c = np.repeat(self.values[None], n, axis=0)
        if self.controls is not None:
            from smf.rnn.generate import chain_conditioning

            c = chain_conditioning(self.columns, self.controls.audio_rate(c[None], sample_rate), c[None])[0]
        return np.asarray(self.stream.next(c[None]), dtype=np.float32)[0]
