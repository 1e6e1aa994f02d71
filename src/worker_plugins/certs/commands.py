"""``worker certs``: make the CA, the server certificate and client certificates for mTLS.

The Common Name of a client certificate is the caller's identity on the server: the name the
``rbac`` policy gives roles to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from cryptography import x509

from worker_core.plugin import hookimpl

from . import authority, store
from .authority import CertificateError, Issued
from .details import describe, load_certificates
from .expiry import now_utc
from .store import StoreError

EXIT_ERROR = 1

FC = TypeVar("FC", bound=Callable[..., Any])

_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("certs"),
    show_default=True,
    help="Directory holding ca.pem/ca.key and the certificates made from it.",
)
_host_option = click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="NAME|IP",
    help="A DNS name or IP address the server is reached by; repeat for several. "
    f"[default: {', '.join(authority.DEFAULT_HOSTS)}]",
)


def _leaf_days_option(what: str) -> Callable[[FC], FC]:
    return click.option(
        "--days",
        type=click.IntRange(min=1),
        default=authority.LEAF_DAYS,
        show_default=True,
        help=f"Lifetime of the {what}, in days (never beyond the CA's).",
    )


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Every expected failure becomes one line on stderr and exit status 1, never a traceback."""
    try:
        yield
    except (CertificateError, StoreError) as exc:
        click.echo(f"worker certs: error: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_ERROR) from exc


def _report(paths: list[Path], issued: Issued, what: str) -> None:
    files = " and ".join(str(p) for p in paths)
    click.echo(f"wrote {files}: {what}, valid until {issued.expires:%Y-%m-%d}")


def _server_what(hosts: tuple[str, ...]) -> str:
    return f"server certificate for {', '.join(hosts)}"


@click.group("certs")
def certs_group() -> None:
    """Make the CA and the certificates for mutual TLS.

    \b
    Examples:
      worker certs init --client admin --client alice
      worker certs client bob
      worker certs server --host worker.example.com --host 10.0.0.5
      worker certs show certs/server.pem

    A client certificate's Common Name is the caller's identity on the server: give it
    roles in the rbac policy. Private keys are written with mode 0600.
    """


@certs_group.command("init", short_help="Create a CA, a server certificate and clients.")
@_dir_option
@click.option(
    "--ca-name",
    default=authority.DEFAULT_CA_NAME,
    show_default=True,
    help="Common Name of the CA.",
)
@click.option(
    "--ca-days",
    type=click.IntRange(min=1),
    default=authority.CA_DAYS,
    show_default=True,
    help="Lifetime of the CA, in days.",
)
@_leaf_days_option("server and client certificates")
@_host_option
@click.option(
    "--client",
    "clients",
    multiple=True,
    metavar="NAME",
    help="Also issue a client certificate with this Common Name; repeat for several.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing CA (every certificate it signed stops being trusted).",
)
def init_command(
    directory: Path,
    ca_name: str,
    ca_days: int,
    days: int,
    hosts: tuple[str, ...],
    clients: tuple[str, ...],
    force: bool,
) -> None:
    """Create a CA, a server certificate and, optionally, client certificates."""
    hosts = hosts or authority.DEFAULT_HOSTS
    clients = tuple(dict.fromkeys(clients))
    with _one_line_errors():
        if not force and store.has_ca(directory):
            raise StoreError(
                f"{directory} already holds a CA: refusing to replace it, since every "
                "certificate it signed would stop being trusted (use --force to replace it)"
            )
        # Everything is built, and every name checked, before the first file is written.
        ca = authority.make_ca(ca_name, ca_days)
        server = authority.issue_server(ca, hosts, days)
        issued_clients = [(name, authority.issue_client(ca, name, days)) for name in clients]
        store.ensure_directory(directory)
        _report(
            store.write_identity(directory, store.CA, ca, overwrite=force),
            ca,
            f"CA {ca_name!r}",
        )
        _report(
            store.write_identity(directory, store.SERVER, server, overwrite=True),
            server,
            _server_what(hosts),
        )
        for name, client in issued_clients:
            _report(
                store.write_identity(directory, name, client, overwrite=True),
                client,
                f"client certificate for {name!r}",
            )


@certs_group.command("server", short_help="Reissue the server certificate.")
@_dir_option
@_host_option
@_leaf_days_option("server certificate")
def server_command(directory: Path, hosts: tuple[str, ...], days: int) -> None:
    """Issue (or reissue) the server certificate, signed by the CA in --dir."""
    hosts = hosts or authority.DEFAULT_HOSTS
    with _one_line_errors():
        ca = store.load_ca(directory)
        server = authority.issue_server(ca, hosts, days)
        _report(
            store.write_identity(directory, store.SERVER, server, overwrite=True),
            server,
            _server_what(hosts),
        )


@certs_group.command("client", short_help="Issue client certificates (CN = NAME).")
@_dir_option
@_leaf_days_option("client certificate")
@click.option("--force", is_flag=True, help="Replace an existing certificate of the same name.")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
def client_command(directory: Path, days: int, force: bool, names: tuple[str, ...]) -> None:
    """Issue a client certificate with Common Name NAME, as NAME.pem and NAME.key in --dir."""
    with _one_line_errors():
        for name in names:
            authority.check_client_name(name)  # all checked before anything is written
        ca = store.load_ca(directory)
        for name in dict.fromkeys(names):
            client = authority.issue_client(ca, name, days)
            _report(
                store.write_identity(directory, name, client, overwrite=force),
                client,
                f"client certificate for {name!r}",
            )


@certs_group.command("show", short_help="Print certificates' names, serials and expiry.")
@_dir_option
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
def show_command(directory: Path, files: tuple[Path, ...]) -> None:
    """Print each certificate in FILE...: subject, issuer, serial, SHA-256 fingerprint,
    usage, names, validity and days left. Without FILE, every .pem file in --dir.

    The serial and the fingerprint are printed as an rbac policy's [revoked] section takes
    them (`serials = [...]`, `sha256 = [...]`).
    """
    with _one_line_errors():
        paths = list(files) or sorted(directory.glob("*.pem"))
        if not paths:
            raise StoreError(f"no .pem file in {directory} (name the files to show)")
        # Everything is read and parsed first: a bad file is one line, with nothing printed.
        loaded = [(path, _read_certificates(path)) for path in paths]
        now = now_utc()
        blocks = []
        for path, certificates in loaded:
            for index, cert in enumerate(certificates):
                title = f"{path}" if len(certificates) == 1 else f"{path} [{index + 1}]"
                fields = describe(cert, now)
                width = max(len(name) for name, _ in fields) + 1
                lines = [f"{title}:"] + [
                    f"  {name + ':':<{width}} {value}" for name, value in fields
                ]
                blocks.append("\n".join(lines))
        click.echo("\n\n".join(blocks))


def _read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{path} does not exist") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return load_certificates(data)
    except ValueError:
        raise StoreError(f"{path} holds no PEM certificate") from None


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(certs_group)
