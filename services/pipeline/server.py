"""PipelineService (smf.pipeline.v1): start and follow a whole pipeline over gRPC, as `smf pipeline run` does.

    SMF_TOKEN=secret smf serve pipeline --store s3://smf/store                       # spawns services per run
    SMF_TOKEN=secret smf serve pipeline --remote gan=h:50051,grid=h:50052,som=h:50053,rnn=h:50054

A thin servicer over `smf.pipeline.pipeline.Pipeline`: the config is parsed and checked in StartPipeline, so a bad
one comes back as INVALID_ARGUMENT naming the key before any work starts; the run itself is an operation whose
progress counts stages (step = stages finished, total = stage count, message = the current stage). The stages are
recorded in the store (pipelines/<name>/state.json), which GetPipeline and ListPipelines read, so a run started by
the CLI shows up here too and a finished run started again skips every stage.

One run per name at a time: a second StartPipeline for a name that is running is FAILED_PRECONDITION (not
ALREADY_EXISTS: starting a finished or crashed run again is allowed and resumes it). Across server processes and
replicas the store decides: a run holds a claim on its name (`smf.common.commit.Claim`, an exclusive create —
`If-None-Match: *` on S3), refreshed as it goes; a server that died holding one frees the name when the claim is
swept (SMF_STAGING_MAX_AGE_S, default 6 h) or by `smf store sweep --older-than 0`.
"""

from __future__ import annotations

import argparse
import logging
import os
import posixpath
import threading
import time
from pathlib import Path

