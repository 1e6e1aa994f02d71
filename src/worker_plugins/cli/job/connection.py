"""Where the client connects and with which certificates; the mTLS channel itself.

Each setting is taken from the first place that has it:

1. a flag (``--server``, ``--ca``, ``--cert``, ``--key``);
2. an environment variable (``WORKER_SERVER``, ``WORKER_CA``, ``WORKER_CERT``, ``WORKER_KEY``);
3. the client config file (``--client-config``, else ``WORKER_CLIENT_CONFIG``, else
   ``$XDG_CONFIG_HOME/worker/client.toml`` or ``~/.config/worker/client.toml``), a TOML table
   with the keys ``server``, ``ca``, ``cert``, ``key``; relative paths in it are relative to
   the file's own directory, so a config can sit next to its certificates;
4. the default: ``127.0.0.1:50051`` for the server. Certificates have no default: a client
   that silently picked some certificate up could act as someone else.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import click

from .errors import EXIT_CONFIG, ClientError

if TYPE_CHECKING:
    import grpc

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_PORT = 50051
CONFIG_KEYS = ("server", "ca", "cert", "key")
ENV_VARS = {
    "server": "WORKER_SERVER",
    "ca": "WORKER_CA",
    "cert": "WORKER_CERT",
    "key": "WORKER_KEY",
}
CONFIG_ENV = "WORKER_CLIENT_CONFIG"
_WHAT = {"ca": "CA certificate", "cert": "client certificate", "key": "client key"}

#: Largest message accepted from the server; matches the server's default response cap (a
#: List page is kept far below it, at 16 MiB of records).
MAX_RECEIVE_BYTES = 64 << 20

#: Keepalive on the channel: a Tail -f or Watch stream has no deadline (it lasts as long as
#: the job), so these pings are what notice a server that vanished without closing the
#: connection. The server permits a ping every 5 s; 20 s stays well clear of its GOAWAY.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 0),
]


# Plain tuples rather than attrs classes, and paths as strings rather than pathlib's: every
# `worker job` command makes these, and attrs' import alone is a tenth of such a command's
# start-up (pathlib's, a fortieth).
class ConnectionFlags(NamedTuple):
    """The connection flags as given on the command line (None: not given)."""

    server: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    client_config: str | None = None


class TlsFiles(NamedTuple):
    """The PEM files a client trusts (``ca``) and presents (``cert``, ``key``)."""

    ca: str
    cert: str
    key: str


class Settings(NamedTuple):
    """Where to connect and with what, once every source was consulted."""

    server: str
    tls: TlsFiles


def default_config_path(environ: Mapping[str, str]) -> str:
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "worker", "client.toml")


def _read_config(path: str, explicit: bool) -> dict[str, str]:
    """The client config's settings, paths made absolute. A missing default file is empty."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        if explicit:
            raise ClientError(f"client config {path!r} does not exist", EXIT_CONFIG) from None
        return {}
    except OSError as exc:
        raise ClientError(
            f"cannot read client config {path!r}: {exc.strerror}", EXIT_CONFIG
        ) from None
    import tomllib  # only when there is a file to parse

    try:
        data = tomllib.loads(text.decode())
    except UnicodeDecodeError as exc:
        raise ClientError(f"client config {path!r} is not valid TOML: {exc}", EXIT_CONFIG) from None
    except tomllib.TOMLDecodeError as exc:
        raise ClientError(f"client config {path!r} is not valid TOML: {exc}", EXIT_CONFIG) from None
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ClientError(
            f"client config {path!r}: unknown key {unknown[0]!r} (known: {', '.join(CONFIG_KEYS)})",
            EXIT_CONFIG,
        )
    settings: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, str) or not value:
            raise ClientError(
                f"client config {path!r}: {key} must be a non-empty string", EXIT_CONFIG
            )
        # A path in the file is relative to the file, so a config can sit by its certificates.
        settings[key] = (
            value
            if key == "server"
            else os.path.join(os.path.dirname(path), os.path.expanduser(value))
        )
    return settings


