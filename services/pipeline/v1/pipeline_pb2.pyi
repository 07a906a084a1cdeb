from smf.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StageState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_STATE_UNSPECIFIED: _ClassVar[StageState]
    STAGE_STATE_PENDING: _ClassVar[StageState]
    STAGE_STATE_RUNNING: _ClassVar[StageState]
    STAGE_STATE_DONE: _ClassVar[StageState]
    STAGE_STATE_FAILED: _ClassVar[StageState]

class PipelineStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIPELINE_STATUS_UNSPECIFIED: _ClassVar[PipelineStatus]
    PIPELINE_STATUS_RUNNING: _ClassVar[PipelineStatus]
    PIPELINE_STATUS_SUCCEEDED: _ClassVar[PipelineStatus]
    PIPELINE_STATUS_FAILED: _ClassVar[PipelineStatus]
STAGE_STATE_UNSPECIFIED: StageState
STAGE_STATE_PENDING: StageState
STAGE_STATE_RUNNING: StageState
STAGE_STATE_DONE: StageState
STAGE_STATE_FAILED: StageState
PIPELINE_STATUS_UNSPECIFIED: PipelineStatus
PIPELINE_STATUS_RUNNING: PipelineStatus
PIPELINE_STATUS_SUCCEEDED: PipelineStatus
PIPELINE_STATUS_FAILED: PipelineStatus

class StartPipelineRequest(_message.Message):
    __slots__ = ("config_json", "config_uri", "name", "remote")
    class RemoteEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    CONFIG_URI_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    config_json: str
    config_uri: str
    name: str
    remote: _containers.ScalarMap[str, str]
    def __init__(self, config_json: _Optional[str] = ..., config_uri: _Optional[str] = ..., name: _Optional[str] = ..., remote: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartPipelineResponse(_message.Message):
    __slots__ = ("operation", "name")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    operation: _common_pb2.Operation
    name: str
    def __init__(self, operation: _Optional[_Union[_common_pb2.Operation, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class Stage(_message.Message):
    __slots__ = ("name", "state", "seconds", "key", "artifact_uris", "started_at", "finished_at", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URIS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: StageState
    seconds: float
    key: str
    artifact_uris: _containers.RepeatedScalarFieldContainer[str]
    started_at: str
    finished_at: str
    error: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[StageState, str]] = ..., seconds: _Optional[float] = ..., key: _Optional[str] = ..., artifact_uris: _Optional[_Iterable[str]] = ..., started_at: _Optional[str] = ..., finished_at: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class Pipeline(_message.Message):
    __slots__ = ("name", "status", "stages", "report_uri", "error", "operation_id", "ran", "skipped", "started_at", "updated_at", "state_uri")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    REPORT_URI_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    RAN_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_URI_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: PipelineStatus
    stages: _containers.RepeatedCompositeFieldContainer[Stage]
    report_uri: str
    error: str
    operation_id: str
    ran: _containers.RepeatedScalarFieldContainer[str]
    skipped: _containers.RepeatedScalarFieldContainer[str]
    started_at: str
    updated_at: str
    state_uri: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[PipelineStatus, str]] = ..., stages: _Optional[_Iterable[_Union[Stage, _Mapping]]] = ..., report_uri: _Optional[str] = ..., error: _Optional[str] = ..., operation_id: _Optional[str] = ..., ran: _Optional[_Iterable[str]] = ..., skipped: _Optional[_Iterable[str]] = ..., started_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., state_uri: _Optional[str] = ...) -> None: ...

class GetPipelineRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPipelineResponse(_message.Message):
    __slots__ = ("pipeline",)
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    pipeline: Pipeline
    def __init__(self, pipeline: _Optional[_Union[Pipeline, _Mapping]] = ...) -> None: ...

class ListPipelinesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPipelinesResponse(_message.Message):
    __slots__ = ("pipelines",)
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    pipelines: _containers.RepeatedCompositeFieldContainer[Pipeline]
    def __init__(self, pipelines: _Optional[_Iterable[_Union[Pipeline, _Mapping]]] = ...) -> None: ...
