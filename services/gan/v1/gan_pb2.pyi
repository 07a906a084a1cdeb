from smf.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Output(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_UNSPECIFIED: _ClassVar[Output]
    OUTPUT_STORE: _ClassVar[Output]
    OUTPUT_INLINE: _ClassVar[Output]
    OUTPUT_BOTH: _ClassVar[Output]
OUTPUT_UNSPECIFIED: Output
OUTPUT_STORE: Output
OUTPUT_INLINE: Output
OUTPUT_BOTH: Output

class StartTrainingRequest(_message.Message):
    __slots__ = ("name", "config_json", "config_uri", "gpus")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    CONFIG_URI_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    config_json: str
    config_uri: str
    gpus: int
    def __init__(self, name: _Optional[str] = ..., config_json: _Optional[str] = ..., config_uri: _Optional[str] = ..., gpus: _Optional[int] = ...) -> None: ...

class StartTrainingResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _common_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_common_pb2.Operation, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("name_prefix",)
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    name_prefix: str
    def __init__(self, name_prefix: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "artifact", "step", "total_steps", "state", "latent_dim", "sample_rate", "audio_length", "attributes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    artifact: _common_pb2.ArtifactRef
    step: int
    total_steps: int
    state: str
    latent_dim: int
    sample_rate: int
    audio_length: int
    attributes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., artifact: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., state: _Optional[str] = ..., latent_dim: _Optional[int] = ..., sample_rate: _Optional[int] = ..., audio_length: _Optional[int] = ..., attributes: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class SampleRandomRequest(_message.Message):
    __slots__ = ("model", "count", "seed", "output", "encoding")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    model: str
    count: int
    seed: int
    output: Output
    encoding: _common_pb2.AudioEncoding
    def __init__(self, model: _Optional[str] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., output: _Optional[_Union[Output, str]] = ..., encoding: _Optional[_Union[_common_pb2.AudioEncoding, str]] = ...) -> None: ...

class SampleResult(_message.Message):
    __slots__ = ("index", "latent", "wav_uri", "latent_uri", "audio")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    WAV_URI_FIELD_NUMBER: _ClassVar[int]
    LATENT_URI_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    index: int
    latent: _containers.RepeatedScalarFieldContainer[float]
    wav_uri: str
    latent_uri: str
    audio: _common_pb2.AudioChunk
    def __init__(self, index: _Optional[int] = ..., latent: _Optional[_Iterable[float]] = ..., wav_uri: _Optional[str] = ..., latent_uri: _Optional[str] = ..., audio: _Optional[_Union[_common_pb2.AudioChunk, _Mapping]] = ...) -> None: ...

class SampleRandomResponse(_message.Message):
    __slots__ = ("result", "artifact", "seed")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    result: SampleResult
    artifact: _common_pb2.ArtifactRef
    seed: int
    def __init__(self, result: _Optional[_Union[SampleResult, _Mapping]] = ..., artifact: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class Latent(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class RenderLatentsRequest(_message.Message):
    __slots__ = ("model", "latents", "latent_uris", "output", "encoding", "output_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    LATENT_URIS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    latents: _containers.RepeatedCompositeFieldContainer[Latent]
    latent_uris: _containers.RepeatedScalarFieldContainer[str]
    output: Output
    encoding: _common_pb2.AudioEncoding
    output_id: str
    def __init__(self, model: _Optional[str] = ..., latents: _Optional[_Iterable[_Union[Latent, _Mapping]]] = ..., latent_uris: _Optional[_Iterable[str]] = ..., output: _Optional[_Union[Output, str]] = ..., encoding: _Optional[_Union[_common_pb2.AudioEncoding, str]] = ..., output_id: _Optional[str] = ...) -> None: ...

class RenderLatentsResponse(_message.Message):
    __slots__ = ("result", "artifact")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    result: SampleResult
    artifact: _common_pb2.ArtifactRef
    def __init__(self, result: _Optional[_Union[SampleResult, _Mapping]] = ..., artifact: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...
