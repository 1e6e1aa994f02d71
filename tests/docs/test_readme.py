"""The README's library example runs as written, its quick start names real scripts, and
every path and module the README and docs name exists (files move; docs must follow)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_library_example_runs_and_prints_what_it_promises(tmp_path: Path) -> None:
    blocks = [b for b in python_blocks() if "Engine(" in b]
    assert blocks, "the README must show the engine used as a library"
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "stdout 0 b'hi\\n'" in result.stdout
    assert "stderr 0 b'oops\\n'" in result.stdout
    assert "JobState.ENDED EndReason.EXITED 3" in result.stdout


def test_quick_start_commands_exist_and_ci_runs_the_readme_test_command() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^bash (scripts/\S+)", quick_start, flags=re.M)
    assert commands == ["scripts/demo", "scripts/test"]
    for command in commands:
        assert (ROOT / command).is_file()
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


# --- every path and module the docs name exists -------------------------------------------------

#: The documents whose references are checked (docs/PLUGIN_GUIDE.md has its own test).
DOCUMENTS = (
    "README.md",
    "docs/ENGINE_API.md",
    "docs/GRPC.md",
    "docs/CONFIGURATION.md",
    "bench/README.md",
    "bench/README_reliability.md",
)
#: Where a path written short (``worker_core/_engine.py``, ``grpc_transport/``) is found.
PATH_ROOTS = (ROOT, ROOT / "src", ROOT / "src" / "worker_plugins")


def inline_code(document: str) -> list[str]:
    """The ``inline code`` spans of a document, outside fenced blocks."""
    text = re.sub(r"^```.*?^```", "", (ROOT / document).read_text(), flags=re.S | re.M)
    return re.findall(r"`([^`\n]+)`", text)


def repository_paths(document: str) -> list[str]:
    """Spans that name a file or directory of the repository (not /dev/vda, ~/..., globs)."""
    return [
        span
        for span in inline_code(document)
        if "/" in span
        and re.fullmatch(r"[\w.][\w./-]*", span)
        and not span.startswith((".venv", "../"))
        and "*" not in span
    ]


def resolves(name: str) -> bool:
    """``worker_core.plugin`` or ``worker_core.plugin.hookimpl``: a module, or an attribute of
    the longest importable prefix."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_repository_path_named_exists(document: str) -> None:
    paths = repository_paths(document)
    missing = [p for p in paths if not any((root / p).exists() for root in PATH_ROOTS)]
    assert not missing, f"{document} names paths that do not exist: {missing}"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_module_named_exists(document: str) -> None:
    names = [
        match.group(0)
        for span in inline_code(document)
        for match in re.finditer(r"\bworker_(?:core|plugins)(?:\.\w+)+", span)
    ]
    missing = [name for name in names if not resolves(name)]
    assert not missing, f"{document} names modules or attributes that do not exist: {missing}"


def test_the_checks_see_what_they_should() -> None:
    # The two tests above would pass on nothing: make sure they look at real references.
    assert "worker_core/_engine.py" in repository_paths("docs/ENGINE_API.md")
    assert "tests/grpc/test_grpc_proto_generated.py" in repository_paths("docs/GRPC.md")
    assert "/dev/null" not in repository_paths("README.md")
    assert resolves("worker_core.plugin.hookimpl")
    assert not resolves("worker_core.plugin.no_such_name")
    assert not resolves("worker_core.entry")


def test_the_memory_output_store_is_not_called_a_broker() -> None:
    # One name per concept: the memory output store is the ``memory`` plugin's.
    for document in DOCUMENTS:
        assert "broker" not in (ROOT / document).read_text().lower(), document
