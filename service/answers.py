"""The bodies the service answers beyond the native API's own (service/schemas.py), as
the OpenAPI document (service/openapi.py) declares them: the latent-space endpoints,
GET /models and GET /model, and the Open Inference Protocol (its inference request too,
which service/oip.py checks by hand). Nothing here checks a request or builds an answer:
these models only describe them, so a change to an answer changes its model here, and
tests/test_openapi.py fails until it does.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.schemas import ModelInfo, Values

# --- answers of the latent-space endpoints (service/latent_space.py) -----------------------


class EditFrames(BaseModel):
    strengths: list[float]
    labels: list[int] | None = None
    shape: list[int]
    frames: list[str] = Field(description="Base64-encoded PNG frames, one per strength.")
    latents: list[list[float]]
    model: ModelInfo


class EditArrays(BaseModel):
    strengths: list[float]
    shape: list[int]
    labels: list[int] | None = None
    latents: list[list[float]]
    images: Values


class CombineImage(BaseModel):
    image: str = Field(description="A base64-encoded PNG.")
    latent: list[float]
    labels: list[int] | None = None
    shape: list[int]
    model: ModelInfo


class CombineArrays(BaseModel):
    shape: list[int]
    latent: list[float]
    images: Values


class SearchReport(BaseModel):
    steps: int
    distances_before: list[float]


class ProjectResponse(BaseModel):
    latents: list[list[float]]
    distances: list[float] = Field(description="Pixel RMS distance of each reconstruction.")
    reconstructions: list[str] = Field(description="Base64-encoded PNGs.")
    inputs: list[str] = Field(description="The pictures as the encoder saw them (base64 PNGs).")
    search: SearchReport
    shape: list[int]
    model: ModelInfo


class Direction(BaseModel):
    name: str
    eigenvalue: float
    vector: list[float]


class ClassMean(BaseModel):
    class_: int = Field(alias="class")
    samples: int
    mean: list[float]


class Directions(BaseModel):
    sefa: list[Direction]
    classes: list[ClassMean] | None
    notes: dict[str, Any]
    encoder: bool
    model: ModelInfo


# --- answers of GET /models and GET /model (service/registry.py, DCGAN.info) ---------------

class ModelSummary(BaseModel):
    """A served model; the fields after `error` once it has loaded."""
    name: str
    version: str | None
    digest: str | None
    file: str | None
    ready: bool
    state: Literal["loading", "ready", "failed"]
    error: str | None
    output_shape: list[int] = None
    nz: int = None
    num_classes: int = None
    classes: list[int] = None
    providers: list[str] = None
    card: dict[str, Any] = None


class ModelsListing(BaseModel):
    default: str | None
    ready: bool
    error: str | None
    workers: int
    models: list[ModelSummary]


class ModelDescription(BaseModel):
    """One model and the service's settings; the fields after `limits` once it is known
    (bad settings: no model) and has loaded."""
    ready: bool
    error: str | None
    auth_required: bool
    batching: dict[str, Any]
    limits: dict[str, Any]
    name: str = None
    version: str | None = None
    digest: str | None = None
    file: str = None
    providers: list[str] = None
    card: dict[str, Any] = None
    encoder: bool = None
    directions: list[str] = None
    sidecar_problems: list[str] = None


# --- the Open Inference Protocol (service/oip.py) -----------------------------------------

class ProtocolError(BaseModel):
    """Every refusal under /v2, in the protocol's form."""
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool
    error: str = None


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: Literal["INT64", "FP32", "UINT8"]
    shape: list[int] = Field(description="-1: any size.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str | None]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]


Tensor = Literal["seed", "z", "label"]


class TensorParameters(BaseModel):
    binary_data_size: int = Field(None, ge=0, description="The tensor's bytes in the binary "
                                  "part of the body, in place of `data`.")


class InferInput(BaseModel):
    name: Tensor
    datatype: Literal["INT64", "FP32"] = Field(description="seed, label: INT64; z: FP32.")
    shape: list[int] = Field(description="seed, label: [N]; z: [N, nz].")
    data: list[Any] = Field(None, description="Row-major values, flat or nested.")
    parameters: TensorParameters = None


class OutputParameters(BaseModel):
    binary_data: bool = None
    datatype: Literal["UINT8", "FP32"] = None


class RequestedOutput(BaseModel):
    name: Literal["images", "seed", "z", "label"]
    parameters: OutputParameters = None


class InferRequest(BaseModel):
    """The JSON header of an inference request (with the binary tensor extension, the
    binary inputs follow it: `Inference-Header-Content-Length` says where it ends)."""
    id: str = None
    parameters: dict[str, Any] = Field(None, description="truncation (a number), "
                                       "binary_data_output (true or false).")
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] = None


class InferOutput(BaseModel):
    name: str
    datatype: Literal["INT64", "FP32", "UINT8"]
    shape: list[int]
    data: list[float] = Field(None, description="Row-major values (absent when binary).")
    parameters: dict[str, int] = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None
    id: str = None
    outputs: list[InferOutput]
