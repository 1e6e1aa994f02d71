"""The README's shell blocks (and docs/CLI.md's) run as written, pasted in order, against a
real server.

Every ```sh block runs unless an HTML comment right above it says why not
(``<!-- not run: REASON -->``): the quick start, which starts the very suite this test is
part of. The ``worker serve`` line is started by the test and waited for, as a user starts it
in another terminal; every other line runs in one ``bash -euo pipefail`` session, in document
order, from a directory that looks like the checkout's root (the repository's top-level
entries linked into it), so each line must succeed and later lines see the variables earlier
ones set.

What the test changes, and only that: the server's port (``127.0.0.1:50051`` in the text) is
a free one, its state directory and cgroup parent are its own (added to a copy of
``examples/server.toml``, paths made absolute), so it can run beside other servers and
leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import threading
from pathlib import Path

import attrs
from cgroup_helpers import force_remove_parent, require_root, unique_parent
from grpc_harness import LISTENING, wait_for

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/CLI.md")
SKIP = re.compile(r"<!-- not run: (.+?) -->")
BLOCK = re.compile(r"(?:^(<!-- not run: .+? -->)\n)?^```sh\n(.*?)^```", re.S | re.M)
#: A placeholder a reader must replace: ``<job-id>``, or a word in capitals with an
#: underscore (``JOB_ID``) outside a variable (``$JOB`` is a variable a line before set).
PLACEHOLDER = re.compile(r"<[a-z][a-z-]*>|(?<![$\w])[A-Z]+_[A-Z]+\b(?!=)")
DEFAULT_PORT = "127.0.0.1:50051"
#: Bound on the server's start and on the whole pasted session.
SERVER_TIMEOUT = 60.0
SESSION_TIMEOUT = 600.0


@attrs.frozen
class Block:
    document: str
    text: str
    skip: str | None  # why it is not run, or None

    @property
    def commands(self) -> list[str]:
        """Its lines, continuations joined, comments and blanks left out."""
        joined = self.text.replace("\\\n", " ")
        return [
            line
            for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]


def blocks(document: str) -> list[Block]:
    text = (ROOT / document).read_text()
    found = []
    for match in BLOCK.finditer(text):
        marker = SKIP.match(match.group(1) or "")
        found.append(Block(document, match.group(2), marker.group(1) if marker else None))
    return found


def runnable() -> list[Block]:
    return [block for document in DOCUMENTS for block in blocks(document) if block.skip is None]


def test_blocks_are_found_and_every_skip_says_why() -> None:
    readme = blocks("README.md")
    assert len(readme) >= 6, "the README's shell blocks were not found"
    skipped = [block for block in readme if block.skip is not None]
    assert [block.text.split()[:2] for block in skipped] == [["bash", "scripts/demo"]]
    assert all(len(block.skip or "") > 10 for block in skipped)


def test_runnable_blocks_hold_no_placeholder() -> None:
    for block in runnable():
        for line in block.commands:
            code = line.split("  #", 1)[0]  # an explanation after the command may name one
            assert not PLACEHOLDER.search(code), (block.document, line)


def test_the_checks_see_placeholders() -> None:
    assert PLACEHOLDER.search("worker job tail JOB_ID")
    assert PLACEHOLDER.search("worker job get <job-id>")
    assert not PLACEHOLDER.search("worker job get $JOB")
    assert not PLACEHOLDER.search("export WORKER_SERVER=127.0.0.1:50051")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _checkout(directory: Path) -> Path:
    """A directory that looks like the checkout's root: each top-level entry linked in."""
    checkout = directory / "checkout"
    checkout.mkdir()
    for entry in ROOT.iterdir():
        if entry.name != ".git":
            (checkout / entry.name).symlink_to(entry)
    return checkout


def _server_config(directory: Path, port: int, parent: str) -> Path:
    """``examples/server.toml`` with absolute paths, a free port and a cgroup parent."""
    example = ROOT / "examples" / "server.toml"
    text = example.read_text().replace(DEFAULT_PORT, f"127.0.0.1:{port}")
    text = re.sub(r'"\.\./certs/', f'"{ROOT / "certs"}/', text)
    text = text.replace('policy = "policy.toml"', f'policy = "{ROOT / "examples" / "policy.toml"}"')
    assert not re.search(r"^\[plugins\.cgroups\]", text, re.M), "the example sets a cgroup parent"
    config = directory / "server.toml"
    config.write_text(text + f'\n[plugins.cgroups]\nparent = "{parent}"\n')
    return config


def _serve_argv(line: str, config: Path, state: Path) -> list[str]:
    argv = shlex.split(line, comments=True)
    assert argv[:2] == ["worker", "serve"], line
    at = argv.index("--config")
    argv[at + 1] = str(config)
    return [str(ROOT / ".venv" / "bin" / "worker"), *argv[1:], "--state-dir", str(state)]


def test_the_readme_runs_as_written_against_a_real_server(tmp_path: Path) -> None:
    require_root()
    port = _free_port()
    parent = unique_parent()
    checkout = _checkout(tmp_path)
    serve_lines = [
        line for block in runnable() for line in block.commands if line.startswith("worker serve")
    ]
    assert len(serve_lines) == 1, serve_lines
    session = [
        line.replace(DEFAULT_PORT, f"127.0.0.1:{port}")
        for block in runnable()
        for line in block.commands
        if not line.startswith("worker serve")
    ]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "GRPC_"))}
    environ.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"))
    (tmp_path / "home").mkdir()
    argv = _serve_argv(serve_lines[0], _server_config(tmp_path, port, parent), tmp_path / "state")
    server = subprocess.Popen(
        argv,
        cwd=checkout,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert server.stderr is not None
    stream = server.stderr
    reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: any(LISTENING.search(x) for x in lines) or server.poll() is not None,
            timeout=SERVER_TIMEOUT,
            what="the README's server to listen",
        )
        assert server.poll() is None, "".join(lines)
        script = "set -euo pipefail\n" + "".join(f"{line}\n" for line in session)
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=checkout,
            env=environ,
            capture_output=True,
            text=True,
            timeout=SESSION_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        out = done.stdout
        for expected in ("hello\n", "1\n2\n3\n", "building in /tmp\n"):
            assert expected in out, (expected, out)
        # `wait` said how the three scheduled jobs ended; the stops said how theirs did.
        assert out.count("ended: exited with code 0\n") >= 3, out
        assert "ended: stopped on request (SIGTERM)" in out, out
        assert (checkout / "pki" / "alice.pem").is_file()  # the certificates block ran, here
        server.terminate()
        assert server.wait(SERVER_TIMEOUT) == 0, "".join(lines)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        reader.join(5)
        force_remove_parent(parent)
