"""GridService (smf.grid.v1): 4-corner latent grids rendered by the GAN service, plus the auditioner over HTTP.

    SMF_TOKEN=secret smf serve grid --store s3://smf/store --gan gan-0:50051 gan-1:50051 --http-port 8080

A thin servicer: CreateGrid checks the request and resolves the corners (`plan.plan_grid`), then renders in an
operation (`render.render_grid`) with the GAN service as the render function — batches go through `GanClient`,
which splits each one over the GAN replicas given. GetGrid / ListGrids read the store. The same process serves the
auditioner page and its read-only API (`auditioner.Auditioner`) on the HTTP port.
"""

from __future__ import annotations

import argparse
import logging
import os

from smf.common import refs
from smf.common.commit import start_sweeper
from smf.common.errors import InvalidArgument, NotFound
from smf.common.lineage import list_artifacts, read_manifest
from smf.common.operations import (
    OPERATION_SERVICE_NAME,
    OperationContext,
    OperationRegistry,
    with_operations,
)
from smf.common.server import (
    add_gan_targets_argument,
    add_server_arguments,
    gan_token,
    resolve_token,
    run_server,
    server_options,
    store_ready,
)
from smf.common.store import Store, open_store
from smf.common.v1 import common_pb2
from smf.grid.auditioner import Auditioner
from smf.grid.plan import GridPlan, model_id, plan_grid, render_plan
from smf.grid.v1 import grid_pb2, grid_pb2_grpc

log = logging.getLogger("smf.grid")

GAN_BATCH = 32  # latents per replica per request: the GAN service's default forward-pass size


class GridServicer(grid_pb2_grpc.GridServiceServicer):
    """`gan` is a GanClient (several replicas allowed) or anything with render_latents / list_models."""

    def __init__(
        self,
        store: Store,
        gan,
        *,
        registry: OperationRegistry | None = None,
        batch_size: int | None = None,
        auditioner: Auditioner | None = None,
    ):
        self.store, self.gan, self.auditioner = store, gan, auditioner
        self.registry = registry or OperationRegistry(max_running=2)
        replicas = len(getattr(gan, "stubs", [None]))
        self.batch_size = batch_size or GAN_BATCH * replicas  # one batch keeps every replica busy

    # --- CreateGrid ---
    def _model_info(self, run: str):
        name = run.split("/", 1)[1]
        for m in self.gan.list_models(name):
            if m.name == name:
                return m
        raise NotFound(f"model {run} not found by the GAN service")

    def plan(self, request) -> tuple[GridPlan, int]:
        corners = []
        for n, c in enumerate(request.corners):
            if c.values and c.uri:
                raise InvalidArgument(f"corners[{n}]", "give either uri or values, not both")
            corners.append(list(c.values) if c.values else c.uri)
        infos = {}

        def latent_dim(run: str) -> int:
            infos[run] = self._model_info(run)
            return infos[run].latent_dim

        plan = plan_grid(
            self.store,
            corners=corners,
            d0=request.d0,
            d1=request.d1,
            model=request.model,
            pm=request.pm,
            n_variations=request.variations,
            spread=request.variation_spread,
            seed=request.seed,
            interpolation=request.interpolation,
            grid_id=request.grid_id,
            latent_dim=latent_dim,
        )
        info = infos.get(plan.model) or self._model_info(plan.model)
        if info.sample_rate <= 0:
            raise NotFound(f"model {plan.model} has no config in the store (sample rate unknown)")
        return plan, info.sample_rate

    def CreateGrid(self, request, context):
        plan, sample_rate = self.plan(request)  # every check happens here, before the operation starts
        name = plan.model.split("/", 1)[1]

        def render(latents):
            return self.gan.render_latents(name, latents, output="inline").audio

        def work(ctx: OperationContext) -> list[str]:
            def progress(done: int, total: int) -> None:
                ctx.report(step=done, total=total, message=f"rendered {done}/{total} cells")
                ctx.check_cancelled()  # raising here makes render_grid delete what it wrote

            render_plan(
                self.store, plan, render, sample_rate=sample_rate, on_progress=progress, batch_size=self.batch_size
            )
            return [self.store.key_uri(plan.grid_id)]

        op = self.registry.start("grid.render", work, metadata={"grid": plan.grid_id, "model": plan.model})
        return grid_pb2.CreateGridResponse(operation=op)

    # --- reading ---
    def _grid_id(self, raw: str) -> str:
        return refs.resolve(self.store, raw, "grids", field="grid_id", any_kind=True)[1]

    def _grid_message(self, aid: str, cfg: dict, created_at: str) -> grid_pb2.Grid:
        uri = self.store.key_uri(aid)
        return grid_pb2.Grid(
            artifact=common_pb2.ArtifactRef(uri=uri, id=aid, kind="grid"),
            model=cfg.get("model") or "",
            d0=cfg.get("d0") or 0,
            d1=cfg.get("d1") or 0,
            variations=cfg.get("variations") or 1,
            interpolation=cfg.get("interpolation") or "",
            sample_rate=cfg.get("sample_rate") or 0,
            duration=cfg.get("duration") or 0.0,
            latent_dim=cfg.get("latent_dim") or 0,
            corners=[str(c) for c in cfg.get("corners") or []],
            create_time=created_at,
            mosaic_uri=f"{uri}/mosaic.png",
        )

    def GetGrid(self, request, context):
        from smf.grid.render import read_grid

        aid = self._grid_id(request.grid_id)
        doc = read_grid(self.store, aid)
        grid = self._grid_message(aid, doc, doc["created_at"])
        for c in doc["cells"]:
            grid.cells.append(
                grid_pb2.Cell(
                    i=c["i"],
                    j=c["j"],
                    k=c["k"],
                    dim0=c["dim0"],
                    dim1=c["dim1"],
                    wav_uri=self.store.key_uri(f"{aid}/{c['file']}"),
                    params_uri=self.store.key_uri(f"{aid}/{c['params']}") if c.get("params") else "",
                )
            )
        return grid_pb2.GetGridResponse(grid=grid)

    def ListGrids(self, request, context):
        want = model_id(request.model, self.store) if request.model else None
        out = []
        for aid in reversed(list_artifacts(self.store, "grids")):  # ids sort by time: newest first
            manifest = read_manifest(self.store, aid)
            cfg = manifest.config if isinstance(manifest.config, dict) else {}
            if want and cfg.get("model") != want:
                continue
            out.append(self._grid_message(aid, cfg, manifest.created_at))
        return grid_pb2.ListGridsResponse(grids=out)

    # --- lifecycle (called by the server base) ---
    def ready(self) -> None:
        store_ready(self.store)

    def close(self) -> None:
        """Stop the operations, then what this servicer was given to hold: the GAN client and the auditioner."""
        self.registry.cancel_all()
        close = getattr(self.gan, "close", None)
        if close is not None:
            close()
        if self.auditioner is not None:
            self.auditioner.stop()


