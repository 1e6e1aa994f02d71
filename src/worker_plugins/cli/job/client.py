"""Typed calls to the Worker service, each with a deadline, returning jobs to show.

Unary calls always carry a deadline, so a server that accepted the connection but never
answers cannot hang the command. Tail and Watch streams last as long as the job and have
none unless the caller gives one; the channel's keepalive notices a vanished server instead
(see :mod:`.connection`). A failed call raises :class:`~.errors.ClientError` with the
table's message (:mod:`.rpc_errors`). Jobs come back as :class:`~.view.JobView` tuples, not
the library's records (see :mod:`.view`).
"""

from __future__ import annotations

# The generated modules come first: importing their package sets what gRPC core reads once,
# when grpc is imported (the TLS 1.2 cipher policy, its log level).
from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc

# isort: split
import builtins
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from . import wire
from .errors import EXIT_TIMEOUT, ClientError
from .rpc_errors import from_rpc_error
from .view import JobView, State

if TYPE_CHECKING:
    from worker_core import JobSpec, StartPosition, Stream

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
#: ``wait --any`` watches at most this many jobs with a stream each (the server caps streams
#: per client); beyond it, it asks for each one's record every POLL_INTERVAL seconds.
WATCH_STREAMS = 16
POLL_INTERVAL = 1.0


class OutputStream:
    """A Tail call: iterate for ``(stream, offset, data)``; :meth:`cancel` to stop early."""

    def __init__(self, call: Any, fail: Callable[[grpc.RpcError], ClientError]) -> None:
        self._call = call
        self._fail = fail

    def __iter__(self) -> Iterator[tuple[Stream, int, bytes]]:
        streams = wire.stream_from_pb()
        try:
            for message in self._call:
                stream = streams.get(message.stream)
                if stream is not None:  # a stream kind a newer server added: not ours to print
                    yield stream, message.offset, message.data
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.CANCELLED and self._call.cancelled():
                return  # we cancelled it ourselves
            raise self._fail(exc) from None

    def cancel(self) -> None:
        self._call.cancel()


class WaitTimedOut(ClientError):
    """``wait`` gave up before the jobs ended; ``ended`` holds those that did."""

    def __init__(self, message: str, ended: builtins.list[JobView]) -> None:
        super().__init__(message, EXIT_TIMEOUT)
        self.ended = ended


