"""SomService (smf.som.v1): linearize a grid with the GAN in the loop, render the linearized grid.

    SMF_TOKEN=secret smf serve som --store s3://smf/store --gan gan-0:50051 gan-1:50051

A thin servicer: every check (ids, rule, step, features, the grid and its model, d0/d1) happens in the Start… call,
so bad input comes back as a status code at once; the work itself (`linearize.linearize`,
`linearize.render_linearized`) runs as an operation whose renders go through `GanClient`, which splits each batch
over the GAN replicas given.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from smf.common.commit import start_sweeper
from smf.common.errors import FailedPrecondition, NotFound
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
from smf.som import linearize as lin
from smf.som.features import FeatureExtractor
from smf.som.som import SomConfig
from smf.som.v1 import som_pb2, som_pb2_grpc

log = logging.getLogger("smf.som")

GAN_BATCH = 32  # latents per replica per render request (the GAN service's default forward-pass size)


def _evenness(d: dict | None) -> som_pb2.Evenness:
    d = d or {}
    return som_pb2.Evenness(
        cov=d.get("cov", 0.0), max_min_ratio=d.get("max_min_ratio", 0.0), mean_distance=d.get("mean_distance", 0.0)
    )


def linearization_message(
    store: Store, som_id: str, doc: dict, created_at: str, *, history: bool = False
) -> som_pb2.Linearization:
    """A Linearization from metrics.json (history included) or the manifest's summary (no history)."""
    uri = store.key_uri(som_id)
    cfg, feats = doc.get("config") or {}, doc.get("features") or {}
    msg = som_pb2.Linearization(
        artifact=common_pb2.ArtifactRef(uri=uri, id=som_id, kind="som"),
        grid_id=doc.get("grid", ""),
        model=doc.get("model", ""),
        d0=doc.get("d0", 0),
        d1=doc.get("d1", 0),
        latent_dim=doc.get("latent_dim", 0),
        features=feats.get("kind", ""),
        feature_weights=feats.get("weights") or {},
        rule=cfg.get("rule", ""),
        step=cfg.get("effective_step") or 0.0,
        axes=cfg.get("axes", ""),
        tolerance=cfg.get("tolerance") or 0.0,
        seed=doc.get("seed", 0),
        iterations=doc.get("iterations", 0),
        converged=bool(doc.get("converged")),
        before=_evenness(doc.get("before")),
        after=_evenness(doc.get("after")),
        create_time=created_at,
        linearized_uri=f"{uri}/{lin.LINEARIZED}",
        plot_uris=[f"{uri}/{p}" for p in lin.PLOT_FILES.values()],
    )
    if history:
        for h in doc.get("history") or []:
            msg.history.append(
                som_pb2.IterationMetrics(iteration=h["iteration"], evenness=_evenness(h), move=h.get("move", 0.0))
            )
    return msg


