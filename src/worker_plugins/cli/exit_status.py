"""The exit status of ``worker run``, ``worker job submit --wait`` and ``worker job wait``.

One convention for both sides: a job that exited gives its own code, as a shell would; every
other way a job ends has a status of its own, taken where a convention already exists
(timeout(1)'s 124, a shell's 126 and 128+N, Docker's and Kubernetes' 137 for an OOM kill).
:data:`EXIT_STATUSES` is the table the README prints; a test holds the two together.
"""

from __future__ import annotations

import signal

from worker_core import EndReason, Job

#: The job ran past its --timeout and was stopped (as timeout(1)).
EXIT_TIMED_OUT = 124
#: worker did not run the job: refused at submit (``worker run``), or a dependency failed.
EXIT_NOT_RUN = 125
#: The job could not start (exec failed, a bad working directory...), as a shell's 126.
EXIT_FAILED_TO_START = 126
#: Ctrl-C: ``worker run`` stopped the job; ``submit --wait``/``wait`` stopped waiting.
EXIT_INTERRUPTED = 130
#: The kernel's OOM killer ended the job under its --memory limit (128 + SIGKILL).
EXIT_OOM_KILLED = 128 + signal.SIGKILL
#: Stopped on request (``worker job stop``), whichever signal finally ended it (128 + SIGTERM).
EXIT_STOPPED = 128 + signal.SIGTERM
#: The server lost the job or shut down while it ran: try again (sysexits' EX_TEMPFAIL).
EXIT_SERVER_ENDED = 75

#: ``(how the job ended, exit status, meaning)``, in the order the README lists them.
EXIT_STATUSES: tuple[tuple[str, str, str], ...] = (
    ("exited", "its exit code", "the job's own code, 0 for success"),
    ("exited (killed by signal N)", "128 + N", "a signal worker did not send (as a shell)"),
    ("timed_out", str(EXIT_TIMED_OUT), "it ran past --timeout and was stopped (as timeout(1))"),
    ("failed_to_start", str(EXIT_FAILED_TO_START), "exec failed, bad working directory..."),
    ("oom_killed", str(EXIT_OOM_KILLED), "the OOM killer ended it under its --memory limit"),
    ("stopped", str(EXIT_STOPPED), "stopped on request (`worker job stop`)"),
    ("lost, shutdown", str(EXIT_SERVER_ENDED), "the server lost it or shut down while it ran"),
    ("dependency_failed", str(EXIT_NOT_RUN), "never ran: a job it depends on ended otherwise"),
    ("(refused)", str(EXIT_NOT_RUN), "`worker run` refused the job: nothing ran"),
    ("(Ctrl-C)", str(EXIT_INTERRUPTED), "`worker run` stopped it; `--wait` stopped waiting"),
)


def exit_status(job: Job) -> int:
    """The status for a finished ``job`` (see :data:`EXIT_STATUSES`)."""
    reason = job.end_reason
    if reason is EndReason.EXITED or reason is None:
        if job.exit_code is not None:
            return job.exit_code
        if job.signal is not None:
            return 128 + job.signal
        return 1
    return {
        EndReason.TIMED_OUT: EXIT_TIMED_OUT,
        EndReason.FAILED_TO_START: EXIT_FAILED_TO_START,
        EndReason.OOM_KILLED: EXIT_OOM_KILLED,
        EndReason.STOPPED: EXIT_STOPPED,
        EndReason.LOST: EXIT_SERVER_ENDED,
        EndReason.SHUTDOWN: EXIT_SERVER_ENDED,
        EndReason.DEPENDENCY_FAILED: EXIT_NOT_RUN,
    }.get(reason, 1)


def simply_exited(job: Job) -> bool:
    """Whether the job ended on its own with an exit code (nothing to explain)."""
    return job.end_reason is EndReason.EXITED and job.exit_code is not None
