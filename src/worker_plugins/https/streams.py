"""Streaming responses: a job's output (raw bytes or SSE) and its status events.

Bytes go from the follower to the socket in pieces (``aiohttp.web.StreamResponse``), never
gathered first: a 1 GiB output costs the server a piece at a time. Each write waits for the
client to take the piece, so a slow client only holds its own place (the job and the other
followers go on), and one that takes nothing for ``write_timeout`` seconds is dropped. Every
stream holds one of its client's slots (``max_streams_per_client``) while it is open; a
client that goes away cancels its handler at once (aiohttp's handler cancellation), which
closes the follower and frees the slot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from worker_core.plugin import Chunk, Follower, Job, JobNotFound, StartAt, StartPosition, Stream
from worker_plugins.grpc_transport import convert
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport.batching import Horizon, batch

from . import sse
from .call_log import JOB_KEY
from .context import ServerState, caller, server
from .jobs import job_id
from .messages import job_json
from .params import EVENTS_PARAMS, check_known, format_position, output_query

log = logging.getLogger("worker.https")

#: Largest piece of raw output written at once (adjacent chunks are merged up to it).
RAW_PIECE_BYTES = 1 << 20
#: Largest piece of output in one SSE event (base64 makes it a third larger).
SSE_PIECE_BYTES = 64 << 10


class SlowClient(Exception):
    """The client took nothing for ``write_timeout`` seconds."""


async def _write(response: web.StreamResponse, data: bytes, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await response.write(data)
    except TimeoutError:
        raise SlowClient from None


def _drop(request: web.Request, reason: str) -> None:
    """Close the connection under a response already begun (no status can follow)."""
    log.info("dropped %s %s for %s: %s", request.method, request.path, request.remote, reason)
    transport = request.transport
    if transport is not None:
        transport.abort()


async def output(request: web.Request) -> web.StreamResponse:
    """``GET /v1/jobs/{job_id}/output``: raw bytes, or SSE with ``Accept: text/event-stream``."""
    state, principal = server(request), caller(request)
    event_stream = sse.wants_event_stream(request)
    last_id = request.headers.get("Last-Event-ID") if event_stream else None
    asked = output_query(request.query, last_id)
    engine = state.engine
    # A prefix is resolved once, among the jobs the caller may read: every later call is
    # about that one job. Unknown and unreadable are both JobNotFound (404), before a byte.
    resolved = await engine.aio.resolve_id(job_id(request), principal)
    request[JOB_KEY] = resolved  # the full id, for the call log
    sizes = engine.output_size(resolved, principal)
    start = asked.start
    if start is StartAt.END:
        # Resolved to offsets here, so the client is told where its bytes begin.
        start = {stream: sizes.get(stream, 0) for stream in asked.streams}
    with state.slots.hold(principal):
        follower = engine.follow(resolved, asked.streams, start, principal=principal)
        try:
            horizon = None
            if not asked.follow:
                horizon = Horizon({s: n for s, n in sizes.items() if s in asked.streams}, start)
            chunks = _chunks(follower, horizon, state.config.heartbeat_seconds)
            if event_stream:
                return await _output_events(request, state, resolved, asked.streams, start, chunks)
            return await _output_raw(request, state, asked.streams, start, chunks)
        finally:
            follower.close()


async def _chunks(
    follower: Follower, horizon: Horizon | None, poll: float
) -> AsyncIterator[list[Chunk] | None]:
    """Batches of chunks from the follower, clipped at the horizon; None when a poll found
    nothing (time for a heartbeat). Ends with the output."""
    while not (horizon and horizon.reached):
        chunks = await follower.aread(poll)
        if chunks is None:
            return
        if horizon is not None:
            chunks = horizon.clip(chunks)
        yield chunks or None


def _start_offsets(start: StartPosition, streams: frozenset[Stream]) -> dict[Stream, int]:
    """Where each stream begins; ``start`` is the beginning or offsets (an end was resolved)."""
    if isinstance(start, StartAt):
        return {stream: 0 for stream in streams}
    return {stream: start.get(stream, 0) for stream in streams}


async def _output_raw(
    request: web.Request,
    state: ServerState,
    streams: frozenset[Stream],
    start: StartPosition,
    chunks: AsyncIterator[list[Chunk] | None],
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            # Where the bytes begin (stdout,stderr with both): with start=end, the only way
            # to know which offset to resume from.
            "X-Worker-Start": format_position(_start_offsets(start, streams), streams),
        }
    )
    await response.prepare(request)
    timeout = state.config.write_timeout
    try:
        async for found in chunks:
            for piece in batch(found or (), RAW_PIECE_BYTES):
                await _write(response, piece.data, timeout)
    except SlowClient:
        _drop(request, f"took nothing for {timeout:g} s")
        return response
    await response.write_eof()
    return response


async def _output_events(
    request: web.Request,
    state: ServerState,
    resolved: str,
    streams: frozenset[Stream],
    start: StartPosition,
    chunks: AsyncIterator[list[Chunk] | None],
) -> web.StreamResponse:
    response = _event_response()
    await response.prepare(request)
    timeout = state.config.write_timeout
    offsets = _start_offsets(start, streams)
    try:
        await _write(response, sse.preamble(), timeout)
        async for found in chunks:
            if found is None:
                await _write(response, sse.HEARTBEAT, timeout)
                continue
            for piece in batch(found, SSE_PIECE_BYTES):
                stream = convert.STREAM_FROM_PB[piece.stream]
                data = piece.data
                offsets[stream] = piece.offset + len(data)
                body = json.dumps(
                    {
                        "stream": pb.Stream.Name(piece.stream),
                        "offset": str(piece.offset),
                        "data": base64.b64encode(data).decode(),
                    },
                    separators=(",", ":"),
                )
                event = sse.event("output", body, format_position(offsets, streams))
                await _write(response, event, timeout)
        await _write(response, sse.event("end", _final(state, resolved, request)), timeout)
    except SlowClient:
        _drop(request, f"took nothing for {timeout:g} s")
        return response
    await response.write_eof()
    return response


def _final(state: ServerState, resolved: str, request: web.Request) -> str:
    """The data of the ``end`` event: the job's record as it ended (a ``Job``)."""
    with contextlib.suppress(JobNotFound):  # purged meanwhile
        return job_json(state.engine.get(resolved, caller(request)))
    return "{}"


