"""`smf gan …` — train a GAN from an SMF config, sample it at random, render latents, list models.

smf gan train -n mygan services/gan/configs/tiny.json        # trains here, into gan/mygan in the store
smf gan train -n mygan cfg.json --remote localhost:50051      # as a job of the GAN service
smf gan sample random -m mygan -n 16 --seed 0                 # -> samples/<id>/<i>.wav + <i>.pt
smf gan render -m mygan a.pt b.pt                             # -> renders/<id>/<i>.wav
smf gan ls
"""

from __future__ import annotations

import sys
from pathlib import Path

from smf.common.errors import InvalidArgument
from smf.common.refs import ANY, is_uri, resolve
from smf.common.store import open_store
from smf.common.store_args import store_parent


def register(subparsers) -> None:
    common = store_parent()
    common.add_argument(
        "--remote",
        metavar="HOST:PORT",
        nargs="+",
        default=None,
        help="use the GAN service at HOST:PORT (several = spread renders) instead of running here",
    )
    p = subparsers.add_parser("gan", help="train, sample and render progressive spectrogram GANs")
    sub = p.add_subparsers(dest="gan_command", metavar="ACTION", required=True)

    t = sub.add_parser("train", parents=[common], help="train (or resume) gan/NAME from an SMF JSON config")
    t.add_argument("-n", "--name", required=True, help="run name: the model is stored as gan/NAME")
    t.add_argument("config", help="SMF JSON config (output_path, loaderConfig, transformConfig, modelConfig)")
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="sample a model")
    ssub = s.add_subparsers(dest="sample_command", metavar="MODE", required=True)
    r = ssub.add_parser("random", parents=[common], help="random latents -> samples/<id>/<i>.wav + <i>.pt")
    r.add_argument("-m", "--model", required=True, help="model name (gan/NAME) or artifact URI")
    r.add_argument("-n", "--count", type=int, default=16, help="number of sounds (default 16)")
    r.add_argument("--seed", type=int, default=None, help="seed: the same seed gives the same sounds")
    r.add_argument("-o", "--out", default=None, help="also copy the wav + pt files into this local folder")
    r.set_defaults(func=cmd_sample_random)

    rd = sub.add_parser("render", parents=[common], help="render latent .pt files -> renders/<id>/<i>.wav")
    rd.add_argument("-m", "--model", required=True, help="model name (gan/NAME) or artifact URI")
    rd.add_argument("latents", nargs="+", help="latent files (.pt, a 1-D tensor each): local paths or store URIs")
    rd.add_argument("-o", "--out", default=None, help="also copy the wav files into this local folder")
    rd.set_defaults(func=cmd_render)

    ls = sub.add_parser("ls", parents=[common], help="list the GAN models in the store")
    ls.set_defaults(func=cmd_ls)


def _bar(total: int, desc: str):
    from smf.common.progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="step")


def cmd_train(args) -> int:
    if args.remote:
        from smf.gan.client import GanClient

        with GanClient(args.remote) as gan:
            op = gan.start_training(args.name, args.config)
            bar = _bar(0, f"gan/{args.name}")

            def show(o):
                bar.total = o.progress.total or bar.total
                bar.n = o.progress.step
                bar.set_postfix_str(o.progress.message, refresh=True)

            op = gan.wait(op.id, on_progress=show)
            bar.close()
            print(f"trained: {', '.join(op.result_uris)}")
        return 0
    import signal

    from smf.gan.config import load_config
    from smf.gan.runs import prepare_run, run_id_for
    from smf.gan.train import Trainer

    run_id = run_id_for(args.name)
    cfg = load_config(args.config)
    for key in cfg.ignored:
        print(f"note: {key} is accepted for compatibility but not used by smf", file=sys.stderr)
    _check_folder(cfg)
    store = open_store(args.store)
    prepare_run(store, run_id, cfg)  # the checks and config.json of StartTraining: same name, same rules
    bar = _bar(cfg.total_steps, run_id)
    trainer = Trainer(cfg, store, run_id, log=bar.write)
    bar.n = trainer.step
    signal.signal(signal.SIGTERM, lambda *_: trainer.stop_requested.set())

    def show(step, total, logs):
        bar.n = step
        bar.set_postfix(
            scale=logs["scale"], loss_d=f"{logs['loss_d']:.3f}", loss_g=f"{logs['loss_g']:.3f}", refresh=False
        )
        bar.refresh()

    try:
        state = trainer.run(args.max_steps, progress=show)
    except KeyboardInterrupt:  # Ctrl-C: keep what was learned
        trainer.save_checkpoint()
        state = "stopped"
    bar.close()
    print(
        f"{state}: {store.key_uri(trainer.run_id)} (step {trainer.step}/{trainer.total}); "
        f"plots in {store.key_uri(trainer.run_id + '/plots')}"
    )
    return 0