def resolve(flags: ConnectionFlags, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then environment, then client config, then defaults.

    Raises :class:`ClientError` (exit 78) naming the flag or variable to set when a
    certificate is not configured anywhere.
    """
    environ = os.environ if environ is None else environ
    config_name = flags.client_config or environ.get(CONFIG_ENV)
    config_path = config_name if config_name else default_config_path(environ)
    from_file = _read_config(os.path.expanduser(config_path), explicit=config_name is not None)
    chosen: dict[str, str] = {}
    for key in CONFIG_KEYS:
        value = getattr(flags, key) or environ.get(ENV_VARS[key]) or from_file.get(key)
        if value is None and key == "server":
            value = DEFAULT_SERVER
        if value is None:
            raise ClientError(
                f"no {_WHAT[key]} configured: pass --{key} or set {ENV_VARS[key]} "
                f"(or '{key}' in {config_path})",
                EXIT_CONFIG,
            )
        chosen[key] = value
    return Settings(
        server=normalize_server(chosen["server"]),
        tls=TlsFiles(
            os.path.expanduser(chosen["ca"]),
            os.path.expanduser(chosen["cert"]),
            os.path.expanduser(chosen["key"]),
        ),
    )


def normalize_server(address: str) -> str:
    """``host``, ``host:port`` or ``[v6]:port`` into a gRPC target; the port defaults to 50051."""
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":")
        ok = bool(host) and (rest == "" or (rest.startswith(":") and port.isdigit()))
        return f"[{host}]:{port or DEFAULT_PORT}" if ok else _bad_server(address)
    host, sep, port = address.rpartition(":")
    if not sep:
        return f"{address}:{DEFAULT_PORT}" if address else _bad_server(address)
    if not host or ":" in host or not port.isdigit() or not 0 < int(port) < 65536:
        return _bad_server(address)
    return address


def _bad_server(address: str) -> str:
    raise ClientError(
        f"server address {address!r} is not HOST:PORT (e.g. 127.0.0.1:50051 or [::1]:50051)",
        EXIT_CONFIG,
    )


def _read(what: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ClientError(f"{what} file {path!r} does not exist", EXIT_CONFIG) from None
    except OSError as exc:
        raise ClientError(
            f"cannot read {what} file {path!r}: {exc.strerror}", EXIT_CONFIG
        ) from None


class TlsMaterial(NamedTuple):
    """The contents of :class:`TlsFiles`."""

    ca: bytes
    cert: bytes
    key: bytes


def read_material(files: TlsFiles) -> TlsMaterial:
    """The three files' contents, each checked to hold the PEM block it should.

    Only what costs nothing to check is checked here: parsing the certificates (expiry, usage,
    whether the key matches) needs ``cryptography``, whose import would double the start-up
    of every command, so :func:`diagnose` does it when a connection fails.
    """
    material = TlsMaterial(
        _read("CA", files.ca), _read("certificate", files.cert), _read("key", files.key)
    )
    for data, path, what in (
        (material.ca, files.ca, "CA file {} holds no PEM certificate"),
        (material.cert, files.cert, "certificate file {} holds no PEM certificate"),
    ):
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise ClientError(what.format(repr(path)), EXIT_CONFIG)
    if b"PRIVATE KEY-----" not in material.key or b"ENCRYPTED" in material.key:
        raise ClientError(
            f"key file {files.key!r} holds no unencrypted PEM private key", EXIT_CONFIG
        )
    return material


def diagnose(files: TlsFiles) -> ClientError | None:
    """What in the client's own files explains a failed connection, if anything: a
    certificate that does not parse, has expired or is not valid yet, lacks the clientAuth
    usage, or a key that does not match it. The server refuses such a certificate without
    saying why (it hangs up), so the reason is looked for here, after the fact."""
    from datetime import UTC, datetime
    from pathlib import Path

    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from worker_core import ConfigError
    from worker_plugins.grpc_transport.tls import TlsFiles as ServerTlsFiles
    from worker_plugins.grpc_transport.tls import load_material

    try:
        material = load_material(ServerTlsFiles(Path(files.ca), Path(files.cert), Path(files.key)))
    except ConfigError as exc:
        return ClientError(str(exc), EXIT_CONFIG)
    path = files.cert
    cert = x509.load_pem_x509_certificate(material.cert)
    now = datetime.now(UTC)
    if cert.not_valid_after_utc < now:
        return ClientError(
            f"client certificate {path!r} expired on {cert.not_valid_after_utc:%Y-%m-%d}",
            EXIT_CONFIG,
        )
    if cert.not_valid_before_utc > now:
        return ClientError(
            f"client certificate {path!r} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            EXIT_CONFIG,
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        return ClientError(
            f"certificate {path!r} is not a client certificate (no clientAuth usage)",
            EXIT_CONFIG,
        )
    return None


def open_channel(settings: Settings) -> grpc.Channel:
    """An mTLS channel to the server: trusts only the CA, presents the client certificate.

    The files are read here, so a missing or swapped file is one clear error before any
    connection; what only parsing them can tell is left to :func:`diagnose`. The server's
    certificate must name the host dialled.
    """
    material = read_material(settings.tls)
    import grpc

    credentials = grpc.ssl_channel_credentials(
        root_certificates=material.ca,
        private_key=material.key,
        certificate_chain=material.cert,
    )
    return grpc.secure_channel(settings.server, credentials, CHANNEL_OPTIONS)


def connection_options(command: F) -> F:
    """Add ``--server``, ``--ca``, ``--cert``, ``--key`` and ``--client-config`` to a command.

    The wrapped function receives them as one :class:`ConnectionFlags` in ``connection``.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["connection"] = ConnectionFlags(
            **{name: kwargs.pop(name) for name in ConnectionFlags._fields}
        )
        return command(*args, **kwargs)

    options = [
        click.option(
            "--server",
            metavar="HOST:PORT",
            help=f"Server to talk to. [env WORKER_SERVER; default {DEFAULT_SERVER}]",
        ),
        click.option(
            "--ca",
            metavar="FILE",
            help="CA certificate the server's certificate must chain to. [env WORKER_CA]",
        ),
        click.option("--cert", metavar="FILE", help="Client certificate (PEM). [env WORKER_CERT]"),
        click.option("--key", metavar="FILE", help="Client private key (PEM). [env WORKER_KEY]"),
        click.option(
            "--client-config",
            metavar="FILE",
            help="Client config (TOML: server, ca, cert, key). "
            "[env WORKER_CLIENT_CONFIG; default ~/.config/worker/client.toml]",
        ),
    ]
    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]
