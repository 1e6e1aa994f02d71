"""Start-up: what a ``worker`` command imports and scans, and that plugins stay honest.

Each check runs the real program in a fresh process and asks it afterwards which modules it
imported (``sys.modules`` at exit), or counts the entry-point scans. No timing is asserted:
``bench/bench_cli.py`` measures how long the same commands take.

The built-in commands are imported from :data:`BUILTIN_COMMANDS` without their plugins, so
the table is checked here against what the plugins register, and the views ``worker job``
prints (read from the wire without the model) against the library's records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from cli_server import TIMEOUT, RealServer, real_server

from worker_core import (
    Dependency,
    DependencyKind,
    EndReason,
    IOLimit,
    Isolation,
    Job,
    JobSpec,
    JobState,
    Limits,
    Principal,
    QueueReason,
)
from worker_core._plugins import DISTRIBUTION, installed_plugins, load_plugins, make_plugin_manager
from worker_core.cli import BUILTIN_COMMANDS, build_cli, builtin_command
from worker_plugins.cli.job import wire
from worker_plugins.cli.job.commands import SUBCOMMANDS, job_group
from worker_plugins.cli.job.view import (
    DEPENDENCY_KINDS,
    END_REASONS,
    QUEUE_REASONS,
    STATES,
    record_of,
    view_of,
)
from worker_plugins.grpc_transport import convert

#: Runs ``worker ARGV`` as the program does, then prints the modules imported and the number
#: of entry-point scans as JSON on stderr's last line. The scans are counted by wrapping
#: ``_plugins._scan`` once that module is imported, if it is: importing it here would import
#: what the probe is there to see (pluggy, attrs).
PROBE = textwrap.dedent(
    """
    import atexit, json, sys
    import importlib.abc, importlib.util
    scans = []
    class CountScans(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "worker_core._plugins":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            real_exec = spec.loader.exec_module
            def exec_module(module):
                real_exec(module)
                real_scan = module._scan
                def counted(*args):
                    scans.append(1)
                    return real_scan(*args)
                module._scan = counted
            spec.loader.exec_module = exec_module
            return spec
    sys.meta_path.insert(0, CountScans())
    def report():
        found = {"modules": sorted(sys.modules), "scans": len(scans)}
        print(json.dumps(found), file=sys.stderr)
    atexit.register(report)
    sys.argv = ["worker", *sys.argv[1:]]
    from worker_core.cli import main
    main()
    """
)


def probe(
    *argv: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str], int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return done, set(report["modules"]), report["scans"]


def imported(modules: set[str], package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in modules)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    with real_server(tmp_path_factory.mktemp("cli-startup")) as running:
        yield running


def test_help_loads_no_built_in_command_plugin_and_neither_grpc_nor_cryptography() -> None:
    done, modules, scans = probe("--help")
    assert done.returncode == 0
    for name in BUILTIN_COMMANDS:
        assert name in done.stdout
    assert scans == 1, "the entry points were scanned more than once"
    for package in ("grpc", "cryptography", "google.protobuf", "worker_plugins.serve",
                    "worker_plugins.certs", "worker_plugins.cli.job", "worker_core._engine"):  # fmt: skip
        assert not imported(modules, package), package


#: What ``worker job get``, ``list`` and ``stop`` do without: the plugin machinery (pluggy, the
#: entry points), the model's attrs classes, the records' converter, the TOML reader (no
#: client config here), the certificate checks (only after a failed connection), the server's
#: side of the wire and every other command.
NOT_FOR_A_CLIENT = (
    "attr", "attrs", "pluggy", "cattrs", "cryptography", "tomllib", "importlib.metadata",
    "worker_core._plugins", "worker_core._hookspecs", "worker_core._model", "worker_core._output",
    "worker_core._config", "worker_core._engine", "worker_core.plugin",
    "worker_plugins.grpc_transport.convert", "worker_plugins.grpc_transport.servicer",
    "worker_plugins.grpc_transport.server", "worker_plugins.serve", "worker_plugins.certs",
    "worker_plugins.cli.job.commands", "worker_plugins.cli.job.submitting",
    "worker_plugins.cli.job.tailing", "worker_plugins.cli.spec_options", "worker_plugins.cli.run",
)  # fmt: skip


def test_job_get_imports_grpc_and_no_plugin_machinery_model_or_cryptography(
    server: RealServer,
) -> None:
    job_id = server.submit("--", "true")
    server.ok("wait", job_id)
    done, modules, scans = probe("job", "get", job_id, env=server.env())
    assert done.returncode == 0, done.stderr
    assert job_id in done.stdout and "state:     exited" in done.stdout
    assert scans == 0, "a built-in command scanned the entry points"
    assert imported(modules, "grpc")
    for package in (*NOT_FOR_A_CLIENT, "worker_plugins.cli.job.controlling"):
        assert not imported(modules, package), package


@pytest.mark.parametrize("argv", [("list",), ("list", "--state", "exited"), ("stop", "{id}")])
def test_job_list_and_stop_import_no_more_than_get(
    server: RealServer, argv: tuple[str, ...]
) -> None:
    job_id = server.submit("--", "true")
    server.ok("wait", job_id)
    done, modules, scans = probe("job", *(arg.format(id=job_id) for arg in argv), env=server.env())
    assert done.returncode == 0, done.stderr
    assert job_id in done.stdout
    assert scans == 0
    for package in NOT_FOR_A_CLIENT:
        assert not imported(modules, package), package


def test_job_get_json_is_the_librarys_record(server: RealServer) -> None:
    # --json prints the library's record: the one command that builds it.
    job_id = server.submit(
        "--name", "n", "--timeout", "1m", "--label", "team=x", "--label", "a=b", "--", "true"
    )
    server.ok("wait", job_id)
    done, modules, _ = probe("job", "get", "--json", job_id, env=server.env())
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["id"], record["state"], record["end_reason"]) == (job_id, "ended", "exited")
    assert (record["spec"]["name"], record["spec"]["timeout"]) == ("n", 60.0)
    # In one order, whatever order the wire's map had in this process.
    assert list(record["spec"]["labels"].items()) == [("a", "b"), ("team", "x")]
    assert imported(modules, "worker_core._model") and not imported(modules, "pluggy")


def test_a_refused_handshake_still_explains_the_client_certificate(
    server: RealServer, tmp_path: Path
) -> None:
    # The checks that need cryptography run once a connection failed: an expired or server
    # certificate is still named as the cause, locally.
    env = server.env()
    env["WORKER_CERT"] = env["WORKER_CERT"].replace("alice.pem", "server.pem")
    env["WORKER_KEY"] = env["WORKER_KEY"].replace("alice.key", "server.key")
    done = server.job("list", env=env)
    assert done.returncode == 78
    assert "is not a client certificate (no clientAuth usage)" in done.stderr


def test_run_scans_the_entry_points_once() -> None:
    done, modules, scans = probe("run", "-q", "--", "true")
    assert done.returncode == 0, done.stderr
    assert scans == 1
    assert not imported(modules, "grpc") and not imported(modules, "cryptography")


# --- the table of built-in commands cannot drift from the plugins ---------------------------------


def test_the_built_in_table_is_what_the_built_in_plugins_register() -> None:
    registered: dict[str, str] = {}
    for name, info in installed_plugins().items():
        if info.distribution != DISTRIBUTION:
            continue
        pm = make_plugin_manager()
        load_plugins(pm, [name])
        group = click.Group()
        pm.hook.register_commands(cli=group)
        for command_name, command in group.commands.items():
            registered[command_name] = name
            assert command.get_short_help_str(200) == BUILTIN_COMMANDS[command_name].summary
            # What `worker COMMAND` imports without the plugin is what the plugin adds.
            assert builtin_command(command_name) is command
    assert registered == {name: command.plugin for name, command in BUILTIN_COMMANDS.items()}


def test_the_job_table_is_what_its_modules_define() -> None:
    for name, where in SUBCOMMANDS.items():
        command = job_group.get_command(click.Context(job_group), name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(200) == where.summary


# --- third-party plugins' commands are still listed and run ---------------------------------------

THIRD_PARTY = '''
import click
from worker_core.plugin import hookimpl

@click.command("hello")
def hello():
    """Say hello from a third-party plugin."""
    click.echo("hello from a plugin")

@hookimpl
def register_commands(cli):
    cli.add_command(hello)
'''


def install_third_party(root: Path) -> dict[str, str]:
    (root / "hello_plugin.py").write_text(THIRD_PARTY)
    dist = root / "hello_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[worker.plugins]\nhello = hello_plugin\n")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }


def test_a_third_party_command_is_listed_in_help_and_runs(tmp_path: Path) -> None:
    env = install_third_party(tmp_path)
    done, modules, _ = probe("--help", env=env)
    assert "hello" in done.stdout and "Say hello from a third-party plugin." in done.stdout
    assert "hello_plugin" in modules
    ran, _, _ = probe("hello", env=env)
    assert (ran.returncode, ran.stdout) == (0, "hello from a plugin\n")
    plugins = subprocess.run(
        [sys.executable, "-c", "from worker_core.cli import main; main()", "plugins", "--json"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env,
    )  # fmt: skip
    rows = {row["name"]: row for row in json.loads(plugins.stdout)}
    assert rows["hello"]["hooks"] == ["register_commands"]
    assert rows["hello"]["distribution"] == "hello-plugin"
    # A built-in command does not need the third parties: they are not even imported.
    _, modules, _ = probe("job", "--help", env=env)
    assert "hello_plugin" not in modules


def test_a_third_party_plugin_that_fails_to_load_is_one_warning(tmp_path: Path) -> None:
    env = install_third_party(tmp_path)
    (tmp_path / "hello_plugin.py").write_text("raise RuntimeError('broken on purpose')\n")
    done, _, _ = probe("--help", env=env)
    assert done.returncode == 0
    assert "worker: warning: plugin 'hello': cannot import" in done.stderr
    assert "Traceback" not in done.stderr
    assert "job" in done.stdout


# --- the client's wire conversions are the server's ------------------------------------------------


def jobs() -> list[Job]:
    spec = JobSpec(
        "sh",
        ("-c", "echo"),
        env={"A": "1"},
        cwd="/tmp",
        limits=Limits(
            memory_max=64 << 20,
            memory_high=48 << 20,
            cpu=0.5,
            cpu_weight=50,
            io_weight=20,
            pids_max=32,
            io=[IOLimit("8:0", read_bps=1 << 20, write_iops=10)],
        ),
        isolation=Isolation(uid=1000, gid=1000),
        timeout=90.0,
        options={"demo.level": "3"},
        name="nightly",
        labels={"team": "data"},
        priority=-7,
        after=[Dependency("a" * 32, DependencyKind.ANY), Dependency("b" * 32)],
        hold=True,
        begin_at=1_800_000_000.5,
    )
    owner = Principal("alice")
    return [
        Job(id="1" * 32, owner=owner, spec=spec, state=JobState.QUEUED, created_at=1.5,
            queue_reason=QueueReason.DEPENDENCY),
        Job(id="2" * 32, owner=owner, spec=JobSpec("true"), state=JobState.ENDED,
            end_reason=EndReason.OOM_KILLED, signal=9, pid=42, created_at=1.0, started_at=2.0,
            ended_at=3.0, facts={"oom_killed": True, "memory_peak": 67108864, "cpu_seconds": 0.25,
                                 "note": "text", "nested": {"a": [1, "b"]}},
            idempotency_key="key", external_id="slurm-7", message="killed"),
        Job(id="3" * 32, owner=None, spec=JobSpec("x"), state=JobState.PAUSED, pid=7,
            created_at=5.0, started_at=6.0),
    ]  # fmt: skip


@pytest.mark.parametrize("job", jobs(), ids=["queued", "ended", "paused"])
def test_wire_reads_records_as_convert_does(job: Job) -> None:
    message = convert.job_to_pb(job)
    assert wire.job_from_pb(message) == convert.job_from_pb(message)
    assert wire.spec_to_pb(job.spec) == convert.spec_to_pb(job.spec)
    # The view the commands print is the record's, and back.
    view = wire.view_from_pb(message)
    assert view == view_of(convert.job_from_pb(message)) == view_of(job)
    assert record_of(view) == job
    assert list(view.facts) == sorted(job.facts)  # a protobuf map's order is arbitrary
    message.usage.update({"cpu_seconds": 1.5, "memory_current": 4096})
    assert wire.usage_from_pb(message) == {"cpu_seconds": 1.5, "memory_current": 4096}
    assert isinstance(wire.usage_from_pb(message)["memory_current"], int)


def test_the_views_words_are_the_models_enum_values() -> None:
    assert tuple(state.value for state in JobState) == STATES
    assert tuple(reason.value for reason in EndReason) == END_REASONS
    assert tuple(reason.value for reason in QueueReason) == QUEUE_REASONS
    assert tuple(kind.value for kind in DependencyKind) == DEPENDENCY_KINDS


@pytest.mark.parametrize(
    ("field", "value"),
    [("state", 99), ("end_reason", 99), ("queue_reason", 99)],
)
def test_a_newer_servers_state_or_reason_reads_leniently(field: str, value: int) -> None:
    message = convert.job_to_pb(jobs()[1])
    setattr(message, field, value)  # an enum value this client's proto does not name
    view = wire.view_from_pb(message)
    assert getattr(view, field) == {"state": "pending"}.get(field)


def test_build_cli_still_builds_the_whole_command_line() -> None:
    group = build_cli()
    context = click.Context(group)
    assert {"serve", "job", "run", "certs", "plugins"} <= set(group.list_commands(context))
