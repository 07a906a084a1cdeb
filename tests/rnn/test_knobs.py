"""Knob sources: real OSC packets over UDP loopback and real MIDI CC through a virtual port move the conditioning
the generator is given; terminal lines and mapping files parse as documented."""

from __future__ import annotations

import io
import json
import os
import time

import mido
import numpy as np
import pytest
import torch
from smf.common.errors import InvalidArgument
from smf.rnn.generate import Generator
from smf.rnn.knobs import (
    Knobs,
    MidiKnobs,
    MidiMap,
    OscKnobs,
    StdinKnobs,
    default_midi_map,
    load_midi_map,
    midi_backend,
    midi_update,
    parse_line,
)
from smf.rnn.live import LiveVoice
from smf.rnn.model import RNNConfig, build_model
from smf.rnn.play import Ensemble, local_chunks, remote_updates
from support import jackd

SR = 16000
NAMES = ["dim0", "dim1"]


class Recorded:
    """A voice's generator stream, passed through, keeping the conditioning each chunk was generated with."""

    def __init__(self, stream):
        self.stream, self.seen = stream, []

    def next(self, c):
        self.seen.append(np.array(c[0]))
        return self.stream.next(c)


def recorded_ensemble(voices: int = 2) -> tuple[Ensemble, list[Recorded]]:
    torch.manual_seed(0)
    gen = Generator(build_model(RNNConfig(param_names=NAMES, hidden=8, layers=1)).eval(), precision="int8")
    ens = Ensemble([LiveVoice(gen, [0.5, 0.5], seed=i) for i in range(voices)], NAMES, SR)
    rec = []
    for v in ens.voices:
        v.stream = Recorded(v.stream)
        rec.append(v.stream)
    return ens, rec


def wait_for(knobs: Knobs, n: int) -> None:
    deadline = time.monotonic() + 5
    while knobs.queue.qsize() < n:
        assert time.monotonic() < deadline, f"{knobs.queue.qsize()} of {n} updates arrived"
        time.sleep(0.01)


def test_osc_packets_move_the_conditioning_the_generator_uses():
    from pythonosc.udp_client import SimpleUDPClient

    errors: list[str] = []
    knobs = Knobs(NAMES, voices=2, report=errors.append)
    ens, rec = recorded_ensemble(2)
    chunks = local_chunks(ens, knobs, chunk=800)
    next(chunks)
    osc = OscKnobs(knobs, port=0)
    try:
        client = SimpleUDPClient("127.0.0.1", osc.port)
        client.send_message("/smf/nope", 0.5)  # each of these is reported and dropped
        client.send_message("/smf/dim0", 1.5)
        client.send_message("/smf/voice/7/dim0", 0.5)
        client.send_message("/other/dim0", 0.5)
        client.send_message("/smf/dim0", 0.9)  # every voice
        client.send_message("/smf/voice/1/dim1", [0.1, 20.0])  # voice 1 only, 20 ms glide
        wait_for(knobs, 2)
    finally:
        osc.close()
    next(chunks)
    np.testing.assert_allclose(rec[0].seen[0], 0.5)  # before: the starting values
    np.testing.assert_allclose(rec[0].seen[1][-1], [0.9, 0.5], atol=1e-6)
    np.testing.assert_allclose(rec[1].seen[1][-1], [0.9, 0.1], atol=1e-6)
    assert rec[1].seen[1][0, 1] > 0.4  # the glide starts from where the knob was
    assert len(errors) == 4 and "unknown params ['nope']" in errors[0] and "got 1.5" in errors[1], errors
    assert "voice 7 is not playing" in errors[2] and "expected /smf/<param>" in errors[3]


def midi_reason(api: str) -> str:
    if api == "alsa" and not os.path.exists("/dev/snd/seq"):
        return "no ALSA sequencer here (/dev/snd/seq): the container has no sound devices"
    return jackd.available() if api == "jack" else ""


