"""Built-in and example plugins use worker_core's public surface only, exactly as a third
party must: ``worker_core`` (the library), ``worker_core.plugin`` (plugin authors) and
``worker_core.testing`` (their tests), and from each only the names in its ``__all__``.

Every file is parsed with ``ast``, so an import inside a function, under ``TYPE_CHECKING``
or in a test is seen too.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = [ROOT / "src" / "worker_plugins", ROOT / "examples" / "plugins"]

#: The public modules of worker_core, each with the names it exports.
PUBLIC_MODULES = ("worker_core", "worker_core.plugin", "worker_core.testing")


def public_names() -> dict[str, frozenset[str]]:
    return {name: frozenset(importlib.import_module(name).__all__) for name in PUBLIC_MODULES}


def python_files() -> list[Path]:
    return sorted(path for folder in CHECKED for path in folder.rglob("*.py"))


def private_imports(tree: ast.AST, public: dict[str, frozenset[str]]) -> list[str]:
    """Every import in ``tree`` that reaches past worker_core's public surface, described."""
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "worker_core" and alias.name not in public:
                    problems.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "worker_core":
                continue
            if node.module not in public:
                problems.append(f"line {node.lineno}: from {node.module} import ...")
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in public:
                    continue  # from worker_core import plugin
                if alias.name not in public[node.module]:
                    problems.append(
                        f"line {node.lineno}: from {node.module} import {alias.name}"
                        f" ({alias.name!r} is not in {node.module}.__all__)"
                    )
    return problems


def test_there_are_files_to_check() -> None:
    files = python_files()
    assert any("worker_plugins" in str(p) for p in files)
    assert any("examples" in str(p) for p in files)


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_plugin_imports_only_public_worker_core_names(path: Path) -> None:
    problems = private_imports(ast.parse(path.read_text(), str(path)), public_names())
    assert not problems, (
        f"{path.relative_to(ROOT)} imports private worker_core names: " + "; ".join(problems)
    )


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import worker_core._engine", True),
        ("import worker_core.plugin", False),
        ("from worker_core._output import Chunk", True),
        ("from worker_core import _plugins", True),
        ("from worker_core import plugin", False),
        ("from worker_core import Engine", False),
        ("from worker_core import SpawnPlan", True),  # plugin's, not the library's
        ("from worker_core.plugin import SpawnPlan, hookimpl", False),
        ("from worker_core.plugin import make_plugin_manager", True),
        ("from worker_core.testing import running_engine", False),
        ("def f():\n    from worker_core._hookspecs import hookspec", True),
        ("from . import _private", False),  # the plugin's own package
        ("import worker_plugins.memory", False),
    ],
)
def test_the_check_sees_what_it_should(source: str, found: bool) -> None:
    assert bool(private_imports(ast.parse(source), public_names())) is found
