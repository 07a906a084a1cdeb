"""The public client of the pipeline service, for other lab tools that start and follow whole pipelines.

    pipe = PipelineClient("localhost:50056")                           # token from $SMF_TOKEN
    op = pipe.start(Path("my-pipeline.json"))                          # or a dict, JSON text, config_uri="…"
    op = pipe.wait(op.id, on_progress=lambda o: print(o.progress.step, o.progress.total, o.progress.message))
    op.result_uris[0]                                                  # the report: pipelines/<name>/report.html
    for stage in pipe.get("my-pipeline").stages:
        print(stage.name, stage.seconds, list(stage.artifact_uris))

Errors come back as `smf.common.errors` (InvalidArgument naming the config key, FailedPrecondition when a run of
that name is already going, ...).
"""

from __future__ import annotations

import json
import os

from smf.common.client import ServiceClient, call
from smf.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc

__all__ = ["PipelineClient"]


class PipelineClient(ServiceClient):
    stub_class = pipeline_pb2_grpc.PipelineServiceStub  # PipelineClient(target, *, token=None, tls=None)

    def start(
        self,
        config: dict | str | os.PathLike | None = None,
        *,
        config_uri: str = "",
        name: str = "",
        remote: dict[str, str] | None = None,
    ):
        """Start (or resume) a pipeline; returns the Operation.

        `config`: a config dict, its JSON text, or a local config file (read here, so a `gan` path in it is resolved
        next to the file); or `config_uri`: a config in the service's store. `remote`: the four services to use
        ({"gan": "host:port", ...}); default the service's own.
        """
        req = pipeline_pb2.StartPipelineRequest(name=name, remote=remote or {})
        if isinstance(config, os.PathLike):
            from smf.pipeline.config import load_config

            req.config_json = json.dumps(load_config(config).to_dict())
        elif isinstance(config, dict):
            req.config_json = json.dumps(config)
        elif isinstance(config, str):
            req.config_json = config
        if config_uri:
            req.config_uri = config_uri
        return call(self.stub.StartPipeline, req, timeout=60.0).operation

    def get(self, name: str):
        """One run (pipeline_pb2.Pipeline): status, every stage with state/seconds/key/artifacts, report URI."""
        return call(self.stub.GetPipeline, pipeline_pb2.GetPipelineRequest(name=name), idempotent=True).pipeline

    def list(self) -> list:
        """Every run recorded in the service's store, by name."""
        return list(call(self.stub.ListPipelines, pipeline_pb2.ListPipelinesRequest(), idempotent=True).pipelines)
