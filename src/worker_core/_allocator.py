"""Settings for glibc's allocator in a process that streams large buffers (``worker serve``).

Job output moves through the server in buffers of up to a MiB: a pipe read, a Tail message,
its TLS frames. glibc serves each allocation over 128 KiB with a fresh ``mmap`` and returns
it with ``munmap`` on free, and gives the top of its heap back to the kernel as soon as
128 KiB of it is free; so every such buffer costs two system calls and a page fault per
4 KiB touched, again and again. With the settings below a buffer's memory is reused instead:
reading from a pipe costs several times less CPU and a Tail follower is markedly faster (the
figures, and how to measure them again, are in ``bench/README.md``, "Figures behind the code").

With them, up to :data:`TRIM_THRESHOLD` of free memory at the top of a heap stays with the
process for reuse (more is returned at once), and memory freed between buffers still in use
stays until :func:`release_free_memory` hands it back. Two things ask for that, on a
background thread: the memory output store after dropping 64 MiB or more of output, and
``worker serve`` every 10 s when more than 256 MiB is held free (:func:`release_if_free_above`).

Process-wide, so only the program that owns the process decides: ``worker serve`` calls
:func:`tune_for_streaming` at startup; a program embedding the engine may call it too. On a
libc other than glibc every function here does nothing and says so (False, or None).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from functools import cache

log = logging.getLogger("worker.allocator")

#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Allocations below this come from the heap, not a fresh mmap. 32 MiB is glibc's largest
#: allowed value on 64-bit hosts, well above any buffer the server makes.
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap kept for reuse before it is returned on free().
TRIM_THRESHOLD = 128 << 20

_lock = threading.Lock()  # one mallopt or malloc_trim at a time


class _MallInfo2(ctypes.Structure):
    # struct mallinfo2 (glibc 2.33+): every field a size_t.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


@cache
def _glibc() -> ctypes.CDLL | None:
    try:
        # The C library this interpreter already runs on: no search (find_library would
        # start ldconfig), and always the allocator this process really uses.
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        if hasattr(libc, "mallinfo2"):  # glibc 2.33 and later
            libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):  # not glibc (musl has no gnu_get_libc_version)
        return None
    return libc


def tune_for_streaming() -> bool:
    """Keep large buffers in the heap and freed memory for reuse. True if applied."""
    libc = _glibc()
    if libc is None:
        return False
    with _lock:
        applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    if not applied:
        log.warning("glibc refused the allocator settings; keeping its defaults")
    return applied


def release_free_memory() -> bool:
    """Return the allocator's free memory (in every arena) to the kernel. True if any was.

    It walks every free page it hands back, so it takes time in proportion to the memory
    freed (``bench/README.md`` has a figure): a thread that must not stall calls
    :func:`release_free_memory_soon` instead.
    """
    libc = _glibc()
    if libc is None:
        return False
    with _lock:
        return bool(libc.malloc_trim(0))


# The background releaser's state, under its own lock: never held across a trim.
_releaser_lock = threading.Lock()
_releaser: threading.Thread | None = None
_release_again = False


def free_bytes() -> int | None:
    """Bytes the allocator holds free for reuse (in every arena); None without glibc."""
    mallinfo2 = getattr(_glibc(), "mallinfo2", None)
    if mallinfo2 is None:
        return None
    info: _MallInfo2 = mallinfo2()
    return int(info.fordblks)


def release_if_free_above(limit: int) -> bool:
    """Start a background release when more than ``limit`` bytes are held free. True if so.

    For a server's periodic housekeeping: after a burst (hundreds of followers, each with a
    message in flight) the freed buffers otherwise stay resident until the next burst.
    """
    free = free_bytes()
    if free is None or free <= limit:
        return False
    release_free_memory_soon()
    return True


def release_free_memory_soon() -> None:
    """:func:`release_free_memory` on a background thread; returns at once.

    One release runs at a time; a request arriving meanwhile makes it run once more after.
    """
    global _releaser, _release_again
    with _releaser_lock:
        if _releaser is not None:
            _release_again = True
            return
        _releaser = threading.Thread(target=_release_loop, name="worker-release", daemon=True)
        _releaser.start()


def _release_loop() -> None:
    global _releaser, _release_again
    while True:
        try:
            release_free_memory()
        except Exception:
            log.exception("returning free memory to the kernel failed")
        with _releaser_lock:
            if not _release_again:
                _releaser = None
                return
            _release_again = False


__all__ = [
    "MMAP_THRESHOLD",
    "TRIM_THRESHOLD",
    "free_bytes",
    "release_free_memory",
    "release_free_memory_soon",
    "release_if_free_above",
    "tune_for_streaming",
]