class WorkerClient:
    """The Worker service on one channel, in the command line's terms.

    ``diagnose`` is asked, when the server cannot be reached, whether the client's own files
    explain it (an expired certificate...): its error then replaces the transport's.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        server: str,
        diagnose: Callable[[], ClientError | None] | None = None,
    ) -> None:
        self._channel = channel
        self._stub = pb_grpc.WorkerStub(channel)
        self._diagnose = diagnose
        self.server = server

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _error(self, exc: grpc.RpcError) -> ClientError:
        error = from_rpc_error(exc, self.server)
        if error.status == "UNAVAILABLE" and self._diagnose is not None:
            return self._diagnose() or error
        return error

    def _call(self, method: Callable[..., T], request: Any, timeout: float) -> T:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def submit(self, spec: JobSpec, idempotency_key: str | None = None) -> JobView:
        """Start a job; with ``idempotency_key``, the job an earlier submit with the same key
        started, if there is one (nothing new starts)."""
        request = pb.SubmitRequest(
            spec=wire.spec_to_pb(spec), idempotency_key=idempotency_key or ""
        )
        response = self._call(self._stub.Submit, request, CALL_TIMEOUT)
        return wire.view_from_pb(response.job)

    def get(self, job_id: str) -> JobView:
        return self.get_with_usage(job_id)[0]

    def get_with_usage(self, job_id: str) -> tuple[JobView, dict[str, int | float]]:
        """The job and, while it runs or is paused, what it uses now."""
        response = self._call(self._stub.Get, pb.GetRequest(job_id=job_id), CALL_TIMEOUT)
        return wire.view_from_pb(response.job), wire.usage_from_pb(response.job)

    def list(
        self,
        *,
        states: Collection[State] = (),
        owner: str | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        ended_after: float | None = None,
        ended_before: float | None = None,
        limit: int | None = None,
        keep: Callable[[JobView], bool] | None = None,
    ) -> Iterator[JobView]:
        """The jobs matching the filters that the caller may read (and ``keep`` keeps), newest
        first, page after page (each page one call with its own deadline), until the last
        page or ``limit`` jobs."""
        request = pb.ListRequest(
            states=sorted(wire.STATE_TO_PB[state] for state in states),
            owner=owner or "",
            name=name or "",
            labels=dict(labels or {}),
            created_after=created_after,
            created_before=created_before,
            ended_after=ended_after,
            ended_before=ended_before,
        )
        count = 0
        while True:
            wanted = LIST_PAGE_SIZE if limit is None or keep else limit - count
            request.page_size = min(LIST_PAGE_SIZE, wanted)
            response = self._call(self._stub.List, request, CALL_TIMEOUT)
            for message in response.jobs:
                job = wire.view_from_pb(message)
                if keep is not None and not keep(job):
                    continue
                yield job
                count += 1
                if limit is not None and count >= limit:
                    return
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

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

    def stop(self, job_id: str, grace: float | None = None, force: bool = False) -> JobView:
        timeout = STOP_DEFAULT_TIMEOUT if grace is None else grace + STOP_MARGIN
        request = pb.StopRequest(job_id=job_id, grace_seconds=grace, force=force)
        response = self._call(self._stub.Stop, request, timeout)
        return wire.view_from_pb(response.job)

    def signal(self, job_id: str, signum: int) -> JobView:
        """Deliver ``signum`` to every process of a running or paused job."""
        request = pb.SignalRequest(job_id=job_id, signal=signum)
        return wire.view_from_pb(self._call(self._stub.Signal, request, CALL_TIMEOUT).job)

    def pause(self, job_id: str) -> JobView:
        request = pb.PauseRequest(job_id=job_id)
        return wire.view_from_pb(self._call(self._stub.Pause, request, CALL_TIMEOUT).job)

    def resume(self, job_id: str) -> JobView:
        request = pb.ResumeRequest(job_id=job_id)
        return wire.view_from_pb(self._call(self._stub.Resume, request, CALL_TIMEOUT).job)

    def release(self, job_id: str) -> JobView:
        request = pb.ReleaseRequest(job_id=job_id)
        return wire.view_from_pb(self._call(self._stub.Release, request, CALL_TIMEOUT).job)

    def tail(
        self,
        job_id: str,
        streams: Collection[Stream],
        start: StartPosition,
        until_now: bool = False,
    ) -> OutputStream:
        """Output from ``start`` until the job has ended and all of it was sent, or with
        ``until_now``, until what the job had written when the call arrived was sent."""
        from worker_core import StartAt, Stream

        request = pb.TailRequest(
            job_id=job_id,
            until_now=until_now,
            stream=(
                wire.stream_to_pb()[next(iter(streams))]
                if len(streams) == 1
                else pb.STREAM_UNSPECIFIED
            ),
        )
        if start is StartAt.END:
            request.from_end = True
        elif start is StartAt.BEGINNING:
            request.from_beginning = True
        else:
            assert isinstance(start, Mapping)
            request.from_offsets.stdout = start.get(Stream.STDOUT, 0)
            request.from_offsets.stderr = start.get(Stream.STDERR, 0)
        return OutputStream(self._stub.Tail(request), self._error)

    def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        """The job's record once it has ended (a Watch stream, so no polling); with
        ``timeout``, :class:`WaitTimedOut` once that many seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id)
        if job.is_finished:
            return job
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        call = self._stub.Watch(pb.WatchRequest(job_id=job.id), timeout=remaining)
        try:
            for message in call:
                job = wire.view_from_pb(message)
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                raise WaitTimedOut(f"job {job.id} is still {job.state}", []) from None
            raise self._error(exc) from None
        finally:
            call.cancel()
        if not job.is_finished:
            raise ClientError(f"the server stopped reporting on job {job_id} before it ended")
        return job

    def wait_all(
        self, job_ids: Sequence[str], timeout: float | None = None
    ) -> builtins.list[JobView]:
        """Every job's record once each has ended, in the order given (one after the other:
        waiting for all takes as long as the last one, whatever the order)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ended: builtins.list[JobView] = []
        for job_id in job_ids:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ended.append(self.wait(job_id, remaining))
            except WaitTimedOut as exc:
                raise WaitTimedOut(exc.message, ended) from None
        return ended

    def wait_any(self, job_ids: Sequence[str], timeout: float | None = None) -> JobView:
        """The record of the first of these jobs to end (one already ended, at once)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        jobs = [self.get(job_id) for job_id in job_ids]  # every id must name a job
        for job in jobs:
            if job.is_finished:
                return job
        if len(jobs) > WATCH_STREAMS:
            return self._poll_any([job.id for job in jobs], deadline)
        results: queue.Queue[JobView | ClientError] = queue.Queue()
        calls = [self._stub.Watch(pb.WatchRequest(job_id=job.id)) for job in jobs]

        def watch(call: Any) -> None:
            try:
                last = None
                for message in call:
                    last = wire.view_from_pb(message)
                if last is not None and last.is_finished:
                    results.put(last)
            except grpc.RpcError as exc:
                if not call.cancelled():
                    results.put(self._error(exc))

        threads = [threading.Thread(target=watch, args=(c,), daemon=True) for c in calls]
        for thread in threads:
            thread.start()
        try:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                result = results.get(timeout=remaining)
            except queue.Empty:
                raise WaitTimedOut("none of the jobs has ended", []) from None
        finally:
            for call in calls:
                call.cancel()
            for thread in threads:
                thread.join(5)
        if isinstance(result, ClientError):
            raise result
        return result

    def _poll_any(self, job_ids: Sequence[str], deadline: float | None) -> JobView:
        while True:
            for job_id in job_ids:
                job = self.get(job_id)
                if job.is_finished:
                    return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimedOut("none of the jobs has ended", [])
            time.sleep(POLL_INTERVAL)
