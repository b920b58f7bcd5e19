"""The gRPC servicer: protobuf messages in, engine calls, protobuf messages out.

Only translation lives here. Every ``ServingError`` becomes its gRPC status with the error's
message; anything unexpected is logged with its traceback and answered INTERNAL, so no request can
take the server down.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc

from edge_agent.proto import inference_pb2 as pb
from edge_agent.proto import inference_pb2_grpc as pb_grpc
from edge_agent.serving.codec import encode_raw
from edge_agent.serving.engine import InferenceEngine, InferRequest, InferResponse, InputTensor
from edge_agent.serving.errors import InvalidRequest, ServingError
from edge_agent.serving.statistics import Duration, ModelStats

log = logging.getLogger("edgefleet.agent")

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.ServicerContext], Response]

LOAD_PARAMETERS = ("version", "bundle")


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort raises")  # pragma: no cover


def rpc(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Answer a ``ServingError`` with its status, and anything else with INTERNAL; never raise."""

    @functools.wraps(handler)
    def guarded(self: Any, request: Request, context: grpc.ServicerContext) -> Response:
        try:
            return handler(self, request, context)
        except ServingError as exc:
            _abort(context, grpc.StatusCode[exc.status], str(exc))
        except Exception as exc:
            log.exception("unexpected error in %s", handler.__name__)
            _abort(context, grpc.StatusCode.INTERNAL, f"internal error in {handler.__name__}: {exc}")

    return guarded


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over an ``InferenceEngine``."""

    def __init__(self, engine: InferenceEngine) -> None:
        self.engine = engine

    @rpc
    def ServerLive(  # noqa: N802
        self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.engine.server_live())

    @rpc
    def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.engine.server_ready())

    @rpc
    def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.engine.model_ready(request.name, request.version))

    @rpc
    def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        name, version, extensions = self.engine.server_metadata()
        return pb.ServerMetadataResponse(name=name, version=version, extensions=list(extensions))

    @rpc
    def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        meta = self.engine.model_metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    @rpc
    def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        return infer_response_to_proto(self.engine.infer(infer_request_from_proto(request)))

    @rpc
    def ModelStatistics(  # noqa: N802
        self, request: pb.ModelStatisticsRequest, context: grpc.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        stats = self.engine.statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[statistics_to_proto(s) for s in stats])

    @rpc
    def RepositoryIndex(  # noqa: N802
        self, request: pb.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                index(name=row.name, version=row.version, state=row.state.value, reason=row.reason)
                for row in self.engine.index(ready_only=request.ready)
            ]
        )

    @rpc
    def RepositoryModelLoad(  # noqa: N802
        self, request: pb.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        options = load_options(request.parameters)
        bundle = options.get("bundle")
        self.engine.load_model(
            request.model_name,
            version=options.get("version") or None,
            bundle=Path(bundle) if bundle else None,
        )
        return pb.RepositoryModelLoadResponse()

    @rpc
    def RepositoryModelUnload(  # noqa: N802
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        version = _string_parameter(request.parameters, "version")
        self.engine.unload_model(request.model_name, version=version or None)
        return pb.RepositoryModelUnloadResponse()


# --- translation ----------------------------------------------------------------------------------


def infer_request_from_proto(message: pb.ModelInferRequest) -> InferRequest:
    """The engine's request for a ``ModelInferRequest`` (raw or typed contents; payloads decoded later)."""
    raw_contents = message.raw_input_contents
    if raw_contents and len(raw_contents) != len(message.inputs):
        raise InvalidRequest(
            f"the request has {len(raw_contents)} raw_input_contents entries "
            f"for {len(message.inputs)} inputs",
            hint="send one raw_input_contents entry per input, in the order of the inputs",
        )
    inputs = []
    for index, tensor in enumerate(message.inputs):
        typed = {field.name: list(values) for field, values in tensor.contents.ListFields()}
        shape = tuple(int(d) for d in tensor.shape)
        if raw_contents:
            if typed:
                raise InvalidRequest(
                    f"input {tensor.name!r} has both typed contents and raw_input_contents",
                    hint="send each input one way: raw_input_contents for all of them, or contents",
                )
            inputs.append(InputTensor(tensor.name, tensor.datatype, shape, raw=raw_contents[index]))
        else:
            inputs.append(InputTensor(tensor.name, tensor.datatype, shape, typed=typed))
    return InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        id=message.id,
        inputs=inputs,
        outputs=[output.name for output in message.outputs],
        raw=_raw_parameter(message.parameters),
    )