from smf.common.commit import Claim, start_sweeper
from smf.common.errors import (
    AlreadyExists,
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from smf.common.limits import parse_json
from smf.common.lineage import new_id
from smf.common.operations import (
    OPERATION_SERVICE_NAME,
    OperationContext,
    OperationRegistry,
    with_operations,
)
from smf.common.refs import Confinement, add_confinement_arguments, local_folder, resolve_key
from smf.common.server import add_server_arguments, resolve_token, run_server, server_options, store_ready
from smf.common.store import Store, open_store
from smf.pipeline.config import NAME, PipelineConfig, parse_config
from smf.pipeline.pipeline import STAGES, Pipeline, read_state, state_key
from smf.pipeline.services import SERVICES, local_services, remote_services
from smf.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc

log = logging.getLogger("smf.pipeline")

DEFAULT_PORT = 50056
MAX_RUNNING = 2  # each run drives four services (or spawns them): more at once only queues behind the GPU/CPU
CLAIM_REFRESH_S = 60.0  # a running pipeline re-stamps its claim at least this often (while it logs progress)

_STAGE_STATES = {
    "running": pipeline_pb2.STAGE_STATE_RUNNING,
    "done": pipeline_pb2.STAGE_STATE_DONE,
    "failed": pipeline_pb2.STAGE_STATE_FAILED,
}
_STATUSES = {
    "running": pipeline_pb2.PIPELINE_STATUS_RUNNING,
    "succeeded": pipeline_pb2.PIPELINE_STATUS_SUCCEEDED,
    "failed": pipeline_pb2.PIPELINE_STATUS_FAILED,
}


class _ReportingPipeline(Pipeline):
    """A Pipeline that reports each stage to its operation and stops between stages when cancelled."""

    def __init__(self, *args, ctx: OperationContext, **kwargs):
        super().__init__(*args, log=self._log, **kwargs)
        self.ctx = ctx
        self.current = ""
        self.claim: Claim | None = None  # the run's hold on its name, kept fresh so the sweeper leaves it
        self._claimed_at = time.monotonic()

    def _keep_claim(self) -> None:
        if self.claim is not None and time.monotonic() - self._claimed_at > CLAIM_REFRESH_S:
            self._claimed_at = time.monotonic()
            self.claim.refresh()

    def _where(self) -> str:
        i = STAGES.index(self.current)
        return f"{self.current} ({i + 1}/{len(STAGES)})"

    def _log(self, msg: str) -> None:
        log.info("pipeline %s: %s", self.cfg.name, msg)
        self._keep_claim()
        if self.current:  # the services' own progress ("[gan] step 8/32 loss …") under the stage's name
            detail = msg.split("] ", 1)[1] if msg.startswith(f"[{self.current}] ") else msg
            self.ctx.report(message=f"{self._where()}: {detail}")

    def _stage(self, name, config, inputs, fn):
        self.ctx.check_cancelled()  # a stage is the unit of work: cancel takes effect at the next boundary
        i = STAGES.index(name)
        self.current = name
        self.ctx.report(step=i, total=len(STAGES), message=self._where())
        out = super()._stage(name, config, inputs, fn)
        self.ctx.report(step=i + 1, total=len(STAGES))
        return out


def pipeline_message(store: Store, state: dict, *, operation_id: str = "") -> pipeline_pb2.Pipeline:
    """A Pipeline message from a state.json document (see smf.pipeline.pipeline)."""
    name = state.get("name", "")
    msg = pipeline_pb2.Pipeline(
        name=name,
        status=_STATUSES.get(state.get("status", ""), pipeline_pb2.PIPELINE_STATUS_UNSPECIFIED),
        report_uri=store.key_uri(state["report"]) if state.get("report") else "",
        error=state.get("error", ""),
        operation_id=operation_id,
        ran=state.get("ran", []),
        skipped=state.get("skipped", []),
        started_at=state.get("started_at", ""),
        updated_at=state.get("updated_at", ""),
        state_uri=store.key_uri(state_key(name)) if name else "",
    )
    for stage in STAGES:
        rec = state.get("stages", {}).get(stage)
        if rec is None:
            msg.stages.append(pipeline_pb2.Stage(name=stage, state=pipeline_pb2.STAGE_STATE_PENDING))
            continue
        msg.stages.append(
            pipeline_pb2.Stage(
                name=stage,
                state=_STAGE_STATES.get(rec.get("state", ""), pipeline_pb2.STAGE_STATE_UNSPECIFIED),
                seconds=float(rec.get("seconds", 0.0)),
                key=rec.get("key", ""),
                artifact_uris=[store.key_uri(a) for a in rec.get("outputs", {}).get("artifacts", [])],
                started_at=rec.get("started_at", ""),
                finished_at=rec.get("finished_at", ""),
                error=rec.get("error", ""),
            )
        )
    return msg


def result_uris(store: Store, state: dict) -> list[str]:
    """The report first, then what a user wants from a run: GAN model, linearized grid, RNN model, renders."""
    st = state["stages"]
    keys = [
        state["report"],
        st["gan"]["outputs"]["model"],
        st["som_render"]["outputs"]["grid"],
        st["rnn"]["outputs"]["model"],
        *st["renders"]["outputs"]["artifacts"],
    ]
    return [store.key_uri(k) for k in keys]


class PipelineServicer(pipeline_pb2_grpc.PipelineServiceServicer):
    """Runs pipelines against `store`.

    `targets` ({"gan": "h:p", ...}, all four) are the services a run uses when the request names none; without
    them each run spawns its own four services on loopback (as `smf pipeline run` does). `token` is what the
    pipeline sends to remote services (None: $SMF_TOKEN). A request's `remote` may only name services in `targets` or
    in `allowed_remotes` (HOST:PORT, the operator's `--allow-remote`): the pipeline sends its services' token to them,
    so a caller must not be able to point it at a host of its own.
    """

    def __init__(
        self,
        store: Store,
        *,
        targets: dict[str, str] | None = None,
        token: str | None = None,
        registry: OperationRegistry | None = None,
        log_dir: str | os.PathLike | None = None,
        confine: Confinement | None = None,
        allowed_remotes: list[str] | tuple[str, ...] = (),
    ):
        self.store, self.targets, self.token = store, dict(targets) if targets else None, token
        self.allowed_remotes = set(allowed_remotes) | set((self.targets or {}).values())
        self.confine = confine or Confinement()  # dataset.folder must lie under its data roots (default: none)
        self.registry = registry or OperationRegistry(max_running=MAX_RUNNING)
        self.log_dir = Path(log_dir) if log_dir else None
        self._lock = threading.Lock()
        self._running: dict[str, str] = {}  # run name -> id of the operation running it
        self._claims: dict[str, Claim] = {}  # run name -> its claim in the store (held by this process)

    # --- checking a request (before any work) ----------------------------------------------------------------
    def _config(self, request) -> PipelineConfig:
        which, text, source, config_key = self._config_text(request)
        raw = parse_json(text, field=which)
        if not isinstance(raw, dict):
            raise InvalidArgument(which, "a pipeline config is a JSON object")
        if config_key and "name" not in raw:
            raw["name"] = posixpath.splitext(posixpath.basename(config_key))[0]
        if request.name:
            if not NAME.fullmatch(request.name):
                raise InvalidArgument("name", f"{request.name!r} must be 1-41 characters of [A-Za-z0-9._-]")
            raw["name"] = request.name
        for section in ("dataset", "samples", "grid", "som", "rnn", "report"):
            # parse_config reads these with .get(): anything but an object must be a user error, not INTERNAL
            if section in raw and not isinstance(raw[section], dict):
                raise InvalidArgument(f"{source}: {section}", f"must be a JSON object, got {raw[section]!r:.60}")
        if isinstance(raw.get("gan"), str):
            raw["gan"] = self._gan_config(raw["gan"], source, config_key)
        self._check_folder(raw, source)
        return parse_config(raw, source=source)

    def _config_text(self, request) -> tuple[str, str, str, str | None]:
        """(request field, config JSON text, source for messages, store key of the config or None if inline)."""
        which = request.WhichOneof("config")
        if which is None:
            raise InvalidArgument("config", "give config_json (the config's JSON text) or config_uri")
        if which == "config_json":
            return which, request.config_json, "config_json", None
        config_key = self._key("config_uri", request.config_uri)
        try:
            text = self.store.get_bytes(config_key).decode("utf-8", errors="replace")
        except NotFound:
            raise NotFound(f"config_uri: {request.config_uri} is not in the store {self.store.uri}") from None
        return which, text, f"config_uri {config_key}", config_key

    def _check_folder(self, raw: dict, source: str) -> None:
        """dataset.folder is read by this server: there is no config file to be relative to, so it must be absolute,
        and under one of the server's data roots (PERMISSION_DENIED otherwise, whether or not it exists); it is
        handed on resolved, so a symlink cannot lead the import elsewhere after the check."""
        folder = (raw.get("dataset") or {}).get("folder")
        if folder is None:
            return
        field = f"{source}: dataset.folder"
        if not Path(os.path.expanduser(str(folder))).is_absolute():
            raise InvalidArgument(field, f"{folder!r} must be an absolute path to a folder on the pipeline server")
        path = local_folder(str(folder), self.confine.data_roots, field=field)
        if not path.is_dir():
            raise InvalidArgument(field, f"{folder!r} must be an absolute path to a folder on the pipeline server")
        raw["dataset"]["folder"] = str(path)

    def _gan_config(self, ref: str, source: str, config_key: str | None) -> dict:
        """A GAN config named by a path: only a store key relative to a config that is itself in the store."""
        if config_key is None:
            raise InvalidArgument(
                f"{source}: gan",
                "over gRPC give the GAN config object itself (a path is not read from the server's disk)",
            )
        key = posixpath.normpath(posixpath.join(posixpath.dirname(config_key), ref))
        field = f"{source}: gan"
        try:
            doc = parse_json(self.store.get_bytes(self._key(field, key)), field=field)
        except NotFound as exc:
            raise InvalidArgument(field, f"cannot read GAN config {key} from the store: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidArgument(field, f"GAN config {key} is not a JSON object")
        return doc

    def _key(self, field: str, uri_or_key: str) -> str:
        """A store key from a key or a URI inside this server's store (PERMISSION_DENIED for another store)."""
        return resolve_key(self.store, uri_or_key, field=field)[1]

    def _remote(self, remote) -> dict[str, str] | None:
        if not remote:
            return None
        targets = dict(remote)
        unknown = sorted(set(targets) - set(SERVICES))
        missing = [s for s in SERVICES if s not in targets]
        bad = sorted(k for k, v in targets.items() if ":" not in v)
        if unknown or missing or bad:
            raise InvalidArgument(
                "remote",
                f"give HOST:PORT for each of {', '.join(SERVICES)} "
                f"(unknown {unknown}, missing {missing}, not HOST:PORT {bad})",
            )
        for svc in SERVICES:
            if targets[svc] not in self.allowed_remotes:
                raise PermissionDenied(
                    f"remote.{svc}: {targets[svc]} is not a service this server may call (it would receive the "
                    "services' token); the operator lists them with --allow-remote HOST:PORT or $SMF_ALLOWED_REMOTES"
                )
        return targets

    # --- RPCs ------------------------------------------------------------------------------------------------
    def StartPipeline(self, request, context):
        cfg = self._config(request)
        targets = self._remote(request.remote) or self.targets
        name = cfg.name
        with self._lock:  # held across start: the work's own clean-up waits for the id to be recorded
            running = self._running.get(name)
            if running is not None and self._done(running):  # cancelled while PENDING: its work never ran
                del self._running[name]
                self._release(name)
                running = None
            if running is not None:
                raise FailedPrecondition(
                    f"pipeline {name!r} is already running (operation {running}); follow it, "
                    "or cancel it before starting it again"
                )
            self._claims[name] = self._claim(name)
            try:
                op = self.registry.start(
                    "pipeline.run",
                    lambda ctx: self._run(ctx, cfg, targets),
                    metadata={"pipeline": name, "services": "remote" if targets else "local"},
                )
            except BaseException:
                self._release(name)
                raise
            self._running[name] = op.id
        log.info("pipeline %s: started as %s (%s services)", name, op.id, "remote" if targets else "local")
        return pipeline_pb2.StartPipelineResponse(operation=op, name=name)

    def _claim(self, name: str) -> Claim:
        """Hold `name` in the store, so another server process sharing it cannot run it at the same time."""
        claim = Claim(self.store, f"run:pipelines/{name}", new_id(), what="pipeline")
        try:
            return claim.acquire()
        except AlreadyExists:
            holder = claim.holder()
            raise FailedPrecondition(
                f"pipeline {name!r} is already running on another server sharing {self.store.uri} (since "
                f"{holder.get('at', '?')}, process {holder.get('pid', '?')}); follow it there, or cancel it before "
                "starting it again"
            ) from None

    def _release(self, name: str) -> None:
        claim = self._claims.pop(name, None)
        if claim is not None:
            try:
                claim.release()
            except Exception:  # the sweeper removes it later; the run's own outcome matters more
                log.warning("could not release the claim on pipeline %s", name, exc_info=True)

    def _done(self, op_id: str) -> bool:
        try:
            return self.registry.get(op_id).done
        except NotFound:
            return True

    def _run(self, ctx: OperationContext, cfg: PipelineConfig, targets: dict[str, str] | None) -> list[str]:
        try:
            if targets:
                ctx.report(total=len(STAGES), message="checking the services")
                return self._run_with(ctx, cfg, remote_services(targets, token=self.token))
            ctx.report(total=len(STAGES), message="starting local services")
            log_dir = self.log_dir / f"{cfg.name}-{ctx.operation_id}" if self.log_dir else None
            with local_services(self.store.uri, log_dir=log_dir) as svc:
                return self._run_with(ctx, cfg, svc)
        finally:
            with self._lock:
                if self._running.get(cfg.name) == ctx.operation_id:
                    del self._running[cfg.name]
                    self._release(cfg.name)

    def _run_with(self, ctx: OperationContext, cfg: PipelineConfig, svc) -> list[str]:
        pipe = _ReportingPipeline(cfg, self.store, svc, ctx=ctx)
        pipe.claim = self._claims.get(cfg.name)
        try:
            state = pipe.run()
        except Cancelled:
            # stopped between stages: record it, or state.json would say "running" for ever
            pipe.state.update(status="failed", error="cancelled")
            pipe._save_state()
            raise
        ctx.report(
            step=len(STAGES),
            total=len(STAGES),
            message=f"done: {len(state['ran'])} stages run, {len(state['skipped'])} skipped",
        )
        return result_uris(self.store, state)

    def GetPipeline(self, request, context):
        if not NAME.fullmatch(request.name):
            raise InvalidArgument("name", f"{request.name!r} is not a pipeline name ([A-Za-z0-9._-], 1-41)")
        state = read_state(self.store, request.name)
        if not state.get("stages") and not state.get("status"):
            raise NotFound(f"pipeline {request.name!r} never ran in {self.store.uri}")
        with self._lock:
            op_id = self._running.get(request.name, "")
        return pipeline_pb2.GetPipelineResponse(pipeline=pipeline_message(self.store, state, operation_id=op_id))

    def ListPipelines(self, request, context):
        names = sorted(
            {k.split("/")[1] for k in self.store.list("pipelines") if k.count("/") == 2 and k.endswith("/state.json")}
        )
        with self._lock:
            running = dict(self._running)
        out = [pipeline_message(self.store, read_state(self.store, n), operation_id=running.get(n, "")) for n in names]
        return pipeline_pb2.ListPipelinesResponse(pipelines=out)

    # --- lifecycle (called by the server base) ---
    def ready(self) -> None:
        store_ready(self.store)

    def close(self) -> None:
        self.registry.cancel_all()


def servicers(servicer: PipelineServicer) -> list:
    """(add function, servicer) pairs for the server base: PipelineService plus the shared OperationService."""
    return with_operations(pipeline_pb2_grpc.add_PipelineServiceServicer_to_server, servicer)


SERVICE_NAMES = [pipeline_pb2.DESCRIPTOR.services_by_name["PipelineService"].full_name, OPERATION_SERVICE_NAME]


def env_targets() -> dict[str, str] | None:
    """The services from $SMF_<SVC>_TARGETS (what the Helm chart sets), when all four are given; first replica."""
    found = {s: os.environ.get(f"SMF_{s.upper()}_TARGETS", "").split(",")[0].strip() for s in SERVICES}
    return found if all(found.values()) else None


def main(argv: list[str] | None = None) -> int:
    """`smf serve pipeline`."""
    from smf.pipeline.services import parse_remote

    parser = argparse.ArgumentParser(prog="smf serve pipeline", description=__doc__.splitlines()[0])
    add_server_arguments(parser, default_port=DEFAULT_PORT)
    parser.add_argument(
        "--remote",
        metavar="gan=H:P,grid=H:P,som=H:P,rnn=H:P",
        help="services the runs use (default: $SMF_GAN/GRID/SOM/RNN_TARGETS when all four are set, "
        "else four services spawned on loopback per run)",
    )
    parser.add_argument("--logs", help="folder for the logs of locally spawned services (default: temp folders)")
    parser.add_argument(
        "--allow-remote",
        action="append",
        metavar="HOST:PORT",
        help="a service a request's `remote` may name, besides --remote's (repeatable; default: "
        "$SMF_ALLOWED_REMOTES, comma-separated)",
    )
    add_confinement_arguments(parser)
    args = parser.parse_args(argv)
    options = server_options(args)
    token = resolve_token(None, args.insecure)  # fails before anything starts when no token and no --insecure
    targets = parse_remote(args.remote) if args.remote else env_targets()
    # the services' token: their own where they have one, else the one this server requires
    servicer = PipelineServicer(
        open_store(args.store),
        targets=targets,
        token=os.environ.get("SMF_SERVICES_TOKEN") or token,
        log_dir=args.logs,
        confine=Confinement.from_args(args),
        allowed_remotes=args.allow_remote or [r for r in os.environ.get("SMF_ALLOWED_REMOTES", "").split(",") if r],
    )
    start_sweeper(servicer.store)  # stale staging and claims of crashed writers (smf.common.commit)
    run_server(name="pipeline", servicers=servicers(servicer), service_names=SERVICE_NAMES, **options)
    return 0


__all__ = ["DEFAULT_PORT", "SERVICE_NAMES", "PipelineServicer", "main", "pipeline_message", "servicers"]
