"""The ``rbac`` plugin's answers: every action x every kind of caller x own and others' jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from worker_core import _plugins as plugin_loading
from worker_core.plugin import Action, Config, ConfigError, Job, JobSpec, Principal
from worker_plugins.rbac.plugin import RbacPlugin

POLICY = """
[roles.admin]
permissions = ["submit", "stop:all", "read:all"]

[roles.operator]
permissions = ["submit", "stop:own", "read:own"]

[roles.viewer]
permissions = ["read:all"]

[roles.stopper]
permissions = ["stop:all"]

[users]
admin = ["admin"]
operator = ["operator"]
viewer = ["viewer"]
# Roles add up: own jobs from operator, stopping anyone's from stopper.
duo = ["operator", "stopper"]
nobody = []
"""

SPEC = JobSpec("true")


def job_of(owner: str | None) -> Job:
    return Job(id=f"job-{owner}", owner=Principal(owner) if owner else None, spec=SPEC)


@pytest.fixture(scope="module")
def rbac(tmp_path_factory: pytest.TempPathFactory) -> RbacPlugin:
    path = tmp_path_factory.mktemp("rbac") / "policy.toml"
    path.write_text(POLICY)
    plugin = RbacPlugin()
    plugin.configure(Config.from_mapping({"plugins": {"rbac": {"policy": str(path)}}}))
    return plugin


# Whose job each column is, relative to the caller: "own", another user's, one submitted by
# the trusted library caller (no owner), or no job at all (SUBMIT's question; READ's "may list").
OWN, OTHERS, UNOWNED, NONE = "own", "others", "unowned", "none"

T, F = True, False
#                     SUBMIT     STOP: own others unowned none   READ: own others unowned none
MATRIX: dict[str, dict[str, Any]] = {
    "admin":    {"submit": T, "stop": (T, T, T, T), "read": (T, T, T, T)},
    "operator": {"submit": T, "stop": (T, F, F, T), "read": (T, F, F, T)},
    "viewer":   {"submit": F, "stop": (F, F, F, F), "read": (T, T, T, T)},
    "duo":      {"submit": T, "stop": (T, T, T, T), "read": (T, F, F, T)},
    "nobody":   {"submit": F, "stop": (F, F, F, F), "read": (F, F, F, F)},
    "stranger": {"submit": F, "stop": (F, F, F, F), "read": (F, F, F, F)},
}  # fmt: skip

CASES = [
    pytest.param(user, action, whose, expected, id=f"{user}-{action.value}-{whose}")
    for user, row in MATRIX.items()
    for action in (Action.STOP, Action.READ)
    for whose, expected in zip((OWN, OTHERS, UNOWNED, NONE), row[action.value], strict=True)
] + [
    pytest.param(user, Action.SUBMIT, whose, row["submit"], id=f"{user}-submit-{whose}")
    for user, row in MATRIX.items()
    for whose in (OWN, NONE)
]


def target(user: str, whose: str) -> Job | None:
    if whose == NONE:
        return None
    return job_of({OWN: user, OTHERS: "someone-else", UNOWNED: None}[whose])


@pytest.mark.parametrize(("user", "action", "whose", "expected"), CASES)
def test_matrix(rbac: RbacPlugin, user: str, action: Action, whose: str, expected: bool) -> None:
    answer = rbac.authorize(Principal(user), action, target(user, whose))
    assert answer is expected  # always a bool: the plugin never abstains


def test_own_means_the_same_name(rbac: RbacPlugin) -> None:
    # A job owned by "operator" is not "Operator"'s or "operator "'s: names match exactly.
    job = job_of("operator")
    assert rbac.authorize(Principal("operator"), Action.READ, job) is True
    for other in ("Operator", "operator ", "operato"):
        assert rbac.authorize(Principal(other), Action.READ, job) is False


def test_unconfigured_plugin_denies_everything() -> None:
    plugin = RbacPlugin()
    for action in Action:
        assert plugin.authorize(Principal("admin"), action, job_of("admin")) is False


def test_missing_policy_setting_says_what_to_set() -> None:
    with pytest.raises(ConfigError) as info:
        RbacPlugin().configure(Config())
    assert str(info.value) == (
        'the rbac plugin needs a policy file: set [plugins.rbac] policy = "path/to/policy.toml" '
        "in the config file"
    )


def test_bad_section_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected str, got int 5 @ \$\.plugins\.rbac\.policy"):
        RbacPlugin().configure(Config.from_mapping({"plugins": {"rbac": {"policy": 5}}}))
    with pytest.raises(ConfigError, match=r"polcy"):
        RbacPlugin().configure(
            Config.from_mapping({"plugins": {"rbac": {"policy": "p", "polcy": "x"}}})
        )


def test_loaded_through_its_entry_point_it_is_the_authority(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    pm = plugin_loading.make_plugin_manager()
    plugin_loading.load_plugins(pm, ["rbac"])
    hooks = plugin_loading.Hooks(pm)
    assert hooks.has_authorizer()
    hooks.configure(None, Config.from_mapping({"plugins": {"rbac": {"policy": str(path)}}}))  # type: ignore[arg-type]
    assert hooks.authorize(Principal("operator"), Action.SUBMIT, job_of("operator"))
    assert not hooks.authorize(Principal("stranger"), Action.READ, None)
    assert not hooks.authorize(Principal("operator"), Action.STOP, job_of("alice"))
