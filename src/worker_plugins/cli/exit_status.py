"""The exit status of ``worker run``, ``worker job submit --wait`` and ``worker job wait``.

One convention for both sides: a job that exited gives its own code, as a shell would; every
other way a job ends has a status of its own, taken where a convention already exists
(timeout(1)'s 124, a shell's 126 and 128+N, Docker's and Kubernetes' 137 for an OOM kill).
:data:`EXIT_STATUSES` is the table the README prints; a test holds the two together.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job.view import JobView

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


#: The status of each way a job ends other than exiting (by :class:`worker_core.EndReason`'s
#: value).
_END_STATUSES: dict[str, int] = {
    "timed_out": EXIT_TIMED_OUT,
    "failed_to_start": EXIT_FAILED_TO_START,
    "oom_killed": EXIT_OOM_KILLED,
    "stopped": EXIT_STOPPED,
    "lost": EXIT_SERVER_ENDED,
    "shutdown": EXIT_SERVER_ENDED,
    "dependency_failed": EXIT_NOT_RUN,
}


def exit_status(job: JobView) -> int:
    """The status for a finished ``job`` (see :data:`EXIT_STATUSES`); a library record
    through :func:`~worker_plugins.cli.job.view.view_of`."""
    reason = job.end_reason
    if reason == "exited" or reason is None:
        if job.exit_code is not None:
            return job.exit_code
        if job.signal is not None:
            return 128 + job.signal
        return 1
    return _END_STATUSES.get(reason, 1)


def simply_exited(job: JobView) -> bool:
    """Whether the job ended on its own with an exit code (nothing to explain)."""
    return job.end_reason == "exited" and job.exit_code is not None
