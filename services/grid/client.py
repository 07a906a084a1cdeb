"""The public client of the grid service.

    grid = GridClient("localhost:50052")                          # token from $SMF_TOKEN
    op = grid.create_grid("run1", ["samples/<id>/0", "samples/<id>/1", "samples/<id>/2", "samples/<id>/3"],
                          d0=21, d1=21, pm=True)
    op = grid.wait(op.id, on_progress=lambda op: print(op.progress.message))   # raises if it failed
    info = grid.get_grid(op.result_uris[0])                       # grid_pb2.Grid with its cells
    grids = grid.list_grids()

Corners are store URIs / keys / sample ids (str) or latent values (a sequence of floats, a tensor or an array).
Errors come back as `smf.common.errors` (InvalidArgument naming the field, NotFound ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from smf.common.client import ServiceClient, call
from smf.grid.v1 import grid_pb2, grid_pb2_grpc

__all__ = ["GridClient"]


def _corner(c) -> grid_pb2.Corner:
    if isinstance(c, str):
        return grid_pb2.Corner(uri=c)
    return grid_pb2.Corner(values=np.asarray(c, dtype=np.float32).reshape(-1).tolist())


class GridClient(ServiceClient):
    stub_class = grid_pb2_grpc.GridServiceStub

    def __init__(self, target: str, *, token: str | None = None, timeout: float = 60.0):
        super().__init__(target, token=token)
        self.timeout = timeout

    def create_grid(
        self,
        model: str,
        corners: Sequence,
        *,
        d0: int,
        d1: int,
        pm: bool = True,
        variations: int = 1,
        variation_spread: float = 0.0,
        seed: int = 0,
        interpolation: str = "linear",
        grid_id: str = "",
    ):
        """Start rendering a grid; returns the Operation (its result URI is the grid artifact)."""
        req = grid_pb2.CreateGridRequest(
            model=model,
            corners=[_corner(c) for c in corners],
            d0=d0,
            d1=d1,
            pm=pm,
            variations=variations,
            variation_spread=variation_spread,
            seed=seed,
            interpolation=interpolation,
            grid_id=grid_id,
        )
        return call(self.stub.CreateGrid, req, timeout=self.timeout).operation

    def get_grid(self, grid_id: str) -> grid_pb2.Grid:
        return call(
            self.stub.GetGrid, grid_pb2.GetGridRequest(grid_id=grid_id), timeout=self.timeout, idempotent=True
        ).grid

    def list_grids(self, model: str = "") -> list[grid_pb2.Grid]:
        return list(
            call(
                self.stub.ListGrids, grid_pb2.ListGridsRequest(model=model), timeout=self.timeout, idempotent=True
            ).grids
        )