def _event_response() -> web.StreamResponse:
    return web.StreamResponse(headers={"Content-Type": sse.EVENT_STREAM, "X-Accel-Buffering": "no"})


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/jobs/{job_id}/events``: the job's record on every change until it has ended;
    SSE (``event: job``) with ``Accept: text/event-stream``, else one JSON line per record."""
    check_known(request.query, EVENTS_PARAMS)
    state, principal = server(request), caller(request)
    event_stream = sse.wants_event_stream(request)
    watcher = state.engine.watch(job_id(request), principal)
    with state.slots.hold(principal):
        if event_stream:
            response = _event_response()
        else:
            response = web.StreamResponse(headers={"Content-Type": sse.NDJSON})
        await response.prepare(request)
        timeout, beat = state.config.write_timeout, state.config.heartbeat_seconds
        records = aiter(watcher)
        pending: asyncio.Future[Job] | None = None
        try:
            if event_stream:
                await _write(response, sse.preamble(), timeout)
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(records))
                done, _ = await asyncio.wait({pending}, timeout=beat)
                if not done:
                    if event_stream:
                        await _write(response, sse.HEARTBEAT, timeout)
                    continue
                try:
                    job = pending.result()
                except StopAsyncIteration:
                    break
                pending = None
                request[JOB_KEY] = job.id  # the full id, for the call log
                line = job_json(job)
                if event_stream:
                    await _write(response, sse.event("job", line), timeout)
                else:
                    await _write(response, line.encode() + b"\n", timeout)
            if event_stream:
                await _write(response, sse.event("end", "{}"), timeout)
        except SlowClient:
            _drop(request, f"took nothing for {timeout:g} s")
            return response
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
        await response.write_eof()
        return response
