"""Every route of the API, in one table: the application is built from it, and so is the
OpenAPI document (``GET /v1/openapi.json``), so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import attrs
from aiohttp import web
from google.protobuf.message import Message

from worker_plugins.grpc_transport import worker_pb2 as pb

from . import jobs, streams
from .params import EVENTS_PARAMS, LIST_PARAMS, OUTPUT_PARAMS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Response kinds of a route: what ``produces`` holds.
JSON = "application/json"
RAW = "application/octet-stream"
EVENT_STREAM = "text/event-stream"
NDJSON = "application/x-ndjson"


@attrs.frozen
class Route:
    """One operation: its method and path, the handler, and what the document says of it."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    #: The request message of the body (POST, DELETE), None for none.
    body: type[Message] | None = None
    #: The response message (JSON), None for a stream.
    response: type[Message] | None = None
    #: Query parameters: name -> description.
    query: Mapping[str, str] = attrs.field(factory=dict)
    #: Content types of a successful answer.
    produces: tuple[str, ...] = (JSON,)
    #: Status of a successful answer.
    status: int = 200

    @property
    def changes_state(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")


async def openapi_json(request: web.Request) -> web.Response:
    """``GET /v1/openapi.json``: the document describing every route here."""
    from .openapi import document  # it reads this module's table

    return web.json_response(document())


JOB = "/v1/jobs/{job_id}"

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/jobs",
        jobs.submit,
        "Submit",
        "Submit a job; with waitSeconds, answer once it has ended (or that long has passed).",
        body=pb.SubmitRequest,
        response=pb.SubmitResponse,
        status=201,
    ),
    Route(
        "GET",
        "/v1/jobs",
        jobs.list_jobs,
        "List",
        "The jobs the caller may read, newest first, one page at a time.",
        response=pb.ListResponse,
        query=LIST_PARAMS,
    ),
    Route("GET", JOB, jobs.get_job, "Get", "The job's record.", response=pb.GetResponse),
    Route(
        "DELETE",
        JOB,
        jobs.delete_job,
        "PurgeOne",
        "Remove a finished job's record and output.",
        body=pb.PurgeRequest,
        response=pb.PurgeResponse,
    ),
    Route(
        "POST",
        JOB + "/stop",
        jobs.stop_job,
        "Stop",
        "SIGTERM to the whole job, the grace period, then SIGKILL; answers once it has ended.",
        body=pb.StopRequest,
        response=pb.StopResponse,
    ),
    Route(
        "POST",
        JOB + "/signal",
        jobs.signal_job,
        "Signal",
        "Deliver a signal to every process of a running or paused job.",
        body=pb.SignalRequest,
        response=pb.SignalResponse,
    ),
    Route(
        "POST",
        JOB + "/pause",
        jobs.pause_job,
        "Pause",
        "Freeze every process of a running job (its time limit pauses too).",
        body=pb.PauseRequest,
        response=pb.PauseResponse,
    ),
    Route(
        "POST",
        JOB + "/resume",
        jobs.resume_job,
        "Resume",
        "Thaw a paused job.",
        body=pb.ResumeRequest,
        response=pb.ResumeResponse,
    ),
    Route(
        "POST",
        JOB + "/release",
        jobs.release_job,
        "Release",
        "Let a held job be scheduled.",
        body=pb.ReleaseRequest,
        response=pb.ReleaseResponse,
    ),
    Route(
        "GET",
        JOB + "/output",
        streams.output,
        "Tail",
        "The job's output: raw bytes, or Server-Sent Events (each event's id is the "
        "position after its bytes, so Last-Event-ID resumes exactly) with "
        "Accept: text/event-stream.",
        query=OUTPUT_PARAMS,
        produces=(RAW, EVENT_STREAM),
    ),
    Route(
        "GET",
        JOB + "/events",
        streams.events,
        "Watch",
        "The job's record on every change until it has ended: Server-Sent Events (event "
        "'job', a Job) with Accept: text/event-stream, else one Job per line.",
        query=EVENTS_PARAMS,
        produces=(EVENT_STREAM, NDJSON),
    ),
    Route(
        "POST",
        "/v1/purge",
        jobs.purge_jobs,
        "Purge",
        "Remove finished jobs: the named ones (all or nothing), or every one matching the "
        "filter that the caller may purge.",
        body=pb.PurgeRequest,
        response=pb.PurgeResponse,
    ),
    Route("GET", "/v1/me", jobs.whoami, "WhoAmI", "The caller's name (its certificate's CN)."),
    Route("GET", "/v1/openapi.json", openapi_json, "OpenApi", "This document."),
)
