"""Live play on an audio server: underruns and knob-to-ear latency of `smf rnn play`'s player, no sound card needed.

    .venv/bin/python bench/live.py                       # 60 s, one SMF-size voice (H256 L4), int8, 16 kHz
    .venv/bin/python bench/live.py --seconds 10 --hidden 64 --json out.json

Starts JACK on its dummy backend at 16 kHz (its own clock: a late generator underruns for real), plays one voice of
an untrained SMF-size audio tier (generation cost does not depend on the weights) through smf.rnn.play.play_device
on PortAudio's JACK host API, and moves a knob over real OSC (UDP loopback) every 0.5 s. Prints frames played,
underruns (buffer empty / PortAudio's underflow flags), the buffer's low point, the generator's speed, and the
knob-to-ear latency: OSC send -> the first chunk generated with the new value -> when that chunk reaches the device
(its place in the buffer + PortAudio's output latency). Needs jackd2 and libportaudio2 (make system-deps).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from smf.rnn.generate import Generator  # noqa: E402
from smf.rnn.knobs import Knobs, OscKnobs  # noqa: E402
from smf.rnn.live import LiveVoice  # noqa: E402
from smf.rnn.model import RNNConfig, build_model  # noqa: E402
from smf.rnn.play import Ensemble, local_chunks, play_device  # noqa: E402
from support.jackd import JackServer  # noqa: E402

SR = 16000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--chunk-ms", type=float, default=100.0)
    ap.add_argument("--buffer-ms", type=float, default=300.0)
    ap.add_argument("--blocksize", type=int, default=256)
    ap.add_argument("--niceness", type=int, default=-10, help="the generator thread's (0: leave it)")
    ap.add_argument("--json", default="")
    a = ap.parse_args()

    torch.manual_seed(0)
    model = build_model(RNNConfig(param_names=["dim0", "dim1"], hidden=a.hidden, layers=a.layers)).eval()
    gen = Generator(model, precision=a.precision)
    names = ["dim0", "dim1"]
    knobs = Knobs(names)
    ensemble = Ensemble([LiveVoice(gen, [0.5, 0.5], seed=0)], names, SR)
    chunk = int(SR * a.chunk_ms / 1000)

    sent: list[tuple[float, float]] = []  # (time sent, value)
    heard: dict[float, float] = {}  # value -> when its first chunk reaches the device
    gen_time = [0.0]

    def timed(chunks):
        while True:
            t = time.perf_counter()
            try:
                item = next(chunks)
            except StopIteration:
                return
            gen_time[0] += time.perf_counter() - t
            yield item

    def on_status(values, stats, fill):
        v = round(values[0], 4)
        if v not in heard:  # this chunk is the first at the new value: it starts playing after what is before it
            heard[v] = time.perf_counter() + (fill - chunk) / SR + stats.latency_s

    with JackServer(rate=SR) as jack:
        osc = OscKnobs(knobs, port=0)
        from pythonosc.udp_client import SimpleUDPClient

        client = SimpleUDPClient("127.0.0.1", osc.port)
        stop = threading.Event()

        def mover():  # a knob move every 0.5 s, values never repeated
            k = 0
            while not stop.wait(0.5):
                k += 1
                v = round(0.05 + 0.9 * ((k * 0.618034) % 1.0), 4)
                sent.append((time.perf_counter(), v))
                client.send_message("/smf/dim0", [v, 0.0])

        threading.Thread(target=mover, daemon=True).start()
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        stats = play_device(
            timed(local_chunks(ensemble, knobs, chunk=chunk, seconds=a.seconds)),
            SR,
            device=str(jack.portaudio_device()),
            blocksize=a.blocksize,
            buffer_ms=a.buffer_ms,
            on_status=on_status,
            niceness=a.niceness,
        )
        wall = time.perf_counter() - t0
        stop.set()
        osc.close()

    lat = np.array([heard[v] - t for t, v in sent if v in heard]) * 1000
    out = {
        "model": f"H{a.hidden} L{a.layers} {a.precision}",
        "seconds": a.seconds,
        "wall_s": round(wall, 2),
        "frames": stats.frames,
        "underruns": stats.underruns,
        "buffer_empty": stats.empty,
        "device_underflows": stats.device_underflows,
        "missing_frames": stats.missing_frames,
        "buffer_low_ms": round(1000 * (stats.min_fill or 0) / SR, 1),
        "device_latency_ms": round(1000 * stats.latency_s, 1),
        "generator_niceness": stats.niceness,
        "generator_rtf": round(stats.generated / SR / gen_time[0], 2),
        "knob_moves": len(sent),
        "knob_moves_heard": int(len(lat)),
        "knob_to_ear_ms_p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "knob_to_ear_ms_p99": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    print(stats.summary())
    for k, v in out.items():
        print(f"{k:22s} {v}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
