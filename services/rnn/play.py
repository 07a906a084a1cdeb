"""The live player: voices -> a bounded buffer -> the sound card (PortAudio), or a wav file.

    knobs = Knobs(names, voices=2, glide_ms=50)
    ensemble = Ensemble([LiveVoice(gen, [0.5, 0.5], seed=s) for s in (0, 1)], names, sr)
    stats = play_device(local_chunks(ensemble, knobs, chunk=1600), sr, buffer_ms=300)   # until knobs.close()
    print(stats.summary())        # frames played, underruns (buffer empty / PortAudio's own flags)

A generator thread makes chunks ahead of the device and blocks when the ring buffer is full, so it runs at most
`buffer_ms` ahead: that bound is also the knob-to-ear latency. PortAudio's callback only copies from the ring; a
callback that finds it short plays zeros for the missing frames and counts an underrun.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from smf.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from smf.rnn.knobs import Knobs, KnobUpdate
from smf.rnn.live import voice_budget

__all__ = [
    "Ensemble",
    "PlayStats",
    "RingBuffer",
    "check_voice_budget",
    "device_table",
    "local_chunks",
    "play_device",
    "play_wav",
    "remote_updates",
]


def check_voice_budget(voices: int, budget: int | None = None) -> int:
    """`voices` if within the budget (`budget`, else $SMF_MAX_VOICES, else 8), else RESOURCE_EXHAUSTED."""
    budget = voice_budget(budget)
    if voices < 1:
        raise InvalidArgument("--voices", f"must be >= 1, got {voices}")
    if voices > budget:
        raise ResourceExhausted(
            f"--voices: {voices} voices asked, the voice budget is {budget} (raise it with --max-voices or "
            "$SMF_MAX_VOICES if the CPU keeps up: each voice is one RNN running in real time)"
        )
    return voices


class RingBuffer:
    """A bounded float32 FIFO between one writer thread (the generator) and one reader (the audio callback).
    The writer waits for room; the reader never waits (it takes what is there)."""

    def __init__(self, capacity: int):
        self.data = np.zeros(capacity, dtype=np.float32)
        self.start = 0  # index of the oldest frame
        self.fill = 0
        self.cond = threading.Condition()

    @property
    def capacity(self) -> int:
        return len(self.data)

    def write(self, x: np.ndarray, stop: threading.Event) -> None:
        """Append all of x, waiting for room; returns early if `stop` is set."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        while len(x) and not stop.is_set():
            with self.cond:
                room = self.capacity - self.fill
                if room == 0:
                    self.cond.wait(0.05)
                    continue
                k = min(room, len(x))
                end = (self.start + self.fill) % self.capacity
                first = min(k, self.capacity - end)
                self.data[end : end + first] = x[:first]
                self.data[: k - first] = x[first:k]
                self.fill += k
            x = x[k:]

    def read_into(self, out: np.ndarray) -> int:
        """Copy up to len(out) of the oldest frames into out; returns how many (the rest of out is untouched)."""
        with self.cond:
            k = min(len(out), self.fill)
            first = min(k, self.capacity - self.start)
            out[:first] = self.data[self.start : self.start + first]
            out[first:k] = self.data[: k - first]
            self.start = (self.start + k) % self.capacity
            self.fill -= k
            self.cond.notify()
        return k


class Ensemble:
    """Several LiveVoices played together: knob updates go to one voice or all, the chunks are mixed (the mean, so
    adding voices does not clip)."""

    def __init__(self, voices: list, names: list[str], sample_rate: int):
        self.voices, self.names, self.sample_rate = voices, names, sample_rate

    def apply(self, update: KnobUpdate) -> None:
        targets = self.voices if update.voice is None else [self.voices[update.voice]]
        for v in targets:
            v.update(update.values, self.names, self.sample_rate, glide_ms=update.glide_ms)

    def next_chunk(self, n: int) -> np.ndarray:
        return np.mean([v.next_chunk(n, self.sample_rate) for v in self.voices], axis=0).astype(np.float32)

    @property
    def values(self) -> list[float]:
        """The first voice's current values (what the status line shows)."""
        return self.voices[0].values.tolist()