def _raw_parameter(parameters: Mapping[str, pb.InferParameter]) -> bool:
    if "raw" not in parameters:
        return False
    parameter = parameters["raw"]
    if parameter.WhichOneof("parameter_choice") != "bool_param":
        raise InvalidRequest("the request parameter 'raw' must be a bool", hint="set raw as bool_param")
    return bool(parameter.bool_param)


def infer_response_to_proto(response: InferResponse) -> pb.ModelInferResponse:
    """Outputs answered in ``raw_output_contents``: the only place tritonclient reads them."""
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    for output in response.outputs:
        message.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        message.raw_output_contents.append(encode_raw(output.array))
    return message


def _duration(value: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=value.count, ns=value.ns)


def statistics_to_proto(stats: ModelStats) -> pb.ModelStatistics:
    infer = stats.inference
    return pb.ModelStatistics(
        name=stats.name,
        version=stats.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(infer.success),
            fail=_duration(infer.fail),
            queue=_duration(infer.queue),
            compute_input=_duration(infer.compute_input),
            compute_infer=_duration(infer.compute_infer),
            compute_output=_duration(infer.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=batch.batch_size,
                compute_input=_duration(batch.compute_input),
                compute_infer=_duration(batch.compute_infer),
                compute_output=_duration(batch.compute_output),
            )
            for batch in stats.batches
        ],
    )


def load_options(parameters: Mapping[str, pb.ModelRepositoryParameter]) -> dict[str, str]:
    """``version`` and ``bundle`` from the load request's parameters, or from its ``config`` JSON.

    tritonclient's ``load_model(name, config=...)`` can only send ``config``, so the same keys are
    accepted there: ``load_model("m", config='{"bundle": "/path/m-2.0.0.efb"}')``.
    """
    files = sorted(key for key in parameters if key.startswith("file:"))
    if files:
        raise InvalidRequest(
            f"the agent loads models from signed bundles, not from uploaded files ({', '.join(files)})",
            hint='copy the .efb to the device and pass {"bundle": "/path/to/model.efb"} as the config',
        )
    options = {key: value for key in LOAD_PARAMETERS if (value := _string_parameter(parameters, key))}
    config = _string_parameter(parameters, "config")
    if config:
        options.update(_config_options(config))
    return options


def _config_options(config: str) -> dict[str, str]:
    try:
        data = json.loads(config)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the load config is not JSON: {exc.msg} at column {exc.colno}",
            hint='pass e.g. {"version": "1.2.0"} or {"bundle": "/path/to/model.efb"}',
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("the load config must be a JSON object", hint='e.g. {"version": "1.2.0"}')
    unknown = sorted(set(data) - set(LOAD_PARAMETERS))
    if unknown:
        raise InvalidRequest(
            f"unknown key(s) {unknown} in the load config; the agent understands {list(LOAD_PARAMETERS)}",
            hint='pass e.g. {"version": "1.2.0"} or {"bundle": "/path/to/model.efb"}',
        )
    bad = sorted(key for key, value in data.items() if not isinstance(value, str))
    if bad:
        raise InvalidRequest(f"load config key(s) {bad} must be strings", hint='e.g. {"version": "1.2.0"}')
    return {key: value for key, value in data.items() if value}


def _string_parameter(parameters: Mapping[str, pb.ModelRepositoryParameter], key: str) -> str:
    if key not in parameters:
        return ""
    parameter = parameters[key]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise InvalidRequest(f"the parameter {key!r} must be a string", hint=f"set {key} as string_param")
    return str(parameter.string_param)
