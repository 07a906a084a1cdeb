"""`smf rnn …` and `smf conditioning …` — train, generate, play and export RNN models; make conditioning arrays.

    smf rnn train --data datasets/tones --prop normPitch --name tones --steps 2000
    smf rnn generate -m rnn/tones --cond glide.npy --duration 10 --voices 4 -o out/
    smf rnn generate -m rnn/tones --const 0.2 --const 0.8 --duration 2          # two constant voices
    smf rnn train --data datasets/tones --generate rms centroid --rate 125 --prop normPitch --name tones-ctl
    smf rnn train --data datasets/tones --prop rms centroid --name tones-audio   # audio tier on analysis controls
    smf rnn generate -m rnn/tones-audio --chain rnn/tones-ctl --cond glide.npy --duration 4   # chained tiers
    smf rnn play -m rnn/tones                                    # sound card; type normPitch=0.7 [glide_ms]
    smf rnn play -m rnn/tones --osc 9000 --midi nanoKONTROL --midi-map cc.json --voices 2   # /smf/voice/1/dim0 0.3
    smf rnn play -m rnn/tones --wav live.wav                     # a file instead of the sound card
    smf rnn play -m rnn/demo-x --chain rnn/demo-x-controls                      # a two-tier synth: dim0=0.2 ...
    smf rnn ls ; smf rnn export -m rnn/tones
    smf rnn evaluate -m rnn/tones -o eval/                                      # control-following score + plot
    smf conditioning make glide.npy --col glide:0.2,0.8,0.2 --col const:0.5
    smf conditioning make grid.npy --grid 0,0.5,1 --grid 0,1                  # constant voices over a grid
    smf conditioning make path.npy --path cells.json --duration 4 --d0 21 --d1 21

Every command runs against the embedded store (--store, $SMF_STORE) or, with --remote HOST:PORT, against a
running RnnService.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from smf.common.errors import InvalidArgument
from smf.common.store_args import store_parent
from smf.rnn import conditioning as cond


def register(subparsers) -> None:
    common = store_parent()
    common.add_argument(
        "--remote",
        metavar="HOST:PORT",
        default=None,
        help="use a running RnnService instead of this process (token from $SMF_TOKEN)",
    )
    p = subparsers.add_parser("rnn", help="train, generate from, play and export conditional RNN models")
    sub = p.add_subparsers(dest="rnn_command", metavar="ACTION", required=True)
    for add in (_add_train, _add_generate, _add_play, _add_ls_export, _add_evaluate):
        add(sub, common)
    _add_conditioning(subparsers, common)


def _add_train(sub, common) -> None:
    """`smf rnn train`."""
    t = sub.add_parser("train", parents=[common], help="train an MTCRNN tier (audio, or parameter with --generate)")
    t.add_argument("--data", required=True, help="dataset or grid id (datasets/tones), store URI, or local folder")
    t.add_argument(
        "--prop",
        nargs="+",
        required=True,
        metavar="NAME",
        help="conditioning params, in column order; rms and centroid are analysed from the audio",
    )
    t.add_argument(
        "--generate",
        nargs="+",
        default=None,
        metavar="NAME",
        help="train a parameter tier generating these controls (e.g. rms centroid) at --rate",
    )
    t.add_argument("--rate", type=int, default=None, help="a parameter tier's step rate in Hz (e.g. 125)")
    t.add_argument("-n", "--name", default=None, help="run name (rnn/NAME); resumes if it exists; default new id")
    t.add_argument("--config", default=None, help="JSON file of further TrainConfig fields")
    for flag, typ in (
        ("--hidden", int),
        ("--layers", int),
        ("--seq-len", int),
        ("--batch", int),
        ("--steps", int),
        ("--lr", float),
        ("--lr-end", float),
        ("--tfr", float),
        ("--tfr-end", float),
        ("--cross", float),
        ("--preemphasis", float),
        ("--lpc", int),
        ("--oscillator", int),
        ("--checkpoint-every", int),
        ("--seed", int),
        ("--sample-rate", int),
    ):
        t.add_argument(flag, type=typ, default=None)
    t.add_argument("--device", default=None, help="auto (default), cpu, cuda")
    t.set_defaults(func=cmd_train)


def _add_generate(sub, common) -> None:
    """`smf rnn generate`."""
    g = sub.add_parser("generate", parents=[common], help="render audio from a conditioning array")
    g.add_argument("-m", "--model", required=True, help="run id (rnn/NAME) or artifact URI")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--cond", help=".npy [N, C] or [B, N, C], columns in the model's param order")
    src.add_argument(
        "--const",
        nargs="+",
        action="append",
        type=float,
        metavar="V",
        help="constant values, one per param; repeat for more voices",
    )
    src.add_argument("--params", help="a .params file: its model params are sampled at 1000 points/s")
    g.add_argument("--duration", type=float, default=None, help="seconds (default: 1 s per 1000 points)")
    g.add_argument("--voices", type=int, default=0, help="voices for an [N, C] array (default: its B)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None, help="same seed -> same audio")
    g.add_argument("--step", type=int, default=0, help="checkpoint step (default newest)")
    g.add_argument("-o", "--out", default="rnn-out", help="output folder for voice-<i>.wav (local mode)")
    g.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="compiled CPU loop: int8 is ~3x faster than fp32 at the same validation loss (local mode)",
    )
    g.add_argument(
        "--chain",
        metavar="PARAM_MODEL",
        default=None,
        help="a parameter tier run: it turns the conditioning (its params) into the controls the audio "
        "model (-m) is conditioned on; writes controls.npy too (local mode)",
    )
    g.add_argument("--chain-step", type=int, default=0, help="checkpoint step of --chain (default newest)")
    g.set_defaults(func=cmd_generate)


def _add_play(sub, common) -> None:
    """`smf rnn play`."""
    pl = sub.add_parser(
        "play",
        parents=[common],
        help="live, on the sound card: knobs from NAME=VALUE [GLIDE_MS] lines, OSC or MIDI CC",
    )
    pl.add_argument("-m", "--model", default="", help="the audio tier to play (required unless --list-devices)")
    pl.add_argument("--values", nargs="*", type=float, default=None, help="starting values (default 0.5 each)")
    pl.add_argument("--wav", "--out", dest="wav", default="", help="write the session to this wav file instead")
    pl.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default: until EOF or q)")
    pl.add_argument("--chunk-ms", type=float, default=100.0, help="audio made per step; knobs apply per chunk")
    pl.add_argument("--temperature", type=float, default=1.0)
    pl.add_argument("--seed", type=int, default=None)
    pl.add_argument("--step", type=int, default=0)
    pl.add_argument("--chain", default="", help="parameter tier whose params are the knobs (a two-tier synth)")
    pl.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8"],
        default="int8",
        help="compiled loop's number format (local; default int8: the one that keeps an SMF-size voice real time)",
    )
    pl.add_argument("--voices", type=int, default=1, help="voices played together (local); knobs @N or OSC voice/N")
    pl.add_argument("--max-voices", type=int, default=0, help="voice budget (default $SMF_MAX_VOICES or 8)")
    pl.add_argument("--glide-ms", type=float, default=30.0, help="glide of a knob move that names none")
    dev = pl.add_argument_group("sound card (PortAudio)")
    dev.add_argument("--list-devices", action="store_true", help="print the audio devices and exit")
    dev.add_argument("--device", default=None, help="output device: index or name from --list-devices")
    dev.add_argument("--blocksize", type=int, default=0, help="frames per PortAudio callback (0: its choice)")
    dev.add_argument("--latency", default=None, help="PortAudio output latency: low, high or seconds")
    dev.add_argument("--buffer-ms", type=float, default=300.0, help="how far the generator runs ahead of the device")
    kn = pl.add_argument_group("knobs from other programs")
    kn.add_argument("--osc", type=int, default=None, metavar="PORT", help="OSC on udp PORT: /smf/<param> <value>")
    kn.add_argument("--osc-host", default="127.0.0.1", help="address the OSC server binds (0.0.0.0: the network)")
    kn.add_argument("--midi", default="", metavar="PORT", help="MIDI input (a name part; else a virtual port)")
    kn.add_argument("--midi-map", default="", metavar="FILE", help='{"cc": {"1": "dim0"}, "channel": null}')
    kn.add_argument("--midi-api", default="", choices=["", "alsa", "jack"], help="MIDI system (default rtmidi's)")
    pl.set_defaults(func=cmd_play)


def _add_ls_export(sub, common) -> None:
    """`smf rnn ls` and `smf rnn export`."""
    ls = sub.add_parser("ls", parents=[common], help="list trained models and their params")
    ls.set_defaults(func=cmd_ls)

    ex = sub.add_parser("export", parents=[common], help="TorchScript export (runs without smf)")
    ex.add_argument("-m", "--model", required=True)
    ex.add_argument("--step", type=int, default=0)
    ex.set_defaults(func=cmd_export)


def _add_evaluate(sub, common) -> None:
    """`smf rnn evaluate`."""
    ev = sub.add_parser(
        "evaluate", parents=[common], help="control-following score: do renders go where the knobs say?"
    )
    ev.add_argument("-m", "--model", required=True)
    ev.add_argument("--chain", default=None, help="parameter tier that turns the knobs into this model's controls")
    ev.add_argument("--grid", default=None, help="grid/dataset to follow (default: the data the model trained on)")
    ev.add_argument("--step", type=int, default=0)
    ev.add_argument("--duration", type=float, default=3.0, help="seconds per gesture render (default 3)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    ev.add_argument(
        "--voices",
        type=int,
        default=None,
        help="renders per gesture (distinct sampling streams, 1..16); a row is their mean Spearman (default 4)",
    )
    ev.add_argument(
        "--zero",
        action="store_true",
        help="render with the conditioning zeroed (what a model that ignores its knobs scores)",
    )
    ev.add_argument("-o", "--out", default=None, help="folder for control.json and control.png (default ./eval-NAME)")
    ev.set_defaults(func=cmd_evaluate)


def _add_conditioning(subparsers, common) -> None:
    """`smf conditioning make` (a command of its own, beside `smf rnn`)."""
    c = subparsers.add_parser("conditioning", help="make conditioning arrays (gestures) for `smf rnn generate`")
    csub = c.add_subparsers(dest="conditioning_command", metavar="ACTION", required=True)
    mk = csub.add_parser(
        "make",
        help="write a conditioning .npy",
        description="Columns are given in the model's param order. Column specs: " + cond._SPEC_HELP,
    )
    mk.add_argument("out", help="output .npy")
    kind = mk.add_mutually_exclusive_group(required=True)
    kind.add_argument("--col", action="append", metavar="SPEC", help="one column (repeat per param)")
    kind.add_argument(
        "--grid",
        action="append",
        metavar="V1,V2,...",
        help="values of one param (repeat per param): one constant voice per combination",
    )
    kind.add_argument("--path", metavar="JSON", help="auditioner path export: cells [[dim0, dim1], ...]")
    mk.add_argument("--points", type=int, default=cond.POINTS, help="points of a --col gesture (default 1000)")
    mk.add_argument("--duration", type=float, default=None, help="--path: nominal seconds (1000 points/s)")
    mk.add_argument("--d0", type=int, default=None, help="--path: grid width when cells are integer indices")
    mk.add_argument("--d1", type=int, default=None, help="--path: grid height")
    mk.add_argument("--glide", action="store_true", help="--path: glide between cells instead of holding each")
    mk.add_argument(
        "--params-names", nargs="+", default=None, metavar="NAME", help="check the columns against these param names"
    )
    mk.set_defaults(func=cmd_conditioning_make)


# --- training -------------------------------------------------------------------------------------------------


def _train_fields(args) -> dict:
    fields = {}
    if args.config:
        with open(args.config) as f:
            fields.update(json.load(f))
    fields["data"] = args.data
    fields["props"] = args.prop
    if args.generate:
        fields["generate"] = args.generate
    for name in (
        "rate",
        "hidden",
        "layers",
        "seq_len",
        "batch",
        "steps",
        "lr",
        "lr_end",
        "tfr",
        "tfr_end",
        "cross",
        "preemphasis",
        "lpc",
        "oscillator",
        "checkpoint_every",
        "seed",
        "sample_rate",
        "device",
    ):
        v = getattr(args, name)
        if v is not None:
            fields[name] = v
    return fields


def cmd_train(args) -> int:
    from smf.rnn.runs import prepare_run, run_id_for

    fields = _train_fields(args)
    if args.remote:
        from smf.rnn.client import RnnClient

        run_id = run_id_for(args.name)  # the service checks the config itself

        with RnnClient(args.remote) as rnn:
            device = fields.pop("device", None)
            if device:
                fields["device"] = device
            op = rnn.start_training(fields.pop("data"), fields.pop("props"), run_id=run_id, **fields)
            print(f"operation {op.id}: training {run_id} on {args.remote}")
            done = rnn.wait(op.id, on_progress=lambda o: print(f"\r{o.progress.message}", end="", flush=True))
            print(f"\ndone: {', '.join(done.result_uris)}")
        return 0

    from smf.common.progress import progress_bar
    from smf.common.store import open_store
    from smf.rnn.train import train

    cfg, run_id = prepare_run(fields, args.name)  # the checks of StartTraining
    store = open_store(args.store)
    bar = progress_bar(total=cfg.steps, desc=run_id, unit="step")

    def on_step(step: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update(0)

    progress = train(
        cfg,
        store,
        run_id,
        log=lambda m: bar.write(m) if m.startswith(("resumed", "stopped")) else None,
        on_step=on_step,
    )
    bar.close()
    print(f"{progress['state']} at step {progress['step']}, loss {progress['loss']:.4f}: {store.key_uri(run_id)}")
    return 0


# --- generation -----------------------------------------------------------------------------------------------


def _conditioning_from_args(args, names: list[str] | None) -> np.ndarray:
    if args.cond:
        return cond.load_array(args.cond, field="--cond")
    if args.const:
        return (
            cond.constant_batch([[v] for v in args.const[0]])
            if len(args.const) == 1
            else np.stack([np.repeat(np.asarray(v, np.float32)[None], 2, axis=0) for v in args.const])
        )
    from smf.common.params import read_params, sample_param

    pf = read_params(args.params)
    if names is None:
        raise InvalidArgument("--params", "needs the model's param names (local mode)")
    missing = [n for n in names if n not in pf.params]
    if missing:
        raise InvalidArgument(args.params, f"is missing params {missing} the model needs ({names})")
    end = max(pf.params[n].times[-1] for n in names)
    times = np.linspace(0, end, max(2, round(end * cond.POINTS)))
    args.duration = args.duration or float(end)
    return cond.columns(*[sample_param(pf.params[n], times, clamp=True) for n in names])


def _write_voices(out: str, audio: np.ndarray, sample_rate: int, conditioning: np.ndarray) -> None:
    """voice-<i>.wav per voice plus the conditioning actually used, in the local output folder."""
    import torch
    from smf.common.audio import save_wav

    os.makedirs(out, exist_ok=True)
    for i, voice in enumerate(audio):
        save_wav(os.path.join(out, f"voice-{i}.wav"), torch.from_numpy(np.ascontiguousarray(voice)), sample_rate)
    cond.save_array(os.path.join(out, "conditioning.npy"), conditioning)


def cmd_generate(args) -> int:
    if args.chain and not args.remote:
        return _generate_chain(args)
    if args.remote:
        from smf.rnn.client import RnnClient

        with RnnClient(args.remote) as rnn:
            arr = _conditioning_from_args(args, None) if not args.params else None
            if arr is None:
                raise InvalidArgument("--params", "use --cond or --const with --remote")
            duration = args.duration or arr.shape[-2] / cond.POINTS
            result, _ = rnn.generate(
                args.model,
                arr,
                duration,
                step=args.step,
                temperature=args.temperature,
                seed=args.seed,
                voices=args.voices,
                chain_model=args.chain or "",
                chain_step=args.chain_step or 0,
            )
            print(f"{result.voices} voice(s), {result.samples} samples in {result.seconds_taken:.2f} s:")
            for uri in result.wav_uris:
                print(f"  {uri}")
        return 0

    from smf.common.store import open_store
    from smf.rnn.generate import generate
    from smf.rnn.runs import run_id_of
    from smf.rnn.train import load_run

    store = open_store(args.store)
    model, _ = load_run(store, run_id_of(args.model), args.step or None)
    names = list(model.config.param_names)
    arr = cond.check_array(_conditioning_from_args(args, names), names)
    if arr.shape[0] == 1 and args.voices > 1:
        arr = np.repeat(arr, args.voices, axis=0)
    duration = args.duration or arr.shape[1] / cond.POINTS
    t0 = time.monotonic()
    audio = np.asarray(
        generate(model, arr, duration, temperature=args.temperature, seed=args.seed, precision=args.precision)
    )
    taken = time.monotonic() - t0
    _write_voices(args.out, audio, model.config.sample_rate, arr)
    print(
        f"{len(audio)} voice(s) x {duration:g} s in {taken:.2f} s "
        f"({len(audio) * duration / taken:.2f}x real time): {os.path.abspath(args.out)}/voice-*.wav"
    )
    return 0


def _generate_chain(args) -> int:
    """`smf rnn generate -m AUDIO --chain PARAM`: the parameter tier's params in, audio + its controls out."""
    from smf.common.store import open_store
    from smf.rnn.generate import generate_chain
    from smf.rnn.runs import run_id_of
    from smf.rnn.train import load_run

    store = open_store(args.store)
    audio_tier, _ = load_run(store, run_id_of(args.model), args.step or None)
    param_tier, _ = load_run(store, run_id_of(args.chain), args.chain_step or None)
    names = list(param_tier.config.param_names)
    arr = cond.check_array(_conditioning_from_args(args, names), names)
    duration = args.duration or arr.shape[1] / cond.POINTS
    t0 = time.monotonic()
    audio, controls = generate_chain(
        param_tier,
        audio_tier,
        arr,
        duration,
        seed=args.seed,
        temperature=args.temperature,
        voices=args.voices or None,
        precision=args.precision,
    )
    taken = time.monotonic() - t0
    _write_voices(args.out, audio, audio_tier.config.sample_rate, arr)
    cond.save_array(os.path.join(args.out, "controls.npy"), controls)
    print(
        f"{len(audio)} voice(s) x {duration:g} s in {taken:.2f} s via {param_tier.config.generate} at "
        f"{param_tier.config.step_rate} Hz: {os.path.abspath(args.out)}/voice-*.wav, controls.npy"
    )
    return 0


