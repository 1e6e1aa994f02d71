"""Running Slurm's own commands: sbatch, squeue, sacct, scancel, scontrol.

Why the commands and not ``slurmrestd``: they are Slurm's stable, versioned interface on every
cluster (slurmrestd is optional, needs its own authentication set up, and changes its API
version with each release), and they already speak MUNGE to slurmctld. Each call has a
timeout and an explicit environment (the cluster's ``SLURM_CONF``, a fixed ``PATH``, ``C``
locale), so nothing of the server's own environment (``SBATCH_*``, ``SLURM_*``) changes what
a command does. A failure raises :class:`SlurmCommandError` with the command and Slurm's own
words.

Status comes from ``squeue -O`` with a ``|``-separated format, not ``squeue --json``: in
Slurm 22.05, ``--json`` ignores every filter and dumps every job the controller holds
(about 2.5 KB each), while ``-O`` returns one short line per job asked for, exit status
included.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence

import attrs

from worker_core.plugin import DEFAULT_PATH

log = logging.getLogger("worker.slurm")

#: Where the clients are looked for after the server's PATH.
FALLBACK_PATH = "/usr/bin:/usr/local/bin"
#: Job ids per squeue/sacct call: a bound on the argument's length, not a batch size in
#: practice (one call covers every active job up to this many).
IDS_PER_QUERY = 2000
#: The squeue fields read, in order (``exit_code`` is the raw wait status).
SQUEUE_FORMAT = "JobID:|,State:|,Reason:|,exit_code:|,NodeList:|"


class SlurmCommandError(Exception):
    """A Slurm command failed, timed out or could not be run; the message says which and why."""

    def __init__(self, tool: str, message: str, stderr: str = "") -> None:
        super().__init__(f"{tool}: {message}")
        self.tool = tool
        self.stderr = stderr


@attrs.frozen
class JobStatus:
    """One job as Slurm reports it."""

    slurm_id: str
    #: The base state (``RUNNING``, ``COMPLETED``, ``OUT_OF_MEMORY``...), flags dropped.
    state: str
    reason: str = ""
    #: The raw wait status of the batch script (code << 8 | signal); None if not known.
    exit_status: int | None = None
    nodes: str = ""


class SlurmCommands:
    """The Slurm commands of one cluster, run with timeouts and clear errors."""

    def __init__(self, bin_dir: str | None, slurm_conf: str | None, timeout: float = 30.0) -> None:
        self._bin_dir = bin_dir
        self._timeout = timeout
        conf = slurm_conf or os.environ.get("SLURM_CONF")
        path = f"{bin_dir}:{DEFAULT_PATH}" if bin_dir else DEFAULT_PATH
        self.env: dict[str, str] = {"PATH": path, "LC_ALL": "C"}
        if conf:
            self.env["SLURM_CONF"] = conf
        self._programs: dict[str, str] = {}

    def program(self, name: str) -> str:
        """The absolute path of Slurm program ``name``; :class:`SlurmCommandError` if missing."""
        found = self._programs.get(name)
        if found is not None:
            return found
        if self._bin_dir is not None:
            candidate = os.path.join(self._bin_dir, name)
            if not os.access(candidate, os.X_OK):
                raise SlurmCommandError(
                    name, f"not found in {self._bin_dir} ([plugins.slurm] bin_dir)"
                )
            found = candidate
        else:
            search = os.pathsep.join(filter(None, [os.environ.get("PATH"), FALLBACK_PATH]))
            found = shutil.which(name, path=search)
            if found is None:
                raise SlurmCommandError(
                    name,
                    f"not found on the PATH or in {FALLBACK_PATH}: install Slurm's clients "
                    "or set [plugins.slurm] bin_dir",
                )
        self._programs[name] = found
        return found

    def run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        input: bytes | None = None,
        pass_fds: Sequence[int] = (),
    ) -> str:
        """Run ``tool args``; its stdout. Raises :class:`SlurmCommandError` on any failure."""
        argv = [self.program(tool), *args]
        try:
            result = subprocess.run(
                argv,
                input=input if input is not None else b"",
                capture_output=True,
                env=self.env,
                timeout=self._timeout,
                pass_fds=tuple(pass_fds),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SlurmCommandError(
                tool, f"no answer within {self._timeout:g} s (is slurmctld reachable?)"
            ) from None
        except OSError as exc:
            raise SlurmCommandError(tool, f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
        stderr = result.stderr.decode(errors="replace").strip()
        if result.returncode != 0:
            words = " ".join(stderr.splitlines()[-3:]) or "no message"
            raise SlurmCommandError(tool, f"exit {result.returncode}: {words}", stderr)
        if stderr:
            log.debug("%s: %s", tool, stderr)
        return result.stdout.decode(errors="replace")

    # ------------------------------------------------------------------ submit and control

    def submit(self, options: Sequence[str], script: bytes, environment: bytes) -> str:
        """``sbatch --parsable`` with the batch script on stdin and the job's environment
        (NUL-separated ``NAME=value``) from a memory file (``--export-file``: values may hold
        commas, quotes and newlines); the Slurm job id."""
        fd = os.memfd_create("worker-slurm-env", os.MFD_CLOEXEC)
        try:
            if fd < 3:  # sbatch takes 0-2 as stdio, never as an --export-file descriptor
                moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
                os.close(fd)
                fd = moved
            _write_all(fd, environment)
            os.lseek(fd, 0, os.SEEK_SET)
            out = self.run(
                "sbatch",
                ["--parsable", f"--export-file={fd}", *options],
                input=script,
                pass_fds=(fd,),
            )
        finally:
            os.close(fd)
        slurm_id = out.strip().split(";", 1)[0]
        if not slurm_id.isdigit():
            raise SlurmCommandError("sbatch", f"unexpected answer {out.strip()!r} (no job id)")
        return slurm_id

    def signal(self, slurm_id: str, signal_name: str) -> None:
        """Send ``signal_name`` (``TERM``) to every process of the job.

        Any signal but KILL goes to every step, the batch script's included (``--full``).
        KILL goes to the batch step alone (``--batch``): to scancel, ``--signal=KILL`` with
        ``--full`` means "cancel the job", which Slurm does by SIGTERM, KillWait (30 s by
        default), then SIGKILL, while ``--batch`` delivers SIGKILL at once to every process
        of the batch step; the job then ends, and Slurm ends any other step with it.
        """
        scope = "--batch" if signal_name == "KILL" else "--full"
        self.run("scancel", [f"--signal={signal_name}", scope, slurm_id])

    def cancel(self, slurm_id: str) -> None:
        self.run("scancel", [slurm_id])

    def suspend(self, slurm_id: str) -> None:
        self.run("scontrol", ["suspend", slurm_id])

    def resume(self, slurm_id: str) -> None:
        self.run("scontrol", ["resume", slurm_id])

    def show_config(self) -> dict[str, str]:
        """``scontrol show config`` as ``{key: value}`` (cgroup.conf's keys included)."""
        values: dict[str, str] = {}
        for line in self.run("scontrol", ["show", "config"]).splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and " " not in key.strip():
                values[key.strip()] = value.strip()
        return values

    # ------------------------------------------------------------------ status

    def status(self, slurm_ids: Iterable[str]) -> dict[str, JobStatus]:
        """What squeue knows of ``slurm_ids`` (finished jobs too, until MinJobAge passes);
        ids it does not know are absent. One call per :data:`IDS_PER_QUERY` ids."""
        found: dict[str, JobStatus] = {}
        for batch in _batches(list(slurm_ids)):
            try:
                out = self.run(
                    "squeue", ["-h", "-t", "all", "-j", ",".join(batch), "-O", SQUEUE_FORMAT]
                )
            except SlurmCommandError as exc:
                if "Invalid job id" in exc.stderr:  # none of them is known any more
                    continue
                raise
            found.update(parse_squeue(out))
        return found

    def accounting(self, slurm_ids: Iterable[str]) -> dict[str, JobStatus]:
        """What the accounting database (sacct) knows of ``slurm_ids``."""
        found: dict[str, JobStatus] = {}
        for batch in _batches(list(slurm_ids)):
            out = self.run(
                "sacct",
                ["-n", "-P", "-X", "-j", ",".join(batch), "-o", "JobIDRaw,State,ExitCode,NodeList"],
            )
            found.update(parse_sacct(out))
        return found


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _batches(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), IDS_PER_QUERY):
        yield ids[start : start + IDS_PER_QUERY]


def _base_state(state: str) -> str:
    # "CANCELLED by 0" (sacct), "COMPLETING+" style flags: the first word, letters and _.
    word = state.split(maxsplit=1)[0] if state.split() else ""
    return "".join(c for c in word if c.isalpha() or c == "_")


def parse_squeue(text: str) -> Mapping[str, JobStatus]:
    found: dict[str, JobStatus] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 5 or not fields[0].strip():
            continue
        slurm_id, state, reason, status, nodes = (f.strip() for f in fields[:5])
        found[slurm_id] = JobStatus(
            slurm_id,
            _base_state(state),
            reason,
            int(status) if status.isdigit() else None,
            nodes,
        )
    return found


def parse_sacct(text: str) -> Mapping[str, JobStatus]:
    found: dict[str, JobStatus] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 4 or not fields[0].strip():
            continue
        slurm_id, state, exit_code, nodes = (f.strip() for f in fields[:4])
        code, _, sig = exit_code.partition(":")
        status = None
        if code.isdigit() and sig.isdigit():
            status = int(sig) if int(sig) else int(code) << 8
        found[slurm_id] = JobStatus(slurm_id, _base_state(state), "", status, nodes)
    return found
