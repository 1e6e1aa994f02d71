"""docs/DEPLOYMENT.md names only what exists: files, loggers, the unit's settings, the
environment variables, the distribution (its metrics are checked against a real scrape in
test_ops_rpc_metrics.py)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from worker_core._plugins import DISTRIBUTION

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
SOURCES = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.py"))


def inline_code() -> list[str]:
    """The guide's ``inline code`` spans outside fenced blocks."""
    text = re.sub(r"^```.*?^```", "", GUIDE, flags=re.S | re.M)
    return re.findall(r"`([^`\n]+)`", text)


def test_every_repository_path_it_names_exists() -> None:
    paths = [
        span
        for span in inline_code()
        if re.fullmatch(r"(docs|examples|src|tests|scripts|certs)/[\w./-]*", span)
    ]
    assert "examples/systemd/worker.service" in paths
    assert [p for p in paths if not (ROOT / p).exists()] == []


def test_every_logger_in_its_table_is_one_the_server_writes_to() -> None:
    loggers = re.findall(r"^\| `(worker\.\w+)` \|", GUIDE, flags=re.M)
    assert {"worker.serve", "worker.calls", "worker.authz", "worker.jobs"} <= set(loggers)
    assert [name for name in loggers if f'getLogger("{name}")' not in SOURCES] == []


def test_the_unit_settings_it_explains_are_the_units() -> None:
    unit = (ROOT / "examples" / "systemd" / "worker.service").read_text()
    explained = GUIDE.split("What it sets, and why:", 1)[1].split("`ExecStart` names", 1)[0]
    settings = re.findall(r"`([A-Z][a-z]\w*=[\w-]+)`", explained)  # not READY=1
    assert "Delegate=yes" in settings
    assert [s for s in settings if not re.search(rf"^{re.escape(s)}$", unit, re.M)] == []


def test_the_environment_it_names_is_read_by_the_code() -> None:
    for variable in ("WORKER_LOG_FORMAT", "GRPC_VERBOSITY"):
        assert variable in GUIDE
        assert f'"{variable}"' in SOURCES


def test_it_installs_the_distribution_the_project_builds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION != "worker"
    assert f"**`{DISTRIBUTION}`**" in GUIDE
    wheel = DISTRIBUTION.replace("-", "_") + f"-{project['version']}-py3-none-any.whl"
    assert wheel in GUIDE
