"""docs/PLUGIN_GUIDE.md stays true to the code, and the example plugins are installed and load.

- Every hook spec has a section in the guide with its exact signature, and the firstresult
  ones say so; the hooks whose implementations run in isolation say so (in the table and in
  their section) and the others do not.
- The tracing switch and every helper of ``worker_core.testing`` are documented, and the
  guide's testing example passes as written.
- Every spawn-plan field is in the guide's table.
- Every example plugin under examples/plugins/ (found from its pyproject.toml, so a new one is
  covered without touching this file) is listed by ``worker plugins --json`` from its own
  distribution, loads without error, and implements the hooks its README promises.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner

from worker_core import _hookspecs as hookspecs
from worker_core import testing
from worker_core._hookcalls import ISOLATED_HOOKS, TRACE_VARIABLE, trace_log
from worker_core._plugins import ENTRY_POINT_GROUP
from worker_core.cli import build_cli
from worker_core.plugin import SpawnPlan

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "PLUGIN_GUIDE.md"
EXAMPLES = sorted((ROOT / "examples" / "plugins").glob("*/pyproject.toml"))

#: The hooks each example is documented to implement (its README and the guide say so).
EXAMPLE_HOOKS = {
    "rlimits": ["configure", "pre_spawn", "validate_spec"],
    "allowlist": ["authorize", "configure", "pre_spawn"],
    "audit": ["authorize", "configure", "on_state_change", "shutdown", "startup"],
}


def hook_specs() -> dict[str, Any]:
    """Every function in hookspecs marked with the project's spec marker, by name."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {
        name: fn
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, marker)
    }


def guide_section(text: str, name: str) -> str:
    """The text under ``### name`` up to the next heading."""
    match = re.search(rf"^### {re.escape(name)}\n(.*?)(?=^#{{2,3}} )", text, re.M | re.S)
    assert match, f"docs/PLUGIN_GUIDE.md has no '### {name}' section"
    return match.group(1)


def test_the_spec_list_is_not_empty():
    assert {"pre_spawn", "post_exit", "authorize", "on_output"} <= set(hook_specs())


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_is_documented_with_its_signature(name):
    text = GUIDE.read_text()
    fn = hook_specs()[name]
    params = list(inspect.signature(fn).parameters)
    section = guide_section(text, name)
    # The section opens with the typed signature: `name(a: A, b: B) -> R`.
    signature = re.search(rf"`{name}\(([^)]*)\)", section)
    assert signature, f"the guide's {name} section does not give its signature"
    documented = [p.split(":")[0].strip() for p in signature.group(1).split(",") if p.strip()]
    assert documented == params, f"{name}: the guide says {documented}, the spec has {params}"
    assert f"[`{name}({', '.join(params)})`](#{name})" in text, f"the hook table lacks {name}"
    firstresult = getattr(fn, f"{hookspecs.PROJECT_NAME}_spec").get("firstresult", False)
    assert ("firstresult" in section) == firstresult, (
        f"{name}: the guide must say 'firstresult' exactly when the spec is firstresult"
    )


def table_row(text: str, name: str) -> list[str]:
    """The cells of the hook table's row for ``name``."""
    row = next(line for line in text.splitlines() if line.startswith(f"| [`{name}("))
    return [cell.strip() for cell in row.strip("|").split("|")]


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_the_guide_says_each_in_isolation_exactly_for_the_isolated_hooks(name):
    text = GUIDE.read_text()
    isolated = name in ISOLATED_HOOKS
    results = table_row(text, name)[-1]
    assert ("each in isolation" in results) == isolated, f"{name}: the table's results: {results}"
    section = " ".join(guide_section(text, name).split())
    assert ("in isolation" in section) == isolated, f"{name}: its section says otherwise"
    if isolated:
        # A wrapper there runs, around all of them, and its yield does not raise.
        assert "A wrapper runs once around all of them" in section
        assert "never raises" in section


def test_the_guide_names_the_isolated_hooks_where_it_explains_the_rules():
    rules = GUIDE.read_text().split("**each in isolation**", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"`(\w+)`", rules)) & set(hook_specs()) == ISOLATED_HOOKS


def test_tracing_is_documented_with_the_variable_and_the_logger():
    section = GUIDE.read_text().split("## Tracing hook calls", 1)[1].split("\n## ", 1)[0]
    assert f"{TRACE_VARIABLE}=1" in section
    assert f"`{trace_log.name}`" in section


def guide_testing_section() -> str:
    return GUIDE.read_text().split("## Testing a plugin", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("name", testing.__all__)
def test_every_testing_helper_is_documented(name):
    assert f"`{name}" in guide_testing_section(), f"the guide's testing section lacks {name}"


def test_the_testing_example_passes_as_written(tmp_path):
    example = re.findall(r"```python\n(.*?)```", guide_testing_section(), re.S)[0]
    assert "from worker_core.testing import" in example
    (tmp_path / "test_guide_example.py").write_text(example)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.parametrize("field", [f.name for f in attrs.fields(SpawnPlan)])
def test_every_spawn_plan_field_is_documented(field):
    assert re.search(rf"^\|[^\n]*`{field}: ", GUIDE.read_text(), re.M), (
        f"the guide's spawn-plan table lacks {field}"
    )


@pytest.fixture(scope="module")
def plugin_rows() -> dict[str, dict[str, Any]]:
    """``worker plugins --json``, with every example marked enabled (so a load error fails)."""
    names = [
        name
        for pyproject in EXAMPLES
        for name in tomllib.loads(pyproject.read_text())["project"]["entry-points"][
            ENTRY_POINT_GROUP
        ]
    ]
    result = CliRunner().invoke(build_cli(), ["plugins", "--json", "--plugins", ",".join(names)])
    rows = json.loads(result.stdout)
    return {row["name"]: row for row in rows}


def test_there_are_examples():
    assert {p.parent.name for p in EXAMPLES} >= {
        "worker-rlimits",
        "worker-allowlist",
        "worker-audit",
    }


@pytest.mark.parametrize("pyproject", EXAMPLES, ids=lambda p: p.parent.name)
def test_each_example_is_installed_and_listed_with_its_hooks(pyproject, plugin_rows):
    project = tomllib.loads(pyproject.read_text())["project"]
    entry_points = project["entry-points"][ENTRY_POINT_GROUP]
    assert entry_points, f"{pyproject}: no {ENTRY_POINT_GROUP} entry point"
    for name, value in entry_points.items():
        row = plugin_rows.get(name)
        assert row is not None, (
            f"plugin {name!r} is not installed: pip install -e {pyproject.parent} (scripts/setup does)"
        )
        assert row["distribution"] == project["name"]
        assert row["version"] == project["version"]
        assert row["object"] == value
        assert row["enabled"] is True
        assert row["error"] is None, row["error"]
        assert row["hooks"], f"plugin {name!r} implements no hook"
        if name in EXAMPLE_HOOKS:
            assert row["hooks"] == EXAMPLE_HOOKS[name]


@pytest.mark.parametrize("pyproject", EXAMPLES, ids=lambda p: p.parent.name)
def test_each_example_has_a_readme_and_tests(pyproject):
    folder = pyproject.parent
    assert (folder / "README.md").is_file()
    tests = list((folder / "tests").glob("test_*.py"))
    assert tests, f"{folder} has no tests"
    # Collected by basename from the repository root: no package markers, no conftest.
    assert not (folder / "tests" / "__init__.py").exists()
    assert not list(folder.rglob("conftest.py"))
