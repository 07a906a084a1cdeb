"""The `soundfont` dataset: real instrument notes, one per file, rendered from a General MIDI soundfont by fluidsynth.

No audio is checked in: each note is a tiny MIDI file written here (program change, note on, note off) and rendered
with the `fluidsynth` command-line synth from the Debian packages `fluidsynth` and `timgm6mb-soundfont`
(`make setup` installs both). Another soundfont: `SMF_SOUNDFONT=/path/to/font.sf2`, or `sf2=`.

    clips = list(soundfont(seed=0, sample_rate=16000, duration=1.0, programs=[73], pitches=[60, 67]))
    clips[0].name, clips[0].params.params["normPitch"].values        # "soundfont_p073_n060", [0.0, 0.0]

The set is the grid programs x pitches (default 4 x 13 = 52 notes); `n_files` picks that many notes spread evenly
over it. Params, constant per file:
- normPitch: (pitch - min pitch) / (max - min), nvals = semitones in the range + 1, origUnits "midiPitch".
- instID:    index of the program in `programs` / (len - 1), nvals = len(programs), origUnits "GM program"; the
             `programs` key of the param lists them, so an index reads back as a program number.
Rendering is deterministic (float output, no dither; reverb and chorus off: dry notes), so `seed` is unused.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from smf.common.audio import load_audio
from smf.common.errors import FailedPrecondition, InvalidArgument, SmfError
from smf.common.params import ParamFile, constant_param
from smf.datasets.generators import Clip, _normalise

DEBIAN_SF2 = "/usr/share/sounds/sf2/TimGM6mb.sf2"  # from the Debian package timgm6mb-soundfont
PROGRAMS = (0, 24, 40, 73)  # GM: acoustic grand piano, nylon guitar, violin, flute
PITCHES = tuple(range(48, 73, 2))  # MIDI C3 .. C5, every 2 semitones: 13 notes
VELOCITY = 100
GAIN = 0.5  # fluidsynth master gain; the output is float and normalised afterwards, so this only sets the level inside
RATE_HZ = (8000, 96000)  # what fluidsynth's synth.sample-rate accepts
WORKERS = 4  # concurrent fluidsynth processes
RENDER_TIMEOUT_S = 120


def soundfont(
    n_files: int | None = None,
    *,
    seed: int = 0,
    sample_rate: int = 16000,
    duration: float = 1.0,
    sf2: str | os.PathLike | None = None,
    programs: Sequence[int] = PROGRAMS,
    pitches: Sequence[int] = PITCHES,
    velocity: int = VELOCITY,
) -> Iterator[Clip]:
    """Clips of soundfont notes, in grid order (program-major). Checks everything before rendering anything, so a
    missing fluidsynth or soundfont fails here, not halfway through a dataset; the clips render as they are read."""
    del seed  # rendering is deterministic; kept for the generator signature
    programs, pitches = _midi_list("programs", programs), _midi_list("pitches", pitches)
    if not 1 <= int(velocity) <= 127:
        raise InvalidArgument("velocity", f"must be in [1, 127], got {velocity}")
    if not 0.05 <= duration <= 600:
        raise InvalidArgument("duration", f"must be in [0.05, 600] seconds, got {duration}")
    if not RATE_HZ[0] <= sample_rate <= RATE_HZ[1]:
        raise InvalidArgument(
            "sample_rate", f"fluidsynth renders at {RATE_HZ[0]} .. {RATE_HZ[1]} Hz, got {sample_rate}"
        )
    grid = [(p, m) for p in programs for m in pitches]
    if n_files is not None:
        if not 1 <= n_files <= len(grid):
            raise InvalidArgument(
                "n_files", f"must be in [1, {len(grid)}] ({len(programs)} programs x {len(pitches)} pitches)"
            )
        grid = [grid[i] for i in np.round(np.linspace(0, len(grid) - 1, n_files)).astype(int)]
    binary, font = _fluidsynth(), _soundfont_path(sf2)
    return _render_all(grid, programs, pitches, binary=binary, sf2=font, sr=sample_rate, dur=duration, vel=velocity)


def _render_all(grid, programs, pitches, *, binary: str, sf2: Path, sr: int, dur: float, vel: int) -> Iterator[Clip]:
    lo, hi = min(pitches), max(pitches)
    with tempfile.TemporaryDirectory(prefix="smf-soundfont-") as tmp:
        pool = ThreadPoolExecutor(max_workers=min(WORKERS, os.cpu_count() or 1))
        try:
            futures = [
                pool.submit(
                    render_note, binary, sf2, Path(tmp, f"{k}"), program=p, pitch=m, velocity=vel, sr=sr, dur=dur
                )
                for k, (p, m) in enumerate(grid)
            ]
            for (program, pitch), future in zip(grid, futures, strict=True):
                params = {
                    "normPitch": constant_param(
                        (pitch - lo) / (hi - lo) if hi > lo else 0.0,
                        dur,
                        nvals=hi - lo + 1,
                        orig_units="midiPitch",
                        orig_minval=lo,
                        orig_maxval=hi,
                    ),
                    "instID": constant_param(
                        programs.index(program) / (len(programs) - 1) if len(programs) > 1 else 0.0,
                        dur,
                        nvals=len(programs),
                        orig_units="GM program",
                        extra={"programs": list(programs)},
                    ),
                }
                name = f"soundfont_p{program:03d}_n{pitch:03d}"
                yield Clip(name, future.result(), ParamFile(f"{name}.wav", params))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # before the temp folder goes


def render_note(
    binary: str, sf2: Path, stem: Path, *, program: int, pitch: int, velocity: int, sr: int, dur: float
) -> np.ndarray:
    """One note as float32 mono audio of exactly round(dur * sr) samples, peak-normalised like the other sets."""
    n = round(dur * sr)
    # The note is released 1/4 before the end (at most 250 ms), so the clip holds its release; the tail beyond `dur`
    # (fluidsynth renders on for a few seconds after the end of the track) is cut and the cut faded out.
    hold_ms = round(1000 * dur) - min(250, round(250 * dur))
    midi, wav = stem.with_suffix(".mid"), stem.with_suffix(".wav")
    midi.write_bytes(note_midi(program, pitch, velocity, hold_ms=hold_ms, total_ms=round(1000 * dur)))
    cmd = [binary, "-ni", "-q", "-R", "0", "-C", "0", "-g", str(GAIN), "-r", str(sr), "-O", "float"]
    done = subprocess.run(
        [*cmd, "-F", str(wav), str(sf2), str(midi)], capture_output=True, text=True, timeout=RENDER_TIMEOUT_S
    )
    if done.returncode != 0 or not wav.is_file():
        raise SmfError(f"fluidsynth failed on program {program} note {pitch} ({sf2}): {done.stderr.strip()[-500:]}")
    audio = load_audio(wav, mono="mean")[0].numpy()[:n]
    audio = np.pad(audio, (0, n - len(audio)))
    if not np.any(audio):
        # fluidsynth exits 0 with silence when it cannot use the font or the font lacks the program
        raise FailedPrecondition(
            f"{sf2}: program {program} note {pitch} rendered silence; is it a General MIDI soundfont? "
            f"({done.stderr.strip()[-300:]})"
        )
    fade = min(round(0.02 * sr), n // 4)
    if fade:
        audio[n - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return _normalise(audio)


def note_midi(program: int, pitch: int, velocity: int, *, hold_ms: int, total_ms: int) -> bytes:
    """A standard MIDI file, format 0, one track on channel 1: program change, note on, note off after `hold_ms`,
    end of track at `total_ms`. 1000 ticks per quarter note at 1 s per quarter note: one tick is one millisecond."""
    events = (
        _vlq(0) + b"\xff\x51\x03" + (1_000_000).to_bytes(3, "big")  # tempo: 1e6 microseconds per quarter note
        + _vlq(0) + bytes([0xC0, program])
        + _vlq(0) + bytes([0x90, pitch, velocity])
        + _vlq(hold_ms) + bytes([0x80, pitch, 0])
        + _vlq(total_ms - hold_ms) + b"\xff\x2f\x00"
    )  # fmt: skip
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 1000)  # length 6, format 0, 1 track, 1000 ticks per quarter
    return header + b"MTrk" + struct.pack(">I", len(events)) + events


def _vlq(n: int) -> bytes:
    """MIDI variable-length quantity: 7 bits a byte, most significant first, the high bit set on all but the last."""
    out = [n & 0x7F]
    while n := n >> 7:
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def _midi_list(field: str, values: Sequence[int]) -> list[int]:
    out = [int(v) for v in values]
    if not out or len(set(out)) != len(out) or not all(0 <= v <= 127 for v in out):
        raise InvalidArgument(field, f"must be distinct MIDI numbers in [0, 127], got {list(values)}")
    return out


def _fluidsynth() -> str:
    binary = shutil.which("fluidsynth")
    if binary is None:
        raise FailedPrecondition(
            "the soundfont dataset needs the fluidsynth program: install the Debian package fluidsynth "
            "(apt-get install fluidsynth, or make setup)"
        )
    return binary


def _soundfont_path(sf2: str | os.PathLike | None) -> Path:
    """`sf2`, else $SMF_SOUNDFONT, else the Debian TimGM6mb font; FailedPrecondition if that file is missing."""
    path = Path(os.path.expanduser(os.fspath(sf2 or os.environ.get("SMF_SOUNDFONT") or DEBIAN_SF2)))
    if not path.is_file():
        hint = (
            "install the Debian package timgm6mb-soundfont (apt-get install timgm6mb-soundfont, or make setup)"
            if str(path) == DEBIAN_SF2
            else f"set SMF_SOUNDFONT to a .sf2 file, or unset it to use {DEBIAN_SF2} "
            "from the Debian package timgm6mb-soundfont"
        )
        raise FailedPrecondition(f"soundfont {path} not found: {hint}")
    return path
