"""Headless Chromium with a client certificate, driven by Selenium, for the console tests.

Chromium on Linux reads client certificates and trusted CAs from the NSS database in
``$HOME/.pki/nssdb``: each browser gets a HOME of its own holding one user's certificate
(``pk12util``) and the test CA (``certutil``). Which certificate to present is asked in a
dialog a headless browser cannot answer, so a managed policy (``AutoSelectCertificateForUrls``,
in a uniquely named file in the directory Debian's Chromium reads, removed afterwards)
selects it for the test server's origin only.

Debian packages: ``chromium chromium-driver libnss3-tools``; Python: ``selenium``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    load_pem_private_key,
    pkcs12,
)
from grpc_certs import Identity

#: Where Debian's Chromium reads managed policies.
POLICY_DIR = Path("/etc/chromium/policies/managed")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: Bound on one page load and on each wait for the page to show something.
PAGE_TIMEOUT = 30.0

_P12_PASSWORD = b"worker-test"


def missing() -> list[str]:
    """What is missing to run a browser here (empty: everything is there)."""
    absent = [
        name
        for name, path in (
            ("chromium", CHROMIUM),
            ("chromium-driver", CHROMEDRIVER),
            ("libnss3-tools (certutil)", shutil.which("certutil")),
            ("libnss3-tools (pk12util)", shutil.which("pk12util")),
        )
        if not path or not Path(path).exists()
    ]
    try:
        import selenium  # noqa: F401
    except ImportError:
        absent.append("selenium (pip)")
    if os.geteuid() != 0:
        absent.append(f"root (to write a policy under {POLICY_DIR})")
    return absent


@contextlib.contextmanager
def auto_select_certificate(origin: str) -> Iterator[Path]:
    """A managed policy making Chromium present its certificate to ``origin`` unasked.

    Written before the browsers start (Chromium reads policies at start-up); the file, and
    any directory made for it, are removed on the way out.
    """
    made = [p for p in (POLICY_DIR, *POLICY_DIR.parents) if not p.exists()]
    POLICY_DIR.mkdir(parents=True, exist_ok=True)
    path = POLICY_DIR / f"worker-test-{uuid.uuid4().hex}.json"
    rule = json.dumps({"pattern": origin, "filter": {}})
    path.write_text(json.dumps({"AutoSelectCertificateForUrls": [rule]}))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        for directory in made:  # deepest first
            with contextlib.suppress(OSError):
                directory.rmdir()


def _nss_home(home: Path, ca: Path, name: str, identity: Identity) -> None:
    """An NSS database in ``home`` trusting ``ca`` and holding ``identity``."""
    nss = home / ".pki" / "nssdb"
    nss.mkdir(parents=True)
    db = f"sql:{nss}"

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    run("certutil", "-N", "-d", db, "--empty-password")
    run("certutil", "-A", "-d", db, "-n", "worker test CA", "-t", "C,,", "-i", str(ca))
    bundle = pkcs12.serialize_key_and_certificates(
        name.encode(),
        load_pem_private_key(identity.key, None),  # type: ignore[arg-type]
        x509.load_pem_x509_certificate(identity.cert),
        None,
        BestAvailableEncryption(_P12_PASSWORD),
    )
    p12 = home / f"{name}.p12"
    p12.write_bytes(bundle)
    run("pk12util", "-i", str(p12), "-d", db, "-W", _P12_PASSWORD.decode())
    p12.unlink()


def _processes_with_home(home: Path) -> list[int]:
    """Processes whose environment has HOME=``home``: the browser's, and nobody else's."""
    marker = b"HOME=" + str(home).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@attrs.define
class Browser:
    """One user's headless Chromium."""

    driver: Any  # selenium.webdriver.Chrome
    name: str

    def open(self, url: str) -> None:
        self.driver.get(url)

    def wait(
        self, condition: Callable[[Any], Any], what: str, timeout: float = PAGE_TIMEOUT
    ) -> Any:
        """``condition(driver)``'s first truthy value; a timeout fails naming ``what``."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(condition)
        except TimeoutException:
            raise AssertionError(
                f"{self.name}'s browser: timed out waiting for {what} at {self.driver.current_url}"
            ) from None

    def text(self, element_id: str) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.ID, element_id).text)

    def attribute(self, element_id: str, name: str) -> str | None:
        from selenium.webdriver.common.by import By

        value = self.driver.find_element(By.ID, element_id).get_attribute(name)
        return None if value is None else str(value)

    def click(self, element_id: str) -> None:
        from selenium.webdriver.common.by import By

        self.wait(
            lambda d: d.find_element(By.ID, element_id).is_enabled(), f"#{element_id} enabled"
        )
        self.driver.find_element(By.ID, element_id).click()

    def row_ids(self) -> list[str]:
        """The ids of the rows of the job list, read at once (the list is redrawn as it polls)."""
        script = "return [...document.querySelectorAll('#jobs tbody tr')].map(r => r.dataset.jobId)"
        return [str(i) for i in self.driver.execute_script(script)]

    def row_text(self, job_id: str) -> str:
        """The text of the job list's row of ``job_id`` ('' if none), read at once."""
        script = (
            "const row = [...document.querySelectorAll('#jobs tbody tr')]"
            ".find(r => r.dataset.jobId === arguments[0]); return row ? row.innerText : '';"
        )
        return str(self.driver.execute_script(script, job_id))

    def click_row(self, job_id: str) -> None:
        """Click the link of ``job_id``'s row (found and clicked at once: the list is redrawn
        as it polls, so a row found first may be gone when clicked)."""
        script = (
            "const row = [...document.querySelectorAll('#jobs tbody tr')]"
            ".find(r => r.dataset.jobId === arguments[0]); row.querySelector('a').click();"
        )
        self.driver.execute_script(script, job_id)


@contextlib.contextmanager
def chromium(directory: Path, name: str, identity: Identity, ca: Path) -> Iterator[Browser]:
    """Headless Chromium presenting ``identity`` (a client certificate) and trusting ``ca``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = directory / f"home-{name}"
    _nss_home(home, ca, name, identity)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={directory / f'profile-{name}'}",
    ):
        options.add_argument(argument)
    service = Service(CHROMEDRIVER, env={**os.environ, "HOME": str(home)})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(PAGE_TIMEOUT)
        yield Browser(driver, name)
    finally:
        try:
            driver.quit()
        finally:
            # Anything of this browser's that outlived quit (crash handlers): by its HOME.
            for pid in _processes_with_home(home):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
