"""``worker run``: one job, in this process, through the full engine and its plugins.

Output streams to the terminal as it is written; the exit status is the job's (128+N if a
signal ended it, like a shell). Errors of worker itself exit 125 and a job that could not
start exits 126, so a script can tell them from the job's own codes.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

import click

from worker_core.plugin import Config, EndReason, Engine, Job, Stream, WorkerError, hookimpl

from .spec_options import build_spec, spec_options

EXIT_WORKER_ERROR = 125
EXIT_FAILED_TO_START = 126


def exit_status(job: Job) -> int:
    """The shell-style status for a finished job."""
    if job.end_reason is EndReason.FAILED_TO_START:
        return EXIT_FAILED_TO_START
    if job.exit_code is not None:
        return job.exit_code
    if job.signal is not None:
        return 128 + job.signal
    return 1


def _fail(message: str) -> None:
    click.echo(f"worker: error: {message}", err=True)
    sys.exit(EXIT_WORKER_ERROR)


@click.command("run", context_settings={"allow_interspersed_args": False})
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
    "--grace", type=float, default=None, help="Seconds between SIGTERM and SIGKILL on Ctrl-C."
)
@click.option("-q", "--quiet", is_flag=True, help="Do not print how the job ended.")
@spec_options
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
      worker run --plugins cgroups,netns,pidns --memory 64M --cpus 0.5 --pids 64 -- make -j4
      worker run --plugins netns --timeout 30 -e LANG=C.UTF-8 -- ./script.sh

    Put `--` before the command so its own flags are not read as worker's. Ctrl-C stops the
    job (SIGTERM, then SIGKILL after the grace period) and exits 130.
    """
    try:
        config = Config.load(config_path) if config_path else Config()
        spec = build_spec(command, args, **spec_flags)
        engine = Engine(plugins, config).start()
    except WorkerError as exc:
        _fail(str(exc))
        return
    interrupted = threading.Event()
    try:
        try:
            job = engine.submit(spec)
        except WorkerError as exc:
            _fail(str(exc))
            return

        def on_interrupt(signum: int, frame: FrameType | None) -> None:
            if not interrupted.is_set():
                interrupted.set()
                click.echo("worker: stopping the job...", err=True)
                threading.Thread(
                    target=engine.stop, args=(job.id,), kwargs={"grace": grace}, daemon=True
                ).start()

        previous = {s: signal.signal(s, on_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
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
    if not quiet and (job.end_reason is not EndReason.EXITED or job.exit_code != 0):
        click.echo(f"worker: job {job.id} {job.message}", err=True)
    sys.exit(130 if interrupted.is_set() else exit_status(job))


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(run_command)
