from smf.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Corner(_message.Message):
    __slots__ = ("uri", "values")
    URI_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    uri: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, uri: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class CreateGridRequest(_message.Message):
    __slots__ = ("model", "corners", "d0", "d1", "pm", "variations", "variation_spread", "seed", "interpolation", "grid_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CORNERS_FIELD_NUMBER: _ClassVar[int]
    D0_FIELD_NUMBER: _ClassVar[int]
    D1_FIELD_NUMBER: _ClassVar[int]
    PM_FIELD_NUMBER: _ClassVar[int]
    VARIATIONS_FIELD_NUMBER: _ClassVar[int]
    VARIATION_SPREAD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    corners: _containers.RepeatedCompositeFieldContainer[Corner]
    d0: int
    d1: int
    pm: bool
    variations: int
    variation_spread: float
    seed: int
    interpolation: str
    grid_id: str
    def __init__(self, model: _Optional[str] = ..., corners: _Optional[_Iterable[_Union[Corner, _Mapping]]] = ..., d0: _Optional[int] = ..., d1: _Optional[int] = ..., pm: _Optional[bool] = ..., variations: _Optional[int] = ..., variation_spread: _Optional[float] = ..., seed: _Optional[int] = ..., interpolation: _Optional[str] = ..., grid_id: _Optional[str] = ...) -> None: ...

class CreateGridResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _common_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_common_pb2.Operation, _Mapping]] = ...) -> None: ...

class GetGridRequest(_message.Message):
    __slots__ = ("grid_id",)
    GRID_ID_FIELD_NUMBER: _ClassVar[int]
    grid_id: str
    def __init__(self, grid_id: _Optional[str] = ...) -> None: ...

class Cell(_message.Message):
    __slots__ = ("i", "j", "k", "dim0", "dim1", "wav_uri", "params_uri")
    I_FIELD_NUMBER: _ClassVar[int]
    J_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    DIM0_FIELD_NUMBER: _ClassVar[int]
    DIM1_FIELD_NUMBER: _ClassVar[int]
    WAV_URI_FIELD_NUMBER: _ClassVar[int]
    PARAMS_URI_FIELD_NUMBER: _ClassVar[int]
    i: int
    j: int
    k: int
    dim0: float
    dim1: float
    wav_uri: str
    params_uri: str
    def __init__(self, i: _Optional[int] = ..., j: _Optional[int] = ..., k: _Optional[int] = ..., dim0: _Optional[float] = ..., dim1: _Optional[float] = ..., wav_uri: _Optional[str] = ..., params_uri: _Optional[str] = ...) -> None: ...

class Grid(_message.Message):
    __slots__ = ("artifact", "model", "d0", "d1", "variations", "interpolation", "sample_rate", "duration", "latent_dim", "corners", "create_time", "mosaic_uri", "cells")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    D0_FIELD_NUMBER: _ClassVar[int]
    D1_FIELD_NUMBER: _ClassVar[int]
    VARIATIONS_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    CORNERS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MOSAIC_URI_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.ArtifactRef
    model: str
    d0: int
    d1: int
    variations: int
    interpolation: str
    sample_rate: int
    duration: float
    latent_dim: int
    corners: _containers.RepeatedScalarFieldContainer[str]
    create_time: str
    mosaic_uri: str
    cells: _containers.RepeatedCompositeFieldContainer[Cell]
    def __init__(self, artifact: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., model: _Optional[str] = ..., d0: _Optional[int] = ..., d1: _Optional[int] = ..., variations: _Optional[int] = ..., interpolation: _Optional[str] = ..., sample_rate: _Optional[int] = ..., duration: _Optional[float] = ..., latent_dim: _Optional[int] = ..., corners: _Optional[_Iterable[str]] = ..., create_time: _Optional[str] = ..., mosaic_uri: _Optional[str] = ..., cells: _Optional[_Iterable[_Union[Cell, _Mapping]]] = ...) -> None: ...

class GetGridResponse(_message.Message):
    __slots__ = ("grid",)
    GRID_FIELD_NUMBER: _ClassVar[int]
    grid: Grid
    def __init__(self, grid: _Optional[_Union[Grid, _Mapping]] = ...) -> None: ...

class ListGridsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListGridsResponse(_message.Message):
    __slots__ = ("grids",)
    GRIDS_FIELD_NUMBER: _ClassVar[int]
    grids: _containers.RepeatedCompositeFieldContainer[Grid]
    def __init__(self, grids: _Optional[_Iterable[_Union[Grid, _Mapping]]] = ...) -> None: ...
