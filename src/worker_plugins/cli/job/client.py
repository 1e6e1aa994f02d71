"""Typed calls to the Worker service, each with a deadline, returning model records.

Unary calls always carry a deadline, so a server that accepted the connection but never
answers cannot hang the command. Tail and Watch streams last as long as the job and have
none; the channel's keepalive notices a vanished server instead (see :mod:`.connection`).
A failed call raises :class:`~.errors.ClientError` with the table's message.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar

import grpc

from worker_core.plugin import Job, JobQuery, JobSpec, StartPosition, Stream
from worker_plugins.grpc_transport import convert
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc

from .errors import ClientError, from_rpc_error

T = TypeVar("T")

#: Deadline of Submit, Get and List (seconds): generous for a loaded server, short enough
#: that a wedged one is reported rather than waited on forever.
CALL_TIMEOUT = 30.0
#: Stop blocks until the job has ended: the grace period, then SIGKILL. Without ``--grace``
#: the server's default applies (10 s unless configured), which this covers many times over.
STOP_MARGIN = 30.0
STOP_DEFAULT_TIMEOUT = 120.0
#: Jobs asked for per List call: the server's maximum (it may send fewer, to bound a page).
LIST_PAGE_SIZE = 1000


class OutputStream:
    """A Tail call: iterate for ``(stream, offset, data)``; :meth:`cancel` to stop early."""

    def __init__(self, call: Any, server: str) -> None:
        self._call = call
        self._server = server

    def __iter__(self) -> Iterator[tuple[Stream, int, bytes]]:
        try:
            for message in self._call:
                stream = convert.STREAM_FROM_PB.get(message.stream)
                if stream is not None:  # a stream kind a newer server added: not ours to print
                    yield stream, message.offset, message.data
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.CANCELLED and self._call.cancelled():
                return  # we cancelled it ourselves
            raise from_rpc_error(exc, self._server) from None

    def cancel(self) -> None:
        self._call.cancel()


class WorkerClient:
    """The Worker service on one channel, in model terms."""

    def __init__(self, channel: grpc.Channel, server: str) -> None:
        self._channel = channel
        self._stub = pb_grpc.WorkerStub(channel)
        self.server = server

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float) -> T:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.server) from None

    def submit(self, spec: JobSpec, idempotency_key: str | None = None) -> Job:
        """Start a job; with ``idempotency_key``, the job an earlier submit with the same key
        started, if there is one (nothing new starts)."""
        request = pb.SubmitRequest(
            spec=convert.spec_to_pb(spec), idempotency_key=idempotency_key or ""
        )
        response = self._call(self._stub.Submit, request, CALL_TIMEOUT)
        return convert.job_from_pb(response.job)

    def get(self, job_id: str) -> Job:
        response = self._call(self._stub.Get, pb.GetRequest(job_id=job_id), CALL_TIMEOUT)
        return convert.job_from_pb(response.job)

    def list(self, query: JobQuery | None = None, limit: int | None = None) -> Iterator[Job]:
        """The jobs matching ``query`` the caller may read, newest first, page after page
        (each page one call with its own deadline), until the last page or ``limit`` jobs."""
        query = query or JobQuery()
        token = ""
        count = 0
        while True:
            size = LIST_PAGE_SIZE if limit is None else min(LIST_PAGE_SIZE, limit - count)
            request = convert.query_to_pb(query, page_size=size, page_token=token)
            response = self._call(self._stub.List, request, CALL_TIMEOUT)
            for message in response.jobs:
                if limit is not None and count >= limit:
                    return
                yield convert.job_from_pb(message)
                count += 1
            token = response.next_page_token
            if not token or (limit is not None and count >= limit):
                return

    def purge(self, job_ids: Collection[str]) -> builtins.list[str]:
        """Remove these finished jobs (ids or unique prefixes), all or none; the ids removed."""
        response = self._call(self._stub.Purge, pb.PurgeRequest(job_ids=job_ids), CALL_TIMEOUT)
        return list(response.job_ids)

    def purge_matching(self, ended_before: float | None, owner: str | None) -> builtins.list[str]:
        """Remove every finished job that ended before ``ended_before`` (and is ``owner``'s)
        that the caller may purge; the ids removed."""
        request = pb.PurgeRequest(ended_before=ended_before, owner=owner or "")
        response = self._call(self._stub.Purge, request, CALL_TIMEOUT)
        return list(response.job_ids)

    def stop(self, job_id: str, grace: float | None = None, force: bool = False) -> Job:
        timeout = STOP_DEFAULT_TIMEOUT if grace is None else grace + STOP_MARGIN
        request = pb.StopRequest(job_id=job_id, grace_seconds=grace, force=force)
        response = self._call(self._stub.Stop, request, timeout)
        return convert.job_from_pb(response.job)

    def tail(
        self,
        job_id: str,
        streams: Collection[Stream],
        start: StartPosition,
        until_now: bool = False,
    ) -> OutputStream:
        """Output from ``start`` until the job has ended and all of it was sent, or with
        ``until_now``, until what the job had written when the call arrived was sent."""
        request = pb.TailRequest(
            job_id=job_id,
            until_now=until_now,
            stream=(
                convert.STREAM_TO_PB[next(iter(streams))]
                if len(streams) == 1
                else pb.STREAM_UNSPECIFIED
            ),
        )
        convert.start_to_pb(request, start)
        return OutputStream(self._stub.Tail(request), self.server)

    def wait(self, job_id: str) -> Job:
        """The job's record once it has ended (a Watch stream, so no polling)."""
        job = self.get(job_id)
        if job.is_finished:
            return job
        try:
            for message in self._stub.Watch(pb.WatchRequest(job_id=job_id)):
                job = convert.job_from_pb(message)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.server) from None
        if not job.is_finished:
            raise ClientError(f"the server stopped reporting on job {job_id} before it ended")
        return job
