"""R7 (hostile clients), confinement and limits: issue 13's findings 2, 3 and 7a, sent as raw protobuf requests (what a
client built from the .proto files sends) to real GAN, RNN and pipeline servers on loopback.

2. A URI outside the server's store (another folder, a sibling folder whose name extends the store's, another s3
   bucket) is PERMISSION_DENIED, with the same answer whether or not the thing exists there; a store the operator
   allows (`--allow-store`) is read.
3. Training data from a folder outside the operator's data roots (`--data-root`; none by default) is
   PERMISSION_DENIED before any job starts, `..` and symlinks resolved first, the same answer for a folder that does
   not exist; `gpus` above the server's maximum or the host's GPUs is refused naming `gpus`.
7a. Request JSON nested 100 000 levels deep or above 1 MiB is INVALID_ARGUMENT naming the field (before: a
   RecursionError, answered INTERNAL).
Figures: the R7-confinement block of docs/reliability.md.
"""

from __future__ import annotations

import json
import time

import grpc
import pytest
import soundfile as sf
import torch
from smf.common.errors import PermissionDenied
from smf.common.latents import tensor_bytes
from smf.common.limits import MAX_GPUS, MAX_JSON_BYTES
from smf.common.refs import Confinement
from smf.common.store import open_store
from smf.datasets import generate
from smf.gan import server as gan_server
from smf.gan.config import LoaderConfig
from smf.gan.runs import model_summary
from smf.gan.v1 import gan_pb2, gan_pb2_grpc
from smf.pipeline import server as pipeline_server
from smf.pipeline.config import DEMO_CONFIG
from smf.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc
from smf.rnn import server as rnn_server
from smf.rnn.v1 import rnn_pb2, rnn_pb2_grpc
from support.loopback import loopback_server

from .helpers import record_figures, tiny_gan_config

TOKEN = "r7-confinement"
AUTH = [("authorization", f"Bearer {TOKEN}")]
FIGURES: dict = {}
DEEP = {
    "100000 '['": "[" * 100_000,
    "20000 nested objects": '{"a": ' * 20_000 + "1" + "}" * 20_000,
}


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield
    if FIGURES:
        record_figures("R7-confinement", FIGURES)


@pytest.fixture(scope="module")
def places(gan_store, tmp_path_factory):
    """A private folder of sounds outside every store, another store holding a real latent, and a data root."""
    base = tmp_path_factory.mktemp("r7-confinement")
    private = base / "private"
    private.mkdir()
    for clip in generate("tones", n_files=3, seed=0, duration=0.3):
        sf.write(private / f"{clip.name}.wav", clip.audio, 16000, subtype="PCM_16")
    other = open_store(f"file://{base}/other")
    dim = int(model_summary(gan_store, "gan/trained")["latent_dim"])
    other.put_bytes("samples/x/0.pt", tensor_bytes(torch.randn(dim)))
    other.put_bytes("configs/gan.json", json.dumps(tiny_gan_config()).encode())
    root = base / "root"
    root.mkdir()
    (root / "escape").symlink_to(private)  # inside the root by name, outside it once resolved
    return {"private": private, "other": other, "root": root, "base": base}


@pytest.fixture(scope="module")
def stubs(gan_store, places):
    """GAN, RNN and pipeline servers with the defaults a deployment gets: their own store, no data root."""
    gan = gan_server.GanServicer(gan_store)
    rnn = rnn_server.RnnServicer(gan_store)
    pipe = pipeline_server.PipelineServicer(
        gan_store, targets={s: "127.0.0.1:9" for s in ("gan", "grid", "som", "rnn")}
    )
    with (
        loopback_server("gan", gan_server.servicers(gan), gan_server.SERVICE_NAMES, TOKEN) as g,
        loopback_server("rnn", rnn_server.servicers(rnn), rnn_server.SERVICE_NAMES, TOKEN) as r,
        loopback_server("pipeline", pipeline_server.servicers(pipe), pipeline_server.SERVICE_NAMES, TOKEN) as p,
    ):
        channels = [grpc.insecure_channel(f"127.0.0.1:{s.port}") for s in (g, r, p)]
        yield {
            "gan": gan_pb2_grpc.GanServiceStub(channels[0]),
            "rnn": rnn_pb2_grpc.RnnServiceStub(channels[1]),
            "pipeline": pipeline_pb2_grpc.PipelineServiceStub(channels[2]),
            "gan_servicer": gan,
        }
        for c in channels:
            c.close()


def refused(call, request, *, streaming: bool = False) -> tuple[grpc.StatusCode, str, float]:
    """(code, details, ms) of a call that must fail."""
    t0 = time.perf_counter()
    with pytest.raises(grpc.RpcError) as err:
        out = call(request, metadata=AUTH, timeout=30)
        if streaming:
            list(out)
    return err.value.code(), err.value.details() or "", (time.perf_counter() - t0) * 1000


