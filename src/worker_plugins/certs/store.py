"""The certificate directory: ``ca.pem``/``ca.key``, ``server.pem``/``server.key``, ``NAME.pem``/``NAME.key``.

Every file is written atomically (a temporary file in the same directory, then a rename), so a
reader never sees half a certificate and a crash never leaves a truncated key. A private key
is created with mode 0600 by ``open(2)`` itself: it is never readable by others, not even for
the instant between creating the file and a ``chmod``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from .authority import CertificateError, Issued, check_ca, load_identity

CA = "ca"
SERVER = "server"

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


class StoreError(Exception):
    """A file problem (missing CA, unwritable directory, would overwrite); one line."""


def cert_path(directory: Path, stem: str) -> Path:
    return directory / f"{stem}.pem"


def key_path(directory: Path, stem: str) -> Path:
    return directory / f"{stem}.key"


def _describe(exc: OSError, path: Path) -> str:
    return f"cannot write {path}: {exc.strerror or exc}"


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically; the file has ``mode`` from its first instant."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: never write through a file (or symlink) someone planted under the temporary
    # name. The mode is given to open(2) so the file is born private; fchmod then removes any
    # doubt about the umask (which can only have removed bits, never added them).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(tmp, flags, mode)
    except OSError as exc:
        raise StoreError(_describe(exc, path)) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StoreError(_describe(exc, path)) from exc
    # Make the rename itself durable: a key and its certificate must survive a power cut as a
    # pair. Best effort: some file systems refuse fsync on a directory.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def ensure_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create directory {directory}: {exc.strerror or exc}") from exc
    if not directory.is_dir():
        raise StoreError(f"{directory} is not a directory")


def write_identity(directory: Path, stem: str, issued: Issued, *, overwrite: bool) -> list[Path]:
    """Write ``stem.key`` (0600) then ``stem.pem`` (0644); return the paths written.

    The key goes first: should the second write fail, the old certificate is left with a key
    that does not match it, which the loader reports, rather than a new certificate nobody
    holds the key of.
    """
    key_file, cert_file = key_path(directory, stem), cert_path(directory, stem)
    if not overwrite:
        existing = [p for p in (cert_file, key_file) if p.exists()]
        if existing:
            raise StoreError(f"{existing[0]} already exists (use --force to replace it)")
    write_file(key_file, issued.key_pem, PRIVATE_MODE)
    write_file(cert_file, issued.cert_pem, PUBLIC_MODE)
    return [cert_file, key_file]


def has_ca(directory: Path) -> bool:
    return cert_path(directory, CA).exists() or key_path(directory, CA).exists()


def load_ca(directory: Path) -> Issued:
    """The CA in ``directory``; a one-line error says what is missing and what to run."""
    cert_file, key_file = cert_path(directory, CA), key_path(directory, CA)
    for path in (cert_file, key_file):
        if not path.exists():
            raise StoreError(
                f"no CA in {directory}: {path} is missing "
                f"(create one with `worker certs init --dir {directory}`)"
            )
    try:
        cert_pem, key_pem = cert_file.read_bytes(), key_file.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read the CA in {directory}: {exc.strerror or exc}") from exc
    try:
        ca = load_identity(cert_pem, key_pem, str(cert_file))
    except CertificateError as exc:
        raise StoreError(str(exc)) from exc
    try:
        check_ca(ca)
    except CertificateError as exc:
        raise StoreError(f"{cert_file}: {exc}") from exc
    return ca
