"""The job-spec flags: parsing, merging, and errors that name the flag."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

from worker_core import Engine, InvalidSpec, IOLimit, Isolation, JobSpec, Limits
from worker_plugins.cli.spec_options import (
    SPEC_FLAGS,
    build_spec,
    flag_for,
    in_flag_terms,
    spec_options,
)
from worker_plugins.cli.values import parse_size


@click.command()
@spec_options
@click.argument("command")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def show(command: str, args: tuple[str, ...], **flags: Any) -> None:
    """Build the spec as `worker run` and `worker job submit` do; print its repr."""
    click.echo(repr(build_spec(command, args, **flags)))


def spec_of(*argv: str) -> JobSpec:
    """The spec the flags in ``argv`` build (commands are ``-- true`` unless given)."""
    captured: list[JobSpec] = []

    @click.command()
    @spec_options
    @click.argument("command")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def capture(command: str, args: tuple[str, ...], **flags: Any) -> None:
        captured.append(build_spec(command, args, **flags))

    argv = argv if "--" in argv else (*argv, "--", "true")
    result = CliRunner().invoke(capture, list(argv), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return captured[0]


def usage_error(*argv: str) -> str:
    argv = argv if "--" in argv else (*argv, "--", "true")
    result = CliRunner().invoke(show, list(argv))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


# --- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("512K", 512 << 10),
        ("512k", 512 << 10),
        ("64M", 64 << 20),
        ("64MiB", 64 << 20),
        ("64MB", 64 << 20),
        ("1.5G", 3 << 29),
        ("2T", 2 << 40),
        (" 8 M ", 8 << 20),
    ],
)
def test_sizes_use_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "64X", "-1M", "0", "1e6", "64 MBytes", "0.0001"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|more than 0"):
        parse_size(text)


def test_memory_flags() -> None:
    spec = spec_of("--memory", "64M", "--memory-high", "48M")
    assert spec.limits.memory_max == 64 << 20
    assert spec.limits.memory_high == 48 << 20


def test_bad_memory_names_the_flag() -> None:
    out = usage_error("--memory", "lots")
    assert "'--memory'" in out and "is not a size" in out


# --- everything at once -----------------------------------------------------------------------


def test_every_flag_lands_in_its_field() -> None:
    spec = spec_of(
        "--memory", "1G",
        "--cpus", "0.5",
        "--cpu-weight", "200",
        "--io-weight", "50",
        "--pids", "64",
        "-e", "A=1",
        "--env", "B=x=y",
        "-e", "EMPTY=",
        "--cwd", "/tmp",
        "--timeout", "2.5",
        "--uid", "1000",
        "--gid", "0",
        "-o", "demo.level=3",
        "--", "sh", "-c", "echo --memory",
    )  # fmt: skip
    assert spec == JobSpec(
        command="sh",
        args=("-c", "echo --memory"),
        env={"A": "1", "B": "x=y", "EMPTY": ""},
        cwd="/tmp",
        limits=Limits(memory_max=1 << 30, cpu=0.5, cpu_weight=200, io_weight=50, pids_max=64),
        isolation=Isolation(uid=1000, gid=0),
        timeout=2.5,
        options={"demo.level": "3"},
    )


def test_no_flags_is_a_plain_spec() -> None:
    assert spec_of("--", "echo", "hi") == JobSpec(command="echo", args=("hi",))


def test_a_repeated_env_key_takes_the_last_value() -> None:
    assert spec_of("-e", "A=1", "-e", "A=2").env == {"A": "2"}


# --- IO caps ----------------------------------------------------------------------------------


def test_io_caps_merge_per_device() -> None:
    spec = spec_of(
        "--io-read-bps", "/dev/vda=10M",
        "--io-write-bps", "/dev/vda=1M",
        "--io-read-iops", "8:0=100",
        "--io-write-iops", "/dev/vda=20",
        "--io-write-iops", "8:16=5",
    )  # fmt: skip
    assert spec.limits.io == (
        IOLimit("/dev/vda", read_bps=10 << 20, write_bps=1 << 20, write_iops=20),
        IOLimit("8:0", read_iops=100),
        IOLimit("8:16", write_iops=5),
    )


def test_the_same_cap_twice_for_a_device_is_refused() -> None:
    out = usage_error("--io-read-bps", "/dev/vda=10M", "--io-read-bps", "/dev/vda=5M")
    assert "--io-read-bps" in out and "/dev/vda is given twice" in out


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--io-read-bps", "/dev/vda", "is not DEV=RATE"),
        ("--io-read-bps", "=10M", "is not DEV=RATE"),
        ("--io-read-bps", "vda=10M", "neither a device path"),
        ("--io-read-bps", "8:x=10M", "neither a device path"),
        ("--io-write-bps", "/dev/vda=fast", "is not a size"),
        ("--io-read-iops", "/dev/vda=1K", "positive whole number"),
        ("--io-write-iops", "8:0=0", "positive whole number"),
    ],
)
def test_bad_io_caps_name_the_flag(flag: str, value: str, problem: str) -> None:
    out = usage_error(flag, value)
    assert flag in out and problem in out


# --- other errors name their flag -------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "flag", "problem"),
    [
        (("--cpus", "0"), "--cpus", "0"),
        (("--cpus", "half"), "--cpus", "half"),
        (("--cpu-weight", "0"), "--cpu-weight", "0"),
        (("--io-weight", "10001"), "--io-weight", "10001"),
        (("--pids", "0"), "--pids", "0"),
        (("--timeout", "-1"), "--timeout", "-1"),
        (("--uid", "-1"), "--uid", "-1"),
        (("--gid", "4294967295"), "--gid", "4294967295"),
        (("-e", "NOVALUE"), "--env", "no '='"),
        (("-e", "=x"), "--env", "name is empty"),
        (("-o", "level=3"), "--option", "PLUGIN.KEY"),
        (("-o", "demo.=3"), "--option", "PLUGIN.KEY"),
        (("--cwd", "relative/dir"), "--cwd", "absolute path"),
    ],
)
def test_bad_values_name_the_flag(argv: tuple[str, ...], flag: str, problem: str) -> None:
    out = usage_error(*argv)
    assert flag in out and problem in out


def test_build_spec_maps_model_errors_to_the_flag() -> None:
    # Called directly (as a library caller might), the model's validators still answer in
    # terms of the flags.
    with pytest.raises(click.BadParameter) as info:
        build_spec("true", memory=0)
    assert info.value.param_hint == "--memory"
    with pytest.raises(click.BadParameter) as info:
        build_spec("true", io_read_iops=[("8:0", -5)])
    assert info.value.param_hint == "--io-read-iops"


# --- one table: flags, fields and the names errors use ------------------------------------------


def test_the_table_is_what_the_command_offers() -> None:
    offered = {param.name: param.opts for param in show.params if isinstance(param, click.Option)}
    assert offered == {flag.keyword: list(flag.names) for flag in SPEC_FLAGS}


def test_every_field_named_by_the_table_names_its_flag_back() -> None:
    for flag in SPEC_FLAGS:
        assert flag_for(flag.field) == flag.flag


@pytest.mark.parametrize(
    ("field", "flag"),
    [
        ("isolation.uid", "--uid"),
        ("limits.memory_max", "--memory"),
        ("limits.io.write_iops", "--io-write-iops"),
        ("env['A']", "--env"),
        ("options.demo.level", "--option"),
        ("options['demo.level']", "--option"),
        ("limits.io", "--io-read-bps/--io-write-bps/--io-read-iops/--io-write-iops"),
        ("limits.io[0].device", "--io-read-bps/--io-write-bps/--io-read-iops/--io-write-iops"),
        ("command", None),
        ("args[0]", None),
        ("environment", None),
    ],
)
def test_fields_from_the_engine_or_a_server_name_the_flag(field: str, flag: str | None) -> None:
    assert flag_for(field) == flag


def test_a_refusal_by_the_engine_is_told_in_flag_terms() -> None:
    # The flags parse; an engine with no cgroups plugin then refuses the limit. The message
    # names what the user typed, not the internal field.
    spec = build_spec("true", memory=64 << 20)
    with Engine() as engine, pytest.raises(InvalidSpec) as info:
        engine.submit(spec)
    assert info.value.field == "limits.memory_max"
    assert in_flag_terms(info.value.field, info.value.problem) == (
        "--memory: is set but no enabled plugin enforces it (enable 'cgroups')"
    )
    assert in_flag_terms("command", "must not be empty") == "command: must not be empty"


def test_build_spec_refuses_a_keyword_no_flag_has() -> None:
    with pytest.raises(TypeError, match="memroy"):
        build_spec("true", memroy=1)