def local_chunks(
    ensemble: Ensemble, knobs: Knobs, *, chunk: int, seconds: float = 0.0
) -> Iterator[tuple[np.ndarray, list[float]]]:
    """(audio [chunk], values) until the knobs end the session or `seconds` of audio were made (0: no limit).
    Updates queued while a chunk was made apply from the next one."""
    limit = int(seconds * ensemble.sample_rate) if seconds > 0 else None
    produced = 0
    while limit is None or produced < limit:
        updates = knobs.drain()
        if updates is None:
            return
        for u in updates:
            ensemble.apply(u)
        n = chunk if limit is None else min(chunk, limit - produced)
        yield ensemble.next_chunk(n), ensemble.values
        produced += n


def remote_updates(knobs: Knobs) -> Iterator[dict]:
    """The knob queue as the dicts RnnClient.play sends (one voice per Play stream: voice 0 or all)."""
    while (u := knobs.queue.get()) is not None:
        if u.voice not in (None, 0):
            knobs.report(f"{u.source}: voice {u.voice}: a remote Play stream has one voice (0)")
            continue
        yield {**u.values, "_glide_ms": u.glide_ms}


@dataclass
class PlayStats:
    """What the device saw. underruns = callbacks that found the buffer short (zeros played) + PortAudio's own
    output-underflow flags; the tail of a session that ended is not an underrun."""

    sample_rate: int
    frames: int = 0  # frames of audio handed to the device
    callbacks: int = 0
    empty: int = 0  # callbacks that found the buffer short
    missing_frames: int = 0  # frames played as zeros in those
    device_underflows: int = 0  # callbacks PortAudio flagged output_underflow
    generated: int = 0  # frames the generator made
    min_fill: int | None = None  # the buffer's lowest fill seen by a callback (frames), after the start
    latency_s: float = 0.0  # the stream's output latency as PortAudio reports it
    niceness: int | None = None  # the generator thread's, when it could be raised

    @property
    def underruns(self) -> int:
        return self.empty + self.device_underflows

    def summary(self) -> str:
        low = 0 if self.min_fill is None else self.min_fill
        return (
            f"played {self.frames / self.sample_rate:.2f} s ({self.frames} frames, {self.callbacks} callbacks); "
            f"underruns {self.underruns} (buffer empty {self.empty}, {self.missing_frames} frames; device "
            f"{self.device_underflows}); buffer low {1000 * low / self.sample_rate:.0f} ms; "
            f"device latency {1000 * self.latency_s:.0f} ms"
        )


def import_sounddevice():
    """sounddevice, or a FAILED_PRECONDITION that says what to install (it loads libportaudio at import)."""
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio library is missing
        raise FailedPrecondition(
            f"no PortAudio ({exc}): install libportaudio2 (make system-deps), or write a file with --wav FILE"
        ) from None
    return sounddevice


def device_table() -> str:
    """The devices PortAudio sees, one a line (what --list-devices prints); '>' marks the default output."""
    sd = import_sounddevice()
    return str(sd.query_devices())


def parse_device(spec: str | None) -> int | str | None:
    """--device: an index from --list-devices, or a (part of a) name; None is the default output."""
    if spec is None or spec == "":
        return None
    return int(spec) if spec.isdigit() else spec


def open_stream(sd, sample_rate: int, callback, *, device, blocksize: int, latency):
    try:
        return sd.OutputStream(
            samplerate=sample_rate,
            channels=1,
            dtype="float32",
            device=parse_device(device),
            blocksize=blocksize,
            latency=latency,
            callback=callback,
        )
    except ValueError as exc:  # sounddevice: no device matches the name, or several do
        raise InvalidArgument("--device", f"{exc} (see --list-devices)") from None
    except sd.PortAudioError as exc:
        raise FailedPrecondition(
            f"--device: PortAudio cannot open {device or 'the default output'} at {sample_rate} Hz mono: {exc} "
            "(see --list-devices; the model plays at its own sample rate)"
        ) from None


def parse_latency(text: str | None) -> float | str | None:
    """--latency: 'low', 'high' or seconds; None: PortAudio's 'high' default."""
    if text in (None, "", "low", "high"):
        return text or None
    try:
        return float(text)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidArgument("--latency", f"must be 'low', 'high' or seconds, got {text!r}") from None


