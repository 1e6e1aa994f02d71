"""Property-based checks: whatever a caller puts in a job spec, the engine either runs it or
refuses it with InvalidSpec, and a refusal leaves nothing registered and nothing running."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker_core import Engine, InvalidSpec, IOLimit, JobSpec, Limits, WorkerError

# Text including NUL, surrogates and control characters, as a hostile client would send.
hostile_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)
numbers = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)


def _build(kwargs: dict[str, object]) -> JobSpec | None:
    try:
        return JobSpec(**kwargs)  # type: ignore[arg-type]
    except (InvalidSpec, TypeError):
        return None


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    command=hostile_text,
    args=st.lists(hostile_text, max_size=5),
    env=st.dictionaries(hostile_text, hostile_text, max_size=4),
    cwd=hostile_text,
)
def test_hostile_strings_are_refused_or_run_never_crash(
    engine: Engine, command: str, args: list[str], env: dict[str, str], cwd: str
) -> None:
    spec = _build({"command": command, "args": args, "env": env, "cwd": cwd})
    if spec is None:
        return
    before = len(engine.list())
    try:
        job = engine.submit(spec)
    except InvalidSpec as exc:
        assert exc.field  # the error names what is wrong
        assert len(engine.list()) == before, "a refused spec must not register a job"
        return
    # Accepted specs are ones the kernel decides about; they must end, one way or another.
    ended = engine.stop(job.id, grace=0, timeout=10)
    assert ended.is_finished


@settings(max_examples=200, deadline=None)
@given(
    memory_max=numbers,
    cpu=numbers,
    pids_max=numbers,
    cpu_weight=numbers,
    timeout=numbers,
)
def test_absurd_limits_raise_invalid_spec_naming_the_field(
    memory_max: object, cpu: object, pids_max: object, cpu_weight: object, timeout: object
) -> None:
    try:
        limits = Limits(memory_max=memory_max, cpu=cpu, pids_max=pids_max, cpu_weight=cpu_weight)  # type: ignore[arg-type]
        JobSpec("/bin/true", limits=limits, timeout=timeout)  # type: ignore[arg-type]
    except InvalidSpec as exc:
        assert exc.field.split(".")[-1] in {
            "memory_max",
            "cpu",
            "pids_max",
            "cpu_weight",
            "timeout",
        }
        return
    for value in (memory_max, pids_max, cpu_weight):
        assert value is None or (isinstance(value, int) and value > 0)


def test_limits_without_an_enforcing_plugin_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidSpec, match=r"limits\.memory_max.*enable 'cgroups'"):
        engine.submit(JobSpec("/bin/true", limits=Limits(memory_max=64 << 20)))
    with pytest.raises(InvalidSpec, match=r"limits\.io"):
        engine.submit(JobSpec("/bin/true", limits=Limits(io=(IOLimit("/dev/null", read_bps=1),))))
    with pytest.raises(InvalidSpec, match=r"options\.nosuch\.key.*'nosuch'"):
        engine.submit(JobSpec("/bin/true", options={"nosuch.key": "1"}))


def test_huge_argument_lists_are_capped(engine: Engine) -> None:
    with pytest.raises(InvalidSpec, match="limit is"):
        engine.submit(JobSpec("/bin/true", args=["x" * 1000] * 2000))
    with pytest.raises(InvalidSpec, match="limit is"):
        engine.submit(JobSpec("/bin/true", env={f"K{i}": "v" * 1000 for i in range(2000)}))


def test_every_refusal_is_a_worker_error(engine: Engine) -> None:
    for spec in (
        JobSpec(""),
        JobSpec("a\0b"),
        JobSpec("/bin/true", cwd="relative"),
        JobSpec("nosuchcmd-xyz"),
    ):
        with pytest.raises(WorkerError):
            engine.submit(spec)