# --- live -----------------------------------------------------------------------------------------------------


def cmd_play(args) -> int:
    from smf.rnn import play

    if args.list_devices:
        print(play.device_table())
        return 0
    if not args.model:
        raise InvalidArgument("--model", "is required: the audio tier to play (smf rnn ls lists them)")
    voices = play.check_voice_budget(args.voices, args.max_voices or None)
    if args.remote:
        names, sr, chunks = _remote_session(args, voices)
    else:
        names, sr, chunks = _local_session(args, voices)
    sources = _knob_sources(args, chunks.knobs)
    where = args.wav or f"device {args.device or '(default)'}"
    print(
        f"params {names}; type NAME=VALUE [GLIDE_MS] [@VOICE] and Enter, 'q' to stop; playing to {where}",
        file=sys.stderr,
    )

    def status(values, stats, fill):
        shown = "  ".join(f"{n}={v:.3f}" for n, v in zip(names or [], values, strict=False))
        line = f"{shown}  buffer {1000 * fill / sr:.0f} ms  underruns {stats.underruns}" if not args.wav else shown
        print("\r" + line, end="", file=sys.stderr)

    try:
        if args.wav:
            stats = play.play_wav(chunks, args.wav, sr, on_status=status)
        else:
            stats = play.play_device(
                chunks,
                sr,
                device=args.device,
                blocksize=args.blocksize,
                latency=args.latency,
                buffer_ms=args.buffer_ms,
                on_status=status,
            )
    finally:
        for s in sources:
            s.close()
    print(file=sys.stderr)
    print(f"wrote {args.wav}: {stats.frames / sr:.2f} s" if args.wav else stats.summary(), file=sys.stderr)
    return 0


