from smf.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingOptions(_message.Message):
    __slots__ = ("hidden", "layers", "seq_len", "batch", "steps", "lr", "tfr", "tfr_end", "checkpoint_every", "seed", "sample_rate")
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    TFR_FIELD_NUMBER: _ClassVar[int]
    TFR_END_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    hidden: int
    layers: int
    seq_len: int
    batch: int
    steps: int
    lr: float
    tfr: float
    tfr_end: float
    checkpoint_every: int
    seed: int
    sample_rate: int
    def __init__(self, hidden: _Optional[int] = ..., layers: _Optional[int] = ..., seq_len: _Optional[int] = ..., batch: _Optional[int] = ..., steps: _Optional[int] = ..., lr: _Optional[float] = ..., tfr: _Optional[float] = ..., tfr_end: _Optional[float] = ..., checkpoint_every: _Optional[int] = ..., seed: _Optional[int] = ..., sample_rate: _Optional[int] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("data", "props", "run_id", "options", "config_json")
    DATA_FIELD_NUMBER: _ClassVar[int]
    PROPS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    data: str
    props: _containers.RepeatedScalarFieldContainer[str]
    run_id: str
    options: TrainingOptions
    config_json: str
    def __init__(self, data: _Optional[str] = ..., props: _Optional[_Iterable[str]] = ..., run_id: _Optional[str] = ..., options: _Optional[_Union[TrainingOptions, _Mapping]] = ..., config_json: _Optional[str] = ...) -> None: ...

class StartTrainingResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _common_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_common_pb2.Operation, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("ref", "param_names", "steps", "sample_rate", "hidden", "layers", "state", "loss")
    REF_FIELD_NUMBER: _ClassVar[int]
    PARAM_NAMES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ref: _common_pb2.ArtifactRef
    param_names: _containers.RepeatedScalarFieldContainer[str]
    steps: _containers.RepeatedScalarFieldContainer[int]
    sample_rate: int
    hidden: int
    layers: int
    state: str
    loss: float
    def __init__(self, ref: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., param_names: _Optional[_Iterable[str]] = ..., steps: _Optional[_Iterable[int]] = ..., sample_rate: _Optional[int] = ..., hidden: _Optional[int] = ..., layers: _Optional[int] = ..., state: _Optional[str] = ..., loss: _Optional[float] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ConditioningArray(_message.Message):
    __slots__ = ("values", "batch", "points", "columns")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    batch: int
    points: int
    columns: int
    def __init__(self, values: _Optional[_Iterable[float]] = ..., batch: _Optional[int] = ..., points: _Optional[int] = ..., columns: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "step", "conditioning_uri", "array", "duration", "temperature", "seed", "voices", "stream_audio", "chain_model", "chain_step")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CONDITIONING_URI_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VOICES_FIELD_NUMBER: _ClassVar[int]
    STREAM_AUDIO_FIELD_NUMBER: _ClassVar[int]
    CHAIN_MODEL_FIELD_NUMBER: _ClassVar[int]
    CHAIN_STEP_FIELD_NUMBER: _ClassVar[int]
    model: str
    step: int
    conditioning_uri: str
    array: ConditioningArray
    duration: float
    temperature: float
    seed: int
    voices: int
    stream_audio: bool
    chain_model: str
    chain_step: int
    def __init__(self, model: _Optional[str] = ..., step: _Optional[int] = ..., conditioning_uri: _Optional[str] = ..., array: _Optional[_Union[ConditioningArray, _Mapping]] = ..., duration: _Optional[float] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., voices: _Optional[int] = ..., stream_audio: _Optional[bool] = ..., chain_model: _Optional[str] = ..., chain_step: _Optional[int] = ...) -> None: ...

class GenerateResult(_message.Message):
    __slots__ = ("render", "wav_uris", "conditioning_uri", "samples", "voices", "seconds_taken")
    RENDER_FIELD_NUMBER: _ClassVar[int]
    WAV_URIS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONING_URI_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    VOICES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_TAKEN_FIELD_NUMBER: _ClassVar[int]
    render: _common_pb2.ArtifactRef
    wav_uris: _containers.RepeatedScalarFieldContainer[str]
    conditioning_uri: str
    samples: int
    voices: int
    seconds_taken: float
    def __init__(self, render: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., wav_uris: _Optional[_Iterable[str]] = ..., conditioning_uri: _Optional[str] = ..., samples: _Optional[int] = ..., voices: _Optional[int] = ..., seconds_taken: _Optional[float] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("chunk", "result")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    chunk: _common_pb2.AudioChunk
    result: GenerateResult
    def __init__(self, chunk: _Optional[_Union[_common_pb2.AudioChunk, _Mapping]] = ..., result: _Optional[_Union[GenerateResult, _Mapping]] = ...) -> None: ...

class PlayStart(_message.Message):
    __slots__ = ("model", "step", "values", "chunk_samples", "temperature", "seed", "max_ahead_ms", "max_seconds", "chain_model", "chain_step")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_AHEAD_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_MODEL_FIELD_NUMBER: _ClassVar[int]
    CHAIN_STEP_FIELD_NUMBER: _ClassVar[int]
    model: str
    step: int
    values: _containers.RepeatedScalarFieldContainer[float]
    chunk_samples: int
    temperature: float
    seed: int
    max_ahead_ms: int
    max_seconds: float
    chain_model: str
    chain_step: int
    def __init__(self, model: _Optional[str] = ..., step: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., chunk_samples: _Optional[int] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., max_ahead_ms: _Optional[int] = ..., max_seconds: _Optional[float] = ..., chain_model: _Optional[str] = ..., chain_step: _Optional[int] = ...) -> None: ...

class ParameterUpdate(_message.Message):
    __slots__ = ("values", "glide_ms", "temperature")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    GLIDE_MS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, float]
    glide_ms: float
    temperature: float
    def __init__(self, values: _Optional[_Mapping[str, float]] = ..., glide_ms: _Optional[float] = ..., temperature: _Optional[float] = ...) -> None: ...

class PlayRequest(_message.Message):
    __slots__ = ("start", "update")
    START_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    start: PlayStart
    update: ParameterUpdate
    def __init__(self, start: _Optional[_Union[PlayStart, _Mapping]] = ..., update: _Optional[_Union[ParameterUpdate, _Mapping]] = ...) -> None: ...

class PlayResponse(_message.Message):
    __slots__ = ("chunk", "values")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    chunk: _common_pb2.AudioChunk
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, chunk: _Optional[_Union[_common_pb2.AudioChunk, _Mapping]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("model", "step")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    model: str
    step: int
    def __init__(self, model: _Optional[str] = ..., step: _Optional[int] = ...) -> None: ...

class ExportResponse(_message.Message):
    __slots__ = ("artifact", "uri")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.ArtifactRef
    uri: str
    def __init__(self, artifact: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., uri: _Optional[str] = ...) -> None: ...
