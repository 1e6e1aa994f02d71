"""The JSON handlers under ``/v1/``: each one RPC of ``worker.v1.Worker`` on behalf of the caller.

Every engine call goes through ``engine.aio`` with the caller's principal, so the
``authorize`` hooks decide every time, exactly as for gRPC; a job the caller may not read
is the engine's ``JobNotFound`` (404), like an unknown one. Request bodies are the RPC's
request message in JSON, the job id always from the path. Listing pages come from the gRPC
transport's own page filler, so both transports page alike.
"""

from __future__ import annotations

import math

from aiohttp import web

from worker_core.plugin import ACTIVE_STATES, InvalidSpec
from worker_plugins.grpc_transport import convert
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.servicer import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_SUBMIT_WAIT_SECONDS,
    fill_page,
)

from .context import caller, read_message, server
from .messages import respond, respond_job
from .params import check_known, list_request


def job_id(request: web.Request) -> str:
    """The job id (or unique prefix) in the path."""
    value = request.match_info["job_id"]
    if not value:
        raise InvalidSpec("job_id", "must not be empty")
    return value


def _no_query(request: web.Request) -> None:
    check_known(request.query, ())


async def submit(request: web.Request) -> web.Response:
    """``POST /v1/jobs``: a ``SubmitRequest``; 201 with the ``SubmitResponse`` and Location."""
    _no_query(request)
    message = await read_message(request, pb.SubmitRequest)
    if not message.HasField("spec"):
        raise InvalidSpec("spec", "is required")
    wait = message.wait_seconds if message.HasField("wait_seconds") else 0.0
    if not (math.isfinite(wait) and 0 <= wait <= MAX_SUBMIT_WAIT_SECONDS):
        raise InvalidSpec(
            "wait_seconds", f"must be a number from 0 to {MAX_SUBMIT_WAIT_SECONDS:g}, got {wait}"
        )
    engine = server(request).engine
    spec = convert.spec_from_pb(message.spec)
    # As over gRPC: with a wait, the submitter learns how its own job ended without read
    # permission.
    job = await engine.aio.submit(
        spec, caller(request), idempotency_key=message.idempotency_key or None, wait=wait
    )
    return respond_job(job, status=201, Location=f"/v1/jobs/{job.id}")


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /v1/jobs``: the ``ListRequest`` fields as query parameters; a ``ListResponse``."""
    message = list_request(request.query)
    query = convert.query_from_pb(message)
    size = min(message.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    jobs, token = await fill_page(
        server(request).engine.aio.list_page, query, caller(request), size, message.page_token
    )
    return respond(pb.ListResponse(jobs=jobs, next_page_token=token))


async def get_job(request: web.Request) -> web.Response:
    """``GET /v1/jobs/{job_id}``: a ``GetResponse``."""
    _no_query(request)
    engine, principal = server(request).engine, caller(request)
    job = await engine.aio.get(job_id(request), principal)
    usage = None
    if job.state in ACTIVE_STATES:  # what it uses now, as gRPC's Get answers
        usage = await engine.aio.usage(job.id, principal)
    return respond_job(job, usage=usage)


async def stop_job(request: web.Request) -> web.Response:
    """``POST /v1/jobs/{job_id}/stop``: a ``StopRequest`` (grace_seconds, force); answers once
    the job has ended, with its final record."""
    _no_query(request)
    message = await read_message(request, pb.StopRequest)
    grace = message.grace_seconds if message.HasField("grace_seconds") else None
    if grace is not None and not (math.isfinite(grace) and grace >= 0):
        raise InvalidSpec("grace_seconds", f"must be a finite number >= 0, got {grace}")
    job = await server(request).engine.aio.stop(
        job_id(request), caller(request), grace=grace, force=message.force
    )
    return respond_job(job)


async def signal_job(request: web.Request) -> web.Response:
    """``POST /v1/jobs/{job_id}/signal``: a ``SignalRequest`` (``signal``, a number)."""
    _no_query(request)
    message = await read_message(request, pb.SignalRequest)
    job = await server(request).engine.aio.signal(job_id(request), message.signal, caller(request))
    return respond_job(job)


async def pause_job(request: web.Request) -> web.Response:
    """``POST /v1/jobs/{job_id}/pause``."""
    _no_query(request)
    await read_message(request, pb.PauseRequest)
    job = await server(request).engine.aio.pause(job_id(request), caller(request))
    return respond_job(job)


async def resume_job(request: web.Request) -> web.Response:
    """``POST /v1/jobs/{job_id}/resume``."""
    _no_query(request)
    await read_message(request, pb.ResumeRequest)
    job = await server(request).engine.aio.resume(job_id(request), caller(request))
    return respond_job(job)


async def release_job(request: web.Request) -> web.Response:
    """``POST /v1/jobs/{job_id}/release``."""
    _no_query(request)
    await read_message(request, pb.ReleaseRequest)
    job = await server(request).engine.aio.release(job_id(request), caller(request))
    return respond_job(job)


async def delete_job(request: web.Request) -> web.Response:
    """``DELETE /v1/jobs/{job_id}``: purge one finished job; a ``PurgeResponse``."""
    _no_query(request)
    await read_message(request, pb.PurgeRequest)  # nothing in it counts: the path names it
    removed = await server(request).engine.aio.purge([job_id(request)], caller(request))
    return respond(pb.PurgeResponse(job_ids=removed))


async def purge_jobs(request: web.Request) -> web.Response:
    """``POST /v1/purge``: a ``PurgeRequest``, the named jobs (all or nothing) or every
    finished one matching its filter that the caller may purge."""
    _no_query(request)
    message = await read_message(request, pb.PurgeRequest)
    query = convert.purge_query_from_pb(message)
    engine, principal = server(request).engine, caller(request)
    if query is None:
        removed = await engine.aio.purge(list(message.job_ids), principal)
    else:
        removed = await engine.aio.purge_matching(query, principal)
    return respond(pb.PurgeResponse(job_ids=removed))


async def whoami(request: web.Request) -> web.Response:
    """``GET /v1/me``: the caller's name (the Common Name of its certificate)."""
    _no_query(request)
    return web.json_response({"name": caller(request).name})