class _Session:
    """A session's chunks with the knobs that steer them (what cmd_play hands to a sink)."""

    def __init__(self, chunks, knobs):
        self.chunks, self.knobs = chunks, knobs

    def __iter__(self):
        return iter(self.chunks)


def _local_session(args, voices: int):
    from smf.common.store import open_store
    from smf.rnn.knobs import Knobs
    from smf.rnn.live import LiveVoice
    from smf.rnn.play import Ensemble, local_chunks
    from smf.rnn.runs import ModelCache

    cache = ModelCache(open_store(args.store), precision=args.precision)
    loaded = cache.load(args.model, args.step)
    chain = cache.load(args.chain).model if args.chain else None
    names = list((chain or loaded).config.param_names)
    sr = loaded.config.sample_rate
    values = args.values if args.values else [0.5] * len(names)
    cond.check_array(np.asarray([values]), names, field="--values")
    seeds = [None if args.seed is None else args.seed + i for i in range(voices)]
    ensemble = Ensemble(
        [LiveVoice(loaded.generator, values, temperature=args.temperature, seed=s, chain=chain) for s in seeds],
        names,
        sr,
    )
    knobs = Knobs(names, voices=voices, glide_ms=args.glide_ms)
    knobs.pitch = loaded.config.pitch if chain is None else None  # where MIDI keys put normPitch (an oscillator's)
    chunk = max(16, int(sr * args.chunk_ms / 1000))
    return names, sr, _Session(local_chunks(ensemble, knobs, chunk=chunk, seconds=args.seconds), knobs)


