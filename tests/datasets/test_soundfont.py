"""The soundfont dataset: real fluidsynth renders of the Debian TimGM6mb font (`make setup` installs both)."""

import math

import numpy as np
import pytest
from smf.common.errors import FailedPrecondition, InvalidArgument
from smf.common.params import read_params, validate_params
from smf.datasets import list_dataset_files, make_dataset
from smf.datasets.soundfont import DEBIAN_SF2, note_midi, soundfont
from smf.rnn.pitch import estimate_f0

SR = 16000
PROGRAMS, PITCHES = [73, 40], [55, 62, 69]  # flute, violin: clearly pitched


@pytest.fixture(scope="module")
def small_set():
    return list(soundfont(sample_rate=SR, duration=0.5, programs=PROGRAMS, pitches=PITCHES))


def test_small_set_has_one_clip_per_note_with_its_params(small_set):
    assert len(small_set) == len(PROGRAMS) * len(PITCHES)
    assert len({c.name for c in small_set}) == len(small_set)
    for k, clip in enumerate(small_set):
        program, pitch = PROGRAMS[k // len(PITCHES)], PITCHES[k % len(PITCHES)]
        assert clip.name == f"soundfont_p{program:03d}_n{pitch:03d}" and clip.params.filename == f"{clip.name}.wav"
        validate_params(clip.params, ["normPitch", "instID"], source=clip.name, all_params=True)
        pitch_p, inst_p = clip.params.params["normPitch"], clip.params.params["instID"]
        assert pitch_p.times == [0.0, 0.5] and pitch_p.values[0] == pitch_p.values[1]
        assert pitch_p.orig_units == "midiPitch" and (pitch_p.orig_minval, pitch_p.orig_maxval) == (55, 69)
        assert pitch_p.nvals == 15
        assert pitch_p.values[0] == pytest.approx((pitch - 55) / 14)
        assert inst_p.orig_units == "GM program" and inst_p.nvals == 2 and inst_p.extra["programs"] == PROGRAMS
        assert inst_p.values[0] == PROGRAMS.index(program)
        assert clip.audio.dtype == np.float32 and clip.audio.shape == (SR // 2,)


def test_notes_are_audible_and_at_their_midi_pitch(small_set):
    for k, clip in enumerate(small_set):
        pitch = PITCHES[k % len(PITCHES)]
        middle = clip.audio[SR // 8 : 3 * SR // 8]  # the sustained part: after the attack, before the release
        assert np.sqrt(np.mean(middle**2)) > 0.03, clip.name
        f0 = estimate_f0(middle, SR, fmin=50)
        cents = 1200 * math.log2(f0 / (440 * 2 ** ((pitch - 69) / 12)))
        assert abs(cents) < 30, f"{clip.name}: f0 {f0:.1f} Hz is {cents:.0f} cents off"


def test_rendering_is_deterministic(small_set):
    again = list(soundfont(sample_rate=SR, duration=0.5, programs=PROGRAMS[:1], pitches=PITCHES[:1]))
    assert again[0].audio.tobytes() == small_set[0].audio.tobytes()


def test_make_dataset_writes_wav_and_params(file_store):
    aid = make_dataset("soundfont", file_store, n_files=3, duration=0.3)
    pairs = list_dataset_files(file_store, aid)
    assert aid == "datasets/soundfont" and len(pairs) == 3 and all(p for _, p in pairs)
    # n_files spreads the notes over the default 4 x 13 grid: first, middle and last
    assert [w.rsplit("/", 1)[1] for w, _ in pairs] == [
        "soundfont_p000_n048.wav",
        "soundfont_p040_n048.wav",
        "soundfont_p073_n072.wav",
    ]
    pf = read_params(file_store.get_bytes(pairs[2][1]))
    assert pf.params["instID"].values == [1.0, 1.0] and pf.params["normPitch"].values == [1.0, 1.0]


def test_missing_soundfont_names_the_debian_package(monkeypatch, tmp_path):
    with pytest.raises(FailedPrecondition, match="timgm6mb-soundfont"):
        soundfont(sf2=tmp_path / "none.sf2", programs=[0], pitches=[60])
    monkeypatch.setenv("SMF_SOUNDFONT", str(tmp_path / "gone.sf2"))
    with pytest.raises(FailedPrecondition, match="gone.sf2.*timgm6mb-soundfont"):
        soundfont(programs=[0], pitches=[60])


def test_missing_fluidsynth_names_the_debian_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FailedPrecondition, match="Debian package fluidsynth"):
        soundfont(sf2=DEBIAN_SF2)


def test_bad_options_are_invalid_arguments():
    with pytest.raises(InvalidArgument, match="pitches"):
        soundfont(pitches=[60, 60])
    with pytest.raises(InvalidArgument, match="n_files"):
        soundfont(99, programs=[0], pitches=[60])
    with pytest.raises(InvalidArgument, match="sample_rate"):
        soundfont(sample_rate=192000)


def test_midi_file_bytes():
    data = note_midi(73, 60, 100, hold_ms=750, total_ms=1000)
    assert data[:14] == b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x03\xe8"  # format 0, one track, 1000 ticks/quarter
    assert b"\xc0\x49" in data and b"\x90\x3c\x64" in data  # program change 73, note on 60 velocity 100
    assert b"\x85\x6e\x80\x3c\x00" in data and data.endswith(
        b"\x81\x7a\xff\x2f\x00"
    )  # off after 750 ticks, end 250 later
