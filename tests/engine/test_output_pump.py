"""The output thread on its own: real pipes (and descriptors that are no pipe), real writer
threads, every byte checked. Every read goes through one buffer the pump reuses, and a bulk
writer makes the loop pause between rounds: neither may lose, reorder or hold back a byte."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from worker_core._output import Stream
from worker_core._pump import (
    BULK_BYTES,
    BULK_WINDOW,
    F_GETPIPE_SZ,
    F_SETPIPE_SZ,
    MIN_COALESCED_PIPE,
    READ_SIZE,
    OutputPump,
    _Pipe,
    enlarge_pipe,
)

WAIT = 30.0  # a bound on things happening at all, not on their speed


class Collector:
    """What the pump hands out, per job, in order; and which jobs it closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.chunks: dict[str, list[tuple[Stream, bytes]]] = {}
        self.closed: dict[str, threading.Event] = {}
        self.close_calls: dict[str, int] = {}
        self.delivered = threading.Condition(self._lock)

    def expect(self, job_id: str) -> None:
        self.chunks[job_id] = []
        self.closed[job_id] = threading.Event()
        self.close_calls[job_id] = 0

    def on_data(self, job_id: str, stream: Stream, data: bytes) -> None:
        with self._lock:
            self.chunks[job_id].append((stream, data))
            self.delivered.notify_all()

    def on_closed(self, job_id: str) -> None:
        with self._lock:
            self.close_calls[job_id] += 1
        self.closed[job_id].set()

    def lines_so_far(self, job_id: str) -> bytes:
        """Everything handed out for ``job_id``. Call with ``delivered`` held."""
        return b"".join(data for _, data in self.chunks[job_id])

    def joined(self, job_id: str, stream: Stream = Stream.STDOUT) -> bytes:
        with self._lock:
            return b"".join(data for s, data in self.chunks[job_id] if s is stream)

    def wait_closed(self, job_id: str) -> None:
        assert self.closed[job_id].wait(WAIT), f"{job_id}: the pump never closed it"


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def pump(collector: Collector) -> Iterator[OutputPump]:
    pump = OutputPump(collector.on_data, collector.on_closed)
    try:
        yield pump
    finally:
        pump.close()


def big_pipe() -> tuple[int, int]:
    """A pipe as the engine makes one: close-on-exec, enlarged to PIPE_SIZE."""
    r, w = os.pipe2(os.O_CLOEXEC)
    enlarge_pipe(r)
    return r, w