def _remote_session(args, voices: int):
    from smf.rnn.client import RnnClient
    from smf.rnn.knobs import Knobs
    from smf.rnn.play import remote_updates

    if voices != 1:
        raise InvalidArgument("--voices", "a remote Play stream is one voice; run one smf rnn play per voice")
    client = RnnClient(args.remote)
    names, sr = None, 16000
    for m in client.list_models():
        if m.ref.id == args.model or m.ref.id == f"rnn/{args.model}":
            sr = m.sample_rate or 16000
            names = names or list(m.param_names)
        if args.chain and (m.ref.id == args.chain or m.ref.id == f"rnn/{args.chain}"):
            names = list(m.param_names)
    if names is None:
        raise InvalidArgument("--model", f"{args.model} is not a model of the RnnService at {args.remote}")
    knobs = Knobs(names, voices=1, glide_ms=args.glide_ms)
    chunks = client.play(
        args.model,
        args.values,
        updates=remote_updates(knobs),
        step=args.step,
        chunk_samples=int(sr * args.chunk_ms / 1000),
        temperature=args.temperature,
        seed=args.seed,
        max_ahead_ms=int(args.buffer_ms),
        max_seconds=args.seconds,
        chain_model=args.chain,
    )
    return names, sr, _Session(chunks, knobs)


