"""A real ``worker serve`` with ``--plugins https`` and its clients, for the HTTPS tests.

The server is started by the gRPC harness's launcher (``grpc_harness.spawn_serve``) with
``--plugins https,rbac`` and a ``[plugins.https]`` section, so both transports run on one
engine, as in production. Clients are real: ``curl`` (with certificates written to files
for the five users of ``examples/policy.toml``), ``openssl s_client``, gRPC stubs, and a
browser in ``test_https_browser.py``. Everything is on 127.0.0.1 and every wait is bounded.

A plain module (not a conftest) so each test module imports what it needs.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import grpc
from grpc_certs import Identity, TestPKI, make_pki
from grpc_harness import WORKER, Launched, spawn_serve, wait_for
from helpers import FAST

from worker_plugins.grpc_transport import worker_pb2 as pb
from worker_plugins.grpc_transport import worker_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_POLICY = ROOT / "examples" / "policy.toml"
USERS = ("admin", "operator", "viewer", "alice", "bob")

#: Bound on one curl call (streams that follow a job pass their own).
CURL_TIMEOUT = 30.0

HTTPS_ADDRESS = re.compile(r"listening on .*?127\.0\.0\.1:(\d+) \(https\)")
GRPC_ADDRESS = re.compile(r"127\.0\.0\.1:(\d+) \(grpc\)")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    lines = []
    for name, section in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in section.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@attrs.frozen
class Reply:
    """What curl got: the status, the headers (names lowercased, last value wins), the body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The error code of a JSON error body."""
        return self.json().get("code") if self.status >= 400 else None


def _headers(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    # With 100 Continue there are several header blocks: the last one is the response's.
    block = [b for b in re.split(r"\r?\n\r?\n", text.strip()) if b.strip()][-1]
    for line in block.splitlines()[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


@attrs.define
class HttpsServer:
    """A running ``worker serve`` with both transports, and clients for it."""

    launched: Launched
    pki: TestPKI
    directory: Path
    https_port: int
    grpc_port: int
    _certs: dict[str, tuple[Path, Path]] = attrs.Factory(dict)
    _channels: list[grpc.Channel] = attrs.Factory(list)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def url(self, path: str) -> str:
        return self.origin + path

    @property
    def stderr(self) -> str:
        return str(self.launched.stderr)

    def cert(self, cn: str, identity: Identity | None = None) -> tuple[Path, Path]:
        """``cn``'s certificate and key files (a fresh clientAuth certificate by default)."""
        if cn not in self._certs:
            folder = self.directory / "clients"
            folder.mkdir(exist_ok=True)
            self._certs[cn] = (identity or self.pki.client(cn)).write(folder, cn)
        return self._certs[cn]

    def tls_args(self, cn: str | None) -> list[str]:
        args = ["--cacert", str(self.pki.ca_path)]
        if cn is not None:
            cert, key = self.cert(cn)
            args += ["--cert", str(cert), "--key", str(key)]
        return args

    def curl_argv(
        self,
        cn: str | None,
        path: str,
        *,
        method: str = "GET",
        body: Any = None,
        headers: Sequence[str] = (),
        extra: Sequence[str] = (),
        timeout: float = CURL_TIMEOUT,
    ) -> list[str]:
        argv = ["curl", "-sS", "--max-time", str(timeout), "-X", method, *self.tls_args(cn)]
        if body is not None:
            argv += ["--data-binary", "@-"]
            if not any(h.lower().startswith("content-type:") for h in headers):
                argv += ["-H", "Content-Type: application/json"]
        for header in headers:
            argv += ["-H", header]
        return [*argv, *extra, self.url(path)]

    def curl(
        self,
        cn: str | None,
        path: str,
        *,
        method: str = "GET",
        body: Any = None,
        headers: Sequence[str] = (),
        extra: Sequence[str] = (),
        client_header: bool = True,
        timeout: float = CURL_TIMEOUT,
    ) -> Reply:
        """One request with curl as ``cn``; JSON ``body`` (a str or bytes is sent as is).

        State-changing methods send the ``X-Worker-Client`` header unless told not to.
        """
        out = self.directory / "curl"
        out.mkdir(exist_ok=True)
        head, data = out / "headers", out / "body"
        if client_header and method != "GET":
            headers = [*headers, "X-Worker-Client: tests"]
        argv = self.curl_argv(
            cn,
            path,
            method=method,
            body=body,
            headers=headers,
            extra=[*extra, "-D", str(head), "-o", str(data), "-w", "%{http_code}"],
            timeout=timeout,
        )
        payload = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
        done = subprocess.run(
            argv,
            check=False,
            input=payload.encode() if isinstance(payload, str) else payload,
            capture_output=True,
            timeout=timeout + 10,
        )
        if done.returncode != 0:
            raise CurlFailed(done.returncode, done.stderr.decode(errors="replace"))
        reply = Reply(
            int(done.stdout), _headers(head.read_text(errors="replace")), data.read_bytes()
        )
        head.unlink()
        data.unlink()
        return reply

    def call(self, cn: str, method: str, path: str, body: Any = None) -> Reply:
        """A JSON call (``{}`` as the body of a state-changing one if none is given)."""
        if body is None and method != "GET":
            body = {}
        return self.curl(cn, path, method=method, body=body)

    def submit(self, cn: str, spec: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
        """Submit over HTTPS as ``cn``; the job record (JSON)."""
        reply = self.call(cn, "POST", "/v1/jobs", {"spec": dict(spec), **fields})
        assert reply.status == 201, reply
        job: dict[str, Any] = reply.json()["job"]
        return job

    def job(self, cn: str, job_id: str) -> dict[str, Any]:
        reply = self.call(cn, "GET", f"/v1/jobs/{job_id}")
        assert reply.status == 200, reply
        job: dict[str, Any] = reply.json()["job"]
        return job

    def wait_state(self, job_id: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        """The record once the job is in ``state`` (read as admin)."""
        seen: dict[str, Any] = {}

        def reached() -> bool:
            seen.update(self.job("admin", job_id))
            return bool(seen["state"] == state)

        wait_for(reached, timeout, what=f"job {job_id} to be {state}")
        return seen

    def stub(self, cn: str = "alice") -> pb_grpc.WorkerStub:
        identity = self.pki.client(cn)
        creds = grpc.ssl_channel_credentials(self.pki.ca.cert_pem, identity.key, identity.cert)
        channel = grpc.secure_channel(f"127.0.0.1:{self.grpc_port}", creds)
        self._channels.append(channel)
        return pb_grpc.WorkerStub(channel)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()


class CurlFailed(Exception):
    """curl itself failed (a refused handshake, a timeout): its exit code and message."""

    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(f"curl exited {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


def https_settings(pki: TestPKI, **overrides: Any) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "ca": str(pki.ca_path),
        "cert": str(pki.server_cert_path),
        "key": str(pki.server_key_path),
        **overrides,
    }


def spawn_https(
    directory: Path,
    *,
    https: Mapping[str, Any] | None = None,
    plugins: str = "https,rbac",
    policy: Path | None = EXAMPLE_POLICY,
    extra: Sequence[str] = (),
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    worker: Sequence[str] = WORKER,
    env: Mapping[str, str] | None = None,
) -> tuple[TestPKI, Launched]:
    """Start ``worker serve`` with the https transport; do not wait for it. ``sections`` are
    more sections of its config file (``{"plugins.metrics": {...}}``); ``worker`` is the
    program with its global options (``[*WORKER, "-v"]``), ``env`` added to its environment."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = make_pki(directory / "pki")
    settings: dict[str, Mapping[str, Any]] = {
        "engine": dict(FAST["engine"]),
        "plugins.https": https_settings(pki, **(https or {})),
    }
    if policy is not None:
        settings["plugins.rbac"] = {"policy": str(policy)}
    settings.update(sections or {})
    config = write_config(directory / "server.toml", settings)
    grpc_on = "no:grpc" not in plugins.split(",")
    launched = spawn_serve(
        pki,
        "--plugins",
        plugins,
        "--config",
        str(config),
        *extra,
        grpc_flags=grpc_on,
        worker=worker,
        env=env,
    )
    return pki, launched


def stop_serve(launched: Launched) -> None:
    """SIGTERM, then SIGKILL if it hangs; the reader thread joined."""
    if launched.process.poll() is None:
        launched.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            launched.process.wait(30)
    launched.reap()


@contextlib.contextmanager
def https_serve(
    directory: Path,
    *,
    https: Mapping[str, Any] | None = None,
    plugins: str = "https,rbac",
    policy: Path | None = EXAMPLE_POLICY,
    extra: Sequence[str] = (),
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    worker: Sequence[str] = WORKER,
    env: Mapping[str, str] | None = None,
) -> Iterator[HttpsServer]:
    """``worker serve --plugins https,rbac`` on free loopback ports, stopped on the way out
    (the arguments are :func:`spawn_https`'s)."""
    pki, launched = spawn_https(
        directory,
        https=https,
        plugins=plugins,
        policy=policy,
        extra=extra,
        sections=sections,
        worker=worker,
        env=env,
    )
    lines, process = launched.stderr_lines, launched.process
    try:
        wait_for(
            lambda: any(HTTPS_ADDRESS.search(x) for x in lines) or process.poll() is not None,
            timeout=60,
            what="worker serve to listen",
        )
        text = "".join(lines)
        https_match, grpc_match = HTTPS_ADDRESS.search(text), GRPC_ADDRESS.search(text)
        assert https_match, f"worker serve did not start: {text}"
    except BaseException:
        stop_serve(launched)
        raise
    server = HttpsServer(
        launched,
        pki,
        directory,
        int(https_match.group(1)),
        int(grpc_match.group(1)) if grpc_match else 0,
    )
    try:
        yield server
    finally:
        server.close()
        stop_serve(launched)


# --- jobs and streams --------------------------------------------------------------------------


def shell(script: str, **fields: Any) -> dict[str, Any]:
    """A JobSpec (JSON) running ``script`` with /bin/sh."""
    return {"command": "/bin/sh", "args": ["-c", script], **fields}


def parse_events(text: str) -> list[dict[str, str]]:
    """The events of an SSE stream: dicts of their fields (``event``, ``id``, ``data``)."""
    events = []
    for block in re.split(r"\n\n", text):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if fields and set(fields) != {"retry"}:
            events.append(fields)
    return events


def grpc_spec(script: str) -> pb.JobSpec:
    return pb.JobSpec(command="/bin/sh", args=["-c", script])


class CurlStream:
    """A curl process reading a streaming response (``-N``: no buffering) on a thread.

    Everything it received so far is :attr:`received`; :meth:`close` kills curl (the client
    going away) and waits for it.
    """

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        self._parts: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert isinstance(stdout, io.BufferedReader)
        while data := stdout.read1(1 << 16):
            with self._lock:
                self._parts.append(data)

    @property
    def received(self) -> bytes:
        with self._lock:
            return b"".join(self._parts)

    def wait_for(self, predicate: Callable[[bytes], bool], timeout: float = 30.0) -> bytes:
        wait_for(lambda: predicate(self.received), timeout, what="the stream to deliver")
        return self.received

    def finish(self, timeout: float = 60.0) -> bytes:
        """Wait for curl to end by itself (the response ended); everything received."""
        self.process.wait(timeout)
        self._reader.join(10)
        assert self.process.returncode == 0, self.stderr
        return self.received

    @property
    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def curl_stream(
    server: HttpsServer,
    cn: str,
    path: str,
    headers: Sequence[str] = (),
    timeout: float = 120.0,
) -> Iterator[CurlStream]:
    """``curl -N`` streaming ``path`` as ``cn``; killed on the way out if still running."""
    argv = server.curl_argv(
        cn, path, headers=headers, extra=["-N", "--fail-with-body"], timeout=timeout
    )
    stream = CurlStream(argv)
    try:
        yield stream
    finally:
        stream.close()


def sse_output(events: list[dict[str, str]], start: int = 0) -> dict[str, bytes]:
    """The bytes of each stream in a list of output events from offset ``start``, checking
    that the offsets follow on from each other."""
    data: dict[str, bytearray] = {}
    for event in events:
        if event.get("event") != "output":
            continue
        chunk = json.loads(event["data"])
        buf = data.setdefault(chunk["stream"], bytearray())
        assert int(chunk["offset"]) == start + len(buf), "a gap or an overlap in the stream"
        buf += base64.b64decode(chunk["data"])
    return {stream: bytes(buf) for stream, buf in data.items()}