class SomServicer(som_pb2_grpc.SomServiceServicer):
    """`gan` is a GanClient (several replicas allowed) or anything with `render_latents(model, z, output=)`."""

    def __init__(self, store: Store, gan, *, registry: OperationRegistry | None = None, batch_size: int | None = None):
        self.store, self.gan = store, gan
        # SOM runs render the whole mesh every iteration: two at a time keep the GAN replicas busy, not swamped
        self.registry = registry or OperationRegistry(max_running=2)
        replicas = len(getattr(gan, "stubs", [None]))
        self.batch_size = batch_size or GAN_BATCH * replicas

    def _render_fn(self, model: str, used_by: str):
        def render(latents: np.ndarray) -> np.ndarray:
            try:
                return self.gan.render_latents(model, latents, output="inline").audio
            except NotFound as exc:  # deleted while we were running
                raise FailedPrecondition(
                    f"{used_by}: model {model} is gone from the GAN service ({exc.message})"
                ) from exc

        return render

    # --- linearize ---
    def StartLinearize(self, request, context):
        grid_id = lin.artifact_ref(self.store, request.grid_id, "grids", field="grid_id")
        config = SomConfig(
            rule=request.rule or "even",
            axes=request.axes or "both",
            step=request.step if request.HasField("step") else None,
        )
        if request.HasField("iterations"):
            config.iterations = request.iterations
        if request.HasField("tolerance"):
            config.tolerance = request.tolerance
        config.validate()
        features = request.features or "spectrogram"
        weights = dict(request.feature_weights)
        grid = lin.load_grid(self.store, grid_id)
        FeatureExtractor(features, sample_rate=grid.sample_rate, weights=weights)  # checks kind and weights
        lin.require_model(self.store, grid.model, used_by=grid_id)
        transform = lin.model_transform(self.store, grid.model) if features == "spectrogram" else None
        som_id = lin.new_artifact_id(self.store, request.linearization_id, "som", field="linearization_id")
        render = self._render_fn(grid.model, grid_id)

        def work(ctx: OperationContext) -> list[str]:
            first: dict = {}

            def progress(it: int, m: dict) -> None:
                first.setdefault("cov", m["cov"])
                ctx.report(
                    step=it,
                    total=config.iterations,
                    loss=m["cov"],
                    message=f"iteration {it}/{config.iterations}: CoV {first['cov']:.3f} -> {m['cov']:.3f}, "
                    f"max/min {m['max_min_ratio']:.2f}",
                    metrics={
                        "cov": m["cov"],
                        "cov_before": first["cov"],
                        "max_min_ratio": m["max_min_ratio"],
                        "move": m.get("move", 0.0),
                    },
                )

            out = lin.linearize(
                self.store,
                grid,
                render,
                config=config,
                features=features,
                feature_weights=weights,
                transform=transform,
                seed=request.seed,
                som_id=som_id,
                on_iteration=progress,
                should_stop=lambda: ctx.cancelled,
            )
            m = out.metrics
            ctx.report(
                message=f"done after {m['iterations']} iterations: CoV {m['before']['cov']:.3f} -> "
                f"{m['after']['cov']:.3f}, max/min {m['before']['max_min_ratio']:.2f} -> "
                f"{m['after']['max_min_ratio']:.2f}"
            )
            return [self.store.key_uri(som_id)]

        op = self.registry.start(
            "som.linearize", work, metadata={"grid": grid_id, "model": grid.model, "linearization": som_id}
        )
        return som_pb2.StartLinearizeResponse(operation=op)

    # --- reading ---
    def GetLinearization(self, request, context):
        som_id = lin.artifact_ref(self.store, request.linearization_id, "som", field="linearization_id")
        doc = lin.read_metrics(self.store, som_id)
        msg = linearization_message(self.store, som_id, doc, doc["created_at"], history=True)
        return som_pb2.GetLinearizationResponse(linearization=msg)

    def ListLinearizations(self, request, context):
        want = lin.artifact_ref(self.store, request.grid_id, "grids", field="grid_id") if request.grid_id else None
        out = []
        for aid in reversed(list_artifacts(self.store, "som")):  # ids sort by creation time: newest first
            manifest = read_manifest(self.store, aid)
            cfg = manifest.config if isinstance(manifest.config, dict) else {}
            if want and cfg.get("grid") != want:
                continue
            out.append(linearization_message(self.store, aid, cfg, manifest.created_at))
        return som_pb2.ListLinearizationsResponse(linearizations=out)

    # --- render ---
    def StartRender(self, request, context):
        som_id = lin.artifact_ref(self.store, request.linearization_id, "som", field="linearization_id")
        _, metrics = lin.load_linearized(self.store, som_id, d0=request.d0, d1=request.d1)  # d0/d1 checked now
        lin.require_model(self.store, metrics["model"], used_by=som_id)
        grid_id = lin.new_artifact_id(self.store, request.grid_id, "grids", field="grid_id")
        render = self._render_fn(metrics["model"], som_id)

        def work(ctx: OperationContext) -> list[str]:
            def progress(done: int, total: int) -> None:
                ctx.report(step=done, total=total, message=f"rendered {done}/{total} cells")
                ctx.check_cancelled()  # raising here makes render_grid delete what it wrote

            lin.render_linearized(
                self.store,
                som_id,
                render,
                d0=request.d0,
                d1=request.d1,
                pm=request.pm,
                grid_id=grid_id,
                on_progress=progress,
                batch_size=self.batch_size,
            )
            return [self.store.key_uri(grid_id)]

        op = self.registry.start(
            "som.render", work, metadata={"linearization": som_id, "grid": grid_id, "model": metrics["model"]}
        )
        return som_pb2.StartRenderResponse(operation=op)

    # --- lifecycle (called by the server base) ---
    def ready(self) -> None:
        store_ready(self.store)

    def close(self) -> None:
        """Stop the operations, then close the GAN client this servicer was given to hold."""
        self.registry.cancel_all()
        close = getattr(self.gan, "close", None)
        if close is not None:
            close()


def servicers(servicer: SomServicer) -> list:
    """(add function, servicer) pairs for the server base: SomService plus the shared OperationService."""
    return with_operations(som_pb2_grpc.add_SomServiceServicer_to_server, servicer)


SERVICE_NAMES = [som_pb2.DESCRIPTOR.services_by_name["SomService"].full_name, OPERATION_SERVICE_NAME]


def main(argv: list[str] | None = None) -> int:
    """`smf serve som`."""
    from smf.gan.client import GanClient

    parser = argparse.ArgumentParser(prog="smf serve som", description=__doc__.splitlines()[0])
    add_server_arguments(parser, default_port=50053)
    add_gan_targets_argument(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="latents per render request when rendering a grid (default 32 per GAN replica)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads for features (0 = default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = server_options(args)
    store = open_store(args.store)
    token = resolve_token(None, args.insecure)  # fails before anything starts when no token and no --insecure
    gan = GanClient(args.gan, token=gan_token(token))
    servicer = SomServicer(store, gan, batch_size=args.batch_size)
    start_sweeper(servicer.store)  # stale staging and claims of crashed writers (smf.common.commit)
    run_server(name="som", servicers=servicers(servicer), service_names=SERVICE_NAMES, **options)
    return 0


__all__ = ["SERVICE_NAMES", "SomServicer", "main", "servicers"]
