"""Finding and loading plugins: names through entry points, objects as given, loud failures."""

from __future__ import annotations

from typing import Any

import pytest

from worker_core._plugins import (
    DEFAULT_PLUGINS,
    DISTRIBUTION,
    hook_names,
    installed_plugins,
    load_plugins,
    make_plugin_manager,
    parse_plugin_names,
)
from worker_core.plugin import Engine, Job, PluginError, SpawnPlan, hookimpl
from worker_plugins.memory.plugin import MemoryPlugin


class Misspelt:
    name = "misspelt"

    @hookimpl
    def pre_spwan(self, job: Job, plan: SpawnPlan) -> None:
        pass


class WrongArgument:
    name = "wrong-argument"

    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan, extra: Any) -> None:
        pass


def test_a_misspelt_hook_name_is_a_plugin_error_at_engine_construction() -> None:
    with pytest.raises(PluginError, match=r"(?s)'misspelt'.*pre_spwan"):
        Engine([Misspelt()])


def test_a_hook_taking_an_argument_its_spec_does_not_offer_is_a_plugin_error() -> None:
    with pytest.raises(PluginError, match=r"(?s)wrong-argument.*extra"):
        Engine([WrongArgument()])


def test_an_unknown_plugin_name_is_a_plugin_error_that_lists_the_installed_ones() -> None:
    with pytest.raises(PluginError, match=r"unknown plugin 'cgroupz' \(installed: .*memory"):
        Engine("cgroupz")


def test_the_memory_store_is_a_default_that_no_memory_disables() -> None:
    assert DEFAULT_PLUGINS == ("memory",)
    assert parse_plugin_names(None) == ["memory"]
    assert parse_plugin_names(" cgroups , netns,,cgroups") == ["memory", "cgroups", "netns"]
    assert parse_plugin_names(["no:memory", "netns"]) == ["netns"]
    engine = Engine("no:memory")
    try:
        assert not engine.plugin_manager.has_plugin("memory")
    finally:
        engine.close()


def test_built_in_plugins_resolve_through_the_same_entry_points_as_third_party_ones() -> None:
    installed = installed_plugins()
    assert installed["memory"].value == "worker_plugins.memory.plugin:MemoryPlugin"
    assert installed["memory"].distribution == DISTRIBUTION
    engine = Engine("memory")
    try:
        # A class entry point is instantiated: the plugin keeps per-engine state.
        assert isinstance(engine.plugin_manager.get_plugin("memory"), MemoryPlugin)
    finally:
        engine.close()


def test_each_engine_has_its_own_plugin_manager_and_plugin_instances() -> None:
    first, second = Engine(), Engine()
    try:
        assert first.plugin_manager is not second.plugin_manager
        assert first.plugin_manager.get_plugin("memory") is not second.plugin_manager.get_plugin(
            "memory"
        )
    finally:
        first.close()
        second.close()


def test_registering_two_plugins_under_one_name_is_a_plugin_error() -> None:
    class Named:
        name = "same"

    pm = make_plugin_manager()
    load_plugins(pm, [Named()])
    with pytest.raises(PluginError, match="same"):
        load_plugins(pm, [Named()])


class SeveralHooks:
    @hookimpl
    def pre_spawn(self, job: Job, plan: SpawnPlan) -> None:
        pass

    @hookimpl(wrapper=True)
    def post_exit(self) -> Any:
        return (yield)

    def helper(self) -> None:
        """Not a hook: not marked."""


def test_hook_names_lists_what_a_plugin_implements() -> None:
    assert hook_names(SeveralHooks()) == ["post_exit", "pre_spawn"]
    assert hook_names(MemoryPlugin()) == ["configure", "job_store", "output_store"]
