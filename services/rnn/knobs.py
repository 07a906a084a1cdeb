"""Knobs for a live synth: the terminal, OSC and MIDI CC all feed one queue the player drains at each chunk.

    knobs = Knobs(["dim0", "dim1"], voices=2, glide_ms=50)
    knobs.put({"dim0": 0.8})                              # every voice; heard from the next chunk on
    knobs.put({"dim1": 0.1}, voice=1, glide_ms=200)       # one voice, its own glide
    osc = OscKnobs(knobs, port=9000)                      # /smf/dim0 0.8   /smf/voice/1/dim1 0.1 [glide_ms]
    midi = MidiKnobs(knobs, "nanoKONTROL", load_midi_map("map.json", knobs.names))   # CC 0..127 -> 0..1
    StdinKnobs(knobs)                                     # NAME=VALUE [GLIDE_MS] lines, @N picks a voice, q quits
    for update in knobs.drain(): ...                      # the player, once per chunk (None: the session ended)

A source's bad message (an unknown param, a value outside [0, 1], a voice that is not playing) is reported to
stderr and dropped: a stray packet from a controller must not stop the sound.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from smf.common.errors import FailedPrecondition, InvalidArgument
from smf.rnn.pitch import PITCH_PARAM

__all__ = [
    "KnobUpdate",
    "Knobs",
    "MidiKnobs",
    "MidiMap",
    "OscKnobs",
    "StdinKnobs",
    "load_midi_map",
    "midi_update",
    "parse_line",
]

QUEUE_SIZE = 4096  # updates waiting for the next chunk; a flood past it is dropped (and counted), never buffered


@dataclass(frozen=True)
class KnobUpdate:
    """New target values for some params of one voice (`voice` None: every voice), gliding over `glide_ms`."""

    values: dict[str, float]
    voice: int | None = None
    glide_ms: float = 0.0
    source: str = ""


class Knobs:
    """The one thread-safe queue of knob updates: every source puts, the player drains once per chunk."""

    def __init__(self, names: list[str], *, voices: int = 1, glide_ms: float = 0.0, report: Callable | None = None):
        self.names, self.voices, self.glide_ms = list(names), voices, glide_ms
        self.pitch: tuple[float, float] | None = None  # normPitch's MIDI range when known: where MIDI keys land
        self.queue: queue.Queue = queue.Queue(QUEUE_SIZE)
        self.report = report or (lambda msg: print(msg, file=sys.stderr))
        self.dropped = 0

    def check(self, values: Mapping[str, float], voice: int | None, where: str) -> dict[str, float]:
        """The update as floats, or InvalidArgument naming `where` (the field, the OSC address, the CC)."""
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise InvalidArgument(where, f"unknown params {unknown}; the synth's params are {self.names}")
        if voice is not None and not 0 <= voice < self.voices:
            raise InvalidArgument(where, f"voice {voice} is not playing (voices 0..{self.voices - 1})")
        out = {k: float(v) for k, v in values.items()}
        for k, v in out.items():
            if not 0.0 <= v <= 1.0:
                raise InvalidArgument(where, f"{k} must be in [0, 1], got {v}")
        return out

    def put(
        self,
        values: Mapping[str, float],
        *,
        voice: int | None = None,
        glide_ms: float | None = None,
        source: str = "",
        where: str = "values",
    ) -> KnobUpdate:
        """Queue an update (checked here, so a bad one fails at its source, not in the audio thread)."""
        update = KnobUpdate(
            self.check(values, voice, where), voice, self.glide_ms if glide_ms is None else glide_ms, source
        )
        try:
            self.queue.put_nowait(update)
        except queue.Full:
            self.dropped += 1
        return update

    def put_safely(self, values: Mapping[str, float], **kw) -> None:
        """put() for network sources: a bad message is reported and dropped, the sound goes on."""
        try:
            self.put(values, **kw)
        except InvalidArgument as exc:
            self.report(f"{kw.get('source', 'knob')}: {exc}")

    def close(self) -> None:
        """End the session: the player stops at its next chunk."""
        self.queue.put(None)

    def drain(self) -> list[KnobUpdate] | None:
        """Every update waiting now, in order; None once the session was ended."""
        out = []
        while True:
            try:
                u = self.queue.get_nowait()
            except queue.Empty:
                return out
            if u is None:
                return None
            out.append(u)


# --- the terminal ---------------------------------------------------------------------------------------------


@dataclass
class Line:
    """One parsed terminal line: values, an optional glide and voice; `quit` ends the session."""

    values: dict[str, float] = field(default_factory=dict)
    glide_ms: float | None = None
    voice: int | None = None
    quit: bool = False
    errors: list[str] = field(default_factory=list)


def parse_line(line: str) -> Line:
    """'dim0=0.2 dim1=0.9 [GLIDE_MS] [@VOICE]' -> Line; 'q' (quit, exit) ends the session."""
    out = Line()
    parts = line.split()
    if parts and parts[0] in ("q", "quit", "exit"):
        out.quit = True
        return out
    for part in parts:
        try:
            if "=" in part:
                k, _, v = part.partition("=")
                out.values[k] = float(v)
            elif part.startswith("@"):
                out.voice = int(part[1:])
            else:
                out.glide_ms = float(part)
        except ValueError:
            out.errors.append(f"ignored: {part} (expected NAME=VALUE [GLIDE_MS] [@VOICE])")
    return out


class StdinKnobs:
    """Reads NAME=VALUE lines from a text stream (stdin) in a daemon thread. End of input ends the session unless
    the session has its own length (`stop_on_eof=False`, e.g. --seconds)."""

    def __init__(self, knobs: Knobs, stream: Iterable[str] | None = None, *, stop_on_eof: bool = True):
        self.knobs, self.stream, self.stop_on_eof = knobs, stream, stop_on_eof
        self.thread = threading.Thread(target=self.run, name="smf-knobs-stdin", daemon=True)
        self.thread.start()

    def run(self) -> None:
        for text in self.stream if self.stream is not None else sys.stdin:
            line = parse_line(text)
            if line.quit:
                self.knobs.close()
                return
            for err in line.errors:
                self.knobs.report(err)
            if line.values:
                self.knobs.put_safely(line.values, voice=line.voice, glide_ms=line.glide_ms, source="stdin")
        if self.stop_on_eof:
            self.knobs.close()


# --- OSC ------------------------------------------------------------------------------------------------------


def osc_update(address: str, args: tuple) -> tuple[str, int | None, float, float | None]:
    """'/smf/dim0' (0.7[, glide_ms]) or '/smf/voice/1/dim0' (...) -> (param, voice, value, glide_ms)."""
    parts = address.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "smf":
        param, voice = parts[1], None
    elif len(parts) == 4 and parts[:2] == ["smf", "voice"] and parts[2].isdigit():
        param, voice = parts[3], int(parts[2])
    else:
        raise InvalidArgument(address, "expected /smf/<param> or /smf/voice/<n>/<param>")
    if not args or not isinstance(args[0], int | float) or len(args) > 2:
        raise InvalidArgument(address, f"expected a value in [0, 1] and an optional glide in ms, got {list(args)}")
    glide = float(args[1]) if len(args) == 2 else None
    return param, voice, float(args[0]), glide


class OscKnobs:
    """An OSC server on UDP (`python-osc`) in a daemon thread; port 0 picks a free one (see `.port`).

    Binds loopback by default: pass host="0.0.0.0" for a tablet (TouchOSC) on the network."""

    def __init__(self, knobs: Knobs, *, host: str = "127.0.0.1", port: int = 9000):
        from pythonosc.dispatcher import Dispatcher
        from pythonosc.osc_server import BlockingOSCUDPServer

        self.knobs = knobs
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(self.handle)
        try:
            self.server = BlockingOSCUDPServer((host, port), dispatcher)  # one thread: updates keep their order
        except OSError as exc:
            raise FailedPrecondition(f"--osc: cannot listen on udp {host}:{port}: {exc.strerror}") from None
        self.host, self.port = self.server.server_address[:2]
        threading.Thread(target=self.server.serve_forever, name="smf-knobs-osc", daemon=True).start()

    def handle(self, address: str, *args) -> None:
        try:
            param, voice, value, glide = osc_update(address, args)
        except InvalidArgument as exc:
            self.knobs.report(f"osc: {exc}")
            return
        self.knobs.put_safely({param: value}, voice=voice, glide_ms=glide, source="osc", where=address)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- MIDI CC --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MidiMap:
    """CC number -> param; `channel` 1..16 listens to one channel (None: all); `voice` the voice moved (None: all);
    `notes` (low, high): the MIDI notes normPitch 0 and 1 name, so a key played sets normPitch to that note (None:
    notes do nothing)."""

    cc: dict[int, str]
    channel: int | None = None
    voice: int | None = None
    notes: tuple[float, float] | None = None


def default_midi_map(names: list[str], pitch: tuple[float, float] | None = None) -> MidiMap:
    """Without a mapping file: CC 1, 2, ... move the params in order (CC 1 is the mod wheel); with `pitch` (the
    model's normPitch MIDI range) the keys play normPitch."""
    return MidiMap({i + 1: n for i, n in enumerate(names)}, notes=_notes(names, pitch))


def _notes(names: list[str], pitch) -> tuple[float, float] | None:
    return (float(pitch[0]), float(pitch[1])) if pitch is not None and PITCH_PARAM in names else None


def load_midi_map(path: str, names: list[str], pitch: tuple[float, float] | None = None) -> MidiMap:
    """A mapping file `{"cc": {"1": "dim0", "2": "dim1"}, "channel": null, "voice": null, "notes": null}` -> MidiMap.
    `notes`: null plays normPitch from the keys over the model's MIDI range (`pitch`) when it has one, false turns
    that off, [low, high] names the range (a remote model's). Errors name the file and the key: a typo must not be a
    knob that silently does nothing."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise InvalidArgument("--midi-map", f"no such file: {path}") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument("--midi-map", f"{path} is not JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cc"), dict):
        raise InvalidArgument(path, 'expected {"cc": {"<0..127>": "<param>", ...}, "channel": null}')
    unknown = sorted(set(raw) - {"cc", "channel", "voice", "notes"})
    if unknown:
        raise InvalidArgument(path, f"unknown keys {unknown}; known: cc, channel, voice, notes")
    cc = {}
    for k, param in raw["cc"].items():
        if not str(k).isdigit() or not 0 <= int(k) <= 127:
            raise InvalidArgument(f"{path}: cc.{k}", "CC numbers are 0..127")
        if param not in names:
            raise InvalidArgument(f"{path}: cc.{k}", f"unknown param {param!r}; the synth's params are {names}")
        cc[int(k)] = param
    channel, voice = raw.get("channel"), raw.get("voice")
    if channel is not None and (not isinstance(channel, int) or not 1 <= channel <= 16):
        raise InvalidArgument(f"{path}: channel", f"must be null (every channel) or 1..16, got {channel!r}")
    if voice is not None and (not isinstance(voice, int) or voice < 0):
        raise InvalidArgument(f"{path}: voice", f"must be null (every voice) or a voice number >= 0, got {voice!r}")
    return MidiMap(cc, channel, voice, _load_notes(raw.get("notes"), path, names, pitch))


def _load_notes(notes, path: str, names: list[str], pitch) -> tuple[float, float] | None:
    if notes is None:
        return _notes(names, pitch)
    if notes is False:
        return None
    ok = isinstance(notes, list) and len(notes) == 2 and all(isinstance(n, (int, float)) for n in notes)
    if not ok or not 0 <= notes[0] < notes[1] <= 127:
        raise InvalidArgument(f"{path}: notes", f"must be null, false or [low, high] MIDI notes 0..127, got {notes!r}")
    if PITCH_PARAM not in names:
        raise InvalidArgument(
            f"{path}: notes", f"the keys play {PITCH_PARAM}, which is not a param of this synth {names}"
        )
    return float(notes[0]), float(notes[1])


def midi_update(msg, mapping: MidiMap) -> dict[str, float] | None:
    """A mido.Message -> {param: value in [0, 1]} when it is a mapped control change, or a key (note on) inside the
    mapped note range (normPitch = where the note lies in it), else None."""
    if mapping.channel is not None and getattr(msg, "channel", None) != mapping.channel - 1:  # mido counts from 0
        return None
    if msg.type == "note_on" and msg.velocity > 0 and mapping.notes is not None:
        lo, hi = mapping.notes
        if lo <= msg.note <= hi:
            return {PITCH_PARAM: (msg.note - lo) / (hi - lo)}
        return None
    if msg.type != "control_change" or msg.control not in mapping.cc:
        return None
    return {mapping.cc[msg.control]: msg.value / 127.0}


def midi_backend(api: str = ""):
    """mido's rtmidi backend on one API: "alsa", "jack", or "" (rtmidi's default, or $MIDO_BACKEND)."""
    import mido

    apis = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK"}
    if api and api not in apis:
        raise InvalidArgument("--midi-api", f"must be one of {sorted(apis)}, got {api!r}")
    name = f"mido.backends.rtmidi/{apis[api]}" if api else os.environ.get("MIDO_BACKEND", "mido.backends.rtmidi")
    return mido.Backend(name, load=True)


class MidiKnobs:
    """Listens to a MIDI input (`mido` + `python-rtmidi`): `port` names an existing output of a controller (a
    substring is enough); if none matches, a virtual input of that name is opened for others to connect to."""

    def __init__(self, knobs: Knobs, port: str, mapping: MidiMap, *, api: str = ""):
        self.knobs, self.mapping = knobs, mapping
        backend = midi_backend(api)
        try:
            names = backend.get_input_names()
        except Exception as exc:  # noqa: BLE001 - rtmidi raises its own errors when there is no MIDI system
            raise FailedPrecondition(f"--midi: no MIDI system ({exc}); try --midi-api jack or alsa") from None
        match = [n for n in names if port == n] or [n for n in names if port in n]
        try:
            if match:
                self.port = backend.open_input(match[0], callback=self.handle)
            else:
                self.port = backend.open_input(port, virtual=True, callback=self.handle)
        except Exception as exc:  # noqa: BLE001 - as above: rtmidi's SystemError / InvalidPortError
            raise FailedPrecondition(f"--midi: cannot open {port!r} ({exc}); inputs here: {names}") from None
        self.name = match[0] if match else port

    def handle(self, msg) -> None:
        values = midi_update(msg, self.mapping)
        if values is not None:
            where = f"midi note {msg.note}" if msg.type == "note_on" else f"midi cc {msg.control}"
            self.knobs.put_safely(values, voice=self.mapping.voice, source="midi", where=where)

    def close(self) -> None:
        self.port.close()
