"""``scripts/demo``: says what it sets up on a terminal, is silent piped, stdout is the job's.

The script runs as written, from a copy of the checkout's layout in a temporary directory:
its own ``scripts/demo``, and a ``scripts/setup`` standing in for the real one, which would
reinstall the shared ``.venv`` under every other test. The stand-in links ``.venv`` to this
one, so the confined job itself (cgroups, network and PID namespaces) runs for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from terminal import TIMEOUT, run_with_stderr_on_a_terminal

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent

#: What the job prints (the demo's own lines), in order.
JOB_LINES = ("job ", "network interfaces it can see: lo", "its cgroups: ", "processes it can see: ")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (VENV / "bin" / "worker").exists(),
    reason="the demo's job needs root (cgroups, namespaces) and the installed worker program",
)


def checkout(tmp_path: Path, setup: str) -> Path:
    """A tree with the real ``scripts/demo`` and ``setup`` as ``scripts/setup``."""
    (tmp_path / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "demo", tmp_path / "scripts" / "demo")
    (tmp_path / "scripts" / "setup").write_text(f"set -e\n{setup}\n")
    return tmp_path


#: A stand-in for scripts/setup that succeeds: it talks (into the demo's log) and makes .venv.
INSTALLS = f'echo "pip: installing..."\n[ -e .venv ] || ln -s {VENV} .venv\necho "worker installed"'


def env() -> dict[str, str]:
    return dict(os.environ)


def job_lines(stdout: str) -> None:
    lines = stdout.splitlines()
    assert len(lines) == len(JOB_LINES), stdout
    for line, start in zip(lines, JOB_LINES, strict=True):
        assert line.startswith(start), stdout
    assert "in its own PID namespace" in lines[0]


def test_on_a_terminal_it_says_what_it_sets_up_and_runs(tmp_path: Path) -> None:
    tree = checkout(tmp_path, INSTALLS)
    status, stdout, said = run_with_stderr_on_a_terminal(
        ["bash", str(tree / "scripts" / "demo")], env()
    )
    assert status == 0, said
    job_lines(stdout)
    # A first run (no .venv yet) says it is setting up and how long that takes, then what
    # it runs; setup's own output stays in its log.
    lines = said.splitlines()
    assert (
        lines[0] == "demo: setting up .venv and installing worker in it (first run: about 30 s)..."
    )
    assert lines[1].startswith("demo: running a confined job: memory 64M, 0.5 CPU"), said
    assert "pip:" not in said and "worker installed" not in said
    # The next run only checks the install.
    status, stdout, said = run_with_stderr_on_a_terminal(
        ["bash", str(tree / "scripts" / "demo")], env()
    )
    assert status == 0, said
    assert (
        said.splitlines()[0] == "demo: checking the install of worker in .venv (a few seconds)..."
    )


def test_piped_it_prints_the_jobs_output_only(tmp_path: Path) -> None:
    tree = checkout(tmp_path, INSTALLS)
    done = subprocess.run(
        ["bash", str(tree / "scripts" / "demo")],
        env=env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    job_lines(done.stdout)


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "piped"])
def test_a_failed_setup_shows_its_log_and_leaves_nothing(tmp_path: Path, terminal: bool) -> None:
    tree = checkout(tmp_path / "tree", 'echo "pip: ERROR: no network"\nexit 3')
    logs = tmp_path / "tmp"
    logs.mkdir()
    environ = {**env(), "TMPDIR": str(logs)}
    argv = ["bash", str(tree / "scripts" / "demo")]
    if terminal:
        status, stdout, said = run_with_stderr_on_a_terminal(argv, environ)
        assert "demo: setup failed (scripts/setup); its output:" in said
    else:
        done = subprocess.run(
            argv, env=environ, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        status, stdout, said = done.returncode, done.stdout, done.stderr
        assert not said.startswith("demo:")
    assert status == 1
    assert stdout == ""
    assert "pip: ERROR: no network" in said
    assert list(logs.iterdir()) == [], "the setup log was left behind"
    assert not (tree / ".venv").exists()
