"""The public client of the SOM service, for the CLI and other lab tools.

    som = SomClient("localhost:50053")                                 # token from $SMF_TOKEN
    op = som.start_linearize("grids/20261125-203000-ab12cd", iterations=100, features="perceptual")
    op = som.wait(op.id, on_progress=lambda o: print(o.progress.step, o.progress.loss))
    lz = som.get(op.result_uris[0])                                    # before/after evenness, history
    op = som.wait(som.start_render(lz.artifact.id, d0=21, d1=21, pm=True).id)
    op.result_uris[0]                                                  # the som-grid, open it in the auditioner

Errors come back as `smf.common.errors` (InvalidArgument naming the field, NotFound, FailedPrecondition ...).
"""

from __future__ import annotations

from smf.common.client import ServiceClient, call
from smf.som.v1 import som_pb2, som_pb2_grpc

__all__ = ["SomClient"]


class SomClient(ServiceClient):
    stub_class = som_pb2_grpc.SomServiceStub  # SomClient(target, *, token=None, tls=None)

    def start_linearize(
        self,
        grid_id: str,
        *,
        iterations: int | None = None,
        tolerance: float | None = None,
        rule: str = "",
        step: float | None = None,
        features: str = "",
        feature_weights: dict[str, float] | None = None,
        axes: str = "",
        seed: int = 0,
        linearization_id: str = "",
    ):
        """Start linearizing a grid; returns the Operation (its result is the som/<id> URI)."""
        req = som_pb2.StartLinearizeRequest(
            grid_id=grid_id,
            rule=rule,
            features=features,
            axes=axes,
            seed=seed,
            feature_weights=feature_weights or {},
            linearization_id=linearization_id,
        )
        if iterations is not None:
            req.iterations = iterations
        if tolerance is not None:
            req.tolerance = tolerance
        if step is not None:
            req.step = step
        return call(self.stub.StartLinearize, req, timeout=60.0).operation

    def start_render(self, linearization_id: str, *, d0: int = 0, d1: int = 0, pm: bool = True, grid_id: str = ""):
        """Start rendering a linearization as a grid; returns the Operation (its result is the grids/<id> URI)."""
        req = som_pb2.StartRenderRequest(linearization_id=linearization_id, d0=d0, d1=d1, pm=pm, grid_id=grid_id)
        return call(self.stub.StartRender, req, timeout=60.0).operation

    def get(self, linearization_id: str):
        """One linearization (som_pb2.Linearization) with its per-iteration history."""
        req = som_pb2.GetLinearizationRequest(linearization_id=linearization_id)
        return call(self.stub.GetLinearization, req, idempotent=True).linearization

    def list(self, grid_id: str = "") -> list:
        """Stored linearizations, newest first (optionally only those of one grid)."""
        req = som_pb2.ListLinearizationsRequest(grid_id=grid_id)
        return list(call(self.stub.ListLinearizations, req, idempotent=True).linearizations)
