from smf.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartLinearizeRequest(_message.Message):
    __slots__ = ("grid_id", "iterations", "tolerance", "rule", "step", "features", "feature_weights", "axes", "seed", "linearization_id")
    class FeatureWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    AXES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LINEARIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    grid_id: str
    iterations: int
    tolerance: float
    rule: str
    step: float
    features: str
    feature_weights: _containers.ScalarMap[str, float]
    axes: str
    seed: int
    linearization_id: str
    def __init__(self, grid_id: _Optional[str] = ..., iterations: _Optional[int] = ..., tolerance: _Optional[float] = ..., rule: _Optional[str] = ..., step: _Optional[float] = ..., features: _Optional[str] = ..., feature_weights: _Optional[_Mapping[str, float]] = ..., axes: _Optional[str] = ..., seed: _Optional[int] = ..., linearization_id: _Optional[str] = ...) -> None: ...

class StartLinearizeResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _common_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_common_pb2.Operation, _Mapping]] = ...) -> None: ...

class Evenness(_message.Message):
    __slots__ = ("cov", "max_min_ratio", "mean_distance")
    COV_FIELD_NUMBER: _ClassVar[int]
    MAX_MIN_RATIO_FIELD_NUMBER: _ClassVar[int]
    MEAN_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    cov: float
    max_min_ratio: float
    mean_distance: float
    def __init__(self, cov: _Optional[float] = ..., max_min_ratio: _Optional[float] = ..., mean_distance: _Optional[float] = ...) -> None: ...

class IterationMetrics(_message.Message):
    __slots__ = ("iteration", "evenness", "move")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    EVENNESS_FIELD_NUMBER: _ClassVar[int]
    MOVE_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    evenness: Evenness
    move: float
    def __init__(self, iteration: _Optional[int] = ..., evenness: _Optional[_Union[Evenness, _Mapping]] = ..., move: _Optional[float] = ...) -> None: ...

class Linearization(_message.Message):
    __slots__ = ("artifact", "grid_id", "model", "d0", "d1", "latent_dim", "features", "feature_weights", "rule", "step", "axes", "tolerance", "seed", "iterations", "converged", "before", "after", "create_time", "linearized_uri", "plot_uris", "history")
    class FeatureWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    D0_FIELD_NUMBER: _ClassVar[int]
    D1_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    AXES_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LINEARIZED_URI_FIELD_NUMBER: _ClassVar[int]
    PLOT_URIS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.ArtifactRef
    grid_id: str
    model: str
    d0: int
    d1: int
    latent_dim: int
    features: str
    feature_weights: _containers.ScalarMap[str, float]
    rule: str
    step: float
    axes: str
    tolerance: float
    seed: int
    iterations: int
    converged: bool
    before: Evenness
    after: Evenness
    create_time: str
    linearized_uri: str
    plot_uris: _containers.RepeatedScalarFieldContainer[str]
    history: _containers.RepeatedCompositeFieldContainer[IterationMetrics]
    def __init__(self, artifact: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., grid_id: _Optional[str] = ..., model: _Optional[str] = ..., d0: _Optional[int] = ..., d1: _Optional[int] = ..., latent_dim: _Optional[int] = ..., features: _Optional[str] = ..., feature_weights: _Optional[_Mapping[str, float]] = ..., rule: _Optional[str] = ..., step: _Optional[float] = ..., axes: _Optional[str] = ..., tolerance: _Optional[float] = ..., seed: _Optional[int] = ..., iterations: _Optional[int] = ..., converged: _Optional[bool] = ..., before: _Optional[_Union[Evenness, _Mapping]] = ..., after: _Optional[_Union[Evenness, _Mapping]] = ..., create_time: _Optional[str] = ..., linearized_uri: _Optional[str] = ..., plot_uris: _Optional[_Iterable[str]] = ..., history: _Optional[_Iterable[_Union[IterationMetrics, _Mapping]]] = ...) -> None: ...

class GetLinearizationRequest(_message.Message):
    __slots__ = ("linearization_id",)
    LINEARIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    linearization_id: str
    def __init__(self, linearization_id: _Optional[str] = ...) -> None: ...

class GetLinearizationResponse(_message.Message):
    __slots__ = ("linearization",)
    LINEARIZATION_FIELD_NUMBER: _ClassVar[int]
    linearization: Linearization
    def __init__(self, linearization: _Optional[_Union[Linearization, _Mapping]] = ...) -> None: ...

class ListLinearizationsRequest(_message.Message):
    __slots__ = ("grid_id",)
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    grid_id: str
    def __init__(self, grid_id: _Optional[str] = ...) -> None: ...

class ListLinearizationsResponse(_message.Message):
    __slots__ = ("linearizations",)
    LINEARIZATIONS_FIELD_NUMBER: _ClassVar[int]
    linearizations: _containers.RepeatedCompositeFieldContainer[Linearization]
    def __init__(self, linearizations: _Optional[_Iterable[_Union[Linearization, _Mapping]]] = ...) -> None: ...

class StartRenderRequest(_message.Message):
    __slots__ = ("linearization_id", "d0", "d1", "pm", "grid_id")
    LINEARIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    D0_FIELD_NUMBER: _ClassVar[int]
    D1_FIELD_NUMBER: _ClassVar[int]
    PM_FIELD_NUMBER: _ClassVar[int]
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    linearization_id: str
    d0: int
    d1: int
    pm: bool
    grid_id: str
    def __init__(self, linearization_id: _Optional[str] = ..., d0: _Optional[int] = ..., d1: _Optional[int] = ..., pm: _Optional[bool] = ..., grid_id: _Optional[str] = ...) -> None: ...

class StartRenderResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _common_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_common_pb2.Operation, _Mapping]] = ...) -> None: ...
