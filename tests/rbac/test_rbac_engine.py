"""The ``rbac`` plugin inside a real engine, with real jobs: what each caller sees and may do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from worker_core import (
    Config,
    ConfigError,
    Engine,
    JobNotFound,
    JobSpec,
    PermissionDenied,
    Principal,
)

EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.toml"
ADMIN, OPERATOR, VIEWER = Principal("admin"), Principal("operator"), Principal("viewer")
ALICE, BOB, STRANGER = Principal("alice"), Principal("bob"), Principal("mallory")
SLEEP = JobSpec("sleep", ("30",))


def rbac_config(policy: Path | str) -> Config:
    return Config.from_mapping(
        {
            "engine": {"stop_grace": 1.0, "kill_timeout": 3.0, "output_linger": 0.5},
            "plugins": {"rbac": {"policy": str(policy)}},
        }
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine(plugins=["rbac"], config=rbac_config(EXAMPLE_POLICY)) as engine:
        yield engine  # closing stops every job the tests left running


@pytest.fixture(scope="module")
def bob_job(engine: Engine) -> str:
    return engine.submit(SLEEP, principal=BOB).id


@pytest.fixture(scope="module")
def alice_job(engine: Engine) -> str:
    return engine.submit(SLEEP, principal=ALICE).id


def test_viewer_cannot_submit(engine: Engine) -> None:
    with pytest.raises(PermissionDenied, match="'viewer' may not submit jobs"):
        engine.submit(SLEEP, principal=VIEWER)


def test_an_unknown_name_can_do_nothing(engine: Engine, bob_job: str) -> None:
    with pytest.raises(PermissionDenied):
        engine.submit(SLEEP, principal=STRANGER)
    with pytest.raises(JobNotFound):
        engine.get(bob_job, principal=STRANGER)
    with pytest.raises(JobNotFound):
        engine.stop(bob_job, principal=STRANGER)
    assert engine.list(principal=STRANGER) == []


def test_an_operator_cannot_see_or_stop_another_operators_job(engine: Engine, bob_job: str) -> None:
    # Not found, not "permission denied": the operator cannot even learn the job exists.
    with pytest.raises(JobNotFound):
        engine.get(bob_job, principal=OPERATOR)
    with pytest.raises(JobNotFound):
        engine.stop(bob_job, principal=OPERATOR, timeout=5)
    with pytest.raises(JobNotFound):
        engine.follow(bob_job, principal=OPERATOR)
    assert not engine.get(bob_job).is_finished


def test_list_shows_each_caller_what_it_may_read(
    engine: Engine, bob_job: str, alice_job: str
) -> None:
    def ids(principal: Principal) -> set[str]:
        return {job.id for job in engine.list(principal=principal)}

    assert ids(BOB) >= {bob_job} and alice_job not in ids(BOB)
    assert ids(ALICE) >= {alice_job} and bob_job not in ids(ALICE)
    assert all(job.owner_name == "bob" for job in engine.list(principal=BOB))
    assert ids(ADMIN) >= {bob_job, alice_job}
    assert ids(VIEWER) == ids(ADMIN)


def test_a_viewer_reads_but_cannot_stop(engine: Engine, bob_job: str) -> None:
    assert engine.get(bob_job, principal=VIEWER).owner_name == "bob"
    # The viewer may see the job, so a refused stop is "permission denied", not "not found".
    with pytest.raises(PermissionDenied):
        engine.stop(bob_job, principal=VIEWER, timeout=5)
    assert not engine.get(bob_job).is_finished


def test_an_operator_stops_its_own_job(engine: Engine) -> None:
    job = engine.submit(SLEEP, principal=OPERATOR)
    assert engine.get(job.id, principal=OPERATOR).owner_name == "operator"
    assert engine.stop(job.id, principal=OPERATOR, timeout=10).is_finished


def test_an_admin_stops_anyones_job(engine: Engine) -> None:
    job = engine.submit(SLEEP, principal=ALICE)
    assert engine.stop(job.id, principal=ADMIN, timeout=10).is_finished


def test_a_bad_policy_stops_the_engine_from_being_built(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[roles.x]\npermissions = ["stopp"]\n[users]\n')
    with pytest.raises(ConfigError, match=r"policy.toml:2: roles.x.permissions\[0\]"):
        Engine(plugins=["rbac"], config=rbac_config(policy))


def test_rbac_without_a_policy_setting_stops_the_engine_from_being_built() -> None:
    with pytest.raises(ConfigError, match=r'set \[plugins.rbac\] policy = "'):
        Engine(plugins=["rbac"])
