"""Fixtures of the grid tests: a tiny GAN trained once into an S3 store (SeaweedFS), two real GAN service replicas,
four random corner samples, and a grid service (gRPC + HTTP) rendering through them.

The tiny-GAN recipe is the shared one in tests/support/tiny_gan.py. Everything runs on CPU with one torch thread
(the dev box has 2 shared cores).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest
import torch
from support.loopback import loopback_server
from support.tiny_gan import tiny_dict
from support.torch_threads import one_torch_thread

TOKEN = "grid-test-token"


def tiny_gan_config(steps=(4, 4, 4, 4)) -> dict:
    return tiny_dict(steps, checkpointEvery=1000, logEvery=4)


@pytest.fixture(scope="session")
def grid_store(s3_server):
    """An S3 store with datasets/tones and gan/tiny (trained to the end of its short schedule)."""
    from smf.common.store import open_store
    from smf.datasets import make_dataset
    from smf.gan.config import parse_config
    from smf.gan.train import Trainer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in s3_server.env().items():
            mp.setenv(name, value)
        store = open_store(f"s3://{s3_server.bucket}/grid-tests-{secrets.token_hex(4)}")
        with one_torch_thread():
            make_dataset("tones", store, n_files=8, duration=0.3)
            Trainer(parse_config(tiny_gan_config()), store, "gan/tiny", log=lambda *_: None).run()
        yield store


@dataclass
class Services:
    store: object
    gan_ports: list[int]
    grid_port: int
    http: object  # Auditioner
    servicer: object  # GridServicer
    corners: list[str]  # sample ids samples/<id>/<n>
    sample_artifact: str
    gan_servicers: list
    token: str = TOKEN


@pytest.fixture(scope="session")
def services(grid_store, s3_server):
    """Two GAN replicas + a grid service (gRPC and HTTP) on free ports, all with a token; 4 random corners."""
    from smf.gan import server as gan_server
    from smf.gan.client import GanClient
    from smf.grid import server as grid_server
    from smf.grid.auditioner import Auditioner

    with pytest.MonkeyPatch.context() as mp:
        for name, value in s3_server.env().items():
            mp.setenv(name, value)
        torch.set_num_threads(1)
        gans, started = [], []
        try:
            for _ in range(2):
                servicer = gan_server.GanServicer(grid_store, max_batch=16)
                srv = loopback_server("gan", gan_server.servicers(servicer), gan_server.SERVICE_NAMES, TOKEN).start()
                gans.append(servicer)
                started.append(srv)
            targets = [f"127.0.0.1:{s.port}" for s in started]
            client = GanClient(targets, token=TOKEN)
            out = client.sample_random("tiny", 4, seed=1)
            sample = out.artifact_uri.split(grid_store.uri + "/", 1)[1]
            grid = grid_server.GridServicer(grid_store, client, batch_size=16)
            gsrv = loopback_server("grid", grid_server.servicers(grid), grid_server.SERVICE_NAMES, TOKEN).start()
            started.append(gsrv)
            http = Auditioner(grid_store, token=TOKEN, host="127.0.0.1", port=0).start()
            try:
                yield Services(
                    store=grid_store,
                    gan_ports=[s.port for s in started[:2]],
                    grid_port=gsrv.port,
                    http=http,
                    servicer=grid,
                    corners=[f"{sample}/{n}" for n in range(4)],
                    sample_artifact=sample,
                    gan_servicers=gans,
                )
            finally:
                http.stop()
                grid.close()
                client.close()
        finally:
            for srv in reversed(started):
                srv.stop()
            for g in gans:
                g.close()


@pytest.fixture
def grid_client(services):
    from smf.grid.client import GridClient

    with GridClient(f"127.0.0.1:{services.grid_port}", token=TOKEN) as client:
        yield client


@pytest.fixture(scope="session")
def small_grid(services):
    """A 5 x 3 grid (d0=5 columns, d1=3 rows) with .params, rendered through the service; its artifact id."""
    from smf.grid.client import GridClient

    with GridClient(f"127.0.0.1:{services.grid_port}", token=TOKEN) as client:
        op = client.create_grid("tiny", services.corners, d0=5, d1=3, pm=True)
        op = client.wait(op.id, timeout=300)
    return op.result_uris[0].split(services.store.uri + "/", 1)[1]