def record(section: str, case: str, code: grpc.StatusCode, ms: float) -> None:
    FIGURES.setdefault(section, {})[case] = f"{code.name} in {ms:.1f} ms"


def _gan_training(data_path: str, *, name: str = "r7-private", gpus: int = 0) -> gan_pb2.StartTrainingRequest:
    cfg = tiny_gan_config()
    cfg["loaderConfig"]["data_path"] = data_path
    return gan_pb2.StartTrainingRequest(name=name, config_json=json.dumps(cfg), gpus=gpus)


# --- finding 2: other stores ------------------------------------------------------------------------------------------
def test_uris_outside_the_store_are_permission_denied_and_say_nothing_of_existence(stubs, places, gan_store):
    other = places["other"]
    render = stubs["gan"].RenderLatents
    answers = {}
    for case, uri in {
        "latent in another folder (exists)": other.key_uri("samples/x/0.pt"),
        "latent in another folder (missing)": other.key_uri("samples/x/1.pt"),
        "sibling folder extending the store's name": f"{gan_store.uri}-b/samples/x/0.pt",
        "another s3 bucket": "s3://someone-else/samples/x/0.pt",
    }.items():
        code, details, ms = refused(
            render, gan_pb2.RenderLatentsRequest(model="trained", latent_uris=[uri]), streaming=True
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED, (case, details)
        assert "latent_uris[0]" in details
        answers[case] = details.replace(uri, "<uri>")
        record("other_stores", case, code, ms)
    # the same words for a latent that exists there and one that does not
    assert answers["latent in another folder (exists)"] == answers["latent in another folder (missing)"]

    code, details, ms = refused(
        render,
        gan_pb2.RenderLatentsRequest(model=other.key_uri("gan/trained"), latents=[gan_pb2.Latent(values=[0.0])]),
        streaming=True,
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "model" in details
    record("other_stores", "model in another folder", code, ms)

    code, details, ms = refused(
        stubs["gan"].StartTraining,
        gan_pb2.StartTrainingRequest(name="r7-cfg", config_uri=other.key_uri("configs/gan.json")),
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "config_uri" in details
    record("other_stores", "config_uri in another folder", code, ms)

    code, details, _ = refused(
        render,
        gan_pb2.RenderLatentsRequest(model="trained", latent_uris=[f"{gan_store.uri}/../other/samples/x/0.pt"]),
        streaming=True,
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'..'" in details  # never taken as inside the store


def test_an_allowed_store_is_read(gan_store, places):
    """--allow-store: the operator names another store, and its latents render."""
    other = places["other"]
    gan = gan_server.GanServicer(gan_store, confine=Confinement.of([other.uri]))
    with loopback_server("gan", gan_server.servicers(gan), gan_server.SERVICE_NAMES, TOKEN) as srv:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = gan_pb2_grpc.GanServiceStub(channel)
            req = gan_pb2.RenderLatentsRequest(
                model="trained", latent_uris=[other.key_uri("samples/x/0.pt")], output=gan_pb2.OUTPUT_INLINE
            )
            replies = list(stub.RenderLatents(req, metadata=AUTH, timeout=60))
    assert any(r.result.audio.data for r in replies)
    gan.close()


# --- finding 3: the server's disk ----------------------------------------------------------------------------------
def test_training_data_outside_the_data_roots_is_refused_before_a_job(stubs, places, gan_store):
    private, root = places["private"], places["root"]
    start = stubs["gan"].StartTraining
    answers = {}
    for case, path in {
        "private folder of sounds": str(private),
        "folder that does not exist": str(private / "nothing-here"),
        "../../etc": "../../etc",
        "another store's dataset": places["other"].key_uri("datasets/tones"),
    }.items():
        code, details, ms = refused(start, _gan_training(path))
        assert code == grpc.StatusCode.PERMISSION_DENIED, (case, details)
        assert "loaderConfig.data_path" in details
        answers[case] = details.replace(path, "<path>")
        record("data_roots", f"gan data_path: {case}", code, ms)
    assert answers["private folder of sounds"] == answers["folder that does not exist"]
    if "att_dict_path" in LoaderConfig.__dataclass_fields__:  # the attribute table is read by the trainer too
        (private / "attrs.json").write_text("{}")
        req = _gan_training("datasets/tones")
        cfg = json.loads(req.config_json)
        cfg["loaderConfig"]["att_dict_path"] = str(private / "attrs.json")
        req.config_json = json.dumps(cfg)
        code, details, ms = refused(start, req)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "loaderConfig.att_dict_path" in details, details
        record("data_roots", "gan att_dict_path: private file", code, ms)
    assert not stubs["gan_servicer"].jobs  # no job was launched
    assert not gan_store.list("gan/r7-private")  # and nothing was written for the run

    code, details, ms = refused(
        stubs["rnn"].StartTraining, rnn_pb2.StartTrainingRequest(data=str(private), props=["normPitch"], run_id="r7")
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and details.startswith("data: ")
    record("data_roots", "rnn data: private folder", code, ms)
    code, details, ms = refused(
        stubs["rnn"].StartTraining,
        rnn_pb2.StartTrainingRequest(data=places["other"].key_uri("datasets/tones"), props=["normPitch"]),
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and details.startswith("data: ")
    record("data_roots", "rnn data: another store's dataset", code, ms)

    cfg = json.loads((DEMO_CONFIG.parent / "tiny.json").read_text())
    cfg["dataset"] = {"folder": str(private)}
    code, details, ms = refused(
        stubs["pipeline"].StartPipeline, pipeline_pb2.StartPipelineRequest(config_json=json.dumps(cfg))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "dataset.folder" in details
    record("data_roots", "pipeline dataset.folder: private folder", code, ms)

    # with a data root: a symlink inside it that leads outside is judged by where it leads
    gan = gan_server.GanServicer(gan_store, confine=Confinement.of([], [root]))
    with pytest.raises(PermissionDenied, match="loaderConfig.data_path"):
        gan.StartTraining(_gan_training(str(root / "escape")), None)
    assert not gan.jobs
    gan.close()


def test_gpus_are_bounded(stubs):
    start = stubs["gan"].StartTraining
    here = torch.cuda.device_count()
    for case, gpus, want in [
        ("negative", -1, grpc.StatusCode.INVALID_ARGUMENT),
        (f"above --max-gpus ({MAX_GPUS})", MAX_GPUS + 1, grpc.StatusCode.INVALID_ARGUMENT),
        (f"above this host's {here}", here + 1, grpc.StatusCode.FAILED_PRECONDITION),
    ]:
        if gpus > MAX_GPUS and want == grpc.StatusCode.FAILED_PRECONDITION:
            continue  # a host with more GPUs than the maximum: the first bound already answers
        code, details, ms = refused(start, _gan_training("datasets/tones", name="r7-gpus", gpus=gpus))
        assert code == want, (case, details)
        assert details.startswith("gpus: "), details
        record("gpus", case, code, ms)
    assert not stubs["gan_servicer"].jobs


# --- finding 7a: JSON depth and size -------------------------------------------------------------------------------
def test_deep_or_huge_json_is_invalid_argument_naming_the_field(stubs):
    huge = json.dumps({"pad": "x" * (MAX_JSON_BYTES + 10)})
    for case, text in {**DEEP, "over 1 MiB": huge}.items():
        for service, call, request in [
            ("gan", stubs["gan"].StartTraining, gan_pb2.StartTrainingRequest(name="r7-json", config_json=text)),
            (
                "rnn",
                stubs["rnn"].StartTraining,
                rnn_pb2.StartTrainingRequest(data="datasets/tones", props=["normPitch"], config_json=text),
            ),
            ("pipeline", stubs["pipeline"].StartPipeline, pipeline_pb2.StartPipelineRequest(config_json=text)),
        ]:
            code, details, ms = refused(call, request)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (service, case, details[:200])
            assert details.startswith("config_json: "), details[:200]
            record("json", f"{service} config_json: {case}", code, ms)


def test_training_sizes_are_bounded(stubs):
    for key, change in [
        ("modelConfig.depthScales[0]", lambda c: c["modelConfig"].update(depthScales=[10**6] * 4)),
        ("modelConfig.miniBatchSize[1]", lambda c: c["modelConfig"].update(miniBatchSize=[4, 10**6, 4, 4])),
    ]:
        req = _gan_training("datasets/tones", name="r7-sizes")
        cfg = json.loads(req.config_json)
        change(cfg)
        req.config_json = json.dumps(cfg)
        code, details, ms = refused(stubs["gan"].StartTraining, req)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{key}: "), details
        record("sizes", f"gan {key} = 10^6", code, ms)
    assert not stubs["gan_servicer"].jobs
    for name, value in [("hidden", 1_000_000), ("batch", 100_000), ("layers", 1000)]:
        options = rnn_pb2.TrainingOptions(**{name: value})
        code, details, ms = refused(
            stubs["rnn"].StartTraining,
            rnn_pb2.StartTrainingRequest(data="datasets/tones", props=["normPitch"], options=options),
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{name}: "), details
        record("sizes", f"rnn {name}={value}", code, ms)


def test_rnn_store_id_that_is_also_a_local_folder_goes_to_the_store(gan_store, tmp_path, monkeypatch):
    """The RNN trainer looks for a folder first: a store id that also names a folder under the server's working
    directory is handed on as its store URI, so the request reads the store it meant, not the server's disk."""
    (tmp_path / "datasets" / "tones").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    rnn = rnn_server.RnnServicer(gan_store)
    assert rnn._data("datasets/tones") == gan_store.key_uri("datasets/tones")
    assert rnn._data("grids/abc") == "grids/abc"  # no such folder here: the id goes on as it is
