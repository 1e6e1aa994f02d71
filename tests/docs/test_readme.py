"""The README's library example runs as written, and its quick start names real scripts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
