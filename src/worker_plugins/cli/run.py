"""``worker run``: one job, in this process, through the full engine and its plugins.

Output streams to the terminal as it is written. The job runs where ``worker run`` was
started (its working directory, ``HOME`` set), as a command typed in a shell would; a
server's job instead runs in ``/`` unless ``--cwd`` names a directory of that host. The exit
status follows :mod:`worker_plugins.cli.exit_status` (the job's code, 128+N for a signal,
124 timed out, ...), and worker's own refusals exit 125, so a script can tell them apart.

The first Ctrl-C stops the job (SIGTERM, then SIGKILL after the grace period) and says so;
a second kills it at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, NoReturn

import attrs
import click

from worker_core import Config, Engine, InvalidSpec, Stream, WorkerError, hookimpl

from .exit_status import EXIT_INTERRUPTED, EXIT_NOT_RUN, exit_status, simply_exited
from .job.view import view_of
from .spec_options import build_spec, in_flag_terms, local_spec_options
from .values import GRACE

#: worker refused the job (a malformed spec, a limit no plugin enforces, a bad config).
EXIT_WORKER_ERROR = EXIT_NOT_RUN

PREFIX = "worker"


def _fail(message: str) -> NoReturn:
    click.echo(f"{PREFIX}: error: {message}", err=True)
    sys.exit(EXIT_WORKER_ERROR)


def _refusal(exc: WorkerError, spec: Any = None) -> str:
    """An engine's refusal, named by the flag that set the field (``--memory: ...``)."""
    if isinstance(exc, InvalidSpec):
        return in_flag_terms(exc.field, exc.problem, spec)
    return str(exc)


class Interrupts:
    """Ctrl-C (and SIGTERM) while the job runs: the first stops it, with the grace period;
    the next kills it at once. Each stop runs on a thread of its own, since the engine's stop
    waits for the job and a signal handler must return at once."""

    def __init__(self, engine: Any, job_id: str, grace: float) -> None:
        self._engine = engine
        self._job_id = job_id
        self._grace = grace
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            click.echo(
                f"{PREFIX}: stopping job {self._job_id}: SIGTERM, then SIGKILL after "
                f"{self._grace:g}s (Ctrl-C again to kill it now)",
                err=True,
            )
            kwargs: dict[str, Any] = {"grace": self._grace}
        elif self.count == 2:
            click.echo(f"{PREFIX}: killing job {self._job_id} (SIGKILL)", err=True)
            kwargs = {"force": True}
        else:
            return
        threading.Thread(
            target=self._stop, kwargs=kwargs, name="worker-run-stop", daemon=True
        ).start()

    def _stop(self, **kwargs: Any) -> None:
        # A job that ended meanwhile is no error: the follower below sees it end.
        with contextlib.suppress(WorkerError):
            self._engine.stop(self._job_id, **kwargs)


@click.command(
    "run",
    context_settings={"allow_interspersed_args": False},
    short_help="Run a command as a confined job here and stream its output.",
)
@click.option(
    "-p",
    "--plugins",
    default="",
    metavar="NAMES",
    help="Comma-separated plugins to enable, e.g. cgroups,netns,pidns.",
)
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Server config file (TOML)."
)
@click.option(
    "--grace",
    type=GRACE,
    default=None,
    metavar="DURATION",
    help="Time between SIGTERM and SIGKILL on Ctrl-C (5s, 1m). [default: [engine] stop_grace]",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not print how the job ended.")
@local_spec_options
@click.argument("command")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run_command(
    plugins: str,
    config_path: str | None,
    grace: float | None,
    quiet: bool,
    command: str,
    args: tuple[str, ...],
    **spec_flags: Any,
) -> None:
    """Run COMMAND [ARGS...] as a confined job here and stream its output.

    \b
    Examples:
      worker run -- echo hello
      worker run --plugins cgroups,netns,pidns --memory 64M --cpus 0.5 --pids 64 -- nproc
      worker run --plugins netns --timeout 30s -e LANG=C.UTF-8 -- sh -c 'echo $LANG'

    Put `--` before the command so its own flags are not read as worker's. The job runs in
    this directory (--cwd: another, relative to this one) with HOME set and the environment
    given by -e (plus PATH). Ctrl-C stops the job (SIGTERM, then SIGKILL after the grace
    period) and exits 130; a second Ctrl-C kills it at once.

    Exit status: the job's code; 128+N if signal N killed it; 124 timed out; 126 it could
    not start; 137 OOM-killed; 125 worker refused it (see the README's table).
    """
    try:
        config = Config.load(config_path) if config_path else Config()
    except WorkerError as exc:
        _fail(str(exc))
    spec = build_spec(command, args, local_cwd=os.getcwd(), **spec_flags)
    if "HOME" not in spec.env and os.environ.get("HOME"):
        spec = attrs.evolve(spec, env={**spec.env, "HOME": os.environ["HOME"]})
    try:
        engine = Engine(plugins, config).start()
    except WorkerError as exc:
        _fail(str(exc))
    try:
        try:
            job = engine.submit(spec)
        except WorkerError as exc:
            _fail(_refusal(exc, spec))
        interrupts = Interrupts(
            engine, job.id, config.engine.stop_grace if grace is None else grace
        )
        previous = {s: signal.signal(s, interrupts) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            outputs = {Stream.STDOUT: sys.stdout.buffer, Stream.STDERR: sys.stderr.buffer}
            follower = engine.follow(job.id)
            while (chunks := follower.read(timeout=0.5)) is not None:
                for chunk in chunks:
                    outputs[chunk.stream].write(chunk.data)
                    outputs[chunk.stream].flush()
            job = engine.wait(job.id)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    finally:
        engine.close()
    ended = view_of(job)
    if not quiet and not simply_exited(ended):
        from .job.render import outcome

        click.echo(f"{PREFIX}: job {job.id} {outcome(ended)}", err=True)
    elif not quiet and job.exit_code:
        click.echo(f"{PREFIX}: job {job.id} exited with code {job.exit_code}", err=True)
    sys.exit(EXIT_INTERRUPTED if interrupts.count else exit_status(ended))


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(run_command)
