"""Meta-tests on the hook specs: every spec is documented (when it fires, on which thread,
firstresult or not) and exercised by at least one test."""

from __future__ import annotations

import importlib
import inspect

import pytest

from worker_core import _hookspecs as hookspecs

SPECS = sorted(
    name
    for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and hookspecs.hookspec.project_name + "_spec" in vars(fn)
)

#: Where each hook is exercised: (module, test). Add an entry when you add a spec.
EXERCISED_BY = {
    "configure": (
        "test_engine_plugins",
        "test_configure_startup_and_shutdown_fire_once_each_in_order",
    ),
    "startup": (
        "test_engine_plugins",
        "test_configure_startup_and_shutdown_fire_once_each_in_order",
    ),
    "shutdown": (
        "test_engine_plugins",
        "test_configure_startup_and_shutdown_fire_once_each_in_order",
    ),
    "validate_spec": (
        "test_engine_plugins",
        "test_validate_spec_claims_fields_and_can_refuse_a_spec",
    ),
    "pre_spawn": (
        "test_engine_plugins",
        "test_pre_spawn_can_add_to_the_jobs_environment_through_the_plan",
    ),
    "signal_job": (
        "test_engine_plugins",
        "test_signal_job_delivers_the_stop_and_the_kill_of_leftovers_after_exit",
    ),
    "post_exit": (
        "test_engine_plugins",
        "test_post_exit_facts_are_folded_into_the_final_record_even_beside_a_broken_plugin",
    ),
    "on_state_change": (
        "test_engine_lifecycle",
        "test_a_job_that_runs_to_completion_goes_pending_running_ended",
    ),
    "authorize": (
        "test_engine_plugins",
        "test_a_denying_authorizer_refuses_submit_hides_others_jobs_and_filters_list",
    ),
    "on_output": (
        "test_engine_plugins",
        "test_a_plugin_sees_pre_spawn_then_on_output_then_post_exit_in_that_order",
    ),
    "output_store": (
        "test_engine_plugins",
        "test_output_store_hook_supplies_the_store_followers_read_from",
    ),
    "register_commands": (
        "test_engine_plugins",
        "test_register_commands_builds_the_worker_command_line",
    ),
}


def test_the_spec_list_is_the_one_pluggy_sees() -> None:
    from worker_core._plugins import make_plugin_manager

    pm = make_plugin_manager()
    assert sorted(name for name in vars(pm.hook) if not name.startswith("_")) == SPECS
    assert len(SPECS) >= 4 and {"pre_spawn", "post_exit", "authorize", "on_output"} <= set(SPECS)


def test_every_hook_spec_is_exercised_by_a_test_that_exists() -> None:
    assert set(EXERCISED_BY) == set(SPECS), "add the new spec to EXERCISED_BY with its test"
    for hook, (module_name, test_name) in EXERCISED_BY.items():
        test = getattr(importlib.import_module(module_name), test_name, None)
        assert callable(test), f"{hook}: {module_name}::{test_name} does not exist"


@pytest.mark.parametrize("name", SPECS)
def test_every_hook_spec_says_when_it_fires_and_on_which_thread(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert "Fires" in doc, f"{name}: say when it fires ('Fires on ...')"
    assert "thread" in doc, f"{name}: say on which thread it fires"


@pytest.mark.parametrize("name", SPECS)
def test_firstresult_specs_say_they_stop_at_the_first_result(name: str) -> None:
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn) or ""
    firstresult = vars(fn)[hookspecs.hookspec.project_name + "_spec"]["firstresult"]
    assert firstresult == ("Stops at the first non-None result" in doc)
    assert doc.splitlines()[0].strip(), "the first line summarises the hook"
