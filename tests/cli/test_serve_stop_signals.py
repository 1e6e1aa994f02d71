"""A stop signal that comes while `worker serve` starts is never lost and never half-done.

The plugin is a real distribution on ``PYTHONPATH`` (as in ``test_serve_transports.py``).
Its ``startup`` hook, which serve's engine fires during its start, sends serve its own stop
signal, either plainly or from inside a generator's finalizer: the place where Python's own
handling drops the exception (it prints "Exception ignored" and goes on), which is how a
Ctrl-C of serve's start-up was once lost in a loaded CI run and serve went on serving. The
hook also writes down serve's launchers (its children then), to show they are gone after.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from grpc_certs import make_pki
from grpc_harness import spawn_serve
from helpers import alive, wait_until, write_plugin_distribution

EXIT_TIMEOUT = 60

PLUGIN = """
import os
import signal
from pathlib import Path

from worker_core.plugin import hookimpl


def _send(signum):
    os.kill(os.getpid(), signum)


def _from_a_finalizer(signum):
    def finalized():
        try:
            yield
        finally:
            _send(signum)  # its handler runs here, in the finalizer
            pass

    pending = finalized()
    next(pending)
    del pending  # closed as it is freed


class StopAtStartup:
    @hookimpl
    def startup(self, engine):
        me = os.getpid()
        children = Path("/proc/%d/task/%d/children" % (me, me)).read_text().split()
        Path(os.environ["STOP_TEST_CHILDREN"]).write_text(" ".join(children))
        signum = getattr(signal, os.environ["STOP_TEST_SIGNAL"])
        if os.environ["STOP_TEST_HOW"] == "finalizer":
            _from_a_finalizer(signum)
        else:
            _send(signum)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the ``worker-test-stop`` distribution, for ``PYTHONPATH``."""
    site = tmp_path_factory.mktemp("site")
    write_plugin_distribution(
        site, "worker_test_stop", PLUGIN, {"stopatstartup": "worker_test_stop:StopAtStartup"}
    )
    return site


@pytest.mark.parametrize("how", ["plain", "finalizer"])
@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_stop_signal_during_the_engines_start_cuts_serve_short(
    tmp_path: Path, site: Path, how: str, signum: signal.Signals, status: int
) -> None:
    pki = make_pki(tmp_path / "pki")
    children = tmp_path / "children"
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "STOP_TEST_SIGNAL": signum.name,
        "STOP_TEST_HOW": how,
        "STOP_TEST_CHILDREN": str(children),
    }
    launched = spawn_serve(pki, "--plugins", "stopatstartup", env=env)
    try:
        exited = launched.process.wait(EXIT_TIMEOUT)
    finally:
        launched.reap()
    err = launched.stderr
    assert exited == status, err
    assert "listening on" not in err, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    launchers = [int(pid) for pid in children.read_text().split()]
    assert launchers, "the engine had started its launchers when the hook ran"
    assert wait_until(lambda: not any(alive(pid) for pid in launchers), 30), "launchers left"
