"""Measured: an RNN trained briefly on the built-in `tones` follows normPitch — generated f0 per requested value.

Slow (minutes on a GPU, much longer on 2 CPU cores): runs with SMF_SLOW=1. Size and length from env:
SMF_PITCH_STEPS (default 3000), SMF_PITCH_HIDDEN (256), SMF_PITCH_LAYERS (2), SMF_PITCH_TFR (0.95). Prints a table; with
SMF_PITCH_OUT=<dir> also writes pitch.json and the generated wavs there.
"""

import itertools
import json
import os
import time

import numpy as np
import pytest
import torch
from smf.common.store import open_store
from smf.rnn import conditioning as cond
from smf.rnn.pitch import estimate_f0

VALUES = [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SMF_SLOW") != "1", reason="slow: set SMF_SLOW=1")
def test_generated_pitch_follows_normpitch(tmp_path):
    from smf.datasets import make_dataset, tone_f0
    from smf.rnn.generate import Generator
    from smf.rnn.train import TrainConfig, load_run, train

    steps = int(os.environ.get("SMF_PITCH_STEPS", "3000"))
    store = open_store(f"file://{tmp_path}/store")
    make_dataset("tones", store, n_files=50, duration=1.0)
    cfg = TrainConfig.from_dict(
        {
            "data": "datasets/tones",
            "props": ["normPitch"],
            "hidden": int(os.environ.get("SMF_PITCH_HIDDEN", "256")),
            "layers": int(os.environ.get("SMF_PITCH_LAYERS", "2")),
            "seq_len": 512,
            "batch": 64,
            "lr": 1e-3,
            "tfr": float(os.environ.get("SMF_PITCH_TFR", "0.95")),
            "steps": steps,
            "checkpoint_every": steps,
            "progress_every": max(steps // 10, 1),
        }
    )
    t0 = time.monotonic()
    progress = train(cfg, store, "rnn/pitch", log=print)
    train_s = time.monotonic() - t0
    model, _ = load_run(store, "rnn/pitch")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = Generator(model.to(device), backend="torch")
    arr = cond.constant_batch([VALUES])  # 5 constant voices
    t0 = time.monotonic()
    audio = gen.generate(arr, 1.5, seed=0)
    gen_s = time.monotonic() - t0
    rows = []
    for v, a in zip(VALUES, audio, strict=False):
        f0 = estimate_f0(a[8000:], 16000)
        rows.append(
            {
                "normPitch": v,
                "target_hz": tone_f0(v),
                "measured_hz": f0,
                "cents_off": 1200 * np.log2(f0 / tone_f0(v)),
                "rms": float(np.sqrt((a**2).mean())),
            }
        )
    print(
        f"\ntrained {steps} steps in {train_s:.0f} s on {progress['device']} (final loss {progress['loss']:.3f}); "
        f"generated 5 x 1.5 s in {gen_s:.1f} s"
    )
    print("normPitch  target Hz  measured Hz  cents off  rms")
    for r in rows:
        print(
            f"{r['normPitch']:9.2f}  {r['target_hz']:9.1f}  {r['measured_hz']:11.1f}  {r['cents_off']:9.0f}  "
            f"{r['rms']:.3f}"
        )
    if os.environ.get("SMF_PITCH_OUT"):
        from smf.common.audio import save_wav

        out = os.environ["SMF_PITCH_OUT"]
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "pitch.json"), "w") as f:
            json.dump(
                {
                    "rows": rows,
                    "steps": steps,
                    "train_s": train_s,
                    "loss": progress["loss"],
                    "train_device": progress["device"],
                },
                f,
                indent=2,
            )
        for v, a in zip(VALUES, audio, strict=False):
            save_wav(os.path.join(out, f"normPitch-{v:.2f}.wav"), torch.from_numpy(a), 16000)
    measured = [r["measured_hz"] for r in rows]
    assert all(b > a for a, b in itertools.pairwise(measured)), measured  # pitch moves the right way
    assert all(abs(r["cents_off"]) < 100 for r in rows), rows  # within a semitone of the training tones
