"""One run from a folder of sounds to a playable synth, through the real services, resumable stage by stage.

    with local_services(store.uri) as svc:
        state = Pipeline(cfg, store, svc).run()          # -> pipelines/<name>/state.json, report.html

Stages, in order: dataset -> gan (training) -> samples -> corners -> grid -> som (linearize) -> som_render ->
rnn (trained on the linearized grid's cells, wav + .params, props dim0 dim1) -> renders (conditioning
gestures) -> report.

Each stage has a key: the sha256 of its own config and the ids of its input artifacts. A stage whose key matches the
one recorded in `pipelines/<name>/state.json` (written atomically after every stage) and whose output artifacts are
still committed in the store is skipped, so a re-run of a finished pipeline does no work and a re-run after a crash
resumes at the stage that was running. Training stages use names derived from their key, so a restarted training
job resumes from its newest checkpoint instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from smf.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from smf.common.lineage import read_manifest, write_artifact
from smf.common.refs import resolve_key
from smf.common.store import Store
from smf.pipeline.config import KNOB_PROPS, PipelineConfig, chain_props, controls_tier
from smf.pipeline.services import Services

__all__ = ["STAGES", "Pipeline", "describe", "read_state", "stage_key", "state_key"]

STAGES = (
    "dataset",
    "gan",
    "samples",
    "corners",
    "grid",
    "som",
    "som_render",
    "rnn",
    "renders",
    "control",
    "report",
)


def state_key(name: str) -> str:
    return f"pipelines/{name}/state.json"


def read_state(store: Store, name: str) -> dict:
    """The recorded state of run `name` (empty stages when it never ran)."""
    try:
        return json.loads(store.get_bytes(state_key(name)))
    except NotFound:
        return {"name": name, "stages": {}}


def stage_key(stage: str, config, inputs: list[str]) -> str:
    """Content address of a stage: its name, its config and its input artifact ids."""
    doc = json.dumps({"stage": stage, "config": config, "inputs": sorted(inputs)}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Pipeline:
    """Runs the stages of `cfg` against `services`, recording each one in the store."""

    def __init__(self, cfg: PipelineConfig, store: Store, services: Services, *, log: Callable[[str], None] = print):
        self.cfg, self.store, self.svc, self.log = cfg, store, services, log
        self.state = read_state(store, cfg.name)
        self.state.setdefault("stages", {})
        self.ran: list[str] = []  # stages that did work in this call
        self.skipped: list[str] = []  # stages found done
        self._clients: dict = {}

    # --- bookkeeping ---------------------------------------------------------------------------------------------
    def _save_state(self) -> None:
        self.state["updated_at"] = _now()
        self.store.put_bytes(
            state_key(self.cfg.name),
            (json.dumps(self.state, indent=2) + "\n").encode(),
            content_type="application/json",
        )

    def _artifacts_present(self, outputs: dict) -> bool:
        for aid in outputs.get("artifacts", []):
            try:
                read_manifest(self.store, aid)
            except NotFound:
                return False
        return True

    def _stage(self, name: str, config, inputs: list[str], fn: Callable[[str], dict]) -> dict:
        """Run `fn(key)` unless a stage with the same key is recorded and its artifacts exist; returns outputs."""
        key = stage_key(name, config, inputs)
        done = self.state["stages"].get(name)
        if done and done.get("key") == key and done.get("state") == "done" and self._artifacts_present(done["outputs"]):
            self.skipped.append(name)
            self.log(f"[{name}] unchanged, skipped ({key[:12]})")
            return done["outputs"]
        self.log(f"[{name}] running ({key[:12]})")
        t0 = time.monotonic()
        self.state["stages"][name] = {
            "key": key,
            "state": "running",
            "config": config,
            "inputs": inputs,
            "started_at": _now(),
        }
        self.state["status"] = "running"
        self._save_state()
        try:
            outputs = fn(key)
        except BaseException as exc:
            rec = self.state["stages"][name]
            rec.update(state="failed", error=getattr(exc, "message", None) or repr(exc), finished_at=_now())
            self.state.update(status="failed", error=f"{name}: {rec['error']}")
            self._save_state()
            raise
        self.state["stages"][name].update(
            state="done", outputs=outputs, finished_at=_now(), seconds=round(time.monotonic() - t0, 2)
        )
        self._save_state()
        self.ran.append(name)
        self.log(f"[{name}] done in {time.monotonic() - t0:.1f} s")
        return outputs

    def _key_of(self, uri: str) -> str:
        """Store key of an artifact URI a service returned (it must be in our store)."""
        try:
            return resolve_key(self.store, uri, field="result_uri")[1]
        except PermissionDenied:
            raise FailedPrecondition(
                f"service wrote {uri}, outside the pipeline's store {self.store.uri}; start the "
                "services with the same --store"
            ) from None

    def _client(self, name: str):
        if name not in self._clients:
            target, token = self.svc.targets[name], self.svc.token
            if name == "gan":
                from smf.gan.client import GanClient

                self._clients[name] = GanClient(target, token=token)
            elif name == "grid":
                from smf.grid.client import GridClient

                self._clients[name] = GridClient(target, token=token)
            elif name == "rnn":
                from smf.rnn.client import RnnClient

                self._clients[name] = RnnClient(target, token=token, timeout=60.0)
            elif name == "som":
                from smf.som.client import SomClient

                self._clients[name] = SomClient(target, token=token)
        return self._clients[name]

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    def _progress(self, stage: str) -> Callable:
        last = [0.0]

        def show(op) -> None:
            now = time.monotonic()
            if now - last[0] >= 5.0 or op.done:
                last[0] = now
                p = op.progress
                loss = f" loss {p.loss:.4f}" if p.loss else ""
                total = f"/{p.total}" if p.total else ""
                self.log(f"[{stage}] step {p.step}{total}{loss} {p.message}".rstrip())

        return show

    # --- the run -------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        self.state.update(name=cfg.name, config=cfg.to_dict(), store=self.store.uri, started_at=_now())
        self.state.pop("error", None)
        try:
            dataset = self._stage("dataset", self._dataset_config(), [], self._run_dataset)["dataset"]
            gan_cfg = self._gan_config(dataset)
            model = self._stage("gan", gan_cfg, [dataset], lambda k: self._run_gan(k, gan_cfg))["model"]
            samples = self._stage("samples", cfg.samples, [model], lambda k: self._run_samples(model))["samples"]
            corners = self._stage("corners", {"corners": cfg.corners}, [samples], lambda k: self._run_corners(samples))
            grid = self._stage(
                "grid", cfg.grid, [model, corners["artifact"]], lambda k: self._run_grid(k, model, corners)
            )["grid"]
            som = self._stage("som", cfg.som, [grid], lambda k: self._run_som(k, grid))["som"]
            lin_grid = self._stage("som_render", {"pm": True}, [som], lambda k: self._run_som_render(k, som))["grid"]
            rnn_cfg = {**cfg.rnn, "props": KNOB_PROPS, **({"controls": cfg.controls} if cfg.controls else {})}
            rnn_out = self._stage("rnn", rnn_cfg, [lin_grid], lambda k: self._run_rnn(k, lin_grid))
            rnn, chain = rnn_out["model"], rnn_out.get("chain", "")
            tiers = [rnn, *([chain] if chain else [])]
            renders = self._stage("renders", cfg.gestures, tiers, lambda k: self._run_renders(rnn, chain))
            control = self._stage(
                "control", cfg.control, [*tiers, lin_grid], lambda k: self._run_control(k, rnn, chain, lin_grid)
            )
            inputs = [dataset, model, samples, corners["artifact"], grid, som, lin_grid, rnn, *renders["artifacts"]]
            inputs += control["artifacts"]
            report = self._stage("report", cfg.report, inputs, lambda k: self._run_report())
        finally:
            self.close()
        self.state.update(
            status="succeeded", finished_at=_now(), report=report["report"], ran=self.ran, skipped=self.skipped
        )
        self._save_state()
        return self.state

    # --- stages --------------------------------------------------------------------------------------------------
    def _dataset_config(self) -> dict:
        ds = dict(self.cfg.dataset)
        if "folder" in ds:
            # a folder is hashed by its listing (names, sizes, mtimes): editing a file changes the key
            from pathlib import Path

            root = Path(ds["folder"])
            if not root.is_dir():
                raise InvalidArgument(f"{self.cfg.source}: dataset.folder", f"{root} is not a folder")
            h = hashlib.sha256()
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    st = p.stat()
                    h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            ds["folder_digest"] = h.hexdigest()
        return ds

    def _run_dataset(self, key: str) -> dict:
        from smf.datasets import import_dataset, make_dataset

        ds = self.cfg.dataset
        if "builtin" in ds:
            aid = make_dataset(
                ds["builtin"],
                self.store,
                n_files=ds.get("n_files"),
                seed=ds.get("seed", 0),
                sample_rate=ds.get("sample_rate", 16000),
                duration=ds.get("duration"),
                out_name=ds.get("name"),
                overwrite=True,
            )
        else:
            # the same import as `smf datasets import`: .params optional (the GAN needs none unless it is an AC-GAN;
            # the RNN trains on the grid's cells, which carry their own), the same policies
            aid = import_dataset(
                ds["folder"],
                self.store,
                name=ds["name"],
                sample_rate=ds.get("sample_rate"),
                mono=ds.get("mono", "error"),
                on_bad_file=ds.get("on_bad_file", "error"),
                overwrite=True,
            )
            imported = read_manifest(self.store, aid).config
            for skip in imported.get("skipped", []):
                self.log(f"[dataset] skipped {skip['file']}: {skip['reason']}")
            if imported.get("n_skipped"):
                self.log(f"[dataset] {imported['n_files']} files imported, {imported['n_skipped']} skipped")
        return {"dataset": aid, "artifacts": [aid]}

    def _check_labels(self, dataset: str, gan_cfg: dict) -> None:
        """An AC-GAN labels clips from their .params: refuse a dataset without them before a job starts."""
        model = gan_cfg.get("modelConfig", {})
        if not model.get("ac_gan"):
            return
        wanted = sorted(model.get("attribKeysOrder") or {})
        have = read_manifest(self.store, dataset).config.get("params") or []
        missing = [a for a in wanted if a not in have]
        if missing:
            from smf.datasets import list_dataset_files

            plain = next((wav for wav, params in list_dataset_files(self.store, dataset) if params is None), None)
            where = f"{plain} has no .params" if plain else f"its .params have {have}"
            raise InvalidArgument(
                f"{self.cfg.source}: gan.modelConfig.ac_gan",
                f"the gan stage labels each clip by {missing} from its .params, but in {dataset} {where}: give "
                "every file a .params with those params, or set ac_gan false",
            )

    def _gan_config(self, dataset: str) -> dict:
        gan = json.loads(json.dumps(self.cfg.gan))
        gan.setdefault("loaderConfig", {})["data_path"] = dataset
        gan["output_path"] = f"gan/{self.cfg.name}"
        return gan

    def _run_gan(self, key: str, gan_cfg: dict) -> dict:
        self._check_labels(gan_cfg["loaderConfig"]["data_path"], gan_cfg)
        gan = self._client("gan")
        name = f"{self.cfg.name}-{key[:10]}"  # same key = same run: a restarted stage resumes from its checkpoint
        gan_cfg = {**gan_cfg, "output_path": f"gan/{name}"}
        op = gan.start_training(name, gan_cfg)
        gan.wait(op.id, on_progress=self._progress("gan"))
        return {"model": f"gan/{name}", "artifacts": [f"gan/{name}"]}

    def _run_samples(self, model: str) -> dict:
        s = self.cfg.samples
        out = self._client("gan").sample_random(model.split("/", 1)[1], s.get("count", 16), seed=s.get("seed", 0))
        if not out.artifact_uri:
            raise FailedPrecondition("the GAN service returned no samples artifact")
        aid = self._key_of(out.artifact_uri)
        return {"samples": aid, "artifacts": [aid]}

    def _run_corners(self, samples: str) -> dict:
        from smf.common.audio import load_audio
        from smf.pipeline.scores import clip_features, farthest_four

        files = read_manifest(self.store, samples).files
        n = len([f for f in files if f.endswith(".wav")])
        if self.cfg.corners == "auto":
            clips, sr = [], 16000
            for i in range(n):
                audio, sr = load_audio(self.store.get_bytes(f"{samples}/{i}.wav"))
                clips.append(audio.numpy())
            feats = clip_features(clips, sr)
            idx = farthest_four(feats)
            d = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
            chosen = {
                "method": "auto: 4 mutually distant samples (log-mel/centroid/loudness statistics)",
                "min_pairwise_distance": float(min(d[a, b] for a in idx for b in idx if a < b)),
                "median_pairwise_distance": float(np.median(d[np.triu_indices(n, 1)])),
            }
        else:
            idx = list(self.cfg.corners)
            chosen = {"method": "given"}
            for i in idx:
                if i >= n:
                    raise InvalidArgument(f"{self.cfg.source}: corners", f"sample {i} does not exist ({n} samples)")
        ids = [f"{samples}/{i}" for i in idx]
        aid = f"pipelines/{self.cfg.name}/corners"
        doc = {"indices": idx, "corners": ids, **chosen}
        write_artifact(
            self.store,
            "corners",
            aid,
            {"corners.json": json.dumps(doc, indent=2).encode()},
            config={"corners": self.cfg.corners},
            inputs=[samples],
            service="pipeline",
            overwrite=True,  # a stage run again (its config changed) replaces its result
        )
        self.log(f"[corners] {idx} ({chosen['method']})")
        return {"corners": ids, "indices": idx, "artifact": aid, "artifacts": [aid]}

    def _run_grid(self, key: str, model: str, corners: dict) -> dict:
        grid_id = f"grids/{self.cfg.name}-{key[:10]}"
        if not self._exists(grid_id):
            grid = self._client("grid")
            g = self.cfg.grid
            op = grid.create_grid(
                model,
                corners["corners"],
                d0=g["d0"],
                d1=g["d1"],
                pm=True,
                grid_id=grid_id,
                interpolation=g.get("interpolation", "linear"),
            )
            grid.wait(op.id, on_progress=self._progress("grid"))
        return {"grid": grid_id, "artifacts": [grid_id]}

    def _exists(self, aid: str) -> bool:
        try:
            read_manifest(self.store, aid)
            return True
        except NotFound:
            return False

    def _run_som(self, key: str, grid: str) -> dict:
        som_id = f"som/{self.cfg.name}-{key[:10]}"
        if not self._exists(som_id):
            som = self._client("som")
            op = som.start_linearize(grid, linearization_id=som_id, **self.cfg.som)
            som.wait(op.id, on_progress=self._progress("som"))
        return {"som": som_id, "artifacts": [som_id]}

    def _run_som_render(self, key: str, som_id: str) -> dict:
        grid_id = f"grids/{self.cfg.name}-lin-{key[:10]}"
        if not self._exists(grid_id):
            som = self._client("som")
            op = som.start_render(som_id, pm=True, grid_id=grid_id)
            som.wait(op.id, on_progress=self._progress("som_render"))
        return {"grid": grid_id, "artifacts": [grid_id]}

    def _run_rnn(self, key: str, grid: str) -> dict:
        # the RNN trains on the linearized grid itself (its cells are wav + .params with dim0, dim1, envPt); the
        # run's manifest records the grid as its input. With `controls` (the default), two tiers train in turn:
        # a parameter tier turning dim0, dim1 into analysis controls at the frame rate, and an audio tier rendering
        # those controls (with `knobs`, the controls and dim0, dim1); without, one audio tier on dim0, dim1.
        rnn = self._client("rnn")
        run_id = f"rnn/{self.cfg.name}-{key[:10]}"
        if not self.cfg.controls:
            op = rnn.start_training(grid, KNOB_PROPS, run_id=run_id, **self.cfg.rnn)
            rnn.wait(op.id, on_progress=self._progress("rnn"))
            return {"model": run_id, "chain": "", "data": grid, "artifacts": [run_id]}
        tier = controls_tier(self.cfg.controls)
        chain_id = f"{run_id}-controls"
        # one after the other: side by side, two trainers on 2 cores took 427 s where in turn they take ~210 s
        op = rnn.start_training(grid, KNOB_PROPS, run_id=chain_id, **tier)
        rnn.wait(op.id, on_progress=self._progress("rnn controls"))
        op = rnn.start_training(grid, chain_props(self.cfg.controls), run_id=run_id, **self.cfg.rnn)
        rnn.wait(op.id, on_progress=self._progress("rnn"))
        return {"model": run_id, "chain": chain_id, "data": grid, "artifacts": [run_id, chain_id]}

    def _run_renders(self, model: str, chain: str = "") -> dict:
        from smf.rnn.conditioning import columns, parse_column

        rnn = self._client("rnn")
        out, artifacts = {}, []
        for g in self.cfg.gestures:
            arr = columns(*(parse_column(spec) for spec in g["columns"]))
            result, _ = rnn.generate(
                model, arr, float(g.get("duration", 2.0)), seed=int(g.get("seed", 0)), chain_model=chain
            )
            aid = result.render.id or self._key_of(result.render.uri)
            out[g["name"]] = {
                "render": aid,
                "wavs": [self._key_of(u) for u in result.wav_uris],
                "seconds_taken": result.seconds_taken,
            }
            artifacts.append(aid)
            self.log(f"[renders] {g['name']}: {aid} ({result.seconds_taken:.1f} s)")
        return {"renders": out, "artifacts": artifacts}

    def _run_control(self, key: str, model: str, chain: str, grid: str) -> dict:
        """Control-following of the RNN on the grid it was trained on (smf.rnn.evaluate), computed here against the
        store the services share: the report's knob table and plot."""
        from smf.rnn.evaluate import DEFAULT_VOICES, evaluate_run, format_table, plot_report

        c = self.cfg.control
        report = evaluate_run(
            self.store,
            model,
            chain=chain or None,
            data=grid,
            duration=float(c.get("duration", 3.0)),
            seed=int(c.get("seed", 0)),
            precision=str(c.get("precision", "fp32")),
            voices=int(c.get("voices", DEFAULT_VOICES)),
        )
        aid = f"evals/{self.cfg.name}-{key[:10]}"
        write_artifact(
            self.store,
            "control-eval",
            aid,
            {"control.json": (json.dumps(report, indent=1) + "\n").encode(), "control.png": plot_report(report)},
            config=c,
            inputs=[model, *([chain] if chain else []), grid],
            service="pipeline",
            overwrite=True,  # a stage run again (its config changed) replaces its result
        )
        table = format_table(report)
        return {"control": aid, "summary": report["summary"], "table": table, "artifacts": [aid]}

    def _run_report(self) -> dict:
        from smf.pipeline.report import build_report

        html, scores = build_report(self.store, self.state, self.cfg)
        # the artifact is the run folder itself: report.html sits at pipelines/<name>/report.html
        aid = f"pipelines/{self.cfg.name}"
        inputs = [a for s in STAGES[:-1] for a in self.state["stages"][s]["outputs"]["artifacts"]]
        write_artifact(
            self.store,
            "pipeline-report",
            aid,
            {"report.html": html.encode(), "scores.json": (json.dumps(scores, indent=2) + "\n").encode()},
            config=self.cfg.report,
            inputs=inputs,
            service="pipeline",
            overwrite=True,  # a stage run again (its config changed) replaces its result
        )
        return {"report": f"{aid}/report.html", "scores": scores, "artifacts": [aid]}


def describe(state: dict) -> str:
    """A human summary of a state.json (for `smf pipeline status`)."""
    lines = [
        f"pipeline {state.get('name')}: {state.get('status', 'never ran')}"
        + (f" — {state['error']}" if state.get("error") else "")
    ]
    for name in STAGES:
        rec = state.get("stages", {}).get(name)
        if not rec:
            lines.append(f"  {name:<11} -")
            continue
        outs = rec.get("outputs", {}).get("artifacts", [])
        secs = f"{rec['seconds']:.1f} s" if "seconds" in rec else ""
        lines.append(f"  {name:<11} {rec['state']:<8} {secs:>9}  {', '.join(outs[:3])}{' …' if len(outs) > 3 else ''}")
    if state.get("report"):
        lines.append(f"  report: {state['report']}")
    return "\n".join(lines)