@pytest.mark.parametrize("api", ["jack", "alsa"])
def test_midi_cc_through_a_virtual_port_moves_the_conditioning(api, tmp_path):
    if reason := midi_reason(api):
        pytest.skip(reason)
    mapping_file = tmp_path / "cc.json"
    mapping_file.write_text(json.dumps({"cc": {"1": "dim0", "2": "dim1"}, "channel": 1}))
    with jackd.JackServer(rate=SR) if api == "jack" else _nothing():
        controller = midi_backend(api).open_output("smf-test", virtual=True)  # the controller's port
        knobs = Knobs(NAMES, voices=1)
        ens, rec = recorded_ensemble(1)
        midi = MidiKnobs(knobs, "smf-test", load_midi_map(str(mapping_file), NAMES), api=api)
        try:
            time.sleep(0.2)  # JACK MIDI connects at the next process cycle
            controller.send(mido.Message("control_change", channel=4, control=1, value=0))  # other channel
            controller.send(mido.Message("control_change", channel=0, control=1, value=127))
            controller.send(mido.Message("control_change", channel=0, control=2, value=0))
            wait_for(knobs, 2)
        finally:
            midi.close()
            controller.close()
    chunks = local_chunks(ens, knobs, chunk=400)
    next(chunks)
    np.testing.assert_allclose(rec[0].seen[0][-1], [1.0, 0.0], atol=1e-6)
    assert knobs.queue.qsize() == 0


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_midi_mapping_on_real_messages(tmp_path):
    m = MidiMap({1: "dim0", 74: "dim1"}, channel=2)
    cc = mido.Message("control_change", channel=1, control=74, value=64)  # mido's channel 1 is MIDI channel 2
    assert midi_update(cc, m) == {"dim1": pytest.approx(64 / 127)}
    assert midi_update(cc.copy(channel=0), m) is None
    assert midi_update(cc.copy(control=5), m) is None
    assert midi_update(mido.Message("note_on", channel=1, note=74, velocity=64), m) is None
    assert midi_update(cc.copy(channel=9), MidiMap({74: "dim1"})) == {"dim1": pytest.approx(64 / 127)}

    def write(obj) -> str:
        p = tmp_path / "map.json"
        p.write_text(json.dumps(obj))
        return str(p)

    assert load_midi_map(write({"cc": {"7": "dim1"}, "channel": None}), NAMES) == MidiMap({7: "dim1"})
    for bad, says in [
        ({"cc": {"1": "dim0"}, "chanel": 1}, "unknown keys ['chanel']"),
        ({"cc": {"128": "dim0"}}, "cc.128: CC numbers are 0..127"),
        ({"cc": {"1": "pitch"}}, "unknown param 'pitch'"),
        ({"cc": {"1": "dim0"}, "channel": 0}, "channel: must be null (every channel) or 1..16"),
        ([1, 2], 'expected {"cc"'),
    ]:
        with pytest.raises(InvalidArgument, match="map.json") as exc:
            load_midi_map(write(bad), NAMES)
        assert says in str(exc.value)
    with pytest.raises(InvalidArgument, match="--midi-map: no such file"):
        load_midi_map(str(tmp_path / "none.json"), NAMES)


def test_midi_keys_play_normpitch_over_the_models_range(tmp_path):
    names = ["normPitch", "instID"]
    m = default_midi_map(names, (48.0, 72.0))
    assert m.notes == (48.0, 72.0) and default_midi_map(NAMES, (48.0, 72.0)).notes is None  # no normPitch: no keys
    assert default_midi_map(names).notes is None  # a model without a known range
    key = mido.Message("note_on", channel=0, note=60, velocity=90)
    assert midi_update(key, m) == {"normPitch": pytest.approx(0.5)}
    assert midi_update(key.copy(note=72), m) == {"normPitch": pytest.approx(1.0)}
    assert midi_update(key.copy(note=47), m) is None  # outside what the synth was trained on: nothing moves
    assert midi_update(key.copy(velocity=0), m) is None  # a note on at velocity 0 is a note off
    assert midi_update(mido.Message("note_off", note=60), m) is None
    assert midi_update(mido.Message("control_change", control=2, value=127), m) == {"instID": 1.0}
    assert midi_update(key.copy(channel=3), MidiMap({}, channel=1, notes=(48.0, 72.0))) is None

    def write(obj) -> str:
        p = tmp_path / "map.json"
        p.write_text(json.dumps(obj))
        return str(p)

    assert load_midi_map(write({"cc": {}}), names, (48.0, 72.0)).notes == (48.0, 72.0)
    assert load_midi_map(write({"cc": {}, "notes": False}), names, (48.0, 72.0)).notes is None
    assert load_midi_map(write({"cc": {}, "notes": [36, 84]}), names).notes == (36.0, 84.0)
    for bad, says in [([60, 48], "notes: must be null, false or [low, high]"), ([0, 200], "0..127"), (5, "[low")]:
        with pytest.raises(InvalidArgument, match="map.json") as exc:
            load_midi_map(write({"cc": {}, "notes": bad}), names)
        assert says in str(exc.value)
    with pytest.raises(InvalidArgument, match="not a param of this synth"):
        load_midi_map(write({"cc": {}, "notes": [48, 72]}), NAMES)


def test_terminal_lines():
    line = parse_line("dim0=0.2 dim1=0.9 100 @1")
    assert (line.values, line.glide_ms, line.voice, line.quit) == ({"dim0": 0.2, "dim1": 0.9}, 100.0, 1, False)
    assert parse_line("q").quit and parse_line("dim0=x").errors

    errors: list[str] = []
    knobs = Knobs(NAMES, voices=2, glide_ms=30, report=errors.append)
    StdinKnobs(knobs, io.StringIO("dim0=0.7\nbogus=1\ndim1=0.1 5 @1\n")).thread.join(5)
    assert knobs.drain() is None  # end of input ended the session
    knobs2 = Knobs(NAMES, voices=2, glide_ms=30, report=errors.append)
    StdinKnobs(knobs2, io.StringIO("dim0=0.7\nbogus=1\ndim1=0.1 5 @1\n"), stop_on_eof=False).thread.join(5)
    got = knobs2.drain()
    assert [(u.values, u.voice, u.glide_ms) for u in got] == [({"dim0": 0.7}, None, 30), ({"dim1": 0.1}, 1, 5.0)]
    assert any("unknown params ['bogus']" in e for e in errors)


def test_remote_updates_are_one_voice():
    errors: list[str] = []
    knobs = Knobs(NAMES, voices=2, report=errors.append)
    knobs.put({"dim0": 0.3}, glide_ms=10)
    knobs.put({"dim1": 0.4}, voice=1, source="osc")
    knobs.close()
    assert list(remote_updates(knobs)) == [{"dim0": 0.3, "_glide_ms": 10}]
    assert "a remote Play stream has one voice" in errors[0]
