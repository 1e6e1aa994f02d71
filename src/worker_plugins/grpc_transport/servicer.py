"""The Worker service: each RPC translated into engine calls on behalf of the caller.

Runs on the server's asyncio loop. Anything that can block (submit talks to the launcher,
stop waits for the job to die, list, purge and id prefixes read the job store) goes through
``engine.aio``. Errors are raised as domain errors and mapped to statuses by the guard; the
principal is the guard's too (:func:`~.guard.current_principal`), and every engine call gets
it, so the ``authorize`` hooks decide every time. Every job id may be a unique prefix of one
the caller may read: the engine resolves it.

List pages are bounded twice: by count (``page_size``, at most :data:`MAX_PAGE_SIZE`) and by
encoded bytes (:func:`fill_page`), so no listing can outgrow the response cap.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from worker_core.plugin import ACTIVE_STATES, InvalidSpec, Job, JobQuery, Principal

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

#: Jobs in a List page when the request leaves ``page_size`` 0, and the most it may ask for.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

#: Bytes of job records one List page holds at most (one record past it still ends a page
#: that would otherwise be empty). A quarter of the default 64 MiB response cap: records are
#: up to a few MiB each (the spec's strings are capped at 1 MiB, plugin facts come on top).
LIST_PAGE_BYTES = 16 << 20

#: The size assumed for a record before any was seen: the first read of a page asks for
#: LIST_PAGE_BYTES // this many, so a page of huge records is not read a thousand at a time.
FIRST_RECORD_GUESS = 1 << 20

#: Longest single wait for new output. A Tail stream wakes this often even when the job is
#: silent, so no wait is unbounded; a cancelled call interrupts it at once anyway.
TAIL_POLL_SECONDS = 30.0


def _job_id(value: str) -> str:
    if not value:
        raise InvalidSpec("job_id", "must not be empty")
    return value


class _Page(Protocol):
    """One page from :meth:`~worker_core.Engine.list_page` (``engine.aio.list_page``)."""

    @property
    def jobs(self) -> list[Job]: ...

    @property
    def next_page_token(self) -> str: ...


ListPage = Callable[[JobQuery, Principal, int, str], Awaitable[_Page]]


def _field_bytes(size: int) -> int:
    """Bytes a length-delimited field of ``size`` bytes takes in a message (tag, length)."""
    return 1 + max(1, (size.bit_length() + 6) // 7) + size


def _fitting(jobs: Sequence[pb.Job], room: int, at_least_one: bool) -> tuple[int, int]:
    """How many of ``jobs``, in order, fit in ``room`` bytes, and the bytes they take."""
    used = 0
    for count, job in enumerate(jobs):
        size = _field_bytes(job.ByteSize())
        if used + size > room and not (at_least_one and count == 0):
            return count, used
        used += size
    return len(jobs), used


async def fill_page(
    list_page: ListPage,
    query: JobQuery,
    principal: Principal,
    size: int,
    token: str,
    budget: int = LIST_PAGE_BYTES,
) -> tuple[list[pb.Job], str]:
    """Up to ``size`` records from ``token`` on that take at most ``budget`` bytes encoded,
    and the token of the rest: a page's size is bounded by construction, however large the
    records (80 jobs of 1 MB of arguments take several pages, never one 80 MB message).

    The engine's pages are read in pieces sized by the largest record seen so far; when a
    piece overflows the budget, the part that fits is read again by itself, for the token
    that continues right after it (the engine's tokens are opaque: they cannot be made for
    a place inside a page).
    """
    jobs: list[pb.Job] = []
    used = 0
    largest = 0  # the largest record seen so far
    while True:
        guess = largest or FIRST_RECORD_GUESS
        room = budget - used
        want = min(size - len(jobs), max(1, room // guess))
        page = await list_page(query, principal, want, token)
        encoded = [convert.job_to_pb(job) for job in page.jobs]
        count, taken = _fitting(encoded, room, at_least_one=not jobs)
        if count < len(encoded):
            return await _cut(list_page, query, principal, token, count, room, jobs)
        jobs.extend(encoded)
        used += taken
        largest = max([largest, *(job.ByteSize() for job in encoded)])
        token = page.next_page_token
        # A short piece with a token: the engine bounded its scan (records the caller may
        # not read); the client continues from there rather than this call scanning on.
        full = budget - used < (largest or FIRST_RECORD_GUESS)
        if not token or len(jobs) >= size or len(encoded) < want or full:
            return jobs, token


async def _cut(
    list_page: ListPage,
    query: JobQuery,
    principal: Principal,
    start: str,
    count: int,
    room: int,
    jobs: list[pb.Job],
) -> tuple[list[pb.Job], str]:
    """End the page after the first ``count`` records from ``start``: read them again by
    themselves for the token after them. Records removed meanwhile (a purge) can let a later,
    larger one in; then one fewer is read, until they fit."""
    while count > 0:
        page = await list_page(query, principal, count, start)
        encoded = [convert.job_to_pb(job) for job in page.jobs]
        fits, _ = _fitting(encoded, room, at_least_one=not jobs)
        if fits == len(encoded):
            return jobs + encoded, page.next_page_token
        count -= 1
    return jobs, start  # nothing more fits: the next page starts here


class WorkerServicer(pb_grpc.WorkerServicer):
    """Implements ``worker.v1.Worker`` against an :class:`~worker_core.Engine`."""

    def __init__(
        self,
        engine: Engine,
        tail_message_bytes: int = 1 << 20,
        list_page_bytes: int = LIST_PAGE_BYTES,
    ) -> None:
        self._engine = engine
        self._tail_message_bytes = tail_message_bytes
        self._list_page_bytes = list_page_bytes

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
        # With a wait, the submitter gets its own job's record, as without one: no read
        # permission is asked for (a submit-only role still learns how its job ended).
        job = await self._engine.aio.submit(
            spec,
            current_principal(),
            idempotency_key=request.idempotency_key or None,
            wait=wait,
        )
        return pb.SubmitResponse(job=convert.job_to_pb(job))

    async def Get(self, request: pb.GetRequest, context: aio.ServicerContext) -> pb.GetResponse:
        principal = current_principal()
        job = await self._engine.aio.get(_job_id(request.job_id), principal)
        message = convert.job_to_pb(job)
        if job.state in ACTIVE_STATES:
            usage = await self._engine.aio.usage(job.id, principal)
            if usage:
                message.usage.update(usage)
        return pb.GetResponse(job=message)

    async def List(self, request: pb.ListRequest, context: aio.ServicerContext) -> pb.ListResponse:
        query = convert.query_from_pb(request)
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        jobs, token = await fill_page(
            self._engine.aio.list_page,
            query,
            current_principal(),
            size,
            request.page_token,
            self._list_page_bytes,
        )
        return pb.ListResponse(jobs=jobs, next_page_token=token)

    async def Purge(
        self, request: pb.PurgeRequest, context: aio.ServicerContext
    ) -> pb.PurgeResponse:
        query = convert.purge_query_from_pb(request)
        principal = current_principal()
        if query is None:
            removed = await self._engine.aio.purge(list(request.job_ids), principal)
        else:
            removed = await self._engine.aio.purge_matching(query, principal)
        return pb.PurgeResponse(job_ids=removed)

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
        streams = convert.streams_from_pb(request.stream)
        start = convert.start_from_pb(request)
        principal = current_principal()
        # A prefix is resolved once, among the jobs the caller may read: every later call is
        # about that one job.
        job_id = await self._engine.aio.resolve_id(_job_id(request.job_id), principal)
        follower = self._engine.follow(job_id, streams, start, principal=principal)
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

    async def Signal(
        self, request: pb.SignalRequest, context: aio.ServicerContext
    ) -> pb.SignalResponse:
        job = await self._engine.aio.signal(
            _job_id(request.job_id), request.signal, current_principal()
        )
        return pb.SignalResponse(job=convert.job_to_pb(job))

    async def Pause(
        self, request: pb.PauseRequest, context: aio.ServicerContext
    ) -> pb.PauseResponse:
        job = await self._engine.aio.pause(_job_id(request.job_id), current_principal())
        return pb.PauseResponse(job=convert.job_to_pb(job))

    async def Resume(
        self, request: pb.ResumeRequest, context: aio.ServicerContext
    ) -> pb.ResumeResponse:
        job = await self._engine.aio.resume(_job_id(request.job_id), current_principal())
        return pb.ResumeResponse(job=convert.job_to_pb(job))

    async def Release(
        self, request: pb.ReleaseRequest, context: aio.ServicerContext
    ) -> pb.ReleaseResponse:
        job = await self._engine.aio.release(_job_id(request.job_id), current_principal())
        return pb.ReleaseResponse(job=convert.job_to_pb(job))