def raise_priority(niceness: int) -> int | None:
    """Set the calling thread's niceness (Linux: per thread); the niceness it runs at, None where not permitted."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        return niceness
    except (OSError, AttributeError):  # not permitted (not root), or no per-thread priority on this OS
        return None


def play_device(
    chunks: Iterator[tuple[np.ndarray, list[float]]],
    sample_rate: int,
    *,
    device: str | None = None,
    blocksize: int = 0,
    latency: str | None = None,
    buffer_ms: float = 300.0,
    on_status: Callable[[list[float], PlayStats, int], None] | None = None,
    stop: threading.Event | None = None,
    niceness: int = -10,
) -> PlayStats:
    """Play the chunks on a PortAudio output until they end (or `stop` is set); returns what the device saw.

    The generator thread fills the ring ahead of the device; the stream starts once the ring is full (or the
    chunks ended first), so the first callback does not find it empty. `on_status(values, stats, fill)` is called
    after each chunk (the live status line). The generator thread asks for `niceness` (below 0: ahead of the
    machine's other work, as audio threads do; granted to root or with CAP_SYS_NICE, else it keeps its own)."""
    sd = import_sounddevice()
    latency_arg = parse_latency(latency)  # checked before any work starts
    stop = stop or threading.Event()
    ring = RingBuffer(max(1, int(buffer_ms * sample_rate / 1000)))
    stats = PlayStats(sample_rate)
    done, failed = threading.Event(), []

    def fill() -> None:
        stats.niceness = raise_priority(niceness)
        try:
            for audio, values in chunks:
                ring.write(audio, stop)
                stats.generated += len(audio)
                if on_status is not None:
                    on_status(values, stats, ring.fill)
                if stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
            failed.append(exc)
        finally:
            done.set()

    def callback(outdata, frames, time_info, status) -> None:
        if status.output_underflow:
            stats.device_underflows += 1
        out = outdata[:, 0]
        if not done.is_set():  # while the chunks go on: the margin the generator keeps
            fill_now = ring.fill
            stats.min_fill = fill_now if stats.min_fill is None else min(stats.min_fill, fill_now)
        got = ring.read_into(out)
        stats.frames += got
        stats.callbacks += 1
        if got < frames:
            out[got:] = 0.0
            if not done.is_set():  # the chunks have not ended: the generator fell behind
                stats.empty += 1
                stats.missing_frames += frames - got

    threading.Thread(target=fill, name="smf-play-generator", daemon=True).start()
    try:
        while ring.fill < ring.capacity and not done.is_set() and not stop.is_set():
            time.sleep(0.005)
        stream = open_stream(sd, sample_rate, callback, device=device, blocksize=blocksize, latency=latency_arg)
        stats.latency_s = float(stream.latency)
        with stream:
            while not stop.is_set() and not (done.is_set() and ring.fill == 0):
                stop.wait(0.02)
            # the ring is empty: wait for what PortAudio still holds to reach the speaker
            stop.wait(stats.latency_s + 2 * (blocksize or 512) / sample_rate)
    except KeyboardInterrupt:  # Ctrl-C is how a live session usually ends: still report what was played
        pass
    finally:
        stop.set()
    if failed:
        raise failed[0]
    return stats


def play_wav(
    chunks: Iterator[tuple[np.ndarray, list[float]]],
    path: str,
    sample_rate: int,
    *,
    ahead_s: float = 0.3,
    on_status: Callable[[list[float], PlayStats, int], None] | None = None,
) -> PlayStats:
    """Write the session to a wav file as it plays, keeping at most `ahead_s` in front of real time (so a knob
    typed now lands about now in the file)."""
    import soundfile as sf

    stats = PlayStats(sample_rate)
    t0 = time.monotonic()
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as out:
        for audio, values in chunks:
            out.write(audio)
            out.flush()
            stats.generated += len(audio)
            stats.frames += len(audio)
            if on_status is not None:
                on_status(values, stats, 0)
            ahead = stats.frames / sample_rate - (time.monotonic() - t0)
            if ahead > ahead_s:
                time.sleep(ahead - ahead_s)
    return stats