def servicers(servicer: GridServicer) -> list:
    """(add function, servicer) pairs for the server base: GridService plus the shared OperationService."""
    return with_operations(grid_pb2_grpc.add_GridServiceServicer_to_server, servicer)


SERVICE_NAMES = [grid_pb2.DESCRIPTOR.services_by_name["GridService"].full_name, OPERATION_SERVICE_NAME]


def main(argv: list[str] | None = None) -> int:
    """`smf serve grid`."""
    from smf.gan.client import GanClient
    from smf.grid.live import add_live_arguments, live_bridge

    parser = argparse.ArgumentParser(prog="smf serve grid", description=__doc__.splitlines()[0])
    add_server_arguments(parser, default_port=50052)
    add_gan_targets_argument(parser)
    parser.add_argument("--http-port", type=int, default=8080, help="auditioner HTTP port (default 8080; -1 = off)")
    parser.add_argument("--public-host", default=None, help="host name to print in page URLs")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="latents per render request (default 32 per GAN replica)"
    )
    add_live_arguments(parser)
    args = parser.parse_args(argv)
    options = server_options(args)
    store = open_store(args.store)
    token = resolve_token(None, args.insecure)  # fails before anything starts when no token and no --insecure
    gan = GanClient(args.gan, token=gan_token(token))
    http = None
    if args.http_port >= 0:
        # the page's live panel plays the rnn service inside the cluster ($SMF_RNN_TOKEN where it has its own)
        live = live_bridge(args, token=os.environ.get("SMF_RNN_TOKEN") or token)
        http = Auditioner(
            store, token=token, host=args.host, port=args.http_port, public_host=args.public_host, live=live
        ).start()
        print(f"grid: auditioner on {http.url}/", flush=True)
    servicer = GridServicer(store, gan, batch_size=args.batch_size, auditioner=http)
    start_sweeper(servicer.store)  # stale staging and claims of crashed writers (smf.common.commit)
    run_server(name="grid", servicers=servicers(servicer), service_names=SERVICE_NAMES, **options)
    return 0


__all__ = ["SERVICE_NAMES", "GridServicer", "main", "servicers"]
