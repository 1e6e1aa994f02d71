"""Meta-tests on the hook specs: every spec is documented (when it fires, on which thread,
firstresult or not, isolated or not) and exercised by at least one test."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from worker_core import _hookspecs as hookspecs
from worker_core._hookcalls import ISOLATED_HOOKS

SPECS = sorted(
    name
    for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and hookspecs.hookspec.project_name + "_spec" in vars(fn)
)

TESTS = Path(__file__).resolve().parents[1]

#: Where each hook is exercised: (file under tests/, test). Add an entry when you add a spec.
EXERCISED_BY = {
    "configure": (
        "plugins/test_engine_plugins.py",
        "test_configure_startup_and_shutdown_fire_once_each_in_order",
    ),
    "startup": (
        "plugins/test_engine_plugins.py",
        "test_configure_startup_and_shutdown_fire_once_each_in_order",
    ),
    "shutdown": (
        "plugins/test_engine_plugins.py",
        "test_configure_startup_and_shutdown_fire_once_each_in_order",
    ),
    "validate_spec": (
        "plugins/test_engine_plugins.py",
        "test_validate_spec_claims_fields_and_can_refuse_a_spec",
    ),
    "pre_spawn": (
        "plugins/test_engine_plugins.py",
        "test_pre_spawn_can_add_to_the_jobs_environment_through_the_plan",
    ),
    "signal_job": (
        "plugins/test_engine_plugins.py",
        "test_signal_job_delivers_the_stop_and_the_kill_of_leftovers_after_exit",
    ),
    "freeze_job": (
        "plugins/test_engine_plugins.py",
        "test_freeze_job_pauses_and_resumes_a_job_in_place_of_the_signals",
    ),
    "job_usage": (
        "plugins/test_engine_plugins.py",
        "test_job_usage_answers_for_an_active_job_only",
    ),
    "admit": (
        "plugins/test_engine_plugins.py",
        "test_admit_keeps_a_job_queued_until_every_plugin_agrees",
    ),
    "post_exit": (
        "plugins/test_engine_plugins.py",
        "test_post_exit_facts_are_folded_into_the_final_record_even_beside_a_broken_plugin",
    ),
    "on_state_change": (
        "plugins/test_hook_calls.py",
        "test_each_implementation_runs_even_when_one_called_before_it_raises",
    ),
    "authorize": (
        "plugins/test_engine_plugins.py",
        "test_a_denying_authorizer_refuses_submit_hides_others_jobs_and_filters_list",
    ),
    "on_output": (
        "plugins/test_engine_plugins.py",
        "test_a_plugin_sees_pre_spawn_then_on_output_then_post_exit_in_that_order",
    ),
    "output_store": (
        "plugins/test_engine_plugins.py",
        "test_output_store_hook_supplies_the_store_followers_read_from",
    ),
    "job_store": (
        "plugins/test_engine_plugins.py",
        "test_job_store_hook_supplies_the_store_every_record_goes_through",
    ),
    "executor": (
        "engine/test_engine_executor.py",
        "test_an_executor_runs_the_job_and_the_engine_keeps_record_and_output",
    ),
    "register_commands": (
        "plugins/test_engine_plugins.py",
        "test_register_commands_builds_the_worker_command_line",
    ),
    "serve_transports": (
        "plugins/test_serve_transports_hook.py",
        "test_serve_runs_a_third_party_transport_from_the_hook_and_stops_it",
    ),
}


def test_the_spec_list_is_the_one_pluggy_sees() -> None:
    from worker_core._plugins import make_plugin_manager

    pm = make_plugin_manager()
    assert sorted(name for name in vars(pm.hook) if not name.startswith("_")) == SPECS
    assert len(SPECS) >= 4 and {"pre_spawn", "post_exit", "authorize", "on_output"} <= set(SPECS)


def test_every_hook_spec_is_exercised_by_a_test_that_exists() -> None:
    assert set(EXERCISED_BY) == set(SPECS), "add the new spec to EXERCISED_BY with its test"
    for hook, (path, test_name) in EXERCISED_BY.items():
        source = (TESTS / path).read_text()
        # Parsed, not imported: each area's tests are importable only from their own folder.
        tests = {
            node.name
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        }
        assert test_name in tests, f"{hook}: tests/{path}::{test_name} does not exist"
        named = rf"(?<![A-Za-z0-9]){hook}(?![A-Za-z0-9])"  # test_register_commands_... counts
        assert re.search(named, source), f"{hook}: tests/{path} never names it"


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


@pytest.mark.parametrize("name", SPECS)
def test_a_spec_says_each_in_isolation_exactly_when_its_implementations_are_isolated(
    name: str,
) -> None:
    doc = " ".join((inspect.getdoc(getattr(hookspecs, name)) or "").split())
    isolated = name in ISOLATED_HOOKS
    assert ("Each implementation runs in isolation" in doc) == isolated
    if isolated:
        # And what a wrapper there does: it runs, around all of them, and never sees a raise.
        assert "A wrapper runs once around all of them" in doc
        assert "never raises" in doc


def test_every_isolated_hook_is_a_spec() -> None:
    assert set(SPECS) >= ISOLATED_HOOKS