def _check_folder(cfg) -> None:
    """A local folder as data_path (as the original configs have it), checked file by file from the headers before
    gan/NAME is written: a bad file is named with what to do, and an AC-GAN is refused without .params. A plain
    folder (no .params) is fine otherwise: the GAN trains on the audio alone."""
    from smf.common.refs import is_local_path
    from smf.datasets import survey_folder

    path = cfg.loader.data_path
    if not is_local_path(path):
        return  # a store dataset: imported (and checked) already
    labels = [] if cfg.loader.att_dict_path else cfg.model.attributes  # att_dict labels need no .params
    survey = survey_folder(path, labels=labels, field="loaderConfig.data_path")
    print(f"{path}: {survey.summary()}", file=sys.stderr)


def cmd_sample_random(args) -> int:
    if args.remote:
        from smf.gan.client import GanClient

        with GanClient(args.remote) as gan:
            out = gan.sample_random(args.model, args.count, seed=args.seed)
        print(f"{args.count} samples (seed {out.seed}): {out.artifact_uri}")
        if args.out:
            _copy_out(open_store(args.store), out.artifact_uri, args.out)
        return 0
    from smf.common.progress import progress_bar
    from smf.gan.sample import sample_random

    store = open_store(args.store)
    bar = progress_bar(total=args.count, desc="sampling", unit="sound")

    def show(done, total):
        bar.n = done
        bar.refresh()

    aid = sample_random(store, args.model, args.count, seed=args.seed, progress=show, allowed=ANY)
    bar.close()
    print(f"{args.count} samples: {store.key_uri(aid)}")
    if args.out:
        _copy_out(store, store.key_uri(aid), args.out)
    return 0


def cmd_render(args) -> int:
    import torch
    from smf.common.latents import latent_from_bytes, read_latent
    from smf.gan.runs import load_model
    from smf.gan.sample import validate_latents, write_sounds

    store = open_store(args.store)
    rows = []
    for i, src in enumerate(args.latents):
        if is_uri(src):
            rows.append(read_latent(store, src, field=f"latents[{i}]", allowed=ANY))
        else:
            try:
                data = Path(src).read_bytes()
            except OSError as exc:
                raise InvalidArgument(f"latents[{i}]", f"{src}: {exc.strerror}") from None
            rows.append(latent_from_bytes(data, source=src, field=f"latents[{i}]"))
    if args.remote:
        from smf.gan.client import GanClient

        with GanClient(args.remote) as gan:
            out = gan.render_latents(args.model, torch.stack(rows).numpy(), output="store")
        print(f"{len(rows)} sounds: {out.artifact_uri}")
        uri = out.artifact_uri
    else:
        model = load_model(store, args.model, allowed=ANY)
        z = validate_latents(rows, model.latent_dim)
        aid = write_sounds(store, model, z, model.render(z), kind="renders")
        uri = store.key_uri(aid)
        print(f"{len(rows)} sounds: {uri}")
    if args.out:
        _copy_out(store, uri, args.out)
    return 0


def cmd_ls(args) -> int:
    if args.remote:
        from smf.gan.client import GanClient

        with GanClient(args.remote) as gan:
            rows = [
                {
                    "name": m.name,
                    "state": m.state,
                    "step": m.step,
                    "total": m.total_steps,
                    "latent_dim": m.latent_dim,
                    "sample_rate": m.sample_rate,
                    "uri": m.artifact.uri,
                }
                for m in gan.list_models()
            ]
    else:
        from smf.gan.runs import model_summary, run_names

        store = open_store(args.store)
        rows = [model_summary(store, f"gan/{r}") for r in run_names(store)]
    if not rows:
        print("no GAN models yet (smf gan train -n NAME CONFIG)")
        return 0
    print(f"{'name':24} {'state':10} {'step':>13} {'latent':>6} {'rate':>6}  uri")
    for r in rows:
        print(
            f"{r['name']:24} {r.get('state') or '-':10} {str(r['step']) + '/' + str(r['total']):>13} "
            f"{r.get('latent_dim', 0):>6} {r.get('sample_rate', 0):>6}  {r['uri']}"
        )
    return 0


def _copy_out(store, artifact_uri: str, folder: str) -> None:
    src, aid = resolve(store, artifact_uri, "samples", field="artifact_uri", allowed=ANY, any_kind=True)
    dest = Path(folder)
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for key in src.list(aid):
        if key.endswith((".wav", ".pt")):
            src.get_file(key, dest / key.rsplit("/", 1)[1])
            n += 1
    print(f"copied {n} files to {dest}")