def _knob_sources(args, knobs) -> list:
    """stdin always (NAME=VALUE lines); OSC and MIDI when asked. Returns what must be closed at the end."""
    from smf.rnn.knobs import MidiKnobs, OscKnobs, StdinKnobs, default_midi_map, load_midi_map

    StdinKnobs(knobs, stop_on_eof=args.seconds <= 0)
    sources: list = []
    if args.osc is not None:
        osc = OscKnobs(knobs, host=args.osc_host, port=args.osc)
        print(f"OSC on udp {osc.host}:{osc.port}: /smf/<param> <value> [glide_ms]", file=sys.stderr)
        sources.append(osc)
    if args.midi:
        if args.midi_map:  # knobs.pitch: the model's normPitch MIDI range (a local, unchained model), else None
            mapping = load_midi_map(args.midi_map, knobs.names, knobs.pitch)
        else:
            mapping = default_midi_map(knobs.names, knobs.pitch)
        midi = MidiKnobs(knobs, args.midi, mapping, api=args.midi_api)
        cc = ", ".join(f"CC{k}->{v}" for k, v in sorted(mapping.cc.items()))
        if mapping.notes is not None:
            cc += f"; keys {mapping.notes[0]:.0f}..{mapping.notes[1]:.0f} -> normPitch"
        print(f"MIDI from {midi.name}: {cc}", file=sys.stderr)
        sources.append(midi)
    return sources


