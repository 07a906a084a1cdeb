"""R1: every RPC of every service (gan, grid, som, rnn, pipeline and the OperationService each of them serves) fuzzed
with hypothesis over real gRPC: random field values (garbage strings, paths, huge and negative numbers, NaN, unknown
enum values, nested messages) and malformed wire bytes. Pass = no INTERNAL / UNKNOWN status, no crashed service.

Requests are generated from the proto descriptors, so a new RPC or field is fuzzed without touching this file.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict

import grpc
import pytest
from google.protobuf import descriptor as D
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smf.common.client import connect
from smf.common.v1 import operations_pb2
from smf.gan.v1 import gan_pb2
from smf.grid.v1 import grid_pb2
from smf.pipeline.server import PipelineServicer
from smf.pipeline.server import servicers as pipeline_servicers
from smf.pipeline.services import local_services, wait_healthy
from smf.pipeline.v1 import pipeline_pb2
from smf.rnn.v1 import rnn_pb2
from smf.som.v1 import som_pb2
from support.loopback import loopback_server

from .helpers import SLOW, record_figures

EXAMPLES = 200 if SLOW else 20
MALFORMED = 50 if SLOW else 8
TIMEOUT = 8.0
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
OPS = operations_pb2.DESCRIPTOR.services_by_name["OperationService"]
SERVICES = {
    "gan": gan_pb2.DESCRIPTOR.services_by_name["GanService"],
    "grid": grid_pb2.DESCRIPTOR.services_by_name["GridService"],
    "som": som_pb2.DESCRIPTOR.services_by_name["SomService"],
    "rnn": rnn_pb2.DESCRIPTOR.services_by_name["RnnService"],
    "pipeline": pipeline_pb2.DESCRIPTOR.services_by_name["PipelineService"],
}
METHODS = [(svc, d, m.name) for svc, d in SERVICES.items() for m in d.methods] + [
    (svc, OPS, m.name) for svc in SERVICES for m in OPS.methods
]
CODES: dict[str, Counter] = defaultdict(Counter)

# strings that reach deeper than random text: names that exist in the store, paths that must be refused
INTERESTING = [
    "",
    "trained",
    "gan/trained",
    "datasets/tones",
    "tones",
    "grids/x",
    "som/x",
    "rnn/x",
    "../../etc/passwd",
    "/etc/passwd",
    "file:///etc/passwd",
    "s3://bucket/../x",
    "gan/trained/../../x",
    "a" * 5000,
    "\x00",
    "samples/x/0",
    "{}",
    '{"steps": -1}',
    "dim0",
    "normPitch",
    "é€😀",
    "op-0000",
]

_INT = {
    D.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    D.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    D.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    D.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    D.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    D.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    D.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    D.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    D.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    D.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def scalar(fd: D.FieldDescriptor):
    t = fd.type
    if t == fd.TYPE_STRING:
        return st.one_of(st.sampled_from(INTERESTING), st.text(max_size=40))
    if t == fd.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == fd.TYPE_BOOL:
        return st.booleans()
    if t in (fd.TYPE_FLOAT, fd.TYPE_DOUBLE):
        return st.floats(width=32 if t == fd.TYPE_FLOAT else 64, allow_nan=True, allow_infinity=True)
    if t == fd.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in fd.enum_type.values]), st.integers(-5, 1000))
    lo, hi = _INT[t]
    return st.one_of(st.sampled_from([0, 1, 2, 3, 4, 16, -1, 1024, 4097, lo, hi]), st.integers(lo, hi))


def message(desc: D.Descriptor, depth: int = 0):
    cls = GetMessageClass(desc)

    @st.composite
    def build(draw):
        msg = cls()
        for fd in desc.fields:
            if not draw(st.booleans()):
                continue  # leave it unset
            is_msg = fd.type == fd.TYPE_MESSAGE
            if is_msg and fd.message_type.GetOptions().map_entry:
                k, v = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
                if v.type == v.TYPE_MESSAGE:
                    continue
                for key, val in draw(st.dictionaries(scalar(k), scalar(v), max_size=3)).items():
                    getattr(msg, fd.name)[key] = val
            elif fd.is_repeated:
                if is_msg:
                    if depth < 2:
                        for m in draw(st.lists(message(fd.message_type, depth + 1), max_size=3)):
                            getattr(msg, fd.name).add().CopyFrom(m)
                else:
                    # a latent-sized list now and then, so shape checks are passed and deeper code is reached
                    n = draw(st.sampled_from([0, 1, 3, 16, 17, 64]))
                    getattr(msg, fd.name).extend(draw(st.lists(scalar(fd), min_size=n, max_size=n)))
            elif is_msg:
                if depth < 3:
                    getattr(msg, fd.name).CopyFrom(draw(message(fd.message_type, depth + 1)))
            else:
                setattr(msg, fd.name, draw(scalar(fd)))
        return msg

    return build()


@pytest.fixture(scope="module")
def services(gan_store, tmp_path_factory):
    with local_services(gan_store.uri, log_dir=tmp_path_factory.mktemp("fuzz-logs")) as svc:
        # the pipeline service in-process, running its stages on the four fuzzed services (never spawning its own)
        pipeline = PipelineServicer(gan_store, targets=svc.targets, token=svc.token)
        with loopback_server(
            "pipeline", pipeline_servicers(pipeline), [SERVICES["pipeline"].full_name], svc.token
        ) as p:
            targets = {**svc.targets, "pipeline": f"127.0.0.1:{p.port}"}
            channels = {n: connect(t, token=svc.token, default_timeout=None) for n, t in targets.items()}
            yield svc, channels
            _cancel_all(channels)
            for c in channels.values():
                c.close()


def _invoke(channel, service: D.ServiceDescriptor, method: D.MethodDescriptor, payload, *, raw: bool) -> str:
    path = f"/{service.full_name}/{method.name}"
    ser = (lambda b: b) if raw else (lambda m: m.SerializeToString())
    try:
        if method.client_streaming:
            call = channel.stream_stream(path, request_serializer=ser, response_deserializer=bytes)
            for _ in call(iter(payload), timeout=TIMEOUT):
                pass
        elif method.server_streaming:
            call = channel.unary_stream(path, request_serializer=ser, response_deserializer=bytes)
            for _ in call(payload, timeout=TIMEOUT):
                pass
        else:
            channel.unary_unary(path, request_serializer=ser, response_deserializer=bytes)(payload, timeout=TIMEOUT)
        return "OK"
    except grpc.RpcError as exc:
        code = exc.code()
        assert code not in BAD, f"{path}: {code.name}: {exc.details()}"
        return code.name


def _cancel_all(channels) -> None:
    """Stop whatever fuzzed Start... calls set going (training jobs, renders), so they do not pile up."""
    from smf.common.v1 import operations_pb2_grpc

    for ch in channels.values():
        stub = operations_pb2_grpc.OperationServiceStub(ch)
        for op in stub.ListOperations(operations_pb2.ListOperationsRequest(active_only=True), timeout=10).operations:
            stub.CancelOperation(operations_pb2.CancelOperationRequest(operation_id=op.id), timeout=10)


@pytest.mark.parametrize("svc_name, service, method_name", METHODS, ids=[f"{s}-{d.name}.{m}" for s, d, m in METHODS])
def test_fuzz_rpc(services, svc_name, service, method_name):
    svc, channels = services
    method = service.methods_by_name[method_name]
    key = f"{svc_name}:{service.name}.{method_name}"
    strategy = message(method.input_type)
    if method.client_streaming:
        strategy = st.lists(strategy, min_size=1, max_size=3)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def fuzz(request):
        CODES[key][_invoke(channels[svc_name], service, method, request, raw=False)] += 1

    try:
        fuzz()
    finally:
        _cancel_all(channels)
    for name, proc in svc.processes.items():
        assert proc.poll() is None, f"service {name} died while fuzzing {key}:\n{svc.log_tail(name)}"


@pytest.mark.parametrize("svc_name, service, method_name", METHODS, ids=[f"{s}-{d.name}.{m}" for s, d, m in METHODS])
def test_malformed_wire_bytes(services, svc_name, service, method_name):
    svc, channels = services
    method = service.methods_by_name[method_name]
    key = f"{svc_name}:{service.name}.{method_name} (malformed bytes)"

    @settings(max_examples=MALFORMED, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(min_size=1, max_size=200))
    def malformed(data):
        payload = [data] if method.client_streaming else data
        try:
            CODES[key][_invoke(channels[svc_name], service, method, payload, raw=True)] += 1
        except AssertionError as exc:
            CODES[key][str(exc).split(": ")[1]] += 1
            raise

    try:
        malformed()
    finally:
        _cancel_all(channels)
        for name, proc in svc.processes.items():
            assert proc.poll() is None, f"service {name} died on malformed bytes ({key})"


def test_services_survived_and_figures(services):
    svc, _ = services
    wait_healthy(svc, timeout=30)
    calls = sum(sum(c.values()) for c in CODES.values())
    totals = Counter()
    for c in CODES.values():
        totals.update(c)
    fields = Counter()
    for k, c in CODES.items():
        if "malformed" not in k:
            fields.update(c)
    record_figures(
        "R1",
        {
            "rpcs": len({k.split(" ")[0] for k in CODES}),
            "calls": calls,
            "examples_per_rpc": EXAMPLES,
            "malformed_per_rpc": MALFORMED,
            "status_codes_fuzzed_fields": dict(fields.most_common()),
            "status_codes_all": dict(totals.most_common()),
            "internal_or_unknown_fuzzed_fields": fields["INTERNAL"] + fields["UNKNOWN"],
            "per_rpc": {k: dict(v) for k, v in sorted(CODES.items())},
        },
    )
    if os.environ.get("SMF_FUZZ_PRINT"):
        print(dict(totals))
