"""The Worker service: each RPC translated into one engine call on behalf of the caller.

Runs on the server's asyncio loop. Anything that can block (submit talks to the launcher,
stop waits for the job to die) goes through ``engine.aio``; reads of records are in-memory
and cheap. Errors are raised as domain errors and mapped to statuses by the guard; the
principal is the guard's too (:func:`~.guard.current_principal`), and every engine call gets
it, so the ``authorize`` hooks decide every time.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from worker_core.plugin import InvalidSpec, JobNotFound

from . import convert
from . import worker_pb2 as pb
from . import worker_pb2_grpc as pb_grpc
from .batching import EncodedChunk, Horizon, batch
from .guard import current_principal

if TYPE_CHECKING:
    from grpc import aio

    from worker_core.plugin import Engine

#: Longest a Submit may wait for its job to end (``wait_seconds``).
MAX_SUBMIT_WAIT_SECONDS = 3600.0

#: Longest single wait for new output. A Tail stream wakes this often even when the job is
#: silent, so no wait is unbounded; a cancelled call interrupts it at once anyway.
TAIL_POLL_SECONDS = 30.0


def _job_id(value: str) -> str:
    if not value:
        raise InvalidSpec("job_id", "must not be empty")
    return value


class WorkerServicer(pb_grpc.WorkerServicer):
    """Implements ``worker.v1.Worker`` against an :class:`~worker_core.Engine`."""

    def __init__(self, engine: Engine, tail_message_bytes: int = 1 << 20) -> None:
        self._engine = engine
        self._tail_message_bytes = tail_message_bytes

    async def Submit(
        self, request: pb.SubmitRequest, context: aio.ServicerContext
    ) -> pb.SubmitResponse:
        if not request.HasField("spec"):
            raise InvalidSpec("spec", "is required")
        wait = request.wait_seconds if request.HasField("wait_seconds") else 0.0
        if not (math.isfinite(wait) and 0 <= wait <= MAX_SUBMIT_WAIT_SECONDS):
            raise InvalidSpec(
                "wait_seconds",
                f"must be a number from 0 to {MAX_SUBMIT_WAIT_SECONDS:g}, got {wait}",
            )
        spec = convert.spec_from_pb(request.spec)
        job = await self._engine.aio.submit(spec, current_principal())
        if wait and not job.is_finished:
            # The submitter gets its own job's record, as without a wait: no read
            # permission is asked for (a submit-only role still learns how its job ended).
            # A record already evicted (many jobs ending at once) leaves the one we have.
            with contextlib.suppress(JobNotFound):
                job = await self._engine.aio.wait(job.id, wait)
        return pb.SubmitResponse(job=convert.job_to_pb(job))

    async def Get(self, request: pb.GetRequest, context: aio.ServicerContext) -> pb.GetResponse:
        job = await self._engine.aio.get(_job_id(request.job_id), current_principal())
        return pb.GetResponse(job=convert.job_to_pb(job))

    async def List(self, request: pb.ListRequest, context: aio.ServicerContext) -> pb.ListResponse:
        jobs = await self._engine.aio.list(
            current_principal(),
            states=convert.states_from_pb(request.states),
            owner=request.owner or None,
        )
        return pb.ListResponse(jobs=[convert.job_to_pb(job) for job in jobs])

    async def Stop(self, request: pb.StopRequest, context: aio.ServicerContext) -> pb.StopResponse:
        grace = request.grace_seconds if request.HasField("grace_seconds") else None
        if grace is not None and not (math.isfinite(grace) and grace >= 0):
            raise InvalidSpec("grace_seconds", f"must be a finite number >= 0, got {grace}")
        job = await self._engine.aio.stop(
            _job_id(request.job_id), current_principal(), grace=grace, force=request.force
        )
        return pb.StopResponse(job=convert.job_to_pb(job))

    # Yields EncodedChunk, not pb.OutputChunk: add_worker_service registers the serializer
    # that writes each one as an OutputChunk (see batching), hence the override.
    async def Tail(  # type: ignore[override]
        self, request: pb.TailRequest, context: aio.ServicerContext
    ) -> AsyncIterator[EncodedChunk]:
        job_id = _job_id(request.job_id)
        streams = convert.streams_from_pb(request.stream)
        start = convert.start_from_pb(request)
        follower = self._engine.follow(job_id, streams, start, principal=current_principal())
        horizon = None
        if request.until_now:
            sizes = self._engine.output_size(job_id)
            horizon = Horizon({s: n for s, n in sizes.items() if s in streams}, start)
        try:
            # Each yield waits for the client to take the message (flow control), so a slow
            # follower only holds its own position; the job and other followers go on.
            while not (horizon and horizon.reached):
                chunks = await follower.aread(TAIL_POLL_SECONDS)
                if chunks is None:
                    break
                if horizon is not None:
                    chunks = horizon.clip(chunks)
                for message in batch(chunks, self._tail_message_bytes):
                    yield message
        finally:
            follower.close()

    async def Watch(
        self, request: pb.WatchRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.Job]:
        watcher = self._engine.watch(_job_id(request.job_id), current_principal())
        async for job in watcher:
            yield convert.job_to_pb(job)