# --- listing / export -----------------------------------------------------------------------------------------


def cmd_ls(args) -> int:
    if args.remote:
        from smf.rnn.client import RnnClient

        with RnnClient(args.remote) as rnn:
            models = [(m.ref.id, m) for m in rnn.list_models()]
    else:
        from smf.common.store import open_store
        from smf.rnn.runs import list_runs

        models = [(r.run_id, r) for r in list_runs(open_store(args.store))]
    for run_id, m in models:  # a ModelInfo message or a RunSummary: the same fields
        print(
            f"{run_id}  params={list(m.param_names)}  H{m.hidden} L{m.layers}  steps={list(m.steps)[-3:]}"
            f"  {m.state} loss={m.loss:.4f}"
        )
    if not models:
        print("no RNN models")
    return 0


def cmd_export(args) -> int:
    if args.remote:
        from smf.rnn.client import RnnClient

        with RnnClient(args.remote) as rnn:
            print(rnn.export(args.model, args.step))
        return 0
    from smf.common.refs import ANY
    from smf.common.store import open_store
    from smf.rnn.runs import ModelCache, export_run, resolve_run

    store, run_id = resolve_run(open_store(args.store), args.model, allowed=ANY)
    print(export_run(store, run_id, ModelCache(store).load(run_id, args.step)))
    return 0


