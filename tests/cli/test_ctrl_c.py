"""Ctrl-C at any moment of a `worker` command: no traceback, exit status 130.

A real process gets SIGINT at moments spread over its start-up (loading every plugin
imports gRPC, cryptography, ...) and into its work. The program signals once its own module
is imported, the moment ``main()`` can answer for; the interpreter's start and the import of
the ``worker_core`` package before it are not ``main``'s to handle.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from grpc_certs import make_pki
from grpc_harness import spawn_serve

#: `worker`, printing a line on stdout once ``worker_core.cli`` is imported.
MARKED_WORKER = [
    sys.executable,
    "-c",
    "import sys, worker_core.cli as cli; print('imported', flush=True); cli.main()",
]

#: SIGINT after the mark at i/COUNT of SPREAD seconds (plus jitter): start-up takes a few
#: tenths of a second here, longer on a loaded machine, so the later ones land in the work.
COUNT = 10
SPREAD = 1.5

#: How a Ctrl-C may end the program: 130, or SIGINT itself when it came while the
#: interpreter was already exiting (the shell shows both as 130).
INTERRUPTED = {130, -signal.SIGINT}

EXIT_TIMEOUT = 60.0


def _delays() -> list[float]:
    rng = random.Random()
    return [SPREAD * (i + rng.random()) / COUNT for i in range(COUNT)]


def _interrupt(process: subprocess.Popen[str], delay: float, signum: int = signal.SIGINT) -> bool:
    """Wait for the mark, then ``delay`` s, then ``signum``; False if it had exited already."""
    assert process.stdout is not None
    marked = threading.Event()
    reader = threading.Thread(
        target=lambda: process.stdout and process.stdout.readline() and marked.set(),
        daemon=True,
    )
    reader.start()
    assert marked.wait(EXIT_TIMEOUT), "the program never started"
    try:
        process.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signum)
        return True


def _run(argv: Sequence[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MARKED_WORKER, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=EXIT_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return process.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "finishes"),
    [
        (("run", "--", "sleep", "30"), False),
        (("plugins",), True),
        (("job", "list", "--server", "127.0.0.1:9"), True),
    ],
    ids=["run", "plugins", "job"],
)
def test_ctrl_c_anywhere_is_130_without_a_traceback(argv: tuple[str, ...], finishes: bool) -> None:
    allowed = set(INTERRUPTED)
    if finishes:
        # A short command may have ended on its own just as the signal was sent (it then
        # reaches a process that has exited): its own status is right then.
        allowed.add(_finish(_run(argv))[0])
    for delay in _delays():
        process = _run(argv)
        interrupted = _interrupt(process, delay)
        status, err = _finish(process)
        assert "Traceback" not in err and "Exception ignored" not in err, (delay, err)
        if interrupted:
            assert status in allowed, (delay, status, err)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_during_serve_start_up_unwinds_and_once_it_listens_stops_it_cleanly(
    tmp_path: Path, signum: int
) -> None:
    pki = make_pki(tmp_path / "pki")
    # Before it serves, the signal cuts the start-up short: 130 for SIGINT as for every
    # command, 143 (128 + 15) for SIGTERM, or the signal itself if it came while the
    # interpreter was already exiting. Once it serves, either is its stop: exit 0.
    cut_short = {128 + signum, -signum}
    for n, delay in enumerate(_delays()):
        launched = spawn_serve(
            pki,
            "--state-dir",
            str(tmp_path / f"state{n}"),
            worker=MARKED_WORKER,
            stdout=subprocess.PIPE,
        )
        try:
            interrupted = _interrupt(launched.process, delay, signum)
            status = launched.process.wait(EXIT_TIMEOUT)
        finally:
            launched.reap()
        err = launched.stderr
        assert interrupted, err
        assert "Traceback" not in err and "Exception ignored" not in err, (delay, err)
        expected = {0} if "listening on" in err else cut_short
        assert status in expected, (delay, status, err)


#: A program whose Ctrl-C is raised inside a generator's finalizer, where Python cannot let
#: the exception propagate (it prints "Exception ignored" and goes on): the way a Ctrl-C of
#: ``worker serve``'s start-up was once lost in CI, made deterministic. With ``hook`` it
#: installs what ``worker`` installs first thing.
SWALLOWED = """
import signal, sys, time
from worker_core._interrupts import redeliver_swallowed_stops
if sys.argv[1] == "hook":
    redeliver_swallowed_stops()

def finalized():
    try:
        yield
    finally:
        signal.raise_signal(signal.SIGINT)  # its handler raises here, in the finalizer
        pass

pending = finalized()
next(pending)
del pending  # closed as it is freed: the exception is "ignored"
time.sleep(30)
print("the signal was lost", flush=True)
"""


def test_a_ctrl_c_a_finalizer_swallowed_is_delivered_again() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SWALLOWED, "hook"],
        check=False,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )
    assert "the signal was lost" not in done.stdout
    assert "Exception ignored" not in done.stderr, done.stderr
    # Its KeyboardInterrupt ends this plain program as Python ends one: killed by SIGINT.
    assert done.returncode == -signal.SIGINT, done.stderr


def test_without_the_hook_the_signal_is_lost() -> None:
    # What the hook is for (and that the program above really loses the signal).
    done = subprocess.run(
        [sys.executable, "-c", SWALLOWED.replace("time.sleep(30)", "time.sleep(1)"), "-"],
        check=False,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )
    assert "the signal was lost" in done.stdout
    assert "Exception ignored" in done.stderr and "KeyboardInterrupt" in done.stderr


def test_worker_installs_the_hook_before_anything_else() -> None:
    probe = (
        "import sys, worker_core.cli as cli\n"
        "sys.argv = ['worker', '--help']\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit:\n"
        "    print(getattr(sys.unraisablehook, 'redelivers_stops', False))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        check=False,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )
    assert done.stdout.strip().endswith("True"), (done.stdout, done.stderr)