def write_all(fd: int, blocks: list[bytes], close: bool = True) -> threading.Thread:
    def run() -> None:
        try:
            for block in blocks:
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            if close:
                os.close(fd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_writes_of_every_size_arrive_exactly_in_order_and_no_read_exceeds_the_cap(
    pump: OutputPump, collector: Collector
) -> None:
    # Around the sizes the pump decides by (the bulk threshold, half a pipe, a full pipe, its
    # buffer) and writes bigger than the pipe (they block until the pump has read them).
    sizes = [1, 100, 4095, 65535, 65536, 65537, 300_000, 524_288, 1 << 20, 3 << 20, 7, 1]
    blocks = [os.urandom(size) for size in sizes]
    r, w = big_pipe()
    collector.expect("job")
    pump.add("job", [(r, Stream.STDOUT)])
    writer = write_all(w, blocks)
    collector.wait_closed("job")
    writer.join(WAIT)
    assert collector.joined("job") == b"".join(blocks)
    assert max(len(data) for _, data in collector.chunks["job"]) <= READ_SIZE
    assert collector.close_calls["job"] == 1


def test_both_streams_of_a_job_keep_their_own_order_and_the_job_closes_once(
    pump: OutputPump, collector: Collector
) -> None:
    out_blocks = [os.urandom(n) for n in (200_000, 1, 2 << 20, 65536)]
    err_blocks = [os.urandom(n) for n in (5, 1 << 20, 70_000)]
    out_r, out_w = big_pipe()
    err_r, err_w = big_pipe()
    collector.expect("job")
    pump.add("job", [(out_r, Stream.STDOUT), (err_r, Stream.STDERR)])
    writers = [write_all(out_w, out_blocks), write_all(err_w, err_blocks)]
    collector.wait_closed("job")
    for writer in writers:
        writer.join(WAIT)
    assert collector.joined("job", Stream.STDOUT) == b"".join(out_blocks)
    assert collector.joined("job", Stream.STDERR) == b"".join(err_blocks)
    assert collector.close_calls["job"] == 1


def test_a_bulk_writer_does_not_hold_back_another_jobs_lines(
    pump: OutputPump, collector: Collector
) -> None:
    # The bulk job writes flat out (the loop pauses between rounds for it) until the other
    # job is done; each of the other job's lines must be handed out while the bulk streams.
    bulk_r, bulk_w = big_pipe()
    lines_r, lines_w = big_pipe()
    collector.expect("bulk")
    collector.expect("lines")
    pump.add("bulk", [(bulk_r, Stream.STDOUT)])
    pump.add("lines", [(lines_r, Stream.STDOUT)])
    done = threading.Event()
    block = b"\0" * (256 << 10)
    written = 0

    def bulk() -> None:
        nonlocal written
        try:
            while not done.is_set():
                written += os.write(bulk_w, block)
        finally:
            os.close(bulk_w)

    bulk_thread = threading.Thread(target=bulk, daemon=True)
    bulk_thread.start()
    expected = b""
    try:
        for i in range(50):
            line = f"line {i}\n".encode()
            os.write(lines_w, line)
            expected += line
            with collector.delivered:
                handed_out = collector.delivered.wait_for(
                    lambda want=expected: collector.lines_so_far("lines") == want, WAIT
                )
            assert handed_out, f"line {i} was not handed out while the bulk job streamed"
        assert bulk_thread.is_alive(), "the bulk job stopped writing before the lines were done"
    finally:
        done.set()
        os.close(lines_w)
    bulk_thread.join(WAIT)
    collector.wait_closed("bulk")
    collector.wait_closed("lines")
    assert collector.joined("lines") == expected
    assert collector.joined("bulk") == b"\0" * written


def test_descriptors_that_are_not_pipes_are_read_completely(
    pump: OutputPump, collector: Collector
) -> None:
    # Neither has a pipe size (never bulk); an eventfd never ends either: finish closes it.
    sock_r, sock_w = socket.socketpair()
    counter = os.eventfd(0, os.EFD_CLOEXEC)
    blocks = [os.urandom(n) for n in (10, 400_000, 3)]
    collector.expect("sock")
    collector.expect("counter")
    pump.add("sock", [(sock_r.detach(), Stream.STDOUT)])
    pump.add("counter", [(os.dup(counter), Stream.STDERR)])
    writer = write_all(sock_w.detach(), blocks)
    os.eventfd_write(counter, 5)
    try:
        with collector.delivered:
            assert collector.delivered.wait_for(lambda: collector.chunks["counter"], WAIT)
        pump.finish("counter")
        collector.wait_closed("counter")
    finally:
        os.close(counter)
    collector.wait_closed("sock")
    writer.join(WAIT)
    assert collector.joined("sock") == b"".join(blocks)
    assert collector.joined("counter", Stream.STDERR) == (5).to_bytes(8, sys.byteorder)


def test_finish_hands_out_what_the_pipe_holds_and_closes_with_the_writer_still_open(
    pump: OutputPump, collector: Collector
) -> None:
    r, w = big_pipe()
    try:
        held = os.urandom(700_000)  # under the pipe's size: the write completes at once
        assert os.write(w, held) == len(held)
        collector.expect("job")
        pump.add("job", [(r, Stream.STDOUT)])
        pump.finish("job")
        collector.wait_closed("job")
        assert collector.joined("job") == held
    finally:
        os.close(w)


def test_only_a_fast_writer_into_a_large_pipe_counts_as_bulk() -> None:
    big_r, big_w = big_pipe()
    small_r, small_w = os.pipe2(os.O_CLOEXEC)
    sock_r, sock_w = socket.socketpair()
    try:
        capacity = fcntl.fcntl(big_r, F_GETPIPE_SZ)
        if capacity < MIN_COALESCED_PIPE:
            pytest.skip(f"pipes cannot be enlarged here (got {capacity} bytes)")
        fcntl.fcntl(small_r, F_SETPIPE_SZ, MIN_COALESCED_PIPE // 2)
        pipe = _Pipe("job", Stream.STDOUT, big_r)
        # Small reads in quick succession add up; a gap longer than the window starts over.
        assert not pipe.bulk(BULK_BYTES // 4, now=10.0)
        assert not pipe.bulk(BULK_BYTES // 4, now=10.0 + BULK_WINDOW / 2)
        assert pipe.bulk(BULK_BYTES // 2, now=10.0 + BULK_WINDOW * 0.9)
        assert not pipe.bulk(BULK_BYTES // 4, now=10.0 + BULK_WINDOW * 2.5)
        # One large read is bulk, unless it took half the pipe or more: the writer is ahead.
        assert pipe.bulk(BULK_BYTES, now=20.0)
        assert not pipe.bulk(capacity // 2, now=20.0)
        # A pipe too small to wait for, and a socket, never are.
        assert not _Pipe("job", Stream.STDOUT, small_r).bulk(MIN_COALESCED_PIPE // 4, now=30.0)
        assert not _Pipe("job", Stream.STDOUT, sock_r.fileno()).bulk(BULK_BYTES, now=40.0)
    finally:
        for fd in (big_r, big_w, small_r, small_w):
            os.close(fd)
        sock_r.close()
        sock_w.close()


def test_finishing_a_job_whose_pipe_is_ready_in_the_same_round_keeps_the_pump_running(
    collector: Collector,
) -> None:
    # The pump is held inside a handler while the finish command and the job's data both
    # arrive, so its next round sees both, the command first: finishing the job closes the
    # pipe that the same round then reports ready. The pump must skip it and live on.
    entered, release = threading.Event(), threading.Event()

    def on_data(job_id: str, stream: Stream, data: bytes) -> None:
        collector.on_data(job_id, stream, data)
        if job_id == "blocker":
            entered.set()
            release.wait(WAIT)

    pump = OutputPump(on_data, collector.on_closed)
    pipes = {name: big_pipe() for name in ("blocker", "victim", "after")}
    try:
        for name, (r, _) in pipes.items():
            collector.expect(name)
            if name != "after":
                pump.add(name, [(r, Stream.STDOUT)])
        os.write(pipes["blocker"][1], b"b")
        assert entered.wait(WAIT)
        pump.finish("victim")
        os.write(pipes["victim"][1], b"late")
        release.set()
        collector.wait_closed("victim")
        assert collector.joined("victim") == b"late"
        # Still reading: a job added afterwards is read to its end.
        pump.add("after", [(pipes["after"][0], Stream.STDOUT)])
        os.write(pipes["after"][1], b"still here")
        os.close(pipes["after"][1])
        collector.wait_closed("after")
        assert collector.joined("after") == b"still here"
    finally:
        release.set()
        pump.close()
        for name, (_, w) in pipes.items():
            if name != "after":
                os.close(w)