def cmd_evaluate(args) -> int:
    if args.remote:
        raise InvalidArgument("remote", "evaluate reads the model and its grid from the store: run it with --store")
    from smf.common.files import atomic_write_bytes
    from smf.common.refs import ANY
    from smf.common.store import open_store
    from smf.rnn.evaluate import DEFAULT_VOICES, evaluate_run, format_table, plot_report
    from smf.rnn.runs import resolve_run

    store, run_id = resolve_run(open_store(args.store), args.model, allowed=ANY)
    report = evaluate_run(
        store,
        run_id,
        chain=args.chain,
        data=args.grid,
        step=args.step,
        duration=args.duration,
        seed=args.seed,
        precision=args.precision,
        zero_conditioning=args.zero,
        voices=DEFAULT_VOICES if args.voices is None else args.voices,
    )
    print(format_table(report))
    if "pitch" in report:
        p = report["pitch"]
        print(f"pitch: median |error| {p['median_cents']:.0f} cents, worst {p['max_cents']:.0f} cents")
    out = args.out or f"eval-{run_id.split('/')[-1]}"
    os.makedirs(out, exist_ok=True)
    atomic_write_bytes(os.path.join(out, "control.json"), (json.dumps(report, indent=1) + "\n").encode())
    atomic_write_bytes(os.path.join(out, "control.png"), plot_report(report))
    print(f"scores: {os.path.join(out, 'control.json')}\nplot:   {os.path.join(out, 'control.png')}")
    return 0


# --- conditioning ---------------------------------------------------------------------------------------------


def cmd_conditioning_make(args) -> int:
    if args.col:
        arr = cond.columns(*[cond.parse_column(s, args.points) for s in args.col])
    elif args.grid:
        try:
            values = [[float(v) for v in g.split(",")] for g in args.grid]
        except ValueError as exc:
            raise InvalidArgument("--grid", f"expected comma-separated numbers: {exc}") from None
        arr = cond.constant_batch(values)
    else:
        spec = cond.read_path(args.path)
        duration = args.duration or spec.get("duration")
        if not duration:
            raise InvalidArgument("--duration", "needed for --path (or a 'duration' in the JSON)")
        arr = cond.path_array(
            spec["cells"],
            float(duration),
            d0=args.d0 or spec.get("d0"),
            d1=args.d1 or spec.get("d1"),
            glide_cells=args.glide,
        )
    if args.params_names:
        cond.check_array(arr, args.params_names)
    else:
        cond.check_array(arr, [f"col{i}" for i in range(arr.shape[-1])])
    cond.save_array(args.out, arr)
    print(f"wrote {args.out}: shape {list(arr.shape)}")
    return 0
